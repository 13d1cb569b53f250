#!/usr/bin/env bash
# Installs everything digitize and its tests need on Debian 12, as root, idempotently:
# system packages, the venv at .venv, veraPDF (Maven Central) and a cached MinIO server binary.
# Usage: bash scripts/setup.sh [--no-servers]   (--no-servers skips MinIO/PostgreSQL, for the demo)
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${DIGITIZE_CACHE:-$HOME/.cache/digitize}"
mkdir -p "$CACHE/bin"
servers=1; [ "${1:-}" = "--no-servers" ] && servers=0
say() { printf '== %s\n' "$*" >&2; }

APT_PKGS=(tesseract-ocr tesseract-ocr-vie tesseract-ocr-eng tesseract-ocr-osd poppler-utils
          libjbig2dec0 jbig2dec fonts-liberation2 fonts-dejavu-core python3-venv default-jre-headless)
[ $servers = 1 ] && APT_PKGS+=(postgresql postgresql-contrib maven golang-go)
missing=()
for p in "${APT_PKGS[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
# golang-go/maven are only fallbacks when the machine has no go/mvn of its own
if command -v go >/dev/null; then missing=("${missing[@]/golang-go}"); fi
if command -v mvn >/dev/null; then missing=("${missing[@]/maven}"); fi
if command -v java >/dev/null; then missing=("${missing[@]/default-jre-headless}"); fi
missing=($(printf '%s\n' "${missing[@]}" | grep -v '^$' || true))
if [ ${#missing[@]} -gt 0 ]; then
  say "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then say "creating .venv"; "$PY" -m venv .venv; fi
if ! .venv/bin/python -c "import digitize, storage, pipelines, pytest, ocrmypdf" 2>/dev/null \
   || [ pyproject.toml -nt .venv/.digitize-installed ]; then
  say "pip install -e .[test,bench]"
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -e ".[test,bench]"
  touch .venv/.digitize-installed
fi

# veraPDF: resolve once from Maven Central, keep the classpath; digitize/verapdf.py reads it.
if [ ! -s "$CACHE/verapdf.classpath" ] || ! grep -q greenfield "$CACHE/verapdf.classpath"; then
  say "resolving veraPDF from Maven Central"
  (cd scripts/verapdf && mvn -q -B dependency:build-classpath -Dmdep.outputFile="$CACHE/verapdf.classpath" >/dev/null)
fi

if [ $servers = 1 ] && [ ! -x "$CACHE/bin/minio" ]; then
  say "building MinIO server (go install, cached in $CACHE/bin; takes a few minutes once)"
  GOBIN="$CACHE/bin" GOFLAGS=-mod=mod go install github.com/minio/minio@latest
fi
say "setup done"
