#!/usr/bin/env python3
"""Side-by-side benchmark: `digitize run` vs OCRmyPDF vs bare Tesseract, on two sets of pages.

Sets: ``easy`` = the top-level samples/ (the faults the conversion was developed on) and ``hard`` =
samples/hard/ (held out: dark lids, phone photos, book spreads, typewriter, seals, tables,
bleed-through, carbon copies, fax, JBIG2/DeviceN; own texts and fonts). On demand only (never in
CI): it takes minutes (default: both sets, three engines, < 10 min on a quiet 2-core machine;
--quick: half the files of each set) and its numbers depend on the machine. Prints markdown tables
(pages/min with the ratios digitize/tesseract and digitize/ocrmypdf, CER per fault for the three
tools, digitize's time per stage per file from its JSON reports) and writes
bench/results/<UTC time>.json (gitignored). Only bare Tesseract's page images (rendered PDF pages,
split TIFF frames) and OCRmyPDF's flattened alpha images are cached, under
~/.cache/digitize-bench/convert (DIGITIZE_BENCH_CACHE), keyed by the input's SHA-256; every engine
converts afresh in every run.

Fairness, the same for every engine: two workers, i.e. at most two files (bare Tesseract:
two page images) being processed at any moment, each engine invoked with one job of its own
(`--jobs 1`), jobs queued longest first, and OMP_THREAD_LIMIT=1 so that no Tesseract process
spreads over both cores.
Bare Tesseract reads one image per page: PDFs are rendered with pdftoppm at the page's dpi
and multi-page TIFFs split into PNG pages beforehand, outside the timing.
Text for CER: `pdftotext` of each output PDF; Tesseract's own .txt for bare Tesseract.

    .venv/bin/python bench/convert_bench.py                       # both sets, digitize/ocrmypdf/tesseract
    .venv/bin/python bench/convert_bench.py --quick --set hard    # a few minutes
    .venv/bin/python bench/convert_bench.py --set hard --rounds 5 # each round's ratios and their medians
    .venv/bin/python bench/convert_bench.py --engines digitize,digitize-novalidate,digitize-batch,ocrmypdf,tesseract --rss
    .venv/bin/python bench/convert_bench.py --engines ocrmypdf,tesseract --no-rss
    .venv/bin/python bench/convert_bench.py --digitize-cmd "/path/to/digitize run --jobs {jobs} {input} {output}"

Compiled bytecode: an installed digitize has its modules compiled (pip writes .pyc on install),
but an editable checkout run with PYTHONDONTWRITEBYTECODE=1 compiles every module from source in
every `digitize` process (~0.06 CPU-s per client, ~0.2 at the resident converter's start), a cost
the other engines, installed from wheels, never pay. So the digitize engines run with
PYTHONPYCACHEPREFIX=~/.cache/digitize-bench/pycache, filled once by compileall for the source
trees of --pyc (default: this checkout's digitize, storage, pipelines) and for the folders of the
standard-library and venv modules a run imports (a prefix replaces every __pycache__ folder for
the processes that have it: without them each client compiled logging, tomllib, socket... from
source, ~0.5 CPU-s, and each converter start numpy, PIL, pikepdf..., ~1.3 CPU-s); nothing is
written into the checkout. --no-pyc measures without.

Before/after in one run: ``--extra NAME=TEMPLATE`` adds an engine ``digitize-NAME`` (own
resident servers, stage table), e.g. the main branch's code beside a worktree's:

    .venv/bin/python bench/convert_bench.py --set hard --engines digitize,tesseract \
        --extra "main=env PYTHONPATH=/work/main /work/main/.venv/bin/digitize run --jobs {jobs} --report {output}.json {input} {output}" \
        --pyc /work/main

Engines: `digitize` (one `digitize run` per file, veraPDF on), `digitize-novalidate` (the same
with --no-validate) and `digitize-batch` (one `digitize batch --jobs 2` over copies of the same
files with the samples manifest (easy set only: the hard set has no manifest), veraPDF on, storing into a temporary folder store + SQLite; its
PDF/As are found in the store by the originals' SHA-256 and scored like the others). A single
`run` pays a Python start and Tesseract model load per file (~0.5 CPU-s); batch pays them once
per worker, which is how archives and the watch folder are processed. Each digitize engine gets
a resident veraPDF server of its own (none running at its start, so the JVM start is timed; its
RSS is counted with the jobs'), stopped when the engine is done. ``--warm`` starts them first with
one untimed run of the set's shortest file (its outputs deleted): the steady state of a desk that
converts all day, where the default is the first scan after an idle period (the converter and the
validator each start once per idle period: ~1-2 CPU-s together, a tenth of a 12-page set's work).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import psutil
from PIL import Image

from digitize.accuracy import FORM_FEED, cer, page_cers

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin" if (ROOT / ".venv" / "bin").is_dir() else Path(sys.executable).parent  # worktrees
SAMPLE_INTERVAL = 0.1  # seconds between RSS samples (each costs ~3 ms of CPU the engines lose)
# this checkout's code: a worktree borrowing the main checkout's venv would otherwise run the code its
# editable install points to (the main checkout's), and compare main with main
THIS_CODE = f"env PYTHONPATH={shlex.quote(str(ROOT))}"
DEFAULT_COMMANDS = {
    "digitize": f"{THIS_CODE} {VENV_BIN / 'digitize'} run --jobs {{jobs}} --report {{output}}.json {{input}} {{output}}",
    "digitize-novalidate": f"{THIS_CODE} {VENV_BIN / 'digitize'} run --no-validate --jobs {{jobs}} {{input}} {{output}}",
    "digitize-batch": f"{THIS_CODE} DIGITIZE_DATA_DIR={{output}}.data {VENV_BIN / 'digitize'} --config /dev/null batch "
                      "{input} --jobs {jobs} --manifest {input}/manifest.csv --report {output}",
    "ocrmypdf": f"{VENV_BIN / 'ocrmypdf'} -q -l vie --rotate-pages --deskew --output-type pdfa "
                "--jobs {jobs} {input} {output}",
    "tesseract": "tesseract {input} {output} -l vie txt pdf",  # a searchable PDF too, as the others write
}
BASELINES = ("ocrmypdf", "tesseract")
SETS = {"easy": ROOT / "samples", "hard": ROOT / "samples" / "hard"}
STAGES = ("geometry", "preparation", "ocr", "encode")  # per page, from `digitize run --report`


# ---------------------------------------------------------------- records

@dataclass(frozen=True)
class SampleFile:
    """One input of the benchmark, with its ground truth, from samples/samples.json."""

    name: str
    path: Path
    fault: str
    pages: int
    dpi: int
    truth: str
    output_pages: int = 0  # pages a correct output has (a book spread: 2); 0 = as many as the input


@dataclass(frozen=True)
class Engine:
    """A command template; ``per_page`` engines get one image per page and write ``{output}.txt``.

    ``flatten_alpha``: the engine refuses images with an alpha channel (OCRmyPDF: "The input image
    has an alpha channel. Remove the alpha channel first."), so they are flattened on white first.
    ``image_dpi_flag``: the engine refuses images without a stored resolution unless told one.
    """

    name: str
    template: str
    per_page: bool = False
    flatten_alpha: bool = False
    image_dpi_flag: str = ""
    batch: bool = False  # one command over a folder of all samples, using every worker itself


@dataclass(frozen=True)
class Job:
    sample: str
    argv: tuple[str, ...]
    output: Path
    pages: int
    order: int = 0  # position in the sample's page order (jobs run longest first)


@dataclass
class JobResult:
    job: Job
    seconds: float
    returncode: int
    error: str = ""


@dataclass
class RunStats:
    """Wall time and process-tree RSS of running a batch of jobs."""

    seconds: float
    peak_rss: int
    results: list[JobResult]
    cpu_seconds: float = 0.0  # busy CPU time of the whole machine during the run
    own_cpu_seconds: float = 0.0  # CPU time of the engine's own processes (jobs, their children, its servers)


@dataclass
class SampleScore:
    name: str
    fault: str
    page_cers: list[float]
    output_bytes: int
    error: str = ""
    out_pages: int = 0  # pages of text the engine gave
    want_pages: int = 0
    stages: dict[str, float] = field(default_factory=dict)  # digitize: seconds per stage, from its report


@dataclass
class EngineReport:
    engine: str
    command: str
    pages: int
    seconds: float
    peak_rss: int
    cpu_seconds: float
    samples: list[SampleScore] = field(default_factory=list)
    own_cpu_seconds: float = 0.0

    @property
    def all_cers(self) -> list[float]:
        return [c for s in self.samples for c in s.page_cers]

    @property
    def mean_cer(self) -> float:
        return sum(self.all_cers) / len(self.all_cers)

    @property
    def max_cer(self) -> float:
        return max(self.all_cers)

    @property
    def pages_per_minute(self) -> float:
        return self.pages / self.seconds * 60

    @property
    def bytes_per_page(self) -> float:
        return sum(s.output_bytes for s in self.samples) / self.pages


@dataclass
class RssReport:
    jobs: int
    pages: int
    seconds: float
    peak_rss: int
    returncode: int


# ---------------------------------------------------------------- inputs

def load_samples(folder: Path) -> list[SampleFile]:
    index = json.loads((folder / "samples.json").read_text(encoding="utf-8"))
    return [SampleFile(r["name"], folder / r["name"], r["fault"], r["page_count"], r["pages"][0]["dpi"][0],
                       (folder / r["truth"]).read_text(encoding="utf-8"), r.get("output_pages", 0))
            for r in index["samples"]]


CACHE = Path(os.environ.get("DIGITIZE_BENCH_CACHE", Path.home() / ".cache" / "digitize-bench")) / "convert"


def cached_folder(path: Path, what: str) -> tuple[Path, bool]:
    """A folder under CACHE for what is made from PATH's bytes (rendered pages, split frames,
    flattened images): made once per input content, reused by every later run. True when ready."""
    import hashlib

    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:24]
    folder = CACHE / f"{what}-{digest}"
    return folder, (folder / "done").is_file()


def page_images(sample: SampleFile, workdir: Path) -> list[Path]:
    """One image per page for bare Tesseract: the file itself, TIFF frames, or rendered PDF pages
    (made once per input's content and dpi, kept under CACHE)."""
    if sample.path.suffix != ".pdf" and sample.pages == 1:
        return [sample.path]
    folder, ready = cached_folder(sample.path, f"pages{sample.dpi}")
    if not ready:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        if sample.path.suffix == ".pdf":
            subprocess.run(["pdftoppm", "-r", str(sample.dpi), "-png", str(sample.path), str(folder / sample.path.stem)],
                           check=True)
        else:
            _split_frames(sample.path, folder)
        (folder / "done").touch()
    return sorted(folder.glob(f"{sample.path.stem}-*.png"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))


def _split_frames(path: Path, workdir: Path) -> list[Path]:
    pages = []
    with Image.open(path) as image:
        for index in range(image.n_frames):
            image.seek(index)
            page = workdir / f"{path.stem}-{index + 1}.png"
            image.save(page, dpi=image.info.get("dpi", (300, 300)))
            pages.append(page)
    return pages


def flattened(path: Path, workdir: Path) -> Path:
    """The image on white paper without its alpha channel (same pixels, same dpi), or itself."""
    if path.suffix == ".pdf":
        return path
    with Image.open(path) as image:
        if "A" not in image.getbands():
            return path
        folder, ready = cached_folder(path, "flat")
        out = folder / f"{path.stem}-flat.png"
        if not ready:
            folder.mkdir(parents=True, exist_ok=True)
            paper = Image.new("RGBA", image.size, "white")
            paper.alpha_composite(image.convert("RGBA"))
            paper.convert("L" if image.mode == "LA" else "RGB").save(out, dpi=image.info.get("dpi", (300, 300)))
            (folder / "done").touch()
        return out


def engine_inputs(engine: Engine, sample: SampleFile, workdir: Path) -> list[Path]:
    """What the engine is given for a sample; any conversion happens here, outside the timing."""
    if engine.per_page:
        return page_images(sample, workdir)
    return [flattened(sample.path, workdir) if engine.flatten_alpha else sample.path]


def make_jobs(engine: Engine, samples: list[SampleFile], workdir: Path) -> list[Job]:
    """Jobs queued longest first (most pages, then largest input), as a batch scheduler would:
    in name order a 5-page file may start last and leave the other worker idle meanwhile."""
    jobs = []
    for sample in samples:
        inputs = engine_inputs(engine, sample, workdir)
        for index, source in enumerate(inputs):
            suffix = f"-{index + 1}" if engine.per_page else ".pdf"
            output = workdir / f"{engine.name}-{sample.path.stem}{suffix}"
            argv = command(engine.template, source, output, jobs=1) + dpi_args(engine, source, sample.dpi)
            jobs.append(Job(sample.name, argv, output, 1 if engine.per_page else sample.pages, index))
    return sorted(jobs, key=lambda j: (-j.pages, -_input_bytes(j)))


def _input_bytes(job: Job) -> int:
    return max((Path(a).stat().st_size for a in job.argv if Path(a).is_file()), default=0)


def dpi_args(engine: Engine, source: Path, dpi: int) -> tuple[str, ...]:
    """``--image-dpi N`` for an image that stores no resolution (none of the samples, today)."""
    if not engine.image_dpi_flag or source.suffix == ".pdf":
        return ()
    with Image.open(source) as image:
        return () if "dpi" in image.info else (engine.image_dpi_flag, str(dpi))


def command(template: str, source: Path, output: Path, jobs: int) -> tuple[str, ...]:
    return tuple(shlex.split(template.format(input=shlex.quote(str(source)), output=shlex.quote(str(output)),
                                             jobs=jobs)))


# ---------------------------------------------------------------- running and measuring

class TreeRss:
    """Samples the summed RSS of every running job's process tree, plus digitize's resident
    servers whose pids are in lock files of ``server_dir`` (detached, so in no job's tree);
    keeps the peak."""

    def __init__(self, server_dir: Path | None = None) -> None:
        self.peak = 0
        self._server_dir = server_dir
        self._roots: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> "TreeRss":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def watch(self, pid: int) -> None:
        with self._lock:
            self._roots.add(pid)

    def forget(self, pid: int) -> None:
        with self._lock:
            self._roots.discard(pid)

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL):
            with self._lock:
                roots = list(self._roots)
            roots += server_pids(self._server_dir)
            self.peak = max(self.peak, trees_rss(roots))


def server_pids(folder: Path | None) -> list[int]:
    """Pids of digitize's resident servers in FOLDER (veraPDF validator, converter): each
    writes its pid into its lock file. Their trees hold the work a `digitize run` hands over."""
    if folder is None or not folder.is_dir():
        return []
    texts = []
    for lock in folder.glob("*.lock"):
        try:
            texts.append(lock.read_text().strip())
        except OSError:
            pass  # removed as the server exited
    return [int(t) for t in texts if t.isdigit()]


def trees_rss(roots: list[int]) -> int:
    """RSS of processes and all their descendants (OCRmyPDF and digitize fork children), from
    one scan of the process table per sample, however many roots (the sampling costs CPU too)."""
    if not roots:
        return 0
    children: dict[int, list[int]] = {}
    for proc in psutil.process_iter(["ppid"]):
        children.setdefault(proc.info["ppid"], []).append(proc.pid)
    seen, todo, total = set(), list(roots), 0
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        todo.extend(children.get(pid, ()))
        try:
            total += psutil.Process(pid).memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def run_job(job: Job, rss: TreeRss, env: dict[str, str]) -> JobResult:
    start = time.perf_counter()
    proc = subprocess.Popen(job.argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    rss.watch(proc.pid)
    _, stderr = proc.communicate()
    rss.forget(proc.pid)
    error = stderr.decode(errors="replace").strip().splitlines()[-1:] if proc.returncode else []
    return JobResult(job, time.perf_counter() - start, proc.returncode, error[0] if error else "")


PYCACHE = CACHE.parent / "pycache"
PYC_PACKAGES = ("digitize", "storage", "pipelines")
_pyc_env: dict[str, str] = {}  # set by compile_sources: the digitize engines' bytecode cache


# What a `digitize run` process (client, resident converter, its children) imports: printed as
# the folders of those modules, for compileall (-l: each folder, not below it).
_LOADED = ("import os, sys\n"
           "from digitize import launcher, zygote, config, secrets, resident, verapdf  # the client\n"
           "from digitize import cli, convert, ocr, pdfa, poppler, textlayer, zygote_server  # the converter\n"
           "zygote_server._import_lazy_modules(); textlayer.glyphless_truetype(); pdfa.srgb_icc()  # its warm-up\n"
           "import pikepdf.jbig2  # a JBIG2 input's decoder (packaging)\n"
           "files = {getattr(m, '__file__', None) for m in list(sys.modules.values())}\n"
           "print('\\n'.join(sorted({os.path.dirname(f) for f in files if f and f.endswith('.py')})))\n")


def compile_sources(roots: list[Path]) -> None:
    """Bytecode for the digitize engines' modules, in PYCACHE (not in the checkouts), as an
    installed package has it; the engines then read it through PYTHONPYCACHEPREFIX.

    That prefix holds every module's bytecode for those processes, the standard library's and
    the venv's too (their own __pycache__ folders are no longer read): so the folders of every
    module a run imports are compiled into it as well, else each `digitize` process compiles
    them from source (with PYTHONDONTWRITEBYTECODE set: ~0.5 CPU-s a client, ~1.3 at the
    resident converter's start, which the other engines, reading their installed .pyc, never pay).
    Up-to-date files are skipped: seconds once the cache is filled."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    folders = [str(r / p) for r in roots for p in PYC_PACKAGES if (r / p).is_dir()]
    argv = [sys.executable, "-m", "compileall", "-q", *folders]
    print("bytecode: PYTHONPYCACHEPREFIX=" + shlex.quote(str(PYCACHE)) + " " + shlex.join(argv[1:]), file=sys.stderr)
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
    loaded = set()
    for root in roots:
        found = subprocess.run([sys.executable, "-c", _LOADED], env={**env, "PYTHONPATH": str(root)}, cwd=root,
                               check=True, capture_output=True, text=True).stdout.split()
        loaded.update(f for f in found if not any(f == p or f.startswith(p + os.sep) for p in folders))
    print(f"bytecode: and the {len(loaded)} folders of the other modules a run imports (compileall -l)", file=sys.stderr)
    # a folder may hold a file that does not compile (a template, a test of bad syntax): not ours to judge
    subprocess.run([sys.executable, "-m", "compileall", "-q", "-l", *sorted(loaded)], env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _pyc_env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)


def run_jobs(jobs: list[Job], workers: int, server_dir: Path | None = None, warm: bool = False) -> RunStats:
    """Run JOBS on WORKERS threads. With ``server_dir``, digitize's resident servers live
    there: none runs at the start (their start-up is timed) unless ``warm``, and they are stopped
    at the end."""
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    if server_dir is not None:
        env["DIGITIZE_VALIDATOR_DIR"] = str(server_dir)
        env.update(_pyc_env)
        if warm and jobs:
            warm_up(min(jobs, key=lambda job: job.pages), env)
    start, busy, own = time.perf_counter(), busy_cpu_seconds(), children_cpu_seconds()
    try:
        with TreeRss(server_dir) as rss, ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(lambda job: run_job(job, rss, env), jobs))
        seconds, busy = time.perf_counter() - start, busy_cpu_seconds() - busy
        own = children_cpu_seconds() - own + sum(map(process_cpu_seconds, server_pids(server_dir)))
    finally:
        if server_dir is not None:
            subprocess.run([str(VENV_BIN / "digitize"), "servers", "stop"], env=env, capture_output=True)
    return RunStats(seconds, rss.peak, results, busy, own)


def warm_up(job: Job, env: dict[str, str]) -> None:
    """JOB once, untimed, so that its resident servers serve warm; its outputs go (the timed run
    makes its own, and a failed timed run must not be scored on these)."""
    subprocess.run(job.argv, env=env, stdin=subprocess.DEVNULL, capture_output=True)
    for path in (job.output, Path(f"{job.output}.json")):
        path.unlink(missing_ok=True)


def children_cpu_seconds() -> float:
    """CPU time of this process's waited-for children and, through them, of their waited-for
    descendants (page workers, Tesseract, pdftoppm): each job's own work, whatever else runs."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def process_cpu_seconds(pid: int) -> float:
    """CPU time of a resident server started during the run (the converter with the runs it forked
    and reaped, the validator's JVM): its own and its reaped children's, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")  # utime stime cutime cstime


def busy_cpu_seconds() -> float:
    """Non-idle CPU time of the whole machine so far: with resident servers and forked page
    workers, per-process accounting misses work; the machine's counters do not (the RSS
    sampler and an otherwise quiet machine add a little)."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0) - getattr(times, "guest", 0.0) \
        - getattr(times, "guest_nice", 0.0)


# ---------------------------------------------------------------- scoring

def output_text(engine: Engine, results: list[JobResult]) -> str:
    """Recognised text of one sample, pages separated by form feeds."""
    if engine.per_page:
        return "\f".join(_read(Path(f"{r.job.output}.txt")) for r in results)
    (result,) = results
    if not result.job.output.is_file():
        return ""
    done = subprocess.run(["pdftotext", "-enc", "UTF-8", str(result.job.output), "-"], capture_output=True)
    return done.stdout.decode("utf-8", errors="replace")


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8") if path.is_file() else ""


def score_sample(engine: Engine, sample: SampleFile, results: list[JobResult]) -> SampleScore:
    """CER per truth page; when the engine gave another number of pages (a spread kept whole),
    the whole text against the whole truth, for every page: reading is scored, page count shown apart."""
    errors = [r.error or f"exit {r.returncode}" for r in results if r.returncode]
    size = 0 if engine.per_page else sum(r.job.output.stat().st_size for r in results if r.job.output.is_file())
    text = output_text(engine, results)
    want = sample.output_pages or sample.pages
    got = len(text.rstrip(FORM_FEED + "\n ").split(FORM_FEED)) if text.strip() else 0
    cers = page_cers(sample.truth, text)
    if got and got != want:
        cers = [cer(sample.truth, text)] * len(cers)
    stages = read_stages(results) if engine.name.startswith("digitize") and not engine.batch else {}
    return SampleScore(sample.name, sample.fault, cers, size, "; ".join(errors), got, want, stages)


def read_stages(results: list[JobResult]) -> dict[str, float]:
    """Seconds per stage of one `digitize run`, summed over its pages, from its --report JSON;
    ``start`` is the rest of the process's wall time (Python start, model load, report writing)."""
    (result,) = results
    path = Path(f"{result.job.output}.json")
    if not path.is_file():
        return {}
    doc = json.loads(path.read_text(encoding="utf-8"))
    stages = {k: sum(p["timings"].get(k, 0.0) for p in doc["pages"]) for k in STAGES}
    stages["page pdf"] = sum(p["timings"].get("total", 0.0) for p in doc["pages"]) - sum(stages.values())
    stages["merge"] = doc["timings"].get("merge", 0.0)
    stages["veraPDF"] = doc["timings"].get("validate", 0.0)
    stages["start"] = result.seconds - doc["timings"].get("total", 0.0)
    stages["wall"] = result.seconds
    return stages


def batch_run(engine: Engine, samples: list[SampleFile], workers: int, workdir: Path) -> RunStats:
    """One `digitize batch` over copies of the samples; results point at the PDF/As it stored."""
    source = workdir / "in"
    source.mkdir()
    for sample in samples:
        shutil.copy2(sample.path, source / sample.path.name)
    copy_manifest(samples[0].path.parent / "manifest.csv", source / "manifest.csv", {s.name for s in samples})
    report = workdir / "batch-report.json"
    job = Job("*", command(engine.template, source, report, jobs=workers), report, sum(s.pages for s in samples))
    stats = run_jobs([job], 1, workdir / "v")
    found = stored_pdfas(Path(f"{report}.data"), samples)
    results = [JobResult(Job(s.name, job.argv, found.get(s.name, workdir / "missing.pdf"), s.pages),
                         stats.seconds, stats.results[0].returncode, stats.results[0].error) for s in samples]
    return RunStats(stats.seconds, stats.peak_rss, results, stats.cpu_seconds, stats.own_cpu_seconds)


def copy_manifest(manifest: Path, target: Path, names: set[str]) -> None:
    """The samples manifest, only the rows of the files being benchmarked (--only)."""
    with open(manifest, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f))
    with open(target, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(r for r in rows if r["path"] in names)


def stored_pdfas(data_dir: Path, samples: list[SampleFile]) -> dict[str, Path]:
    """Sample name -> its PDF/A in the batch's folder store, looked up by the original's SHA-256."""
    from digitize.config import load_settings
    from digitize.fsutil import sha256_file
    from storage.archive import Archive

    archive = Archive.open(load_settings("/dev/null", env={"DIGITIZE_DATA_DIR": str(data_dir)}))
    try:
        docs = {s.name: archive.find(sha256_file(s.path)) for s in samples}
    finally:
        archive.close()
    return {name: data_dir / "objects" / doc.pdfa_key for name, doc in docs.items() if doc is not None}


def benchmark_engine(engine: Engine, samples: list[SampleFile], workers: int, workdir: Path,
                     warm: bool = False) -> EngineReport:
    if engine.batch:
        stats = batch_run(engine, samples, workers, workdir)
    else:
        own_servers = workdir / "v" if engine.name.startswith("digitize") else None
        stats = run_jobs(make_jobs(engine, samples, workdir), workers, own_servers, warm)
    report = EngineReport(engine.name, engine.template, sum(s.pages for s in samples), stats.seconds, stats.peak_rss,
                          stats.cpu_seconds, own_cpu_seconds=stats.own_cpu_seconds)
    for sample in samples:
        mine = sorted((r for r in stats.results if r.job.sample == sample.name), key=lambda r: r.job.order)
        report.samples.append(score_sample(engine, sample, mine))
    return report


def rss_run(template: str, pages: int, jobs: int, workdir: Path) -> RssReport:
    """Peak RSS of `digitize run` on an N-page image-only PDF from samples/generate.py."""
    source, output = workdir / f"rss-{pages}.pdf", workdir / f"rss-{pages}-{jobs}-out.pdf"
    if not source.exists():
        subprocess.run([sys.executable, str(ROOT / "samples" / "generate.py"), "--pages", str(pages),
                        "--out", str(source)], check=True)
    stats = run_jobs([Job(source.name, command(template, source, output, jobs), output, pages)], 1,
                     workdir / f"v{pages}-{jobs}")
    return RssReport(jobs, pages, stats.seconds, stats.peak_rss, stats.results[0].returncode)


# ---------------------------------------------------------------- tables

def _mb(n: float) -> str:
    return f"{n / 2**20:.0f}"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}×" if b else "—"


def summary_table(sets: dict[str, dict[str, EngineReport]]) -> str:
    """One row per (set, engine): pages/min, CER, and speed and CER relative to each baseline."""
    present = [b for b in BASELINES if any(b in reports for reports in sets.values())]
    rows = ["| set | engine | pages | pages/min | busy CPU s | own CPU s/page | own CPU/page vs tesseract | mean CER | "
            "max page CER | bytes/page | peak RSS MB | "
            + " | ".join(f"speed vs {b} | CER vs {b}" for b in present) + " | failed files |",
            "|---" * (12 + 2 * len(present)) + "|"]
    for set_name, reports in sets.items():
        for name, r in reports.items():
            ratios = [f"{_ratio(r.pages_per_minute, reports[b].pages_per_minute)} | "
                      f"{_ratio(r.mean_cer, reports[b].mean_cer)}" if b in reports else "— | —" for b in present]
            size = "—" if name == "tesseract" else f"{r.bytes_per_page / 1000:.0f} KB"
            failed = sum(1 for s in r.samples if s.error)
            speed = f"**{r.pages_per_minute:.1f}**" if name == "digitize" else f"{r.pages_per_minute:.1f}"
            tess = reports.get("tesseract")
            cpu_ratio = _ratio(r.own_cpu_seconds / r.pages, tess.own_cpu_seconds / tess.pages) if tess else "—"
            rows.append(f"| {set_name} | {name} | {r.pages} | {speed} | {r.cpu_seconds:.1f} | "
                        f"{r.own_cpu_seconds / r.pages:.2f} | {cpu_ratio} | {r.mean_cer:.4f} | "
                        f"{r.max_cer:.4f} | {size} | {_mb(r.peak_rss)} | " + " | ".join(ratios) + f" | {failed} |")
    return "\n".join(rows)


def fault_table(reports: dict[str, EngineReport]) -> str:
    """Mean (and worst page) CER per sample file, i.e. per fault; pages given / wanted where they differ."""
    names = list(reports)
    rows = ["| sample | fault | " + " | ".join(f"{n} CER" for n in names) + " |",
            "|---|---|" + "---|" * len(names)]
    for index, sample in enumerate(next(iter(reports.values())).samples):
        cells = [_cer_cell(reports[n].samples[index]) for n in names]
        rows.append(f"| {sample.name} | {sample.fault} | " + " | ".join(cells) + " |")
    means = [f"**{reports[n].mean_cer:.4f}**" for n in names]
    rows.append("| **mean** | | " + " | ".join(means) + " |")
    return "\n".join(rows)


def _cer_cell(score: SampleScore) -> str:
    mean = sum(score.page_cers) / len(score.page_cers)
    cell = f"{mean:.4f} ({max(score.page_cers):.4f})" if len(score.page_cers) > 1 else f"{mean:.4f}"
    if score.out_pages and score.out_pages != score.want_pages:
        cell += f" [{score.out_pages}/{score.want_pages} pages]"
    return cell + (" ✗" if score.error else "")


def stage_table(report: EngineReport) -> str:
    """digitize's seconds per stage per file (pages summed), from its --report JSON; wall is the
    process's, ``start`` the rest of it (Python start, Tesseract model load, report)."""
    cols = (*STAGES, "page pdf", "merge", "veraPDF", "start", "wall")
    rows = ["| file | pages | " + " | ".join(cols) + " | encode % |", "|---|---|" + "---|" * (len(cols) + 1)]
    totals = dict.fromkeys(cols, 0.0)
    for score in report.samples:
        st = score.stages
        if not st:
            rows.append(f"| {score.name} | {score.out_pages} | " + " | ".join("—" for _ in cols) + " | — |")
            continue
        for k in cols:
            totals[k] += st.get(k, 0.0)
        rows.append(f"| {score.name} | {score.out_pages} | " + " | ".join(f"{st.get(k, 0.0):.2f}" for k in cols)
                    + f" | {_share(st)} |")
    rows.append("| **sum** | | " + " | ".join(f"**{totals[k]:.1f}**" for k in cols) + f" | **{_share(totals)}** |")
    return "\n".join(rows)


def _share(stages: dict[str, float]) -> str:
    """Encode's share of the page stages (geometry .. page pdf), the issue's "<= 15 %" measure."""
    work = sum(stages.get(k, 0.0) for k in (*STAGES, "page pdf"))
    return f"{100 * stages.get('encode', 0.0) / work:.0f} %" if work else "—"


def rss_table(runs: list[RssReport]) -> str:
    """Peak RSS per page count, each relative to the 1-page run with the same --jobs (a 1-page
    file never starts a second worker, so only equal --jobs compare growth with page count)."""
    rows = ["| --jobs | pages | wall s | peak RSS MB | vs 1 page, same --jobs | exit |", "|---|---|---|---|---|---|"]
    for r in runs:
        base = next(b for b in runs if b.jobs == r.jobs)
        rows.append(f"| {r.jobs} | {r.pages} | {r.seconds:.1f} | {_mb(r.peak_rss)} | "
                    f"**{_ratio(r.peak_rss, base.peak_rss)}** | {r.returncode} |")
    return "\n".join(rows)


def errors_section(sets: dict[str, dict[str, EngineReport]]) -> str:
    lines = [f"- {set_name} {r.engine} {s.name}: {s.error}" for set_name, reports in sets.items()
             for r in reports.values() for s in r.samples if s.error]
    return "Failures (✗, their pages count as CER 1.0 when no text came out):\n" + "\n".join(lines) if lines else ""


# ---------------------------------------------------------------- main

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", default="easy,hard", help="comma-separated: easy (samples/), hard (samples/hard/)")
    parser.add_argument("--samples", type=Path, help="another folder with a samples.json (instead of --set)")
    parser.add_argument("--engines", default="digitize,ocrmypdf,tesseract",
                        help="of digitize, digitize-novalidate, digitize-batch, ocrmypdf, tesseract")
    parser.add_argument("--workers", type=int, default=2, help="files (pages for tesseract) at a time")
    for name, template in DEFAULT_COMMANDS.items():
        parser.add_argument(f"--{name}-cmd", dest=f"{name.replace('-', '_')}_cmd", default=template,
                            help="command template with {input}, {output}, {jobs}")
    parser.add_argument("--extra", action="append", default=[], metavar="NAME=TEMPLATE",
                        help="another digitize engine, digitize-NAME, e.g. another checkout's `digitize run`")
    parser.add_argument("--pyc", action="append", default=[], type=Path, metavar="CHECKOUT",
                        help="also compile this checkout's modules (an --extra engine's); this one's always")
    parser.add_argument("--no-pyc", action="store_true", help="digitize compiles its modules in every process")
    parser.add_argument("--only", help="comma-separated sample names (default: all)")
    parser.add_argument("--quick", action="store_true", help="every other file of each set (about half the time)")
    parser.add_argument("--rss", action="store_true", help="also the 1- vs 100-page RSS runs of `digitize run`")
    parser.add_argument("--no-rss", action="store_true", help=argparse.SUPPRESS)  # the default now
    parser.add_argument("--rss-pages", default="1,10,100",
                        help="page counts for the RSS runs; 10 separates a second worker starting from growth")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every set and engine N times, the engines' order reversed in every other "
                             "round; the tables are the first round's, plus each round's speed ratios and "
                             "their medians (a 12-page set moves by 0.1x from run to run)")
    parser.add_argument("--warm", action="store_true",
                        help="start digitize's resident servers with one untimed run before timing each set "
                             "(a desk's steady state; by default their start is timed)")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    return parser.parse_args(argv)


def engine_for(name: str, template: str) -> Engine:
    if name == "tesseract":
        return Engine(name, template, per_page=True)
    if name == "ocrmypdf":
        return Engine(name, template, flatten_alpha=True, image_dpi_flag="--image-dpi")
    return Engine(name, template, batch=name == "digitize-batch")


def chosen_sets(args: argparse.Namespace) -> dict[str, list[SampleFile]]:
    folders = {"custom": args.samples} if args.samples else {n: SETS[n] for n in args.set.split(",")}
    sets = {}
    for name, folder in folders.items():
        samples = load_samples(folder)
        if args.quick:
            samples = samples[::2]
        if args.only:
            samples = [s for s in samples if s.name in args.only.split(",")]
        if samples:
            sets[name] = samples
    if not sets:
        raise SystemExit(f"no sample matched --only {args.only!r} (names with their extension, e.g. h05_typewriter.jpg)")
    return sets


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sets = chosen_sets(args)
    engines = [engine_for(n, getattr(args, f"{n.replace('-', '_')}_cmd")) for n in args.engines.split(",")]
    for extra in args.extra:
        name, _, template = extra.partition("=")
        engines.insert(1, Engine(f"digitize-{name}", template))
    if not args.no_pyc:
        compile_sources([ROOT, *args.pyc])
    load_before = os.getloadavg()[0]  # another busy process would skew pages/min: show it
    rounds: list[dict[str, dict[str, EngineReport]]] = []
    rss: list[RssReport] = []
    with tempfile.TemporaryDirectory(prefix="digitize-bench-") as tmp:
        for number in range(max(1, args.rounds)):
            order = engines if number % 2 == 0 else engines[::-1]  # neither side always runs first
            rounds.append(run_round(sets, order, args.workers, Path(tmp) / f"round{number}", args.warm))
        if args.rss:
            rss = [rss_run(args.digitize_cmd, int(n), jobs, Path(tmp))
                   for jobs in sorted({1, args.workers}) for n in args.rss_pages.split(",")]
    reports = {set_name: {e.name: r[e.name] for e in engines if e.name in r} for set_name, r in rounds[0].items()}
    print(render_markdown(args, reports, rss, load_before, os.getloadavg()[0]))
    if len(rounds) > 1:
        print("\n" + rounds_table(rounds))
    save_results(args.results, args, reports, rss, rounds[1:])
    return 0


def run_round(sets: dict[str, list[SampleFile]], engines: list[Engine], workers: int,
              tmp: Path, warm: bool = False) -> dict[str, dict[str, EngineReport]]:
    """Every engine over every set once, in ENGINES' order."""
    reports: dict[str, dict[str, EngineReport]] = {}
    for set_name, samples in sets.items():
        reports[set_name] = {}
        for engine in engines:
            if engine.batch and not (samples[0].path.parent / "manifest.csv").is_file():
                print(f"skipping {engine.name} on {set_name}: no manifest.csv", file=sys.stderr)
                continue
            workdir = tmp / set_name / engine.name
            workdir.mkdir(parents=True)
            print(f"running {engine.name} on the {set_name} set, {sum(s.pages for s in samples)} pages ...",
                  file=sys.stderr)
            reports[set_name][engine.name] = benchmark_engine(engine, samples, workers, workdir, warm)
    return reports


def rounds_table(rounds: list[dict[str, dict[str, EngineReport]]]) -> str:
    """Each round's pages/min of every digitize engine and its ratios to the baselines, then the
    medians of those ratios: the ratio of one round's pair, not of medians taken apart."""
    rows = ["Rounds (pages/min; speed ratios within each round; median of the rounds last):", "",
            "| set | engine | round | pages/min | " + " | ".join(f"vs {b}" for b in BASELINES) + " |",
            "|---|---|---|---|" + "---|" * len(BASELINES)]
    first = rounds[0]
    for set_name, reports in first.items():
        for name in (n for n in reports if n.startswith("digitize")):
            ratios: dict[str, list[float]] = {b: [] for b in BASELINES}
            speeds = []
            for number, round_reports in enumerate(rounds, 1):
                r = round_reports[set_name]
                speeds.append(r[name].pages_per_minute)
                cells = []
                for b in BASELINES:
                    if b in r and r[b].pages_per_minute:
                        ratios[b].append(r[name].pages_per_minute / r[b].pages_per_minute)
                        cells.append(f"{ratios[b][-1]:.2f}×")
                    else:
                        cells.append("—")
                rows.append(f"| {set_name} | {name} | {number} | {speeds[-1]:.1f} | " + " | ".join(cells) + " |")
            medians = [f"**{statistics.median(v):.2f}×**" if v else "—" for v in ratios.values()]
            rows.append(f"| {set_name} | {name} | median | {statistics.median(speeds):.1f} | "
                        + " | ".join(medians) + " |")
    return "\n".join(rows)


def _tesseract_in_use() -> str:
    """setup.sh's build (scripts/build-tesseract.sh) or Debian's library, as this checkout loads it."""
    from digitize import tesslib

    return tesslib.library_name() or "the `tesseract` command (no library)"


def render_markdown(args: argparse.Namespace, sets: dict[str, dict[str, EngineReport]], rss: list[RssReport],
                    load_before: float, load_after: float) -> str:
    files = ", ".join(f"{n} {len(next(iter(r.values())).samples)} files" for n, r in sets.items() if r)
    parts = [f"Benchmark: {files}; {args.workers} workers, {os.cpu_count()} CPUs, OMP_THREAD_LIMIT=1; 1-min load "
             f"average {load_before:.2f} before, {load_after:.2f} after the run",
             "command: " + shlex.join([Path(sys.executable).name, *sys.argv]),
             f"digitize's Tesseract (engine `digitize`): {_tesseract_in_use()}", "", summary_table(sets)]
    for set_name, reports in sets.items():
        if reports:
            parts += ["", f"CER per fault, {set_name} set (mean (worst page); [pages given/wanted]):", "",
                      fault_table(reports)]
        for name, report in reports.items():
            if name == "digitize" or (name.startswith("digitize-") and report.samples and report.samples[0].stages):
                parts += ["", f"`{name}` seconds per stage, {set_name} set:", "", stage_table(report)]
    if rss:
        parts += ["", "`digitize run` peak RSS (process tree, incl. Tesseract and the veraPDF JVM) by page count:",
                  "", rss_table(rss)]
    parts += ["", errors_section(sets)]
    return "\n".join(parts)


def save_results(folder: Path, args: argparse.Namespace, sets: dict[str, dict[str, EngineReport]],
                 rss: list[RssReport], more_rounds: list[dict[str, dict[str, EngineReport]]] = ()) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    data = {"args": {k: str(v) for k, v in vars(args).items()},
            "sets": {s: {n: {**dataclasses.asdict(r), "pages_per_minute": r.pages_per_minute,
                             "mean_cer": r.mean_cer, "max_cer": r.max_cer, "bytes_per_page": r.bytes_per_page}
                         for n, r in reports.items()} for s, reports in sets.items()},
            "rss": [dataclasses.asdict(r) for r in rss],
            "more_rounds": [{s: {n: {**dataclasses.asdict(r), "pages_per_minute": r.pages_per_minute}
                                 for n, r in reports.items()} for s, reports in more.items()} for more in more_rounds]}
    path = folder / f"{stamp}.json"
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1, default=str), encoding="utf-8")
    print(f"results: {path}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
