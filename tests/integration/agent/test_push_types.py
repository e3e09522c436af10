#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Each of the three TaskTypes pushed by a real tether-mp to a real tetherd
(privilege-separated when run as root) and answered Success (1), with the
signed response recorded at the MP; the seed-style log lines are written."""
import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tetherlib import *  # noqa: E402,F403


def test_push_types(tmp):
    mp = MP(tmp)
    mp.write_machine_policy()
    mp.start()
    agent = Agent(tmp, "127.0.0.1", mp.tcp, mp.https, site_pub=os.path.join(mp.dir, "site.pub"),
                  ca_file=os.path.join(mp.dir, "tls.crt"), user=privsep_user())
    marker = tmp.sub("machine-hook.out")
    write_hook(agent.cycles, "machine-policy", "10-mark", 'echo "$TETHER_TASK_GUID" >> %s' % marker)
    agent.start()
    st = agent.wait_signed_in()
    cid = st["client_id"]
    pushes = {t: mp.push(t, cid) for t in (1, 2, 3)}
    for t, p in pushes.items():
        status = mp.push_status(p["PushID"] if "PushID" in p else p["push_id"], wait=40)
        targets = status.get("targets") or status.get("devices") or []
        if not targets:
            fail("push-status without targets: %r" % status)
        tgt = targets[0]
        rc = tgt.get("return_code", tgt.get("ReturnCode"))
        if tgt.get("state") != "answered" or rc != 1:
            fail("TaskType %d: %r" % (t, tgt))
        xml = tgt.get("response_xml") or tgt.get("response") or ""
        if "<ReturnCode>1</ReturnCode>" not in xml or cid not in xml:
            fail("TaskType %d: recorded response %r" % (t, xml))
    with open(marker) as f:
        guids = f.read().split()
    if len(guids) != 1:
        fail("machine-policy hook ran %d times: %r" % (len(guids), guids))
    text = agent.logtext()
    for t in (1, 2, 3):
        if "tasktype=%d and taskParam=" % t not in text:
            fail("no seed-style receive line for TaskType %d" % t)
    if text.count("Send Task response message <BgbResponseMessage") < 3:
        fail("fewer than three seed-style send lines")
    tasks = agent.ctl("tasks")["tasks"]
    if sorted(x["return_code"] for x in tasks) != [1, 1, 1]:
        fail("tetherctl tasks: %r" % tasks)
    # The agent's own per-stage timing (issue 7) counted the three pushes.
    stages = {x["stage"]: x for x in agent.ctl("stats")["stages"]}
    for name in ("verify", "parse", "spool", "ack", "ipc+run", "sign", "spool-response", "send"):
        st = stages.get(name)
        if not st or st["count"] < 3 or not st["median_us"] <= st["p99_us"] <= st["max_us"]:
            fail("tetherctl stats, stage %s: %r" % (name, st))
    if agent.user:
        import subprocess
        users = subprocess.run(["ps", "-o", "user=", "--ppid", str(agent.proc.pid)], capture_output=True,
                               text=True).stdout.split()
        if agent.user not in users:
            fail("no channel process running as %s: %r" % (agent.user, users))


if __name__ == "__main__":
    sys.exit(run_test(test_push_types))
