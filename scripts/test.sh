#!/usr/bin/env bash
# The README's test command: set up everything the tests need, then run the whole suite.
# Servers (MinIO, PostgreSQL) are started by the tests themselves on loopback ports in temp dirs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export DIGITIZE_MINIO_BIN="${DIGITIZE_MINIO_BIN:-${DIGITIZE_CACHE:-$HOME/.cache/digitize}/bin/minio}"
exec .venv/bin/python -m pytest -ra "$@"
