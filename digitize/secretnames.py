"""Which names carry a credential: settings, DSN keywords, query parameters, environment variables.

Apart from secrets.py (which masks values, with regular expressions and URL quoting) so that the
``digitize`` client of every run, which strips secret-named variables from the environment it hands
over, imports neither ``re`` nor ``urllib.parse`` (~5 ms of its start). secrets.py re-exports all of it.
"""

from __future__ import annotations

# A name is a secret when, split at _ - . and whitespace and case folded, it ends with one of these word
# runs or contains one of the always-secret words.
_SECRET_SUFFIXES = (
    ("secret", "key"), ("access", "key"), ("accesskey",), ("secretkey",), ("key", "id"), ("api", "key"),
    ("apikey",), ("private", "key"), ("sslkey",), ("signing", "key"), ("session", "key"), ("pin",),
    ("credential",), ("credentials",), ("signature",), ("auth",), ("authorization",), ("cookie",), ("token",),
)
_SECRET_WORDS = {"password", "passwd", "pwd", "pass", "passphrase", "secret", "sslpassword",
                 "sslkey", "secretkey", "accesskey", "apikey"}

_SECRET_PARTS = ("password", "passwd", "secret")  # also inside a glued word: PGPASSWORD, clientsecret

_SEPARATORS = str.maketrans("_-.", "   ")  # and whitespace: str.split() splits at what re's \s matches


def _words(name: str) -> tuple[str, ...]:
    return tuple(name.strip().strip("\"'").lower().translate(_SEPARATORS).split())


# settings (section, key) that hold a secret or may carry one (a URL or DSN with user:password@)
SECRET_SETTINGS = frozenset({("store", "access_key"), ("store", "secret_key"), ("store", "url"), ("index", "dsn"),
                             ("web", "webhook_urls")})  # a hook's path or query is often its secret
ENV_PREFIX = "DIGITIZE_"
# environment names that hold or may carry a secret: ours and other tools' (AWS_SECRET_ACCESS_KEY, PGPASSWORD,
# MINIO_ROOT_PASSWORD, REDIS_PASSWORD, DATABASE_URL, ...)
SECRET_ENV_WORDS = ("PASSWORD", "PASSWD", "PASSPHRASE", "SECRET", "TOKEN", "CREDENTIAL", "ACCESS_KEY", "API_KEY",
                    "PRIVATE_KEY", "ACCESS_KEY_ID")
SECRET_ENV_SUFFIXES = ("_DSN", "_PIN", "DATABASE_URL")


def is_secret_key(name: str, key: str | None = None) -> bool:
    """True for names of settings, DSN keywords, query parameters or env variables that hold a credential;
    ``is_secret_key(section, key)``: the setting [SECTION] KEY holds or may carry one (a URL or DSN too)."""
    if key is not None:
        return (name, key) in SECRET_SETTINGS or is_secret_key(key) or is_secret_env_name(f"{name}_{key}")
    words = _words(name)
    if not words:
        return False
    if any(w in _SECRET_WORDS or any(part in w for part in _SECRET_PARTS) for w in words):
        return True
    return any(words[-len(s):] == s for s in _SECRET_SUFFIXES)


def _setting_env_names() -> frozenset[str]:
    return frozenset(f"{ENV_PREFIX}{section}_{key}".upper() for section, key in SECRET_SETTINGS)


def is_secret_env_name(name: str) -> bool:
    """Whether an environment variable called NAME holds or may carry a secret, whatever its value
    (secrets.is_secret_env also looks at the value)."""
    upper = name.upper()
    return (upper in _setting_env_names() or any(w in upper for w in SECRET_ENV_WORDS)
            or upper.endswith(SECRET_ENV_SUFFIXES) or is_secret_key(name))
