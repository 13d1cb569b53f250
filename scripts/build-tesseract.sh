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
# (words, boxes, confidences: no -ffast-math, no -march, so the floating-point results are Debian's)
# for ~25 % less Tesseract CPU. (Profile-guided on the samples: ~3 % more, for a second build and a
# training run: not done.)
#
# Trust: apt fetches the source of exactly the installed version and checks it against the signed
# release files (no host is written here: the deb-src entries are the machine's own deb entries, in a
# private apt state that leaves the system's untouched). OUT_DIR gets libtesseract.so.5 and a stamp
# naming the Debian library it replaces (size, time): tesslib.py uses the build only while that library
# is unchanged, so a Debian update (a security fix) is never shadowed by an older build.
set -euo pipefail
out="$1"
here="$(cd "$(dirname "$0")/.." && pwd)"  # the checkout: scripts/system-copy.sh
say() { printf '== %s\n' "$*" >&2; }
. "$here/scripts/system-copy.sh"  # trusted_path
if ! trusted_path "$out"; then
  echo "build-tesseract.sh: refusing $out: it or a folder above belongs to another account or is writable by others" >&2
  exit 1
fi

pkg=libtesseract5
version="$(dpkg-query -W -f='${source:Version}' "$pkg")"
source_pkg="$(dpkg-query -W -f='${source:Package}' "$pkg")"
system_lib="$(readlink -f "$(dpkg -L "$pkg" | grep -m1 '/libtesseract\.so\.5$')")"
stamp="version=$version
system_library=$system_lib
size=$(stat -c %s "$system_lib")
mtime=$(stat -c %Y "$system_lib")"
if [ -f "$out/libtesseract.so.5" ] && [ "$(cat "$out/stamp" 2>/dev/null)" = "$stamp" ]; then exit 0; fi
say "building Tesseract $version from Debian's source for the page workers (once per version; a few minutes)"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
chmod 0711 "$work"  # apt's sandbox user fetches into $work/src; nothing here is secret (public source)
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
chown _apt "$work/src" 2>/dev/null || true  # apt downloads as its sandbox user
apt-get "${apt_private[@]}" -q update >> "$log" 2>&1 || failed "apt-get update (deb-src)"
(cd "$work/src" && apt-get "${apt_private[@]}" -q source --only-source "$source_pkg=$version") >> "$log" 2>&1 \
  || failed "apt-get source $source_pkg=$version"
tree="$(find "$work/src" -mindepth 1 -maxdepth 1 -type d | head -1)"
[ -n "$tree" ] && [ -f "$tree/configure.ac" ] || failed "unpacking $source_pkg"

# Debian's configuration (debian/rules) and hardening flags; -O3, LTO and no OpenMP added, -g left out.
datadir="$(tesseract --list-langs 2>&1 | sed -n 's/.*"\(.*\)\/tessdata\/\?".*/\1/p' | head -1)"
cxxflags="$(dpkg-buildflags --get CXXFLAGS | sed -E 's/(^| )-g( |$)/ /; s/-O2/-O3/; s/-ffile-prefix-map=[^ ]*//')"
cxxflags="$cxxflags -fPIC -fno-semantic-interposition -flto=auto"
# TESSERACT_IMAGEDATA_AS_PIX (upstream's switch): each text line's image is handed to the LSTM as it
# is, not written to PNG and read back (that round trip, lossless, was ~10 % of Tesseract's CPU).
cppflags="$(dpkg-buildflags --get CPPFLAGS) -DTESSDATA_PREFIX='\"$datadir\"' -DTESSERACT_IMAGEDATA_AS_PIX"
ldflags="$(dpkg-buildflags --get LDFLAGS) -flto=auto"
jobs="$(nproc)"
if ! (cd "$tree" && ./autogen.sh \
        && ./configure --disable-tessdata-prefix --disable-openmp --disable-graphics --disable-doc \
             --without-archive --without-curl CXXFLAGS="$cxxflags" CPPFLAGS="$cppflags" LDFLAGS="$ldflags" \
        && make -j"$jobs" libtesseract.la) >> "$log" 2>&1; then
  failed "building"
fi

install -d -m 0755 "$out"
install -m 0644 "$(readlink -f "$tree/.libs/libtesseract.so.5")" "$out/libtesseract.so.5.tmp"
mv -f "$out/libtesseract.so.5.tmp" "$out/libtesseract.so.5"
printf '%s\n' "$stamp" > "$out/stamp.tmp" && mv -f "$out/stamp.tmp" "$out/stamp"
say "Tesseract built: $out/libtesseract.so.5"
