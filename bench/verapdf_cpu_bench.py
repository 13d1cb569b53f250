#!/usr/bin/env python3
"""veraPDF's CPU per file inside one JVM, side by side (issue 13's speed; about a minute).

Two questions, each answered by thread CPU time (ThreadMXBean) in one JVM with the resident
server's JVM flags (C1 only), the variants taking turns (A B B A) after a warm-up, so a loaded
machine weighs on both alike (absolute numbers rise under load: read the ratios):
- ``map``: a digitize output whose text-layer CID-to-glyph map ends at its highest CID (as
  written now) against the same output with the former full 65 536-entry (128 KB) map;
- ``reuse``: one validator per thread reused across files against a fresh validator per file (as
  the resident server does), with each file's verdict and failed rules, which must be the same.
  veraPDF's BaseValidator.validate() resets its state and builds a new Rhino scope (so a new
  class cache) on every call: reuse is safe but saves nothing measurable;
- ``thread``: each file validated on a thread of its own (as the resident server did until the
  seventh session: a thread per connection, i.e. per ``digitize run``) against one long-lived thread
  (its pool now), as the *process's* CPU (OperatingSystemMXBean: the JIT compiler's and GC threads'
  too), verdicts compared. veraPDF keeps the Rhino context and every compiled rule script in
  ThreadLocals (JavaScriptEvaluator), so a fresh thread compiles them all again into new classes,
  which C1 then compiles: the thread's own CPU, which the other questions read, does not show it.

The PDFs (generated, one A4 page of Vietnamese text and three variants failing PDF/A-2b) and the
compiled probe are cached under ~/.cache/digitize-bench/verapdf-cpu.

    .venv/bin/python bench/verapdf_cpu_bench.py [--rounds 30] [--only thread]
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pikepdf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from digitize import encode, pdfa, textlayer, verapdf  # noqa: E402
from digitize.records import Word  # noqa: E402

CACHE = Path.home() / ".cache" / "digitize-bench" / "verapdf-cpu"
WORDS = "Cộng hòa xã hội chủ nghĩa Việt Nam Độc lập Tự do Hạnh phúc đơn đề nghị cấp giấy chứng nhận ỹ".split()

PROBE = r"""
import java.io.*; import java.lang.management.*; import java.util.*;
import org.verapdf.gf.foundry.VeraGreenfieldFoundryProvider;
import org.verapdf.pdfa.*; import org.verapdf.pdfa.flavours.PDFAFlavour; import org.verapdf.pdfa.results.*;

public class VeraCpuProbe {
  static final PDFAFlavour F = PDFAFlavour.fromString("2b");
  static String check(PDFAValidator v, String path) throws Exception {
    try (InputStream s = new FileInputStream(path); PDFAParser p = Foundries.defaultInstance().createParser(s, F)) {
      ValidationResult r = v.validate(p);
      TreeSet<String> ids = new TreeSet<>();
      for (TestAssertion a : r.getTestAssertions())
        if (a.getStatus() == TestAssertion.Status.FAILED) ids.add(a.getRuleId().getClause() + "-" + a.getRuleId().getTestNumber());
      return (r.isCompliant() ? "PASS" : "FAIL " + ids);
    }
  }
  static String fresh(String path) throws Exception {
    try (PDFAValidator v = Foundries.defaultInstance().createValidator(F, false)) { return check(v, path); }
  }
  static String onNewThread(String path) throws Exception {
    String[] out = new String[1];
    Exception[] failed = new Exception[1];
    Thread t = new Thread(() -> { try { out[0] = fresh(path); } catch (Exception e) { failed[0] = e; } });
    t.start();
    t.join();
    if (failed[0] != null) throw failed[0];
    return out[0];
  }
  public static void main(String[] a) throws Exception {
    VeraGreenfieldFoundryProvider.initialise();
    com.sun.management.OperatingSystemMXBean os =
        (com.sun.management.OperatingSystemMXBean) ManagementFactory.getOperatingSystemMXBean();
    boolean threads = a[0].equals("thread");
    ThreadMXBean tm = ManagementFactory.getThreadMXBean();
    int rounds = Integer.parseInt(a[1]);
    List<String> files = Arrays.asList(a).subList(2, a.length);
    PDFAValidator reused = Foundries.defaultInstance().createValidator(F, false);
    long[] cpu = new long[2];
    Map<String, String> verdicts = new LinkedHashMap<>();
    for (int r = -3; r < rounds; r++) for (int k = 0; k < 2; k++) {
      int m = (Math.floorMod(r, 2) == 0) ? k : 1 - k;  // A B B A
      List<String> order = new ArrayList<>(files);
      if (r % 2 != 0) Collections.reverse(order);  // both orders of valid and failing files
      for (String f : (a[0].equals("map") ? List.of(files.get(m)) : order)) {
        long t0 = threads ? os.getProcessCpuTime() : tm.getCurrentThreadCpuTime();
        String verdict = (a[0].equals("reuse") && m == 1) ? check(reused, f) : (threads && m == 0) ? onNewThread(f) : fresh(f);
        if (r >= 0) cpu[m] += (threads ? os.getProcessCpuTime() : tm.getCurrentThreadCpuTime()) - t0;
        String key = f + (a[0].equals("map") ? "" : "\t" + m);
        String seen = verdicts.putIfAbsent(key, verdict);
        if (seen != null && !seen.equals(verdict)) throw new IllegalStateException(key + ": " + seen + " then " + verdict);
      }
    }
    for (Map.Entry<String, String> e : verdicts.entrySet()) System.out.println("VERDICT\t" + e.getKey() + "\t" + e.getValue());
    int n = a[0].equals("map") ? rounds : rounds * files.size();
    System.out.printf(Locale.ROOT, "CPU\t%.2f\t%.2f\t%d%n", cpu[0] / 1e6 / n, cpu[1] / 1e6 / n, n);
  }
}
"""


def _page(path: Path) -> None:
    """One A4 page at 150 dpi, 40 lines of Vietnamese words: the text layer a scan gets."""
    height, width = 1754, 1240
    image = encode.encode_jpeg(np.full((height, width), 235, np.uint8), 60)
    words, n = [], 0
    for line in range(40):
        for i in range(8):
            text = WORDS[n % len(WORDS)]
            n += 1
            words.append((line + 1, Word(text, 90 + 130 * i, 80 + 40 * line, 200 + 130 * i, 110 + 40 * line, 95.0)))
    ops = textlayer.content_stream(textlayer.group_lines(words), height, 72 / 150)
    pdfa.write_page_pdf(path, image, width * 72 / 150, height * 72 / 150, ops)


def _files() -> dict[str, Path]:
    """Build the cached PDFs once; a new text-layer code makes a new set (its source's hash names it)."""
    tag = hashlib.sha256((ROOT / "digitize" / "textlayer.py").read_bytes()
                         + (ROOT / "digitize" / "pdfa.py").read_bytes()).hexdigest()[:12]
    folder = CACHE / f"pdfs-{tag}"
    names = ["short-map", "full-map", "no-output-intent", "no-metadata", "not-pdfa"]
    files = {name: folder / f"{name}.pdf" for name in names}
    if all(f.is_file() for f in files.values()):
        return files
    folder.mkdir(parents=True, exist_ok=True)
    when = dt.datetime(2024, 10, 15, tzinfo=dt.timezone.utc)
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "page.pdf"
        _page(page)
        pdfa.merge_pdfa([page], files["short-map"], "bench", when)
        with pikepdf.open(files["short-map"]) as pdf:
            cid_font = pdf.pages[0].Resources.Font[textlayer.FONT_RESOURCE].DescendantFonts[0]
            cid_font.CIDToGIDMap = pdf.make_stream(b"\x00\x01" * 65536)  # the map before this change
            pdf.save(files["full-map"], object_stream_mode=pikepdf.ObjectStreamMode.generate)
            del pdf.Root.OutputIntents
            pdf.save(files["no-output-intent"])
        with pikepdf.open(files["short-map"]) as pdf:
            del pdf.Root.Metadata
            pdf.save(files["no-metadata"])
        with pikepdf.open(page) as pdf:
            pdf.save(files["not-pdfa"])  # a page PDF before merging: no output intent, XMP or PDF/A id
    return files


def _probe() -> tuple[str, Path]:
    classpath = verapdf._classpath_file().read_text().strip()
    folder = CACHE / f"probe-{hashlib.sha256((PROBE + classpath).encode()).hexdigest()[:12]}"
    if not (folder / "VeraCpuProbe.class").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "VeraCpuProbe.java").write_text(PROBE)
        subprocess.run(["javac", "-cp", classpath, "-d", str(folder), str(folder / "VeraCpuProbe.java")], check=True)
    return classpath, folder


def _run(mode: str, rounds: int, files: list[Path]) -> tuple[list[str], list[str]]:
    classpath, folder = _probe()
    out = subprocess.run(["java", *verapdf.JVM_FLAGS, "-cp", f"{classpath}:{folder}", "VeraCpuProbe", mode, str(rounds),
                          *map(str, files)], capture_output=True, text=True, check=True, timeout=3600)
    lines = out.stdout.splitlines()
    return [line for line in lines if line.startswith("VERDICT")], next(l for l in lines if l.startswith("CPU")).split("\t")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--only", help="comma-separated: map, reuse, thread (default: all three)")
    args = parser.parse_args()
    files = _files()
    print(f"command: {shlex.join([Path(sys.executable).name, *sys.argv])}")
    print(f"files: {files['short-map'].parent}; 1-min load {os.getloadavg()[0]:.2f}\n")
    if not args.only or "map" in args.only:
        _, cpu = _run("map", args.rounds, [files["full-map"], files["short-map"]])
        print("| text-layer map | CPU ms per validation (one JVM, fresh validator) |")
        print("|---|---|")
        print(f"| full, 65 536 CIDs ({len(textlayer.cid_to_gid_map(0xFFFF)) // 1024} KB) | {float(cpu[1]):.1f} |")
        print(f"| to the highest CID used | {float(cpu[2]):.1f} ({float(cpu[2]) / float(cpu[1]):.3f}x) |")
    order = [files[n] for n in ("no-output-intent", "short-map", "not-pdfa", "no-metadata", "full-map")]
    same = True
    for mode, heads, cpu_of in (("reuse", ("fresh validator per file", "one validator reused"), "thread CPU"),
                                ("thread", ("a new thread per file", "one long-lived thread"), "process CPU")):
        if args.only and mode not in args.only:
            continue
        verdicts, cpu = _run(mode, args.rounds, order)
        by_file: dict[str, dict[str, str]] = {}
        for line in verdicts:
            _, path, m, verdict = line.split("\t")
            by_file.setdefault(Path(path).stem, {})[m] = verdict
        print(f"\n| file | {heads[0]} | {heads[1]} | same |")
        print("|---|---|---|---|")
        for name, verdict in by_file.items():
            print(f"| {name} | {verdict['0']} | {verdict['1']} | {'yes' if verdict['0'] == verdict['1'] else 'NO'} |")
        print(f"\n{cpu_of}, ms per file ({cpu[3]} each, both orders): {heads[0]} {float(cpu[1]):.1f}, "
              f"{heads[1]} {float(cpu[2]):.1f} ({float(cpu[2]) / float(cpu[1]):.3f}x)")
        same = same and all(v["0"] == v["1"] for v in by_file.values())
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
