"""Command line: ``digitize run|watch|batch|cases|search|show|get|verify|sign-check|separator|config|validator|servers``,
``serve|users|tokens`` (the portal and its accounts).

Every failure a user can cause ends as one line on stderr (``digitize: ...``) and the exit code
of its :class:`~digitize.errors.DigitizeError` class; never a traceback (``-v -v`` shows one for
unexpected internal errors only).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import click

from . import __version__
from .config import load_settings, settings_as_dict
from .errors import BadArgsError, ConfigError, DigitizeError, ExitCode, MissingDependencyError, VerificationError, resource_fault
from .secrets import mask, scrub_environment, wipe_environ_block
from .terminal import printable

EXIT_CODES_HELP = """\b
Exit codes:
  0  success                      6  OCR failed or timed out
  1  bad arguments                8  encrypted PDF
  2  bad input file               9  invalid configuration
  3  missing dependency          10  store/index/token unavailable
  4  output failed PDF/A check   11  fixity or signature check failed
  5  cannot read/write a file    12  case or document not found
                                 13  signing key unusable (PIN,
                                     certificate)
                                 15  internal error, or the resident
                                     converter stopped under a run
"""

log = logging.getLogger("digitize")


def _setup_logging(verbosity: int) -> None:
    """One handler for every logger: time stamps, one printable line per record, secrets masked (pipelines/logs.py)."""
    from pipelines import logs

    logs.setup({-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG))


class _Commands(click.Group):
    """The root group. The storage, pipeline and web commands live beside their code and are mounted
    when a command this module does not define is asked for, or all are listed (--help): their
    imports (archive, index, access control, HTTP) were ~0.2 CPU-s of every local ``digitize run``
    and of the resident converter's start, which the first runs of a batch wait for (issue 13)."""

    OPTIONAL = ("storage.cli", "pipelines.cli", "web.cli")  # each holds COMMANDS
    mounted = False
    broken: dict[str, str] = {}  # module -> why it did not import (a missing extra, a broken install)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        found = super().get_command(ctx, cmd_name)
        if found is None and not self.mounted:
            self.mount()
            found = super().get_command(ctx, cmd_name)
        if found is None and self.broken:
            # the name may be one of a module that did not load: say why, not "No such command"
            raise MissingDependencyError(f"command {cmd_name!r} unavailable: " + "; ".join(
                f"{module}: {why}" for module, why in self.broken.items()))
        return found

    def list_commands(self, ctx: click.Context) -> list[str]:
        self.mount()
        return super().list_commands(ctx)

    def mount(self) -> None:
        """Add each optional module's commands; one that fails to import leaves the others (and the
        built-ins) working and is named when one of its commands is asked for. A name defined twice
        is a bug: click's add_command would silently replace one with the other."""
        if self.mounted:
            return
        import importlib

        broken: dict[str, str] = {}
        for module in self.OPTIONAL:
            try:
                commands = importlib.import_module(module).COMMANDS
            except ImportError as e:
                broken[module] = f"{type(e).__name__}: {e}"
                continue
            for command in commands:
                if command.name in self.commands:
                    raise RuntimeError(f"command {command.name!r} defined twice ({module})")
                self.add_command(command)
        self.broken = broken
        self.mounted = True


@click.group(cls=_Commands, epilog=EXIT_CODES_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="digitize")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), envvar="DIGITIZE_CONFIG",
              help="TOML settings file (default ./digitize.toml if present in a folder only you or root can write).")
@click.option("-v", "--verbose", count=True, help="More output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors.")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, verbose: int, quiet: bool) -> None:
    """Turn scanned dossiers into searchable PDF/A-2b e-dossiers, stored and indexed by case ID."""
    _setup_logging(-1 if quiet else verbose)
    ctx.obj = load_settings(config_path)
    ctx.meta["verbose"] = verbose
    from .signing import scrub_pin_from_environment

    scrub_pin_from_environment()  # read into the settings; no child process may inherit it
    removed = scrub_environment()  # so for every DIGITIZE_* secret: queue/link keys, store/index credentials
    wipe_environ_block()  # and their bytes in /proc/self/environ, before anything forks a worker (rev17ops M4)
    ctx.call_on_close(lambda: os.environ.update(removed))  # put back when the command ends (in-process runs)


@cli.group("config")
def config_group() -> None:
    """Inspect settings."""


@config_group.command("show")
@click.pass_obj
def config_show(settings) -> None:
    """Print the effective settings (defaults < file < environment), secrets masked."""
    click.echo(json.dumps(settings_as_dict(settings), indent=2, ensure_ascii=False))


@cli.group("validator")
def validator_group() -> None:
    """The resident veraPDF validator that all runs of this user share."""


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value < 120 else f"{value / 60:.0f} min"


def _list_servers(settings, act, kind: str | None) -> None:
    """One line per server of KIND (None: all) that ACT (status or stop) returns for this user's socket folder."""
    from . import resident

    folder = resident.socket_dir(settings.validator.dir)
    servers = act(folder, kind)
    for s in servers:
        details = (f", up {_seconds(s.uptime)}, idle {_seconds(s.idle)}, {s.served} {s.noun},"
                   f" {s.clients} other clients" if s.state == "serving" else "")
        name = f"{s.kind} " if kind is None else ""
        click.echo(f"{name}{s.state}: pid {s.pid or '?'}{details}, socket {s.socket}")
    if not servers:
        click.echo(f"not running (sockets in {folder})")
    problem = resident.folder_problem(folder)
    if problem:
        click.echo(f"no resident server can run: {problem}; every run starts its own")


@validator_group.command("status")
@click.pass_obj
def validator_status(settings) -> None:
    """Show the running validator (pid, uptime, idle time, socket)."""
    from .resident import servers

    _list_servers(settings, servers, "validator")
    if not settings.validator.resident:
        click.echo("resident validator off (validator.resident): each run starts its own veraPDF")


@validator_group.command("stop")
@click.pass_obj
def validator_stop(settings) -> None:
    """Ask the running validator to exit (after its current work)."""
    from .resident import stop_servers

    _list_servers(settings, stop_servers, "validator")


@cli.group("servers")
def servers_group() -> None:
    """All resident servers of this user: the veraPDF validator and the converter."""


@servers_group.command("status")
@click.pass_obj
def servers_status(settings) -> None:
    """Show every resident server (kind, pid, uptime, idle time, socket)."""
    from .resident import servers

    _list_servers(settings, servers, None)
    if not settings.converter.resident:
        click.echo("resident converter off (converter.resident): each run imports and loads everything itself")


@servers_group.command("stop")
@click.pass_obj
def servers_stop(settings) -> None:
    """Ask every resident server to exit (after its current work); the next run starts new ones."""
    from .resident import stop_servers

    _list_servers(settings, stop_servers, None)


@cli.command("run", epilog="""\b
Examples:
  digitize run scan.pdf out.pdf
  digitize run page.tif out.pdf --sidecar out.txt --report out.json
  digitize run fax.tiff out.pdf --lang vie --jobs 2 -v
""")
@click.argument("input_path", metavar="INPUT", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("output_path", metavar="OUTPUT.pdf", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-l", "--lang", default=None, help="Tesseract languages (default vie+eng).")
@click.option("--sidecar", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the OCR text here, pages separated by form feed.")
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the JSON report (hashes, per-page orientation/skew/dpi/confidence, timings).")
@click.option("-j", "--jobs", type=click.IntRange(1, 256), default=None, help="Pages processed in parallel.")
@click.option("--ocr-timeout", type=click.FloatRange(0.001), default=None, help="Seconds per page before OCR is abandoned.")
@click.option("--no-validate", is_flag=True, help="Skip the veraPDF check of the output.")
@click.option("--sign/--no-sign", "sign", default=None,
              help="PAdES-sign the output with the [sign] key (default: sign when a key is configured).")
@click.pass_obj
def run_cmd(settings, input_path: Path, output_path: Path, lang, sidecar, report, jobs, ocr_timeout, no_validate,
            sign) -> None:
    """Convert INPUT (PDF, TIFF, JPEG, PNG) to a searchable PDF/A-2b at OUTPUT.pdf."""
    from .convert import ConvertOptions, convert_file

    opts = ConvertOptions.from_settings(settings.convert, language=lang, jobs=jobs, ocr_timeout=ocr_timeout,
                                        validate=False if no_validate else None)
    result = convert_file(input_path, output_path, opts, sidecar=sidecar, report=report,
                          signer=_run_signer(settings, sign))
    log.info("%s: %d pages, mean OCR confidence %.1f, %.1f s", output_path, result.page_count,
             result.mean_confidence, result.timings.get("total", 0.0))


def _run_signer(settings, sign: bool | None):
    """The key is opened before any page is converted: a wrong PIN costs nothing and leaves no output."""
    if sign is False or (sign is None and not settings.sign.configured):
        return None
    if not settings.sign.configured:
        raise ConfigError("--sign: no signing key configured (set [sign] pkcs12, or pkcs11_module and key_label)")
    from .signing import signer_for

    return signer_for(settings, interactive=True)


@cli.command("sign-check")
@click.argument("files", metavar="FILE...", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file instead of text.")
@click.pass_obj
def sign_check_cmd(settings, files: tuple[Path, ...], as_json: bool) -> None:
    """Explain every signature of each FILE: signer, times, integrity, coverage, chain, revocation.

    Chains are judged against [sign] trust; exit 11 when a file is unsigned or a signature is broken."""
    from .sigcheck import check_file, explain

    bad = 0
    for path in files:
        result = check_file(path, settings.sign.trust)
        bad += not result.ok
        if as_json:
            click.echo(json.dumps({"path": str(path), "ok": result.ok, "error": result.error,
                                   "signatures": [s.as_dict() for s in result.signatures]}, ensure_ascii=False))
        else:
            for line in explain(result):
                click.echo(printable(line))  # signer names come from the file's certificates
    if bad:
        raise VerificationError(f"{bad} of {len(files)} files unsigned or with a broken signature")


def main(argv: list[str] | None = None) -> int:
    """Entry point: run click without its own exit handling so every error is one line."""
    try:
        cli.main(args=argv, prog_name="digitize", standalone_mode=False)
        return ExitCode.ok
    except DigitizeError as e:
        click.echo(f"digitize: {printable(mask(e))}", err=True)
        return int(e.exit_code)
    except click.exceptions.Exit as e:
        return int(e.exit_code)
    except click.Abort:
        click.echo("digitize: interrupted", err=True)
        return int(ExitCode.interrupted)
    except click.ClickException as e:
        click.echo(f"digitize: {mask(e.format_message())}", err=True)
        return int(BadArgsError.exit_code) if e.exit_code != 0 else 0
    except KeyboardInterrupt:
        click.echo("digitize: interrupted", err=True)
        return int(ExitCode.interrupted)
    except Exception as e:  # noqa: BLE001 - last resort: still one line
        fault = resource_fault(e, "out of disk space")  # ENOSPC anywhere: the machine's, not a bug
        if fault is not None:
            click.echo(f"digitize: {fault}", err=True)
            return int(fault.exit_code)
        if logging.getLogger().isEnabledFor(logging.DEBUG):
            raise
        click.echo(f"digitize: internal error: {type(e).__name__}: {mask(' '.join(str(e).split()))}", err=True)
        return int(ExitCode.internal)


if __name__ == "__main__":
    sys.exit(main())
