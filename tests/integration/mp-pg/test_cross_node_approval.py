#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Two tether-mp nodes on one PostgreSQL (TETHER_TEST_PG, from pg-run.sh),
manual approval: an agent waiting for approval on node 2 is approved with
node 1's CLI; node 2 hears of it (NOTIFY) and tells the agent at once."""
import json
import os
import shutil
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "agent"))
from tetherlib import *  # noqa: E402,F403


def test_cross_node_approval(tmp):
    url = os.environ.get("TETHER_TEST_PG")
    if not url:
        fail("TETHER_TEST_PG is not set: run under tests/integration/mp-pg/pg-run.sh")
    nodes = [MP(tmp, "mp%d" % i, extra=["--store", url, "--node-id", "node-%d" % i, "--approval", "manual"])
             for i in (1, 2)]
    nodes[0].start()
    for f in ("site.key", "site.pub", "tls.key", "tls.crt"):
        shutil.copy2(os.path.join(nodes[0].dir, f), os.path.join(nodes[1].dir, f))
    nodes[1].start()
    agent = Agent(tmp, "127.0.0.1", nodes[1].tcp, nodes[1].https, site_pub=os.path.join(nodes[0].dir, "site.pub"),
                  ca_file=os.path.join(nodes[0].dir, "tls.crt")).start()

    def pending_at_node1():
        devs = json.loads(nodes[0].admin("devices", "--json").stdout)
        devs = devs.get("devices", devs) if isinstance(devs, dict) else devs
        return [d for d in devs if d.get("status") == "pending" and d.get("node") == "node-2"] or None
    dev = wait_for(pending_at_node1, 30, "the agent pending at node 2, seen from node 1")[0]
    st = agent.status()
    if st and st.get("state") == "signed-in":
        fail("signed in before approval: %r" % st)
    nodes[0].admin("approve", dev["client_id"])
    agent.wait_signed_in(timeout=20)
    with open(nodes[1].log, errors="replace") as f:
        if "Another node decided '%s': approved" % dev["client_id"] not in f.read():
            fail("node 2 did not hear of node 1's approval")


if __name__ == "__main__":
    sys.exit(run_test(test_cross_node_approval))
