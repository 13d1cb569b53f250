"""pyHanko's eager imports that a signature without a timestamp never uses, deferred to their first use.

Opening a batch's signing key cost ~0.8-1 s of CPU, ~90 % of it imports, and two of them are never
used by a PAdES B-B signature with our mark:

- aiohttp (~0.3 s: it builds two SSL contexts from the system CA store), reached twice:
  ``pyhanko.sign.timestamps``' package ``__init__`` imports ``aiohttp_client`` (every
  ``pyhanko.sign`` import goes through that ``__init__``), and ``pyhanko.sign.validation.ades``
  (imported by the PDF signer) imports pyhanko-certvalidator's ``AIOHttpFetcherBackend`` at its top.
  The timestamps package is initialised here from the same submodules, in the same order, except
  that ``HTTPTimeStamper`` (and the ``aiohttp_client`` submodule) are imported at their first use
  (PEP 562 module ``__getattr__``); in ``ades`` the name is looked up where a function uses it.
  Either way the very same objects pyHanko's own imports give: a ``tsa_url`` (B-T) or ``ltv``
  (B-LT) signer imports aiohttp when it builds its timestamper or fetches revocation data.
- fontTools' subsetter (with varLib, feaLib's builders: ~0.1-0.2 s): ``pyhanko.pdf_utils.font.opentype``
  imports ``fontTools.subset`` at its top, but our mark's font is cut once and cached
  (signmark.pdf_font) and embedded whole, so no signature subsets it. The name is looked up where
  a function uses it, and the module is compiled with postponed annotations (PEP 563): its only
  other use of ``subset`` is in signature annotations (``options: subset.Options | None``).
- pyHanko's validation package, with its AdES, qualified-status and PDF MAC modules (~0.1 s of a
  batch key process's warm-up, before its first signature): ``pyhanko.sign.signers.pdf_signer``
  imports three names from three of them at its top, ``pdfmac`` (ISO 32004 MACs: encrypted files
  only, which PDF/A forbids), ``EmbeddedPdfSignature`` (a local variable's annotation only, never
  evaluated) and ``ades_timestamp_validation_internal`` (an earlier document timestamp's check).
  pyHanko's certification check imports the package again at every signature; signing's
  TimedPdfSigner runs it only where it can refuse (a certified document, or certifying).
  pdf_signer is then compiled here (~20-35 ms) and ades, never imported, not (~30-50 ms).

How (deferred_names): the module's own source, parsed; each ``from X import NAME`` (names of one or
several modules X) taken out of its top level; each use of NAME in a function body replaced by
``__digitize_from_import__(X, NAME)``,
which is ``from X import NAME`` at that moment. Nothing in site-packages is changed, and nothing is
written anywhere: the rewritten source is compiled in memory in each process (~55-75 ms of CPU for
the two modules under load: bench/lazyimports_bench.py). There is deliberately no disk cache of the
compiled code: a cache would be code this process executes from a file, which then has to be proven
ours, current and of this module (source hash, header, owner, mode, a private folder, writes through
the fd); that is more code to get right than the ~0.1 s per process it would save.

:func:`install` puts a finder first on ``sys.meta_path`` that handles these four module names and
nothing else. Each deferral applies only when the module's source has the layout it was written for
(:func:`timestamps_plan`, :func:`deferred_names`: NAME never rebound, never used when the module is
imported); otherwise pyHanko's own import runs (correct, just eager) and :func:`deferred` says which
were not applied: tests/test_lazyimports.py pins them, so a pyHanko of another layout fails loudly
there instead of silently losing the gain.

What differs from pyHanko's own module (none of it used by pyHanko or digitize today):
``ades.AIOHttpFetcherBackend`` and ``opentype.subset`` are not in the module's namespace until
someone sets them; reading them as attributes works (a module ``__getattr__`` imports them), and
``mock.patch``/monkeypatching them is seen by the module's functions (the lookup reads the module's
namespace first). opentype's annotations are strings (PEP 563): ``GlyphAccumulatorFactory``'s
dataclass field types are strings, and ``typing.get_type_hints`` on a function annotated with
``subset.Options`` raises NameError.
"""

from __future__ import annotations

import __future__
import ast
import functools
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import re
import sys
import threading

log = logging.getLogger("digitize")

TIMESTAMPS = "pyhanko.sign.timestamps"
TIMESTAMPS_DEFERRED = "aiohttp_client"  # the submodule that imports aiohttp
# module -> ((a module it imports from at its top level, the names deferred to their use), ...)
DEFERRED = {
    "pyhanko.pdf_utils.font.opentype": (("fontTools", ("subset",)),),  # fontTools' subsetter, lxml, varLib
    "pyhanko.sign.validation.ades": (("pyhanko_certvalidator.fetchers.aiohttp_fetchers",
                                      ("AIOHttpFetcherBackend",)),),  # aiohttp, for fetching revocation data
    # the PDF signer's PDF MAC (ISO 32004) and earlier-timestamp validation: pyHanko's validation
    # package, its AdES and qualified-status modules (~0.1 s of a key process's warm-up); a B-B or
    # B-T signature of a file without a MAC or a document timestamp never reaches them
    "pyhanko.sign.signers.pdf_signer": (("pyhanko.pdf_utils.crypt", ("pdfmac",)),
                                        ("pyhanko.sign.validation", ("EmbeddedPdfSignature",)),
                                        ("pyhanko.sign.validation.ades", ("ades_timestamp_validation_internal",))),
}

_lock = threading.Lock()
_applied: dict[str, bool] = {}  # module name -> deferral applied (True) or its layout refused (False)


def timestamps_plan(source: str) -> list[tuple[str, list[tuple[str, str]]]] | None:
    """pyHanko's ``timestamps/__init__.py`` as a list of (submodule, [(name, bound as)]), when it is
    nothing but relative ``from .x import names`` and an ``__all__`` of strings (and a docstring),
    one of them from TIMESTAMPS_DEFERRED; else None (not a layout this module knows)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    plan: list[tuple[str, list[tuple[str, str]]]] = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module and "." not in node.module \
                and all(alias.name != "*" for alias in node.names):
            plan.append((node.module, [(alias.name, alias.asname or alias.name) for alias in node.names]))
        elif isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["__all__"] \
                and isinstance(node.value, (ast.List, ast.Tuple)) \
                and all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.value.elts):
            continue
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and node is tree.body[0]:
            continue
        else:
            return None
    if TIMESTAMPS_DEFERRED not in {module for module, _ in plan}:
        return None
    return plan


def deferred_names(source: str, *deferrals: tuple[str, tuple[str, ...]]) -> ast.Module | None:
    """The module's code with, for each (ORIGIN, names) of ``deferrals``, ``from ORIGIN import NAME``
    (NAME in names) taken out of its top level and each use of NAME in a function body made a lookup
    at call time (``_from_import``), when the module fits: that import statement at its top level,
    NAME never bound anywhere else (no assignment, parameter, local import, global or nonlocal) and
    used outside function bodies only in annotations (then compiled with postponed annotations, PEP
    563: the one thing that changes, and the module must not read annotations back; a local
    variable's annotation is never evaluated and needs none). None when it does not fit: a layout
    this module does not know."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    origins = {name: origin for origin, names in deferrals for name in names}  # NAME -> its ORIGIN
    if len(origins) != sum(len(names) for _, names in deferrals):
        return None  # one name from two modules: which one the module meant is not ours to guess
    found: set[str] = set()
    top = [tree.body, *(t.body for t in tree.body if isinstance(t, ast.Try))]  # also `try: from ... import`
    for statements in top:
        for index, node in enumerate(list(statements)):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in origins.values():
                moved = {a.name for a in node.names if a.asname is None and origins.get(a.name) == node.module}
                kept = [a for a in node.names if a.asname is not None or a.name not in moved]
                found |= moved
                statements[index] = ast.copy_location(ast.ImportFrom(module=node.module, names=kept, level=0),
                                                      node) if kept else ast.copy_location(ast.Pass(), node)
    if found != set(origins):
        return None
    lookups = _Lookups(origins, _untouched(source, tree, tuple(origins)))
    tree = lookups.visit(tree)  # the import statements above no longer bind NAME: they are checked too
    if not lookups.fits or (lookups.postponed and ("get_type_hints" in source or "__annotations__" in source)):
        return None
    tree.postponed = lookups.postponed  # type: ignore[attr-defined]
    return tree  # every node made here has its location (no fix_missing_locations: a walk of ~30 ms)


def _untouched(source: str, tree: ast.Module, names) -> set[int]:
    """The module's top-level ``def`` and ``class`` statements whose lines spell neither a NAME nor one
    of _Lookups.DYNAMIC and hold no non-ASCII character (NFKC could make another spelling the same
    identifier): nothing in them can bind, use or shadow NAME (a star import is only allowed at the
    top level), so the checking pass skips them (~10 ms of CPU less on ades' 2 600 lines)."""
    if "\r" in source:  # line numbers counted on "\n" only
        return set()
    words = r"\b(?:%s)\b|[^\x00-\x7f]" % "|".join(re.escape(word) for word in (*names, *_Lookups.DYNAMIC))
    hits = sorted(source.count("\n", 0, found.start()) + 1 for found in re.finditer(words, source))
    untouched = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            if not any(first <= line <= node.end_lineno for line in hits):
                untouched.add(id(node))
    return untouched


class _Lookups(ast.NodeTransformer):
    """One pass over a module (see deferred_names): NAME's loads in function bodies become
    ``LOOKUP(its origin, NAME)``; ``fits`` turns False at any other use or binding of NAME, and wherever
    a binding cannot be proven absent (a star import; globals(), vars(), exec or eval; NAME in a
    ``match`` pattern)."""

    DYNAMIC = frozenset({"globals", "vars", "exec", "eval"})  # could bind any name at run time

    def __init__(self, origins: dict[str, str], untouched: set[int] = frozenset()):
        self.origins, self.names, self.untouched = origins, frozenset(origins), untouched
        self.depth = self.annotation = 0  # inside function bodies; inside annotations
        self.local = False  # the innermost scope is a function's (not a class body's, nor the module's)
        self.fits, self.postponed = True, False

    def visit_Module(self, node):  # noqa: N802
        node.body = [statement if id(statement) in self.untouched else self.visit(statement)
                     for statement in node.body]
        return node

    def _annotation(self, node):
        if node is None:
            return None
        self.annotation += 1
        try:
            return self.visit(node)
        finally:
            self.annotation -= 1

    def _arguments(self, arguments: ast.arguments) -> None:
        for arg in [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs,
                    *filter(None, [arguments.vararg, arguments.kwarg])]:
            self.fits &= arg.arg not in self.names
            arg.annotation = self._annotation(arg.annotation)
        arguments.defaults = [self.visit(d) for d in arguments.defaults]  # evaluated where the def runs
        arguments.kw_defaults = [self.visit(d) if d is not None else None for d in arguments.kw_defaults]

    def visit_FunctionDef(self, node):  # noqa: N802
        self.fits &= node.name not in self.names
        node.decorator_list = [self.visit(d) for d in node.decorator_list]
        self._arguments(node.args)
        node.returns = self._annotation(node.returns)
        self.depth += 1
        local, self.local = self.local, True
        node.body = [self.visit(statement) for statement in node.body]
        self.depth, self.local = self.depth - 1, local
        return node

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node):  # noqa: N802
        self._arguments(node.args)
        self.depth += 1
        node.body = self.visit(node.body)
        self.depth -= 1
        return node

    def visit_AnnAssign(self, node):  # noqa: N802
        if not self.local:  # a local variable's annotation is never evaluated (PEP 526): left as it is
            node.annotation = self._annotation(node.annotation)
        node.target = self.visit(node.target)
        node.value = self.visit(node.value) if node.value is not None else None
        return node

    def visit_ClassDef(self, node):  # noqa: N802
        self.fits &= node.name not in self.names
        local, self.local = self.local, False  # a class body's annotations are evaluated, in a function too
        try:
            return self.generic_visit(node)
        finally:
            self.local = local

    def visit_Global(self, node):  # noqa: N802
        self.fits &= not set(node.names) & self.names
        return node

    visit_Nonlocal = visit_Global

    def visit_ExceptHandler(self, node):  # noqa: N802
        self.fits &= node.name not in self.names
        return self.generic_visit(node)

    def visit_Import(self, node):  # noqa: N802
        bound = {(a.asname or a.name).split(".")[0] for a in node.names}
        self.fits &= not bound & (self.names | {"*"})
        return node

    visit_ImportFrom = visit_Import

    def visit_match_case(self, node):
        """A pattern binds names (``case str() as NAME``, ``*NAME``, ``**NAME``) and reads them where
        no call may stand (``case NAME.X``): NAME anywhere in a pattern is refused."""
        for part in ast.walk(node.pattern):
            used = {getattr(part, "name", None), getattr(part, "rest", None), getattr(part, "id", None)}
            self.fits &= not used & self.names
        node.guard = self.visit(node.guard) if node.guard is not None else None
        node.body = [self.visit(statement) for statement in node.body]
        return node

    def visit_Name(self, node):  # noqa: N802
        if node.id in self.DYNAMIC:
            self.fits = False
        if node.id not in self.names:
            return node
        if not isinstance(node.ctx, ast.Load):
            self.fits = False
        elif self.annotation:
            self.postponed = True  # left as it is: postponed annotations keep it a string
        elif not self.depth:
            self.fits = False  # used when the module is imported
        else:
            here = functools.partial(ast.copy_location, old_node=node)
            call = ast.Call(func=here(ast.Name(id=LOOKUP, ctx=ast.Load())),
                            args=[here(ast.Constant(self.origins[node.id])), here(ast.Constant(node.id))],
                            keywords=[])
            return here(call)
        return node


LOOKUP = "__digitize_from_import__"


def _from_import(origin: str, name: str):
    """``from origin import name``, at the time of use (what the module's own import gave). Through
    import_module, not sys.modules: a module another thread is still importing is waited for (its
    module lock), as the statement does, never read half-initialised."""
    module = importlib.import_module(origin)
    try:
        return getattr(module, name)
    except AttributeError:
        return importlib.import_module(f"{origin}.{name}")


class _TimestampsLoader(importlib.abc.Loader):
    """Initialises ``pyhanko.sign.timestamps`` as its ``__init__`` would, TIMESTAMPS_DEFERRED's names lazily."""

    def __init__(self, plan: list[tuple[str, list[tuple[str, str]]]], all_names: list[str] | None):
        self.plan, self.all_names = plan, all_names

    def create_module(self, spec):
        return None

    def exec_module(self, module) -> None:
        package = module.__name__
        lazy: dict[str, tuple[str, str]] = {}
        for submodule, names in self.plan:
            if submodule == TIMESTAMPS_DEFERRED:
                lazy.update({bound: (submodule, name) for name, bound in names})
                continue
            found = importlib.import_module(f"{package}.{submodule}")
            for name, bound in names:
                setattr(module, bound, getattr(found, name))
        if self.all_names is not None:
            module.__all__ = list(self.all_names)

        def __getattr__(attr: str):  # noqa: N807 - PEP 562
            if attr == TIMESTAMPS_DEFERRED:
                return importlib.import_module(f"{package}.{attr}")
            if attr not in lazy:
                raise AttributeError(f"module {package!r} has no attribute {attr!r}")
            submodule, name = lazy[attr]
            value = getattr(importlib.import_module(f"{package}.{submodule}"), name)
            setattr(module, attr, value)
            return value

        def __dir__():  # noqa: N807
            return sorted(set(vars(module)) | set(lazy))

        module.__getattr__, module.__dir__ = __getattr__, __dir__


class _DeferredNamesLoader(importlib.machinery.SourceFileLoader):
    """A module's own source, its DEFERRED names looked up at their use (deferred_names): the code
    object made by deferred_code, never written to ``__pycache__`` (whose normal cache stays as it is).
    The names stay reachable as the module's attributes (PEP 562 ``__getattr__``), and one set on the
    module (a monkeypatch) is what its functions then use."""

    def __init__(self, fullname, path, code):
        super().__init__(fullname, path)
        self.code = code

    def get_code(self, fullname):
        return self.code

    def exec_module(self, module) -> None:
        namespace = module.__dict__
        origins = {name: origin for origin, names in DEFERRED[module.__name__] for name in names}

        def lookup(origin: str, name: str):
            return namespace[name] if name in namespace else _from_import(origin, name)

        def __getattr__(attr: str):  # noqa: N807 - PEP 562; the module's own, if it defines one, wins
            if attr in origins:
                return _from_import(origins[attr], attr)
            raise AttributeError(f"module {module.__name__!r} has no attribute {attr!r}")

        namespace[LOOKUP], namespace["__getattr__"] = lookup, __getattr__
        super().exec_module(module)

    def set_data(self, path, data, *, _mode=0o666):  # never write bytecode for this code
        return None


def deferred_code(name: str, path: str):
    """The code object of module NAME from PATH with DEFERRED[name]'s names deferred, or None when
    its layout does not fit. Parsed, checked and compiled in memory in each process (~20-50 ms of
    CPU per module under load; pyHanko's ades is 2 600 lines): no cache on disk (module docstring)."""
    with open(path, "rb") as f:
        source = f.read()
    try:
        tree = deferred_names(source.decode("utf-8"), *DEFERRED[name])
    except (UnicodeDecodeError, RecursionError):
        return None
    if tree is None:
        return None
    flags = __future__.annotations.compiler_flag if tree.postponed else 0
    return compile(tree, path, "exec", flags=flags, dont_inherit=True)


def _all_names(source: str) -> list[str] | None:
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["__all__"]:
            return [e.value for e in node.value.elts]
    return None


class _DeferringFinder(importlib.abc.MetaPathFinder):
    """Finds TIMESTAMPS and the modules of DEFERRED as the path finder does, with the loaders above."""

    def find_spec(self, name, path, target=None):
        if name != TIMESTAMPS and name not in DEFERRED:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or type(spec.loader) is not importlib.machinery.SourceFileLoader:
            _applied[name] = False
            return spec
        if name == TIMESTAMPS:
            try:
                source = spec.loader.get_data(spec.origin).decode("utf-8")
            except (OSError, UnicodeDecodeError):
                source = ""
            plan = timestamps_plan(source)
            _applied[name] = plan is not None
            if plan is None:
                log.debug("pyHanko's %s has a layout digitize does not know: aiohttp imported eagerly", name)
                return spec
            spec.loader = _TimestampsLoader(plan, _all_names(source))
            return spec
        try:
            code = deferred_code(name, spec.origin)
        except Exception:  # noqa: BLE001 - never an import broken by this: pyHanko's own import runs
            log.debug("deferring %s's imports failed", name, exc_info=True)
            code = None
        _applied[name] = code is not None
        if code is None:
            log.debug("%s has a layout digitize does not know: %s imported eagerly", name,
                      ", ".join(origin for origin, _ in DEFERRED[name]))
            return spec
        spec.loader = _DeferredNamesLoader(name, spec.origin, code)
        return spec


_finder = _DeferringFinder()


def install() -> None:
    """Defer pyHanko's unused imports in this process (idempotent). Only what is imported after this
    call is deferred: call it before the first pyHanko import."""
    with _lock:
        if _finder not in sys.meta_path:
            sys.meta_path.insert(0, _finder)


def deferred() -> dict[str, bool]:
    """The deferrals looked at so far in this process: module name -> applied (False: its layout was
    not the one expected, pyHanko's own eager import ran)."""
    return dict(_applied)
