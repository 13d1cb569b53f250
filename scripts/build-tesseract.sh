#!/usr/bin/env bash
# Builds the installed Tesseract again from Debian's own source package, faster, for digitize's page
# workers (digitize/tesslib.py loads it; the `tesseract` command and every other program keep Debian's).
#   bash scripts/build-tesseract.sh OUT_DIR   (as setup.sh runs it; ~4 minutes on 2 cores, once per version)
#
# Why: ~65 % of a page's CPU is Tesseract. Debian builds it -O2, without link-time optimisation, with
# OpenMP (a thread-pool call per LSTM time step even at OMP_THREAD_LIMIT=1) and every internal call
# through the PLT, and writes every text line's image to PNG and reads it back before the LSTM sees it.
# The same source, Debian patches and hardening flags built -O3 with LTO, -fno-semantic-interposition,
# without OpenMP and with upstream's switch that hands line images over as they are give the same hOCR
# (words, boxes, confidences: no -ffast-math, no fused multiply-adds, so the floating-point results
# are Debian's) for ~25 % less Tesseract CPU. (Profile-guided on the samples: ~3 % more, for a second
# build and a training run: not done.)
# scripts/tesseract/*.patch then make the layout analysis's hot loops cheaper without changing a bit
# of their results (faster-layout.patch: the line finder's openings by leptonica's own DWA code,
# the grey image's histogram and threshold): ~6 % less Tesseract CPU on our OCR images. A patch
# that no longer applies (a new Debian version) is said and left out: the build is then as before.
# tests/test_tesslib.py holds the build's hOCR equal to Debian's library's, on pages with ruled lines
# at several resolutions too.
# On an x86-64 processor with AVX-512 (x86-64-v4) or at least AVX2, FMA and BMI2 (v3: every Intel since
# 2013, AMD since 2015) the code is made for that level and tuned for this processor (with the patch,
# ~17 % less Tesseract CPU here, AVX-512), with -ffp-contract=off: GCC would otherwise fuse a*b+c into
# one FMA, rounded once instead of twice, and the numbers would no longer be Debian's. The stamp names
# the flags the build needs (requires=...): tesslib.py loads it only on a processor that has them, so a
# system moved to an older one falls back to Debian's library (and setup.sh, run again, builds for it).
#
# Trust: apt fetches the source of exactly the installed version and checks it against the signed
# release files (no host is written here: the deb-src entries are the machine's own deb entries, in a
# private apt state that leaves the system's untouched). OUT_DIR gets libtesseract.so.5 and a stamp
# naming the Debian library it replaces (size, time): tesslib.py uses the build only while that library
# is unchanged, so a Debian update (a security fix) is never shadowed by an older build.
set -euo pipefail
# x86_level [CPUINFO]: "x86-64-v4 FLAGS..." or "x86-64-v3 FLAGS...", the highest x86-64 level whose flags
# (as /proc/cpuinfo names them; "abm" is LZCNT, "pni" SSE3) the first "flags" line of CPUINFO has all of, or
# nothing (not x86-64, no such file). v4 adds AVX-512 to v3's AVX2, FMA, BMI. sed quits after that line
# itself: "| head -1" got sed a SIGPIPE on a machine with ~40 CPUs, and pipefail ended the build.
x86_level() {
  local v3="avx avx2 bmi1 bmi2 f16c fma abm movbe xsave cx16 lahf_lm popcnt pni sse4_1 sse4_2 ssse3" flags level
  local v4="$v3 avx512f avx512bw avx512cd avx512dq avx512vl"
  flags=" $(sed -n '/^flags[[:space:]]*:/{s/^flags[[:space:]]*:[[:space:]]*//p;q}' "${1:-/proc/cpuinfo}" 2>/dev/null || true) "
  for level in v4 v3; do
    local wanted="${!level}" flag missing=""
    for flag in $wanted; do
      case "$flags" in *" $flag "*) ;; *) missing=1 ;; esac
    done
    if [ -z "$missing" ]; then echo "x86-64-$level $wanted"; return 0; fi
  done
}
if [ "${1:-}" = --x86-level ]; then x86_level "${2:-}"; exit 0; fi  # for the tests: what a build would use
out="${1:?usage: build-tesseract.sh OUT_DIR}"
here="$(cd "$(dirname "$0")/.." && pwd)"  # the checkout: scripts/system-copy.sh
say() { printf '== %s\n' "$*" >&2; }
trap 'echo "build-tesseract.sh: failed at line $LINENO" >&2' ERR
. "$here/scripts/system-copy.sh"  # trusted_path, root_environment, make_dirs
root_environment  # run alone under sudo -E too: the invoker's APT_CONFIG, CXX, MAKEFLAGS... never reach root's build
# OUT_DIR: root's alone, reached through no link (trusted_path checks the resolved path; a link as written
# could be re-pointed by the account owning its folder while we build)
unlinked() { [ "$(realpath -m -s -- "$out")" = "$(realpath -m -- "$out")" ]; }
trusted_out() { trusted_path "$out" && unlinked; }
if ! unlinked; then
  echo "build-tesseract.sh: refusing $out: it is reached through a link" >&2; exit 1
elif ! trusted_path "$out"; then
  echo "build-tesseract.sh: refusing $out: it or a folder above belongs to another account or is writable by others" >&2
  exit 1
fi

pkg="libtesseract5:$(dpkg --print-architecture)"
status="$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)"
[ "$status" = installed ] || { echo "build-tesseract.sh: no installed $pkg to build again" >&2; exit 1; }
version="$(dpkg-query -W -f='${source:Version}' "$pkg")"
source_pkg="$(dpkg-query -W -f='${source:Package}' "$pkg")"
system_lib="$(readlink -f "$(dpkg -L "$pkg" | grep -m1 '/libtesseract\.so\.5$' || true)")"
[ -n "$version" ] && [ -n "$source_pkg" ] && [ -f "$system_lib" ] \
  || { echo "build-tesseract.sh: $pkg has no libtesseract.so.5 to build again" >&2; exit 1; }
patches=("$here"/scripts/tesseract/*.patch)
[ -f "${patches[0]}" ] || patches=()
march="" requires=""
read -r march requires <<<"$(x86_level)" || true  # nothing printed: no level, Debian-level code
[ -z "$march" ] || march="-march=$march -mtune=native"
stamp="version=$version
system_library=$system_lib
size=$(stat -c %s "$system_lib")
mtime=$(stat -c %Y "$system_lib")
patches=$(cat /dev/null "${patches[@]}" | sha256sum | cut -c1-16)
requires=$requires"
if [ -f "$out/libtesseract.so.5" ] && [ "$(cat "$out/stamp" 2>/dev/null)" = "$stamp" ]; then exit 0; fi
# The models' folder compiled in, as Debian's (debian/rules): the command's own, never TESSDATA_PREFIX's
datadir="$(env -u TESSDATA_PREFIX tesseract --list-langs 2>&1 | sed -n 's/.*"\(.*\)\/tessdata\/\?".*/\1/p' | head -1)"
if [ -z "$datadir" ] || ! trusted_path "$datadir/tessdata"; then
  echo "build-tesseract.sh: Tesseract's models folder (${datadir:-none found}) is not root's alone" >&2; exit 1
fi
say "building Tesseract $version from Debian's source for the page workers (once per version; a few minutes)"

# root's, 0700, under /var/tmp whatever TMPDIR says (su without "-" keeps the invoker's): apt fetches here as
# root (not as its _apt sandbox user, who could swap the checked files before dpkg-source unpacks them, or
# the tree while we build), and the compiler's own temporary files go here too
work="$(mktemp -d -p /var/tmp digitize-tesseract.XXXXXX)"
lib_tmp="" stamp_tmp=""
trap 'rm -rf "$work"; rm -f "$lib_tmp" "$stamp_tmp"' EXIT
trusted_path "$work" || { echo "build-tesseract.sh: refusing the work folder $work" >&2; exit 1; }
export TMPDIR="$work"
# A private apt state with deb-src twins of this machine's own deb entries.
mkdir -p "$work/apt/parts" "$work/apt/lists/partial" "$work/src"
for f in /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] && sed -E 's/^Types:.*/Types: deb-src/' "$f" > "$work/apt/parts/$(basename "$f")"
done
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
  [ -f "$f" ] && sed -nE 's/^deb[[:space:]]+/deb-src /p' "$f" > "$work/apt/parts/$(basename "$f").list"
done
apt_private=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$work/apt/parts"
             -o "Dir::State::Lists=$work/apt/lists" -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache=")
log="$work/build.log"
failed() { tail -n 15 "$log" >&2; echo "build-tesseract.sh: $1 failed (above)" >&2; exit 1; }
apt-get "${apt_private[@]}" -q update >> "$log" 2>&1 || failed "apt-get update (deb-src)"
(cd "$work/src" && apt-get "${apt_private[@]}" -q source --only-source "$source_pkg=$version") >> "$log" 2>&1 \
  || failed "apt-get source $source_pkg=$version"
tree="$(find "$work/src" -mindepth 1 -maxdepth 1 -type d | head -1)"
[ -n "$tree" ] && [ -f "$tree/configure.ac" ] || failed "unpacking $source_pkg"
for patch_file in "${patches[@]}"; do  # each whole or not at all: a dry run first
  # --fuzz=0: a hunk whose context changed (a new Debian version touching these functions) is not applied
  if patch -d "$tree" -p1 --forward --batch --fuzz=0 --dry-run < "$patch_file" >> "$log" 2>&1; then
    patch -d "$tree" -p1 --forward --batch --fuzz=0 < "$patch_file" >> "$log" 2>&1 || failed "applying $(basename "$patch_file")"
  else
    say "$(basename "$patch_file") does not apply to Tesseract $version: built without it"
  fi
done

# Debian's configuration (debian/rules) and hardening flags (hardening=+all: BIND_NOW too); -O3, LTO and
# no OpenMP added, -g left out.
export DEB_BUILD_MAINT_OPTIONS=hardening=+all
cxxflags="$(dpkg-buildflags --get CXXFLAGS | sed -E 's/(^| )-g( |$)/ /; s/-O2/-O3/; s/-ffile-prefix-map=[^ ]*//')"
cxxflags="$cxxflags -fPIC -fno-semantic-interposition -flto=auto"
# The level and -ffp-contract=off go to AM_CXXFLAGS, which automake gives only to the sources without
# flags of their own: Tesseract's SIMD files (src/arch: -mavx512f, -mfma...) keep Debian's flags, so the
# AVX-512 float dot product keeps the fused multiply-add Debian's build has in its tail (float models,
# tessdata_best, read with it; -ffp-contract=off there changed their numbers).
am_cxxflags="\$(OPENMP_CXXFLAGS) $march -ffp-contract=off"
# TESSERACT_IMAGEDATA_AS_PIX (upstream's switch): each text line's image is handed to the LSTM as it
# is, not written to PNG and read back (that round trip, lossless, was ~10 % of Tesseract's CPU).
cppflags="$(dpkg-buildflags --get CPPFLAGS) -DTESSDATA_PREFIX='\"$datadir\"' -DTESSERACT_IMAGEDATA_AS_PIX"
ldflags="$(dpkg-buildflags --get LDFLAGS) -flto=auto"
jobs="$(nproc)"
if ! (cd "$tree" && ./autogen.sh \
        && ./configure --disable-tessdata-prefix --disable-openmp --disable-graphics --disable-doc \
             --without-archive --without-curl CXXFLAGS="$cxxflags" CPPFLAGS="$cppflags" LDFLAGS="$ldflags" \
        && make -j"$jobs" AM_CXXFLAGS="$am_cxxflags" libtesseract.la) >> "$log" 2>&1; then
  failed "building"
fi

make_dirs -m 0755 "$out" || { echo "build-tesseract.sh: refusing $out: a link, a file or a folder another account can change is in its way" >&2; exit 1; }
trusted_out || { echo "build-tesseract.sh: refusing $out: another account made or can change it" >&2; exit 1; }
built="$(readlink -f "$tree/.libs/libtesseract.so.5")"  # the versioned file (root's tree, 0700)
case "$built" in "$tree"/.libs/*) [ -f "$built" ] ;; *) false ;; esac || failed "finding the built library"
# new names made by mktemp in OUT_DIR (never a fixed .tmp another run could be writing), then renamed over;
# one command per line: under set -e a failure inside an && list would pass unnoticed
lib_tmp="$(mktemp "$out/.libtesseract.XXXXXX")"
stamp_tmp="$(mktemp "$out/.stamp.XXXXXX")"
cat "$built" > "$lib_tmp"
printf '%s\n' "$stamp" > "$stamp_tmp"
chmod 0644 "$lib_tmp" "$stamp_tmp"
mv -f "$lib_tmp" "$out/libtesseract.so.5"
mv -f "$stamp_tmp" "$out/stamp"
say "Tesseract built: $out/libtesseract.so.5"
