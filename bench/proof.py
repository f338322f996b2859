#!/usr/bin/env python3
"""Proof under load (issue 4): baton versus its peers, measured side by side in one run.

    python3 bench/proof.py [--quick] [--out DIR]      (bench/run.sh installs the peers first)

Phases, in this order, all on this machine (127.0.0.1 only, every loop bounded in time):

1. capacity: for each worker count N, the maximum rate of each app (the example worker under
   baton; the Node app under PM2; the WSGI app under gunicorn), keep-alive and
   connection-per-request, with the load client at --concurrency 16 and rate 0 (as fast as
   possible), for CAPACITY_S seconds, CAPACITY_PROBES times: the median. Every later run of that
   app uses 70 % of it.
2. comparison: for each N, mode and scenario, one run: steady load at 70 % of the app's capacity,
   K reloads at a fixed interval in the middle, every request logged (loadgen --log). Scenarios:
     baton    `baton reload` (example worker, readiness notify)
     naive    stop-then-start: SIGTERM the launcher that bound the port (bench/apps/prefork.py
              --bind), wait for it to exit, start a new one that binds the port again
     ssa      `systemd-socket-activate` holds the socket; plain restart of the app
              (prefork.py: SIGTERM every copy, wait, start new ones; no readiness check)
     pm2      PM2 cluster mode, `pm2 reload` (bench/apps/hello.js, wait_ready)
     gunicorn gunicorn 27.0.1, `kill -HUP` on the master (bench/apps/wsgi_hello.py, gthread)
3. target: baton alone, RELOADS reloads at a fixed interval under 70 % load, both modes, each N,
   twice: back to back (every 0.25-0.6 s, so that the reload windows overlap and the whole phase
   is "reloading"), and isolated (every 1.25-1.5 s, each window [start - 0.1 s, end + 0.5 s]
   apart, so that the steady requests between them ran under the same load). Failed requests,
   baton's own overhead per reload, p99 while reloading versus the steady p99 of the same run.
   Then, for N in FLOOR_NS (64), the floor ("neighbour"): as isolated, but the reloads are of a
   second, unloaded baton with the same N workers on another port, so the loaded service bears
   the CPU of an identical rollout (N start-ups, N exits) and none of the handover.
4. scale: baton with 1, 16, 64 and 256 workers: boot to serving, reload time, baton's CPU ticks.
5. idle: baton's CPU ticks over IDLE_S seconds with 16 idle workers, RSS, stripped binary size.

Latency statistics count successful requests only (failures are counted by kind). "steady"
= requests started at least 1 s after the load began and outside every reload window; a reload
window = [reload start - 1 s, reload end + 1 s] (isolated targets: - 0.1 s, + 0.5 s). Prints markdown tables, writes results.json,
table.md and latency.png into --out.
"""
import argparse
import bisect
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
APPS = os.path.join(BENCH, "apps")
KINDS = ["refused", "connect_timeout", "connect_other", "reset", "eof", "timeout",
         "bad_status", "malformed"]
CONCURRENCY = 16
LOAD_FRACTION = 0.70
CAPACITY_PROBES = 3
CLK_TCK = os.sysconf("SC_CLK_TCK")
GUNICORN_VERSION = "27.0.1"

FULL = dict(ns=[1, 4, 64], capacity_s=3.0, lead_s=4.0, k=3, interval_s=3.0, tail_s=3.0,
            reloads=100, target_interval={1: 0.25, 4: 0.25, 64: 0.6}, target_lead_s=5.0,
            iso_interval={1: 1.25, 4: 1.25, 64: 1.5}, iso_window=(0.1, 0.5),
            scale_ns=[1, 16, 64, 256], scale_reloads=10, idle_s=60, plot_n=4, floor_ns=[64])
QUICK = dict(ns=[4], capacity_s=2.0, lead_s=3.0, k=2, interval_s=3.0, tail_s=2.5,
             reloads=20, target_interval={1: 0.25, 4: 0.25, 64: 0.6}, target_lead_s=3.0,
             iso_interval={1: 1.25, 4: 1.25, 64: 1.5}, iso_window=(0.1, 0.5),
             scale_ns=[1, 16, 64, 256], scale_reloads=3, idle_s=10, plot_n=4, floor_ns=[])


LIVE = []  # scenarios and load processes to stop if the run is cut short


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# /proc helpers


def proc_stat(pid):
    """(state, ppid, utime+stime ticks, comm) of a process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    comm = s[s.index("(") + 1:s.rindex(")")]
    f = s[s.rindex(")") + 2:].split()
    return f[0], int(f[1]), int(f[11]) + int(f[12]), comm


def ticks(pid):
    st = proc_stat(pid)
    return st[2] if st else None


def rss_kb(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    out[line.split(":")[0]] = int(line.split()[1])
    except OSError:
        pass
    return out


def schedstat(pid):
    """(on-CPU ns, run-queue wait ns) of a task, from /proc/PID/schedstat."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            a = f.read().split()
        return int(a[0]), int(a[1])
    except OSError:
        return None


def cpu_snapshot():
    """{pid: (ticks, ppid, comm)} of every process, and the machine's busy/steal ticks."""
    procs = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = proc_stat(d)
            if st:
                procs[int(d)] = (st[2], st[1], st[3])
    with open("/proc/stat") as f:
        c = [int(x) for x in f.readline().split()[1:]]
    busy = c[0] + c[1] + c[2] + c[5] + c[6] + c[7]  # user nice system irq softirq steal
    return dict(procs=procs, busy=busy, steal=c[7], t=time.monotonic())


def foreign_cpu(a, b, mine_roots):
    """CPU of processes not started by this benchmark between two snapshots (a lower bound:
    processes that came and went in between are not seen)."""
    procs = b["procs"]

    def mine(pid):
        seen = 0
        while pid > 1 and seen < 64:
            if pid in mine_roots:
                return True
            pid = procs.get(pid, a["procs"].get(pid, (0, 0, "")))[1]
            seen += 1
        return False

    foreign = {}
    for pid, (t1, _, comm) in procs.items():
        d = t1 - a["procs"][pid][0] if pid in a["procs"] else t1
        if d > 0 and not mine(pid):
            foreign[comm] = foreign.get(comm, 0) + d
    total = sum(foreign.values())
    top = sorted(foreign.items(), key=lambda kv: -kv[1])[:3]
    return dict(foreign_ticks=total, machine_busy_ticks=b["busy"] - a["busy"], steal_ticks=b["steal"] - a["steal"],
                seconds=b["t"] - a["t"], top=top)


def alive(pid):
    st = proc_stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def children(ppid, comm=None):
    kids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = proc_stat(d)
            if st and st[1] == ppid and st[0] not in ("Z", "X") and (comm is None or st[3] == comm):
                kids.append(int(d))
    return set(kids)


def wait_for(cond, timeout, what, step=0.005):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(step)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_ok(port, timeout=0.5):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def stop_proc(p, sig=signal.SIGTERM, timeout=20):
    """Stop a process we started (own session): signal, wait, SIGKILL its group if needed."""
    if p is None or p.poll() is not None:
        return
    try:
        p.send_signal(sig)
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except OSError:
            pass
        p.wait()


# ---------------------------------------------------------------------------------------------
# Scenarios: each starts a service of N workers on a port, reloads it, names its supervisor.


class Baton:
    name, label, app = "baton", "baton reload", "hello"

    def __init__(self, env, n, port):
        self.env, self.n, self.port = env, n, port
        self.dir = tempfile.mkdtemp(prefix=f"baton-{n}-", dir=env.work)
        self.cfg = os.path.join(self.dir, "bench.toml")
        with open(self.cfg, "w") as f:
            f.write(f'command = ["{env.hello}"]\ninstances = {n}\n'
                    f'control = "{self.dir}/ctl.sock"\n[sockets]\nhttp = "127.0.0.1:{port}"\n'
                    '[readiness]\nkind = "notify"\ntimeout = "60s"\n'
                    + (f'startup_nice = {env.startup_nice}\n' if env.startup_nice is not None else '')
                    + (f'max_starting = {env.max_starting}\n' if env.max_starting is not None else '')
                    + '[drain]\ntimeout = "10s"\n'
                    + (f'nice = {env.drain_nice}\n' if env.drain_nice is not None else ''))
        self.p = None

    def start(self):
        t0 = time.monotonic()
        self.p = subprocess.Popen([*self.env.baton_prefix, self.env.baton, "run", "--config", self.cfg],
                                  stdout=subprocess.DEVNULL, stderr=open(f"{self.dir}/baton.log", "w"),
                                  start_new_session=True)
        wait_for(lambda: self.status_ok(), 120, "baton serving", step=0.02)
        return time.monotonic() - t0

    def status(self):
        r = subprocess.run([self.env.baton, "status", "--json", "--config", self.cfg],
                           capture_output=True, text=True)
        return json.loads(r.stdout) if r.returncode == 0 else None

    def status_ok(self):
        if self.p.poll() is not None:
            raise RuntimeError(f"baton exited: {open(self.dir + '/baton.log').read()[-2000:]}")
        s = self.status()
        return s is not None and s["state"] == "serving" and len(s["generations"]) == 1

    def worker_pids(self):
        return {w["pid"] for g in self.status()["generations"] for w in g["workers"] if w["pid"]}

    def reload(self):
        s0 = schedstat(self.p.pid)
        t0 = time.monotonic()
        r = subprocess.run([self.env.baton, "reload", "--json", "--config", self.cfg],
                           capture_output=True, text=True)
        wall = time.monotonic() - t0
        s1 = schedstat(self.p.pid)
        rep = json.loads(r.stdout)
        if not rep["ok"]:
            raise RuntimeError(f"baton reload failed: {rep}")
        # baton's own time on a CPU, and waiting for one (run queue), during `baton reload`
        return dict(wall_s=wall, duration_us=rep["duration_us"],
                    slowest_start_us=rep["slowest_start_us"], app_starting_us=rep.get("app_starting_us"),
                    first_spawn_us=rep.get("first_spawn_us"), last_spawn_us=rep.get("last_spawn_us"),
                    last_ready_us=rep.get("last_ready_us"),
                    baton_cpu_us=(s1[0] - s0[0]) // 1000, baton_runq_us=(s1[1] - s0[1]) // 1000)

    def sup_pid(self):
        return self.p.pid

    def stop(self):
        stop_proc(self.p)


class Naive:
    name, label, app = "naive", "stop-then-start", "hello"

    def __init__(self, env, n, port):
        self.env, self.n, self.port, self.p = env, n, port, None

    def _launch(self):
        self.p = subprocess.Popen(
            [sys.executable, f"{APPS}/prefork.py", "--bind", f"127.0.0.1:{self.port}",
             str(self.n), self.env.hello],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_for(lambda: len(children(self.p.pid, "hello")) == self.n, 60, "workers")

    def start(self):
        t0 = time.monotonic()
        self._launch()
        wait_for(lambda: http_ok(self.port), 30, "port")
        return time.monotonic() - t0

    def reload(self):
        t0 = time.monotonic()
        stop_proc(self.p)
        self._launch()
        return dict(wall_s=time.monotonic() - t0)

    def sup_pid(self):
        return self.p.pid

    def stop(self):
        stop_proc(self.p)


class SocketActivate:
    name, label, app = "ssa", "systemd-socket-activate + restart", "hello"

    def __init__(self, env, n, port):
        self.env, self.n, self.port, self.p = env, n, port, None

    def start(self):
        t0 = time.monotonic()
        # systemd-socket-activate binds, waits for the first connection, then execs the
        # launcher (same pid), which keeps the socket for good.
        self.p = subprocess.Popen(
            ["systemd-socket-activate", "-l", f"127.0.0.1:{self.port}", sys.executable,
             f"{APPS}/prefork.py", str(self.n), self.env.hello],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_for(lambda: http_ok(self.port, timeout=5), 30, "port")
        wait_for(lambda: len(children(self.p.pid, "hello")) == self.n, 60, "workers")
        return time.monotonic() - t0

    def reload(self):
        old = children(self.p.pid, "hello")
        t0 = time.monotonic()
        os.kill(self.p.pid, signal.SIGHUP)
        wait_for(lambda: not any(alive(p) for p in old), 60, "old workers gone")
        wait_for(lambda: len(children(self.p.pid, "hello")) == self.n, 60, "new workers")
        return dict(wall_s=time.monotonic() - t0)

    def sup_pid(self):
        return self.p.pid

    def stop(self):
        stop_proc(self.p)


class PM2:
    name, label, app = "pm2", "PM2 cluster `pm2 reload`", "node"

    def __init__(self, env, n, port):
        self.env, self.n, self.port = env, n, port
        self.home = tempfile.mkdtemp(prefix=f"pm2-{n}-", dir=env.work)
        self.eco = os.path.join(self.home, "ecosystem.json")
        with open(self.eco, "w") as f:
            json.dump({"apps": [{
                "name": "hello", "script": f"{APPS}/hello.js", "exec_mode": "cluster",
                "instances": n, "wait_ready": True, "listen_timeout": 60000,
                "kill_timeout": 10000, "env": {"HELLO_LISTEN": f"127.0.0.1:{port}"},
                "out_file": "/dev/null", "error_file": "/dev/null",
            }]}, f)
        self.penv = dict(os.environ, PM2_HOME=self.home)
        self.god = None

    def pm2(self, *args):
        r = subprocess.run([self.env.pm2, *args], env=self.penv, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"pm2 {' '.join(args)} failed: {r.stdout[-1500:]} {r.stderr[-1500:]}")

    def start(self):
        t0 = time.monotonic()
        self.pm2("start", self.eco)
        self.god = int(open(os.path.join(self.home, "pm2.pid")).read())
        wait_for(lambda: len(children(self.god)) >= self.n and http_ok(self.port), 120,
                 "pm2 workers")
        return time.monotonic() - t0

    def reload(self):
        t0 = time.monotonic()
        self.pm2("reload", "hello")
        return dict(wall_s=time.monotonic() - t0)

    def sup_pid(self):
        return self.god

    def stop(self):
        if self.god is None:  # never started, or already stopped
            return
        workers = children(self.god)
        try:
            self.pm2("kill")
        finally:
            for pid in [self.god, *workers]:
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)
            self.god = None


class Gunicorn:
    name, label, app = "gunicorn", f"gunicorn {GUNICORN_VERSION} `kill -HUP`", "wsgi"

    def __init__(self, env, n, port):
        self.env, self.n, self.port, self.p = env, n, port, None
        self.logf = os.path.join(env.work, f"gunicorn-{n}-{port}.log")

    def start(self):
        t0 = time.monotonic()
        self.p = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-w", str(self.n), "-k", "gthread", "--threads", "4",
             "--keep-alive", "60", "--graceful-timeout", "10", "--backlog", "4096",
             "-b", f"127.0.0.1:{self.port}", "--chdir", APPS, "wsgi_hello:application"],
            stdout=subprocess.DEVNULL, stderr=open(self.logf, "w"), start_new_session=True)
        wait_for(lambda: len(children(self.p.pid)) >= self.n and http_ok(self.port), 120,
                 "gunicorn workers")
        return time.monotonic() - t0

    def reload(self):
        old = children(self.p.pid)
        t0 = time.monotonic()
        os.kill(self.p.pid, signal.SIGHUP)
        wait_for(lambda: not any(alive(p) for p in old), 60, "old workers gone")
        wait_for(lambda: len(children(self.p.pid)) >= self.n, 60, "new workers")
        return dict(wall_s=time.monotonic() - t0)

    def sup_pid(self):
        return self.p.pid

    def stop(self):
        stop_proc(self.p)


SCENARIOS = [Baton, Naive, SocketActivate, PM2, Gunicorn]


# ---------------------------------------------------------------------------------------------
# Load and analysis


class Load:
    """One loadgen process; t = 0 of its --log is (within ~1 ms) self.t0 on our clock."""

    def __init__(self, env, port, mode, rate, log_path, max_s=900):
        self.log_path = log_path
        cmd = [env.loadgen, "--addr", f"127.0.0.1:{port}", "--mode", mode, "--concurrency",
               str(CONCURRENCY), "--rate", str(rate), "--json", "--log", log_path,
               "--duration", f"{max_s}s"]
        self.t0 = time.monotonic()
        self.p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        LIVE.append(self)

    def stop(self):
        stop_proc(self.p, timeout=30)

    def now(self):
        return time.monotonic() - self.t0

    def finish(self):
        self.p.send_signal(signal.SIGTERM)
        out, _ = self.p.communicate(timeout=120)
        return json.loads(out)


def capacity(env, port, mode, seconds, probes=CAPACITY_PROBES):
    """The app's capacity: the median of PROBES closed-loop readings (one reading varies by
    10-30 % from run to run, and a high one would put the "70 %" load at saturation)."""
    cmd = [env.loadgen, "--addr", f"127.0.0.1:{port}", "--mode", mode, "--concurrency",
           str(CONCURRENCY), "--duration", f"{seconds}s", "--json", "--log", "/dev/null"]
    runs = []
    for _ in range(probes):
        r = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
        runs.append(dict(rps=r["ok"] / r["duration_s"], failed=r["failed"], p99_us=r["latency_us"]["p99"]))
    mid = sorted(runs, key=lambda x: x["rps"])[len(runs) // 2]
    return dict(mid, readings=[round(x["rps"]) for x in runs])


def pct(sorted_xs, q):
    """Nearest-rank percentile (as loadgen computes it)."""
    if not sorted_xs:
        return None
    n = len(sorted_xs)
    return sorted_xs[min(n, max(1, int(-(-q * n // 1)))) - 1]


def lat_summary(xs):
    xs.sort()
    return dict(n=len(xs), p50_us=pct(xs, 0.50), p99_us=pct(xs, 0.99), max_us=xs[-1] if xs else None)


def merge_windows(reloads, before=1.0, after=1.0):
    out = []
    for s, e in sorted((r["t_start"] - before, r["t_end"] + after) for r in reloads):
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return out


def analyze(log_path, reloads, warmup_s=1.0, plot_reload=None, plot_span=(-1.5, 2.0), bin_s=0.01,
            window=(1.0, 1.0)):
    """Per-request log -> totals, failures by kind (steady / in windows), latency summaries."""
    wins = merge_windows(reloads, *window)
    starts = [w[0] for w in wins]
    steady, inwin = [], []
    fail = {k: 0 for k in KINDS}
    fail_win = {k: 0 for k in KINDS}
    total = 0
    bins = None
    if plot_reload is not None:
        p0 = plot_reload["t_start"] + plot_span[0]
        p1 = plot_reload["t_start"] + plot_span[1]
        nb = int(round((plot_span[1] - plot_span[0]) / bin_s))
        bins = [[[], 0] for _ in range(nb)]
    with open(log_path) as f:
        for line in f:
            a = line.split(",", 5)
            t = int(a[0]) / 1e6
            kind = a[2]
            lat = int(a[4])
            total += 1
            i = bisect.bisect_right(starts, t) - 1
            w = i >= 0 and t <= wins[i][1]
            if kind == "ok":
                if w:
                    inwin.append(lat)
                elif t >= warmup_s:
                    steady.append(lat)
            else:
                fail[kind] += 1
                if w:
                    fail_win[kind] += 1
            if bins is not None and p0 <= t < p1:
                b = bins[min(len(bins) - 1, int((t - p0) / bin_s))]
                if kind == "ok":
                    b[0].append(lat)
                else:
                    b[1] += 1
    res = dict(requests=total, failed=sum(fail.values()), failures={k: v for k, v in fail.items() if v},
               failed_in_windows=sum(fail_win.values()), steady=lat_summary(steady),
               reload=lat_summary(inwin), windows=[[round(a, 4), round(b, 4)] for a, b in wins])
    if bins is not None:
        series = []
        for j, (lats, nf) in enumerate(bins):
            lats.sort()
            series.append([round(plot_span[0] + j * bin_s, 4), len(lats), pct(lats, 0.5),
                           pct(lats, 0.99), lats[-1] if lats else None, nf])
        res["plot"] = dict(bin_s=bin_s, reload_len_s=plot_reload["t_end"] - plot_reload["t_start"],
                           columns=["t_rel_s", "ok", "p50_us", "p99_us", "max_us", "failed"],
                           series=series)
    return res


def run_reloads(sc, load, t_first, interval, k):
    """K reloads at t_first + i*interval on the load's clock (late ones start at once)."""
    out = []
    for i in range(k):
        due = t_first + i * interval
        late = load.now() - due
        if late < 0:
            time.sleep(-late)
        t_start = load.now()
        info = sc.reload()
        info.update(t_start=t_start, t_end=load.now(), late_s=max(0.0, late))
        out.append(info)
    return out


def load_run(env, sc, *args, **kw):
    """load_run_once, repeated once if other processes (a build, apt, ...) took more than 5 %
    of the machine's CPU during it (while the time budget allows); the repeat is kept either
    way, and its `machine_cpu` says if it was still noisy."""
    r = load_run_once(env, sc, *args, **kw)
    if r["machine_cpu"]["noisy"] and time.monotonic() - env.t_start < env.retry_budget_s:
        log("  repeating this run: the machine was not quiet")
        r = load_run_once(env, sc, *args, **kw)
        r["repeated"] = True
    return r


def load_run_once(env, sc, mode, rate, k, lead_s, interval_s, tail_s, tag, plot=False, window=(1.0, 1.0),
                  reload_sc=None):
    """Steady load at `rate` on `sc`, K reloads of `reload_sc` (default: `sc`) in the middle;
    returns the analysed run."""
    path = os.path.join(env.work, f"{tag}.csv")
    sup = sc.sup_pid()
    t_sup0 = ticks(sup) or 0
    snap0 = cpu_snapshot()
    load = Load(env, sc.port, mode, rate, path)
    reloads = run_reloads(reload_sc or sc, load, lead_s, interval_s, k)
    remaining = reloads[-1]["t_end"] + tail_s - load.now()
    if remaining > 0:
        time.sleep(remaining)
    snap1 = cpu_snapshot()
    summary = load.finish()
    roots = {os.getpid()} | ({sc.god} if isinstance(sc, PM2) else set())
    machine_cpu = foreign_cpu(snap0, snap1, roots)
    # > 5 % of the machine (2 CPUs) used by processes this benchmark did not start
    machine_cpu["noisy"] = machine_cpu["foreign_ticks"] > 0.05 * os.cpu_count() * CLK_TCK * machine_cpu["seconds"]
    if machine_cpu["noisy"]:
        log(f"  warning: other processes used {machine_cpu['foreign_ticks']} ticks during this run: {machine_cpu['top']}")
    sup = sc.sup_pid()  # the naive launcher changes at every reload
    rss = rss_kb(sup)
    t_sup1 = ticks(sup)
    res = analyze(path, reloads, plot_reload=reloads[min(1, len(reloads) - 1)] if plot else None,
                  window=window)
    os.unlink(path)
    if res["requests"] != summary["total"] or res["failed"] != summary["failed"]:
        log(f"  warning: log ({res['requests']}, {res['failed']}) != summary "
            f"({summary['total']}, {summary['failed']})")
    res.update(scenario=sc.name, label=sc.label, mode=mode, n=sc.n, rate=rate, duration_s=summary["duration_s"],
               reloads=reloads, sup_rss_kb=rss.get("VmRSS"), sup_hwm_kb=rss.get("VmHWM"),
               sup_cpu_ticks=(t_sup1 - t_sup0) if (t_sup1 is not None and sc.name != "naive") else None,
               errors=summary["errors"][:5], machine_cpu=machine_cpu, interval_s=interval_s,
               window_s=list(window))
    return res


# ---------------------------------------------------------------------------------------------
# Phases


class Env:
    startup_nice = None  # baton's default
    max_starting = None  # baton's default
    drain_nice = None  # baton's default
    floor_group_nice = None  # the neighbour's autogroup as the kernel makes it (nice 0)
    rates = {}
    kinds = ("back-to-back", "isolated", "neighbour")


def make_env(args):
    env = Env()
    env.work = tempfile.mkdtemp(prefix="baton-proof.")
    # Private copies: others may rebuild target/ while this runs.
    for name, rel in (("baton", "target/release/baton"), ("hello", "target/release/examples/hello"),
                      ("loadgen", "target/release/examples/loadgen")):
        dst = os.path.join(env.work, "bin", name)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy2(os.path.join(ROOT, rel), dst)
        setattr(env, name, dst)
    env.pm2 = os.path.join(BENCH, ".peers", "node_modules", ".bin", "pm2")
    return env


def fmt_ms(us):
    return "–" if us is None else f"{us / 1000:.2f}"


def fmt_fail(res):
    if not res["failed"]:
        return "0"
    return f"**{res['failed']}** (" + ", ".join(f"{k} {v}" for k, v in res["failures"].items()) + ")"


def comparison_table(rows):
    out = ["| scenario (app) | mode | N | rate req/s | requests | failed (by kind) | steady p50 / p99 / max ms "
           "| ±1 s of reload p50 / p99 / max ms | reload ms median (max) | supervisor RSS kB | supervisor CPU s |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s, w = r["steady"], r["reload"]
        walls = [x["wall_s"] * 1000 for x in r["reloads"]]
        cpu = "–" if r["sup_cpu_ticks"] is None else f"{r['sup_cpu_ticks'] / CLK_TCK:.2f}"
        out.append(f"| {r['label']} ({APP_NAMES[r['app']]}) | {r['mode']} | {r['n']} | {r['rate']:.0f} | {r['requests']} "
                   f"| {fmt_fail(r)} | {fmt_ms(s['p50_us'])} / {fmt_ms(s['p99_us'])} / {fmt_ms(s['max_us'])} "
                   f"| {fmt_ms(w['p50_us'])} / {fmt_ms(w['p99_us'])} / {fmt_ms(w['max_us'])} "
                   f"| {statistics.median(walls):.1f} ({max(walls):.1f}) | {r['sup_rss_kb']} | {cpu} |")
    return "\n".join(out)


APP_NAMES = {"hello": "examples/hello", "node": "apps/hello.js", "wsgi": "apps/wsgi_hello.py"}


def split(rl):
    """Medians: when the first and the last spawn began, and the swap's latency after the last
    READY=1 (ms from the reload's start)."""
    keys = ("first_spawn_us", "last_spawn_us", "last_ready_us")
    if any(x.get(k) is None for x in rl for k in keys):
        return "–"
    first = statistics.median(x["first_spawn_us"] for x in rl) / 1000
    last = statistics.median(x["last_spawn_us"] for x in rl) / 1000
    swap = statistics.median(x["duration_us"] - x["last_ready_us"] for x in rl) / 1000
    return f"{first:.2f} / {last:.2f} / {swap:.2f}"


def overhead_ms(x):
    """baton's own time in one rollout: the part in which no worker of the new generation was
    starting (each from just before its spawn to its readiness). Workers started all at once
    overlap, so this is about rollout - slowest start; paced ones (readiness.max_starting)
    follow each other."""
    app = x.get("app_starting_us")
    return (x["duration_us"] - (app if app is not None else x["slowest_start_us"] or 0)) / 1000


def target_table(rows):
    out = ["| mode | N | rate req/s (70 %) | reloads (late) | every s | requests | failed | steady p99 ms | p99 while reloading ms "
           "| ratio (≤ 1.5) | max while reloading ms | baton overhead ms median / p90 / max (≤ 5 median) "
           "| rollout ms median | slowest start ms median | `baton reload` wall ms median "
           "| baton on-CPU / run-queue wait ms per reload, median "
           "| first / last spawn began, last ready → swap ms, median | baton RSS kB |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        rl = r["reloads"]
        over = sorted(overhead_ms(x) for x in rl)
        dur = [x["duration_us"] / 1000 for x in rl]
        ss = [(x["slowest_start_us"] or 0) / 1000 for x in rl]
        wall = [x["wall_s"] * 1000 for x in rl]
        late = sum(1 for x in rl if x["late_s"] > 0.001)
        ratio = r["reload"]["p99_us"] / r["steady"]["p99_us"]
        r["overhead_ms_median"] = statistics.median(over)
        r["p99_ratio"] = ratio
        ok = lambda c: "" if c else " ✗"
        out.append(
            f"| {r['mode']} | {r['n']} | {r['rate']:.0f} | {len(rl)} ({late}) | {r['interval_s']} | {r['requests']} | {fmt_fail(r)}{ok(r['failed'] == 0)} "
            f"| {fmt_ms(r['steady']['p99_us'])} | {fmt_ms(r['reload']['p99_us'])} | {ratio:.2f}{ok(ratio <= 1.5)} "
            f"| {fmt_ms(r['reload']['max_us'])} "
            f"| {statistics.median(over):.2f}{ok(statistics.median(over) <= 5)} / {pct(over, 0.9):.2f} / {over[-1]:.2f} "
            f"| {statistics.median(dur):.2f} | {statistics.median(ss):.2f} | {statistics.median(wall):.2f} "
            f"| {statistics.median(x['baton_cpu_us'] for x in rl) / 1000:.2f} / "
            f"{statistics.median(x['baton_runq_us'] for x in rl) / 1000:.2f} "
            f"| {split(rl)} | {r['sup_rss_kb']} |")
    return "\n".join(out)


def phase_compare_and_target(env, cfg, results, do_compare=True, do_target=True, modes=("keepalive", "close")):
    for n in cfg["ns"]:
        cap = {}
        for cls in (SCENARIOS if do_compare else [Baton]):
            sc = cls(env, n, free_port())
            LIVE.append(sc)
            log(f"N={n} {sc.name}: starting")
            try:
                boot = sc.start()
                if sc.app not in cap:
                    cap[sc.app] = {}
                    for mode in modes:
                        c = capacity(env, sc.port, mode, cfg["capacity_s"])
                        cap[sc.app][mode] = c
                        results["capacity"].append(dict(app=sc.app, n=n, mode=mode, **c))
                        log(f"  capacity {sc.app} N={n} {mode}: {c['rps']:.0f} req/s (median of {c['readings']})")
                for mode in modes:
                    rate = env.rates.get(mode) or round(LOAD_FRACTION * cap[sc.app][mode]["rps"])
                    if do_compare:
                        log(f"  {sc.name} {mode} at {rate} req/s, {cfg['k']} reloads every {cfg['interval_s']} s")
                        r = load_run(env, sc, mode, rate, cfg["k"], cfg["lead_s"], cfg["interval_s"],
                                     cfg["tail_s"], f"cmp-{sc.name}-{n}-{mode}", plot=(n == cfg["plot_n"]))
                        r.update(app=sc.app, boot_s=boot)
                        results["comparison"].append(r)
                        log(f"    {r['requests']} requests, failed {r['failed']} {r['failures']}, "
                            f"steady p99 {fmt_ms(r['steady']['p99_us'])} ms, reload p99 {fmt_ms(r['reload']['p99_us'])} ms, "
                            f"max {fmt_ms(r['reload']['max_us'])} ms, reload {statistics.median(x['wall_s'] for x in r['reloads'])*1000:.1f} ms")
                    if sc.name == "baton" and do_target:
                        for kind, iv, win in (
                                ("back-to-back", cfg["target_interval"].get(n, 0.6), (1.0, 1.0)),
                                ("isolated", cfg["iso_interval"].get(n, 1.5), tuple(cfg["iso_window"])),
                                ("neighbour", cfg["iso_interval"].get(n, 1.5), tuple(cfg["iso_window"]))):
                            if kind not in env.kinds or (kind == "neighbour" and n not in cfg["floor_ns"]):
                                continue
                            log(f"  baton target {mode} {kind}: {cfg['reloads']} reloads every {iv} s at {rate} req/s")
                            nb = None
                            try:
                                if kind == "neighbour":
                                    # the floor: the same rollout (N workers started, N stopped) by a
                                    # second, unloaded baton next to the loaded one
                                    nb = Baton(env, n, free_port())
                                    LIVE.append(nb)
                                    nb.start()
                                    if env.floor_group_nice is not None:
                                        # its session's autogroup: the weight of its whole group
                                        with open(f"/proc/{nb.p.pid}/autogroup", "w") as f:
                                            f.write(str(env.floor_group_nice))
                                t = load_run(env, sc, mode, rate, cfg["reloads"], cfg["target_lead_s"], iv,
                                             cfg["target_lead_s"], f"target-{n}-{mode}-{kind}", window=win,
                                             reload_sc=nb)
                            finally:
                                if nb is not None:
                                    nb.stop()
                            t.update(app=sc.app, kind=kind)
                            results["target"].append(t)
                            over = statistics.median(overhead_ms(x) for x in t["reloads"])
                            log(f"    {t['requests']} requests, failed {t['failed']} {t['failures']}, steady p99 "
                                f"{fmt_ms(t['steady']['p99_us'])} ms, reloading p99 {fmt_ms(t['reload']['p99_us'])} ms, "
                                f"overhead median {over:.2f} ms")
            finally:
                sc.stop()


def phase_scale(env, cfg, results):
    for n in cfg["scale_ns"]:
        sc = Baton(env, n, free_port())
        LIVE.append(sc)
        boot = sc.start()
        pid = sc.sup_pid()
        t_boot = ticks(pid)
        # light connection-per-request load: every reload must still lose nothing
        path = os.path.join(env.work, f"scale-{n}.csv")
        load = Load(env, sc.port, "close", 500, path)
        time.sleep(0.5)
        reps = []
        t0 = ticks(pid)
        for _ in range(cfg["scale_reloads"]):
            old = sc.worker_pids()
            rep = sc.reload()
            t_swap = time.monotonic()
            wait_for(lambda: not any(alive(p) for p in old), 60, "old generation gone")
            rep["drain_s"] = time.monotonic() - t_swap
            reps.append(rep)
        t1 = ticks(pid)
        summary = load.finish()
        os.unlink(path)
        rss = rss_kb(pid)
        sc.stop()
        dur = [r["duration_us"] / 1000 for r in reps]
        ss = [(r["slowest_start_us"] or 0) / 1000 for r in reps]
        over = [overhead_ms(r) for r in reps]
        row = dict(n=n, boot_s=boot, boot_ticks=t_boot, reload_ticks=t1 - t0, reloads=len(reps),
                   ticks_per_reload=(t1 - t0) / len(reps), rollout_ms=statistics.median(dur),
                   rollout_ms_max=max(dur), slowest_start_ms=statistics.median(ss),
                   overhead_ms=statistics.median(over), overhead_ms_max=max(over),
                   wall_ms=statistics.median(r["wall_s"] * 1000 for r in reps),
                   baton_cpu_ms=statistics.median(r["baton_cpu_us"] / 1000 for r in reps),
                   baton_runq_ms=statistics.median(r["baton_runq_us"] / 1000 for r in reps),
                   drain_ms=statistics.median(r["drain_s"] * 1000 for r in reps),
                   rss_kb=rss.get("VmRSS"), hwm_kb=rss.get("VmHWM"),
                   load_requests=summary["total"], load_failed=summary["failed"], load_failures=summary["failures"])
        results["scale"].append(row)
        log(f"scale N={n}: boot {boot*1000:.0f} ms ({t_boot} ticks), rollout {row['rollout_ms']:.1f} ms, "
            f"overhead {row['overhead_ms']:.2f} ms, {row['ticks_per_reload']:.1f} ticks/reload, "
            f"failed {summary['failed']}/{summary['total']}")


def scale_table(rows):
    out = ["| workers | boot → serving ms | baton CPU ticks at boot | rollout ms median (max) | slowest worker start ms median "
           "| baton overhead ms median (max) | `baton reload` wall ms | old gen drained ms | baton CPU ticks per reload "
           "| baton on-CPU / run-queue wait ms per reload | baton RSS / HWM kB | requests during (failed) |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['n']} | {r['boot_s']*1000:.0f} | {r['boot_ticks']} | {r['rollout_ms']:.1f} ({r['rollout_ms_max']:.1f}) "
                   f"| {r['slowest_start_ms']:.1f} | {r['overhead_ms']:.2f} ({r['overhead_ms_max']:.2f}) | {r['wall_ms']:.1f} "
                   f"| {r['drain_ms']:.0f} | {r['ticks_per_reload']:.1f} | {r['baton_cpu_ms']:.2f} / {r['baton_runq_ms']:.2f} "
                   f"| {r['rss_kb']} / {r['hwm_kb']} "
                   f"| {r['load_requests']} ({r['load_failed']}) |")
    return "\n".join(out)


def phase_idle(env, cfg, results):
    sc = Baton(env, 16, free_port())
    LIVE.append(sc)
    sc.start()
    pid = sc.sup_pid()
    time.sleep(1)
    t0 = ticks(pid)
    log(f"idle: {cfg['idle_s']} s with 16 idle workers")
    time.sleep(cfg["idle_s"])
    t1 = ticks(pid)
    rss = rss_kb(pid)
    sc.stop()
    stripped = os.path.join(env.work, "baton.stripped")
    shutil.copy2(env.baton, stripped)
    subprocess.run(["strip", stripped], check=True)
    results["idle"] = dict(seconds=cfg["idle_s"], workers=16, ticks=t1 - t0, clk_tck=CLK_TCK,
                           rss_kb=rss.get("VmRSS"), hwm_kb=rss.get("VmHWM"),
                           stripped_bytes=os.path.getsize(stripped),
                           unstripped_bytes=os.path.getsize(env.baton))
    log(f"idle: {t1 - t0} ticks, RSS {rss}")


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    osr = dict(l.rstrip().split("=", 1) for l in open("/etc/os-release") if "=" in l)
    mem = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal"))
    ver = lambda *c: (subprocess.run(c, capture_output=True, text=True).stdout or "").strip().splitlines()[:1]
    git = lambda *a: subprocess.run(["git", "-C", ROOT, *a], capture_output=True, text=True).stdout.strip()
    return dict(baton_commit=git("rev-parse", "--short", "HEAD"),
                baton_src_dirty=bool(git("status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock")),
                cpus=os.cpu_count(), cpu=cpu, mem_gib=round(mem / 2**20, 1), os=osr.get("PRETTY_NAME", "").strip('"'),
                kernel=os.uname().release, node=ver("node", "--version"), python=sys.version.split()[0],
                ssa=ver("systemd-socket-activate", "--version"), autogroup=autogroup())


def autogroup():
    """kernel.sched_autogroup_enabled: with it, each session (baton's service, the load client,
    a neighbour) is one scheduling group, and nice values only rank tasks within their group."""
    try:
        return open("/proc/sys/kernel/sched_autogroup_enabled").read().strip() == "1"
    except OSError:
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a few-minute version (N=4 only, fewer reloads, 10 s idle)")
    ap.add_argument("--out", help="output directory (default bench/results/full or bench/results/quick)")
    ap.add_argument("--only", help="comma-separated phases: compare,target,scale,idle (default: all)")
    ap.add_argument("--ns", help="worker counts for compare/target, e.g. 4,64 (default: 1,4,64; quick: 4)")
    ap.add_argument("--modes", default="keepalive,close", help="load modes for compare/target")
    ap.add_argument("--baton-prefix", default="nice -n -10",
                    help="run `baton run` under this command (default: 'nice -n -10', as the shipped units "
                         "run it with Nice=-10; baton puts its workers back at nice 0); '' for none, or an "
                         "experiment such as 'chrt --reset-on-fork -f 10'")
    ap.add_argument("--drain-nice", type=int,
                    help="drain.nice in baton's config (default: baton's default, 10 with more workers than CPUs, else 0)")
    ap.add_argument("--max-starting", type=int,
                    help="readiness.max_starting in baton's config (default: baton's default, the CPU count)")
    ap.add_argument("--startup-nice", type=int,
                    help="readiness.startup_nice in baton's config (default: baton's default, 0)")
    ap.add_argument("--rates", default="",
                    help="for A/B experiments: fixed target rates instead of 70 %% of the measured capacity, "
                         "e.g. keepalive=77000,close=9600")
    ap.add_argument("--kinds", default="back-to-back,isolated,neighbour",
                    help="target kinds to run: back-to-back, isolated, neighbour (the floor: an unloaded "
                         "second baton with the same workers reloads next to the loaded one; only for the "
                         "worker counts in --floor-ns)")
    ap.add_argument("--floor-ns", help="worker counts that get the neighbour run (default: 64; quick: none)")
    ap.add_argument("--floor-group-nice", type=int,
                    help="experiment: the nice value of the neighbour's autogroup (its session's scheduling "
                         "group, /proc/PID/autogroup), e.g. 19 for the least weight a group can have")
    args = ap.parse_args()
    cfg = dict(QUICK if args.quick else FULL)
    if args.ns:
        cfg["ns"] = [int(x) for x in args.ns.split(",")]
    if args.floor_ns is not None:
        cfg["floor_ns"] = [int(x) for x in args.floor_ns.split(",") if x]
    out_dir = args.out or os.path.join(BENCH, "results", "quick" if args.quick else "full")
    os.makedirs(out_dir, exist_ok=True)
    phases = (args.only or "compare,target,scale,idle").split(",")
    env = make_env(args)
    env.baton_prefix = args.baton_prefix.split()
    env.startup_nice = args.startup_nice
    env.max_starting = args.max_starting
    env.drain_nice = args.drain_nice
    env.floor_group_nice = args.floor_group_nice
    env.rates = {m: int(r) for m, r in (x.split("=") for x in args.rates.split(",") if x)}
    env.kinds = args.kinds.split(",")
    env.t_start = time.monotonic()
    env.retry_budget_s = 150 if args.quick else 780  # repeat noisy runs only while this young
    results = dict(config={k: (v if not isinstance(v, dict) else {str(a): b for a, b in v.items()}) for k, v in cfg.items()},
                   quick=args.quick, argv=sys.argv[1:], floor_group_nice=args.floor_group_nice, baton_prefix=args.baton_prefix, startup_nice=args.startup_nice, max_starting=args.max_starting, drain_nice=args.drain_nice, concurrency=CONCURRENCY, load_fraction=LOAD_FRACTION,
                   machine=machine(), capacity=[], comparison=[], target=[], scale=[], idle=None,
                   started=time.strftime("%Y-%m-%d %H:%M:%S"))
    t0 = time.monotonic()
    # A stray SIGTERM/SIGINT still runs the finally clauses (and stops every service).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        if "compare" in phases or "target" in phases:
            phase_compare_and_target(env, cfg, results, "compare" in phases, "target" in phases,
                                     tuple(args.modes.split(",")))
        if "scale" in phases:
            phase_scale(env, cfg, results)
        if "idle" in phases:
            phase_idle(env, cfg, results)
    finally:
        for x in reversed(LIVE):
            try:
                x.stop()
            except Exception as e:  # keep stopping the others
                log(f"cleanup: {e}")
        results["elapsed_s"] = time.monotonic() - t0
        with open(os.path.join(out_dir, "results.json"), "w") as f:
            json.dump(results, f, indent=1)
        shutil.rmtree(env.work, ignore_errors=True)

    md = [f"machine: {results['machine']}", f"elapsed: {results['elapsed_s']:.0f} s", ""]
    if results["capacity"]:
        md += [f"### Capacity (loadgen --concurrency 16, rate 0; median of {CAPACITY_PROBES} readings)", "",
               "| app | N | keep-alive req/s | connection-per-request req/s |", "|---|---|---|---|"]
        seen = {}
        for c in results["capacity"]:
            seen.setdefault((c["app"], c["n"]), {})[c["mode"]] = (
                f"{c['rps']:.0f}" + (f" ({', '.join(map(str, c['readings']))})" if c.get("readings") else ""))
        for (app, n), v in seen.items():
            md.append(f"| {APP_NAMES[app]} | {n} | {v.get('keepalive', '-')} | {v.get('close', '-')} |")
        md.append("")
    if results["comparison"]:
        md += [f"### Reloads under load, side by side ({cfg['k']} reloads every {cfg['interval_s']} s, "
               f"load at 70 % of each app's capacity)", "", comparison_table(results["comparison"]), ""]
    for kind in ("back-to-back", "isolated", "neighbour"):
        rows = [t for t in results["target"] if t.get("kind") == kind]
        if rows:
            what = {"back-to-back": f"the reload windows overlap: the whole reload phase counts as reloading, the "
                                    f"{cfg['target_lead_s']:g} s lead-in and tail as steady",
                    "isolated": "each window [start - 0.1 s, end + 0.5 s] apart: requests between the windows are steady",
                    "neighbour": "the floor: as isolated, but the reloads are of a second, unloaded baton with "
                                 "the same workers on another port; the loaded service only shares the CPUs"}[kind]
            md += [f"### baton targets, {kind}: {cfg['reloads']} reloads under 70 % load ({what})", "",
                   target_table(rows), ""]
    if results["scale"]:
        md += ["### Scale: baton with 1 to 256 workers (light close-mode load, 500 req/s)", "",
               scale_table(results["scale"]), ""]
    if results["idle"]:
        i = results["idle"]
        md += ["### Idle cost", "", f"baton CPU over {i['seconds']} s with {i['workers']} idle workers: "
               f"**{i['ticks']} ticks** (CLK_TCK {i['clk_tck']}); RSS {i['rss_kb']} kB (HWM {i['hwm_kb']} kB); "
               f"stripped binary {i['stripped_bytes'] / 1e6:.2f} MB ({i['stripped_bytes']} bytes)", ""]
    text = "\n".join(md)
    with open(os.path.join(out_dir, "table.md"), "w") as f:
        f.write(text)
    # results.json is rewritten with the derived figures the tables computed
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    print(text)
    if any("plot" in r for r in results["comparison"]):
        subprocess.run([sys.executable, os.path.join(BENCH, "plot.py"), os.path.join(out_dir, "results.json"),
                        os.path.join(out_dir, "latency.png")], check=False)


if __name__ == "__main__":
    main()
