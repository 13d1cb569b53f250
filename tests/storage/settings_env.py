"""Settings as DIGITIZE_* environment variables, for code under test that runs in its own process or CLI."""

from __future__ import annotations

import os
from pathlib import Path

from digitize.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def settings_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGITIZE_")}
    env.update(DIGITIZE_DATA_DIR=settings.data_dir, DIGITIZE_STORE_URL=settings.store_url,
               DIGITIZE_STORE_ACCESS_KEY=settings.store.access_key, DIGITIZE_STORE_SECRET_KEY=settings.store.secret_key,
               DIGITIZE_INDEX_DSN=settings.index_dsn, PYTHONPATH=str(ROOT))
    return env
