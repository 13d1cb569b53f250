"""Pipeline commands mounted on the main CLI: ``watch``, ``batch``, ``separator``."""

from __future__ import annotations

from pathlib import Path

import click

from digitize.errors import BadArgsError, StorageError
from digitize.terminal import printable


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

    from .queued import enabled

    if not enabled(settings):  # queued: the workers validate and sign, this machine only stages
        verapdf.require(settings.convert.validate)  # every file would fail: say it once, exit 3
    configure(log_json)
    if not enabled(settings):
        preflight(settings, interactive=True)  # a wrong PIN or an expired certificate stops here, before any file
    summary = Watcher(WatchOptions.from_settings(settings.watch, inbox, poll, once), settings, _processor(settings)).run()
    if once:
        click.echo("watch: " + (", ".join(f"{n} {s}" for s, n in sorted(summary.counts.items())) or "nothing to do"),
                   err=True)
    if summary.deferred:
        first = summary.deferred[0]
        error = StorageError if first.retryable else RuntimeError  # RuntimeError: the CLI's "internal error" line
        raise error(f"{len(summary.deferred)} file(s) left in the inbox to retry; {Path(first.path).name}: {first.reason}")


def _processor(settings):
    """In-process conversion, or with [queue] url the queue's submitter (stage the original, enqueue it)."""
    from .jobs import process_file
    from .queued import Submitter, enabled

    return Submitter(settings).submit if enabled(settings) else process_file


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
@click.option("--queue/--local", "queue", default=None,
              help="Enqueue for `digitize worker`s (default when [queue] url is set) or convert here.")
@click.option("--wait", is_flag=True, help="Queue mode: wait for every job and report as a local batch does.")
@click.pass_obj
def batch_cmd(settings, src: Path, manifest: Path | None, jobs: int | None, dry_run: bool, report: Path | None,
              log_json: bool, queue: bool | None, wait: bool) -> None:
    """Convert, store and index every scan under SRC; re-running resumes (stored files are skipped)."""
    from digitize.signing import settle_pin, start_key_process

    from .logs import configure

    from .queued import enabled

    if queue and not enabled(settings):
        raise BadArgsError("--queue needs [queue] url (DIGITIZE_QUEUE_URL)")
    queue = enabled(settings) if queue is None else queue
    if not dry_run and not queue:  # queued: the workers convert, validate and sign
        from digitize import verapdf

        verapdf.require(settings.convert.validate)
    configure(log_json, events=False)
    if not dry_run and not queue and settings.sign.configured:
        settle_pin(settings, interactive=True)  # asked here; the key is opened while the workers convert
        # forked before the conversion code is imported: the key opens on the core idle meanwhile
        start_key_process(settings)
    from .batch import run_batch

    run_batch(src, settings, manifest, jobs, dry_run, report, queue=queue, wait=wait)


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


@click.command("worker", epilog="""\b
Examples:
  digitize worker                      # one conversion process per core
  digitize worker --concurrency 2 --metrics-port 9464
""")
@click.option("-c", "--concurrency", type=click.IntRange(1, 256), default=None,
              help="Files converted in parallel, each on one core (its pages one after another; "
                   "convert.jobs does not apply); default batch.jobs = all cores.")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
              help="Serve Prometheus /metrics on this port (default queue.metrics_port; 0 = off).")
@click.option("--loglevel", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]), default="INFO")
@click.pass_obj
def worker_cmd(settings, concurrency: int | None, metrics_port: int | None, loglevel: str) -> None:
    """Convert, sign, store and index queued files ([queue] url): any number of machines, one broker."""
    from digitize import verapdf
    from digitize.signing import preflight

    from .logs import configure
    from .tasks import check_settings, run_worker

    check_settings(settings)
    verapdf.require(settings.convert.validate)
    configure(False)
    preflight(settings, interactive=False)
    run_worker(settings, concurrency or settings.batch.jobs,
               settings.queue.metrics_port if metrics_port is None else metrics_port, loglevel)


@click.group("queue")
def queue_group() -> None:
    """Queue mode: what is waiting, running, done and failed; send failed jobs again."""


@queue_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of text.")
@click.option("--failed", "list_failed", is_flag=True, help="List failed jobs with their reasons.")
@click.pass_obj
def queue_status_cmd(settings, as_json: bool, list_failed: bool) -> None:
    """Jobs waiting, running, done and failed; the oldest waiting; workers answering a ping."""
    import json
    import time

    from .ledger import UNVERIFIED, Ledger
    from .tasks import app_for

    ledger = Ledger.from_settings(settings, reconnect=5.0)
    try:
        counts = ledger.tally()  # every record's seal checked: a forged one counts as unverified
        failed = ledger.many(ledger.in_state("failed")) if list_failed or as_json else []
        unverified = [r for r in failed if r.state != "failed"]
        failed = [r for r in failed if r.state == "failed"]
    finally:
        ledger.close()
    try:
        workers = sorted(name for reply in app_for(settings).control.ping(timeout=1.0) for name in reply)
    except Exception:  # noqa: BLE001 - the broker is down: say so in the count
        workers = []
    age = time.time() - counts.oldest_waiting if counts.oldest_waiting else None
    if as_json:
        click.echo(json.dumps({"waiting": counts.waiting, "running": counts.running, "done": counts.done,
                               "failed": counts.failed, "unverified": counts.unverified,
                               "oldest_waiting_seconds": round(age, 1) if age else None,
                               "workers": workers,
                               "failed_jobs": [{"job": r.job_id, "file": r.name, "reason": r.reason} for r in failed],
                               "unverified_failed_jobs": [r.job_id for r in unverified]},
                              ensure_ascii=False, indent=2))
        return
    click.echo(f"waiting {counts.waiting}, running {counts.running}, done {counts.done}, failed {counts.failed}, "
               f"unverified {counts.unverified}")
    click.echo("oldest waiting: " + (f"{age:.0f} s" if age is not None else "-"))
    click.echo(f"workers alive: {len(workers)}" + (f" ({', '.join(workers)})" if workers else ""))
    for record in failed:
        click.echo(printable(f"failed {record.job_id} {record.name}: {record.reason}"))
    for record in unverified:
        says = ("is not signed with this queue's secret" if record.state == UNVERIFIED else
                f"says {record.state}")  # a job ID is a set member anyone who can write Redis chose: shown inert
        click.echo(printable(f"unverified {record.job_id}: listed as failed, but its record {says}"))
    if counts.unverified:
        click.echo(f"queue: {counts.unverified} job record(s) not signed with this queue's secret (planted in Redis, "
                   "or written before ledger signing): not counted as done or failed", err=True)


@queue_group.command("retry")
@click.argument("jobs", nargs=-1)
@click.option("--failed", "all_failed", is_flag=True, help="Every failed job.")
@click.pass_obj
def queue_retry_cmd(settings, jobs: tuple[str, ...], all_failed: bool) -> None:
    """Send JOB(s) (or every failed job) to the workers again, after fixing what made them fail."""
    from .ledger import Ledger
    from .queued import retry_jobs

    if not jobs and not all_failed:
        raise BadArgsError("give JOB IDs or --failed")
    targets = list(jobs)
    if all_failed:
        ledger = Ledger.from_settings(settings, reconnect=5.0)
        try:
            targets += ledger.in_state("failed")
        finally:
            ledger.close()
    sent, refused = retry_jobs(settings, targets)
    unknown = sorted(set(jobs) - set(sent) - set(refused))
    click.echo(f"queue: {len(sent)} job(s) sent again" + (f"; not failed or unknown: {', '.join(unknown)}"
                                                          if unknown else ""))
    if refused:
        click.echo(f"queue: {len(refused)} job(s) not sent: their recorded task is not signed with this queue's "
                   f"secret ({', '.join(refused)}); submit those files again", err=True)


COMMANDS: list = [watch_cmd, batch_cmd, separator_cmd, worker_cmd, queue_group]
