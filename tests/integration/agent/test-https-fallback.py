#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""TCP port closed: a real tetherd (transport auto) against a real tether-mp
falls back to the HTTPS channel (POST /tether/v1/channel, libcurl multi on
sd-event), signs in over it, and a push is still answered Success (1) with
the signed response recorded at the MP. Then the same with transport = https
forced and the TCP port open: it never touches TCP."""
import os
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tetherlib import *  # noqa: E402,F403


def closed_port():
    """A loopback port that refuses connections for as long as the socket
    lives: bound, never listening, so no other process can take it."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    return s, s.getsockname()[1]


def push_answered(mp, cid, task_type):
    p = mp.push(task_type, cid)
    status = mp.push_status(p["PushID"] if "PushID" in p else p["push_id"], wait=40)
    targets = status.get("targets") or status.get("devices") or []
    if not targets:
        fail("push-status without targets: %r" % status)
    tgt = targets[0]
    rc = tgt.get("return_code", tgt.get("ReturnCode"))
    if tgt.get("state") != "answered" or rc != 1:
        fail("TaskType %d over HTTPS: %r" % (task_type, tgt))
    xml = tgt.get("response_xml") or tgt.get("response") or ""
    if "<ReturnCode>1</ReturnCode>" not in xml or cid not in xml:
        fail("recorded response %r" % xml)


def test_https_fallback(tmp):
    mp = MP(tmp)
    mp.write_machine_policy()
    mp.start()
    blocker, port = closed_port()
    try:
        agent = Agent(tmp, "127.0.0.1", port, mp.https, site_pub=os.path.join(mp.dir, "site.pub"),
                      ca_file=os.path.join(mp.dir, "tls.crt"), user=privsep_user(),
                      extra_conf="[mp]\ntransport = auto\nhttps_hold_seconds = 5\n")
        agent.start()
        st = agent.wait_signed_in(timeout=40)
        if st.get("transport") != "https":
            fail("signed in over %r, expected https: %r" % (st.get("transport"), st))
        cid = st["client_id"]
        push_answered(mp, cid, 1)
        # A second push after at least one held long poll has come and gone.
        push_answered(mp, cid, 3)
        text = agent.logtext()
        want = "Failed to connect to 127.0.0.1:%d: Connection refused; trying the HTTPS fallback" % port
        if want not in text:
            fail("no fallback log line %r" % want)
        if "Connected to 127.0.0.1:%d (https)" % mp.https not in text:
            fail("no 'Connected ... (https)' log line")
        st = agent.status()
        if not st or st.get("transport") != "https":
            fail("not on https at the end: %r" % st)
        agent.kill()
    finally:
        blocker.close()

    # Forced HTTPS with TCP open: the MP never sees a TCP connection from it.
    agent2 = Agent(tmp, "127.0.0.1", mp.tcp, mp.https, name="agent2",
                   site_pub=os.path.join(mp.dir, "site.pub"), ca_file=os.path.join(mp.dir, "tls.crt"),
                   user=privsep_user(), extra_conf="[mp]\ntransport = https\nhttps_hold_seconds = 5\n")
    agent2.start()
    st = agent2.wait_signed_in(timeout=40)
    if st.get("transport") != "https":
        fail("forced https signed in over %r" % st.get("transport"))
    push_answered(mp, st["client_id"], 2)
    if "(tcp)" in agent2.logtext():
        fail("forced https used TCP")


if __name__ == "__main__":
    sys.exit(run_test(test_https_fallback))
