"""Tesseract kept loaded through libtesseract's C API: same answers as the command, a deadline,
OSD, and a clear error for a missing model (real Debian libtesseract, no fakes)."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from digitize import ocr, tesslib
from digitize.errors import MissingDependencyError, OcrTimeoutError

from tests.pages import render_text_page, rotate

pytestmark = pytest.mark.skipif(tesslib.library() is None, reason="libtesseract not loadable")


@pytest.fixture(scope="module")
def page() -> np.ndarray:
    return render_text_page()


def test_library_is_the_same_tesseract_as_the_command() -> None:
    out = subprocess.run(["tesseract", "--version"], capture_output=True, text=True).stdout
    assert tesslib.version() and tesslib.version() in out.splitlines()[0]


def test_in_process_hocr_reads_like_the_command(page) -> None:
    loaded = ocr.parse_hocr(tesslib.engine("vie").hocr(page, 300, 3, 60))
    command = ocr.parse_hocr(ocr._hocr_command(page, "vie", 300, 3, 60, "page 1"))
    assert loaded.text == command.text
    assert [w.text for _, w in loaded.words] == [w.text for _, w in command.words]
    assert "QUYẾT ĐỊNH về việc giao đất" in loaded.text


def test_model_stays_loaded_between_pages(page) -> None:
    first = tesslib.engine("vie")
    first.hocr(page, 300, 3, 60)
    assert tesslib.engine("vie") is first
    assert ocr.parse_hocr(first.hocr(page, 300, 3, 60)).word_count > 50  # reusable after a page


def test_recognition_past_the_deadline_is_cancelled(page) -> None:
    assert tesslib.engine("vie").hocr(page, 300, 3, 0.001) is None
    with pytest.raises(OcrTimeoutError, match="did not finish within"):
        ocr._hocr(page, "vie", 300, 3, 0.001, "page 1")


@pytest.mark.parametrize("turned", [90, 180, 270])
def test_osd_says_how_to_turn_the_page_upright(page, turned) -> None:
    found = tesslib.engine("osd").orientation(rotate(page, turned), 300)
    assert found is not None and found.rotate == (360 - turned) % 360
    assert ocr.detect_orientation(rotate(page, turned), 300, 60) == (360 - turned) % 360


def test_missing_language_model_is_a_missing_dependency() -> None:
    with pytest.raises(MissingDependencyError, match="language data missing"):
        ocr._hocr(np.full((100, 100), 255, np.uint8), "xyz", 300, 3, 10, "page 1")


def test_16_bit_or_odd_shaped_pixels_are_refused(page) -> None:
    with pytest.raises(ValueError):
        tesslib.engine("vie").hocr(page.astype(np.uint16), 300, 3, 10)


def test_off_switch_uses_the_command() -> None:
    code = ("from digitize import ocr, tesslib; import numpy as np; "
            "assert tesslib.library() is None; "
            "print(ocr.version()); "
            "print(ocr.recognise(np.full((200, 200), 255, np.uint8), 'vie', 300, 30).word_count)")
    env = {**os.environ, "DIGITIZE_LIBTESSERACT": "off"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    version, words = out.stdout.split("\n")[:2]
    assert version.startswith("tesseract ") and "libtesseract" not in version
    assert words == "0"


@pytest.mark.parametrize("shape", [(1, 1), (2, 50), (100, 100)])
def test_blank_or_tiny_images_read_as_no_words_not_as_errors(shape) -> None:
    assert ocr._hocr(np.full(shape, 255, np.uint8), "vie", 300, 3, 30, "page 1").word_count == 0


def test_recognition_settings_are_applied_to_the_loaded_model() -> None:
    import ctypes

    engine = tesslib.engine("vie")
    get = engine._lib.TessBaseAPIGetBoolVariable
    get.restype, get.argtypes = ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int)]
    for name, value in tesslib.SETTINGS.items():
        found = ctypes.c_int(-1)
        assert get(engine._handle, name.encode(), ctypes.byref(found))
        assert found.value == int(value), name


def test_leptonica_errors_under_the_loaded_library_never_reach_stderr(capfd) -> None:
    """A noisy page's boxes at its edge made leptonica print "Error in pixScanForForeground: invalid
    box" under Tesseract, beside a failed run's one line (tests/test_run_cli.py's full disk)."""
    import ctypes
    import ctypes.util

    assert tesslib.library() is not None
    for name in ("liblept.so.5", "libleptonica.so.6", ctypes.util.find_library("lept")):
        try:
            lept = ctypes.CDLL(name)
            break
        except (OSError, TypeError):
            continue
    else:
        pytest.skip("leptonica not found")
    clip = lept.boxClipToRectangle
    clip.restype, clip.argtypes = ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    capfd.readouterr()
    assert clip(None, 10, 10) is None  # leptonica's own error: no box given
    assert capfd.readouterr().err == ""


def test_the_command_gets_the_same_settings(monkeypatch, page) -> None:
    seen = {}
    monkeypatch.setattr(ocr, "_call", lambda fn, timeout, what: seen.setdefault("config", fn) and b"")
    pt = ocr._pytesseract()
    monkeypatch.setattr(pt, "image_to_pdf_or_hocr", lambda p, lang, config, extension, timeout: config)
    ocr._hocr_command(page[:50, :50], "vie", 300, 3, 60, "page 1")
    config = seen["config"]()
    assert all(f"-c {k}={v}" in config for k, v in tesslib.SETTINGS.items())


def test_a_forked_child_leaves_the_inherited_models_alone(page) -> None:
    loaded = tesslib.engine("vie")
    pid = os.fork()
    if pid == 0:  # child: its exit must not free (and so copy) the parent's model
        tesslib.close_all()
        os._exit(0 if loaded._handle else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert tesslib.engine("vie") is loaded and loaded._handle  # the parent's is untouched too


def test_warm_loads_the_orientation_model_on_request() -> None:
    ocr.warm("vie", orientation=True)
    assert "osd" in tesslib._engines and "vie" in tesslib._engines


def test_hundreds_of_unsure_words_are_reread_not_a_failed_page(page) -> None:
    """A poor page (a worn typewriter ribbon) has hundreds of unsure words; their crops in one
    strip were taller than Tesseract takes (32767 px) and the whole page failed with "recognition
    failed". Now they are re-read in strips under the limit."""
    from digitize.records import Word

    word = Word("Căn", 90, 240, 200, 290, 10.0)  # a word of the page's 4th line, read "unsure"
    result = ocr.OcrResult([(n, word) for n in range(600)], 10.0)  # 600 x 74 px: a 47 000 px strip
    replaced = ocr.refine_unsure_words(result, page, "eng", 300, 120, "page 1")
    assert 0 <= replaced <= 600 and len(result.words) == 600


def planted_build(tmp_path, system_library) -> tuple[str, str]:
    """A system folder as setup.sh leaves it: tesseract/libtesseract.so.5 and its stamp."""
    folder = tmp_path / "system" / tesslib.BUILD_FOLDER
    folder.mkdir(parents=True)
    (folder / "libtesseract.so.5").write_bytes(b"\x7fELF built")
    info = os.stat(system_library)
    (folder / "stamp").write_text(f"version=5.3.0-2\nsystem_library={system_library}\n"
                                  f"size={info.st_size}\nmtime={int(info.st_mtime)}\n")
    return str(tmp_path / "system"), str(folder / "libtesseract.so.5")


def test_setup_build_is_used_only_while_the_debian_library_is_unchanged(tmp_path, monkeypatch) -> None:
    """A Debian update of libtesseract (a security fix) must not be shadowed by an older build."""
    debian = tmp_path / "libtesseract.so.5.0.3"
    debian.write_bytes(b"debian's")
    system, built = planted_build(tmp_path, debian)
    monkeypatch.setenv("DIGITIZE_SYSTEM_DIR", system)
    assert tesslib.built_library() == (built,)
    os.utime(debian, (1, 1))  # dpkg replaced it
    assert tesslib.built_library() == ()
    debian.write_bytes(b"debian's, updated")
    assert tesslib.built_library() == ()


def test_a_build_for_instructions_this_processor_lacks_is_never_loaded(tmp_path, monkeypatch) -> None:
    """setup.sh builds code for the processor's x86-64 level (v4: AVX-512; v3: AVX2, FMA...) and stamps
    the flags it needs: a system copied or moved to a processor without them falls back to Debian's
    library instead of dying of SIGILL."""
    debian = tmp_path / "libtesseract.so.5.0.3"
    debian.write_bytes(b"debian's")
    system, built = planted_build(tmp_path, debian)
    stamp = os.path.join(os.path.dirname(built), "stamp")
    with open(stamp, "a") as f:
        f.write("requires=avx2 fma\n")
    monkeypatch.setenv("DIGITIZE_SYSTEM_DIR", system)
    monkeypatch.setattr(tesslib, "cpu_flags", lambda: {"sse2", "avx", "avx2", "fma", "bmi2"})
    assert tesslib.built_library() == (built,)
    monkeypatch.setattr(tesslib, "cpu_flags", lambda: {"sse2", "avx", "bmi2"})
    assert tesslib.built_library() == ()


def test_cpu_flags_are_read_from_proc_cpuinfo() -> None:
    flags = tesslib.cpu_flags()
    if os.path.exists("/proc/cpuinfo") and os.uname().machine in ("x86_64", "amd64"):
        assert {"sse2", "fxsr"} <= flags
    else:
        assert isinstance(flags, set)


@pytest.mark.parametrize("plant", ["writable-library", "writable-folder", "no-stamp", "bad-stamp", "symlink-elsewhere"])
def test_a_build_another_account_could_change_is_never_loaded(tmp_path, monkeypatch, plant) -> None:
    """The library runs as us: one that another account can write (or a stamp we cannot read) is not used."""
    debian = tmp_path / "libtesseract.so.5.0.3"
    debian.write_bytes(b"debian's")
    system, built = planted_build(tmp_path, debian)
    folder = os.path.dirname(built)
    if plant == "writable-library":
        os.chmod(built, 0o666)
    elif plant == "writable-folder":
        os.chmod(folder, 0o777)
    elif plant == "no-stamp":
        os.unlink(os.path.join(folder, "stamp"))
    elif plant == "bad-stamp":
        with open(os.path.join(folder, "stamp"), "w") as f:
            f.write("size=oops\n")
    else:
        elsewhere = tmp_path / "open"
        elsewhere.mkdir(mode=0o777)
        os.chmod(elsewhere, 0o777)
        os.replace(built, elsewhere / "libtesseract.so.5")
        os.symlink(elsewhere / "libtesseract.so.5", built)
    monkeypatch.setenv("DIGITIZE_SYSTEM_DIR", system)
    assert tesslib.built_library() == ()


def _hocr_with(library: str, images: list[str]) -> list[bytes]:
    """Each saved page's hOCR read by ``library`` (a path, or Debian's by its name), in a process of its own;
    an image given as ``PATH|DPI`` is read at that resolution (else 300 dpi)."""
    code = ("import sys, numpy as np; from digitize import tesslib; "
            "assert tesslib.library_name() == sys.argv[1], tesslib.library_name(); "
            "[sys.stdout.buffer.write(tesslib.engine('vie').hocr(np.load(p.split('|')[0]), int((p + '|300').split('|')[1]), "
            "3, 60) + b'\\0') for p in sys.argv[2:]]")
    done = subprocess.run([sys.executable, "-c", code, library, *images], capture_output=True, timeout=600,
                          env={**os.environ, "DIGITIZE_LIBTESSERACT": library})
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout.split(b"\0")[:-1]


def test_setup_build_reads_exactly_as_debians_library(page, tmp_path) -> None:
    """scripts/build-tesseract.sh (setup.sh runs it as root) changes speed, never words, boxes or
    confidences: no -ffast-math, no fused multiply-adds (x86-64-v3/v4 code is built with -ffp-contract=off),
    the same source and Debian patches, and our own patches
    (scripts/tesseract/) change how, never what. A generated page and every image of the held-out
    hard set, as grey pixels; its two ruled tables also at resolutions whose line-finding openings
    (resolution / 20 and / 4 pixels) are leptonica's DWA sizes, sums of two or three of them, or
    neither (faster-layout.patch). CI must have the build."""
    from PIL import Image

    built = tesslib.built_library()
    if not built:
        if os.environ.get("CI"):
            pytest.fail("setup.sh did not build Tesseract (scripts/build-tesseract.sh): see its output")
        pytest.skip("no Tesseract build from setup.sh here")
    assert tesslib.library_name() == built[0]  # the default, when setup built it
    images = [str(tmp_path / "page.npy")]
    np.save(images[0], page)
    hard = Path(__file__).resolve().parent.parent / "samples" / "hard"
    for sample in sorted(hard.glob("*.*")):
        if sample.suffix.lower() in (".jpg", ".png", ".tif", ".tiff"):
            with Image.open(sample) as im:
                images.append(str(tmp_path / f"{sample.stem}.npy"))
                np.save(images[-1], np.asarray(im.convert("L")))
            if "table" in sample.stem:
                images += [f"{images[-1]}|{dpi}" for dpi in (72, 141, 171, 250, 620)]
            if "seal" in sample.stem:  # in colour: the threshold's path for several channels
                with Image.open(sample) as im:
                    images.append(str(tmp_path / f"{sample.stem}-rgb.npy"))
                    np.save(images[-1], np.asarray(im.convert("RGB")))
    images.append(str(tmp_path / "blank.npy"))  # no ink at all: Otsu finds no threshold
    np.save(images[-1], np.full((400, 300), 255, np.uint8))
    assert len(images) >= 22
    debian = _hocr_with("libtesseract.so.5", images)
    assert "QUYẾT".encode() in debian[0] and all(b"x_wconf" in h for h in debian[:-1])
    assert _hocr_with(built[0], images) == debian


def test_the_loaded_build_names_the_debian_library_it_stands_in_for(tmp_path) -> None:
    """What the resident converter watches (zygote_server._loaded_files) when setup's build is loaded."""
    debian = tmp_path / "libtesseract.so.5.0.3"
    debian.write_bytes(b"debian's")
    system, built = planted_build(tmp_path, debian)
    os.unlink(built)
    debians = sorted(glob.glob("/usr/lib/*/libtesseract.so.5") + glob.glob("/usr/lib/libtesseract.so.5"))
    os.symlink(os.path.realpath(debians[0]), built)  # a loadable libtesseract, as setup's build
    code = ("from digitize import tesslib; assert tesslib.library() is not None; "
            "print(tesslib.library_name()); print(tesslib.stands_in_for())")
    env = {k: v for k, v in os.environ.items() if k != "DIGITIZE_LIBTESSERACT"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**env, "DIGITIZE_SYSTEM_DIR": system})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [built, str(debian)]
    chosen = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            env={**env, "DIGITIZE_SYSTEM_DIR": system, "DIGITIZE_LIBTESSERACT": "libtesseract.so.5"})
    assert chosen.returncode == 0, chosen.stderr
    assert chosen.stdout.split() == ["libtesseract.so.5"]  # Debian's, chosen: nothing stands in
