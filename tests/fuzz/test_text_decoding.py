"""The shared text reader (sppdet.fileio.read_text) that every text-file reader goes through."""

from __future__ import annotations

import pytest
from fuzz_kit import TIERS, expect_clean, run_fuzz
from hypothesis import strategies as st

from sppdet.errors import SppdetError
from sppdet.fileio import decode_text, read_text

TEXT = '{"classes": ["RBC", "WBC"], "name": "Blutbild ä €"}\n'


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32"])
def test_encodings_read_back(tmp_path, encoding):
    """Python's own codecs are the reference: every encoding a Windows tool writes reads back."""
    path = tmp_path / "f.json"
    text = TEXT if encoding not in ("utf-16-le", "utf-16-be") else TEXT.replace(" ä €", "")  # BOM-less: ASCII
    path.write_bytes(text.encode(encoding))
    assert read_text(path) == text


def test_invalid_utf8_names_file_line_and_byte(tmp_path):
    path = tmp_path / "comp4_det_test_RBC.txt"
    path.write_bytes(b"a 0.9 1 2 3 4\nb 0.8 caf\xe9 2 3 4\n")
    with pytest.raises(
        SppdetError, match=r"comp4_det_test_RBC.txt: comp4 file is not valid UTF-8 text \(line 2, byte 23: e9\)"
    ):
        read_text(path, "comp4 file")


def test_missing_and_folder(tmp_path):
    with pytest.raises(SppdetError, match="nope.yaml: config file not found"):
        read_text(tmp_path / "nope.yaml", "config file")
    with pytest.raises(SppdetError, match="expected, found a folder"):
        read_text(tmp_path, "config file")


@pytest.mark.parametrize("tier", TIERS)
def test_any_bytes_decode_or_refuse(tier):
    """Arbitrary bytes: text equal to a strict decode with the detected codec, or one SppdetError."""

    def check(raw: bytes) -> None:
        text = expect_clean(lambda: decode_text(raw, "f.txt"), ["f.txt"])
        if text is not None and not raw.startswith((b"\xff\xfe", b"\xfe\xff", b"\xef\xbb\xbf", b"\x00\x00\xfe\xff")):
            if raw.count(0) * 4 < len(raw) or len(raw) % 2:
                assert text == raw.decode("utf-8")

    run_fuzz(tier, 200, st.binary(max_size=64) | st.text(max_size=32).map(lambda t: t.encode("utf-8")), check)
