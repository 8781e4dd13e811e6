# Sourced by the scripts: one cargo target directory shared by every checkout
# and by CI, so only what changed rebuilds.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/coditect-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
CODITECT_BIN="$CARGO_TARGET_DIR/debug/coditect"
export CODITECT_BIN
# CPython 3.12 for WASI (`builtin:python`), fetched and checked by setup.sh.
export CODITECT_PYTHON_WASM="${CODITECT_PYTHON_WASM:-$HOME/.cache/coditect/runtimes/python-3.12.0.wasm}"
