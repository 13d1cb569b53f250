"""What ``[web]`` must hold before the portal starts: one-line ConfigErrors (exit 9, secrets masked), checked
by ``digitize serve`` before its server processes start and by :func:`web.app.create_app`.

* ``secret_key`` alone signs every session cookie: a short one can be guessed, or cracked offline from any
  one cookie, and then any user's session forged (review web15 M2); 32+ random characters, or none (a random
  key kept in the data dir).
  :func:`session_key` is the one place that says which configured key signs them (web/auth.py uses it): a
  set but blank one (``secret_key = " "``, an env file's unfilled template) is an error, never a key.
* ``oidc_issuer`` over plain http lets anyone on the path serve its own discovery document and keys and mint
  ID tokens (M3): https, or http on a loopback host only (a provider on the same machine, as the tests run).
* ``token_cache_seconds`` is how long a revoked API token still works: at most MAX_TOKEN_CACHE (L7).
* ``webhook_urls`` are signed with ``webhook_secret``: an empty or short one lets anyone forge the signature
  towards the receivers (L1); and only http(s) URLs (urllib would also open file:, ftp:, data:).
* The scanning desk (review rev17desk L3): ``max_upload_mb`` from 1 to ``[convert] max_input_mb`` (a larger
  upload is kept whole, then refused by its job), and the watch inbox's failed/ folder, when it exists, a
  folder of this account (or root) that no other account may write and that this one can: every "link to a
  case and retry" answered "not found" otherwise.
"""

from __future__ import annotations

import ipaddress
import os
from urllib.parse import urlsplit

from digitize.errors import ConfigError, FileAccessError
from digitize.fsutil import private_dir_check
from digitize.secrets import load_secret, mask
from pipelines.failed import failed_dir

from .context import POOL_SIZE

MIN_SECRET = 32
MAX_TOKEN_CACHE = 10.0  # seconds: a revoked API token is refused within [web] token_cache_seconds (review web15 L7)
RANDOM_KEY = "32 or more random characters (python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"


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


def session_key(settings) -> str:
    """The configured key that signs session cookies, as used ("" when none is set: the portal then keeps a
    random one in the data dir). Set but blank (spaces only) is a ConfigError rather than "not set": the
    operator meant to set a key (a template or an env file left unfilled), and a key they believe is shared
    by every portal host must not silently become another one; the old code signed cookies with the blank
    value itself, so anyone could forge an admin's session (review web15b M1)."""
    how = f"set {RANDOM_KEY}, or leave it empty for a random key kept in the data dir"
    raw = settings.web.secret_key or ""
    if raw and not raw.strip():
        raise ConfigError(f"the [web] secret_key is set but blank (whitespace only): {how}")
    return load_secret(raw, "", "", "[web] secret_key", how, MIN_SECRET)


def check_web_settings(settings) -> None:
    web = settings.web
    session_key(settings)
    if not 0 <= web.token_cache_seconds <= MAX_TOKEN_CACHE:
        raise ConfigError(f"[web] token_cache_seconds must be 0 to {MAX_TOKEN_CACHE:g} (a revoked API token is "
                          f"refused only after it), not {web.token_cache_seconds:g}")
    if web.oidc_issuer and not safe_transport(web.oidc_issuer):
        raise ConfigError(f"[web] oidc_issuer must be an https URL (http only to a loopback host): "
                          f"{mask(web.oidc_issuer)}")
    for name in ("search_lane", "case_lane", "zip_lane"):  # web/lanes.py; each holds at most its size of archives
        if not 0 <= getattr(web, name) < POOL_SIZE:
            raise ConfigError(f"[web] {name} must be 0 (no lane) to {POOL_SIZE - 1}: {getattr(web, name)}")
    if web.search_lane + web.case_lane + web.zip_lane >= POOL_SIZE:  # an archive stays for the other requests
        raise ConfigError(f"[web] search_lane + case_lane + zip_lane must stay below the {POOL_SIZE} archives a "
                          f"server process keeps: {web.search_lane} + {web.case_lane} + {web.zip_lane}")
    urls = [u.strip() for u in web.webhook_urls.split(",") if u.strip()]
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"[web] webhook_urls: {mask(origin(url))}… is not an http(s) URL with a host")
    if urls and not load_secret(web.webhook_secret, "", "", "[web] webhook_secret",
                                f"set {RANDOM_KEY}: receivers check the signature with it", MIN_SECRET):
        raise ConfigError(f"[web] webhook_urls are set but [web] webhook_secret is empty: set {RANDOM_KEY}, "
                          "which the receivers check the X-Digitize-Signature with")
    check_desk_settings(settings)


def check_desk_settings(settings) -> None:
    """The scanning desk's upload cap and the failed/ folder it takes scans out of (module docstring)."""
    web, limit = settings.web, settings.convert.max_input_mb
    if web.max_upload_mb < 1 or (limit and web.max_upload_mb > limit):
        raise ConfigError(f"[web] max_upload_mb must be 1 to [convert] max_input_mb ({limit or 'no limit'}): "
                          f"{web.max_upload_mb}")
    folder = failed_dir(settings)
    if folder is None or not os.path.lexists(folder):
        return  # no inbox, or nothing failed yet: the watcher makes it
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise ConfigError(f"the watch inbox's failed folder {folder}: {e.strerror} (a symlink is never followed)") \
            from None
    try:
        private_dir_check(fd, f"the watch inbox's failed folder {folder}")
    except FileAccessError as e:
        raise ConfigError(str(e)) from None
    finally:
        os.close(fd)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"the watch inbox's failed folder {folder} is not writable by this account: the desk "
                          "could not take a scan out of it (run the portal as the watcher's account)")
