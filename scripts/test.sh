#!/usr/bin/env bash
# The README's test command: set up everything the tests need, then run the whole suite.
# Servers (MinIO, PostgreSQL) are started by the tests themselves on loopback ports in temp dirs.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/system-copy.sh
test_environment  # setup.sh's environment and cache, so the MinIO it builds is the one tested (review2 r2ops N6)
bash scripts/setup.sh
exec .venv/bin/python -m pytest -ra "$@"
