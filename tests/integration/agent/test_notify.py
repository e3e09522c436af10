#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""A fake systemd: NOTIFY_SOCKET and WATCHDOG_USEC set, tetherd must send
READY=1, STATUS= lines that say where the channel stands, WATCHDOG=1 while
both processes answer each other (and not while the channel process is
stopped), and STOPPING=1 on SIGTERM."""
import os
import signal
import socket
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tetherlib import *  # noqa: E402,F403


class FakeSystemd:
    def __init__(self, tmp):
        self.path = tmp.sub("notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        os.chmod(self.path, 0o666)
        self.messages = []

    def drain(self, timeout):
        deadline = time.monotonic() + timeout
        got = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                break
            for line in data.decode().splitlines():
                got.append(line)
        self.messages += got
        return got

    def wait_for(self, pred, timeout, what, seen_ok=True):
        if seen_ok:
            for m in self.messages:
                if pred(m):
                    return m
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in self.drain(0.2):
                if pred(m):
                    return m
        fail("no %s from tetherd in %d s; got %r" % (what, timeout, self.messages[-20:]))


def test_notify(tmp):
    mp = MP(tmp)
    mp.start()
    agent = Agent(tmp, "127.0.0.1", mp.tcp, mp.https, site_pub=os.path.join(mp.dir, "site.pub"),
                  ca_file=os.path.join(mp.dir, "tls.crt"), user=privsep_user(),
                  extra_conf="[mp]\ntransport = tcp\n")
    sd = FakeSystemd(tmp)
    env = dict(os.environ, NOTIFY_SOCKET=sd.path, WATCHDOG_USEC="1000000")
    agent.start(env=env)
    sd.wait_for(lambda m: m == "READY=1", 30, "READY=1")
    want = "STATUS=Connected to 127.0.0.1:%d (tcp), 0 responses queued" % mp.tcp
    sd.wait_for(lambda m: m == want, 30, "'%s'" % want)
    sd.wait_for(lambda m: m == "WATCHDOG=1", 5, "WATCHDOG=1", seen_ok=False)
    # Nothing was suspended at start, so nothing is "resumed".
    if "watchdog notifications resumed" in agent.logtext():
        fail("'watchdog notifications resumed' logged at start")

    if agent.user:
        # The channel process stops answering: the watchdog is no longer fed.
        child = int(subprocess.run(["ps", "-o", "pid=", "--ppid", str(agent.proc.pid)], capture_output=True,
                                   text=True).stdout.split()[0])
        os.kill(child, signal.SIGSTOP)
        time.sleep(3)  # two missed pings, then silence
        sd.drain(0.1)
        quiet = sd.drain(2.5)
        os.kill(child, signal.SIGCONT)
        if "WATCHDOG=1" in quiet:
            fail("WATCHDOG=1 sent while the channel process was stopped: %r" % quiet)
        sd.wait_for(lambda m: m == "WATCHDOG=1", 5, "WATCHDOG=1 after the channel process came back",
                    seen_ok=False)
        wait_for(lambda: "watchdog notifications resumed" in agent.logtext(), 5, "the 'resumed' line")

    agent.kill(signal.SIGTERM)
    sd.drain(0.5)
    if "STOPPING=1" not in sd.messages:
        fail("no STOPPING=1: %r" % sd.messages[-20:])
    if agent.proc.returncode != 0:
        fail("tetherd exited with %d after SIGTERM" % agent.proc.returncode)


if __name__ == "__main__":
    sys.exit(run_test(test_notify))
