"""Secrets: the one place that knows what a credential looks like, so none reaches a message, a log or a child.

* :func:`is_secret_key` says whether a setting, query parameter, DSN keyword or environment variable name
  carries a credential (``secret_key``, ``password``, ``sslpassword``, ``sslkey``, ``token``,
  ``X-Amz-Signature``, ``DIGITIZE_STORE_SECRET_KEY``, ...).
* :func:`mask` hides every credential in a text: passwords in URLs (``user:***@host``), ``key=value``
  pairs of libpq DSNs and query strings, ``"key": "value"`` pairs of JSON/TOML, and any secret value
  :func:`remember` was told about (the loaded settings register theirs), wherever it appears.
* :func:`is_secret_env`, :func:`secret_env_names` and :func:`without_secrets` pick the environment
  variables that hold or may carry a secret, for an environment handed to another process (a resident
  server, a run handed to the converter): stripping is broader than masking, since a conversion needs no
  storage or index settings at all (``DIGITIZE_STORE_URL``, ``DIGITIZE_INDEX_DSN``, ``*_DSN``,
  ``DATABASE_URL``, ``*_PIN`` and any name with PASSWORD, SECRET, TOKEN, CREDENTIAL, ... go).
* :class:`MaskingFilter` applies :func:`mask` to every log record a handler emits.

Masking is deliberately greedy: hiding a harmless value is a nuisance, showing a password is an incident.
"""

from __future__ import annotations

import _thread  # threading's Lock itself; importing threading is ~1.5 ms of every `digitize` client
import os
import re
from collections.abc import Mapping
from urllib.parse import quote

from .secretnames import (ENV_PREFIX, SECRET_ENV_SUFFIXES, SECRET_ENV_WORDS, SECRET_SETTINGS,  # noqa: F401
                          _setting_env_names, _words, is_secret_env_name, is_secret_key)

TYPE_CHECKING = False  # as typing.TYPE_CHECKING (type checkers take it so), without importing typing
if TYPE_CHECKING:  # the client of every `digitize run` imports this module: typing and logging cost it ~10 ms
    import logging
    from typing import Any, Iterable, Iterator, MutableMapping

MASK = "***"
MIN_REMEMBERED = 8  # shorter values (a PIN, "pa55") would mask ordinary words and numbers; they are still
# masked wherever they appear as key=value, "key": value or in a URL

_remembered: set[str] = set()
_lock = _thread.allocate_lock()


def remember(*values: str | None) -> None:
    """Register secret values (from config files, env, credentials) so :func:`mask` hides them anywhere."""
    with _lock:
        for value in values:
            if value and len(value) >= MIN_REMEMBERED:
                _remembered.update({value, quote(value, safe=""), quote(value)})


def remember_in(text: str | None) -> None:
    """Register the credentials found in a URL or DSN (its password, ``password=`` and the like)."""
    if not text:
        return
    remember(*(_userinfo(m)[0] for m in _credential_urls(text)))
    remember(*(m["value"].strip("\"'") for m in _secret_pairs(text)))


TOKEN_MIN = 12  # a path segment shorter than this is never taken for a token (Slack's secrets have 24)
_RUNS = re.compile(r"[^\W_]+")  # letters and digits between separators (- _ . ~)


def looks_random(text: str) -> bool:
    """True for a generated value (a token, a UUID, a hex or base64 key), False for words and paths a person
    wrote (``events``, ``api``, ``v1``, ``webhook-receiver-2024``, ``digitize``): TOKEN_MIN+ characters, with
    a run of 8+ between separators that mixes letters and digits, or a run of TOKEN_MIN+ letters about
    a quarter or more of them upper case and as many lower case (base64 without digits)."""
    if len(text) < TOKEN_MIN:
        return False
    for run in _RUNS.findall(text):
        letters = sum(c.isalpha() for c in run)
        if len(run) >= 8 and 0 < letters < len(run):
            return True
        upper = sum(c.isupper() for c in run)
        if len(run) >= TOKEN_MIN and letters and 0.25 <= upper / letters <= 0.75:
            return True
    return False


def remember_url_paths(urls: str | None) -> None:
    """Register the secret parts of each comma-separated URL: a webhook's path segment or query value is
    often its only credential (Slack-style ``/services/T/B/SECRET``, ``?sig=``), which no key name marks.
    Only path segments that look generated (:func:`looks_random`) and query values (8+ characters, as
    any remembered value) are registered: a whole path such as ``/api/v1/events`` or ``/digitize`` would
    garble every log line naming that path or a file under it (review web15b L2)."""
    from urllib.parse import parse_qsl, unquote, urlsplit

    for url in (urls or "").split(","):
        parts = urlsplit(url.strip())
        remember(*(s for s in parts.path.split("/") if looks_random(unquote(s))))
        remember(*(value for _, value in parse_qsl(parts.query, keep_blank_values=True)))
        remember(*(raw.partition("=")[2] for raw in parts.query.split("&")))  # as written (percent-encoded)
    remember_in(urls)


def forget_all() -> None:
    """For tests: drop every remembered value."""
    with _lock:
        _remembered.clear()


# scheme://user:password@host -> scheme://user:***@host. The password runs to the LAST @ of the word, as urllib,
# redis-py and kombu split it: "redis://:Tr0ub4dor@3-horse@h" works there, so all of it is hidden (rev17ops M6).
# REST is the word after "user:"; _userinfo splits it at its last @ (no backtracking regex: linear in the text)
# The user runs to the first ":" and may hold "@" ("redis://alice@corp:pw@h": urllib's user is alice@corp, its
# password pw; review2 r2ops N9: such a URL was not matched and its password shown)
_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://(?P<user>[^\s:/?#]*):(?P<rest>\S*)")


def _userinfo(m: re.Match) -> tuple[str, str]:
    """(password, the rest from its closing @ on) of a _URL_USERINFO match; ("", "") when it has no @, or when
    a user holding "@" is followed by a "/" before the last @: urllib's host then ends at that "/" ("http://a@b:80/c@d"
    is user a, host b:80; review3 r3ops R4: "80/c" was masked and remembered as a password)."""
    at = m["rest"].rfind("@")
    if at < 0 or _host_in_user(m, at):
        return ("", "")
    return (m["rest"][:at], m["rest"][at:])


def _host_in_user(m: re.Match, at: int) -> bool:
    return "@" in m["user"] and "/" in m["rest"][:at]


def _credential_urls(text: str) -> Iterator[re.Match]:
    """The _URL_USERINFO matches that hold a password. After one whose "user" turned out to be user@host, the
    search goes on after its "://": "sftp://u@h:22/x,redis://a:pw@h" still has a password to find."""
    pos = 0
    while (m := _URL_USERINFO.search(text, pos)) is not None:
        at = m["rest"].rfind("@")
        if at >= 0 and _host_in_user(m, at):
            pos = m.start("user")
            continue
        if at >= 0:
            yield m
        pos = m.end()


KEY_USER_SCHEMES = {"s3", "s3s", "http", "https"}  # there the user part is an access key: masked as well
# key=value / key: value / "key": "value"; the value quoted or up to a separator
_PAIR = re.compile(
    r"""(?P<key>["']?(?P<name>[A-Za-z_][\w.\-]*)["']?)(?P<sep>\s*[=:]\s*)"""
    r"""(?P<value>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|"""
    r"""(?:(?i:bearer|basic|digest|token)\s+)?[^\s&;,'"}\]]+)""")  # "Authorization: Bearer X": X too (L2)


def _secret_pairs(text: str) -> Iterator[re.Match]:
    """``key=value`` matches whose key is a secret; a non-secret match resumes after its separator, so
    ``postgresql://h/db?password=x`` is not swallowed whole as the value of ``postgresql:``."""
    pos = 0
    while (m := _PAIR.search(text, pos)) is not None:
        if is_secret_key(m["name"]) and m["value"] not in ("", '""', "''"):
            yield m
            pos = m.end()
        else:
            pos = m.end("sep")


def _mask_pairs(text: str) -> str:
    out, last = [], 0
    for m in _secret_pairs(text):
        value = m["value"]
        quote_char = value[0] if value[0] in "\"'" else ""
        out += [text[last:m.start("value")], f"{quote_char}{MASK}{quote_char}"]
        last = m.end("value")
    return "".join(out) + text[last:]


def _mask_userinfo(m: re.Match) -> str:
    secret, rest = _userinfo(m)
    if not secret:
        return m[0]
    user = MASK if m["scheme"].lower() in KEY_USER_SCHEMES and m["user"] else m["user"]
    return f"{m['scheme']}://{user}:{MASK}{rest}"


def is_identifier_key(name: str) -> bool:
    """Access key IDs: masked where shown by name, but not hunted for in free text (too short, too common)."""
    words = _words(name)
    return words[-2:] in (("access", "key"), ("key", "id")) or words[-1:] == ("accesskey",)


def mask(text: Any) -> str:
    """``text`` (a URL, a DSN, a message, anything ``str()`` can show) with every credential replaced by ***."""
    text = "" if text is None else str(text)
    if not text:
        return text
    out, last = [], 0
    for m in _credential_urls(text):
        out += [text[last:m.start()], _mask_userinfo(m)]
        last = m.end()
    text = "".join(out) + text[last:]
    text = _mask_pairs(text)
    with _lock:
        remembered = sorted(_remembered, key=len, reverse=True)
    for value in remembered:
        if value in text:
            text = text.replace(value, MASK)
    return text


def carries_secret(name: str, value: str) -> bool:
    """An environment variable (or setting) whose name is a secret, or whose value holds one (a DSN with a password)."""
    return is_secret_key(name) or (bool(value) and mask(value) != value)


def is_secret_env(name: str, value: str = "") -> bool:
    """Whether the environment variable NAME (with VALUE, if known) holds or may carry a secret."""
    return is_secret_env_name(name) or (bool(value) and mask(value) != value)


def secret_env_names(env: Mapping[str, str] | None = None) -> frozenset[str]:
    """The names in ``env`` that must not be handed to another process; no ``env``: the DIGITIZE_* names
    of the secret-bearing settings."""
    if env is None:
        return _setting_env_names()
    return frozenset(name for name, value in env.items() if is_secret_env(name, value))


def without_secrets(env: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``env`` without the variables :func:`is_secret_env` picks."""
    return {k: v for k, v in env.items() if not is_secret_env(k, v)}


def tool_environment() -> dict[str, str]:
    """The environment of every external tool we start (poppler, veraPDF, Tesseract, the resident servers):
    this process's without any secret. They parse attacker-supplied files and need none; one function, so
    that no call site forgets it (a library that starts a tool itself, pdf2image or pytesseract, cannot be
    given one: we start those tools ourselves, or clean the library's copy)."""
    return without_secrets(os.environ)


def drop_secret_environ(environ: MutableMapping[str, str] | None = None) -> list[str]:
    """Remove from this process's environment every variable :func:`is_secret_env` picks, ``AWS_*`` and
    ``PGPASSWORD`` included: for a process that needs none (a page worker decoding untrusted pages), so
    that nothing it or a library in it starts can inherit one. The names removed."""
    environ = os.environ if environ is None else environ
    gone = [k for k, v in list(environ.items()) if is_secret_env(k, v)]
    for name in gone:
        environ.pop(name, None)
    return gone


def scrub_environment(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Take out of this process's environment (``os.environ``) every ``DIGITIZE_*`` variable that holds or may
    carry a secret (queue and link keys, store and index credentials, the PIN, the portal's keys), once the
    settings have read them: no child (veraPDF, pdftotext, Tesseract, which parse attacker-supplied files) may
    inherit one. Other tools' variables (PGPASSWORD, AWS_*) stay: libraries in this process read them; children
    that need no secrets get :func:`without_secrets` as their environment. The variables removed (names and
    values), for a caller that runs the CLI in-process more than once to put back when a command ends."""
    environ = os.environ if environ is None else environ
    removed = {k: v for k, v in list(environ.items()) if k.upper().startswith(ENV_PREFIX) and is_secret_env(k, v)}
    for name in removed:
        environ.pop(name, None)
    return removed


def _environ_block() -> tuple[int, int] | None:
    """Where the environment execve put on this process's stack lies: env_start, env_end of /proc/self/stat
    (fields 50 and 51, proc(5)); None when that cannot be read."""
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rpartition(b")")[2].split()  # after the command name, which may hold spaces
        start, end = int(fields[47]), int(fields[48])  # fields[0] is field 3
    except (OSError, ValueError, IndexError):
        return None
    return (start, end) if 0 < start < end else None


def wipe_environ_block() -> list[str]:
    """Zero, in this process's original environment block, the value of every variable :func:`is_secret_env`
    picks; the names wiped. Removing a variable (os.environ.pop, unsetenv) only drops the C library's
    pointer: the bytes execve put on the stack stay, ``/proc/<pid>/environ`` shows them, and every forked
    batch or page worker gets a copy (review rev17ops M4). A variable this process still needs (PGPASSWORD,
    AWS_* for libraries in it) is first set again, which moves it to a heap copy that /proc does not show;
    nothing points into the block at what is zeroed. Call it once the settings are read, before any fork."""
    import ctypes

    block = _environ_block()
    if block is None:
        if names := secret_env_names(os.environ):  # no /proc, an old kernel: say so, never a silent no-op
            import logging

            logging.getLogger("digitize").warning(
                "cannot read this process's environment block (/proc/self/stat): %s stay readable in "
                "/proc/<pid>/environ; give them as systemd credentials instead (review2 r2ops N10)",
                ", ".join(sorted(names)))
        return []
    start, end = block
    wiped, offset = [], 0
    for entry in ctypes.string_at(start, end - start).split(b"\0"):
        name, sep, value = entry.partition(b"=")
        text = os.fsdecode(name)
        if sep and value and is_secret_env(text, os.fsdecode(value)):
            if text in os.environ:
                os.environ[text] = os.environ[text]  # setenv: a new heap copy; the environ pointer leaves the block
            ctypes.memset(start + offset + len(name) + 1, 0, len(value))
            wiped.append(text)
        offset += len(entry) + 1
    return wiped


SECRET_FILE_MAX = 4096  # a key file is a line; a bigger "key file" is a mistake (or /dev/zero)
MIN_DISTINCT = 12  # a random key has many distinct characters: `openssl rand -hex 32` has 16 but for ~1 in 10^7;
# "x" * 32 or a repeated word is no key. (16 would refuse about one hex key in four: 64 hex digits miss one often)


ACL_XATTR = "system.posix_acl_access"
ACL_USER, ACL_GROUP_OBJ, ACL_GROUP, ACL_OTHER = 0x02, 0x04, 0x08, 0x20  # linux/posix_acl_xattr.h tags


def _acl_entries(fd: int) -> list[tuple[int, int, int]] | None:
    """The opened file's POSIX access ACL as (tag, permissions, id) entries; None when it has none (or the
    file system keeps none). A systemd credential is root:root 0400 with an entry for the service's user."""
    import errno
    import struct

    try:
        raw = os.getxattr(fd, ACL_XATTR)
    except OSError as e:
        if e.errno in (errno.ENODATA, errno.EOPNOTSUPP, errno.ENOTSUP):
            return None
        raise
    if len(raw) < 4 or (len(raw) - 4) % 8 or struct.unpack_from("<I", raw)[0] != 2:
        return []  # unreadable: judged as granting nobody, but refused by _judge_acl below
    return [struct.unpack_from("<HHI", raw, at) for at in range(4, len(raw), 8)]


def _acl_refusal(entries: list[tuple[int, int, int]], st: os.stat_result, group_ok: bool) -> str:
    """Why an ACL'd key file is refused ("" if not): a named user other than this process's effective one, a
    group other than its own (and a group at all unless GROUP_OK), anyone else, or anyone's write."""
    if not entries:
        return "has an access ACL that cannot be read"
    for tag, perm, who in entries:
        if tag == ACL_USER and (who != os.geteuid() or perm & 0o2):
            return f"has an ACL entry for user {who}" if who != os.geteuid() else "is writable through its ACL"
        if tag in (ACL_GROUP_OBJ, ACL_GROUP) and perm:
            gid = st.st_gid if tag == ACL_GROUP_OBJ else who
            if not group_ok or gid != os.getegid() or perm & 0o2:
                return f"is readable by group {gid} through its ACL"
        if tag == ACL_OTHER and perm:
            return "is readable by other users"
    return ""


def read_secret_file(path: str | os.PathLike, what: str, group_ok: bool = False) -> str:
    """A key file's text, read like ssh reads a private key: a symlink is not followed, a FIFO or device not
    opened for blocking, and a file that is not regular, that the group or others may read or write, or that
    belongs to a user other than this one (or root) is refused; at most SECRET_FILE_MAX bytes. GROUP_OK (a PIN
    file shared with the service's group, 0640): its group may read it, never write it, and only if that group
    is this process's own (effective) group: a file of a group with other members (``users``) would hand the
    secret to all of them. A file with a POSIX access ACL (a systemd credential: root:root 0400 plus read for
    the service's user, which fstat shows as 0440) is judged by its entries instead of its group bits (the
    ACL's mask): only this process's effective user and (GROUP_OK) group may be granted read, nobody write.
    Every check is made on the opened descriptor (no check-then-open race). ConfigError
    (one line, naming WHAT and the path, never the content) otherwise."""
    import stat

    from .errors import ConfigError

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise ConfigError(f"cannot read the {what} file {path}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"the {what} file {path} is not a regular file")
        acl = _acl_entries(fd)
        if acl is not None and (why := _acl_refusal(acl, st, group_ok)):
            raise ConfigError(f"the {what} file {path} {why}: remove that entry (setfacl -x) or chmod 600 it")
        if acl is not None and st.st_mode & 0o027:  # the group bits are the ACL's mask: its entries were judged
            raise ConfigError(f"the {what} file {path} is writable by its group or readable by other users")
        if acl is None and st.st_mode & (0o027 if group_ok else 0o077):
            raise ConfigError(f"the {what} file {path} is readable or writable by other users: "
                              f"chmod {'640' if group_ok else '600'} it")
        if acl is None and st.st_mode & 0o070 and st.st_gid != os.getegid():
            raise ConfigError(f"the {what} file {path} is readable by its group (gid {st.st_gid}), which is not this "
                              f"service's own group (gid {os.getegid()}): chgrp it to that group or chmod 600 it")
        if st.st_uid not in (os.geteuid(), 0):
            raise ConfigError(f"the {what} file {path} belongs to another user (uid {st.st_uid}): chown it to the "
                              "user the service runs as")
        data = b""
        while len(data) <= SECRET_FILE_MAX and (block := os.read(fd, SECRET_FILE_MAX + 1 - len(data))):
            data += block
        if len(data) > SECRET_FILE_MAX:
            raise ConfigError(f"the {what} file {path} is larger than {SECRET_FILE_MAX} bytes: not a key file")
        return data.decode("utf-8").strip()
    except OSError as e:
        raise ConfigError(f"cannot read the {what} file {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"the {what} file {path} is not UTF-8 text") from None
    finally:
        os.close(fd)


def load_secret(value: str, secret_file: str, credential: str, what: str, how: str, minimum: int = 32) -> str:
    """A shared key from its setting, else its file, else the systemd credential CREDENTIAL (in that order);
    "" when none is set. Registered with :func:`mask` as soon as read; ConfigError (saying HOW to set a good
    one) if shorter than MINIMUM characters or with fewer than MIN_DISTINCT distinct ones."""
    from pathlib import Path

    from .errors import ConfigError

    value = (value or "").strip()
    if not value and secret_file:
        value = read_secret_file(secret_file, what)
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    if not value and credentials and (Path(credentials) / credential).is_file():
        value = read_secret_file(Path(credentials) / credential, what)
    if not value:
        return ""
    remember(value)
    if len(value) < minimum:
        raise ConfigError(f"the {what} has {len(value)} characters, fewer than {minimum}: {how}")
    if len(set(value)) < MIN_DISTINCT:
        raise ConfigError(f"the {what} has only {len(set(value))} distinct characters, not a random value: {how}")
    return value


def mask_mapping(data: Any) -> Any:
    """A deep copy of dicts/lists with secret-named values replaced and every string masked."""
    if isinstance(data, Mapping):
        return {k: (MASK if is_secret_key(str(k)) and data[k] not in (None, "") else mask_mapping(data[k]))
                for k in data}
    if isinstance(data, (list, tuple)):
        return [mask_mapping(v) for v in data]
    if isinstance(data, str):
        return mask(data)
    return data


class MaskingFilter:
    """Masks a record's message, its structured fields and its traceback before any formatter sees them.
    (A handler takes any object with this ``filter`` method: no logging.Filter base, so that importing
    this module does not import logging.)"""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string must not silence the record
            message = str(record.msg)
        record.msg, record.args = mask(message), None
        fields = getattr(record, "fields", None)
        if isinstance(fields, Mapping):
            record.fields = mask_mapping(fields)
        if record.exc_info and not record.exc_text:
            import logging

            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask(record.exc_text)
            record.exc_info = None  # formatters would otherwise format it again, unmasked
        return True


def mask_logging(handlers: Iterable[logging.Handler] | None = None) -> None:
    """Put a :class:`MaskingFilter` on each handler (default: the root logger's), once."""
    import logging

    for handler in logging.getLogger().handlers if handlers is None else handlers:
        if not any(isinstance(f, MaskingFilter) for f in handler.filters):
            handler.addFilter(MaskingFilter())
