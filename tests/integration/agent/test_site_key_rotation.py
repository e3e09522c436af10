#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Site key rotation (issue #15, PROTOCOL-v1 7.2) on a running site:
 - 25 agents pinned to the MP's site key (serial 1); 20 connected, 5
   stopped; pushes answered before the rotation;
 - tether-mp site-key rotate --not-before (a few seconds ahead): the
   connected agents get the chain at once (signed by serial 1), and pushes
   keep working before and after NotBefore;
 - after NotBefore the MP signs with serial 2; pushes to the 20 are answered
   (the machine policy cycle fetches a policy signed by serial 2, which the
   root half verifies from its own key through the chain);
 - the 5 stopped agents, started only then (the MP signs nothing with
   serial 1 any more), reach serial 2 through the chain and answer;
 - tetherctl status lists both keys with their serials; site-key status
   counts the devices that confirmed serial 2;
 - a restarted MP loads and checks its chain, and still signs with serial 2.
Some agents run the real privilege split when the test runs as root."""
import os
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tetherlib import *  # noqa: E402,F403

N_CONNECTED = 20
N_STOPPED = 5


def push_all(mp, cids, what):
    out = json.loads(mp.admin("push", "--type", "1", "--json", *cids).stdout)
    pid = out.get("PushID", out.get("push_id"))
    st = mp.push_status(pid, wait=90)
    targets = st.get("targets") or []
    answered = {t["client_id"] for t in targets
                if t.get("state") == "answered" and t.get("return_code") == 1}
    missing = set(cids) - answered
    if missing:
        bad = [t for t in targets if t["client_id"] in missing]
        fail("%s: %d of %d devices did not answer Success: %r" % (what, len(missing), len(cids), bad[:3]))
    log("%s: %d devices answered Success" % (what, len(cids)))
    return pid


def push_frame_serial(mp, push_id, serial_pubs):
    """Which site key signed a push: its stored frame is verified with each key."""
    import sqlite3
    db = sqlite3.connect(os.path.join(mp.dir, "tether-mp.db"))
    row = db.execute("SELECT frame FROM pushes WHERE push_id = ?", (push_id,)).fetchone()
    db.close()
    frame_bytes = bytes(row[0])
    blen = int.from_bytes(frame_bytes[4:8], "big")
    slen = int.from_bytes(frame_bytes[8:10], "big")
    body = frame_bytes[10:10 + blen]
    sig = frame_bytes[10 + blen:10 + blen + slen]
    for serial, pub in serial_pubs.items():
        if verify(pub, 3, body, sig, mp.dir):
            return serial
    return None


def test_site_key_rotation(tmp):
    mp = MP(tmp)
    mp.write_machine_policy()
    mp.start()
    site_pub = os.path.join(mp.dir, "site.pub")
    ca = os.path.join(mp.dir, "tls.crt")
    agents = []
    for i in range(N_CONNECTED + N_STOPPED):
        # Two of each group run the privilege split (as root): their root
        # half must learn the new key on its own.
        user = privsep_user() if i in (0, 1, N_CONNECTED, N_CONNECTED + 1) else None
        # And one of each over the HTTPS fallback: the chain comes with a poll.
        extra = "[mp]\ntransport = https\nhttps_hold_seconds = 5\n" if i in (2, N_CONNECTED + 2) else ""
        agents.append(Agent(tmp, "127.0.0.1", mp.tcp, mp.https, site_pub=site_pub, ca_file=ca,
                            name="a%02d" % i, user=user, extra_conf=extra))
    for a in agents:
        a.start()
    cids = [a.wait_signed_in(timeout=90)["client_id"] for a in agents]
    connected, stopped = agents[:N_CONNECTED], agents[N_CONNECTED:]
    for a in stopped:
        a.kill(signal.SIGTERM)
    push_all(mp, cids[:N_CONNECTED], "before the rotation")

    # Wide enough for 20 agents to take the chain and answer a push on a
    # loaded 2-core machine before NotBefore.
    not_before = time.time() + 25
    rot = json.loads(mp.admin("site-key", "rotate", "--not-before", utc(not_before), "--json").stdout)
    if len(rot["chain"]) != 2 or rot["current_serial"] != 1:
        fail("rotate answer %r" % rot)
    new_fp = rot["chain"][1]["fingerprint"]
    # The connected agents take the chain at once, before NotBefore.
    def all_have_chain():
        for a in connected:
            st = a.status()
            if not st or len(st.get("site_keys", [])) != 2:
                return False
        return True
    wait_for(all_have_chain, 60, "the connected agents to take the chain")
    st = connected[0].status()
    if st["site_keys"][1]["fingerprint"] != new_fp or st["site_keys"][1]["state"] != "waiting for NotBefore":
        fail("status before NotBefore: %r" % st["site_keys"])
    for a in connected:
        if not os.path.exists(os.path.join(a.state, "trust", "site-chain")):
            fail("%s did not persist the chain" % a.log)
    # Pushes keep working during the switch.
    push_all(mp, cids[:N_CONNECTED], "during the rotation (serial 1)")
    wait_for(lambda: time.time() > not_before + 1, 30, "NotBefore")

    # The new key signs now: pushes, confirms and policies.
    serial2_pub = tmp.sub("serial2.pub")
    status = json.loads(mp.admin("site-key", "status", "--json").stdout)
    if status["current_serial"] != 2:
        fail("site-key status after NotBefore: %r" % status)
    with open(serial2_pub, "w") as f:
        key_b64 = None
        # The endorsed key, from an agent's chain file (second field of line 1 is NotBefore).
        with open(os.path.join(connected[0].state, "trust", "site-chain")) as cf:
            key_b64 = cf.read().split()[2]
        f.write("-----BEGIN PUBLIC KEY-----\n")
        for i in range(0, len(key_b64), 64):
            f.write(key_b64[i:i + 64] + "\n")
        f.write("-----END PUBLIC KEY-----\n")
    pid = push_all(mp, cids[:N_CONNECTED], "after NotBefore (serial 2)")
    if push_frame_serial(mp, pid, {1: site_pub, 2: serial2_pub}) != 2:
        fail("the push after NotBefore is not signed by serial 2")

    # The stopped agents come back after the switch, and follow the chain.
    for a in stopped:
        a.start()
    for a in stopped:
        a.wait_signed_in(timeout=90)
    push_all(mp, cids, "all 25 after the stopped agents came back")
    for a in stopped:
        text = a.logtext()
        if "Site key serial 2" not in text or "accepted through the chain" not in text:
            fail("%s: no line about accepting serial 2" % a.log)
        st = a.status()
        states = [k["state"] for k in st["site_keys"]]
        if states != ["previous (overlap)", "current"]:
            fail("status of a returning agent: %r" % st["site_keys"])
    out = subprocess.run([TETHERCTL, "--socket", os.path.join(stopped[0].run, "tetherd.sock"), "status"],
                         capture_output=True, text=True).stdout
    if "serial 2" not in out or new_fp not in out:
        fail("tetherctl status does not list serial 2: %s" % out)
    # Root halves: the scheduler process kept its own copy of the chain, in its root-only directory.
    for a in (agents[0], agents[N_CONNECTED]):
        if a.user and not os.path.exists(os.path.join(a.state.rstrip("/") + "-root", "site-chain")):
            fail("the root half of %s has no chain of its own" % a.log)

    def all_confirmed():
        status = json.loads(mp.admin("site-key", "status", "--json").stdout)
        return status["chain"][1]["devices_confirmed"] == len(cids)
    # HTTPS devices confirm with their next poll (hold 5 s).
    wait_for(all_confirmed, 30, "site-key status to count %d devices on serial 2" % len(cids), interval=1)
    text = mp.admin("site-key", "status").stdout
    if new_fp not in text:
        fail("site-key status text: %s" % text)

    # A restarted MP checks its chain and signs with serial 2.
    mp.kill()
    mp.start()
    for a in agents[:3]:
        a.wait_signed_in(timeout=90)
    pid = push_all(mp, cids[:3], "after an MP restart")
    if push_frame_serial(mp, pid, {1: site_pub, 2: serial2_pub}) != 2:
        fail("after a restart the MP does not sign with serial 2")


if __name__ == "__main__":
    sys.exit(run_test(test_site_key_rotation))
