"""Fuzz targets over everything digitize reads from untrusted hands, and the property they share:
any byte string is either read or refused with one of digitize's own errors (one line, an exit
code), never another exception. Used by ``fuzz/run.py`` (on demand, for a bounded time) and by
the fast property tests in tests/test_fuzz_inputs.py.

Inputs are valid seed files (generated here, small) mutated by hypothesis: bytes flipped,
inserted, deleted, duplicated, the file cut short; plus arbitrary text for the text readers.
"""

from __future__ import annotations

import io
import struct
import tempfile
import zlib
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import pikepdf
from hypothesis import strategies as st
from PIL import Image

from digitize.errors import DigitizeError
from digitize.sources import ReadLimits, open_source

LIMITS = ReadLimits(max_pixels=4_000_000, default_dpi=300.0, max_stream_bytes=20_000_000)
MAX_PAGES = 3  # pages read per fuzzed file


class Finding(Exception):
    """A reader raised something other than a DigitizeError: the bytes that did it, and what."""

    def __init__(self, target: str, data: bytes, error: BaseException):
        super().__init__(f"{target}: {type(error).__name__}: {error}")
        self.target, self.data, self.error = target, data, error


# --- seeds ---------------------------------------------------------------------------------------

def _page(size=(64, 48)) -> np.ndarray:
    img = np.full(size[::-1], 255, np.uint8)
    img[10:20, 8:56] = 0
    img[28:34, 8:40] = 60
    return img


def _image_bytes(fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_page()).save(buf, fmt, **kw)
    return buf.getvalue()


def _tiff_pages() -> bytes:
    frames = [Image.fromarray(_page()), Image.fromarray(_page() > 128), Image.fromarray(_page()).convert("RGB")]
    buf = io.BytesIO()
    frames[0].save(buf, "TIFF", save_all=True, append_images=frames[1:], compression="tiff_lzw", dpi=(300, 300))
    return buf.getvalue()


def _pdf(image: bytes, filter_: str, colour: str = "/DeviceGray", bits: int = 8, text: bool = False) -> bytes:
    pdf = pikepdf.new()
    page = pdf.add_blank_page(page_size=(46, 35))
    xobj = pikepdf.Stream(pdf, image, Type=pikepdf.Name.XObject, Subtype=pikepdf.Name.Image, Width=64, Height=48,
                          ColorSpace=pikepdf.Name(colour), BitsPerComponent=bits, Filter=pikepdf.Name(filter_))
    page.Resources = pikepdf.Dictionary(XObject=pikepdf.Dictionary(Im0=xobj))
    ops = b"q 46 0 0 35 0 0 cm /Im0 Do Q"
    if text:
        font = pikepdf.Dictionary(Type=pikepdf.Name.Font, Subtype=pikepdf.Name.Type1, BaseFont=pikepdf.Name.Helvetica)
        page.Resources.Font = pikepdf.Dictionary(F1=font)
        ops += b" BT /F1 6 Tf 2 2 Td (Ho so) Tj ET"
    page.Contents = pikepdf.Stream(pdf, zlib.compress(ops), Filter=pikepdf.Name.FlateDecode)
    out = io.BytesIO()
    pdf.save(out)
    return out.getvalue()


def _jbig2() -> bytes:
    """A JBIG2 page with one MMR (G4-coded) generic region; see tests/test_sources.py."""
    from digitize import encode

    g4 = encode.encode_bilevel(np.where(_page() > 127, 0, 255).astype(np.uint8))

    def segment(number: int, kind: int, data: bytes) -> bytes:
        return struct.pack(">IBBBI", number, kind, 0, 1, len(data)) + data

    return (segment(0, 48, struct.pack(">IIIIBH", 64, 48, 0, 0, 0, 0))
            + segment(1, 38, struct.pack(">IIIIB", 64, 48, 0, 0, 0) + b"\x01" + g4.data) + segment(2, 49, b""))


@lru_cache(maxsize=1)
def seeds() -> dict[str, bytes]:
    """One small valid file per reader path."""
    return {
        "png": _image_bytes("PNG", dpi=(300, 300)),
        "jpeg": _image_bytes("JPEG", quality=80, dpi=(300, 300)),
        "tiff": _tiff_pages(),
        "pdf-dct": _pdf(_image_bytes("JPEG", quality=80), "/DCTDecode"),
        "pdf-flate": _pdf(zlib.compress(_page().tobytes()), "/FlateDecode"),
        "pdf-jpx": _pdf(_image_bytes("JPEG2000"), "/JPXDecode"),
        "pdf-jbig2": _pdf(_jbig2(), "/JBIG2Decode", bits=1),
        "pdf-text": _pdf(_image_bytes("JPEG", quality=80), "/DCTDecode", text=True),
    }


def mutations(seed: bytes) -> st.SearchStrategy[bytes]:
    """SEED with a few edits: bit flips, inserted or deleted runs, a copied block, a cut tail."""
    edit = st.tuples(st.sampled_from(["flip", "insert", "delete", "copy", "cut"]),
                     st.integers(0, max(0, len(seed) - 1)), st.binary(min_size=1, max_size=16),
                     st.integers(1, 64))

    def apply(edits) -> bytes:
        data = bytearray(seed)
        for kind, at, blob, n in edits:
            at = min(at, max(0, len(data) - 1))
            if kind == "flip" and data:
                data[at] ^= blob[0] or 1
            elif kind == "insert":
                data[at:at] = blob
            elif kind == "delete":
                del data[at:at + n]
            elif kind == "copy":
                data[at:at] = data[max(0, at - n):at]
            elif kind == "cut":
                del data[at:]
        return bytes(data)

    return st.lists(edit, min_size=1, max_size=6).map(apply)


# --- targets -------------------------------------------------------------------------------------

def _guarded(target: str, data: bytes, read: Callable[[], object]) -> None:
    try:
        read()
    except DigitizeError:
        pass
    except Exception as e:  # noqa: BLE001 - exactly what the property forbids
        raise Finding(target, data, e) from e


def read_file(data: bytes, name: str = "scan.bin", target: str = "file") -> None:
    """Any bytes as a scan: opened and its first pages decoded, or refused with a DigitizeError."""
    with tempfile.TemporaryDirectory(prefix="digitize-fuzz-") as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)

        def read() -> None:
            with open_source(path, LIMITS) as src:
                for index in range(min(src.page_count, MAX_PAGES)):
                    src.page(index)

        _guarded(target, data, read)


def read_sidecar(data: bytes) -> None:
    from pipelines.metadata import sidecar_clue

    with tempfile.TemporaryDirectory(prefix="digitize-fuzz-") as tmp:
        scan = Path(tmp) / "scan.pdf"
        scan.write_bytes(b"%PDF-1.7\n")
        (Path(tmp) / "scan.json").write_bytes(data)
        _guarded("sidecar", data, lambda: sidecar_clue(scan))


def read_manifest_bytes(data: bytes) -> None:
    from pipelines.manifest import read_manifest

    with tempfile.TemporaryDirectory(prefix="digitize-fuzz-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        (src / "a.pdf").write_bytes(b"%PDF-1.7\n")
        manifest = Path(tmp) / "manifest.csv"
        manifest.write_bytes(data)
        _guarded("manifest", data, lambda: read_manifest(manifest, src))


def read_case_id(text: str) -> None:
    from digitize import identifiers

    def read() -> None:
        identifiers.find_case_ids(text)
        identifiers.is_case_id(text)
        identifiers.parse_case_id(text)

    _guarded("case-id", text.encode("utf-8", "surrogatepass"), read)


SIDECAR_SEED = '{"case_id": "000.00.31.H56-241015-0027", "scanned_by": "Lan", "title": "Đơn đề nghị"}'.encode()
MANIFEST_SEED = ("path,case_id,procedure_code,title,sequence\n"
                 "a.pdf,000.00.31.H56-241015-0027,1.004227,Đơn,1\n").encode()
CASE_ID_TEXT = st.one_of(st.text(max_size=80),
                         st.from_regex(r"[0-9A-Z.]{3,20}-[0-9]{6}-[0-9]{4}", fullmatch=True),
                         st.builds(lambda a, b: a + "000.00.31.H56-241015-0027" + b, st.text(max_size=8),
                                   st.text(max_size=8)))


def targets() -> dict[str, tuple[st.SearchStrategy, Callable]]:
    """Name -> (strategy, reader) for every target the fuzz script knows."""
    out: dict[str, tuple[st.SearchStrategy, Callable]] = {
        f"file-{kind}": (mutations(seed), lambda data, kind=kind: read_file(data, target=f"file-{kind}"))
        for kind, seed in seeds().items()
    }
    out["file-random"] = (st.one_of(st.binary(max_size=512),
                                    st.builds(lambda magic, tail: magic + tail,
                                              st.sampled_from([b"%PDF-1.7\n", b"II*\x00", b"MM\x00*",
                                                               b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n"]),
                                              st.binary(max_size=512))), read_file)
    out["sidecar"] = (st.one_of(mutations(SIDECAR_SEED), st.binary(max_size=256),
                                st.builds(lambda n: b"[" * n + b"]" * n, st.integers(0, 100_000)),
                                st.builds(lambda n: b'{"sequence": ' + b"1" * n + b"}", st.integers(1, 6000))),
                      read_sidecar)
    out["manifest"] = (st.one_of(mutations(MANIFEST_SEED), st.binary(max_size=256)), read_manifest_bytes)
    out["case-id"] = (CASE_ID_TEXT, read_case_id)
    return out
