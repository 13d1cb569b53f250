#!/usr/bin/env bash
# Root's trust rules for setup.sh (review rev17ops M5), sourced by it; run alone, it makes the system copy:
#   bash scripts/system-copy.sh CACHE SYSTEM_DIR
# A cache another account can change must not become root's: its classpath could list any file
# (/etc/shadow) and its jars would be installed as the trusted copy every account's validator runs.

# trusted_path PATH: PATH (or, if it does not exist yet, the folders it would be made in), every folder above
# it and the file itself belong to root and none is writable by group or others (root's sticky /tmp passes as
# a folder above). The rule of digitize/resident.py's trusted_path, for root.
trusted_path() {
  local path step mode uid
  [ -n "$1" ] || return 1  # realpath "" is "": dirname would circle on "." for ever
  path="$(realpath -m -- "$1")"
  step="$path"
  while :; do
    if [ -e "$step" ] || [ -L "$step" ]; then
      [ -L "$step" ] && return 1
      read -r uid mode < <(stat -c '%u %a' -- "$step")
      [ "$uid" = 0 ] || return 1
      if (( 8#$mode & 8#022 )); then
        [ "$step" != "$path" ] && [ -d "$step" ] && (( 8#$mode & 8#1000 )) || return 1
      fi
    fi
    [ "$step" = / ] && return 0
    step="$(dirname -- "$step")"
  done
}

# root_home: root's own home from the password database (sudo -E or su keep another user's $HOME)
root_home() { getent passwd 0 | cut -d: -f6; }

# root_environment: as root, the environment of another account (sudo -E keeps its HOME, SUDO_UID names it)
# must not configure what root builds, fetches and runs (review2 r2ops N5): its HOME becomes root's, and only
# the names of root_keeps stay (review3 r3ops R1: a deny-list missed JAVA_HOME, which mvn runs as root,
# APT_CONFIG's Pre-Invoke, pip's REQUESTS_CA_BUNDLE...). GOPROXY and the proxy variables stay: what go fetches
# is checked against the checksum database, which no variable left can turn off, and no CA bundle is left to
# let a proxy serve pip other packages. PATH keeps only folders root alone can change.
root_keeps() {
  case "$1" in
    PATH|HOME|USER|LOGNAME|SHELL|PWD|OLDPWD|SHLVL|LANG|LANGUAGE|LC_*|TERM|TZ|CI|DEBIAN_FRONTEND|DIGITIZE_*|_) ;;
    GOPROXY|http_proxy|https_proxy|no_proxy|all_proxy|HTTP_PROXY|HTTPS_PROXY|NO_PROXY|ALL_PROXY|SUDO_*) ;;
    *) return 1;;
  esac
}
root_environment() {
  [ "$(id -u)" = 0 ] || return 0
  local name keep="" dir foreign=0 dirs dropped=""
  if ! trusted_path "$HOME"; then
    echo "== ignoring HOME=$HOME (not root's alone): using $(root_home)" >&2
    export HOME="$(root_home)"; foreign=1
  fi
  [ -n "${SUDO_UID:-}" ] && [ "$SUDO_UID" != 0 ] && foreign=1
  if [ $foreign = 1 ]; then
    for name in $(compgen -e); do
      root_keeps "$name" || { unset "$name"; dropped="$dropped $name"; }
    done
    # names only, never values (review3 r3ops R6: a proxied sudo -E CI then fails in pip or mvn with no hint)
    [ -n "$dropped" ] && echo "== ignoring the invoking account's settings:$dropped" >&2
  fi
  IFS=: read -r -a dirs <<< "$PATH"
  dropped=""
  for dir in "${dirs[@]}"; do
    case "$dir" in /*) trusted_path "$dir" && keep="$keep${keep:+:}$dir" && continue;; esac
    dropped="$dropped $dir"
  done
  [ -n "$dropped" ] && echo "== leaving out of PATH (another account's, writable by others, or relative):$dropped" >&2
  export PATH="${keep:-/usr/sbin:/usr/bin:/sbin:/bin}"
}

# choose_cache: CACHE, the one cache rule of setup.sh and test.sh (review2 r2ops N4, N6): DIGITIZE_CACHE or
# ~/.cache/digitize, resolved (a symlink someone else can re-point is not followed later); as root, one that
# another account can change is replaced by root's own. Exported as DIGITIZE_CACHE for the tests.
choose_cache() {
  CACHE="$(realpath -m -- "${DIGITIZE_CACHE:-$HOME/.cache/digitize}")"
  if [ "$(id -u)" = 0 ] && ! trusted_path "$CACHE"; then
    echo "== ignoring the cache $CACHE (it or a folder above is another account's or writable by others)" >&2
    CACHE="$(realpath -m -- "$HOME/.cache/digitize")"
  fi
  export DIGITIZE_CACHE="$CACHE"
}

# make_dirs [-m MODE] PATH...: each PATH made one folder at a time, never through a link: mkdir makes a name
# without following it, each folder on the way must be a directory and no link, and as root each folder is
# made only in folders root alone can change (trusted_path), which no other account can swap for a link
# afterwards. Callers pass resolved paths (a "." or ".." is taken away as written). mkdir -p and install -d
# followed a link another account planted meanwhile under a sticky /tmp (or in its own folder on the way)
# and made root's folders at its target. Returns 1 at the first name that is a link, not a directory or in
# a folder root does not alone control, and for a name with a newline.
make_dirs() {
  local mode=() target step part parts
  if [ "${1:-}" = -m ]; then mode=(-m "$2"); shift 2; fi
  for target in "$@"; do
    case "$target" in *$'\n'*) return 1;; esac
    target="$(realpath -m -s -- "$target")"
    step=""
    IFS=/ read -r -a parts <<< "${target#/}"
    for part in "${parts[@]}"; do
      step="$step/$part"
      if [ ! -e "$step" ] && [ ! -L "$step" ]; then
        { [ "$(id -u)" != 0 ] || trusted_path "$step"; } || return 1
        mkdir "${mode[@]}" -- "$step" 2>/dev/null || true
      fi
      if [ -L "$step" ] || [ ! -d "$step" ]; then return 1; fi
    done
  done
}

# make_cache: CACHE/bin made (make_dirs); as root, checked again once it exists (a folder someone else made
# under a sticky /tmp between the check and mkdir is refused).
make_cache() {
  if ! make_dirs "$CACHE/bin"; then
    echo "setup.sh: refusing the cache $CACHE: a link, a file or a folder another account can change is in its way" >&2; return 1
  fi
  if [ "$(id -u)" = 0 ] && ! trusted_path "$CACHE/bin"; then
    echo "setup.sh: refusing the cache $CACHE: another account made or can change it" >&2; return 1
  fi
}

# test_environment: what test.sh runs the suite with: setup.sh's environment and cache, and the MinIO that
# setup.sh builds there unless DIGITIZE_MINIO_BIN names one (as root: one only root can change).
test_environment() {
  root_environment
  choose_cache
  if [ -z "${DIGITIZE_MINIO_BIN:-}" ] || { [ "$(id -u)" = 0 ] && ! trusted_path "$DIGITIZE_MINIO_BIN"; }; then
    DIGITIZE_MINIO_BIN="$CACHE/bin/minio"
  fi
  export DIGITIZE_MINIO_BIN
}

# system_copy CACHE SYSTEM_DIR: root's read-only copy of the veraPDF jars (from CACHE's classpath) and of the
# streaming validator, for every account; only regular files that root owns and no one else can change, under
# CACHE or root's ~/.m2, are copied; anything else refuses the whole copy (exit 1, nothing installed).
system_copy() {
  local cache="$1" system="$2" m2 j dest syscp="" jars=()
  m2="$(realpath -m -- "$(root_home)/.m2")"
  trusted_path "$cache" || { echo "setup.sh: refusing the cache $cache: it or a folder above belongs to another account or is writable by others" >&2; return 1; }
  IFS=: read -r -a jars < "$cache/verapdf.classpath" || true  # no newline at its end
  for j in "${jars[@]}" "$cache/digitize-validator.jar"; do
    case "$(realpath -m -- "$j")" in "$m2"/*.jar|"$(realpath -m -- "$cache")"/*.jar) ;;
      *) echo "setup.sh: refusing the system copy: $j is not a jar under $cache or $m2" >&2; return 1;; esac
    if [ -L "$j" ] || [ ! -f "$j" ] || ! trusted_path "$j"; then
      echo "setup.sh: refusing the system copy: $j is not a regular file that only root can change" >&2; return 1
    fi
  done
  system="$(realpath -m -- "$system")"  # as choose_cache: a link root made on the way is taken resolved
  make_dirs -m 0755 "$system/verapdf" && trusted_path "$system/verapdf" \
    || { echo "setup.sh: refusing the system copy: $system/verapdf is reached through a link or is not root's alone" >&2; return 1; }
  for j in "${jars[@]}"; do
    dest="$system/verapdf/$(basename "$j")"
    cmp -s "$j" "$dest" || install -p -m 0644 "$j" "$dest"
    syscp="$syscp${syscp:+:}$dest"
  done
  cmp -s "$cache/digitize-validator.jar" "$system/digitize-validator.jar" \
    || install -p -m 0644 "$cache/digitize-validator.jar" "$system/digitize-validator.jar"
  if [ "$(cat "$system/verapdf.classpath" 2>/dev/null)" != "$syscp" ]; then
    printf '%s\n' "$syscp" > "$system/verapdf.classpath.tmp"
    chmod 0644 "$system/verapdf.classpath.tmp" && mv "$system/verapdf.classpath.tmp" "$system/verapdf.classpath"
  fi
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  system_copy "$1" "$2"
fi
