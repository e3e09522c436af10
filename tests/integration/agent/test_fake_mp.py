#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Pushes that a real MP never sends, from a fake MP on loopback TLS:
 - a PUSH signed by another key: RESPONSE ReturnCode 5 (signed by the device
   key), no PUSH_ACK, and the cycle's hook never runs;
 - the same TaskGUID pushed twice: the hook runs once, the duplicate is
   acknowledged and the stored response is sent again;
 - an expired PUSH, and one addressed to another ClientID: ReturnCode 4;
   an unknown TaskType: ReturnCode 3; none of them runs anything;
 - SIGNIN carries the configured EnrolmentToken; a SIGNIN_CONFIRM 120 s
   ahead is logged as clock skew with the offset;
 - GOODBYE(shutdown, RetryAfterSeconds=2): the agent reconnects no sooner;
 - a frame the agent must never receive (SIGNIN): GOODBYE(protocol-error),
   the connection closes, and the agent signs in again; the log line names
   the peer's address and port;
 - an unsigned PUSH (S = 0): GOODBYE(protocol-error), no ReturnCode 5."""
import os
import re
import sys
import time
import uuid

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tetherlib import *  # noqa: E402,F403


def response_fields(body):
    text = body.decode()
    rc = int(re.search(r"<ReturnCode>(\d+)</ReturnCode>", text).group(1))
    guid = re.search(r"<TaskGUID>([0-9A-F-]+)</TaskGUID>", text).group(1)
    return rc, guid, text


def test_fake_mp(tmp):
    fake = FakeMP(tmp)
    other_key = os.path.join(fake.dir, "other.key")
    make_key(other_key)
    policy_port = serve_machine_policy(fake, tmp)
    agent = Agent(tmp, "127.0.0.1", fake.port, policy_port, site_pub=fake.site_pub, ca_file=fake.tls_crt,
                  extra_conf="[mp]\ntransport = tcp\n[agent]\nenrolment_token = s3cret-token\n", user=privsep_user())
    marker = tmp.sub("hook.out")
    write_hook(agent.cycles, "machine-policy", "10-mark", 'echo "$TETHER_TASK_GUID" >> %s' % marker)
    write_hook(agent.cycles, "user-policy", "10-mark", 'echo "user $TETHER_TASK_GUID" >> %s' % marker)
    agent.start()

    fake.accept()
    body, sig = fake.read_until(FRAME["SIGNIN"])
    device_pub = os.path.join(fake.dir, "device.pub")
    b64 = re.search(rb"<PublicKey>([A-Za-z0-9+/=]+)</PublicKey>", body).group(1)
    import base64
    der = base64.b64decode(b64)
    with open(device_pub + ".der", "wb") as f:
        f.write(der)
    openssl("pkey", "-pubin", "-inform", "DER", "-in", device_pub + ".der", "-out", device_pub)
    if not verify(device_pub, FRAME["SIGNIN"], body, sig, fake.dir):
        fail("SIGNIN signature does not verify with its PublicKey")
    client_id = re.search(rb'ClientID="([0-9A-F-]+)"', body).group(1).decode()
    if b"<EnrolmentToken>s3cret-token</EnrolmentToken>" not in body:
        fail("SIGNIN without the EnrolmentToken: %r" % body)
    if b"<Capabilities><TaskType>1</TaskType><TaskType>2</TaskType><TaskType>3</TaskType>" \
            b"<Feature>1.1</Feature></Capabilities>" not in body:
        fail("SIGNIN without the three capabilities: %r" % body)
    fake.confirm(skew=120)
    agent.wait_signed_in()

    # 1. Signed by another key: Unauthorized, nothing runs, no PUSH_ACK.
    bad_guid = str(uuid.uuid4()).upper()
    fake.send(FRAME["PUSH"], fake.push_body(bad_guid, push_id=11, task_id=12), other_key)
    rbody, rsig = fake.read_until(FRAME["RESPONSE"])
    rc, guid, text = response_fields(rbody)
    if rc != 5 or guid != bad_guid or "<PushID>11</PushID><TaskID>12</TaskID>" not in text:
        fail("bad-signature push answered %r" % text)
    if not verify(device_pub, FRAME["RESPONSE"], rbody, rsig, fake.dir):
        fail("RESPONSE not signed by the device key")
    fake.send(FRAME["RESPONSE_ACK"], ("<BgbAckMessage><TaskGUID>%s</TaskGUID></BgbAckMessage>" % bad_guid).encode())

    # 2. A good push, then the same TaskGUID again once it is answered.
    good = str(uuid.uuid4()).upper()
    fake.send(FRAME["PUSH"], fake.push_body(good, push_id=21, task_id=22), fake.site_key)
    ack, _ = fake.read_until(FRAME["PUSH_ACK"])
    if good.encode() not in ack:
        fail("PUSH_ACK %r" % ack)
    rbody, rsig = fake.read_until(FRAME["RESPONSE"], timeout=40)
    rc, guid, text = response_fields(rbody)
    if guid != good or rc != 1:
        fail("wanted Success for %s, got %r" % (good, text))
    first_response = rbody
    fake.send(FRAME["PUSH"], fake.push_body(good, push_id=21, task_id=22), fake.site_key)
    ack, _ = fake.read_until(FRAME["PUSH_ACK"])
    rbody, _ = fake.read_until(FRAME["RESPONSE"])
    if rbody != first_response:
        fail("the duplicate was not answered with the stored response")
    fake.send(FRAME["RESPONSE_ACK"], ("<BgbAckMessage><TaskGUID>%s</TaskGUID></BgbAckMessage>" % good).encode())

    # 3. Expired, addressed elsewhere, unknown type.
    cases = []
    g = str(uuid.uuid4()).upper()
    cases.append((g, fake.push_body(g, push_id=31, expires_in=-10), 4))
    g = str(uuid.uuid4()).upper()
    other_cid = str(uuid.uuid4()).upper()
    cases.append((g, fake.push_body(g, push_id=32).replace(
        b"</Expires>", b"</Expires><ClientID>" + other_cid.encode() + b"</ClientID>"), 4))
    g = str(uuid.uuid4()).upper()
    cases.append((g, fake.push_body(g, push_id=33).replace(
        b"</Expires>", b"</Expires><ClientID>" + client_id.encode() + b"</ClientID>").replace(
        b"<TaskType>1</TaskType>", b"<TaskType>9</TaskType>"), 3))
    for g, b, want in cases:
        fake.send(FRAME["PUSH"], b, fake.site_key)
        rbody, _ = fake.read_until(FRAME["RESPONSE"], skip=(4, 7))
        rc, guid, text = response_fields(rbody)
        if guid != g or rc != want:
            fail("wanted ReturnCode %d for %s, got %r" % (want, g, text))

    time.sleep(0.5)
    with open(marker) as f:
        ran = f.read().split()
    if ran != [good]:
        fail("hooks ran for %r, wanted only %s once" % (ran, good))
    text = agent.logtext()
    if "signature did not verify" not in text:
        fail("no log line for the bad signature")
    if not re.search(r"Clock skew: the MP's clock is \+1[12][0-9]s from ours", text):
        fail("no clock-skew warning with the offset")

    # GOODBYE with RetryAfterSeconds: no reconnection before it.
    fake.send(FRAME["GOODBYE"], b'<BgbGoodbyeMessage Reason="shutdown" RetryAfterSeconds="2"/>')
    t0 = time.monotonic()
    fake.conn.close()
    fake.accept(timeout=40)
    waited = time.monotonic() - t0
    if waited < 2.0:
        fail("reconnected %.2f s after GOODBYE(RetryAfterSeconds=2)" % waited)
    fake.read_until(FRAME["SIGNIN"])
    fake.confirm()
    agent.wait_signed_in()

    # A frame type the agent never accepts: protocol error.
    fake.send(FRAME["SIGNIN"], b'<BgbSignInMessage/>', fake.site_key)
    # (Unacknowledged responses are re-sent after each sign-in: skipped here.)
    body, _ = fake.read_until(FRAME["GOODBYE"], skip=(5, 7))
    if b'Reason="protocol-error"' not in body:
        fail("GOODBYE %r" % body)
    fake.conn.close()
    fake.accept(timeout=40)
    fake.read_until(FRAME["SIGNIN"])
    fake.confirm()
    agent.wait_signed_in()
    peer = "127.0.0.1:%d" % fake.port
    if ("Protocol error from %s: unexpected SIGNIN frame" % peer) not in agent.logtext():
        fail("the protocol-error line does not name the peer %s" % peer)

    # An unsigned PUSH (S = 0): a protocol error (contract 7.6), not
    # ReturnCode 5, and nothing runs.
    unsigned = str(uuid.uuid4()).upper()
    fake.send(FRAME["PUSH"], fake.push_body(unsigned, push_id=41))
    while True:
        t, body, _ = fake.read_frame(30)
        if t == FRAME["RESPONSE"] and unsigned.encode() in body:
            fail("an unsigned PUSH was answered: %r" % body)
        if t == FRAME["GOODBYE"]:
            break
    if b'Reason="protocol-error"' not in body:
        fail("GOODBYE %r" % body)
    wait_for(lambda: ("Protocol error from %s: PUSH without a signature" % peer) in agent.logtext(), 10,
             "the unsigned-PUSH protocol-error line")
    fake.conn.close()
    fake.accept(timeout=40)
    fake.read_until(FRAME["SIGNIN"])
    fake.confirm()
    agent.wait_signed_in()


if __name__ == "__main__":
    sys.exit(run_test(test_fake_mp))
