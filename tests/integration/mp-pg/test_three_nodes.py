#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Three tether-mp nodes on one PostgreSQL (TETHER_TEST_PG, from pg-run.sh)
sharing one site key, and 30 real tetherd agents spread over them: a push
from node 1 to all reaches every agent (node 1 delivers its own, nodes 2 and
3 take theirs), every answer is visible from node 3, and every node's admin
API sees every device."""
import json
import os
import shutil
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "agent"))
from tetherlib import *  # noqa: E402,F403

N_AGENTS = 30


def test_three_nodes(tmp):
    url = os.environ.get("TETHER_TEST_PG")
    if not url:
        fail("TETHER_TEST_PG is not set: run under tests/integration/mp-pg/pg-run.sh")
    nodes = [MP(tmp, "mp%d" % i, extra=["--store", url, "--node-id", "node-%d" % i]) for i in (1, 2, 3)]
    nodes[0].start()
    # the site key and the TLS certificate: files provisioned on each node
    for mp in nodes[1:]:
        for f in ("site.key", "site.pub", "tls.key", "tls.crt"):
            shutil.copy2(os.path.join(nodes[0].dir, f), os.path.join(mp.dir, f))
        mp.start()
    site_pub = os.path.join(nodes[0].dir, "site.pub")
    ca = os.path.join(nodes[0].dir, "tls.crt")
    agents = []
    for i in range(N_AGENTS):
        mp = nodes[i % 3]
        agents.append(Agent(tmp, "127.0.0.1", mp.tcp, mp.https, site_pub=site_pub, ca_file=ca,
                            name="agent%02d" % i).start())
    ids = {}
    for i, a in enumerate(agents):
        ids[a.wait_signed_in(timeout=90)["client_id"]] = i % 3
    log("%d agents signed in over 3 nodes" % len(ids))

    # every node sees every device
    for mp in nodes:
        devs = json.loads(mp.admin("devices", "--json").stdout)
        devs = devs.get("devices", devs) if isinstance(devs, dict) else devs
        seen = {d["client_id"]: d.get("node") for d in devs}
        if not set(ids) <= set(seen):
            fail("%s sees %d of the %d devices" % (mp.dir, len(set(ids) & set(seen)), len(ids)))
        for cid, n in ids.items():
            if seen[cid] != "node-%d" % (n + 1):
                fail("%s says %s is held by %r, not node-%d" % (mp.dir, cid, seen[cid], n + 1))

    out = json.loads(nodes[0].admin("push", "--type", "1", "--all", "--json").stdout)
    push_id = out.get("push_id", out.get("PushID"))
    if out.get("targets") != N_AGENTS:
        fail("push --all from node 1 targets %r, not the %d online devices" % (out.get("targets"), N_AGENTS))

    def all_answered():
        st = nodes[2].push_status(push_id, wait=2)
        tg = st.get("targets") or []
        done = [t for t in tg if t.get("state") == "answered" and t.get("return_code") == 1]
        return st if len(done) == N_AGENTS else None
    st = wait_for(all_answered, 120, "every agent's answer, seen from node 3", interval=1)
    answered = {t["client_id"] for t in st["targets"]}
    if answered != set(ids):
        fail("answered set differs from the agents: %r" % (answered ^ set(ids)))
    for t in st["targets"]:
        if t["client_id"] not in (t.get("response_xml") or ""):
            fail("response of %s not recorded with its XML: %r" % (t["client_id"], t))
    # one response per agent, whichever node it reached
    resp = nodes[2].responses()
    resp = resp.get("responses", resp) if isinstance(resp, dict) else resp
    resp = [r for r in resp if r.get("push_id") == push_id]
    if len(resp) != N_AGENTS:
        fail("node 3 lists %d responses for push %s, not %d" % (len(resp), push_id, N_AGENTS))
    # nodes 2 and 3 took their devices' targets from the database
    for mp in nodes[1:]:
        with open(mp.log, errors="replace") as f:
            if "written by other nodes" not in f.read():
                fail("%s never took a target written by node 1" % mp.log)
    # PushRate is the site's: every node sends at a third of it
    for mp in nodes:
        def shares(mp=mp):
            with open(mp.log, errors="replace") as f:
                return "3 node(s) alive: this node sends at most 333 push(es)/s of the site's 1000" in f.read()
        wait_for(shares, 20, "%s to share the site's push rate among 3 nodes" % mp.log)
    for a in agents:
        tasks = a.ctl("tasks")["tasks"]
        if [x["return_code"] for x in tasks] != [1]:
            fail("%s ran %r" % (a.log, tasks))

    # a push queued for an offline device (agent 2, held by node 3) reaches
    # it when it signs in to another node (node 2)
    moved = agents[2]
    moved_id = moved.status()["client_id"]
    moved.kill()
    def offline():
        devs = json.loads(nodes[0].admin("devices", "--json").stdout)
        devs = devs.get("devices", devs) if isinstance(devs, dict) else devs
        return [d for d in devs if d["client_id"] == moved_id and not d.get("node")] or None
    wait_for(offline, 30, "node 3 to record agent 2 offline")
    queued = nodes[0].push(1, moved_id)["push_id"]
    with open(moved.machine_id) as f:
        machine_id = f.read()
    moved = Agent(tmp, "127.0.0.1", nodes[1].tcp, nodes[1].https, site_pub=site_pub, ca_file=ca,
                  name="agent02")
    with open(moved.machine_id, "w") as f:
        f.write(machine_id)  # the same device: its identity stays
    if moved.start().wait_signed_in(timeout=60)["client_id"] != moved_id:
        fail("agent 2 came back with another ClientID")
    def queued_answered():
        tg = nodes[2].push_status(queued, wait=2).get("targets") or [{}]
        return tg[0] if tg[0].get("state") == "answered" else None
    wait_for(queued_answered, 60, "the queued push answered through node 2")


if __name__ == "__main__":
    sys.exit(run_test(test_three_nodes))
