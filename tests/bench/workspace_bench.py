#!/usr/bin/env python3
"""Benchmark: workspaces and the Python agents in the mesh.

Starts one loopback node from the built `coditect` binary and measures:
1. `coditect submit --workspace` of a 2,000-file tree, cold (every file
   uploaded), then again with 10 files changed (only those are sent), then
   unchanged: wall time of the whole submit and the files the node lacked;
2. the analyzer and the tester (`builtin:analyzer` -> `builtin:tester`) on a
   ~10,000-line Python project from gen_pyproject.py: each task's guest wall
   time and the mission end to end (submit to `succeeded`), and the same
   scripts run by the host's python3 on the same project, for scale.
Usage: workspace_bench.py PATH/TO/coditect
"""
import json, os, re, subprocess, sys, tempfile, time, urllib.request

BIN = sys.argv[1]
HERE = os.path.dirname(os.path.abspath(__file__))


def call(api, path, timeout=60):
    with urllib.request.urlopen(api + path, timeout=timeout) as answer:
        return json.loads(answer.read())


def many_files(root, count):
    """`count` source-like files of 1-4 KiB in nested folders."""
    for i in range(count):
        folder = os.path.join(root, f"pkg{i % 20:02d}", f"sub{i % 7}")
        os.makedirs(folder, exist_ok=True)
        body = "".join(f"def f_{i}_{j}(x):\n    return x * {j} + {i}\n\n" for j in range(20 + i % 60))
        with open(os.path.join(folder, f"mod_{i:05d}.py"), "w") as f:
            f.write(body)


def submit(api, mission, workspace, wait=False):
    args = [BIN, "submit", mission, "--api", api, "--workspace", workspace]
    if wait:
        args.append("--wait")
    t0 = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - t0
    assert done.returncode == 0, done.stderr
    lacked = re.search(r"the node lacks (\d+) \((\d+) bytes\)", done.stderr)
    return done.stdout.split()[0], elapsed, int(lacked.group(1)), int(lacked.group(2))


def main():
    root = tempfile.mkdtemp(prefix="workspace-bench-")
    log = open(f"{root}/node.log", "w")
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
        while call(api, "/api/status").get("runtimes", {}).get("python", {}).get("state") != "ready":
            time.sleep(0.1)

        tree = f"{root}/tree"
        many_files(tree, 2000)
        total_bytes = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(tree) for f in fs)
        noop = f"{root}/noop.toml"
        with open(noop, "w") as f:
            f.write('name = "upload"\n[[task]]\nid = "t"\nmodule = "builtin:noop"\n')
        _, cold, lacked, sent = submit(api, noop, tree)
        print(f"2000 files ({total_bytes} bytes), cold: {cold:.2f} s, sent {lacked} files ({sent} bytes)")
        for i in range(10):
            path = os.path.join(tree, f"pkg{i % 20:02d}", f"sub{i % 7}", f"mod_{i:05d}.py")
            with open(path, "a") as f:
                f.write("# changed\n")
        _, warm, lacked, sent = submit(api, noop, tree)
        print(f"10 files changed: {warm:.2f} s, sent {lacked} files ({sent} bytes)")
        _, same, lacked, sent = submit(api, noop, tree)
        print(f"unchanged: {same:.2f} s, sent {lacked} files ({sent} bytes)")

        project = f"{root}/project"
        subprocess.run([sys.executable, os.path.join(HERE, "gen_pyproject.py"), project, "10000"],
                       check=True, capture_output=True)
        lines = sum(open(os.path.join(d, f)).read().count("\n")
                    for d, _, fs in os.walk(project) for f in fs if f.endswith(".py"))
        agents = f"{root}/agents.toml"
        with open(agents, "w") as f:
            f.write('name = "agents"\n[[task]]\nid = "analyze"\nmodule = "builtin:analyzer"\n'
                    '[[task]]\nid = "test"\nmodule = "builtin:tester"\nneeds = ["analyze"]\n')
        mission, end_to_end, _, _ = submit(api, agents, project, wait=True)
        view = call(api, f"/api/missions/{mission}")
        walls = {t["id"]: t["result"]["wall_ms"] for t in view["tasks"]}
        fuel = {t["id"]: t["result"]["fuel_used"] for t in view["tasks"]}
        tests = json.loads(urllib.request.urlopen(
            f"{api}/api/missions/{mission}/tasks/test/output/tests.json").read())
        report = json.loads(urllib.request.urlopen(
            f"{api}/api/missions/{mission}/tasks/analyze/output/report.json").read())
        print(f"project: {lines} Python lines, {report['summary']['functions']} functions, "
              f"{tests['total']} tests ({tests['passed']} passed)")
        print(f"analyzer guest wall {walls['analyze']} ms (fuel {fuel['analyze']}), "
              f"tester guest wall {walls['test']} ms (fuel {fuel['test']}), "
              f"mission end to end (submit with upload to succeeded) {end_to_end:.2f} s")
        # The same agents on the host's own python3, for scale.
        agents_dir = os.path.join(HERE, "..", "..", "agents")
        for name in ("analyzer", "tester"):
            out = f"{root}/host-{name}"
            os.makedirs(out)
            t0 = time.perf_counter()
            subprocess.run([sys.executable, os.path.join(agents_dir, f"{name}.py"), "--root", project,
                            "--out", out], check=True, capture_output=True)
            print(f"host {sys.version.split()[0]} {name}: {(time.perf_counter() - t0) * 1000:.0f} ms")
    finally:
        node.terminate()
        node.wait(timeout=30)


main()
