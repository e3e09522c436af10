#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Tether benchmarks: figures, not tests. Python 3 standard library only.

  bench.py latency  [--pushes N]     push to signed response, one tetherd,
                                     state on tmpfs and on disk, plus the
                                     disk's own durable write in the same run
  bench.py idle     [--window S]     USS and wakeups of an idle tetherd
  bench.py fleet    [--agents N]     fan-out, last response, reconnection
                                     curve after an MP restart (fleet.py)
  bench.py faults   [--fault-agents N]  the six fault scenarios of fleet.py
  bench.py mqtt     [--pushes N]     peer: mosquitto + a C responder
  bench.py cfengine [--runs N]       peer: cf-runagent -> cf-serverd -> cf-agent
  bench.py report                    docs/PERFORMANCE.md and docs/perf/*.png
  bench.py all                       every part, then the report

Each part prints its figures and writes RESULTS/<part>.json; the report
reads those files only. A part that cannot run says why in its JSON, and
the report prints that reason instead of a figure.
"""

import argparse
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def pct(vals, p):
    s = sorted(vals)
    if not s:
        return None
    k = min(len(s) - 1, max(0, int(round(p / 100.0 * (len(s) - 1)))))
    return s[k]


def summary(vals):
    if not vals:
        return None
    return {"n": len(vals), "median": statistics.median(vals), "p99": pct(vals, 99),
            "max": max(vals), "min": min(vals)}


def fmt_ms(s):
    if not s:
        return "n/a"
    return f"median {s['median']:.3f} ms, p99 {s['p99']:.3f} ms, max {s['max']:.3f} ms (n={s['n']})"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_file(path, timeout, proc=None):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path) or os.path.getsize(path) == 0:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited ({proc.returncode}) before writing {path}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} did not appear within {timeout} s")
        time.sleep(0.05)


def read_ports(path):
    ports = {}
    with open(path) as f:
        for line in f:
            k, _, v = line.strip().partition("=")
            if v.isdigit():
                ports[k] = int(v)
    return ports


class Group:
    """Children started in their own process groups; all ended on exit."""

    def __init__(self):
        self.procs = []

    def start(self, argv, log_path, **kw):
        logf = open(log_path, "ab")
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                             start_new_session=True, **kw)
        p.logf = logf
        p.log_path = log_path
        self.procs.append(p)
        return p

    def stop(self, p, sig=signal.SIGTERM, timeout=10):
        if p.poll() is None:
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()
        p.logf.close()

    def close(self):
        for p in self.procs:
            self.stop(p, timeout=5)
        self.procs = []


def mkdtemp(prefix, dir=None):
    """A temporary directory the agent's unprivileged channel process
    (user nobody, when the benchmark runs as root) can traverse."""
    d = tempfile.mkdtemp(prefix=prefix, dir=dir)
    os.chmod(d, 0o755)
    return d


def agent_config(path, *, host, tcp_port, https_port, mp_dir, state, run, mid, cycles,
                 extra=""):
    for d in (state, run, os.path.join(cycles, "machine-policy"),
              os.path.join(cycles, "user-policy")):
        os.makedirs(d, exist_ok=True)
    if not os.path.exists(mid):
        with open(mid, "w") as f:
            f.write("%032x\n" % random.getrandbits(128))
    with open(path, "w") as f:
        f.write(f"""[mp]
host = {host}
tcp_port = {tcp_port}
https_port = {https_port}
transport = tcp
ca_file = {mp_dir}/tls.crt

[trust]
site_key = {mp_dir}/site.pub

[agent]
state_dir = {state}
runtime_dir = {run}
machine_id_file = {mid}
start_delay_max_seconds = 0
boot_start_delay_max_seconds = 0
{"user = nobody" if os.geteuid() == 0 else ""}
{extra}
[cycles]
cycles_dir = {cycles}
""")


def process_tree(pid):
    """pid and all its descendants."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
        except OSError:
            continue
        ppid = int(st[st.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def uss_kib(pid):
    """Private memory (USS) and PSS/RSS, kB, from smaps_rollup."""
    vals = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            m = re.match(r"(\w+):\s+(\d+) kB", line)
            if m:
                vals[m.group(1)] = int(m.group(2))
    uss = vals.get("Private_Clean", 0) + vals.get("Private_Dirty", 0) + \
        vals.get("Private_Hugetlb", 0)
    return {"uss_kib": uss, "pss_kib": vals.get("Pss", 0), "rss_kib": vals.get("Rss", 0)}


def wakeup_counters(pid):
    """Times each thread was scheduled in (schedstat), and context switches."""
    runs = vol = invol = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                runs += int(f.read().split()[2])
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches"):
                        vol += int(line.split()[1])
                    elif line.startswith("nonvoluntary_ctxt_switches"):
                        invol += int(line.split()[1])
        except OSError:
            pass
    return {"runs": runs, "voluntary": vol, "nonvoluntary": invol}


def uid_of(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Uid:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def comm(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()[:80]
    except OSError:
        return "?"


def save(results_dir, part, data):
    os.makedirs(results_dir, exist_ok=True)
    data["part"] = part
    data["when"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    # The machine is shared: the load at the end of the part says how
    # quiet it was.
    data["loadavg"] = os.getloadavg()
    with open(os.path.join(results_dir, f"{part}.json"), "w") as f:
        json.dump(data, f, indent=1)


# --------------------------------------------------------------------------
# durable write probe


def durable_writes(directory, n=1000):
    """write, fdatasync, rename, fsync of the directory: the durable write
    the agent's spool makes, timed on the same filesystem, ms."""
    times = []
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        body = b"x" * 512
        for i in range(n):
            tmp = os.path.join(directory, f".probe.{i % 2}.tmp")
            dst = os.path.join(directory, f"probe.{i % 2}")
            t0 = time.perf_counter()
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.write(fd, body)
            os.fdatasync(fd)
            os.close(fd)
            os.rename(tmp, dst)
            os.fsync(dfd)
            times.append((time.perf_counter() - t0) * 1000)
        for i in range(2):
            os.unlink(os.path.join(directory, f"probe.{i}"))
    finally:
        os.close(dfd)
    return summary(times)


# --------------------------------------------------------------------------
# latency


def latency_once(a, bins, where, state_root, g):
    mp_dir = os.path.join(state_root, "mp")
    os.makedirs(mp_dir)
    out = os.path.join(state_root, "latency.txt")
    drv = g.start([bins["bench"], "--dir", mp_dir, "--pushes", str(a.pushes), "--warmup",
                   str(min(200, max(10, a.pushes // 50))), "--type", str(a.task_type),
                   "--out", out, "--timeout", "60"],
                  os.path.join(state_root, "driver.log"))
    wait_file(os.path.join(mp_dir, "ports"), 30, drv)
    port = read_ports(os.path.join(mp_dir, "ports"))["tcp"]
    ad = os.path.join(state_root, "agent")
    conf = os.path.join(ad, "tether.conf")
    os.makedirs(ad)
    agent_config(conf, host="127.0.0.1", tcp_port=port, https_port=free_port(), mp_dir=mp_dir,
                 state=os.path.join(ad, "state"), run=os.path.join(ad, "run"),
                 mid=os.path.join(ad, "machine-id"), cycles=os.path.join(ad, "cycles.d"))
    agent = g.start([bins["tetherd"], "--config", conf], os.path.join(ad, "tetherd.log"))
    t0 = time.monotonic()
    limit = 120 + a.pushes * 0.05
    while drv.poll() is None:
        if time.monotonic() - t0 > limit:
            g.stop(drv, signal.SIGKILL)
            raise RuntimeError(f"the latency driver did not finish within {limit:.0f} s")
        if agent.poll() is not None:
            time.sleep(1)
            if drv.poll() is None:
                raise RuntimeError(f"tetherd exited ({agent.returncode}) during the run: "
                                   + tail(agent.log_path))
        time.sleep(0.1)
    with open(drv.log_path) as f:
        text = f.read()
    if drv.returncode != 0:
        raise RuntimeError(f"driver failed: {text[-800:]}")
    print(text.strip())
    ack, resp, rcs = [], [], {}
    with open(out) as f:
        for line in f:
            x = line.split()
            ack.append(float(x[0]) / 1000)
            resp.append(float(x[1]) / 1000)
            rcs[x[2]] = rcs.get(x[2], 0) + 1
    probe = durable_writes(os.path.join(ad, "state"))
    breakdown = agent_breakdown(bins, ad, agent)
    g.stop(agent)
    g.stop(drv)
    return {"where": where, "ack_ms": summary(ack), "response_ms": summary(resp),
            "return_codes": rcs, "durable_write_ms": probe, "breakdown": breakdown,
            "raw": out}


SYNC_CALLS = ("fsync", "fdatasync", "sync_file_range", "syncfs", "msync")


def durable_writes_per_push(a, bins, root, g, pushes=300):
    """A separate short run on the same filesystem with strace -c attached
    to both halves of the agent before the first push: how many fsync-type
    calls and renames one push costs (target: two durable writes at most)."""
    if not shutil.which("strace"):
        return {"error": "strace is not installed"}
    mp_dir = os.path.join(root, "mp")
    os.makedirs(mp_dir)
    go = os.path.join(root, "go")
    drv = g.start([bins["bench"], "--dir", mp_dir, "--pushes", str(pushes), "--warmup", "0",
                   "--type", str(a.task_type), "--timeout", "60", "--go-file", go],
                  os.path.join(root, "driver.log"))
    wait_file(os.path.join(mp_dir, "ports"), 30, drv)
    port = read_ports(os.path.join(mp_dir, "ports"))["tcp"]
    ad = os.path.join(root, "agent")
    os.makedirs(ad)
    conf = os.path.join(ad, "tether.conf")
    agent_config(conf, host="127.0.0.1", tcp_port=port, https_port=free_port(), mp_dir=mp_dir,
                 state=os.path.join(ad, "state"), run=os.path.join(ad, "run"),
                 mid=os.path.join(ad, "machine-id"), cycles=os.path.join(ad, "cycles.d"))
    agent = g.start([bins["tetherd"], "--config", conf], os.path.join(ad, "tetherd.log"))
    deadline = time.monotonic() + 30
    while "signed in" not in open(drv.log_path, errors="replace").read():
        if time.monotonic() > deadline or drv.poll() is not None:
            return {"error": "the agent did not sign in to the driver"}
        time.sleep(0.05)
    time.sleep(0.5)  # let the agent settle after its sign-in
    out = os.path.join(root, "strace.txt")
    argv = ["strace", "-f", "-c", "-o", out, "-e",
            "trace=" + ",".join(SYNC_CALLS + ("rename", "renameat", "renameat2"))]
    for p in process_tree(agent.pid):
        argv += ["-p", str(p)]
    st = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    open(go, "w").close()
    try:
        drv.wait(timeout=120 + pushes)
    except subprocess.TimeoutExpired:
        pass
    st.send_signal(signal.SIGINT)
    st.wait(timeout=30)
    g.stop(agent)
    g.stop(drv)
    if drv.returncode != 0:
        return {"error": "the driver failed: " + tail(drv.log_path, 3)}
    calls = {}
    with open(out) as f:
        for line in f:
            x = line.split()
            if len(x) >= 5 and x[-1].isidentifier() and x[3].isdigit() and x[-1] != "total":
                calls[x[-1]] = int(x[3])
    syncs = sum(v for k, v in calls.items() if k in SYNC_CALLS)
    renames = sum(v for k, v in calls.items() if k.startswith("rename"))
    return {"pushes": pushes, "calls": calls, "sync_per_push": syncs / pushes,
            "rename_per_push": renames / pushes}


def agent_breakdown(bins, ad, agent):
    """The agent's own per-stage timing (tetherctl stats --json): per stage the
    count and the median, p99 and max in microseconds over its last pushes."""
    ctl = bins.get("tetherctl")
    sock = os.path.join(ad, "run", "tetherd.sock")
    if not ctl or not os.path.exists(ctl):
        return {"available": False, "why": f"no tetherctl at {ctl}"}
    if not os.path.exists(sock):
        return {"available": False, "why": f"no control socket at {sock}"}
    p = subprocess.run([ctl, "--socket", sock, "stats", "--json"], capture_output=True, text=True,
                       timeout=10)
    if p.returncode != 0:
        return {"available": False,
                "why": "tetherctl stats failed: " + (p.stderr or p.stdout).strip()[:300]}
    try:
        data = json.loads(p.stdout)
        stages = [{"stage": x["stage"], "count": x["count"], "samples": x.get("samples"),
                   "median_ms": x["median_us"] / 1000, "p99_ms": x["p99_us"] / 1000,
                   "max_ms": x["max_us"] / 1000} for x in data["stages"]]
    except (ValueError, KeyError, TypeError) as e:
        return {"available": False, "why": f"tetherctl stats answered something unexpected: {e}"}
    return {"available": True, "command": "stats --json", "window": data.get("window"),
            "stages": stages}


def tail(path, n=15):
    try:
        with open(path, errors="replace") as f:
            return "\n".join(f.read().rstrip().splitlines()[-n:])
    except OSError:
        return ""


def part_latency(a, bins):
    runs = []
    g = Group()
    mounted = None
    try:
        base_tmpfs = None
        if os.geteuid() == 0:
            base_tmpfs = mkdtemp(prefix="tether-bench-tmpfs.")
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m", "tether-bench",
                            base_tmpfs], check=True)
            mounted = base_tmpfs
        elif os.path.isdir("/dev/shm"):
            base_tmpfs = mkdtemp(prefix="tether-bench.", dir="/dev/shm")
        base_disk = mkdtemp(prefix="tether-bench-disk.", dir=a.disk_dir)
        for where, root in (("tmpfs", base_tmpfs), ("disk", base_disk)):
            if root is None:
                runs.append({"where": where, "error": "no tmpfs available"})
                continue
            log(f"latency: {a.pushes} pushes, state on {where} ({root})")
            try:
                runs.append(latency_once(a, bins, where, os.path.join(root, "run"), g))
            except (RuntimeError, OSError, subprocess.SubprocessError) as e:
                log(f"latency on {where} failed: {e}")
                runs.append({"where": where, "error": str(e)})
            g.close()
        if base_disk:
            log("latency: counting durable writes per push (strace -c, a separate short run)")
            try:
                dw = durable_writes_per_push(a, bins, os.path.join(base_disk, "count"), g)
            except (RuntimeError, OSError, subprocess.SubprocessError) as e:
                dw = {"error": str(e)}
            g.close()
            for r in runs:
                if r.get("where") == "disk":
                    r["syncs"] = dw
        # Keep the raw latencies for the plot.
        for r in runs:
            if r.get("raw") and os.path.exists(r["raw"]):
                dst = os.path.join(a.results, f"latency-{r['where']}.txt")
                shutil.copy(r["raw"], dst)
                r["raw"] = dst
    finally:
        g.close()
        if mounted:
            subprocess.run(["umount", "-l", mounted])
            os.rmdir(mounted)
        elif base_tmpfs:
            shutil.rmtree(base_tmpfs, ignore_errors=True)
        shutil.rmtree(base_disk, ignore_errors=True)
    for r in runs:
        if "error" in r:
            print(f"latency ({r['where']}): NOT MEASURED: {r['error']}")
        else:
            print(f"latency ({r['where']}): push->signed response {fmt_ms(r['response_ms'])}")
            print(f"latency ({r['where']}): push->PUSH_ACK          {fmt_ms(r['ack_ms'])}")
            print(f"latency ({r['where']}): durable write probe      {fmt_ms(r['durable_write_ms'])}")
            sy = r.get("syncs")
            if sy and "error" not in sy:
                print(f"latency ({r['where']}): per push {sy['rename_per_push']:.2f} renames and "
                      f"{sy['sync_per_push']:.2f} fsync-type calls ({sy['calls']}, {sy['pushes']} "
                      "pushes under strace -c)")
            elif sy:
                print(f"latency ({r['where']}): durable writes per push: NOT MEASURED: {sy['error']}")
            b = r["breakdown"]
            if b.get("available"):
                for st in b["stages"]:
                    print(f"latency ({r['where']}): agent stage {st['stage']:<15} "
                          f"n={st['count']:<6} median {st['median_ms']:.3f} ms, "
                          f"p99 {st['p99_ms']:.3f} ms, max {st['max_ms']:.3f} ms")
            else:
                print(f"latency ({r['where']}): agent breakdown: NOT MEASURED: {b.get('why')}")
    save(a.results, "latency", {"pushes": a.pushes, "task_type": a.task_type, "runs": runs})


# --------------------------------------------------------------------------
# idle


def start_mp(bins, g, mp_dir, keepalive, extra=()):
    os.makedirs(os.path.join(mp_dir, "policies"), exist_ok=True)
    tcp, https = free_port(), free_port()
    mp = g.start([bins["mp"], "serve", "--state-dir", mp_dir, "--listen", f"127.0.0.1:{tcp}",
                  "--https-listen", f"127.0.0.1:{https}", "--console-listen", "off", "--approval", "auto",
                  "--keepalive", str(keepalive), *extra], os.path.join(mp_dir, "..", "mp.log"))
    wait_file(os.path.join(mp_dir, "ports"), 30, mp)
    ports = read_ports(os.path.join(mp_dir, "ports"))
    return mp, ports["tcp"], ports["https"]


def wait_online(bins, mp_dir, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        p = subprocess.run([bins["mp"], "devices", "--state-dir", mp_dir], capture_output=True,
                           text=True)
        if p.returncode == 0 and "online" in p.stdout:
            return True
        time.sleep(0.2)
    return False


def strace_wakeups(pids, seconds, work):
    """What wakes the idle agent: each return from the event loop's wait,
    with the calls that follow it, over a second window (strace slows the
    process a little; the counted window above runs without it)."""
    out = os.path.join(work, "strace.txt")
    argv = ["strace", "-f", "-tt", "-o", out, "-e",
            "trace=epoll_wait,epoll_pwait,epoll_pwait2,read,write,recvfrom,sendto,recvmsg,"
            "sendmsg,timerfd_settime,openat,fsync,fdatasync,rename,renameat"]
    for p in pids:
        argv += ["-p", str(p)]
    st = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(seconds)
    st.send_signal(signal.SIGINT)
    try:
        st.wait(timeout=10)
    except subprocess.TimeoutExpired:
        st.kill()
        st.wait()
    try:
        with open(out) as f:
            lines = [line.rstrip() for line in f]
    except OSError:
        return {"error": "strace wrote nothing"}
    waits = [line for line in lines if re.search(r"epoll_p?wait2?\(.*= [1-9]", line)]
    return {"window_s": seconds, "loop_wakeups": len(waits),
            "excerpt": [line[:200] for line in lines if "resumed" not in line][:80]}


def part_idle(a, bins):
    g = Group()
    work = mkdtemp(prefix="tether-bench-idle.")
    res = {"window_s": a.window, "keepalive_s": a.keepalive}
    try:
        mp_dir = os.path.join(work, "mp")
        mp, tcp, https = start_mp(bins, g, mp_dir, a.keepalive)
        ad = os.path.join(work, "agent")
        os.makedirs(ad)
        conf = os.path.join(ad, "tether.conf")
        agent_config(conf, host="127.0.0.1", tcp_port=tcp, https_port=https, mp_dir=mp_dir,
                     state=os.path.join(ad, "state"), run=os.path.join(ad, "run"),
                     mid=os.path.join(ad, "machine-id"), cycles=os.path.join(ad, "cycles.d"))
        agent = g.start([bins["tetherd"], "--config", conf], os.path.join(ad, "tetherd.log"))
        if not wait_online(bins, mp_dir):
            raise RuntimeError("the agent did not come online: " + tail(agent.log_path))
        time.sleep(a.settle)
        pids = process_tree(agent.pid)
        before = {p: wakeup_counters(p) for p in pids}
        log(f"idle: tetherd processes {pids}; window {a.window} s, keepalive {a.keepalive} s")
        time.sleep(a.window)
        procs = []
        for p in pids:
            after = wakeup_counters(p)
            mem = uss_kib(p)
            procs.append({"pid": p, "cmd": comm(p), "uid": uid_of(p), **mem,
                          "wakeups": after["runs"] - before[p]["runs"],
                          "voluntary_switches": after["voluntary"] - before[p]["voluntary"],
                          "nonvoluntary_switches": after["nonvoluntary"] -
                          before[p]["nonvoluntary"]})
        if agent.poll() is not None:
            raise RuntimeError("tetherd exited during the idle window")
        res["processes"] = procs
        if a.strace_window and shutil.which("strace"):
            res["strace"] = strace_wakeups(pids, a.strace_window, work)
        res["uss_total_kib"] = sum(p["uss_kib"] for p in procs)
        res["wakeups_total"] = sum(p["wakeups"] for p in procs)
        res["expected_keepalive_wakeups"] = a.window // a.keepalive
        for p in procs:
            print(f"idle: pid {p['pid']} ({p['cmd']}): USS {p['uss_kib']} KiB, PSS "
                  f"{p['pss_kib']} KiB, RSS {p['rss_kib']} KiB; {p['wakeups']} wakeups "
                  f"({p['voluntary_switches']} voluntary switches) in {a.window} s")
        if res.get("strace", {}).get("loop_wakeups") is not None:
            print(f"idle: under strace, {res['strace']['loop_wakeups']} event-loop wakeups in "
                  f"{a.strace_window} s (excerpt in idle.json)")
        print(f"idle: tetherd total USS {res['uss_total_kib']} KiB "
              f"({res['uss_total_kib'] / 1024:.2f} MiB); {res['wakeups_total']} wakeups in "
              f"{a.window} s (keepalive every {a.keepalive} s: "
              f"{res['expected_keepalive_wakeups']} expected)")
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        res["error"] = str(e)
        print(f"idle: NOT MEASURED: {e}")
    finally:
        g.close()
        shutil.rmtree(work, ignore_errors=True)
    save(a.results, "idle", res)


# --------------------------------------------------------------------------
# fleet


def part_fleet(a, bins):
    out = os.path.join(a.results, "fleet-raw.json")
    cmd = [sys.executable, os.path.join(TOP, "tests", "fleet", "fleet.py"),
           "--tetherd", bins["tetherd"], "--mp", bins["mp"], "--agents", str(a.agents),
           "--scenarios", "fanout,graceful-restart", "--keepalive", "30",
           "--start-delay", str(a.start_delay), "--wait", str(a.fleet_wait),
           "--time-limit", str(a.fleet_time_limit), "--json-out", out]
    log("fleet: " + " ".join(cmd))
    p = subprocess.run(cmd, timeout=a.fleet_time_limit + 120)
    res = {"agents": a.agents, "exit": p.returncode}
    try:
        with open(out) as f:
            raw = json.load(f)
        res["mode"] = raw["mode"]
        res["results"] = raw["results"]
    except (OSError, ValueError) as e:
        res["error"] = f"fleet.py wrote no results ({e}); exit {p.returncode}"
    save(a.results, "fleet", res)


def part_faults(a, bins):
    """The six fault scenarios of tests/fleet at a bench size: the
    'nothing lost' row of the targets."""
    out = os.path.join(a.results, "faults-raw.json")
    cmd = [sys.executable, os.path.join(TOP, "tests", "fleet", "fleet.py"),
           "--tetherd", bins["tetherd"], "--mp", bins["mp"], "--agents", str(a.fault_agents),
           "--scenarios", "1,2,3,4,5,6", "--keepalive", "5", "--wait", "120",
           "--time-limit", "1500", "--json-out", out]
    log("faults: " + " ".join(cmd))
    p = subprocess.run(cmd, timeout=1600)
    res = {"agents": a.fault_agents, "exit": p.returncode, "keepalive_s": 5}
    try:
        with open(out) as f:
            raw = json.load(f)
        res["mode"] = raw["mode"]
        res["results"] = [{k: r.get(k) for k in ("scenario", "result", "detail", "seconds")}
                          for r in raw["results"]]
    except (OSError, ValueError) as e:
        res["error"] = f"fleet.py wrote no results ({e}); exit {p.returncode}"
    save(a.results, "faults", res)


SWARM_FIGURES = {
    "signed_in": r"signed in:\s+(\d+) of",
    "first_signin_rate": r"signed in:.*, (\d+) sign-ins/s",
    "held": r"connections held:\s+(-?\d+)",
    "fanout_s": r"fan-out:.*last after ([0-9.]+) s",
    "acked": r"last response acked:\s+(\d+) of",
    "last_ack_s": r"last response acked:.*after ([0-9.]+) s",
    "rss_mib": r"MP RSS:\s+([0-9.]+) MiB",
    "rss_before_mib": r"MP RSS before: ([0-9.]+) MiB",
    "idle_rss_mib": r"idle memory:\s+MP RSS ([0-9.]+) MiB",
    "idle_kib_per_conn": r"idle memory:.*, ([0-9.]+) KiB per connection",
    "cpu_s": r"MP CPU seconds:\s+([0-9.]+) total",
    "push_cpu_s": r"MP CPU seconds:.*, ([0-9.]+) for the push round",
}
STORM = (r"storm \({}\):\s+(\d+) of (\d+) back in ([0-9.]+) s, (\d+) sign-ins/s, (\d+) resumed TLS "
         r"sessions, (\d+) connection attempts failed and retried; MP CPU ([0-9.]+) s, (\d+) sign-ins per "
         r"MP CPU second")


def parse_swarm(out):
    """The figures of mp-swarm's output (bench/mp-swarm.c prints them)."""
    res = {}
    for key, rx in SWARM_FIGURES.items():
        m = re.search(rx, out)
        if m:
            res[key] = float(m.group(1))
    for name, label in (("storm_resumed", "resumption"), ("storm_full", "full")):
        m = re.search(STORM.format(label), out)
        if m:
            back, n, secs, rate, resumed, retried, cpu, per_cpu = m.groups()
            res[name] = {"back": int(back), "clients": int(n), "seconds": float(secs), "rate": int(rate),
                         "resumed": int(resumed), "retried": int(retried), "mp_cpu_s": float(cpu),
                         "per_cpu_s": int(per_cpu),
                         "cores": float(cpu) / float(secs) if float(secs) > 0 else None}
    return res


def part_swarm(a, bins):
    """bench/mp-swarm: N simulated agent channels from one process against
    one real tether-mp, a push to all, every answer acknowledged: the
    design's "agents one MP holds" row, and the MP rows of issue #16 (idle
    memory per connection, fan-out, the reconnection storm after a restart
    with and without TLS resumption)."""
    cmd = [bins["swarm"], "--clients", str(a.swarm_clients), "--mp", bins["mp"]]
    log("swarm: " + " ".join(cmd))
    res = {"clients": a.swarm_clients}
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        res["error"] = "mp-swarm did not finish within 900 s"
        save(a.results, "swarm", res)
        return
    res["exit"] = p.returncode
    res["output"] = p.stdout
    print(p.stdout, end="")
    res.update(parse_swarm(p.stdout))
    if p.returncode != 0:
        res["error"] = f"mp-swarm exited {p.returncode}: {p.stderr.strip()[-400:]}"
    save(a.results, "swarm", res)


def console_figures(text):
    """The figures of mp-swarm --console's output (bench/console-bench.py)."""
    res = {}
    num = r"([0-9.]+)"
    figures = {
        "page_first_ms": r"first page:.*first " + num + " ms",
        "page_median_ms": r"first page:.*median " + num + " ms",
        "page_p95_ms": r"first page:.*p95 " + num + " ms",
        "page_max_ms": r"first page:.*max " + num + " ms",
        "action_ms": r"action accepted:.*HTTP 202 in " + num + " ms",
        "device_events": r"event stream:\s+(\d+) device events",
        "devices_stream_s": r"event stream:.* " + num + " s after it opened",
        "page_all_answered_s": r"answered seen " + num + " s after",
        "push_events": r"(\d+) push events",
        "rereads": r"(\d+) re-reads",
        "reread_median_ms": r"re-reads of the push \(median " + num + " ms",
        "reread_max_ms": r"re-reads of the push \(median [0-9.]+ ms, max " + num + " ms",
        "busy_events": r"(\d+) events arrived during a re-read",
        "lag_s": r"console view lag:\s+(-?[0-9.]+) s",
        "last_ack_s": r"last response acked:.*after " + num + " s",
        "mp_loadavg_line": r"console: \d+ devices, load average (.*)",
    }
    for key, rx in figures.items():
        m = re.search(rx, text)
        if m:
            res[key] = m.group(1) if key == "mp_loadavg_line" else float(m.group(1))
    return res


def part_console(a, bins):
    """The console with the swarm's N devices (bench/console-bench.py, run by
    mp-swarm --console): the device list's first page, an action on an
    N-device collection accepted, an open console's event stream while the
    N answers arrive. Figures only: nothing here fails on timing."""
    script = os.path.join(TOP, "bench", "console-bench.py")
    cmd = [bins["swarm"], "--clients", str(a.swarm_clients), "--mp", bins["mp"], "--no-storm",
           "--console", script]
    log("console: " + " ".join(cmd))
    res = {"clients": a.swarm_clients}
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        res["error"] = "mp-swarm --console did not finish within 900 s"
        save(a.results, "console", res)
        return
    res["exit"] = p.returncode
    res["output"] = p.stdout
    print(p.stdout, end="")
    res.update(console_figures(p.stdout))
    if p.returncode != 0 or "action_ms" not in res:
        res["error"] = f"mp-swarm --console exited {p.returncode}: {p.stderr.strip()[-400:]}"
    save(a.results, "console", res)


# --------------------------------------------------------------------------
# peers


def part_mqtt(a, bins):
    res = {"pushes": a.peer_pushes}
    broker_bin = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    peer = bins.get("mqtt")
    if not os.access(broker_bin, os.X_OK) or not peer or not os.access(peer, os.X_OK):
        res["error"] = ("mosquitto or the tether-bench-mqtt peer is missing (scripts/bench.sh "
                        "installs mosquitto and libmosquitto-dev, then builds the peer)")
        print(f"mqtt: NOT MEASURED: {res['error']}")
        save(a.results, "mqtt", res)
        return
    g = Group()
    work = mkdtemp(prefix="tether-bench-mqtt.")
    try:
        port = free_port()
        conf = os.path.join(work, "mosquitto.conf")
        with open(conf, "w") as f:
            f.write(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    "set_tcp_nodelay true\n")
        broker = g.start([broker_bin, "-c", conf], os.path.join(work, "mosquitto.log"))
        time.sleep(0.5)
        resp = g.start([peer, "respond", "127.0.0.1", str(port)],
                       os.path.join(work, "responder.log"))
        time.sleep(1.0)
        if resp.poll() is not None or broker.poll() is not None:
            raise RuntimeError("broker or responder exited: " + tail(resp.log_path) +
                               tail(os.path.join(work, "mosquitto.log")))
        raw = os.path.join(a.results, "latency-mqtt.txt")
        p = subprocess.run([peer, "trigger", "127.0.0.1", str(port), str(a.peer_pushes), raw],
                           capture_output=True, text=True, timeout=600)
        print(p.stdout.strip())
        if p.returncode != 0:
            raise RuntimeError(f"trigger failed: {p.stderr.strip()}")
        with open(raw) as f:
            vals = [float(x) / 1000 for x in f.read().split()]
        res["response_ms"] = summary(vals)
        res["raw"] = raw
        time.sleep(2)
        res["responder_idle"] = {**uss_kib(resp.pid), "cmd": comm(resp.pid)}
        res["broker"] = {**uss_kib(broker.pid), "cmd": comm(broker.pid)}
        print(f"mqtt: publish->answer {fmt_ms(res['response_ms'])}; responder USS "
              f"{res['responder_idle']['uss_kib']} KiB; broker USS {res['broker']['uss_kib']} KiB")
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        res["error"] = str(e)
        print(f"mqtt: NOT MEASURED: {e}")
    finally:
        g.close()
        shutil.rmtree(work, ignore_errors=True)
    save(a.results, "mqtt", res)


CF_POLICY = """body common control
{
  bundlesequence => { "main" };
}

body server control
{
  allowconnects => { "127.0.0.1", "::1" };
  allowallconnects => { "127.0.0.1", "::1" };
  trustkeysfrom => { "127.0.0.1", "::1" };
  allowusers => { "root" };
  cfruncommand => "%(cfagent)s -I -f %(promises)s";
}

body runagent control
{
  trustkey => "true";
  timeout => "30";
}

bundle server access_rules
{
  access:
    "%(cfagent)s" admit => { "127.0.0.1", "::1" };
  roles:
    ".*" authorize => { "root" };
}

bundle agent main
{
  # A no-op policy: nothing to converge.
  vars:
    "noop" string => "noop";
}
"""


def part_cfengine(a, bins):
    res = {"runs": a.cf_runs}
    serverd = shutil.which("cf-serverd") or "/usr/sbin/cf-serverd"
    runagent = shutil.which("cf-runagent") or "/usr/sbin/cf-runagent"
    cfkey = shutil.which("cf-key") or "/usr/sbin/cf-key"
    cfagent = shutil.which("cf-agent") or "/usr/sbin/cf-agent"
    if not all(os.access(b, os.X_OK) for b in (serverd, runagent, cfkey, cfagent)):
        res["error"] = "cfengine3 is not installed (scripts/bench.sh installs it)"
        print(f"cfengine: NOT MEASURED: {res['error']}")
        save(a.results, "cfengine", res)
        return
    if os.geteuid() != 0:
        res["error"] = "cf-serverd and cf-runagent need root here"
        print(f"cfengine: NOT MEASURED: {res['error']}")
        save(a.results, "cfengine", res)
        return
    g = Group()
    work = mkdtemp(prefix="tether-bench-cf.")
    try:
        inputs = os.path.join(work, "promises.cf")
        with open(inputs, "w") as f:
            f.write(CF_POLICY.replace("%(promises)s", inputs).replace("%(cfagent)s", cfagent))
        os.chmod(inputs, 0o600)
        subprocess.run([cfkey], capture_output=True, timeout=60)
        # cf-runagent and cf-serverd share this host's key: trust it once.
        subprocess.run([cfkey, "-t", "/var/lib/cfengine3/ppkeys/localhost.pub"],
                       capture_output=True, timeout=60)
        port = free_port()
        server = g.start([serverd, "--no-fork", "-f", inputs, "--inform"],
                         os.path.join(work, "cf-serverd.log"),
                         env={**os.environ, "CFENGINE_TEST_OVERRIDE_PORT": str(port)})
        time.sleep(2)
        # cf-serverd listens on 5308 unless overridden; find its port.
        listen_port = find_listen_port(server.pid) or 5308
        res["port"] = listen_port
        vals = []
        for i in range(a.cf_runs + 2):
            t0 = time.perf_counter()
            p = subprocess.run([runagent, "-f", inputs, "-H", f"127.0.0.1:{listen_port}",
                                "--timeout", "30"], capture_output=True, text=True, timeout=120)
            dt = (time.perf_counter() - t0) * 1000
            if p.returncode != 0 or re.search(r"error|couldn't|failed", p.stdout + p.stderr,
                                              re.I):
                raise RuntimeError(f"cf-runagent failed ({p.returncode}): "
                                   f"{(p.stdout + p.stderr).strip()[-600:]}")
            if not re.search(r"executing cfruncommand.*\n.*exit code: 0", p.stdout + p.stderr):
                raise RuntimeError("cf-runagent returned without cf-agent's exit code 0: "
                                   f"{(p.stdout + p.stderr).strip()[-600:]}")
            if i >= 2:  # the first runs trust keys and warm caches
                vals.append(dt)
        res["response_ms"] = summary(vals)
        raw = os.path.join(a.results, "latency-cfengine.txt")
        with open(raw, "w") as f:
            f.write("\n".join(f"{v * 1000:.1f}" for v in vals) + "\n")
        res["raw"] = raw
        time.sleep(2)
        res["serverd_idle"] = {**uss_kib(server.pid), "cmd": comm(server.pid)}
        print(f"cfengine: cf-runagent -> cf-serverd -> cf-agent (no-op) {fmt_ms(res['response_ms'])}; "
              f"cf-serverd USS {res['serverd_idle']['uss_kib']} KiB")
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        res["error"] = str(e)
        print(f"cfengine: NOT MEASURED: {e}")
    finally:
        g.close()
        shutil.rmtree(work, ignore_errors=True)
    save(a.results, "cfengine", res)


def find_listen_port(pid):
    """The TCP port a process listens on, from /proc/net/tcp{,6} and its fds."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                t = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            m = re.match(r"socket:\[(\d+)\]", t)
            if m:
                inodes.add(m.group(1))
    except OSError:
        return None
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    x = line.split()
                    if x[3] == "0A" and x[9] in inodes:
                        return int(x[1].split(":")[1], 16)
        except OSError:
            pass
    return None


# --------------------------------------------------------------------------
# report


def load(results, part):
    try:
        with open(os.path.join(results, f"{part}.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def plots(results, docs):
    """docs/perf/latency.png and docs/perf/reconnect.png with gnuplot."""
    gp = shutil.which("gnuplot")
    made = {}
    if not gp:
        return {"error": "gnuplot is not installed (scripts/bench.sh installs it)"}
    perf = os.path.join(docs, "perf")
    os.makedirs(perf, exist_ok=True)
    # Latency: CDF of push -> signed response per run, and the peers.
    series = []
    for name, label, col in (("latency-tmpfs.txt", "Tether, state on tmpfs", 2),
                             ("latency-disk.txt", "Tether, state on disk", 2),
                             ("latency-mqtt.txt", "MQTT (mosquitto, QoS 1)", 1),
                             ("latency-cfengine.txt", "CFEngine cf-runagent", 1)):
        src = os.path.join(results, name)
        if not os.path.exists(src):
            continue
        with open(src) as f:
            vals = sorted(float(line.split()[col - 1]) / 1000 for line in f if line.strip())
        if not vals:
            continue
        cdf = os.path.join(results, name + ".cdf")
        with open(cdf, "w") as f:
            for i, v in enumerate(vals):
                f.write(f"{v} {(i + 1) / len(vals)}\n")
        series.append((cdf, label))
    if series:
        script = f"""set terminal pngcairo size 900,520 font ",10"
set output "{perf}/latency.png"
set title "Push to answer, loopback (CDF)"
set xlabel "latency (ms, log scale)"
set ylabel "fraction of pushes"
set logscale x
set grid
set key bottom right
plot """ + ", ".join(f'"{c}" using 1:2 with lines lw 2 title "{t}"' for c, t in series) + "\n"
        if run_gnuplot(gp, script):
            made["latency"] = "docs/perf/latency.png"
    fleet = load(results, "fleet")
    curve, window = None, None
    if fleet:
        for r in fleet.get("results", []):
            if r.get("scenario") == "graceful-restart" and r.get("reconnect_times"):
                curve = r["reconnect_times"]
                window = r.get("retry_after_s")
    if curve:
        dat = os.path.join(results, "reconnect.dat")
        width = 0.5
        nb = int(curve[-1] / width) + 1
        b = [0] * nb
        for t in curve:
            b[int(t / width)] += 1
        with open(dat, "w") as f:
            cum = 0
            for k, c in enumerate(b):
                cum += c
                f.write(f"{k * width} {c / width} {cum}\n")
        uniform = ""
        ymax = max(max(b) / width, len(curve) / window if window else 0) * 1.25
        if window:
            ref = os.path.join(results, "reconnect-uniform.dat")
            with open(ref, "w") as f:
                # tetherd aims at a uniform point of [RetryAfter, 2 x RetryAfter].
                f.write(f"{window} {len(curve) / window}\n{2 * window} {len(curve) / window}\n")
            uniform = (f', \\\n     "{ref}" using 1:2 with lines dt 2 lw 2 lc rgb "black" '
                       f'title "uniform over [{window} s, {2 * window} s] (RetryAfterSeconds={window})"')
        script = f"""set terminal pngcairo size 900,520 font ",10"
set output "{perf}/reconnect.png"
set title "Sign-ins after a graceful MP restart ({len(curve)} agents, {width} s bins)"
set xlabel "seconds after GOODBYE(shutdown)"
set ylabel "connections per second"
set y2label "agents back (cumulative)"
set y2tics
set ytics nomirror
set yrange [0:{ymax}]
set y2range [0:*]
set key top left
set grid
set style fill solid 0.5
plot "{dat}" using ($1+{width / 2}):2 with boxes title "sign-ins per second", \\
     "{dat}" using ($1+{width}):3 axes x1y2 with lines lw 2 title "cumulative"{uniform}
"""
        if run_gnuplot(gp, script):
            made["reconnect"] = "docs/perf/reconnect.png"
    return made


def run_gnuplot(gp, script):
    p = subprocess.run([gp], input=script, capture_output=True, text=True)
    if p.returncode != 0:
        log(f"gnuplot failed: {p.stderr.strip()[:300]}")
        return False
    return True


def machine_line():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} CPUs ({cpu}), {mem:.0f} GiB RAM, Linux {platform.release()}"


def part_report(a, bins):
    from report import write_report  # bench/report.py
    made = plots(a.results, os.path.join(TOP, "docs"))
    write_report(a.results, os.path.join(TOP, "docs", "PERFORMANCE.md"), made, machine_line(),
                 load)
    log("wrote docs/PERFORMANCE.md" + (f" and {', '.join(made.values())}"
                                        if isinstance(made, dict) and "error" not in made else ""))


def part_report_mp(a, bins):
    """Only the MP section of docs/PERFORMANCE.md, from the swarm part's JSON."""
    from report_mp import mp_section, splice  # bench/report_mp.py
    splice(os.path.join(TOP, "docs", "PERFORMANCE.md"), mp_section(load(a.results, "swarm") or {}))
    log("wrote the MP section of docs/PERFORMANCE.md")


# --------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", choices=("latency", "idle", "fleet", "faults", "swarm", "console", "mqtt",
                                     "cfengine", "report", "report-mp", "all"))
    ap.add_argument("--build", default=os.path.join(TOP, "build", "release"),
                    help="the build directory with tetherd, tether-mp, tether-bench-push")
    ap.add_argument("--results", default=None, help="default: BUILD/bench-results")
    ap.add_argument("--pushes", type=int, default=10000)
    ap.add_argument("--task-type", type=int, default=3,
                    help="TaskType for the latency run (3: app evaluation, a no-op without "
                         "policies)")
    ap.add_argument("--disk-dir", default="/var/tmp", help="a directory on a real disk")
    ap.add_argument("--window", type=int, default=120, help="idle window, seconds")
    ap.add_argument("--keepalive", type=int, default=60, help="idle run's keepalive")
    ap.add_argument("--settle", type=int, default=5)
    ap.add_argument("--strace-window", type=int, default=60,
                    help="then this long under strace, to see what wakes the agent (0: skip)")
    ap.add_argument("--agents", type=int, default=1000)
    ap.add_argument("--fault-agents", type=int, default=1000,
                    help="fleet size of the six fault scenarios")
    ap.add_argument("--start-delay", type=int, default=0,
                    help="agents' start_delay_max_seconds in the fleet part (tetherd also "
                         "applies it after a GOODBYE(shutdown), on top of the shutdown spread)")
    ap.add_argument("--fleet-wait", type=int, default=120)
    ap.add_argument("--fleet-time-limit", type=int, default=900)
    ap.add_argument("--swarm-clients", type=int, default=10000,
                    help="simulated agent channels in the swarm part (bench/mp-swarm)")
    ap.add_argument("--peer-pushes", type=int, default=2000)
    ap.add_argument("--cf-runs", type=int, default=50)
    a = ap.parse_args()
    a.results = a.results or os.path.join(a.build, "bench-results")
    os.makedirs(a.results, exist_ok=True)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    bins = {"tetherd": os.path.join(a.build, "agent", "tetherd"),
            "tetherctl": os.path.join(a.build, "agent", "tetherctl"),
            "mp": os.path.join(a.build, "mp", "tether-mp"),
            "bench": os.path.join(a.build, "bench", "tether-bench-push"),
            "mqtt": os.path.join(a.build, "bench", "tether-bench-mqtt"),
            "swarm": os.path.join(a.build, "bench", "mp-swarm")}
    need = {"latency": ("tetherd", "bench"), "idle": ("tetherd", "mp"),
            "fleet": ("tetherd", "mp"), "faults": ("tetherd", "mp"), "swarm": ("mp", "swarm"),
            "console": ("mp", "swarm"), "all": ("tetherd", "mp", "bench", "swarm")}.get(a.part, ())
    missing = [bins[k] for k in need if not os.access(bins[k], os.X_OK)]
    if missing:
        print(f"bench: not built: {', '.join(missing)}", file=sys.stderr)
        return 2
    parts = ["latency", "idle", "mqtt", "cfengine", "swarm", "console", "fleet", "faults", "report"] \
        if a.part == "all" \
        else [a.part]
    for p in parts:
        {"latency": part_latency, "idle": part_idle, "fleet": part_fleet, "faults": part_faults,
         "swarm": part_swarm, "console": part_console, "mqtt": part_mqtt, "cfengine": part_cfengine,
         "report": part_report, "report-mp": part_report_mp}[p](a, bins)
    return 0


if __name__ == "__main__":
    sys.exit(main())
