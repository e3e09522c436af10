#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Three tether-mp nodes on one PostgreSQL; 15 real agents each given the
three addresses (PROTOCOL-v1 7.4), five trying each node first. Each agent
lands on its first address (the order is stable per device). Two pushes
to all are in flight (the task takes 2 s) when node 3, holding a third of
the agents, is SIGKILLed: its agents move to the other nodes, every push is
answered once per target in the database, and no agent runs a task twice
(each agent's hook logs every run). A push made after the kill reaches all
15 again."""
import os
import signal
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "agent"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from multinode import *  # noqa: E402,F403

N_AGENTS = 15


def test_node_kill(tmp):
    url = os.environ.get("TETHER_TEST_PG")
    if not url:
        fail("TETHER_TEST_PG is not set: run under tests/integration/mp-pg/pg-run.sh")
    nodes = start_nodes(tmp, url, 3)
    agents = [make_agent(tmp, nodes, "agent%02d" % i, i % 3, hook_body="sleep 2") for i in range(N_AGENTS)]
    for a in agents:
        a.start()
    ids = {}
    for i, a in enumerate(agents):
        ids[a.wait_signed_in(timeout=90)["client_id"]] = i % 3
    held = holders(nodes[0], ids)
    for cid, first in ids.items():
        if held.get(cid) != "node-%d" % (first + 1):
            fail("%s is held by %r, not by its first address node-%d" % (cid, held.get(cid), first + 1))
    log("15 agents on their first address, 5 per node")

    victims = {cid for cid, first in ids.items() if first == 2}
    p1 = nodes[0].admin("push", "--type", "1", "--all", "--json")
    p2 = nodes[1].admin("push", "--type", "1", "--all", "--json")
    push_ids = [json.loads(p.stdout)["push_id"] for p in (p1, p2)]
    time.sleep(0.5)  # node 3 has sent some of its pushes; the tasks run 2 s
    kill_group(nodes[2].proc, signal.SIGKILL)
    nodes[2].proc.wait(timeout=10)
    log("node 3 killed with pushes %r in flight" % push_ids)

    def moved():
        h = holders(nodes[0], ids)
        return h if all(h.get(c) in ("node-1", "node-2") for c in victims) else None
    h = wait_for(moved, 90, "node 3's agents to sign in to node 1 or 2", interval=1)
    log("node 3's agents moved: %r" % sorted(h[c] for c in victims))
    for a in agents:
        if ids[a.status()["client_id"]] == 2 and "Trying the next MP address" not in a.logtext():
            fail("%s never logged moving to its next address" % a.log)

    statuses = [wait_answered(nodes[0], pid, 120, n=N_AGENTS) for pid in push_ids]
    check_once(nodes[1], statuses, agents, list(ids))

    # and the fleet is whole: a new push reaches all 15 on two nodes
    out = json.loads(nodes[0].admin("push", "--type", "1", "--all", "--json").stdout)
    if out.get("targets") != N_AGENTS:
        fail("push --all after the kill targets %r, not %d" % (out.get("targets"), N_AGENTS))
    statuses.append(all_succeeded(wait_answered(nodes[1], out["push_id"], 90, n=N_AGENTS)))
    check_once(nodes[0], statuses, agents, list(ids))


if __name__ == "__main__":
    sys.exit(run_test(test_node_kill))
