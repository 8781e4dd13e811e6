# Sourced by the scripts: one cargo target directory shared by every checkout
# and by CI, so only what changed rebuilds.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/coditect-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
CODITECT_BIN="$CARGO_TARGET_DIR/debug/coditect"
export CODITECT_BIN
