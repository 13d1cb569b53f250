"""Which settings and environment variables carry secrets: one list, used wherever a secret must
not travel further (a resident server's environment, a run handed to the converter). Masking what
is printed is config.py's; this module only names what is secret.

Light: imported by the ``digitize`` command's start path (resident.py, zygote.py).
"""

from __future__ import annotations

ENV_PREFIX = "DIGITIZE_"

# settings (section, key) that hold a secret or may carry one (a URL or DSN with user:password@)
SECRET_SETTINGS = frozenset({("store", "access_key"), ("store", "secret_key"), ("store", "url"), ("index", "dsn")})

# words that make any variable a secret: ours to come (the portal's, signing PINs) and other tools'
# (AWS_SECRET_ACCESS_KEY, PGPASSWORD, MINIO_ROOT_PASSWORD, REDIS_PASSWORD, DATABASE_URL ...)
SECRET_WORDS = ("PASSWORD", "PASSWD", "PASSPHRASE", "SECRET", "TOKEN", "CREDENTIAL", "ACCESS_KEY", "API_KEY",
                "PRIVATE_KEY", "ACCESS_KEY_ID")
SECRET_SUFFIXES = ("_DSN", "_PIN", "DATABASE_URL")


def secret_env_names() -> frozenset[str]:
    """The DIGITIZE_* variables that override a secret-bearing setting."""
    return frozenset(f"{ENV_PREFIX}{section}_{key}".upper() for section, key in SECRET_SETTINGS)


def is_secret_key(section: str, key: str) -> bool:
    """Whether the setting [SECTION] KEY holds or may carry a secret."""
    return (section, key) in SECRET_SETTINGS or is_secret_env(f"{section}_{key}".upper())


def is_secret_env(name: str) -> bool:
    """Whether the environment variable NAME holds or may carry a secret (by our list or its name)."""
    upper = name.upper()
    return upper in secret_env_names() or any(w in upper for w in SECRET_WORDS) or upper.endswith(SECRET_SUFFIXES)
