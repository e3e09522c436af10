#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Device key rotation (issue #15, PROTOCOL-v1 7.3) against a real tether-mp:
 - tetherctl identity rotate: same ClientID, new key; the SIGNIN carries the
   rollover proof; the MP rebinds and records one rotation, no conflict; the
   old key is destroyed once the MP confirms; pushes keep working;
 - a clone that still holds the old key is refused as a conflict;
 - hostile rollovers, from a raw TLS client: signed by the wrong key, and for
   a ClientID bound to another key: each refused with GOODBYE(conflict) and
   a log line naming the reason; the binding stays as it was;
 - [agent] key_rotation_days rotates a key older than that at start."""
import base64
import os
import shutil
import socket
import ssl
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tetherlib import *  # noqa: E402,F403


def device(mp, cid):
    devs = json.loads(mp.admin("devices", "--json").stdout)
    devs = devs.get("devices", devs) if isinstance(devs, dict) else devs
    return [d for d in devs if d["client_id"] == cid]


def key_events(mp):
    return json.loads(mp.admin("key-events", "--json").stdout)["key_events"]


def conflicts(mp):
    return json.loads(mp.admin("conflicts", "--json").stdout)["conflicts"]


def push_ok(mp, cid):
    out = json.loads(mp.admin("push", "--type", "3", "--json", cid).stdout)
    st = mp.push_status(out.get("PushID", out.get("push_id")), wait=60)
    tgt = st["targets"][0]
    if tgt["state"] != "answered" or tgt["return_code"] != 1:
        fail("push to %s: %r" % (cid, tgt))


def raw_signin(tmp, mp, name, cid, tls_key, prev_key, rollover_signer):
    """A SIGNIN on a TLS channel whose client key is tls_key, with a
    KeyRollover naming prev_key and signed by rollover_signer. Returns the
    type of the first frame the MP answers with and its body."""
    crt = tmp.sub(name + ".crt")
    openssl("req", "-x509", "-new", "-key", tls_key, "-out", crt, "-days", "2", "-subj", "/CN=" + cid)
    new_der = base64.b64decode(spki_b64(tls_key + ".pub"))
    proof = sign(rollover_signer, 0x44, cid.encode() + new_der)
    body = ('<BgbSignInMessage TimeStamp="%s" ClientID="%s" Version="test"><Hostname>%s</Hostname>'
            '<PublicKey>%s</PublicKey><Capabilities><TaskType>1</TaskType><Feature>1.1</Feature>'
            '</Capabilities><KeyRollover><PreviousPublicKey>%s</PreviousPublicKey><Signature>%s</Signature>'
            '</KeyRollover></BgbSignInMessage>'
            % (utc(time.time()), cid, name, spki_b64(tls_key + ".pub"), spki_b64(prev_key + ".pub"),
               base64.b64encode(proof).decode())).encode()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.load_cert_chain(crt, tls_key)
    with socket.create_connection(("127.0.0.1", mp.tcp), timeout=30) as raw:
        with ctx.wrap_socket(raw) as s:
            s.sendall(frame(1, body, sign(tls_key, 1, body)))
            buf = b""
            while len(buf) < 10 or len(buf) < 10 + int.from_bytes(buf[4:8], "big"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
    if len(buf) < 10:
        fail("%s: no answer from the MP" % name)
    return buf[3], buf[10:10 + int.from_bytes(buf[4:8], "big")]


def test_device_key_rotation(tmp):
    mp = MP(tmp)
    mp.write_machine_policy()
    mp.start()
    site_pub = os.path.join(mp.dir, "site.pub")
    ca = os.path.join(mp.dir, "tls.crt")
    a = Agent(tmp, "127.0.0.1", mp.tcp, mp.https, site_pub=site_pub, ca_file=ca, name="a", user=privsep_user())
    a.start()
    cid = a.wait_signed_in()["client_id"]
    fp1 = a.ctl("identity", "show")["device_key_fingerprint"]
    old_key = tmp.sub("old.key")
    shutil.copy(os.path.join(a.state, "identity", "device.key"), old_key)
    openssl("pkey", "-in", old_key, "-pubout", "-out", old_key + ".pub")

    # A clone of the image with the identity as it is now (the old key).
    clone = Agent(tmp, "127.0.0.1", mp.tcp, mp.https, site_pub=site_pub, ca_file=ca, name="clone")
    shutil.copy(a.machine_id, clone.machine_id)
    shutil.copytree(os.path.join(a.state, "identity"), os.path.join(clone.state, "identity"))

    ident = a.ctl("identity", "rotate")
    fp2 = ident["device_key_fingerprint"]
    if ident["client_id"] != cid or fp2 == fp1 or not ident["rollover_pending"]:
        fail("identity rotate answer %r" % ident)

    def confirmed():
        i = a.ctl("identity", "show")
        return i if not i["rollover_pending"] else None
    wait_for(confirmed, 60, "the MP to confirm the rollover")
    if os.path.exists(os.path.join(a.state, "identity", "previous.key")):
        fail("the old key was not destroyed after the MP confirmed")
    if "the old key is destroyed" not in a.logtext():
        fail("no log line about the confirmed rotation")
    d = device(mp, cid)
    if len(d) != 1 or d[0]["fingerprint"] != fp2:
        fail("MP devices after the rotation: %r" % d)
    ev = key_events(mp)
    if len(ev) != 1 or ev[0]["kind"] != "rotation" or ev[0]["old_fingerprint"] != fp1 or \
            ev[0]["new_fingerprint"] != fp2:
        fail("key events: %r" % ev)
    if conflicts(mp):
        fail("a rotation recorded as a conflict: %r" % conflicts(mp))
    if "Key rotation: ClientID '%s'" % cid not in open(mp.log).read():
        fail("no MP log line for the rotation")
    push_ok(mp, cid)

    # The clone still holds the old key: a conflict, and the device is not disturbed.
    clone.start()
    wait_for(lambda: any(c["client_id"] == cid and c["offered_fingerprint"] == fp1 for c in conflicts(mp)),
             60, "the clone to be recorded as a conflict")
    clone.kill()
    if device(mp, cid)[0]["fingerprint"] != fp2:
        fail("the clone changed the binding")
    a.wait_signed_in()
    push_ok(mp, cid)

    # Hostile rollovers.
    bogus = tmp.sub("bogus.key")
    make_key(bogus)
    k3 = tmp.sub("k3.key")
    make_key(k3)
    cur_key = tmp.sub("cur.key")
    shutil.copy(os.path.join(a.state, "identity", "device.key"), cur_key)
    openssl("pkey", "-in", cur_key, "-pubout", "-out", cur_key + ".pub")
    # 1. PreviousPublicKey is the bound key, but the proof is by another key.
    t, body = raw_signin(tmp, mp, "wrong-signer", cid, k3, cur_key, bogus)
    if t != 8 or b'Reason="conflict"' not in body:
        fail("rollover signed by the wrong key: answered %d %r" % (t, body))
    # 2. A valid proof by a key the ClientID is not bound to (the old one).
    t, body = raw_signin(tmp, mp, "other-binding", cid, k3, old_key, old_key)
    if t != 8 or b'Reason="conflict"' not in body:
        fail("rollover for a ClientID bound to another key: answered %d %r" % (t, body))
    text = open(mp.log).read()
    for why in ("the rollover is not signed by the bound key",
                "the ClientID is bound to another key than PreviousPublicKey"):
        if why not in text:
            fail("no MP log line naming '%s'" % why)
    refused = [e for e in key_events(mp) if e["kind"] == "rollover-refused"]
    if len(refused) != 2:
        fail("refused rollovers recorded: %r" % key_events(mp))
    if device(mp, cid)[0]["fingerprint"] != fp2:
        fail("a hostile rollover changed the binding")
    push_ok(mp, cid)

    # key_rotation_days: a key older than that is rotated at start.
    a.kill(signal.SIGTERM)
    past = time.time() - 3 * 86400
    os.utime(os.path.join(a.state, "identity", "device.key"), (past, past))
    with open(a.conf, "a") as f:
        f.write("[agent]\nkey_rotation_days = 2\n")
    a.start()
    a.wait_signed_in()
    wait_for(confirmed, 60, "the periodic rotation to be confirmed")
    fp3 = a.ctl("identity", "show")["device_key_fingerprint"]
    if fp3 == fp2 or "Device key rotated (key_rotation_days)" not in a.logtext():
        fail("key_rotation_days did not rotate the key")
    wait_for(lambda: device(mp, cid)[0]["fingerprint"] == fp3, 30, "the MP to rebind to the third key")
    push_ok(mp, cid)


if __name__ == "__main__":
    sys.exit(run_test(test_device_key_rotation))
