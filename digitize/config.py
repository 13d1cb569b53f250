"""Settings: built-in defaults < TOML file < environment variables < command-line options.

One TOML file (``--config FILE`` or ``$DIGITIZE_CONFIG`` or ``./digitize.toml``, each refused unless only this user
or root can change it: :func:`read_config_file`) with sections
``[convert]``, ``[store]``, ``[index]``, ``[watch]``, ``[batch]``, ``[validator]``, ``[converter]``, ``[sign]``; any key can be overridden by
``DIGITIZE_<SECTION>_<KEY>`` (e.g. ``DIGITIZE_STORE_URL``, ``DIGITIZE_INDEX_DSN``).
The embedded defaults (a folder object store and a SQLite index under ``data_dir``) need no server.
"""

from __future__ import annotations

import dataclasses
import errno
import math
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from . import secrets
from .errors import ConfigError

TYPE_CHECKING = False  # as typing.TYPE_CHECKING (type checkers take it so), without importing typing
if TYPE_CHECKING:  # imported by the client of every `digitize run`: typing costs it ~3 ms
    from typing import Any

ENV_PREFIX = "DIGITIZE_"


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "digitize"


@dataclass
class ConvertSettings:
    language: str = "vie+eng"
    jobs: int = field(default_factory=lambda: os.cpu_count() or 1)
    ocr_timeout: float = 180.0  # seconds per page before Tesseract is killed
    default_dpi: float = 300.0  # used when an image has no DPI and matches no paper size
    max_pixels: int = 250_000_000  # per page; larger is refused as a decompression bomb
    jpeg_quality: int = 80  # highest quality; a lower one (to 20) is predicted only for pages over page_kb
    page_kb: int = 390  # image KB per A4-sized page up to 300 dpi (above: in proportion to its pixels)
    validate: bool = True  # run veraPDF on each output (missing veraPDF: exit 3; false to skip)
    max_stream_mb: int = 100  # a PDF page's content, fonts and forms, decoded; more is refused as a bomb
    max_memory_mb: int = 8192  # address space of each page worker (RLIMIT_AS); 0 = unlimited
    split_spreads: str = "auto"  # book spreads into two pages: "auto" (detected), "never", "always" (landscape pages)
    max_pages: int = 2000  # pages (or TIFF frames) of one file; more is refused when it is opened; 0 = no limit
    max_input_mb: int = 2048  # a watched or batch file's size; larger (or sparse) is refused unread; 0 = no limit


@dataclass
class StoreSettings:
    url: str = ""  # "" = folder under data_dir; file:///path; s3://host:port/bucket (http) or s3s:// (https)
    access_key: str = ""
    secret_key: str = ""
    region: str = ""
    worm_retention_days: int = 0  # >0: bucket created with object lock, COMPLIANCE retention
    retries: int = 5
    part_size: int = 16 * 1024 * 1024
    group_readable: bool = False  # data folders 0750 and index 0640 instead of 0700/0600 (storage/modes.py)
    link_secret: str = ""  # HMAC key signing link records; reindex then skips unsigned or forged ones (sidecar.py)
    link_secret_file: str = ""  # or a file holding it (0600); default $CREDENTIALS_DIRECTORY/digitize-store-link-secret


@dataclass
class IndexSettings:
    dsn: str = ""  # "" = SQLite file under data_dir; sqlite:///path or postgresql://...


@dataclass
class WatchSettings:
    inbox: str = ""
    poll: float = 0.0  # >0: poll every N seconds (SMB/NFS shares give no inotify)
    rescan: float = 60.0  # periodic rescan for missed events
    stable_seconds: float = 5.0  # size and mtime unchanged this long before a file is taken
    on_success: str = "move"  # move to done/ or delete
    done_dir: str = ""  # default INBOX/done
    failed_dir: str = ""  # default INBOX/failed
    agencies: list = field(default_factory=list)  # agency codes a shared inbox may file into; [] = any


@dataclass
class BatchSettings:
    jobs: int = field(default_factory=lambda: os.cpu_count() or 1)
    report: str = ""
    sign_waiters: int = 0  # with [sign]: workers beyond jobs, converting while others wait for a slow token


@dataclass
class ValidatorSettings:
    resident: bool = True  # one veraPDF server per user and machine, shared by all runs (see verapdf.py)
    idle: float = 600.0  # seconds a resident server stays up unused
    dir: str = ""  # the resident servers' private socket folder; "" = $XDG_RUNTIME_DIR/digitize or ~/.cache/digitize/run


@dataclass
class ConverterSettings:
    resident: bool = True  # `digitize run` hands its work to a warm converter of this user (see zygote.py)
    idle: float = 600.0  # seconds a resident converter stays up unused


@dataclass
class SignSettings:
    """PAdES signing of every PDF/A (digitize/signing.py); on when a key is configured."""

    pkcs12: str = ""  # PKCS#12 file of an agency certificate; or a token:
    pkcs11_module: str = ""  # the token's PKCS#11 library (the CA's driver, or SoftHSM2's)
    token_label: str = ""
    key_label: str = ""
    cert_label: str = ""  # default: key_label
    pin: str = ""  # DIGITIZE_SIGN_PIN; also the PKCS#12 password
    pin_file: str = ""  # default $CREDENTIALS_DIRECTORY/digitize-sign-pin (systemd LoadCredential=)
    kind: str = "personal"  # or "agency" (the seal image goes into the mark)
    name: str = ""  # shown in the mark; default the certificate's common name
    reason: str = "Số hóa từ bản giấy (bản sao điện tử)"
    location: str = ""
    seal: str = ""  # the agency's seal: red transparent PNG, drawn at its actual size (its dpi)
    visible: bool = True  # the mark at the top right of page 1; false: an invisible signature
    font: str = ""  # TTF for the mark; default Liberation Serif (fonts-liberation2)
    tsa_url: str = ""  # RFC 3161 timestamp authority: PAdES B-T
    ltv: bool = False  # embed chain and revocation data: PAdES B-LT (needs tsa_url)
    trust: str = ""  # trust anchors (PEM/DER files, ":"-separated) signatures must chain to; "" = chain not judged
    timeout: float = 120.0  # seconds a batch waits for its signer (key opened, one signature) before it stops
    validate_unsigned: bool = False  # veraPDF checks the PDF/A before signing too (the signed one always; README)

    @property
    def configured(self) -> bool:
        return bool(self.pkcs12 or self.pkcs11_module)


@dataclass
class WebSettings:
    """``digitize serve``: the portal and the REST API (web/)."""

    host: str = "127.0.0.1"
    port: int = 8080
    secret_key: str = ""  # signs session cookies; "" = a random key kept in data_dir/web-secret (0600)
    session_idle: float = 1800.0  # seconds without a request before a session ends
    secure_cookies: bool = True  # Secure flag (browsers still send it to http://localhost)
    login_attempts: int = 5  # failed logins per user and address before a pause
    login_pause: float = 300.0  # seconds that pause lasts
    max_upload_mb: int = 200
    upload_job_days: int = 30  # a stored upload's job record (its scan is gone) is removed after this; 0 = kept
    trusted_proxies: str = ""  # comma-separated addresses whose X-Forwarded-For is believed
    webhook_urls: str = ""  # comma-separated; each gets a signed JSON POST when a document is stored
    webhook_secret: str = ""  # HMAC-SHA256 key of the X-Digitize-Signature header
    webhook_retries: int = 8  # attempts per event and URL (backoff doubles from webhook_backoff, max 5 min)
    webhook_backoff: float = 2.0
    oidc_issuer: str = ""  # single sign-on (OpenID Connect); "" = local accounts only
    oidc_client_id: str = ""
    oidc_client_secret: str = ""
    workers: int = 0  # server processes for `digitize serve`; 0 = one per CPU core
    db_timeout: float = 10.0  # s a portal request may wait on the index (PostgreSQL statement_timeout and
    # lock_timeout, SQLite busy wait), then a 503; 0 = the backends' defaults (unbounded on PostgreSQL)
    token_cache_seconds: float = 2.0  # s a verified API token is trusted without the index (so a revoked one
    # is refused within this); 0 = no cache: every API request verifies its token in the index
    search_lane: int = 6  # API searches running at once per server process (web/lanes.py; the rest wait,
    # holding no thread or archive); 0 = no lane
    case_lane: int = 6  # API case views running at once per server process (a lane of their own); 0 = no lane
    zip_lane: int = 2  # dossier ZIPs (API and pages) built at once per server process (each takes the dossier's
    # size in the temp folder the watcher also needs); 0 = no lane


@dataclass
class QueueSettings:
    """Queue mode (pipelines/queued.py, tasks.py): conversion by ``digitize worker`` processes on many machines."""

    url: str = ""  # "" = everything in-process; redis://host:6379/0 (or amqp://... for RabbitMQ, with state_url)
    state_url: str = ""  # Redis for the job ledger (states, delivery counts); "" = url when it is redis://
    visibility_timeout: float = 3600.0  # seconds before an unacknowledged task is redelivered (> ocr_timeout)
    max_deliveries: int = 3  # a file whose task killed its worker this often is failed, not redelivered
    retries: int = 6  # transient faults (storage, index, signer) before a job is failed
    retry_backoff: float = 5.0  # first retry delay; doubles, capped below the visibility timeout
    metrics_port: int = 0  # >0: `digitize worker` serves Prometheus /metrics on this port
    metrics_host: str = "127.0.0.1"  # its address; the monitoring network's to be scraped from elsewhere (no auth)
    secret: str = ""  # HMAC-SHA256 key signing every task (DIGITIZE_QUEUE_SECRET); required in queue mode
    secret_file: str = ""  # or a file holding it (0600); default $CREDENTIALS_DIRECTORY/digitize-queue-secret


@dataclass
class Settings:
    data_dir: str = field(default_factory=lambda: str(default_data_dir()))
    convert: ConvertSettings = field(default_factory=ConvertSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    index: IndexSettings = field(default_factory=IndexSettings)
    watch: WatchSettings = field(default_factory=WatchSettings)
    batch: BatchSettings = field(default_factory=BatchSettings)
    validator: ValidatorSettings = field(default_factory=ValidatorSettings)
    converter: ConverterSettings = field(default_factory=ConverterSettings)
    sign: SignSettings = field(default_factory=SignSettings)
    web: WebSettings = field(default_factory=WebSettings)
    queue: QueueSettings = field(default_factory=QueueSettings)
    source: str = "defaults"  # where the settings came from, for `config show`

    @property
    def store_url(self) -> str:
        return self.store.url or (Path(self.data_dir) / "objects").as_uri()

    @property
    def index_dsn(self) -> str:
        return self.index.dsn or "sqlite:///" + str(Path(self.data_dir) / "index.sqlite3")


_SECTIONS = ("convert", "store", "index", "watch", "batch", "validator", "converter", "sign", "web", "queue")


def _coerce(value: Any, current: Any, where: str) -> Any:
    try:
        if isinstance(current, bool):
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in {"1", "true", "yes", "on"}:
                return True
            if text in {"0", "false", "no", "off"}:
                return False
            raise ValueError(value)
        if isinstance(current, int):
            if isinstance(value, (bool, float)):
                raise ValueError(value)  # 2.5 jobs or `true` must not silently become 2 or 1
            return int(value)
        if isinstance(current, float):
            number = float(value)
            if not math.isfinite(number):  # nan never expires a session or a cached token; inf waits for ever
                raise ValueError(value)
            return number
        if isinstance(current, list):  # a TOML list, or "a,b" from the environment
            items = value if isinstance(value, list) else str(value).split(",")
            return [str(item).strip() for item in items if str(item).strip()]
        if isinstance(value, (list, dict)):  # was kept as its text: trust = ["a.pem"] read "['a.pem']"
            raise ConfigError(f"{where}: a TOML {'list' if isinstance(value, list) else 'table'} is given; "
                              "this setting is one string")  # never the value: it may be a PIN or a key
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {value!r} is not a valid {type(current).__name__}") from None


def _apply(settings: Settings, data: Mapping[str, Any], origin: str) -> None:
    for key, value in data.items():
        if key in _SECTIONS:
            if not isinstance(value, Mapping):
                raise ConfigError(f"{origin}: [{key}] must be a table")
            section = getattr(settings, key)
            for sub, subval in value.items():
                if not hasattr(section, sub):
                    raise ConfigError(f"{origin}: unknown setting {key}.{sub}")
                setattr(section, sub, _coerce(subval, getattr(section, sub), f"{origin}: {key}.{sub}"))
        elif key == "data_dir":
            settings.data_dir = str(value)
        else:
            raise ConfigError(f"{origin}: unknown setting {key}")


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX + "CONFIG":
            continue
        rest = name[len(ENV_PREFIX):].lower()
        if rest == "data_dir":
            out["data_dir"] = value
            continue
        section, _, key = rest.partition("_")
        if section in _SECTIONS and key:
            out.setdefault(section, {})[key] = value
    return out


LOCAL_CONFIG = "digitize.toml"  # taken from the current folder only when that folder and file are safe (below)
CONFIG_MAX = 1 << 20  # bytes; a settings file is a page of text, a bigger one is a mistake (or /dev/zero)


def read_config_file(path: Path, implicit: bool = False) -> str:
    """A settings file's text, read as trusted code is read: it can name a PKCS#11 library the signer loads,
    the store every document goes to and the validator that judges them (review rev17ops H1). Refused with a
    one-line ConfigError (exit 9): a symlink (never followed; an explicit path's only when no other account can
    change it or its target, :func:`_trusted_link`), anything but a regular file, a file of another
    user than this one or root, a file its group or others may write, one over CONFIG_MAX; for the IMPLICIT
    ``./digitize.toml`` also a current folder of another user or writable by others (a scan share, a USB
    stick: whoever can write there would choose our settings). ``/dev/null`` stands for "no file"."""
    if os.path.abspath(path) == os.devnull:
        return ""
    shown = f"{'the ./' + LOCAL_CONFIG + ' of this folder' if implicit else 'config file ' + str(path)}"
    if not implicit and os.path.islink(path):
        path = _trusted_link(path, shown)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ConfigError(f"{shown} is a symbolic link, which is never followed: name the file itself") from None
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    try:
        if implicit:
            _check_owner(os.stat("."), "the current folder, which holds a ./" + LOCAL_CONFIG + ",",
                         "run digitize elsewhere or pass --config FILE")
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{shown} is not a regular file")
        _check_owner(info, shown, f"chown it to uid {os.geteuid()} and chmod go-w it")
        readable_by_others = bool(info.st_mode & 0o004)
        data = os.read(fd, CONFIG_MAX + 1)
        while len(data) <= CONFIG_MAX and (more := os.read(fd, CONFIG_MAX + 1 - len(data))):
            data += more
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > CONFIG_MAX:
        raise ConfigError(f"{shown} is larger than {CONFIG_MAX} bytes: not a settings file")
    text = data.decode("utf-8")
    if readable_by_others and _holds_secret(text):
        import logging

        logging.getLogger("digitize").warning(
            "%s holds a secret and every user of this machine can read it: chmod o-r it, or give the secret as "
            "a systemd credential (README, Configuration)", path)
    return text


def _trusted_link(path: Path, shown: str) -> Path:
    """The resolved path of an explicit config that is a symlink (Ansible's envs/prod.toml, NixOS /etc, a k8s
    ConfigMap's ..data): followed only when the link, its target and every folder on both paths belong to
    root or this user and none is writable by others (review2 r2ops N7: refused outright, a deployment that
    worked stayed down after an upgrade, exit 9). The chain is walked hop by hop, each link and the folders it
    sits in checked (review3 r3ops R3: a hop in the middle, in another account's folder, was never looked at);
    the last hop, which no other account can then change, is opened like any other file (O_NOFOLLOW)."""
    from .resident import trusted_path

    hop = Path(os.path.abspath(path))
    for _ in range(40):  # the kernel's own limit of links in a path
        if not trusted_path(hop):
            raise ConfigError(f"{shown} is a symbolic link that another account could re-point (it, its target "
                              "or a folder on the way is not root's or this user's alone): name the file itself")
        if not os.path.islink(hop):
            return hop
        hop = Path(os.path.realpath(hop.parent), os.readlink(hop))  # the folder checked above, resolved
    raise ConfigError(f"{shown} is a chain of more than 40 symbolic links")


def _holds_secret(text: str) -> bool:
    """Whether a settings file sets a secret: a key, password or PIN, or a URL or DSN with a password. Judged on
    the parsed TOML, not on masked text: a ``*_file`` setting names where a secret is (``secret_file =
    "/etc/digitize/queue-secret"``, the README's own example), which mask() hid as if it were one, so a 0644
    config warned on every run (review2 r2ops N8)."""
    import tomllib

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return False  # refused with its line when the settings are parsed

    def sets_secret(table: Mapping[str, Any]) -> bool:
        for key, value in table.items():
            if isinstance(value, Mapping):
                if sets_secret(value):
                    return True
            elif value not in ("", []) and not key.endswith("_file") and (
                    secrets.is_secret_key(key) or secrets.mask(str(value)) != str(value)):
                return True
        return False

    return sets_secret(data)


def _check_owner(info: os.stat_result, shown: str, how: str) -> None:
    """ConfigError unless INFO belongs to this user or root and neither its group nor others may write it."""
    if info.st_uid not in (os.geteuid(), 0):
        raise ConfigError(f"refusing {shown} (belongs to uid {info.st_uid}, not to this user or root): {how}")
    if info.st_mode & 0o022:
        raise ConfigError(f"refusing {shown} (writable by other users, mode {info.st_mode & 0o7777:o}): {how}")


def load_settings(path: str | os.PathLike | None = None, env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    settings = Settings()
    origins = ["defaults"]
    candidate = path or env.get(ENV_PREFIX + "CONFIG")
    implicit = not candidate and os.path.lexists(LOCAL_CONFIG)
    if implicit:
        candidate = LOCAL_CONFIG
    if candidate:
        import tomllib  # only with a file: the client of every `digitize run` has none to parse

        p = Path(candidate)
        try:
            data = tomllib.loads(read_config_file(p, implicit))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"config file {p} is not valid TOML: {e}") from None
        _apply(settings, data, str(p))
        origins.append(str(p))
    env_data = _from_env(env)
    if env_data:
        _apply(settings, env_data, "environment")
        origins.append("environment")
    if _from_credentials(settings, env.get("CREDENTIALS_DIRECTORY", "")):
        origins.append("credentials")
    settings.source = " < ".join(origins)
    remember_secrets(settings)
    return settings


# secret settings that, when the file and the environment leave them empty, come from the systemd credential
# digitize-SECTION-KEY ($CREDENTIALS_DIRECTORY, LoadCredential=), so that no secret must sit in the TOML or in
# digitize.env (review rev17ops L3). The PIN, queue secret and link secret have their own *_file settings and
# the same credential names (signing.py, taskauth.py, sidecar.py read them, with their checks).
CREDENTIAL_SETTINGS = (("store", "access_key"), ("store", "secret_key"), ("index", "dsn"), ("web", "secret_key"),
                       ("web", "webhook_secret"), ("web", "oidc_client_secret"))


def credential_name(section: str, key: str) -> str:
    return f"digitize-{section}-{key}".replace("_", "-")


def _from_credentials(settings: Settings, folder: str) -> bool:
    """Fill the empty CREDENTIAL_SETTINGS from FOLDER's credentials (each read as a private key file); whether
    any was."""
    found = False
    for section, key in CREDENTIAL_SETTINGS if folder else ():
        path = Path(folder) / credential_name(section, key)
        if not getattr(getattr(settings, section), key) and os.path.lexists(path):
            setattr(getattr(settings, section), key, secrets.read_secret_file(path, f"{section}.{key} credential"))
            found = True
    return found


mask_url = secrets.mask  # the old name of the one masking function (digitize/secrets.py)


def remember_secrets(settings: Settings) -> None:
    """Tell the masking function every secret these settings carry (any section's secret-named values, and
    passwords inside URLs and DSNs), so no message or log shows one."""
    for section in dataclasses.asdict(settings).values():
        for key, value in section.items() if isinstance(section, dict) else ():
            if isinstance(value, str) and secrets.is_secret_key(key) and not secrets.is_identifier_key(key):
                secrets.remember(value)
            elif isinstance(value, str):
                secrets.remember_in(value)
    secrets.remember_url_paths(settings.web.webhook_urls)  # their paths and queries: webhooks.py logs only hosts


def settings_as_dict(settings: Settings, masked: bool = True) -> dict[str, Any]:
    """Effective settings for ``digitize config show``; secrets and DSN passwords masked."""
    if masked:
        remember_secrets(settings)
    data = dataclasses.asdict(settings)
    data["effective_store_url"] = settings.store_url
    data["effective_index_dsn"] = settings.index_dsn
    return secrets.mask_mapping(data) if masked else data
