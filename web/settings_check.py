"""What ``[web]`` must hold before the portal starts: one-line ConfigErrors (exit 9, secrets masked), checked
by ``digitize serve`` before its server processes start and by :func:`web.app.create_app`.

* ``secret_key`` alone signs every session cookie: a short one can be guessed, or cracked offline from any
  one cookie, and then any user's session forged (review web15 M2); 32+ random characters, or none (a random
  key kept in the data dir).
* ``oidc_issuer`` over plain http lets anyone on the path serve its own discovery document and keys and mint
  ID tokens (M3): https, or http on a loopback host only (a provider on the same machine, as the tests run).
* ``webhook_urls`` are signed with ``webhook_secret``: an empty or short one lets anyone forge the signature
  towards the receivers (L1); and only http(s) URLs (urllib would also open file:, ftp:, data:).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from digitize.errors import ConfigError
from digitize.secrets import load_secret, mask

MIN_SECRET = 32


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def safe_transport(url: str) -> bool:
    """https, or http to a loopback host: what an OIDC provider's URLs must be."""
    parts = urlsplit(url or "")
    return bool(parts.hostname) and (parts.scheme == "https" or (parts.scheme == "http" and is_loopback(parts.hostname)))


def origin(url: str) -> str:
    """scheme://host[:port] of a URL, for messages: its path and query may hold a secret (a Slack-style hook)."""
    parts = urlsplit(url)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}"


def check_web_settings(settings) -> None:
    web = settings.web
    random_key = "32 or more random characters (python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
    if web.secret_key:
        load_secret(web.secret_key, "", "", "[web] secret_key",
                    f"set {random_key}, or leave it empty for a random key kept in the data dir", MIN_SECRET)
    if web.oidc_issuer and not safe_transport(web.oidc_issuer):
        raise ConfigError(f"[web] oidc_issuer must be an https URL (http only to a loopback host): "
                          f"{mask(web.oidc_issuer)}")
    urls = [u.strip() for u in web.webhook_urls.split(",") if u.strip()]
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"[web] webhook_urls: {mask(origin(url))}… is not an http(s) URL with a host")
    if urls and not load_secret(web.webhook_secret, "", "", "[web] webhook_secret",
                                f"set {random_key}: receivers check the signature with it", MIN_SECRET):
        raise ConfigError(f"[web] webhook_urls are set but [web] webhook_secret is empty: set {random_key}, "
                          "which the receivers check the X-Digitize-Signature with")
