"""``digitize serve``: the portal and the REST API under uvicorn, in ``[web] workers`` processes."""

from __future__ import annotations

import click


@click.command("serve", epilog="""\b
Examples:
  digitize serve                          # http://127.0.0.1:8080, embedded store + SQLite
  digitize serve --host 0.0.0.0 --port 8443   # behind a TLS reverse proxy
""")
@click.option("--host", default=None, help="Address to listen on (default web.host = 127.0.0.1).")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Port (default web.port = 8080).")
@click.pass_obj
def serve_cmd(settings, host: str | None, port: int | None) -> None:
    """Serve the portal (pages in Vietnamese/English) and the REST API at /api/v1."""
    import os

    import uvicorn

    from .settings_check import check_web_settings

    check_web_settings(settings)  # a weak key or an http provider: one line here, not in each server process
    if settings.queue.url:  # a bad queue set-up is one line here, not a traceback in each server process
        from pipelines.tasks import check_settings

        check_settings(settings)
    warn_tokens_without_expiry(settings)
    workers = settings.web.workers if settings.web.workers > 0 else (os.cpu_count() or 1)
    proxies = settings.web.trusted_proxies or "127.0.0.1"
    config = uvicorn.Config(AppFactory(settings), factory=True, host=host or settings.web.host,
                            port=port or settings.web.port, workers=workers, log_level="warning",
                            access_log=False, log_config=None,  # uvicorn's records go to our masked handler
                            proxy_headers=bool(settings.web.trusted_proxies),
                            forwarded_allow_ips=proxies, server_header=False)
    if workers == 1:
        uvicorn.Server(config).run()
        return
    from uvicorn.supervisors import Multiprocess

    # uvicorn's supervisor: worker processes are *spawned* (the settings reach them pickled through the
    # process pipe, never through argv or the environment), share the listening socket, and one that dies
    # is replaced. Upload jobs and webhooks coordinate through the data dir (web/uploads.py, web/webhooks.py).
    Multiprocess(config, sockets=[config.bind_socket()]).run()


def warn_tokens_without_expiry(settings) -> None:
    """One line naming the active API tokens made before migration 0008, which never expire until
    `digitize tokens expire NAME --days N` gives them an expiry (review web16 L4; names are no secret)."""
    from digitize.errors import DigitizeError
    from storage.access import tokens_without_expiry
    from storage.index import open_index

    try:
        index = open_index(settings.index_dsn, settings.store.group_readable)
        try:
            names = tokens_without_expiry(index)
        finally:
            index.close()
    except DigitizeError:
        return  # an index that cannot be opened: each server process says so itself
    if names:
        shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
        click.echo(f"warning: {len(names)} API token(s) made before expiring tokens never expire ({shown}): "
                   "digitize tokens expire NAME --days N", err=True)


class AppFactory:
    """Builds the app inside each worker process (connections and threads are never inherited).

    A server process uvicorn spawns starts bare: no log handler (its records went to logging.lastResort, with
    no masking and no format) and a masking function that knows no secret. So the factory tells the masking
    function the settings' secrets and sets up the parent's logging there first (review rev17ops M2), and wipes
    the secrets from its environment block (review2 r2ops N1): :func:`web.spawned.start_spawned`."""

    def __init__(self, settings):
        from pipelines import logs

        self.settings = settings
        self.log_state = logs.snapshot()

    def __call__(self):
        from .app import create_app
        from .spawned import start_spawned

        start_spawned(self.settings, self.log_state)  # masking, logging, the environ block (review2 r2ops N1)
        return create_app(self.settings)


COMMANDS: list = [serve_cmd]
