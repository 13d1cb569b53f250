"""``digitize serve``: the portal and the REST API under uvicorn."""

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
    import uvicorn

    from .app import create_app

    app = create_app(settings)
    proxies = settings.web.trusted_proxies or "127.0.0.1"
    uvicorn.run(app, host=host or settings.web.host, port=port or settings.web.port, log_level="warning",
                access_log=False, proxy_headers=bool(settings.web.trusted_proxies), forwarded_allow_ips=proxies,
                server_header=False)


COMMANDS: list = [serve_cmd]
