#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""PostgreSQL restarted under load: three tether-mp nodes, 12 real agents
given the three addresses (four on each node), pushes to all made in a
stream from the three nodes in turn while `pg_ctl restart -m fast` runs.
The nodes recover (each accepts pushes again after the restart); every
push the administrator was told was accepted is answered exactly once per
target in the database; a push refused during the outage reaches no
agent; no agent runs a task twice (each agent's hook logs every run). A
task whose policy fetch met the outage answers ReturnCode 2, as it should;
the push made once every agent is back is answered Success by all."""
import os
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "agent"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from multinode import *  # noqa: E402,F403

N_AGENTS = 12


def pg_ctl(*args):
    d, b = os.environ["TETHER_TEST_PG_DIR"], os.environ["TETHER_TEST_PG_BIN"]
    cmd = [os.path.join(b, "pg_ctl"), "-D", os.path.join(d, "data"), "-w", "-t", "60"] + list(args)
    if os.geteuid() == 0:
        cmd = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"] + cmd
    subprocess.run(cmd, check=True, cwd=d, stdout=subprocess.DEVNULL)


class Pusher(threading.Thread):
    """Pushes to all, from node 1, 2, 3 in turn, until told to stop."""

    def __init__(self, nodes):
        super().__init__(daemon=True)
        self.nodes = nodes
        self.accepted = []  # (node index, push_id, time)
        self.refused = []   # (node index, reason)
        self.stop = threading.Event()

    def run(self):
        i = 0
        while not self.stop.is_set():
            k = i % len(self.nodes)
            r = self.nodes[k].admin("push", "--type", "1", "--all", "--json", check=False)
            try:
                out = json.loads(r.stdout) if r.returncode == 0 else None
            except ValueError:
                out = None
            if out and out.get("push_id"):
                self.accepted.append((k, out["push_id"], time.monotonic()))
            else:
                self.refused.append((k, (r.stdout + r.stderr).strip()[:200]))
            i += 1
            time.sleep(0.3)


def test_pg_restart(tmp):
    url = os.environ.get("TETHER_TEST_PG")
    if not url:
        fail("TETHER_TEST_PG is not set: run under tests/integration/mp-pg/pg-run.sh")
    nodes = start_nodes(tmp, url, 3)
    # TETHER_TEST_TRANSPORT=https: the same over the HTTPS fallback
    transport = os.environ.get("TETHER_TEST_TRANSPORT", "tcp")
    agents = [make_agent(tmp, nodes, "agent%02d" % i, i % 3, hook_body="sleep 0.2", transport=transport)
              for i in range(N_AGENTS)]
    for a in agents:
        a.start()
    ids = [a.wait_signed_in(timeout=90)["client_id"] for a in agents]

    pusher = Pusher(nodes)
    pusher.start()
    wait_for(lambda: len(pusher.accepted) >= 4, 60, "4 pushes accepted before the restart", interval=0.2)
    t_restart = time.monotonic()
    pg_ctl("restart", "-m", "fast")
    log("PostgreSQL restarted (fast) after %d accepted pushes" % len(pusher.accepted))

    def recovered():
        after = {k for k, _, t in pusher.accepted if t > t_restart}
        return after if after == {0, 1, 2} else None
    wait_for(recovered, 120, "every node to accept a push after the restart", interval=0.5)
    pusher.stop.set()
    pusher.join(timeout=90)
    push_ids = [p for _, p, _ in pusher.accepted]
    log("%d pushes accepted, %d refused during the outage" % (len(push_ids), len(pusher.refused)))
    for k, why in pusher.refused:
        if not why:
            fail("node %d refused a push without a reason" % (k + 1))

    # --all targets the devices online at that moment: a device whose
    # channel was closed for the outage misses the pushes made meanwhile
    statuses = [wait_answered(nodes[0], pid, 180) for pid in push_ids]
    if len(statuses[0]["targets"]) != N_AGENTS:
        fail("the first push targets %d devices, not all %d" % (len(statuses[0]["targets"]), N_AGENTS))
    # the whole fleet is back on the nodes, and a push reaches all of it
    wait_for(lambda: all(holders(nodes[0], ids).get(c) for c in ids), 90, "every agent signed in again",
             interval=1)
    out = json.loads(nodes[2].admin("push", "--type", "1", "--all", "--json").stdout)
    statuses.append(all_succeeded(wait_answered(nodes[1], out["push_id"], 90, n=N_AGENTS)))
    check_once(nodes[2], statuses, agents, ids)
    for a in agents:
        if a.status().get("state") != "signed-in":
            fail("%s is not signed in after the restart" % a.log)


if __name__ == "__main__":
    sys.exit(run_test(test_pg_restart))
