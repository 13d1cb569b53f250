"""digitize.lazyimports: pyHanko's unused eager imports deferred, exactly as correct when they are used.

The pinned-layout test fails loudly when a pyHanko (or pyhanko-certvalidator, fontTools) of another
module layout makes a deferral stop applying: the opening would silently be ~0.5 s of CPU slower.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from digitize import lazyimports

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("aiohttp", "fontTools.subset", "lxml", "fontTools.varLib")


def run_python(code: str, **env: str) -> dict:
    """``code`` in a fresh interpreter with this tree's digitize; its last stdout line, as JSON."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env}, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- the transformation, on sources of our own ---------------------------------------------------

def load(source: str, origin: str, names: tuple[str, ...]) -> dict | None:
    tree = lazyimports.deferred_names(textwrap.dedent(source), (origin, names))
    if tree is None:
        return None
    import __future__

    flags = __future__.annotations.compiler_flag if tree.postponed else 0
    scope = {lazyimports.LOOKUP: lazyimports._from_import}
    exec(compile(tree, "<test>", "exec", flags=flags, dont_inherit=True), scope)
    return scope


def test_a_name_used_in_function_bodies_and_annotations_is_looked_up_at_its_use():
    scope = load("""
        from json import dumps, loads

        def f(x: dumps | None = None) -> dumps:
            return dumps(x) + str(loads("1"))
    """, "json", ("dumps",))
    assert scope is not None and "dumps" not in scope and scope["loads"] is json.loads  # the rest stays eager
    assert scope["f"]([1]) == "[1]1"
    assert scope["f"].__annotations__["x"] == "dumps | None"  # postponed: never evaluated


def test_a_from_import_in_a_top_level_try_is_deferred_too():
    scope = load("""
        try:
            from os import path, sep
        except ImportError:
            raise
        def f():
            return path.join("a", "b")
    """, "os", ("path",))
    assert scope is not None and "path" not in scope and scope["f"]() == "a/b"


@pytest.mark.parametrize("source", [
    "from json import dumps\nX = dumps(1)\n",  # used at import time
    "from json import dumps\nclass A(dumps): pass\n",  # a base class
    "from json import dumps\ndef f(dumps): return dumps\n",  # a parameter of the name
    "from json import dumps\ndef f():\n    dumps = 1\n    return dumps\n",  # rebound
    "from json import dumps\ndef f():\n    global dumps\n    return dumps\n",
    "from json import dumps\ndef f():\n    from json import dumps\n    return dumps\n",
    "from json import dumps as d\ndef f(): return d(1)\n",  # imported under another name
    "import json\ndef f(): return json.dumps(1)\n",  # not imported from there at all
    "from json import dumps\nimport typing\ndef f(x: dumps): return typing.get_type_hints(f)\n",
    "from json import dumps\nfrom pickle import dumps\ndef f(): return dumps(1)\n",  # rebound at the top
    "from json import dumps\nfrom pickle import *\ndef f(): return dumps(1)\n",  # may rebind it
    "from json import dumps\nglobals()['x'] = 1\ndef f(): return dumps(1)\n",  # any name, at run time
    "from json import dumps\ndef g():\n    globals()['x'] = 1\ndef f(): return dumps(1)\n",
    "from json import dumps\n@dec(dumps)\ndef g(): pass\ndef f(): return dumps(1)\n",  # a decorator's line
    "from json import dumps\nclass A:\n    x = dumps\n",
    # match patterns: a capture, a star, a mapping's rest, a value pattern
    "from json import dumps\ndef f(x):\n    match x:\n        case str() as dumps:\n            return dumps\n",
    "from json import dumps\ndef f(x):\n    match x:\n        case [*dumps]:\n            return dumps\n",
    "from json import dumps\ndef f(x):\n    match x:\n        case {**dumps}:\n            return dumps\n",
    "from json import dumps\ndef f(x):\n    match x:\n        case dumps.y:\n            return 1\n",
])
def test_a_layout_that_does_not_fit_is_refused(source):
    assert lazyimports.deferred_names(source, ("json", ("dumps",))) is None


def test_the_timestamps_plan_refuses_anything_but_imports_and_all():
    real = "from .aiohttp_client import HTTPTimeStamper\nfrom .api import TimeStamper\n__all__ = ['TimeStamper']\n"
    assert lazyimports.timestamps_plan(real) == [("aiohttp_client", [("HTTPTimeStamper", "HTTPTimeStamper")]),
                                                 ("api", [("TimeStamper", "TimeStamper")])]
    assert lazyimports.timestamps_plan(real + "import aiohttp\n") is None
    assert lazyimports.timestamps_plan(real + "X = HTTPTimeStamper\n") is None
    assert lazyimports.timestamps_plan("from .api import TimeStamper\n") is None  # nothing to defer
    assert lazyimports.timestamps_plan(real.replace(".aiohttp_client import", ".aiohttp_client import *,")) is None


# -- pinned: the installed pyHanko has the layout the deferrals need ----------------------------------

OPENING = """
    import json, sys
    from digitize import cli  # what `digitize batch` has imported before its signer opens the key
    from pipelines import batch
    from digitize import lazyimports, signing, signmark
    import pyhanko.sign.signers, pyhanko.sign.pkcs11, pyhanko.stamp, pyhanko.sign.validation.ades
    import pyhanko_certvalidator
    signmark._prepared_font_factory()
    heavy = {name: name in sys.modules for name in %r}
"""


def after_opening(code: str) -> str:
    """A fresh interpreter's code: the batch signer's imports, ``heavy`` (what of HEAVY they loaded), then ``code``."""
    return textwrap.dedent(OPENING % (HEAVY,)) + textwrap.dedent(code)


def test_the_batch_signers_imports_leave_out_aiohttp_and_the_font_subsetter():
    found = run_python(after_opening("print(json.dumps([lazyimports.deferred(), heavy]))"))
    applied, heavy = found
    assert applied == {"pyhanko.sign.timestamps": True, "pyhanko.sign.validation.ades": True,
                       "pyhanko.pdf_utils.font.opentype": True, "pyhanko.sign.signers.pdf_signer": True}, \
        f"a deferral no longer fits the installed pyHanko (see digitize/lazyimports.py): {applied}"
    assert not any(heavy.values()), f"imported eagerly again: {heavy}"


def test_deferred_names_are_pyhankos_own_objects():
    found = run_python(after_opening("""
    import pyhanko.sign.timestamps as ts
    before = dict(heavy)
    from pyhanko.sign.timestamps import *  # noqa: F403 - what __all__ gives
    from pyhanko.sign.timestamps.aiohttp_client import HTTPTimeStamper as real
    import pyhanko.sign.validation.ades as ades
    from pyhanko_certvalidator.fetchers.aiohttp_fetchers import AIOHttpFetcherBackend
    from pyhanko.pdf_utils.font import opentype
    from fontTools import subset
    print(json.dumps({
        "same class": ts.HTTPTimeStamper is real and HTTPTimeStamper is real,
        "all": sorted(ts.__all__), "dir": all(n in dir(ts) for n in ts.__all__),
        "submodule": ts.aiohttp_client is sys.modules["pyhanko.sign.timestamps.aiohttp_client"],
        "ades": ades.__dict__[lazyimports.LOOKUP]("pyhanko_certvalidator.fetchers.aiohttp_fetchers",
                                                  "AIOHttpFetcherBackend") is AIOHttpFetcherBackend,
        "opentype": opentype.__dict__[lazyimports.LOOKUP]("fontTools", "subset") is subset,
        "missing": not hasattr(ts, "NoSuchThing"),
        "heavy before": before}))
    """))
    real_all = [e.value for node in ast.parse(Path(
        lazyimports.importlib.util.find_spec("pyhanko.sign.timestamps").origin).read_text()).body
        if isinstance(node, ast.Assign) for e in node.value.elts]
    assert found.pop("all") == sorted(real_all)
    assert not any(found.pop("heavy before").values())
    assert all(found.values()), found


def test_the_font_engine_still_subsets_a_font_through_the_deferred_name(tmp_path):
    """pyHanko's own subsetting (a font other than our cut one, or a CFF font) reaches fontTools.subset
    at its first use."""
    from digitize import signmark

    font = signmark.find_font("")
    found = run_python(after_opening(f"""
    from io import BytesIO
    from pyhanko.pdf_utils.font.opentype import GlyphAccumulatorFactory
    from pyhanko.pdf_utils.writer import PdfFileWriter
    writer = PdfFileWriter()
    engine = GlyphAccumulatorFactory({str(font)!r}).create_font_engine(writer)
    engine.shape("Nguyễn Văn A")
    engine.prepare_write()
    out = BytesIO(); writer.write(out)
    print(json.dumps([len(out.getvalue()), "fontTools.subset" in sys.modules, heavy["fontTools.subset"]]))
    """))
    size, loaded_after, loaded_before = found
    assert size > 1000 and loaded_after and not loaded_before


def test_pycache_is_left_alone():
    """The deferred modules' code is compiled in memory: their cached bytecode stays pyHanko's own."""
    loader = lazyimports._DeferredNamesLoader("x", __file__, compile("pass", "x", "exec"))
    assert loader.set_data("/nonexistent/x.pyc", b"") is None


def key_and_blank_page(folder: Path) -> tuple[Path, Path]:
    """A self-signed PKCS#12 (password "pw") and a blank one-page PDF to sign, in FOLDER."""
    import pikepdf

    from tests.pki import self_signed

    p12, _, _ = self_signed(folder, "Nguyễn Văn A", "pw")
    plain = folder / "plain.pdf"
    with pikepdf.new() as pdf:
        pdf.add_blank_page(page_size=(595, 842))
        pdf.save(plain)
    return p12, plain


def test_a_prepared_signers_first_signature_loads_no_font_or_xml_modules(tmp_path):
    """Signer.prepare (the batch signer's opening, in its thread while the workers convert) loads what
    the first signature's appearance and XMP update need, so that the first document's worker does not
    wait for it; nothing is signed by it."""
    p12, plain = key_and_blank_page(tmp_path)
    found = run_python(f"""
    import dataclasses, json, sys
    from pathlib import Path
    from digitize import signing
    from digitize.config import Settings, SignSettings
    settings = dataclasses.replace(Settings(), sign=SignSettings(pkcs12={str(p12)!r}, pin="pw"))
    signer = signing.signer_for(settings).prepare()
    before = set(sys.modules)
    signer.sign(Path({str(plain)!r}), Path({str(tmp_path / "signed.pdf")!r}))
    print(json.dumps(sorted(set(sys.modules) - before)))
    """)
    assert (tmp_path / "signed.pdf").is_file()
    assert not [m for m in found if m.split(".")[0] in ("fontTools", "lxml", "aiohttp")
                or m.startswith(("pyhanko.pdf_utils.font", "pyhanko.sign.validation", "pyhanko.pdf_utils.crypt.pdfmac"))], found


# pyHanko's validation, AdES and PDF MAC modules; numpy.ma, which a conversion imports, never a key process
LEFT_OUT = ("pyhanko.sign.validation", "pyhanko.sign.validation.ades", "pyhanko.pdf_utils.crypt.pdfmac", "numpy.ma")


def test_a_key_process_warm_up_and_first_signature_leave_out_pyhankos_validation(tmp_path):
    """The PDF signer's PDF MAC and document-timestamp validation names are deferred and our signer skips
    pyHanko's certification check where it cannot refuse, so a key process's warm-up (signing._warm_key,
    a visible mark, a token's modules) and a B-B signature never import pyHanko's validation package,
    its AdES and qualified-status modules (~0.1 s of CPU per batch), nor numpy.ma; the names still
    resolve to pyHanko's own objects."""
    p12, plain = key_and_blank_page(tmp_path)
    found = run_python(f"""
    import dataclasses, json, sys
    from pathlib import Path
    from digitize import lazyimports, signing
    from digitize.config import Settings, SignSettings
    signing._warm_key(SignSettings(pkcs11_module="/nonexistent/libsofthsm2.so", token_label="t", key_label="k"))
    warm = [m for m in {LEFT_OUT!r} if m in sys.modules]
    settings = dataclasses.replace(Settings(), sign=SignSettings(pkcs12={str(p12)!r}, pin="pw"))
    signing.signer_for(settings).prepare().sign(Path({str(plain)!r}), Path({str(tmp_path / "signed.pdf")!r}))
    signed = [m for m in {LEFT_OUT!r} if m in sys.modules]
    from pyhanko.sign.signers import pdf_signer
    from pyhanko.pdf_utils.crypt import pdfmac
    from pyhanko.sign.validation import EmbeddedPdfSignature
    from pyhanko.sign.validation.ades import ades_timestamp_validation_internal as ades
    lookup = pdf_signer.__dict__[lazyimports.LOOKUP]
    same = [lookup("pyhanko.pdf_utils.crypt", "pdfmac") is pdfmac, pdf_signer.pdfmac is pdfmac,
            pdf_signer.EmbeddedPdfSignature is EmbeddedPdfSignature, pdf_signer.ades_timestamp_validation_internal is ades]
    print(json.dumps([warm, signed, same]))
    """)
    assert found == [[], [], [True] * 4]
    assert sigcheck_report(tmp_path / "signed.pdf")


def sigcheck_report(path: Path) -> bool:
    """pyHanko's validator (digitize.sigcheck) finds the signature intact and covering the whole file."""
    from digitize import sigcheck

    found = sigcheck.check_file(path).signatures
    return len(found) == 1 and all(s.intact and s.valid and s.whole_file for s in found)


def test_several_modules_names_are_deferred_in_one_module_and_a_local_annotation_needs_no_postponing():
    tree = lazyimports.deferred_names(textwrap.dedent("""
        from json import dumps, loads
        from os import path

        def f(x):
            y: dumps | path = 1  # a local variable's annotation: never evaluated
            return dumps([x, y]) + path.join("a", "b")
    """), ("json", ("dumps",)), ("os", ("path",)))
    assert tree is not None and not tree.postponed
    scope = {lazyimports.LOOKUP: lazyimports._from_import}
    exec(compile(tree, "<test>", "exec", dont_inherit=True), scope)
    assert "dumps" not in scope and "path" not in scope and scope["loads"] is json.loads
    assert scope["f"](1) == "[1, 1]a/b"
    # a name imported from both modules: refused
    assert lazyimports.deferred_names("from json import dumps\nfrom pickle import dumps\n",
                                      ("json", ("dumps",)), ("pickle", ("dumps",))) is None


def test_a_class_body_in_a_function_still_postpones_its_annotations():
    """A class body's annotations are evaluated even inside a function (a dataclass's fields): only a
    function's own local annotations are left as they are."""
    tree = lazyimports.deferred_names(textwrap.dedent("""
        from json import dumps

        def f():
            class A:
                x: dumps
            return A, dumps(1)
    """), ("json", ("dumps",)))
    assert tree is not None and tree.postponed
    scope = {lazyimports.LOOKUP: lazyimports._from_import}
    exec(compile(tree, "<test>", "exec", flags=__import__("__future__").annotations.compiler_flag,
                 dont_inherit=True), scope)
    made, dumped = scope["f"]()
    assert made.__annotations__ == {"x": "dumps"} and dumped == "1"


def test_the_code_is_compiled_from_the_current_source_and_nothing_is_written(tmp_path, monkeypatch):
    """No disk cache (the module docstring says why): a source changed with the same size and mtime
    gives its new code, and deferred_code writes no file anywhere (DIGITIZE_CACHE stays empty)."""
    source = tmp_path / "fake_module.py"
    source.write_text("from json import dumps\n\ndef f():\n    return dumps(['old'])\n")
    monkeypatch.setitem(lazyimports.DEFERRED, "fake_module", (("json", ("dumps",)),))
    monkeypatch.setenv("DIGITIZE_CACHE", str(tmp_path / "cache"))
    stat = source.stat()

    def run() -> str:
        scope = {lazyimports.LOOKUP: lazyimports._from_import}
        exec(lazyimports.deferred_code("fake_module", str(source)), scope)
        assert "dumps" not in scope
        return scope["f"]()

    assert run() == '["old"]'
    source.write_text("from json import dumps\n\ndef f():\n    return dumps(['new'])\n")
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert source.stat().st_size == stat.st_size and run() == '["new"]'
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["fake_module.py"]


def test_a_second_thread_waits_for_the_import_under_way_as_from_import_does(tmp_path, monkeypatch):
    """Two threads reach a deferred name while its module is still being imported by the first: the
    second waits for it (the module's import lock), as ``from X import NAME`` does, and gets NAME;
    it never reads the half-initialised module from sys.modules (ModuleNotFoundError 'X.NAME')."""
    import threading
    import types

    gate = types.ModuleType("lazy_gate")
    gate.started, gate.proceed = threading.Event(), threading.Event()
    monkeypatch.setitem(sys.modules, "lazy_gate", gate)
    (tmp_path / "lazy_slowmod.py").write_text("import lazy_gate\nlazy_gate.started.set()\n"
                                             "lazy_gate.proceed.wait(10)\nX = 'x'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "lazy_slowmod", raising=False)
    found: dict[str, object] = {}
    second_started = threading.Event()

    def use(tag: str) -> None:
        if tag == "second":
            second_started.set()
        try:
            found[tag] = lazyimports._from_import("lazy_slowmod", "X")
        except Exception as exc:  # noqa: BLE001 - what the second thread got is the assertion
            found[tag] = repr(exc)

    first = threading.Thread(target=use, args=("first",))
    first.start()
    assert gate.started.wait(10)
    second = threading.Thread(target=use, args=("second",))
    second.start()
    assert second_started.wait(10)
    second.join(0.3)  # the old code had failed by now; the fixed one waits on the import lock
    gate.proceed.set()
    first.join(10), second.join(10)
    sys.modules.pop("lazy_slowmod", None)
    assert found == {"first": "x", "second": "x"}


def test_the_deferred_names_stay_attributes_and_a_monkeypatch_is_seen(tmp_path, monkeypatch):
    """``module.NAME`` still works (PEP 562 ``__getattr__``), and a NAME set on the module (mock.patch,
    monkeypatch) is what its functions use, as with pyHanko's own module."""
    from unittest import mock

    source = tmp_path / "lazy_fake.py"
    source.write_text("from json import dumps\n\ndef f():\n    return dumps([1])\n")
    monkeypatch.setitem(lazyimports.DEFERRED, "lazy_fake", (("json", ("dumps",)),))
    code = lazyimports.deferred_code("lazy_fake", str(source))
    module = type(sys)("lazy_fake")
    module.__file__ = str(source)
    lazyimports._DeferredNamesLoader("lazy_fake", str(source), code).exec_module(module)
    assert "dumps" not in vars(module) and module.dumps is json.dumps and module.f() == "[1]"
    with mock.patch.object(module, "dumps", lambda x: "patched"):
        assert module.f() == "patched"
    assert "dumps" not in vars(module) and module.dumps is json.dumps and module.f() == "[1]"
    with pytest.raises(AttributeError):
        module.no_such_name  # noqa: B018


def test_preload_imports_aiohttp_only_for_a_timestamp_or_revocation_data():
    """signing.preload (a watcher's or queue worker's parent, before it forks): a B-B key leaves aiohttp
    and fontTools' subsetter out; with tsa_url (B-T) or ltv (B-LT) the forked workers inherit aiohttp."""
    found = run_python("""
    import json, subprocess, sys
    from digitize import signing
    from digitize.config import SignSettings
    signing.preload(SignSettings(pkcs12="/nonexistent.p12", visible=False))
    b_b = [m in sys.modules for m in ("aiohttp", "fontTools.subset", "pyhanko.sign.signers")]
    signing.preload(SignSettings(pkcs12="/nonexistent.p12", visible=False, tsa_url="http://127.0.0.1:9/tsa",
                                 ltv=True))
    print(json.dumps([b_b, "pyhanko.sign.timestamps.aiohttp_client" in sys.modules,
                      "pyhanko_certvalidator.fetchers.aiohttp_fetchers" in sys.modules]))
    """)
    assert found == [[False, False, True], True, True]


def test_a_match_statement_that_leaves_the_name_alone_still_fits():
    scope = load("""
        from json import dumps

        def f(x):
            match x:
                case [first, *rest] if first:
                    return dumps(rest)
                case {"k": value, **others}:
                    return dumps([value, others])
            return dumps(None)
    """, "json", ("dumps",))
    assert scope is not None and "dumps" not in scope
    assert (scope["f"]([1, 2]), scope["f"]({"k": 1, "j": 2}), scope["f"](0)) == ("[2]", '[1, {"j": 2}]', "null")
