#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Two tether-mp nodes on one PostgreSQL, node 1 with MaxConnections=2 and
OverloadRetryAfterSeconds=3; four real agents given both addresses, all
trying node 1 first, started one after the other. The first two sign in
to node 1; node 1 answers the next two with GOODBYE(overloaded,
RetryAfterSeconds=3) and they sign in to node 2, no sooner than 3 s after
(PROTOCOL-v1 7.4). A push to all then reaches the four, each answering
once. MaxConnections counts channel and HTTPS connections together (main's
connection caps, mp/conn.c): node 1, full with its two channels, refuses
its agents' policy fetches too (503), so their tasks may end ReturnCode 2
without a run; the push is still answered once per target."""
import os
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "agent"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from multinode import *  # noqa: E402,F403


def test_overloaded(tmp):
    url = os.environ.get("TETHER_TEST_PG")
    if not url:
        fail("TETHER_TEST_PG is not set: run under tests/integration/mp-pg/pg-run.sh")
    nodes = start_nodes(tmp, url, 2, ["[MP]\nMaxConnections=2\nOverloadRetryAfterSeconds=3\n", None])
    agents, ids = [], []
    for i in range(4):
        a = make_agent(tmp, nodes, "agent%d" % i, 0).start()
        t0 = time.monotonic()
        ids.append(a.wait_signed_in(timeout=60)["client_id"])
        agents.append(a)
        took = time.monotonic() - t0
        held = holders(nodes[1], ids)[ids[-1]]
        want = "node-1" if i < 2 else "node-2"
        if held != want:
            fail("agent %d is held by %r, not %s" % (i, held, want))
        if i >= 2:
            text = a.logtext()
            if "The MP said GOODBYE (overloaded), retry after 3 s" not in text:
                fail("%s: no GOODBYE(overloaded) from node 1" % a.log)
            if "Trying the next MP address, 127.0.0.1:%d" % nodes[1].tcp not in text:
                fail("%s did not move to node 2's address" % a.log)
            if took < 3:
                fail("agent %d reached node 2 %.1f s after starting, before RetryAfterSeconds=3" % (i, took))
        log("agent %d on %s after %.1f s" % (i, held, took))
    # Main's connection caps (mp/conn.c): one log line a second at most, and
    # the refusals here are at least RetryAfterSeconds=3 apart.
    with open(nodes[0].log, errors="replace") as f:
        n = f.read().count("refused: over MaxConnections")
    if n != 2:
        fail("node 1 refused %d connections over MaxConnections=2, not 2" % n)

    out = json.loads(nodes[1].admin("push", "--type", "1", "--all", "--json").stdout)
    if out.get("targets") != 4:
        fail("push --all targets %r, not 4" % out.get("targets"))
    st = wait_answered(nodes[0], out["push_id"], 60, n=4)
    check_once(nodes[0], [st], agents, ids, require_runs=False)


if __name__ == "__main__":
    sys.exit(run_test(test_overloaded))
