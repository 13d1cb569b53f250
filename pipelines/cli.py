"""Pipeline commands mounted on the main CLI: ``watch``, ``batch``, ``separator``."""

from __future__ import annotations

from pathlib import Path

import click

from digitize.errors import StorageError


@click.command("watch", epilog="""\b
Examples:
  digitize watch /srv/scans/inbox
  digitize watch /mnt/smb/scanner --poll 10 --log-json
  digitize watch inbox --once        # process what is there, then exit
""")
@click.argument("inbox", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option("--poll", type=click.FloatRange(0.1), default=None,
              help="Poll every N seconds instead of inotify (SMB/NFS shares). Default: watch.poll.")
@click.option("--once", is_flag=True, help="Process the files already there, then exit.")
@click.option("--log-json", is_flag=True, help="Log JSON lines (one event per line) instead of text.")
@click.pass_obj
def watch_cmd(settings, inbox: Path | None, poll: float | None, once: bool, log_json: bool) -> None:
    """Store every scan dropped into INBOX (default watch.inbox); move it to done/ or failed/."""
    from digitize import verapdf
    from digitize.signing import preflight

    from .logs import configure
    from .watch import Watcher, WatchOptions

    verapdf.require(settings.convert.validate)  # every file would fail: say it once, exit 3
    configure(log_json)
    preflight(settings, interactive=True)  # a wrong PIN or an expired certificate stops here, before any file
    summary = Watcher(WatchOptions.from_settings(settings.watch, inbox, poll, once), settings).run()
    if once:
        click.echo("watch: " + (", ".join(f"{n} {s}" for s, n in sorted(summary.counts.items())) or "nothing to do"),
                   err=True)
    if summary.deferred:
        first = summary.deferred[0]
        error = StorageError if first.retryable else RuntimeError  # RuntimeError: the CLI's "internal error" line
        raise error(f"{len(summary.deferred)} file(s) left in the inbox to retry; {Path(first.path).name}: {first.reason}")


@click.command("batch", epilog="""\b
Examples:
  digitize batch /archive/1998 --manifest 1998.csv --report 1998-report.csv
  digitize batch samples/ --manifest samples/manifest.csv --dry-run
  digitize batch scans/ --jobs 4 --report out.json
""")
@click.argument("src", type=click.Path(file_okay=False, path_type=Path))
@click.option("--manifest", type=click.Path(dir_okay=False, path_type=Path),
              help="CSV: path, case_id, procedure_code, title, organ_id, file_catalog, file_notation, maintenance, rights.")
@click.option("-j", "--jobs", type=click.IntRange(1, 256), default=None,
              help="Files converted in parallel (default batch.jobs = all cores).")
@click.option("--dry-run", is_flag=True, help="Validate the manifest and list the work; convert nothing.")
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path),
              help="Write done/skipped/unmatched/failed per file: .csv or .json (default batch.report).")
@click.option("--log-json", is_flag=True, help="Log JSON lines instead of text.")
@click.pass_obj
def batch_cmd(settings, src: Path, manifest: Path | None, jobs: int | None, dry_run: bool, report: Path | None,
              log_json: bool) -> None:
    """Convert, store and index every scan under SRC; re-running resumes (stored files are skipped)."""
    from digitize.signing import preflight

    from .batch import run_batch
    from .logs import configure

    if not dry_run:
        from digitize import verapdf

        verapdf.require(settings.convert.validate)
    configure(log_json, events=False)
    if not dry_run:
        preflight(settings, interactive=True)  # before the workers fork: they inherit the PIN, not a session
    run_batch(src, settings, manifest, jobs, dry_run, report)


@click.command("separator", epilog="""\b
Examples:
  digitize separator 000.00.31.H56-241015-0027 -o sep.pdf
  digitize separator -o plain-separator.pdf     # splits without naming a case
""")
@click.argument("case_id", required=False)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="PDF file to write (one A4 page).")
def separator_cmd(case_id: str | None, output: Path) -> None:
    """Print a separator sheet: put it in front of a dossier when scanning a stack in one go."""
    from digitize.identifiers import normalize_case_id

    from .separators import write_sheet

    write_sheet(normalize_case_id(case_id) if case_id else None, output)
    click.echo(str(output))


COMMANDS: list = [watch_cmd, batch_cmd, separator_cmd]
