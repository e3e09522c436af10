#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""The fleet harness: a real `tether-mp serve` and N real `tetherd` processes.

Each agent has its own state directory, device identity and machine-id file.
In netns mode (root, `ip netns` works) every agent lives in a network
namespace of its own with a veth to a bridge in the MP's namespace; the
addresses (198.18.0.0/15, the benchmarking range) exist only inside the
namespaces this harness creates. Otherwise (plain mode) everything runs on
127.0.0.1. Everything is torn down at the end, also on failure or on a
signal; the whole run is bounded by --time-limit.

Each scenario asserts from the MP's own records (`tether-mp push-status
--json`, `tether-mp responses --json`) that every push reached every agent
and got exactly one recorded response.

Python 3 standard library only.
"""

import argparse
import ctypes
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

SCENARIOS = {
    "1": "steady",
    "2": "mp-sigkill",
    "3": "network-cut",
    "4": "agent-sigkill",
    "5": "disk-full",
    "6": "graceful-restart",
}
BENCH_SCENARIOS = ("fanout",)

NET_PREFIX = "198.18."  # 198.18.0.0/15: only inside our namespaces
MP_ADDR_NETNS = "198.18.0.1"
CLONE_NEWNET = 0x40000000
CLONE_NEWUTS = 0x04000000


class ScenarioFailed(Exception):
    pass


class ScenarioSkipped(Exception):
    pass


class TimeLimit(BaseException):
    """Raised by SIGALRM/SIGTERM/SIGINT so that every finally: runs."""


def log(msg):
    print(f"[fleet {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(cmd, check=True, timeout=60, **kw):
    """Runs a short command; returns CompletedProcess with text output."""
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited {p.returncode}: "
                           f"{p.stderr.strip() or p.stdout.strip()}")
    return p


def norm(d):
    """Lower-cases keys and drops '_' and '-', so that ClientID, client_id
    and clientId all read as 'clientid'."""
    if not isinstance(d, dict):
        return {}
    return {re.sub(r"[_\-]", "", str(k)).lower(): v for k, v in d.items()}


def find_records(obj, must_have):
    """The first list of dicts (at any depth) whose items have the key
    must_have after norm(); [] if none."""
    if isinstance(obj, list):
        if obj and all(isinstance(x, dict) for x in obj) and must_have in norm(obj[0]):
            return [norm(x) for x in obj]
        for x in obj:
            r = find_records(x, must_have)
            if r:
                return r
    elif isinstance(obj, dict):
        for v in obj.values():
            r = find_records(v, must_have)
            if r:
                return r
    return []


def percentile(sorted_vals, p):
    if not sorted_vals:
        return float("nan")
    k = min(len(sorted_vals) - 1, max(0, int(round(p / 100.0 * (len(sorted_vals) - 1)))))
    return sorted_vals[k]


# --------------------------------------------------------------------------
# Networks


class PlainNet:
    mode = "plain"

    def __init__(self, n):
        self.n = n
        self.mp_addr = "127.0.0.1"
        self.tcp_port = free_port()
        self.https_port = free_port()

    def setup(self):
        pass

    def preexec(self, i):
        return None

    def mp_preexec(self):
        return None

    def agent_addr(self, i):
        return "127.0.0.1"

    def can_impair(self):
        return "plain mode: agents share the host's loopback, so their network cannot be cut or degraded one by one"

    def teardown(self):
        pass


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NetnsNet:
    """An MP namespace with a bridge; one namespace per agent, each with a
    veth whose other end is a port of that bridge."""

    mode = "netns"

    def __init__(self, n):
        self.n = n
        tag = f"{os.getpid() % 100000:05d}"
        self.mp_ns = f"tfl{tag}m"
        self.agent_ns = [f"tfl{tag}a{i}" for i in range(n)]
        self.mp_addr = MP_ADDR_NETNS
        self.tcp_port = 10123
        self.https_port = 10124
        self.created = []
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.have_nft = shutil.which("nft") is not None
        self.impaired = {}

    def agent_addr(self, i):
        host = i + 2  # .0.1 is the MP
        return f"198.{18 + host // 65536}.{(host // 256) % 256}.{host % 256}"

    def _batch(self, lines, ns=None):
        if not lines:
            return
        cmd = ["ip"] + (["-n", ns] if ns else []) + ["-batch", "-"]
        p = subprocess.run(cmd, input="\n".join(lines) + "\n", capture_output=True, text=True,
                           timeout=300)
        if p.returncode != 0:
            raise RuntimeError(f"ip -batch ({ns or 'root'}) failed: {p.stderr.strip()[:500]}")

    NEIGH = "/proc/sys/net/ipv4/neigh/default/gc_thresh"

    def _raise_neigh_limits(self):
        """The kernel's ARP table is one for all namespaces, 1024 entries
        by default, and each agent needs two (its own and the MP's). For a
        large fleet, raise the limits for the run; teardown restores them."""
        need = {1: 2 * self.n + 256, 2: 3 * self.n + 512, 3: 4 * self.n + 1024}
        self.neigh_saved = {}
        for k, v in need.items():
            path = f"{self.NEIGH}{k}"
            try:
                with open(path) as f:
                    old = int(f.read())
            except (OSError, ValueError):
                return
            if old < v:
                with open(path, "w") as f:
                    f.write(str(v))
                self.neigh_saved[k] = old
        if self.neigh_saved:
            log(f"raised the kernel's ARP table limits for {self.n} agents (restored at the end)")

    def _restore_neigh_limits(self):
        for k, old in sorted(getattr(self, "neigh_saved", {}).items(), reverse=True):
            try:
                with open(f"{self.NEIGH}{k}", "w") as f:
                    f.write(str(old))
            except OSError:
                pass
        self.neigh_saved = {}

    def setup(self):
        if self.n > 130000:
            raise RuntimeError("at most 130000 agents fit in 198.18.0.0/15")
        if self.n > 200:
            self._raise_neigh_limits()
        self._batch([f"netns add {self.mp_ns}"])
        self.created.append(self.mp_ns)
        for i in range(0, self.n, 500):
            chunk = self.agent_ns[i:i + 500]
            self._batch([f"netns add {ns}" for ns in chunk])
            self.created.extend(chunk)
        self._batch(["link set lo up",
                     "link add br0 type bridge stp_state 0 forward_delay 0",
                     f"addr add {self.mp_addr}/15 dev br0",
                     "link set br0 up"], ns=self.mp_ns)
        # Both ends are created directly inside their namespaces.
        self._batch([f"link add eth0 netns {ns} type veth peer name v{i} netns {self.mp_ns}"
                     for i, ns in enumerate(self.agent_ns)])
        mp_lines = []
        for i in range(self.n):
            mp_lines += [f"link set v{i} master br0", f"link set v{i} up"]
        self._batch(mp_lines, ns=self.mp_ns)
        for i, ns in enumerate(self.agent_ns):
            self._batch(["link set lo up", f"addr add {self.agent_addr(i)}/15 dev eth0",
                         "link set eth0 up"], ns=ns)

    def _enter(self, ns, hostname):
        fd = os.open(f"/run/netns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
        libc = self.libc
        name = hostname.encode()

        def child():
            # Runs in the child between fork and exec: no Python threads
            # exist in this program, so these libc calls are safe here.
            if libc.setns(fd, CLONE_NEWNET) != 0:
                os._exit(121)
            if hostname and libc.unshare(CLONE_NEWUTS) == 0:
                libc.sethostname(name, len(name))

        return child, fd

    def preexec(self, i):
        return self._enter(self.agent_ns[i], f"fleet-a{i}")

    def mp_preexec(self):
        return self._enter(self.mp_ns, "")

    def can_impair(self):
        return None

    def _nft(self, i, rules):
        ns = self.agent_ns[i]
        script = "flush ruleset\n"
        if rules:
            script += "table inet fleet {\n"
            for hook in ("input", "output"):
                script += f"  chain {hook} {{ type filter hook {hook} priority 0; policy accept;\n"
                script += f"    {rules}\n  }}\n"
            script += "}\n"
        p = subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=script,
                           capture_output=True, text=True, timeout=30)
        if p.returncode != 0:
            raise RuntimeError(f"nft in {ns}: {p.stderr.strip()}")

    def cut(self, idx):
        """Cuts the agents' network: every packet dropped (nft), or the
        link down when nft is missing."""
        for i in idx:
            if self.have_nft:
                self._nft(i, "meta l4proto tcp drop")
            else:
                self._batch([f"link set v{i} down"], ns=self.mp_ns)
            self.impaired[i] = "cut"

    def _tc(self, i, args):
        return subprocess.run(["tc", "-n", self.agent_ns[i]] + args, capture_output=True,
                              text=True, timeout=30).returncode == 0

    def degrade(self, idx, loss_pct, delay_ms=40):
        """Loss (and delay, where the kernel has sch_netem) on the agents'
        links. Returns what was applied, or None."""
        if idx and self._tc(idx[0], ["qdisc", "replace", "dev", "eth0", "root", "netem", "delay",
                                     f"{delay_ms}ms", "loss", f"{loss_pct}%"]):
            for i in idx[1:]:
                self._tc(i, ["qdisc", "replace", "dev", "eth0", "root", "netem", "delay",
                             f"{delay_ms}ms", "loss", f"{loss_pct}%"])
            for i in idx:
                self.impaired[i] = "netem"
            return f"netem delay {delay_ms} ms and {loss_pct}% loss on the others"
        if not self.have_nft:
            return None
        for i in idx:
            self._nft(i, f"meta l4proto tcp numgen random mod 100 < {int(loss_pct)} drop")
            self.impaired[i] = "loss"
        return (f"{loss_pct}% loss on the others (nft); no added delay: this kernel has no "
                "sch_netem")

    def restore(self, idx):
        for i in idx:
            how = self.impaired.pop(i, None)
            if how == "netem":
                self._tc(i, ["qdisc", "del", "dev", "eth0", "root"])
            elif self.have_nft:
                self._nft(i, "")
            else:
                self._batch([f"link set v{i} up"], ns=self.mp_ns)

    def pids_in(self, ns):
        p = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
        return [int(x) for x in p.stdout.split()] if p.returncode == 0 else []

    def teardown(self):
        # Any process still inside one of our namespaces was started by us
        # (or by a hook of ours): end it before deleting the namespace.
        for ns in self.created:
            for pid in self.pids_in(ns):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for i in range(0, len(self.created), 500):
            lines = [f"netns del {ns}" for ns in self.created[i:i + 500]]
            subprocess.run(["ip", "-force", "-batch", "-"], input="\n".join(lines) + "\n",
                           capture_output=True, text=True, timeout=300)
        self.created = []
        self._restore_neigh_limits()


def netns_usable():
    if os.geteuid() != 0 or not shutil.which("ip"):
        return "not root" if os.geteuid() != 0 else "no ip(8)"
    probe = f"tflprobe{os.getpid()}"
    p = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if p.returncode != 0:
        return f"ip netns add failed: {p.stderr.strip()}"
    try:
        q = subprocess.run(["ip", "-n", probe, "link", "add", "br0", "type", "bridge"],
                           capture_output=True, text=True)
        if q.returncode != 0:
            return f"cannot create a bridge: {q.stderr.strip()}"
        q = subprocess.run(["ip", "-n", probe, "link", "add", "name", "va", "type", "veth", "peer",
                            "name", "vb"], capture_output=True, text=True)
        if q.returncode != 0:
            return f"cannot create a veth pair: {q.stderr.strip()}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


# --------------------------------------------------------------------------
# Processes


# Prefixes each line with CLOCK_MONOTONIC seconds (the clock of the
# harness's time.monotonic()), so that log lines time events precisely.
STAMPER = r"""
import sys, time
out = open(sys.argv[1], "ab", buffering=0)
for line in sys.stdin.buffer:
    out.write(b"%.6f " % time.monotonic() + line)
"""
STAMP_RE = re.compile(r"^(\d+\.\d{6}) (.*)$")


class Proc:
    """A child in its own process group; kill() ends the whole group.
    stamp=True: its output goes through a time-stamping process."""

    def __init__(self, name, argv, log_path, preexec=None, env=None, stamp=False):
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.logf = open(log_path, "ab")
        self.logf.write(f"\n=== {time.strftime('%H:%M:%S')} start {' '.join(argv)}\n".encode())
        self.logf.flush()
        self.stamper = None
        out = self.logf
        if stamp:
            self.stamper = subprocess.Popen([sys.executable, "-c", STAMPER, log_path],
                                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                            start_new_session=True)
            out = self.stamper.stdin
        fn, fd = preexec if preexec else (None, None)
        try:
            self.p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                      stderr=subprocess.STDOUT, start_new_session=True,
                                      preexec_fn=fn, env=env)
        finally:
            if fd is not None:
                os.close(fd)
            if self.stamper is not None:
                self.stamper.stdin.close()
        self.pid = self.p.pid
        self.started = time.monotonic()

    def stamped_lines(self):
        """(monotonic time, text) of every time-stamped line."""
        out = []
        for line in self.log_text().splitlines():
            m = STAMP_RE.match(line)
            if m:
                out.append((float(m.group(1)), m.group(2)))
        return out

    def _end_stamper(self):
        if self.stamper is not None:
            try:
                self.stamper.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.stamper.kill()
                self.stamper.wait()
            self.stamper = None

    def alive(self):
        return self.p.poll() is None

    def signal(self, sig):
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            pass

    def kill(self):
        self.signal(signal.SIGKILL)
        try:
            self.p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self._end_stamper()
        self.logf.close()

    def stop(self, timeout=10):
        """SIGTERM, then SIGKILL after timeout. Returns the exit status."""
        self.signal(signal.SIGTERM)
        try:
            rc = self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            rc = None
        self.signal(signal.SIGKILL)  # the rest of the group, if any
        if rc is None:
            self.p.wait(timeout=10)
        self._end_stamper()
        self.logf.close()
        return rc

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""


# --------------------------------------------------------------------------
# The fleet


class Fleet:
    def __init__(self, args, net, work):
        self.args = args
        self.net = net
        self.work = work
        self.n = args.agents
        self.mp = None
        self.mp_dir = os.path.join(work, "mp")
        self.agents = [None] * self.n
        self.agent_dirs = [os.path.join(work, "agents", f"a{i}") for i in range(self.n)]
        self.mounts = []
        self.pushes = []  # (push_id, task_guid, scenario)
        self.mp_starts = 0
        # The agents' copies of the MP's certificate and site key, readable
        # by the unprivileged channel process.
        self.trust_dir = os.path.join(work, "trust")
        # As root, tetherd splits in two and its channel process drops to
        # an unprivileged user: "nobody" here (no "tether" user needed).
        self.user_line = "user = nobody\n" if os.geteuid() == 0 else ""

    # ---- MP

    def mp_cmd(self, *args):
        return [self.args.mp] + list(args)

    def admin(self, *args, timeout=60, check=True):
        return run(self.mp_cmd(*args, "--state-dir", self.mp_dir), check=check, timeout=timeout)

    def admin_json(self, *args, timeout=60):
        p = self.admin(*args, "--json", timeout=timeout)
        try:
            return json.loads(p.stdout)
        except ValueError as e:
            raise RuntimeError(f"tether-mp {' '.join(args)} --json printed no JSON: {e}: "
                               f"{p.stdout[:300]!r}")

    def start_mp(self, extra=()):
        os.makedirs(os.path.join(self.mp_dir, "policies"), exist_ok=True)
        policy = os.path.join(self.mp_dir, "policies", "machine.xml")
        if not os.path.exists(policy):
            uuid = open("/proc/sys/kernel/random/uuid").read().strip().upper()
            ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            with open(policy, "w") as f:
                f.write(f'<Policy Version="1" Scope="machine" TimeStamp="{ts}" '
                        f'PolicyID="{uuid}">\n</Policy>\n')
        try:
            os.unlink(os.path.join(self.mp_dir, "ports"))
        except FileNotFoundError:
            pass
        argv = self.mp_cmd("serve", "--state-dir", self.mp_dir,
                           "--listen", f"{self.net.mp_addr}:{self.net.tcp_port}",
                           "--https-listen", f"{self.net.mp_addr}:{self.net.https_port}",
                           "--console-listen", "off",
                           "--approval", "auto", "--keepalive", str(self.args.keepalive),
                           "--tls-name", self.net.mp_addr, "--tls-name", "localhost",
                           *extra)
        self.mp_starts += 1
        self.mp = Proc("tether-mp", argv, os.path.join(self.work, "mp.log"),
                       preexec=self.net.mp_preexec(), stamp=True)
        deadline = time.monotonic() + 30
        while not os.path.exists(os.path.join(self.mp_dir, "ports")):
            if not self.mp.alive():
                raise RuntimeError(f"tether-mp exited at start:\n{tail(self.mp.log_text())}")
            if time.monotonic() > deadline:
                raise RuntimeError("tether-mp did not write its ports file within 30 s")
            time.sleep(0.05)
        # The admin socket may come a moment after the listeners.
        while True:
            if self.admin("devices", check=False).returncode == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("tether-mp admin socket did not answer within 30 s")
            time.sleep(0.05)

    def publish_trust(self):
        os.makedirs(self.trust_dir, mode=0o755, exist_ok=True)
        for name in ("tls.crt", "site.pub"):
            shutil.copy(os.path.join(self.mp_dir, name), os.path.join(self.trust_dir, name))
            os.chmod(os.path.join(self.trust_dir, name), 0o644)

    def fingerprint(self):
        p = run(self.mp_cmd("site-key", "--state-dir", self.mp_dir))
        m = re.search(r"fingerprint:\s*([0-9a-fA-F]{64})", p.stdout)
        if not m:
            raise RuntimeError(f"no fingerprint in: {p.stdout[:200]}")
        return m.group(1).lower()

    # ---- agents

    def write_agent(self, i, hook_sleep=0):
        d = self.agent_dirs[i]
        for sub in ("state", "run", "cycles.d/machine-policy", "cycles.d/user-policy",
                    "cycles.d/app-evaluation"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        mid = os.path.join(d, "machine-id")
        if not os.path.exists(mid):
            with open(mid, "w") as f:
                f.write("%032x\n" % random.getrandbits(128))
        # The hook sleeps only while <agent>/hook-sleep holds a number, and
        # leaves a marker with its PID so that the harness can see a cycle
        # in flight (and end an orphaned hook at teardown).
        hook = os.path.join(d, "cycles.d/machine-policy/50-fleet")
        with open(hook, "w") as f:
            f.write(f"""#!/bin/sh
d='{d}'
if [ -s "$d/hook-sleep" ]; then
    echo $$ >>"$d/hook-started"
    sleep "$(cat "$d/hook-sleep")"
fi
exit 0
""")
        os.chmod(hook, 0o755)
        conf = os.path.join(d, "tether.conf")
        with open(conf, "w") as f:
            f.write(f"""# written by tests/fleet/fleet.py
[mp]
host = {self.net.mp_addr}
tcp_port = {self.net.tcp_port}
https_port = {self.net.https_port}
transport = tcp
ca_file = {self.trust_dir}/tls.crt

[trust]
site_key = {self.trust_dir}/site.pub

[agent]
state_dir = {d}/state
runtime_dir = {d}/run
machine_id_file = {mid}
start_delay_max_seconds = {self.args.start_delay}
boot_start_delay_max_seconds = 0
{self.user_line}
[cycles]
cycles_dir = {d}/cycles.d
""")
        return conf

    def start_agent(self, i):
        conf = os.path.join(self.agent_dirs[i], "tether.conf")
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=0")
        self.agents[i] = Proc(f"tetherd[{i}]", [self.args.tetherd, "--config", conf],
                              os.path.join(self.agent_dirs[i], "tetherd.log"),
                              preexec=self.net.preexec(i), env=env)

    def start_agents(self, idx=None):
        idx = range(self.n) if idx is None else idx
        for i in idx:
            self.start_agent(i)

    def check_config(self):
        conf = self.write_agent(0)
        p = run([self.args.tetherd, "--check-config", "--config", conf], check=False)
        if p.returncode != 0:
            raise RuntimeError(f"tetherd --check-config refused the harness's config:\n"
                               f"{p.stdout}{p.stderr}")

    # ---- MP records

    def devices(self):
        return find_records(self.admin_json("devices"), "clientid")

    @staticmethod
    def is_online(dev):
        v = dev.get("online", dev.get("connection", dev.get("state")))
        if isinstance(v, bool):
            return v
        return str(v).lower() in ("online", "true", "connected", "1")

    def wait_online(self, count, timeout, what="agents"):
        deadline = time.monotonic() + timeout
        while True:
            devs = self.devices()
            online = [d for d in devs if self.is_online(d)]
            if len(online) >= count:
                return devs
            if time.monotonic() > deadline:
                raise ScenarioFailed(f"only {len(online)} of {count} {what} online after "
                                     f"{timeout} s")
            self.check_agents_alive()
            time.sleep(0.2)

    def check_agents_alive(self, allow=()):
        dead = [i for i, a in enumerate(self.agents)
                if a is not None and not a.alive() and i not in allow]
        if dead:
            i = dead[0]
            raise ScenarioFailed(f"tetherd[{i}] exited ({self.agents[i].p.returncode}) "
                                 f"unexpectedly:\n{tail(self.agents[i].log_text())}")

    def push(self, scenario, task_type="1", expires=None, extra=()):
        args = ["push", "--type", task_type, "--all"] + list(extra)
        if expires:
            args += ["--expires", str(expires)]
        p = self.admin(*args)
        m = re.search(r"PushID:\s*(\d+)\s+TaskGUID:\s*([0-9A-Fa-f-]{36})", p.stdout)
        if not m:
            raise RuntimeError(f"tether-mp push printed no PushID: {p.stdout[:200]!r}")
        push = (int(m.group(1)), m.group(2).upper(), scenario)
        self.pushes.append(push)
        return push

    def push_status(self, push_id, wait=None):
        args = ["push-status", str(push_id), "--json"]
        if wait:
            args[2:2] = ["--wait", str(wait)]
        p = self.admin(*args, timeout=(wait or 0) + 60, check=False)
        if p.returncode not in (0, 3):
            raise RuntimeError(f"push-status {push_id} exited {p.returncode}: {p.stderr.strip()}")
        try:
            return find_records(json.loads(p.stdout), "clientid"), p.returncode == 0
        except ValueError:
            raise RuntimeError(f"push-status {push_id} printed no JSON: {p.stdout[:300]!r}")

    def responses(self):
        obj = self.admin_json("responses", "--limit", str(max(1000, 4 * self.n * len(self.pushes))))
        return find_records(obj, "clientid")

    def assert_exactly_once(self, pushes, wait):
        """Every agent of the fleet is a target of each push, each target
        answered, and the MP recorded exactly one response per (ClientID,
        TaskGUID)."""
        fleet_ids = {d["clientid"] for d in self.devices()}
        if len(fleet_ids) != self.n:
            raise ScenarioFailed(f"the MP knows {len(fleet_ids)} devices, the fleet has {self.n}")
        deadline = time.monotonic() + wait
        for push_id, guid, _ in pushes:
            left = max(1, int(deadline - time.monotonic()))
            recs, done = self.push_status(push_id, wait=left)
            targets = {r["clientid"] for r in recs}
            missing = fleet_ids - targets
            if missing:
                raise ScenarioFailed(f"push {push_id}: {len(missing)} agents are not targets")
            states = {}
            for r in recs:
                states.setdefault(str(r.get("state")).lower(), []).append(r["clientid"])
            not_answered = {s: len(v) for s, v in states.items() if s != "answered"}
            if not_answered or not done:
                raise ScenarioFailed(f"push {push_id}: not every target answered within "
                                     f"{wait} s: states {not_answered or states.keys()}")
        counts = {}
        for r in self.responses():
            g = str(r.get("taskguid", "")).upper()
            counts[(r["clientid"], g)] = counts.get((r["clientid"], g), 0) + 1
            xml = str(r.get("responsexml", ""))
            if xml and not (re.search(rf"<TaskGUID>{re.escape(g)}</TaskGUID>", xml, re.I) and
                            re.search(rf"<ClientID>{re.escape(r['clientid'])}</ClientID>", xml, re.I)):
                raise ScenarioFailed(f"recorded response XML does not name its TaskGUID {g} and "
                                     f"ClientID {r['clientid']}: {xml[:200]}")
        for push_id, guid, _ in pushes:
            for cid in fleet_ids:
                c = counts.get((cid, guid), 0)
                if c != 1:
                    raise ScenarioFailed(f"push {push_id}: {c} recorded responses from {cid} "
                                         f"(want exactly 1)")
        return len(fleet_ids) * len(pushes)

    SANITIZER_RE = re.compile(r"ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:|"
                              r"AddressSanitizer:DEADLYSIGNAL")

    def sanitizer_reports(self):
        """New sanitizer reports in any log since the last call."""
        if not hasattr(self, "log_offsets"):
            self.log_offsets = {}
        found = []
        for path in [os.path.join(self.work, "mp.log")] + \
                [os.path.join(d, "tetherd.log") for d in self.agent_dirs]:
            try:
                with open(path, "rb") as fh:
                    fh.seek(self.log_offsets.get(path, 0))
                    text = fh.read().decode("utf-8", "replace")
                    self.log_offsets[path] = fh.tell()
            except OSError:
                continue
            for line in text.splitlines():
                if self.SANITIZER_RE.search(line):
                    found.append(f"{os.path.relpath(path, self.work)}: {line.strip()[:200]}")
                    break
        return found

    # ---- teardown

    def teardown(self):
        for a in self.agents:
            if a is not None and a.alive():
                a.signal(signal.SIGKILL)
        if self.mp is not None and self.mp.alive():
            self.mp.signal(signal.SIGKILL)
        for a in self.agents:
            if a is not None:
                a.kill()
        if self.mp is not None:
            self.mp.kill()
        # Hooks run in process groups of their own: end any still sleeping.
        for d in self.agent_dirs:
            try:
                with open(os.path.join(d, "hook-started")) as f:
                    for line in f:
                        try:
                            os.kill(int(line), signal.SIGKILL)
                        except (ValueError, ProcessLookupError, PermissionError):
                            pass
            except FileNotFoundError:
                pass
        for m in self.mounts:
            subprocess.run(["umount", "-l", m], capture_output=True)
        self.mounts = []


def tail(text, lines=25):
    return "\n".join(text.rstrip().splitlines()[-lines:])


# --------------------------------------------------------------------------
# Scenarios


def third(n):
    return max(1, n // 3)


def s_steady(f, a):
    push = f.push("steady", expires=600)
    t0 = time.monotonic()
    n = f.assert_exactly_once([push], wait=a.wait)
    return f"{n} responses, each recorded once, in {time.monotonic() - t0:.2f} s"


def s_mp_sigkill(f, a):
    # A slow fan-out, so that the kill lands in its middle.
    rate = max(1, f.n // 2)
    f.mp.stop()
    f.start_mp(extra=["--push-rate", str(rate), "--push-batch", "1"])
    f.wait_online(f.n, a.wait)
    push = f.push("mp-sigkill", expires=600)
    time.sleep(0.8)
    recs, _ = f.push_status(push[0])
    delivered = sum(1 for r in recs if str(r.get("state")).lower() != "pending")
    f.mp.signal(signal.SIGKILL)
    f.mp.kill()
    log(f"tether-mp SIGKILLed with {delivered} of {f.n} targets past 'pending'")
    time.sleep(0.5)
    f.start_mp()
    n = f.assert_exactly_once([push], wait=a.wait)
    return f"killed at {delivered}/{f.n} delivered; after restart {n} responses, each once"


def s_network_cut(f, a):
    why = f.net.can_impair()
    if why:
        raise ScenarioSkipped(why)
    cut = list(range(third(f.n)))
    rest = list(range(third(f.n), f.n))
    note = f.net.degrade(rest, 20) or "no loss on the others: neither netem nor nft here"
    f.net.cut(cut)
    cut_for = 2 * a.keepalive + 3
    log(f"network of {len(cut)} agents cut for {cut_for} s; {note}")
    by_host = {str(d.get("hostname")): d["clientid"] for d in f.devices()}
    cut_ids = {by_host.get(f"fleet-a{i}") for i in cut}
    push = f.push("network-cut", expires=600)
    time.sleep(cut_for)
    # The cut must really have cut: no cut agent answered while it lasted.
    recs, _ = f.push_status(push[0])
    during = {r["clientid"] for r in recs if str(r.get("state")).lower() == "answered"}
    f.net.restore(cut)
    f.net.restore(rest)
    if None not in cut_ids and during & cut_ids:
        raise ScenarioFailed(f"{len(during & cut_ids)} cut agents answered during the cut: "
                             "the cut did not cut")
    note += f"; during the cut {len(during - cut_ids)} of {len(rest)} others answered"
    n = f.assert_exactly_once([push], wait=a.wait + 60)
    return f"{len(cut)} agents cut {cut_for} s (> 2 keepalives of {a.keepalive} s); {note}; " \
           f"{n} responses, each once"


def s_agent_sigkill(f, a):
    victims = list(range(third(f.n)))
    for i in range(f.n):
        with open(os.path.join(f.agent_dirs[i], "hook-sleep"), "w") as fh:
            fh.write("3\n")
        try:
            os.unlink(os.path.join(f.agent_dirs[i], "hook-started"))
        except FileNotFoundError:
            pass
    try:
        push = f.push("agent-sigkill", expires=600)
        deadline = time.monotonic() + a.wait
        started = lambda i: os.path.exists(os.path.join(f.agent_dirs[i], "hook-started"))
        while not all(started(i) for i in victims):
            if time.monotonic() > deadline:
                raise ScenarioFailed("the cycles' hooks did not start on the victims")
            time.sleep(0.05)
        for i in victims:
            f.agents[i].signal(signal.SIGKILL)
        for i in victims:
            f.agents[i].kill()
        log(f"SIGKILLed {len(victims)} agents while their cycle's hook ran")
        time.sleep(0.3)
        f.start_agents(victims)
        n = f.assert_exactly_once([push], wait=a.wait + 30)
    finally:
        for i in range(f.n):
            try:
                os.unlink(os.path.join(f.agent_dirs[i], "hook-sleep"))
            except FileNotFoundError:
                pass
    return f"{len(victims)} agents killed mid-cycle and restarted; {n} responses, each once"


def s_disk_full(f, a):
    if os.geteuid() != 0:
        raise ScenarioSkipped("needs root to mount a tmpfs")
    i = f.n - 1
    state = os.path.join(f.agent_dirs[i], "state")
    devs_before = {d["clientid"] for d in f.devices()}
    f.agents[i].stop()
    # Move the agent's state onto a tiny tmpfs, keeping its identity.
    keep = state + ".keep"
    shutil.move(state, keep)
    os.makedirs(state)
    run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "fleet-tmpfs", state])
    f.mounts.append(state)
    run(["cp", "-a", keep + "/.", state + "/"])
    shutil.rmtree(keep)
    f.start_agent(i)
    f.wait_online(f.n, a.wait)
    filler = os.path.join(state, "fleet-filler")
    try:
        with open(filler, "wb", buffering=0) as fh:
            try:
                while True:
                    fh.write(b"\0" * 4096)
            except OSError:
                pass
        log_before = len(f.agents[i].log_text())
        push = f.push("disk-full", expires=600)
        deadline = time.monotonic() + 10
        said = ""
        while time.monotonic() < deadline:
            said = f.agents[i].log_text()[log_before:]
            if re.search(r"no space|disk full|ENOSPC|space left", said, re.I):
                break
            time.sleep(0.2)
        if not f.agents[i].alive():
            raise ScenarioFailed(f"tetherd exited when its disk filled:\n{tail(said)}")
        if not re.search(r"no space|disk full|ENOSPC|space left", said, re.I):
            raise ScenarioFailed("tetherd did not say that its state directory is full:\n"
                                 + tail(said))
        line = [x for x in said.splitlines() if re.search(r"no space|space left", x, re.I)][0]
        log(f"agent {i} said: {line.strip()}")
    finally:
        try:
            os.unlink(filler)
        except FileNotFoundError:
            pass
    try:
        n = f.assert_exactly_once([push], wait=a.wait + 30)
    except ScenarioFailed as e:
        raise ScenarioFailed(f"after space returned: {e}; the full agent had said: "
                             f"{line.strip()[:300]}")
    devs_after = {d["clientid"] for d in f.devices()}
    if devs_after != devs_before:
        raise ScenarioFailed("the agent's identity changed across the full disk")
    conflicts = f.admin_json("conflicts")
    if find_records(conflicts, "clientid"):
        raise ScenarioFailed(f"the MP recorded ClientID conflicts: {conflicts}")
    return f"agent {i} said its disk was full, kept its identity, and answered after space " \
           f"returned; {n} responses, each once"


def reconnect_curve(f, t_restart, timeout, period):
    """Samples `tether-mp devices --json` and returns each agent's time
    back online, in seconds after t_restart."""
    back = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        t = time.monotonic() - t_restart
        try:
            devs = f.devices()
        except (RuntimeError, subprocess.TimeoutExpired):
            devs = []
        for d in devs:
            if f.is_online(d) and d["clientid"] not in back:
                back[d["clientid"]] = t
        if len(back) >= f.n:
            break
        time.sleep(period)
    return sorted(back.values())


def curve_buckets(times, width):
    if not times:
        return []
    nb = int(times[-1] / width) + 1
    b = [0] * nb
    for t in times:
        b[int(t / width)] += 1
    return [(k * width, c / width) for k, c in enumerate(b)]


def s_graceful_restart(f, a):
    log_before = len(f.mp.log_text())
    t_goodbye = time.monotonic()
    rc = f.mp.stop(timeout=30)
    if rc != 0:
        raise ScenarioFailed(f"tether-mp exited {rc} on SIGTERM (want 0)")
    said = f.mp.log_text()[log_before:]
    m = re.search(r"RetryAfterSeconds=(\d+)", said)
    window = int(m.group(1)) if m else None
    f.start_mp()
    t_up = time.monotonic() - t_goodbye
    period = 0.1 if f.n <= 200 else 0.25
    sampled = reconnect_curve(f, t_goodbye, a.wait + (window or 0) + 30, period)
    if len(sampled) < f.n:
        raise ScenarioFailed(f"only {len(sampled)} of {f.n} agents came back")
    # Precise times: the restarted MP's own "signed in" lines, first per
    # client; the sampled times (resolution {period} s) where those lack.
    first = {}
    for t, text in f.mp.stamped_lines():
        m = re.search(r"Client '([0-9A-Fa-f-]{36})'.* signed in from", text)
        if m and t > t_goodbye:
            first.setdefault(m.group(1), t - t_goodbye)
    times = sorted(first.values()) if len(first) >= f.n else sampled
    f.results_extra["reconnect_source"] = "mp-log" if times is not sampled else "devices-sampling"
    width = max(0.5, (window or 5) / 10)
    curve = curve_buckets(times, width)
    peak = max(c for _, c in curve) * width
    spread = times[-1] - times[0]
    f.results_extra.update({"reconnect_times": times, "reconnect_curve": curve,
                            "retry_after_s": window, "mp_up_s": t_up})
    desc = (f"GOODBYE(shutdown) RetryAfterSeconds={window}; MP back after {t_up:.2f} s; "
            f"agents back from {times[0]:.2f} s to {times[-1]:.2f} s after the GOODBYE "
            f"(spread {spread:.2f} s, median {percentile(times, 50):.2f} s), peak {int(peak)} "
            f"of {f.n} in one {width} s bin")
    log("reconnection curve (s after GOODBYE: connections/s): " +
        " ".join(f"{t:.1f}:{c:.0f}" for t, c in curve if c))
    # Spread, not a spike: spread uniformly over the advertised window, a
    # bin holds N * width / window sign-ins on average. A spike is a bin
    # with more than twice that, plus three standard deviations (Poisson)
    # and 2 for small fleets: the MP takes sign-ins at a finite rate, so a
    # real spread is never perfectly flat. Without a window in the MP's
    # log: no bin may hold more than half of the fleet.
    if window:
        expected = f.n * width / window
        limit = 2 * expected + 3 * math.sqrt(expected) + 2
        rule = (f"uniform over the {window} s window gives {expected:.1f} per bin; "
                f"allowed at most {limit:.0f}")
    else:
        limit = max(3, f.n / 2)
        rule = f"no RetryAfterSeconds in the MP log; allowed at most {limit:.0f} per bin"
    f.results_extra["reconnect_peak_limit"] = limit
    desc += f" ({rule})"
    if window:
        # tetherd picks a point of [RetryAfterSeconds, 2 x RetryAfterSeconds]
        # (agent/channeld.c); 1 s more for the sign-in itself.
        within = times[-1] <= 2 * window + 1.0
        f.results_extra["back_within_window"] = within
        desc += (f"; {'all' if within else 'NOT all'} back within 2 x RetryAfterSeconds + 1 s")
    if f.n >= 6 and peak > limit:
        raise ScenarioFailed(desc + ": a spike, not spread by jitter over the advertised window")
    push = f.push("graceful-restart", expires=600)
    n = f.assert_exactly_once([push], wait=a.wait)
    return desc + f"; then {n} responses, each once"


def s_fanout(f, a):
    """Bench: one push to all; from the MP's time-stamped log, when its
    fan-out finished and when each response arrived."""
    t0 = time.monotonic()
    push = f.push("fanout", expires=600)
    t_cmd = time.monotonic() - t0
    n = f.assert_exactly_once([push], wait=a.wait)
    pid = push[0]
    fan_start = fan_end = None
    answered = {}
    for t, text in f.mp.stamped_lines():
        if t < t0:
            continue
        if fan_start is None and f"Starting to send push task (PushID: {pid} " in text:
            fan_start = t - t0
        elif fan_end is None and f"Finished sending push task (PushID: {pid} " in text:
            fan_end = t - t0
        else:
            m = re.search(rf"Receive task response message .*<PushID>{pid}</PushID>.*"
                          r"from client '([0-9A-Fa-f-]{36})'", text)
            if m:
                answered.setdefault(m.group(1), t - t0)
    resp = sorted(answered.values())
    if len(resp) < f.n or fan_end is None:
        raise ScenarioFailed(f"the MP log shows {len(resp)} responses of {f.n} and "
                             f"{'no' if fan_end is None else 'a'} fan-out end")
    f.results_extra["fanout"] = {"push_cmd_s": t_cmd, "fanout_start_s": fan_start,
                                 "fanout_end_s": fan_end, "responses_s": resp}
    return (f"push command {t_cmd * 1000:.0f} ms; MP fan-out to {f.n} finished at "
            f"{fan_end * 1000:.0f} ms; responses: median {percentile(resp, 50) * 1000:.0f} ms, "
            f"p99 {percentile(resp, 99) * 1000:.0f} ms, last {resp[-1] * 1000:.0f} ms after the "
            f"push command; {n} responses, each once")


RUNNERS = {
    "steady": s_steady,
    "mp-sigkill": s_mp_sigkill,
    "network-cut": s_network_cut,
    "agent-sigkill": s_agent_sigkill,
    "disk-full": s_disk_full,
    "graceful-restart": s_graceful_restart,
    "fanout": s_fanout,
}


# --------------------------------------------------------------------------

ECHO_SERVER = r"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(64)
while True:
    c, _ = s.accept(); c.sendall(c.recv(64)); c.close()
"""
ECHO_CLIENT = r"""
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
c.sendall(socket.gethostname().encode()); print(c.recv(64).decode())
"""


def net_selftest(a):
    """Checks the harness's own network plumbing without Tether: each agent
    namespace reaches the MP namespace, and only that; cut and restore
    work. Needs root and ip netns; skips (exit 77) otherwise."""
    why = netns_usable()
    if why:
        print(f"fleet net-selftest: skipped: {why}", flush=True)
        return 77
    n = min(a.agents, 6)
    net = NetnsNet(n)
    work = tempfile.mkdtemp(prefix="tether-fleet-net.")
    server = None
    failures = []

    def probe(i, timeout=2.0):
        fn, fd = net.preexec(i)
        try:
            p = subprocess.run([sys.executable, "-c", ECHO_CLIENT, net.mp_addr, "10123",
                                str(timeout)], capture_output=True, text=True, timeout=20,
                               preexec_fn=fn)
        finally:
            os.close(fd)
        return p.returncode == 0 and p.stdout.strip() == f"fleet-a{i}"

    try:
        net.setup()
        server = Proc("echo", [sys.executable, "-c", ECHO_SERVER, net.mp_addr, "10123"],
                      os.path.join(work, "echo.log"), preexec=net.mp_preexec())
        time.sleep(0.5)
        for i in range(n):
            if not probe(i):
                failures.append(f"agent namespace {i} cannot reach the MP namespace")
        # The range must exist only inside our namespaces (checked on the
        # root namespace's own addresses; no packet is sent from there).
        root_addrs = subprocess.run(["ip", "-o", "addr", "show"], capture_output=True,
                                    text=True).stdout
        if NET_PREFIX in root_addrs:
            failures.append(f"an address in {NET_PREFIX}0.0/15 exists in the root namespace")
        if net.have_nft:
            net.cut([0])
            if probe(0, timeout=1.0):
                failures.append("a cut agent still reaches the MP")
            if n > 1 and not probe(1):
                failures.append("cutting agent 0 cut agent 1 too")
            net.restore([0])
            if not probe(0):
                failures.append("a restored agent does not reach the MP")
        else:
            print("fleet net-selftest: nft missing, cut not checked", flush=True)
    finally:
        if server is not None:
            server.kill()
        net.teardown()
        shutil.rmtree(work, ignore_errors=True)
    left = [ns for ns in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                        text=True).stdout.split() if ns.startswith(net.mp_ns[:-1])]
    if left:
        failures.append(f"namespaces left behind: {left}")
    for f in failures:
        print(f"fleet net-selftest: FAIL: {f}", flush=True)
    print(f"fleet net-selftest: {0 if failures else 1} passed, {1 if failures else 0} failed",
          flush=True)
    return 1 if failures else 0


def main():
    if "--net-selftest" in sys.argv:
        ap = argparse.ArgumentParser()
        ap.add_argument("--net-selftest", action="store_true")
        ap.add_argument("--agents", type=int, default=4)
        return net_selftest(ap.parse_args())

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tetherd", required=True)
    ap.add_argument("--mp", required=True, help="the tether-mp binary")
    ap.add_argument("--agents", type=int, default=20)
    ap.add_argument("--scenarios", default="1,2,3,4,5,6",
                    help="comma-separated numbers or names (also: fanout)")
    ap.add_argument("--mode", choices=("auto", "netns", "plain"), default="auto")
    ap.add_argument("--keepalive", type=int, default=2, help="MP keepalive seconds")
    ap.add_argument("--start-delay", type=int, default=0,
                    help="agents' start_delay_max_seconds")
    ap.add_argument("--wait", type=int, default=30,
                    help="seconds to wait for answers or reconnections")
    ap.add_argument("--time-limit", type=int, default=600, help="whole run, seconds")
    ap.add_argument("--workdir", help="keep files here instead of a temporary directory")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--json-out", help="write the results (and curves) here")
    a = ap.parse_args()

    names = []
    for s in a.scenarios.split(","):
        s = s.strip()
        name = SCENARIOS.get(s, s)
        if name not in RUNNERS:
            ap.error(f"unknown scenario {s}")
        names.append(name)
    for b in (a.tetherd, a.mp):
        if not os.access(b, os.X_OK):
            print(f"fleet: {b} is not an executable (build tetherd and tether-mp first)",
                  file=sys.stderr)
            return 2
    if not 1 <= a.agents <= 20000:
        ap.error("--agents must be within 1..20000")

    def on_signal(signum, frame):
        if signum == signal.SIGALRM:
            raise TimeLimit(f"time limit of {a.time_limit} s reached")
        raise TimeLimit(f"signal {signal.Signals(signum).name}")

    signal.signal(signal.SIGALRM, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.alarm(a.time_limit)

    mode = a.mode
    if mode in ("auto", "netns"):
        why = netns_usable()
        if why and mode == "netns":
            print(f"fleet: netns mode unavailable: {why}", file=sys.stderr)
            return 2
        mode = "plain" if why else "netns"
        if why:
            log(f"network namespaces unavailable ({why}): plain-process mode on 127.0.0.1")
    net = NetnsNet(a.agents) if mode == "netns" else PlainNet(a.agents)
    log(f"mode {mode}: {a.agents} agents, keepalive {a.keepalive} s, scenarios "
        f"{', '.join(names)}")

    work = a.workdir or tempfile.mkdtemp(prefix="tether-fleet.")
    os.makedirs(work, exist_ok=True)
    os.chmod(work, 0o755)  # the agents' channel processes run as nobody
    results = []
    fleet = None
    t_all = time.monotonic()
    try:
        t0 = time.monotonic()
        net.setup()
        fleet = Fleet(a, net, work)
        fleet.results_extra = {}
        fleet.start_mp()
        fleet.fingerprint()
        fleet.publish_trust()
        for i in range(a.agents):
            fleet.write_agent(i)
        fleet.check_config()
        fleet.start_agents()
        fleet.wait_online(a.agents, a.wait + a.agents // 20 + a.start_delay)
        log(f"fleet up in {time.monotonic() - t0:.1f} s ({mode} mode)")
        for name in names:
            fleet.results_extra = {}
            t1 = time.monotonic()
            try:
                fleet.check_agents_alive()
                # Each scenario starts from a whole fleet online.
                fleet.wait_online(a.agents, a.wait)
                desc = RUNNERS[name](fleet, a)
                fleet.check_agents_alive()
                reports = fleet.sanitizer_reports()
                if reports:
                    raise ScenarioFailed("sanitizer reports: " + "; ".join(reports[:3]))
                res = ("PASS", desc)
            except ScenarioSkipped as e:
                res = ("SKIP", str(e))
            except ScenarioFailed as e:
                res = ("FAIL", str(e))
            except (RuntimeError, subprocess.TimeoutExpired, OSError) as e:
                res = ("FAIL", f"{type(e).__name__}: {e}")
            dt = time.monotonic() - t1
            log(f"{res[0]} {name} ({dt:.1f} s): {res[1]}")
            results.append({"scenario": name, "result": res[0], "detail": res[1],
                            "seconds": round(dt, 2), **fleet.results_extra})
            if res[0] == "FAIL" and fleet.mp is not None and not fleet.mp.alive():
                log("tether-mp is down; restarting it for the next scenario")
                fleet.mp.kill()
                fleet.start_mp()
    except TimeLimit as e:
        log(f"stopped: {e}")
        results.append({"scenario": "(run)", "result": "FAIL", "detail": f"stopped: {e}"})
    except (RuntimeError, subprocess.TimeoutExpired, OSError, ScenarioFailed) as e:
        log(f"setup failed: {e}")
        results.append({"scenario": "(setup)", "result": "FAIL", "detail": str(e)})
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if fleet is not None:
            fleet.teardown()
        net.teardown()
        failed = any(r["result"] == "FAIL" for r in results)
        if a.workdir or a.keep or (failed and os.environ.get("FLEET_KEEP_ON_FAILURE")):
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    if a.json_out:
        with open(a.json_out, "w") as fh:
            json.dump({"mode": mode, "agents": a.agents, "keepalive": a.keepalive,
                       "results": results}, fh, indent=1)
    npass = sum(1 for r in results if r["result"] == "PASS")
    nfail = sum(1 for r in results if r["result"] == "FAIL")
    nskip = sum(1 for r in results if r["result"] == "SKIP")
    log(f"total {time.monotonic() - t_all:.1f} s")
    print(f"fleet: {npass} passed, {nfail} failed, {nskip} skipped", flush=True)
    if nfail:
        return 1
    return 77 if nskip and not npass else 0  # 77: ctest's SKIP_RETURN_CODE


if __name__ == "__main__":
    sys.exit(main())
