"""Model files checked by content, never by name: :func:`detect_model_format` says whether a file
is a binary or ASCII STL, an OBJ or a 3MF (a zip read with bounded reads), and otherwise why not
(a :class:`Refusal`). Used by :class:`~orderbot.files.receiver.FileReceiver`.

Every check runs in time linear in what it reads, and reads a bounded amount:

- no regular expressions: an OBJ line is split into tokens and each token is judged by a
  character set and ``float``/``int`` (a backtracking pattern once let a 0.5 KB line hold the
  GIL for minutes, and no thread or timeout can interrupt a regex);
- an OBJ line is read at most :data:`_MAX_LINE` bytes at a time (``readline(limit)``), so a
  50 MB line never becomes one 50 MB object; longer lines are skipped, not parsed;
- a zip's entry count and central-directory size are read from its end record (a few KB at
  the end of the file) *before* :mod:`zipfile` parses anything, so a zip of a million entries
  is refused without building a million ``ZipInfo`` objects;
- the scan of an OBJ checks a deadline (``time_limit``) every few thousand lines. Callers run
  the check in a thread (``asyncio.to_thread``): the loop is plain Python bytecode, which gives
  up the GIL every few milliseconds, so the event loop keeps serving other customers, and the
  deadline ends it even on a huge file. A file that cannot be judged within the deadline is
  refused as ``not_checked`` (the flow asks the customer to resend it, e.g. as STL).
"""

from __future__ import annotations

import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CHECK_TIME_LIMIT", "CHUNK", "MODEL_FORMATS", "Refusal", "detect_model_format"]

MODEL_FORMATS = ("stl", "obj", "3mf")
CHECK_TIME_LIMIT = 10.0
"""Seconds one file may take to be judged before it is refused as ``not_checked``."""
CHUNK = 64 * 1024
_MAX_ZIP_ENTRIES = 10_000
# What zipfile reads and parses in one go: the central directory. 10,000 entries with sane names
# fit in well under this; a bigger directory is refused before zipfile allocates anything.
_MAX_CENTRAL_DIRECTORY = 4 * 1024 * 1024
_EOCD = b"PK\x05\x06"
_EOCD_SIZE = 22
_ZIP64_LOCATOR = b"PK\x06\x07"
_ZIP64_EOCD = b"PK\x06\x06"
# OBJ: the longest line looked at, and how many lines between two looks at the clock.
_MAX_LINE = 4096
_CLOCK_EVERY = 4096
_MAX_NUMBER = 64
_NUMBER_CHARS = frozenset(b"0123456789+-.eE")
_IMAGES = (
    b"\xff\xd8\xff",  # JPEG
    b"\x89PNG\r\n\x1a\n",
    b"GIF87a",
    b"GIF89a",
)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a file is not accepted: ``reason`` is a code the flow has a text for
    (``validators.FILE_REASONS``), ``detail`` is for the logs."""

    reason: str
    detail: str = ""


class _Timeout(Exception):
    """The deadline of a check passed."""


def detect_model_format(
    path: Path, name: str = "", *, time_limit: float = CHECK_TIME_LIMIT
) -> str | Refusal:
    """``"stl"``, ``"obj"`` or ``"3mf"`` if the file at ``path`` is such a model, else why not.

    ``name`` (what the customer called it) never makes a file acceptable; it only picks the
    clearer refusal: a broken file named ``.stl`` is ``damaged`` rather than ``unsupported``.
    Past ``time_limit`` seconds the answer is ``Refusal("not_checked")``.
    """
    deadline = time.monotonic() + time_limit
    size = path.stat().st_size
    if size == 0:
        return Refusal("empty")
    with path.open("rb") as file:
        head = file.read(CHUNK)
        if size >= 84:
            file.seek(80)
            facets = int.from_bytes(file.read(4), "little")
            # A binary STL is exactly this long; any other file is this long only by accident.
            if facets > 0 and size == 84 + 50 * facets:
                return "stl"
        file.seek(max(0, size - 1024))
        tail = file.read()
    if head.startswith(b"PK\x03\x04"):
        return _check_3mf(path)
    if any(head.startswith(magic) for magic in _IMAGES) or (
        head[:4] == b"RIFF" and head[8:12] == b"WEBP"
    ):
        return Refusal("image", "an image")
    if head[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1"):
        return Refusal("image", "a HEIC photo")
    claims_stl = name.lower().endswith(".stl")
    if head.lstrip().lower().startswith(b"solid"):
        text = head.lower()
        if b"facet normal" in text and b"vertex" in text and b"endsolid" in tail.lower():
            return "stl"
        return Refusal("damaged", "ASCII STL without facets or endsolid")
    if b"\x00" not in head:
        try:
            if _looks_like_obj(path, deadline):
                return "obj"
        except _Timeout:
            return Refusal("not_checked", f"not judged within {time_limit:g} s")
    if claims_stl and size >= 84:
        return Refusal("damaged", f"binary STL of {size} bytes, header says {facets} facets")
    return Refusal("unsupported", "not STL, OBJ or 3MF")


def _is_number(token: bytes) -> bool:
    # The character set first: float() alone would take "nan", "inf" and "1_0".
    if not token or len(token) > _MAX_NUMBER or not _NUMBER_CHARS.issuperset(token):
        return False
    try:
        float(token)
    except ValueError:
        return False
    return True


def _is_index(token: bytes, *, optional: bool = False) -> bool:
    if not token:
        return optional
    digits = token[1:] if token.startswith(b"-") else token
    return 0 < len(digits) <= 20 and digits.isdigit()


def _is_vertex(tokens: list[bytes]) -> bool:
    """``v x y z [w | r g b]``: three numbers at least."""
    return len(tokens) >= 4 and all(_is_number(t) for t in tokens[1:4])


def _is_face(tokens: list[bytes]) -> bool:
    """``f a b c ...`` with three corners at least, each ``v``, ``v/vt``, ``v//vn`` or
    ``v/vt/vn``."""
    if len(tokens) < 4:
        return False
    for corner in tokens[1:]:
        parts = corner.split(b"/")
        if len(parts) > 3 or not _is_index(parts[0]):
            return False
        if not all(_is_index(part, optional=True) for part in parts[1:]):
            return False
    return True


def _looks_like_obj(path: Path, deadline: float) -> bool:
    """At least three vertices before the first face, and that face well-formed. Raises
    :class:`_Timeout` past ``deadline``."""
    vertices = 0
    lines = 0
    with path.open("rb") as file:
        while True:
            raw = file.readline(_MAX_LINE)
            if not raw:
                return False
            lines += 1
            if lines % _CLOCK_EVERY == 0 and time.monotonic() > deadline:
                raise _Timeout
            if b"\x00" in raw:
                return False
            if len(raw) == _MAX_LINE and not raw.endswith(b"\n"):
                # Longer than any real vertex or face: skip the rest of it unparsed.
                while raw and not raw.endswith(b"\n"):
                    raw = file.readline(_MAX_LINE)
                    if b"\x00" in raw:
                        return False
                continue
            tokens = raw.split()
            if not tokens:
                continue
            if tokens[0] == b"v":
                if vertices < 3 and _is_vertex(tokens):
                    vertices += 1
            elif tokens[0] == b"f" and _is_face(tokens):
                return vertices >= 3


def _central_directory(path: Path) -> tuple[int, int] | None:
    """The entry count and central-directory size from the zip's end record (zip64 too), as
    :mod:`zipfile` will read them; ``None`` if there is no end record."""
    size = path.stat().st_size
    with path.open("rb") as file:
        start = max(0, size - (_EOCD_SIZE + 0xFFFF))
        file.seek(start)
        tail = file.read()
        # As zipfile: the end record without a comment first, else the last signature.
        at = len(tail) - _EOCD_SIZE
        if at < 0 or not tail.startswith(_EOCD, at) or tail[-2:] != b"\x00\x00":
            at = tail.rfind(_EOCD)
        if at < 0 or len(tail) - at < _EOCD_SIZE:
            return None
        entries = int.from_bytes(tail[at + 10 : at + 12], "little")
        directory = int.from_bytes(tail[at + 12 : at + 16], "little")
        if entries != 0xFFFF and directory != 0xFFFFFFFF:
            return entries, directory
        locator = tail[at - 20 : at] if at >= 20 else b""
        if not locator.startswith(_ZIP64_LOCATOR):
            return entries, directory
        file.seek(int.from_bytes(locator[8:16], "little"))
        record = file.read(56)
        if not record.startswith(_ZIP64_EOCD) or len(record) < 56:
            return None
        return (
            int.from_bytes(record[32:40], "little"),
            int.from_bytes(record[40:48], "little"),
        )


def _is_model_part(filename: str) -> bool:
    lower = filename.lower()
    return (
        lower.startswith("3d/")
        and lower.endswith(".model")
        and len(lower) > len("3d/.model")
        and "/" not in lower[3:]
    )


def _check_3mf(path: Path) -> str | Refusal:
    try:
        directory = _central_directory(path)
        if directory is None:
            return Refusal("damaged", "a zip without an end record")
        count, directory_size = directory
        if count > _MAX_ZIP_ENTRIES or directory_size > _MAX_CENTRAL_DIRECTORY:
            return Refusal(
                "unsupported", f"a zip with {count} entries in a {directory_size}-byte directory"
            )
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
            if len(entries) > _MAX_ZIP_ENTRIES:
                return Refusal("unsupported", f"a zip with {len(entries)} entries")
            parts = [info for info in entries if _is_model_part(info.filename)]
            if not parts:
                return Refusal("unsupported", "a zip without a 3D/*.model part")
            if parts[0].compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                # 3MF allows only these two; zipfile inflates the others (bzip2, LZMA) without
                # an output bound, so one read could fill memory.
                return Refusal(
                    "unsupported", f"3D/*.model compressed with {parts[0].compress_type}"
                )
            # Bounded read: only the start of the model part, never the whole (maybe huge) XML.
            with archive.open(parts[0]) as part:
                start = part.read(CHUNK)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as exc:
        return Refusal("damaged", f"broken zip: {exc}")
    except NotImplementedError as exc:  # an unsupported compression method
        return Refusal("unsupported", f"zip: {exc}")
    if b"<model" not in start:
        return Refusal("damaged", "3D/*.model holds no <model> element")
    return "3mf"
