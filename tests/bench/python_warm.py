#!/usr/bin/env python3
"""Benchmark: Python warm start in the mesh (`print("hi")` end to end).

Starts one loopback node from the built `coditect` binary, waits until its
Python runtime is ready (reporting how long that took and whether the
compiled artifact came from the machine's cache), then submits N one-task
missions running `builtin:python -c 'print("hi")'`, one after another, and
measures each from POST /api/missions to the mission's `succeeded` seen
through the long poll, plus the guest's own wall time from the result.
Usage: python_warm.py PATH/TO/coditect [runs]
"""
import json, statistics, subprocess, sys, tempfile, time, urllib.request

BIN = sys.argv[1]
RUNS = int(sys.argv[2]) if len(sys.argv) > 2 else 50


def call(api, path, data=None, timeout=60):
    request = urllib.request.Request(api + path, data=data)
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        return json.loads(answer.read())


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main():
    root = tempfile.mkdtemp(prefix="python-warm-")
    log = open(f"{root}/node.log", "w")
    started = time.time()
    node = subprocess.Popen([BIN, "node", "--data-dir", f"{root}/n", "--http", "127.0.0.1:0",
                             "--listen", "/ip4/127.0.0.1/udp/0/quic-v1", "--heartbeat-ms", "100"],
                            stdout=log, stderr=log)
    try:
        for _ in range(400):
            try:
                api = "http://" + json.load(open(f"{root}/n/node.json"))["http"]
                break
            except (OSError, ValueError, KeyError):
                time.sleep(0.05)
        while True:
            try:
                python = call(api, "/api/status")["runtimes"].get("python", {})
            except OSError:
                python = {}
            if python.get("state") in ("ready", "failed"):
                break
            time.sleep(0.1)
        print(f"runtime {python.get('state')}: {python.get('ready_after_ms')} ms after start, "
              f"compile/load {python.get('compile_ms')} ms, artifact from cache: {python.get('cached_artifact')}")
        mission = ('name = "hi"\n[[task]]\nid = "hi"\nmodule = "builtin:python"\n'
                   'args = ["-c", "print(\\"hi\\")"]\n[task.expect]\nstdout_contains = "hi"\n').encode()
        total, guest = [], []
        for i in range(RUNS + 3):
            t0 = time.perf_counter()
            mission_id = call(api, "/api/missions", data=mission)["id"]
            version = None
            while True:
                query = f"/api/missions/{mission_id}?wait_ms=10000" + (f"&after={version}" if version else "")
                view = call(api, query)
                version = view["version"]
                if view["state"] in ("succeeded", "failed"):
                    break
            elapsed = (time.perf_counter() - t0) * 1000
            assert view["state"] == "succeeded", view
            if i >= 3:  # the first runs warm the instance pool
                total.append(elapsed)
                guest.append(view["tasks"][0]["result"]["wall_ms"])
        print(f"end to end over {RUNS} runs: p50 {pct(total, 50):.1f} ms, p90 {pct(total, 90):.1f} ms, "
              f"p99 {pct(total, 99):.1f} ms, max {max(total):.1f} ms")
        print(f"guest wall (instantiate + CPython start + print): p50 {pct(guest, 50)} ms, "
              f"p99 {pct(guest, 99)} ms, mean {statistics.mean(guest):.1f} ms")
    finally:
        node.terminate()
        node.wait(timeout=30)


main()
