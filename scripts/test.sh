#!/usr/bin/env bash
# Runs every check and test: the Python agents' unit tests, format, clippy
# (warnings are errors), then the whole suite (unit, property, storage suite, black-box multi-process tests).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh

echo "== the Python agents' own tests (host python3)" >&2
PYTHONDONTWRITEBYTECODE=1 python3 -m unittest discover -s agents/tests
echo "== cargo fmt --check" >&2
cargo fmt --all -- --check
echo "== cargo clippy" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== build the coditect binary for the black-box tests" >&2
cargo build --locked -p coditect-node --bin coditect -p coditect-simulation --bin coditect-sim
echo "== tests" >&2
cargo nextest run --workspace --locked --no-fail-fast --failure-output final "$@"
