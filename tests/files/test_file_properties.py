"""Property tests of the model-file checks (Hypothesis), bounded to keep the suite fast: any
bytes get an answer (a format or a refusal with a reason the flows know), never an exception;
OBJ-like text is judged as the old (regex) rules judged it on short lines; random zips are
3MF exactly when their first ``3D/*.model`` part starts a ``<model``."""

from __future__ import annotations

import io
import re
import tempfile
import zipfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from orderbot.dialog.validators.choices import FILE_REASONS
from orderbot.files.formats import MODEL_FORMATS, Refusal, detect_model_format

BOUNDED = settings(max_examples=60, deadline=None)


def judge(content: bytes, name: str = "") -> str | Refusal:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "upload"
        path.write_bytes(content)
        return detect_model_format(path, name)


def assert_answered(result: str | Refusal) -> None:
    if isinstance(result, Refusal):
        assert result.reason in FILE_REASONS
    else:
        assert result in MODEL_FORMATS


@BOUNDED
@given(st.binary(max_size=4096), st.sampled_from(["", "model.stl", "x.obj", "y.3mf"]))
def test_any_bytes_get_an_answer(content: bytes, name: str) -> None:
    assert_answered(judge(content, name))


@BOUNDED
@given(st.binary(max_size=2048))
def test_any_bytes_after_a_zip_signature_get_an_answer(tail: bytes) -> None:
    assert_answered(judge(b"PK\x03\x04" + tail))


# The old rules, as an oracle: safe here because the generated lines are short.
_FLOAT = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_OLD_VERTEX = re.compile(rf"v\s+{_FLOAT}\s+{_FLOAT}\s+{_FLOAT}(?:\s|$)".encode())
_OLD_FACE = re.compile(rb"f(?:\s+-?\d+(?:/-?\d*){0,2}){3,}\s*$")


def old_rules(content: bytes) -> bool:
    vertices = 0
    for raw in content.splitlines():
        line = raw.strip()
        if line.startswith((b"v ", b"v\t")):
            if _OLD_VERTEX.match(line):
                vertices += 1
        elif line.startswith((b"f ", b"f\t")) and _OLD_FACE.match(line):
            return vertices >= 3
    return False


numbers = st.one_of(
    st.integers(-999, 999).map(str),
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(lambda f: f"{f:.6g}"),
    st.sampled_from(["1e", ".", "-", "1.2.3", "x", "1x", "+.5", "5.", "1e-3", "nan", "1_0"]),
)
index = st.integers(1, 30).map(str)
corner = st.one_of(
    index,
    st.tuples(index, index).map("/".join),
    st.tuples(index, index).map(lambda p: f"{p[0]}//{p[1]}"),
    st.tuples(index, index, index).map("/".join),
    st.sampled_from(["a", "1/2/3/4", "/1", ""]),
)
space = st.sampled_from([" ", "\t", "  "])
vertex = st.builds(
    lambda s, xs: "v" + "".join(s + x for x in xs), space, st.lists(numbers, min_size=0, max_size=5)
)
face = st.builds(
    lambda s, cs: "f" + "".join(s + c for c in cs), space, st.lists(corner, min_size=0, max_size=6)
)
other = st.sampled_from(["# comment", "o cube", "vn 0 0 1", "vt 0 1", "g group", "", "s off"])
obj_lines = st.lists(st.one_of(vertex, face, other), max_size=30)


@BOUNDED
@given(obj_lines)
def test_obj_like_text_is_judged_as_the_old_rules_did(lines: list[str]) -> None:
    content = ("\n".join(lines) + "\n").encode()
    if content.lstrip().lower().startswith(b"solid"):
        return  # judged as ASCII STL
    result = judge(content)
    assert_answered(result)
    assert (result == "obj") == old_rules(content)


part_names = st.sampled_from(
    ["3D/3dmodel.model", "3d/other.MODEL", "3D/sub/x.model", "3D/.model", "[Content_Types].xml"]
)
part_bodies = st.one_of(
    st.binary(max_size=200),
    st.just(b'<?xml version="1.0"?><model unit="millimeter"></model>'),
)


@BOUNDED
@given(
    st.lists(st.tuples(part_names, part_bodies), max_size=6, unique_by=lambda e: e[0]),
    st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]),
    st.integers(min_value=0, max_value=100),
)
def test_random_zips_are_3mf_exactly_when_their_model_part_is(
    entries: list[tuple[str, bytes]], compression: int, cut: int
) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, body in entries:
            archive.writestr(name, body)
    content = buffer.getvalue()
    parts = [
        body
        for name, body in entries
        if name.lower().startswith("3d/")
        and name.lower().endswith(".model")
        and "/" not in name[3:]
        and len(name) > len("3D/.model")
    ]
    expected = bool(parts) and b"<model" in parts[0][: 64 * 1024]
    assert (judge(content) == "3mf") == expected
    # Cut anywhere: still an answer, never an exception.
    assert_answered(judge(content[: len(content) * cut // 100]))
