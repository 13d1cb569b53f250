#!/usr/bin/env bash
# Installs everything digitize and its tests need on Debian 12, as root, idempotently:
# system packages, the venv at .venv, veraPDF (Maven Central), the page workers' Tesseract build and a
# cached MinIO server binary.
# Usage: bash scripts/setup.sh [--no-servers]   (--no-servers skips MinIO/PostgreSQL, for the demo)
set -euo pipefail
cd "$(dirname "$0")/.."
servers=1; [ "${1:-}" = "--no-servers" ] && servers=0
say() { printf '== %s\n' "$*" >&2; }
. scripts/system-copy.sh  # trusted_path, root_home, root_environment, choose_cache, make_cache, system_copy
# root with another account's environment (sudo -E, su): its HOME, caches (Maven's ~/.m2, Go's, ours) and
# build settings would run and be installed as root's; root's own are used instead (review rev17ops M5,
# review2 r2ops N4, N5)
root_environment
choose_cache
make_cache

APT_PKGS=(tesseract-ocr tesseract-ocr-vie tesseract-ocr-eng tesseract-ocr-osd poppler-utils
          libjbig2dec0 jbig2dec fonts-liberation2 fonts-dejavu-core python3-venv curl unzip ca-certificates
          softhsm2 opensc)
# FreeMono/FreeSerif: the generated degraded pages' fonts (tests/degraded.py)
APT_PKGS+=(fonts-freefont-ttf)
[ $servers = 1 ] && APT_PKGS+=(postgresql postgresql-contrib)
# the portal's browser tests drive Debian's chromium through Playwright (no browser download)
[ $servers = 1 ] && APT_PKGS+=(chromium)
# a go of any age (Debian's) knows which Go module proxy this machine uses: `go env GOPROXY`
[ $servers = 1 ] && ! command -v go >/dev/null && APT_PKGS+=(golang-go)
# the Celery broker of queue mode (tests/pipelines/test_queue_faults.py starts its own on loopback)
[ $servers = 1 ] && APT_PKGS+=(redis-server)
# bench/convert_bench.py: OCRmyPDF's PDF/A output needs Ghostscript; samples/hard/make_samples.py sets FreeFont
APT_PKGS+=(ghostscript fonts-freefont-ttf)
# scripts/build-tesseract.sh: Debian's Tesseract source built again for the page workers (DIGITIZE_BUILD_TESSERACT=0: not)
[ "${DIGITIZE_BUILD_TESSERACT:-1}" != 0 ] && [ "$(id -u)" = 0 ] \
  && APT_PKGS+=(dpkg-dev g++ make automake libtool autoconf-archive pkg-config libleptonica-dev)
# Java and Maven (veraPDF) only when the machine has none of its own
command -v javac >/dev/null || APT_PKGS+=(default-jdk-headless)
command -v mvn >/dev/null || APT_PKGS+=(maven)
# systemd-analyze rates deploy/digitize-watch.service's sandbox (tests/test_deploy.py)
command -v systemd-analyze >/dev/null || APT_PKGS+=(systemd)
missing=()
for p in "${APT_PKGS[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
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
# Byte-compile the editable checkout, as pip does for an installed wheel: with PYTHONDONTWRITEBYTECODE set
# (common on servers and in CI) every `digitize run` would otherwise compile its modules again (~0.06 CPU-s).
# Python checks each .pyc against its source, so a stale one is never used.
.venv/bin/python -m compileall -q -j 0 digitize storage pipelines web >/dev/null || true

# veraPDF: resolve once from Maven Central, keep the classpath; digitize/verapdf.py reads it.
if [ ! -s "$CACHE/verapdf.classpath" ] || ! grep -q greenfield "$CACHE/verapdf.classpath"; then
  say "resolving veraPDF from Maven Central"
  (cd scripts/verapdf && mvn -q -B dependency:build-classpath -Dmdep.outputFile="$CACHE/verapdf.classpath" >/dev/null)
fi
# An OpenID Connect provider for the portal's single sign-on test: NAV's mock-oauth2-server (MIT), resolved
# from Maven Central like veraPDF; tests/web/test_oidc.py starts it on loopback from this classpath.
if [ $servers = 1 ] && { [ ! -s "$CACHE/oidc-provider.classpath" ] || [ scripts/oidc/pom.xml -nt "$CACHE/oidc-provider.classpath" ]; }; then
  say "resolving the test OIDC provider from Maven Central"
  (cd scripts/oidc && mvn -q -B dependency:build-classpath -Dmdep.outputFile="$CACHE/oidc-provider.classpath" >/dev/null)
fi
# The streaming validator (one JVM per batch instead of one per file), as a jar (class-data
# sharing archives classes from jars only).
JAR="$CACHE/digitize-validator.jar"
if command -v javac >/dev/null && { [ ! -f "$JAR" ] || [ scripts/verapdf/DigitizeValidator.java -nt "$JAR" ]; }; then
  say "compiling the streaming veraPDF validator"
  build=$(mktemp -d)
  javac -d "$build" -cp "$(cat "$CACHE/verapdf.classpath")" scripts/verapdf/DigitizeValidator.java
  jar cf "$JAR.tmp" -C "$build" . && mv "$JAR.tmp" "$JAR" && rm -rf "$build"
fi
# A copy every user can run (a service account cannot read root's ~/.m2 or cache): root's, read-only
# to others; digitize/verapdf.py falls back to it. Unchanged files are left alone (their times name
# the resident validator).
SYSTEM_DIR="${DIGITIZE_SYSTEM_DIR:-/usr/local/lib/digitize}"
if [ "$(id -u)" = 0 ] && [ -f "$JAR" ]; then
  system_copy "$CACHE" "$SYSTEM_DIR" \
    || say "no system-wide copy of veraPDF (above): every account uses its own cache"  # only root's own files
fi

# Tesseract for the page workers (root's, read-only to others, beside the veraPDF copy): Debian's source
# package of the installed version, built -O3 with LTO, without OpenMP, line images kept as pixels (the
# same hOCR); digitize/tesslib.py uses it while Debian's library is the one it was built from. A failed
# build is not fatal: Debian's library is used.
if [ "${DIGITIZE_BUILD_TESSERACT:-1}" != 0 ] && [ "$(id -u)" = 0 ]; then
  bash scripts/build-tesseract.sh "$SYSTEM_DIR/tesseract" \
    || say "could not build Tesseract (above): digitize uses Debian's library (~1/3 more Tesseract CPU)"
fi

# Go >= 1.21 fetches whatever toolchain MinIO's go.mod asks for (GOTOOLCHAIN=auto), checked against the Go
# checksum database. Debian 12 ships 1.19: then the Go team's toolchain module is fetched by that go itself
# (`go mod download`, from the module proxy go is configured for, no host written here), which checks it
# against the checksum database too before it is run (review rev17ops L5: it was curl'ed and run unchecked).
GO_TOOLCHAIN=1.24.5
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c  # MinIO's tree of 2026-02-12: pinned, not @latest (L5)
ensure_go() {
  if command -v go >/dev/null && go version | grep -qE 'go1\.(2[1-9]|[3-9][0-9])'; then return; fi
  local dir="$CACHE/go$GO_TOOLCHAIN" src work
  if [ ! -x "$dir/bin/go" ]; then
    say "fetching Go $GO_TOOLCHAIN toolchain through the Go module proxy (checked against the checksum database)"
    work="$(mktemp -d)"
    src="$(cd "$work" && GOFLAGS=-mod=mod go mod download -json "golang.org/toolchain@v0.0.1-go$GO_TOOLCHAIN.linux-amd64" \
           | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
    rmdir "$work"  # outside any module: go wrote nothing there (review2 r2ops N10)
    { [ -n "$src" ] && [ -f "$src/bin/go" ]; } || { echo "setup.sh: go mod download gave no Go $GO_TOOLCHAIN" >&2; exit 1; }
    rm -rf "$dir.tmp" && cp -r "$src" "$dir.tmp" && chmod -R u+w "$dir.tmp" \
      && chmod +x "$dir.tmp"/bin/* "$dir.tmp"/pkg/tool/*/* && mv "$dir.tmp" "$dir"
  fi
  export PATH="$dir/bin:$PATH"
}
if [ $servers = 1 ] && [ ! -x "$CACHE/bin/minio" ]; then
  ensure_go
  say "building MinIO server (go install, cached in $CACHE/bin; takes a few minutes once)"
  GOBIN="$CACHE/bin" GOTOOLCHAIN=auto GOFLAGS=-mod=mod go install "github.com/minio/minio@$MINIO_VERSION"
fi
# The portal benchmark's load generator (bench/loadgen: Go standard library only, nothing is fetched);
# bench/portal_bench.py rebuilds it too when its source is newer.
if [ $servers = 1 ] && command -v go >/dev/null && { [ ! -x "$CACHE/bin/digitize-loadgen" ] \
     || [ -n "$(find bench/loadgen -newer "$CACHE/bin/digitize-loadgen" -type f)" ]; }; then
  say "building the portal benchmark's load generator (go build, cached in $CACHE/bin)"
  (cd bench/loadgen && go build -o "$CACHE/bin/digitize-loadgen" .)
fi
say "setup done"
