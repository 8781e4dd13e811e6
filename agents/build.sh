#!/usr/bin/env bash
# Builds the C example agents (analyzer, tester) to WebAssembly from source.
#
#   agents/build.sh [OUT_DIR]      default OUT_DIR: the agents/ directory itself
#
# The WAT agents (noop.wat, echo.wat, math.wat) need no build: the sandbox
# accepts WAT text directly. Needs clang with the wasm32-wasi target and
# Debian's wasi-libc; when they are missing and we run as root, the Debian
# packages are installed with apt-get. Safe to run any number of times.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here}"
mkdir -p "$out"

sysroot=/usr
packages=(clang lld-14 wasi-libc libclang-rt-14-dev-wasm32)

find_builtins() {
    ls /usr/lib/llvm-*/lib/clang/*/lib/wasi/libclang_rt.builtins-wasm32.a 2>/dev/null | head -n 1
}

toolchain_ready() {
    command -v clang >/dev/null 2>&1 &&
        { command -v wasm-ld >/dev/null 2>&1 || ls /usr/bin/wasm-ld-* >/dev/null 2>&1; } &&
        [ -f "$sysroot/lib/wasm32-wasi/libc.a" ] &&
        [ -n "$(find_builtins)" ]
}

if ! toolchain_ready; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "build.sh: installing ${packages[*]}" >&2
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" >&2
    else
        echo "build.sh: missing the wasm32-wasi C toolchain; install: apt-get install ${packages[*]}" >&2
        exit 1
    fi
fi
toolchain_ready || { echo "build.sh: toolchain still incomplete after install" >&2; exit 1; }

# clang finds wasm-ld by its plain name; Debian ships only wasm-ld-14.
linker_dir="$(mktemp -d)"
trap 'rm -rf "$linker_dir"' EXIT
if ! command -v wasm-ld >/dev/null 2>&1; then
    ln -s "$(ls /usr/bin/wasm-ld-* | sort -V | tail -n 1)" "$linker_dir/wasm-ld"
fi

for source in "$here"/analyzer.c "$here"/tester.c; do
    name="$(basename "$source" .c)"
    PATH="$linker_dir:$PATH" clang --target=wasm32-wasi --sysroot="$sysroot" -O2 -std=c11 \
        -Wall -Wextra -Werror -Wno-unused-function \
        -Wl,-z,stack-size=1048576 -Wl,--strip-all -o "$out/$name.wasm.tmp.$$" "$source"
    mv "$out/$name.wasm.tmp.$$" "$out/$name.wasm"
    echo "built $out/$name.wasm ($(stat -c %s "$out/$name.wasm") bytes)"
done
