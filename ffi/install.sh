#!/usr/bin/env bash
# Builds libfedotp and installs it as a C library:
#
#   PREFIX/include/fedotp.h
#   PREFIX/lib/libfedotp.a                      static library
#   PREFIX/lib/libfedotp.so.X.Y.Z               shared library (soname libfedotp.so.0.Y while
#   PREFIX/lib/libfedotp.so.0.Y -> ...           the major version is 0), with the usual links
#   PREFIX/lib/libfedotp.so -> libfedotp.so.0.Y
#   PREFIX/lib/pkgconfig/fedotp.pc              pkg-config: the shared library
#   PREFIX/lib/pkgconfig/fedotp-static.pc       pkg-config: the static library
#   PREFIX/lib/cmake/fedotp/fedotpConfig.cmake  find_package(fedotp): fedotp::fedotp (shared)
#   PREFIX/lib/cmake/fedotp/fedotpConfigVersion.cmake        and fedotp::fedotp_static
#
# Usage: ffi/install.sh --prefix DIR [--profile release|dev|NAME] [--target-dir DIR]
#        ffi/install.sh --prefix DIR --lib-dir DIR   (install libraries already built there)
#
# The profile defaults to release. The installed tree is relocatable: the pkg-config and CMake
# files find the library relative to themselves. Linux (ELF) only for now: on other systems the
# shared library is copied as it is, without soname links.
set -euo pipefail

usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

prefix=""
profile="release"
target_dir=""
lib_dir=""
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix="${2:?--prefix needs a directory}"; shift 2 ;;
    --profile) profile="${2:?--profile needs a name}"; shift 2 ;;
    --target-dir) target_dir="${2:?--target-dir needs a directory}"; shift 2 ;;
    --lib-dir) lib_dir="${2:?--lib-dir needs a directory}"; shift 2 ;;
    -h|--help) usage 0 ;;
    *) echo "install.sh: unknown argument $1" >&2; usage 2 >&2 ;;
  esac
done
[ -n "$prefix" ] || { echo "install.sh: --prefix is required" >&2; usage 2 >&2; }

ffi_dir="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$ffi_dir")"
cd "$root"

if [ -n "$lib_dir" ]; then
  out="$lib_dir"
else
  target_dir="${target_dir:-${CARGO_TARGET_DIR:-$root/target}}"
  case "$profile" in
    dev) profile_dir="debug" ;;
    *) profile_dir="$profile" ;;
  esac
  out="$target_dir/$profile_dir"
  echo "== building libfedotp ($profile)"
  cargo build --package fedotp-ffi --lib --profile "$profile" --target-dir "$target_dir"
fi

# "path+file:///…/ffi#fedotp-ffi@0.1.0" (or "…#0.1.0"): the version follows the last # or @.
version="$(cargo pkgid --package fedotp-ffi | sed 's/.*[#@]//')"
major="${version%%.*}"
minor="${version#*.}"; minor="${minor%%.*}"
# The ABI's name, as ffi/build.rs gives the soname: 0.MINOR before 1.0, MAJOR after.
if [ "$major" = "0" ]; then abi="0.$minor"; else abi="$major"; fi
# What Rust's standard library needs from the system when libfedotp.a is linked statically
# (rustc --print native-static-libs, on x86_64 and aarch64 Linux with glibc).
native_libs="-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc"

echo "== installing libfedotp $version into $prefix"
install -d "$prefix/include" "$prefix/lib/pkgconfig" "$prefix/lib/cmake/fedotp"
install -m 644 "$root/include/fedotp.h" "$prefix/include/fedotp.h"
install -m 644 "$out/libfedotp.a" "$prefix/lib/libfedotp.a"
if [ -f "$out/libfedotp.so" ]; then
  shared="libfedotp.so.$version"
  install -m 755 "$out/libfedotp.so" "$prefix/lib/$shared"
  ln -sfn "$shared" "$prefix/lib/libfedotp.so.$abi"
  ln -sfn "libfedotp.so.$abi" "$prefix/lib/libfedotp.so"
  soname="libfedotp.so.$abi"
else
  shared="$(cd "$out" && ls libfedotp.dylib libfedotp.dll 2>/dev/null | head -n 1)"
  [ -n "$shared" ] || { echo "install.sh: no shared library in $out" >&2; exit 1; }
  install -m 755 "$out/$shared" "$prefix/lib/$shared"
  soname="$shared"
fi

fill() {
  sed -e "s|@VERSION@|$version|g" -e "s|@MAJOR@|$major|g" -e "s|@MINOR@|$minor|g" \
      -e "s|@SHARED@|$shared|g" -e "s|@SONAME@|$soname|g" -e "s|@NATIVE_LIBS@|$native_libs|g" \
      "$ffi_dir/dist/$1" > "$2"
  chmod 644 "$2"
}
fill fedotp.pc.in "$prefix/lib/pkgconfig/fedotp.pc"
fill fedotp-static.pc.in "$prefix/lib/pkgconfig/fedotp-static.pc"
fill fedotpConfig.cmake.in "$prefix/lib/cmake/fedotp/fedotpConfig.cmake"
fill fedotpConfigVersion.cmake.in "$prefix/lib/cmake/fedotp/fedotpConfigVersion.cmake"
echo "== installed: pkg-config --cflags --libs fedotp, or find_package(fedotp) in CMake"
