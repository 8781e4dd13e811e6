#!/usr/bin/env python3
"""Benchmark: the leader's CPU while 200 clients long-poll a mission that
does not change (the issue's "leader CPU with 200 idle long polls").

Starts a 3-node loopback mesh from the built `coditect` binary, submits a
mission whose one task requires a capability no node has (it waits, so the
mission stays unchanged), measures the leader's CPU for a quiet window with
no pollers, then with 200 pollers each holding
`GET /api/missions/ID?after=VERSION&wait_ms=25000` and re-polling when
answered, and prints both (CPU seconds per wall second, from
/proc/PID/stat). Usage: idle_polls.py PATH/TO/coditect [pollers] [seconds]
"""
import json, os, subprocess, sys, tempfile, threading, time, urllib.request

BIN = sys.argv[1]
POLLERS = int(sys.argv[2]) if len(sys.argv) > 2 else 200
SECONDS = float(sys.argv[3]) if len(sys.argv) > 3 else 20.0
TICKS = os.sysconf("SC_CLK_TCK")


def get(api, path, timeout=30):
    with urllib.request.urlopen(api + path, timeout=timeout) as answer:
        return json.loads(answer.read())


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def start(root, name, boot=None):
    args = [BIN, "node", "--data-dir", f"{root}/{name}", "--name", name,
            "--listen", "/ip4/127.0.0.1/udp/0/quic-v1", "--http", "127.0.0.1:0",
            "--heartbeat-ms", "100"]
    if boot:
        args += ["--bootstrap", boot]
    log = open(f"{root}/{name}.log", "w")
    proc = subprocess.Popen(args, stderr=log, stdout=log)
    for _ in range(400):
        try:
            info = json.load(open(f"{root}/{name}/node.json"))
            return proc, info
        except (OSError, ValueError):
            time.sleep(0.05)
    raise SystemExit(f"node {name} did not start; see {root}/{name}.log")


def main():
    root = tempfile.mkdtemp(prefix="idle-polls-")
    procs = []
    try:
        p, first = start(root, "n1")
        procs.append(p)
        for name in ("n2", "n3"):
            procs.append(start(root, name, first["listen"][0])[0])
        apis = []
        for name in ("n1", "n2", "n3"):
            apis.append("http://" + json.load(open(f"{root}/{name}/node.json"))["http"])
        for _ in range(600):
            try:
                status = get(apis[0], "/api/status")
                if status["leader"] and len(status["voters"]) == 3:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        else:
            raise SystemExit("the mesh did not form")
        statuses = [get(api, "/api/status") for api in apis]
        leader = next(i for i, s in enumerate(statuses) if s["role"] == "leader")
        api, pid = apis[leader], procs[leader].pid
        mission = ('name = "idle"\n[[task]]\nid = "waits"\nmodule = "builtin:noop"\n'
                   'requires = ["no-node-has-this"]\n')
        request = urllib.request.Request(api + "/api/missions", data=mission.encode(),
                                         headers={"Content-Type": "application/toml"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            mission_id = json.loads(answer.read())["id"]
        time.sleep(2)
        version = get(api, f"/api/missions/{mission_id}")["version"]

        before = cpu_seconds(pid)
        time.sleep(SECONDS)
        quiet = (cpu_seconds(pid) - before) / SECONDS

        stop = threading.Event()
        answered = [0]
        failed = [0]

        def poll():
            while not stop.is_set():
                try:
                    get(api, f"/api/missions/{mission_id}?after={version}&wait_ms=25000", timeout=40)
                    answered[0] += 1
                except OSError:
                    failed[0] += 1
                    time.sleep(0.5)

        threads = [threading.Thread(target=poll, daemon=True) for _ in range(POLLERS)]
        for thread in threads:
            thread.start()
        time.sleep(3)  # every poller is waiting
        before = cpu_seconds(pid)
        probe_started = time.time()
        slowest = 0.0
        while time.time() - probe_started < SECONDS:
            t = time.time()
            get(api, "/api/status")
            slowest = max(slowest, time.time() - t)
            time.sleep(1)
        polled = (cpu_seconds(pid) - before) / (time.time() - probe_started)
        stop.set()
        print(f"leader CPU, no pollers: {quiet:.3f} s/s")
        print(f"leader CPU, {POLLERS} idle long polls: {polled:.3f} s/s "
              f"(answers {answered[0]}, failures {failed[0]}, slowest /api/status {slowest*1000:.1f} ms)")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)


main()
