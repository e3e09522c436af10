# SPDX-License-Identifier: Apache-2.0
"""Helpers for the tests of several MP nodes with agents given every node's
address (PROTOCOL-v1 7.4): the nodes, agents whose first address is chosen
(the agent's order is a shuffle seeded from its machine ID, reproduced here),
and the checks that no task ran twice and every answer was recorded once."""
import hashlib
import json
import os
import shutil
import uuid

from tetherlib import *  # noqa: F401,F403

M64 = (1 << 64) - 1


def address_order(machine_id_text, n):
    """The order tetherd tries n addresses in (agent/mp-addresses.c):
    FNV-1a of the machine ID's SHA-256 hex, splitmix64, Fisher-Yates."""
    seed = hashlib.sha256(machine_id_text.rstrip(" \t\r\n").encode()).hexdigest()
    state = 0xCBF29CE484222325
    for ch in seed.encode():
        state = ((state ^ ch) * 0x100000001B3) & M64
    order = list(range(n))
    for i in range(n, 1, -1):
        state = (state + 0x9E3779B97F4A7C15) & M64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        z ^= z >> 31
        j = z % i
        order[i - 1], order[j] = order[j], order[i - 1]
    return order


def machine_id_first(node, n):
    """A fresh machine ID whose agent tries address number node first."""
    while True:
        text = uuid.uuid4().hex + "\n"
        if address_order(text, n)[0] == node:
            return text


def start_nodes(tmp, url, count, configs=None):
    """count nodes on the database url, sharing node 1's site key and TLS
    certificate (files provisioned on each node); configs[i] is an optional
    tether-mp.conf text for node i."""
    nodes = []
    for i in range(count):
        extra = ["--store", url, "--node-id", "node-%d" % (i + 1)]
        mp = MP(tmp, "mp%d" % (i + 1), extra=extra)
        if configs and configs[i]:
            path = os.path.join(tmp.path, "mp%d.conf" % (i + 1))
            with open(path, "w") as f:
                f.write(configs[i])
            mp.extra += ["--config", path]
        if i > 0:
            for f in ("site.key", "site.pub", "tls.key", "tls.crt"):
                shutil.copy2(os.path.join(nodes[0].dir, f), os.path.join(mp.dir, f))
        nodes.append(mp.start())
    return nodes


def host_list(nodes):
    return ", ".join("127.0.0.1:%d" % mp.tcp for mp in nodes)


def make_agent(tmp, nodes, name, first, marker_hook=True, hook_body="", transport="tcp"):
    """An agent given every node's address, trying node number first first;
    transport tcp (auto would fall back to HTTPS on the same address). With
    https every entry has node 1's HTTPS port (https_port is one for all)."""
    mp = nodes[0]
    a = Agent(tmp, host_list(nodes), mp.tcp, mp.https, site_pub=os.path.join(mp.dir, "site.pub"),
              ca_file=os.path.join(mp.dir, "tls.crt"), name=name,
              extra_conf="[mp]\ntransport = %s\n[agent]\nstart_delay_max_seconds = 0\n" % transport)
    with open(a.machine_id, "w") as f:
        f.write(machine_id_first(first, len(nodes)))
    a.runs = tmp.sub(name, "runs")
    if marker_hook:
        write_hook(a.cycles, "machine-policy", "10-mark", 'echo "$TETHER_TASK_GUID" >> %s\n%s' % (a.runs, hook_body))
    return a


def devices(mp):
    devs = json.loads(mp.admin("devices", "--json").stdout)
    return devs.get("devices", devs) if isinstance(devs, dict) else devs


def holders(mp, ids):
    """client_id -> node holding it online (None when offline)."""
    return {d["client_id"]: d.get("node") for d in devices(mp) if d["client_id"] in ids}


def runs_of(agent):
    try:
        with open(agent.runs) as f:
            return [l.strip() for l in f if l.strip()]
    except FileNotFoundError:
        return []


def check_once(mp, statuses, agents, agent_ids, require_runs=True):
    """Every push answered exactly once per target in the database, and no
    agent ran a task twice or one that did not target it.
    The agent may answer tasks of one cycle queued behind a running one with
    a single run of that cycle (the hook then sees one of their TaskGUIDs),
    so a task need not have a run of its own. statuses: the pushes'
    push-status, each with its targets. require_runs=False: an agent may
    have run nothing (its policy fetch refused), it still answered once."""
    resp = mp.responses(limit=100000)
    resp = resp.get("responses", resp) if isinstance(resp, dict) else resp
    expected = {cid: set() for cid in agent_ids}
    for st in statuses:
        pid = st["push_id"]
        targets = [t["client_id"] for t in st["targets"]]
        got = [r["client_id"] for r in resp if r.get("push_id") == pid]
        if sorted(got) != sorted(targets):
            dup = sorted(c for c in set(got) if got.count(c) > 1)
            fail("push %s: %d responses recorded for %d targets (duplicates %r, missing %r)"
                 % (pid, len(got), len(targets), dup, sorted(set(targets) - set(got))))
        for t in st["targets"]:
            expected[t["client_id"]].add(st["task_guid"])
    for a, cid in zip(agents, agent_ids):
        r = runs_of(a)
        if len(r) != len(set(r)):
            fail("%s ran a task twice: %r" % (a.log, r))
        if not set(r) <= expected[cid] or (require_runs and not r):
            fail("%s ran %r, not among the tasks that targeted it %r" % (a.log, sorted(r), sorted(expected[cid])))


def all_succeeded(st):
    """Every target answered Success (1), not a failed policy fetch (2)."""
    bad = [(t["client_id"], t.get("return_code")) for t in st["targets"] if t.get("return_code") != 1]
    if bad:
        fail("push %s: answers other than Success: %r" % (st["push_id"], bad))
    return st


def wait_answered(mp, push_id, timeout, n=None):
    """Waits until every target of the push answered (n targets, when
    given); returns its push-status."""
    def done():
        st = mp.push_status(push_id, wait=2)
        tg = st.get("targets") or []
        ok = [t for t in tg if t.get("state") == "answered"]
        if n is not None and len(tg) != n:
            fail("push %s has %d targets, not %d" % (push_id, len(tg), n))
        return st if tg and len(ok) == len(tg) else None
    return wait_for(done, timeout, "push %s answered by all its targets" % push_id, interval=1)
