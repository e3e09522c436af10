#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""The channel process (the network-facing half) is killed with SIGKILL ten
times in a row while tasks are pushed through a real tether-mp, at random
points of their handling (before PUSH_ACK, while the cycle's hook runs,
between DONE and RESPONSE). The root process must survive every time and
start a fresh execution of tetherd (a new address-space layout, not a
fork of itself); every push must end with exactly one answer recorded by
the MP, Success; the respawn waits back off. Needs root (the real split)."""
import os
import random
import signal
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tetherlib import *  # noqa: E402,F403

KILLS = 10


def channel_pid(root_pid):
    """The root process's child that is a channel process (hooks are its
    children too)."""
    r = subprocess.run(["ps", "-o", "pid=", "--ppid", str(root_pid)], capture_output=True, text=True)
    for pid in r.stdout.split():
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                if b"--channel-process" in f.read().split(b"\0"):
                    return int(pid)
        except OSError:
            pass
    return None


def exe_base(pid):
    """Start address of the first mapping of the executable."""
    exe = os.readlink("/proc/%d/exe" % pid)
    with open("/proc/%d/maps" % pid) as f:
        for line in f:
            if line.rstrip().endswith(exe):
                return line.split("-")[0]
    fail("no mapping of %s in process %d" % (exe, pid))


def test_channel_respawn(tmp):
    user = privsep_user()
    if not user:
        log("SKIP: needs root and the user 'nobody' for the privilege split")
        sys.exit(77)
    mp = MP(tmp)
    mp.write_machine_policy()
    mp.start()
    agent = Agent(tmp, "127.0.0.1", mp.tcp, mp.https, site_pub=os.path.join(mp.dir, "site.pub"),
                  ca_file=os.path.join(mp.dir, "tls.crt"), user=user,
                  extra_conf="[mp]\ntransport = tcp\n[agent]\nrespawn_delay_max_seconds = 2\n")
    marker = tmp.sub("hook.out")
    write_hook(agent.cycles, "machine-policy", "10-slow", 'echo "$TETHER_TASK_GUID" >> %s\nsleep 0.4' % marker)
    agent.start()
    cid = agent.wait_signed_in()["client_id"]
    root = agent.proc.pid
    rng = random.Random(1234)
    pushes = []
    bases = {exe_base(root)}
    pid = wait_for(lambda: channel_pid(root), 10, "the channel process")
    for i in range(KILLS):
        pushes.append(mp.push(1, cid))
        if i % 3 == 0:
            pushes.append(mp.push(1, cid))
        time.sleep(rng.uniform(0.0, 0.8))
        log("kill %d: SIGKILL to channel process %d" % (i + 1, pid))
        os.kill(pid, signal.SIGKILL)
        new = wait_for(lambda: (lambda p: p if p and p != pid else None)(channel_pid(root)), 15,
                       "a new channel process after kill %d" % (i + 1))
        if agent.proc.poll() is not None:
            fail("the root process exited (%s) after kill %d" % (agent.proc.returncode, i + 1))
        pid = new
        bases.add(exe_base(pid))

    # Every push answered once, Success; the root process still the same.
    agent.wait_signed_in(timeout=60)
    for p in pushes:
        tgt = mp.push_status(p["push_id"], wait=90)["targets"][0]
        if tgt["state"] != "answered" or tgt["return_code"] != 1:
            fail("push %s (%s) ended %r" % (p["push_id"], p["task_guid"], tgt))
    responses = mp.responses()["responses"]
    for p in pushes:
        n = sum(1 for r in responses if r["task_guid"] == p["task_guid"])
        if n != 1:
            fail("%d responses recorded for %s" % (n, p["task_guid"]))
    # No task ran twice: a new channel process re-sends RUN for what it has
    # no answer for, and the root process neither re-runs a running task
    # nor a finished one (it passes the answer again).
    with open(marker) as f:
        ran = f.read().split()
    twice = sorted({g for g in ran if ran.count(g) > 1})
    if twice:
        fail("tasks ran more than once: %r" % twice)
    if agent.proc.poll() is not None or agent.proc.pid != root:
        fail("the root process did not survive")
    text = agent.logtext()
    killed = text.count("The channel process was killed by signal")
    if killed != KILLS:
        fail("%d channel deaths logged, wanted %d" % (killed, KILLS))
    # Backoff: the waits grew (0.1 s doubling, capped at 2 s here).
    for wait in ("0.1 s (death 1)", "0.2 s (death 2)", "2.0 s (death %d)" % KILLS):
        if "starting a new one in " + wait not in text:
            fail("no respawn line with a wait of %s" % wait)
    # A fresh execution each time: new layouts, not copies of the root's.
    if len(bases) < KILLS:
        fail("only %d distinct executable bases over %d channel processes and the root" % (len(bases), KILLS + 2))
    log("%d pushes answered once each over %d channel kills; %d layouts" % (len(pushes), KILLS, len(bases)))
    agent.kill(signal.SIGTERM)
    if agent.proc.returncode != 0:
        fail("tetherd exited with %d after SIGTERM" % agent.proc.returncode)


if __name__ == "__main__":
    sys.exit(run_test(test_channel_respawn))
