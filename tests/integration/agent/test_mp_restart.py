#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""tether-mp killed with SIGKILL while tasks run on the agent, and restarted
on the same ports: the agent reconnects and every response queued meanwhile
reaches the MP's records exactly once."""
import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tetherlib import *  # noqa: E402,F403


def test_mp_restart(tmp):
    mp = MP(tmp)
    mp.write_machine_policy()
    mp.start()
    agent = Agent(tmp, "127.0.0.1", mp.tcp, mp.https, site_pub=os.path.join(mp.dir, "site.pub"),
                  ca_file=os.path.join(mp.dir, "tls.crt"), user=privsep_user())
    marker = tmp.sub("hook.out")
    write_hook(agent.cycles, "machine-policy", "10-slow", 'echo "$TETHER_TASK_GUID" >> %s\nsleep 2' % marker)
    agent.start()
    cid = agent.wait_signed_in()["client_id"]

    pushes = [mp.push(1, cid), mp.push(3, cid), mp.push(2, cid)]
    wait_for(lambda: os.path.exists(marker), 30, "the hook to start")
    for p in pushes:
        mp.push_status(p["push_id"], wait=0)
    mp.kill()
    log("MP killed; waiting for the agent to finish the tasks offline")

    def queued():
        st = agent.status()
        return st if st and st["pending_tasks"] == 0 and st["queued_responses"] >= 1 else None
    st = wait_for(queued, 40, "the tasks to finish with the MP down")
    log("agent status while the MP is down: %r" % st)

    mp.start()
    for p in pushes:
        tgt = mp.push_status(p["push_id"], wait=60)["targets"][0]
        if tgt["state"] != "answered" or tgt["return_code"] != 1:
            fail("push %d: %r" % (p["push_id"], tgt))
    recorded = mp.responses()["responses"]
    for p in pushes:
        n = sum(1 for r in recorded if r["task_guid"] == p["task_guid"])
        if n != 1:
            fail("%d responses recorded for %s" % (n, p["task_guid"]))
    wait_for(lambda: (agent.status() or {}).get("queued_responses") == 0, 20, "the agent's queue to drain")


if __name__ == "__main__":
    sys.exit(run_test(test_mp_restart))
