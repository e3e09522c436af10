#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""The agent stopped between PUSH_ACK and RESPONSE, while the cycle's hook
runs: by SIGKILL (of every tetherd process), then by SIGTERM. After each
restart the task runs again and is answered Success, exactly once in the
MP's records."""
import os
import signal
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tetherlib import *  # noqa: E402,F403


def lines(path):
    try:
        with open(path) as f:
            return f.read().split()
    except FileNotFoundError:
        return []


def one_round(tmp, mp, agent, cid, sig, marker):
    before = len(lines(marker))
    p = mp.push(1, cid)
    push_id, guid = p["push_id"], p["task_guid"]
    wait_for(lambda: len(lines(marker)) > before, 30, "the hook to start")
    tgt = mp.push_status(push_id, wait=0)["targets"][0]
    if tgt["state"] not in ("acknowledged", "delivered"):
        fail("before the kill the task is %r" % tgt)
    log("stopping tetherd with %s while the hook runs" % signal.Signals(sig).name)
    agent.kill(sig)
    tgt = mp.push_status(push_id, wait=0)["targets"][0]
    if tgt["state"] == "answered":
        fail("answered before the hook finished: %r" % tgt)
    agent.start()
    tgt = mp.push_status(push_id, wait=45)["targets"][0]
    if tgt["state"] != "answered" or tgt["return_code"] != 1:
        fail("after the restart: %r" % tgt)
    if lines(marker)[before:].count(guid) < 2:
        fail("the task did not run again after the restart: %r" % lines(marker))
    n = sum(1 for r in mp.responses()["responses"] if r["task_guid"] == guid)
    if n != 1:
        fail("%d responses recorded for %s" % (n, guid))


def test_agent_restart(tmp):
    mp = MP(tmp)
    mp.write_machine_policy()
    mp.start()
    agent = Agent(tmp, "127.0.0.1", mp.tcp, mp.https, site_pub=os.path.join(mp.dir, "site.pub"),
                  ca_file=os.path.join(mp.dir, "tls.crt"), user=privsep_user())
    marker = tmp.sub("hook.out")
    write_hook(agent.cycles, "machine-policy", "10-slow",
               'echo "$TETHER_TASK_GUID" >> %s\nsleep 4' % marker)
    agent.start()
    cid = agent.wait_signed_in()["client_id"]
    one_round(tmp, mp, agent, cid, signal.SIGKILL, marker)
    agent.wait_signed_in()
    one_round(tmp, mp, agent, cid, signal.SIGTERM, marker)


if __name__ == "__main__":
    sys.exit(run_test(test_agent_restart))
