"""Model files checked by content, never by name: :func:`detect_model_format` says whether a file
is a binary or ASCII STL, an OBJ or a 3MF (a zip read with bounded reads), and otherwise why not
(a :class:`Refusal`). Used by :class:`~orderbot.files.receiver.FileReceiver`.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CHUNK", "MODEL_FORMATS", "Refusal", "detect_model_format"]

MODEL_FORMATS = ("stl", "obj", "3mf")
CHUNK = 64 * 1024
_MAX_ZIP_ENTRIES = 10_000
_MODEL_PART = re.compile(r"3d/[^/]+\.model", re.IGNORECASE)
_FLOAT = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_OBJ_VERTEX = re.compile(rf"v\s+{_FLOAT}\s+{_FLOAT}\s+{_FLOAT}(?:\s|$)".encode())
_OBJ_FACE = re.compile(rb"f(?:\s+-?\d+(?:/-?\d*){0,2}){3,}\s*$")
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


def detect_model_format(path: Path, name: str = "") -> str | Refusal:
    """``"stl"``, ``"obj"`` or ``"3mf"`` if the file at ``path`` is such a model, else why not.

    ``name`` (what the customer called it) never makes a file acceptable; it only picks the
    clearer refusal: a broken file named ``.stl`` is ``damaged`` rather than ``unsupported``.
    """
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
    if b"\x00" not in head and _looks_like_obj(path):
        return "obj"
    if claims_stl and size >= 84:
        return Refusal("damaged", f"binary STL of {size} bytes, header says {facets} facets")
    return Refusal("unsupported", "not STL, OBJ or 3MF")


def _looks_like_obj(path: Path) -> bool:
    vertices = 0
    with path.open("rb") as file:
        for raw in file:
            line = raw.strip()
            if line.startswith((b"v ", b"v\t")):
                if _OBJ_VERTEX.match(line):
                    vertices += 1
            elif line.startswith((b"f ", b"f\t")) and _OBJ_FACE.match(line):
                return vertices >= 3
            elif b"\x00" in line:
                return False
    return False


def _check_3mf(path: Path) -> str | Refusal:
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
            if len(entries) > _MAX_ZIP_ENTRIES:
                return Refusal("unsupported", f"a zip with {len(entries)} entries")
            parts = [info for info in entries if _MODEL_PART.fullmatch(info.filename)]
            if not parts:
                return Refusal("unsupported", "a zip without a 3D/*.model part")
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
