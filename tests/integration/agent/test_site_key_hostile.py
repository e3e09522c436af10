#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Hostile site key chains (issue #15), from a fake MP to a real tetherd
pinned to serial 1: each SIGNIN_CONFIRM is genuine (signed by serial 1) but
carries a bad chain. Each is refused with a log line naming the reason, the
trusted keys stay as they were (tetherctl status, the trust directory), and
a PUSH signed by a key the bad chain offered is answered Unauthorized (5):
 - an endorsement by an unknown key;
 - a serial gap;
 - a NotBefore far in the future;
 - a broken link (serial 2 good, serial 3 altered): 2 is taken, 3 is not.
The SIGNIN lists <Feature>1.1</Feature>."""
import base64
import os
import re
import sys
import time
import uuid

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tetherlib import *  # noqa: E402,F403


def der_of(pub):
    return openssl("pkey", "-pubin", "-in", pub, "-outform", "DER")


def endorsement(signer, serial, not_before, new_pub, tamper=False):
    der = der_of(new_pub)
    sig = sign(signer, 0x4B, serial.to_bytes(4, "big") + not_before.encode() + der)
    if tamper:
        sig = sign(signer, 0x4B, (serial + 1).to_bytes(4, "big") + not_before.encode() + der)
    return ('<SiteKeyEndorsement Serial="%d" NotBefore="%s"><PublicKey>%s</PublicKey>'
            '<Signature>%s</Signature></SiteKeyEndorsement>'
            % (serial, not_before, base64.b64encode(der).decode(), base64.b64encode(sig).decode()))


def confirm_with(fake, chain):
    body = ('<BgbSignInConfirmMessage TimeStamp="%s" MessageVersion="1"><Status>Approved</Status>'
            '<KeepAliveSeconds>180</KeepAliveSeconds>%s</BgbSignInConfirmMessage>'
            % (utc(time.time()), "".join(chain))).encode()
    fake.send(FRAME["SIGNIN_CONFIRM"], body, fake.site_key)


def response_rc(fake, guid):
    body, _ = fake.read_until(FRAME["RESPONSE"], skip=(4, 7))
    text = body.decode()
    if guid not in text:
        fail("RESPONSE for another task: %s" % text)
    return int(re.search(r"<ReturnCode>(\d+)</ReturnCode>", text).group(1))


def test_site_key_hostile(tmp):
    fake = FakeMP(tmp)
    keys = {}
    for name in ("k2", "k3", "stranger", "k9"):
        keys[name] = os.path.join(fake.dir, name + ".key")
        make_key(keys[name])
    agent = Agent(tmp, "127.0.0.1", fake.port, 1, site_pub=fake.site_pub, ca_file=fake.tls_crt,
                  extra_conf="[mp]\ntransport = tcp\n", user=privsep_user())
    agent.start()
    fake.accept()
    body, _ = fake.read_until(FRAME["SIGNIN"])
    if b"<Feature>1.1</Feature>" not in body:
        fail("SIGNIN does not list Feature 1.1: %r" % body)
    fake.confirm()
    agent.wait_signed_in()
    chain_file = os.path.join(agent.state, "trust", "site-chain")
    now = time.time()
    soon = utc(now - 60)

    cases = [
        ("unknown key", [endorsement(keys["stranger"], 2, soon, keys["k9"] + ".pub")],
         "endorsement by an unknown key"),
        ("serial gap", [endorsement(fake.site_key, 3, soon, keys["k9"] + ".pub")], "serial gap"),
        ("far future", [endorsement(fake.site_key, 2, utc(now + 400 * 86400), keys["k9"] + ".pub")],
         "more than 90 days in the future"),
    ]
    for what, chain, reason in cases:
        before = agent.logtext().count("Site key chain from the MP refused")
        confirm_with(fake, chain)
        wait_for(lambda: agent.logtext().count("Site key chain from the MP refused") > before, 30,
                 "the agent to refuse the chain (%s)" % what)
        line = [l for l in agent.logtext().splitlines() if "Site key chain from the MP refused" in l][-1]
        if reason not in line:
            fail("%s: the log line does not name the reason: %s" % (what, line))
        st = agent.status()
        if [k["serial"] for k in st["site_keys"]] != [1] or st["state"] != "signed-in":
            fail("%s: trust changed: %r" % (what, st))
        if os.path.exists(chain_file):
            fail("%s: a chain was persisted" % what)
        # The key the bad chain offered signs nothing the agent runs.
        guid = str(uuid.uuid4()).upper()
        fake.send(FRAME["PUSH"], fake.push_body(guid), keys["k9"])
        if response_rc(fake, guid) != 5:
            fail("%s: a PUSH signed by the offered key was not refused as Unauthorized" % what)

    # A broken link: serial 2 is good and taken, serial 3 is not.
    chain = [endorsement(fake.site_key, 2, soon, keys["k2"] + ".pub"),
             endorsement(keys["k2"], 3, soon, keys["k3"] + ".pub", tamper=True)]
    confirm_with(fake, chain)
    wait_for(lambda: "broken link" in agent.logtext(), 30, "the agent to refuse the broken link")
    st = agent.status()
    if [k["serial"] for k in st["site_keys"]] != [1, 2]:
        fail("broken link: trusted keys %r" % st["site_keys"])
    guid = str(uuid.uuid4()).upper()
    fake.send(FRAME["PUSH"], fake.push_body(guid), keys["k3"])
    if response_rc(fake, guid) != 5:
        fail("a PUSH signed by the key behind the broken link was not refused")
    # Serial 2 (NotBefore passed) signs pushes now.
    guid = str(uuid.uuid4()).upper()
    fake.send(FRAME["PUSH"], fake.push_body(guid, task_type=3), keys["k2"])
    ack, _ = fake.read_until(FRAME["PUSH_ACK"])
    if guid.encode() not in ack:
        fail("a PUSH signed by the accepted serial 2: %r" % ack)


if __name__ == "__main__":
    sys.exit(run_test(test_site_key_hostile))
