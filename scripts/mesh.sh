#!/usr/bin/env bash
# Starts a local 3-node mesh on loopback, shows it electing a leader and
# forming its voter set, then drains it (SIGTERM). With --keep the nodes keep
# running (Ctrl-C stops them). Node data lives in ./.mesh/.
set -euo pipefail
cd "$(dirname "$0")/.."
keep=false
[ "${1:-}" = "--keep" ] && keep=true
bash scripts/setup.sh
source scripts/env.sh
cargo build --locked -p coditect-node --bin coditect -p coditect-simulation --bin coditect-sim >&2
bin="$CODITECT_BIN"

root=.mesh
rm -rf "$root"
mkdir -p "$root"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM

start() { # name, extra args...
  local name=$1; shift
  "$bin" node --data-dir "$root/$name" --name "$name" \
    --listen /ip4/127.0.0.1/udp/0/quic-v1 --listen /ip4/127.0.0.1/tcp/0 \
    --http 127.0.0.1:0 "$@" 2>"$root/$name.log" &
  pids+=($!)
  for _ in $(seq 1 200); do [ -s "$root/$name/node.json" ] && break; sleep 0.05; done
  [ -s "$root/$name/node.json" ] || { echo "node $name did not start; see $root/$name.log" >&2; exit 1; }
}
json() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]] if sys.argv[2] != 'listen' else json.load(open(sys.argv[1]))['listen'][0])" "$@"; }

started=$(date +%s%N)
start n1
boot=$(json "$root/n1/node.json" listen)
# The HTTP API needs the mesh's token, which n1 made and keeps in its data
# dir; the CLI reads CODITECT_API_TOKEN (or --api-token-file).
CODITECT_API_TOKEN=$(cat "$root/n1/api-token")
export CODITECT_API_TOKEN
api_get() { curl -s -H "Authorization: Bearer $CODITECT_API_TOKEN" "$@"; }
# The mesh admits only peers with a join token; n1 (the leader) makes one.
token=""
for _ in $(seq 1 100); do
  token=$("$bin" token create --api "http://$(json "$root/n1/node.json" http)" --ttl 10m 2>/dev/null) && break
  sleep 0.1
done
[ -n "$token" ] || { echo "n1 made no join token; see $root/n1.log" >&2; exit 1; }
echo "n1 started a new mesh; others join with --bootstrap $boot --join-token <token from \`coditect token create\`>"
start n2 --bootstrap "$boot" --join-token "$token"
start n3 --bootstrap "$boot" --join-token "$token"
api="http://$(json "$root/n3/node.json" http)"

echo "waiting for a leader and 3 voters..."
for _ in $(seq 1 600); do
  voters=$("$bin" status --api "$api" --json 2>/dev/null | python3 -c "import json,sys; s=json.load(sys.stdin); print(len(s['voters']) if s['leader'] else 0)" 2>/dev/null || echo 0)
  [ "$voters" = "3" ] && break
  sleep 0.1
done
elapsed=$(( ($(date +%s%N) - started) / 1000000 ))
[ "$voters" = "3" ] || { echo "the mesh did not form; logs are in $root/" >&2; exit 1; }
echo "mesh formed in ${elapsed} ms (leader elected, 3 voters)"
echo
"$bin" status --api "$api"
echo
echo "metrics sample:"
api_get "$api/metrics" 2>/dev/null | grep -E '^coditect_(raft_term|raft_is_leader|raft_commit_index|connected_peers|known_nodes) ' || true

echo
echo "building the example agents (C -> wasm32-wasi) and running the example mission"
echo "(agents/example-mission.toml: greet, fan out to three tasks, fan in to summarize):"
bash agents/build.sh >/dev/null
id=$("$bin" submit agents/example-mission.toml --api "$api" --wait)
echo
"$bin" mission "$id" --api "$api"
echo
echo "the fan-in task's report (GET /api/missions/$id/tasks/summarize/output/report.json):"
api_get "$api/api/missions/$id/tasks/summarize/output/report.json" | head -c 600
echo

echo
echo "a code base handed to the mesh: the Python analyzer, then the tester, over"
echo "tests/fixtures/pyprojects/calc uploaded as a workspace (CPython 3.12 in the sandbox):"
cat > "$root/agents.toml" <<'TOML'
name = "analyze and test a project"
[[task]]
id = "analyze"
module = "builtin:analyzer"
[[task]]
id = "test"
module = "builtin:tester"
needs = ["analyze"]
TOML
id=$("$bin" submit "$root/agents.toml" --workspace tests/fixtures/pyprojects/calc --api "$api" --wait)
"$bin" mission "$id" --api "$api"
echo "the analyzer's summary (GET /api/missions/$id/tasks/analyze/output/summary.md):"
api_get "$api/api/missions/$id/tasks/analyze/output/summary.md" | head -n 12
echo "the tester's totals:"
api_get "$api/api/missions/$id/tasks/test/output/tests.json" |
  python3 -c 'import json, sys; d = json.load(sys.stdin); print({k: d[k] for k in ("passed", "failed", "errors", "skipped", "total")})'

if [ -n "${CODITECT_LLM_URL:-}" ]; then
  model=${CODITECT_LLM_MODEL:?set CODITECT_LLM_MODEL too (the model name the provider lists)}
  key_flags=()
  [ -n "${CODITECT_LLM_KEY_ENV:-}" ] && key_flags=(--llm-api-key-env "$CODITECT_LLM_KEY_ENV")
  echo
  echo "a language model at $CODITECT_LLM_URL ($model): n4 joins offering it, and the"
  echo "mesh adds fib(n) with tests to tests/fixtures/pyprojects/mathx (analyze, code, test):"
  start n4 --bootstrap "$boot" --join-token "$token" --llm-url "$CODITECT_LLM_URL" --llm-model "$model" "${key_flags[@]}"
  api4="http://$(json "$root/n4/node.json" http)"
  for _ in $(seq 1 300); do
    offered=$(api_get "$api4/api/status" | python3 -c "import json,sys; print(json.load(sys.stdin)['capabilities']['tags'].get('llm.model', ''))" 2>/dev/null || true)
    [ "$offered" = "$model" ] && break
    sleep 0.2
  done
  if [ "$offered" != "$model" ]; then
    echo "n4 does not offer llm: $(api_get "$api4/api/status" | python3 -c "import json,sys; print(json.load(sys.stdin)['runtimes'].get('llm'))")" >&2
  else
    cat > "$root/fib.toml" <<'TOML'
name = "add fib(n) with tests"
[[task]]
id = "analyze"
module = "builtin:analyzer"
[[task]]
id = "code"
module = "builtin:coder"
needs = ["analyze"]
input = "Add a function fib(n) to mathx (mathx/fib.py) returning the n-th Fibonacci number (fib(0) == 0, fib(1) == 1), with unittest tests in tests/test_fib.py."
[task.limits]
timeout_ms = 600000
[[task]]
id = "test"
module = "builtin:tester"
needs = ["code"]
TOML
    id=$("$bin" submit "$root/fib.toml" --workspace tests/fixtures/pyprojects/mathx --api "$api" --wait) || true
    "$bin" mission "$id" --api "$api" || true
    echo "the change (coditect mission $id --diff):"
    "$bin" mission "$id" --diff --api "$api" || true
  fi
fi

echo
echo "the deterministic simulation: 20 real nodes in one process, the leader killed"
echo "again and again, 60 virtual seconds (replay any run with the same --seed):"
"$bin" sim --nodes 20 --seed 7 --scenario failover --virtual-secs 60 --quiet | grep -v '^  t='

if $keep; then
  echo
  echo "the mesh keeps running (APIs: $(for n in n1 n2 n3; do printf '%s ' "http://$(json "$root/$n/node.json" http)"; done)); Ctrl-C stops it"
  wait
fi
echo
echo "draining the mesh (SIGTERM)"
