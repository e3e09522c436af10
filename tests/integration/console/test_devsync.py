#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Device sync (DeviceSyncURL=): a real tether-mp posts its changed device
records, signed with the site key, to an HTTPS receiver this test runs on
loopback (python3 http.server with ssl). Real tetherd agents sign in. The
test checks: the batches arrive (at most DeviceSyncBatchSize records each)
with every signed-in device; each Tether-Signature verifies with site.pub
over "TETHER1" || 0x44 || body (and an altered body does not); a receiver
answering 503 gets the records again after a backoff, and they are kept
until accepted; unchanged records are not sent again, also across a
restart (the state file); the seed-style log lines."""

import base64
import http.server
import json
import os
import re
import signal
import ssl
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from consolelib import *  # noqa: E402,F401,F403
import tetherlib  # noqa: E402

SIG_TYPE = 0x44
BATCH = 2


class Receiver:
    """An HTTPS receiver: answers `fail` requests with 503, then 200."""

    def __init__(self, tmp):
        self.cert = tmp.sub("recv.crt")
        self.key = tmp.sub("recv.key")
        tetherlib.openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                          "-keyout", self.key, "-out", self.cert, "-days", "2", "-subj", "/CN=127.0.0.1",
                          "-addext", "subjectAltName=IP:127.0.0.1")
        self.requests = []  # (status answered, headers, body)
        self.fail = 0
        self.lock = threading.Lock()
        recv = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with recv.lock:
                    status = 503 if recv.fail > 0 else 200
                    recv.fail = max(0, recv.fail - 1)
                    recv.requests.append((status, dict(self.headers), body, self.path))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, self.key)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def accepted(self):
        """ClientID -> the last record accepted (200)."""
        with self.lock:
            reqs = list(self.requests)
        got = {}
        for status, _, body, _ in reqs:
            if status == 200:
                for rec in json.loads(body)["records"]:
                    got[rec["client_id"]] = rec
        return got

    def count(self, status=None):
        with self.lock:
            return sum(1 for r in self.requests if status is None or r[0] == status)


def verify_all(recv, mp, tmp):
    pub = os.path.join(mp.dir, "site.pub")
    with open(os.path.join(mp.dir, "site.pub")) as f:
        assert f.read().startswith("-----BEGIN PUBLIC KEY-----")
    with recv.lock:
        reqs = list(recv.requests)
    for status, headers, body, path in reqs:
        same(path, "/devsync/devices", "request path")
        same(headers.get("Content-Type"), "application/json", "content type")
        sig = base64.b64decode(headers["Tether-Signature"])
        if not tetherlib.verify(pub, SIG_TYPE, body, sig, tmp.path):
            fail("Tether-Signature does not verify for body %r" % body[:200])
        if tetherlib.verify(pub, SIG_TYPE, body.replace(b"records", b"recordz"), sig, tmp.path):
            fail("an altered body verified")
        if tetherlib.verify(pub, 0x03, body, sig, tmp.path):
            fail("the signature verified with another type byte")
        doc = json.loads(body)
        if not 1 <= len(doc["records"]) <= BATCH:
            fail("a batch of %d records (DeviceSyncBatchSize=%d)" % (len(doc["records"]), BATCH))
    return len(reqs)


def no_identical_resend(recv):
    """No record is sent again unchanged once the receiver accepted it."""
    with recv.lock:
        reqs = list(recv.requests)
    accepted = {}
    for status, _, body, _ in reqs:
        for rec in json.loads(body)["records"]:
            if accepted.get(rec["client_id"]) == rec:
                fail("record of %s sent again unchanged after it was accepted" % rec["client_id"])
            if status == 200:
                accepted[rec["client_id"]] = rec


def same(got, want, what):
    if got != want:
        fail("%s: %r, wanted %r" % (what, got, want))


def log_count(mp, text):
    return mp_log(mp).count(text)


def test(tmp):
    recv = Receiver(tmp)
    conf = tmp.sub("mp.conf")
    with open(conf, "w") as f:
        f.write("[MP]\nDeviceSyncURL=https://127.0.0.1:%d/devsync/devices\nDeviceSyncCAFile=%s\n"
                "DeviceSyncIntervalSeconds=2\nDeviceSyncBatchSize=%d\n" % (recv.port, recv.cert, BATCH))
    mp = tetherlib.MP(tmp, extra=["--config", conf, "--keepalive", "5"])
    mp.write_machine_policy()
    mp.start()

    agents = [agent_named(tmp, mp, "dev%d" % i, None) for i in range(3)]
    devices = lambda: json.loads(mp.admin("devices", "--json").stdout)["devices"]  # noqa: E731
    wait_for(lambda: len(devices()) == 3, 60, "three devices signed in")
    ids = {d["client_id"] for d in devices()}
    wait_for(lambda: ids <= set(recv.accepted()), 60, "the three records at the receiver")
    rec = recv.accepted()
    for cid in ids:
        same(rec[cid]["status"], "approved", "status of %s" % cid)
        if not rec[cid].get("key_fingerprint") or not rec[cid].get("last_seen"):
            fail("record without fingerprint or last_seen: %r" % rec[cid])
    if not re.search(r"Batching [12] records", mp_log(mp)):
        fail("no 'Batching N records' line")
    if not re.search(r"Next run time will be at approximately: \d\d/\d\d/\d{4} \d\d:\d\d:\d\d", mp_log(mp)):
        fail("no 'Next run time will be at approximately: MM/DD/YYYY HH:MM:SS' line")
    verify_all(recv, mp, tmp)

    # Quiet: nothing changed, nothing is sent again.
    wait_for(lambda: log_count(mp, "no device record changed since the last upload") >= 1, 30, "a quiet run")
    n = recv.count()
    quiet = log_count(mp, "no device record changed")
    wait_for(lambda: log_count(mp, "no device record changed") >= quiet + 2, 30, "two more quiet runs")
    if recv.count() != n:  # an agent may have reconnected under load: its record changed
        tetherlib.log("%d requests during the quiet runs (a record changed)" % (recv.count() - n))
    no_identical_resend(recv)

    # The receiver fails: a new device's record is retried until accepted.
    with recv.lock:
        recv.fail = 3
    agents.append(agent_named(tmp, mp, "dev3", None))
    wait_for(lambda: len(devices()) == 4, 60, "the fourth device")
    new = ({d["client_id"] for d in devices()} - ids).pop()
    wait_for(lambda: recv.count(503) >= 3, 90, "three refused uploads")
    wait_for(lambda: new in recv.accepted(), 90, "the fourth record accepted after the failures")
    log_text = mp_log(mp)
    if "failed: the receiver answered HTTP 503" not in log_text or "retrying in" not in log_text:
        fail("the failed uploads were not logged with the retry")
    with recv.lock:
        refused = [json.loads(b)["records"] for s, _, b, _ in recv.requests if s == 503]
    if not any(r["client_id"] == new for batch in refused for r in batch):
        fail("the refused batches did not hold the new record")
    verify_all(recv, mp, tmp)
    no_identical_resend(recv)

    # Agents stop (their records change once more: last seen), then quiet.
    for a in agents:
        tetherlib.kill_group(a.proc, signal.SIGTERM)
        a.proc.wait(timeout=30)
    time.sleep(1)
    quiet = log_count(mp, "no device record changed")
    wait_for(lambda: log_count(mp, "no device record changed") >= quiet + 1, 60, "quiet after the agents stop")
    # A restart keeps what was accepted (devsync.json): nothing is sent again.
    n = recv.count()
    tetherlib.kill_group(mp.proc, signal.SIGTERM)
    mp.proc.wait(timeout=30)
    state = json.load(open(os.path.join(mp.dir, "devsync.json")))
    same(set(state["sent"]), ids | {new}, "ClientIDs in devsync.json")
    quiet = log_count(mp, "no device record changed")
    mp.start()
    wait_for(lambda: log_count(mp, "no device record changed") >= quiet + 2, 60, "quiet runs after a restart")
    same(recv.count(), n, "requests after a restart with nothing changed")
    if "(4 known as sent)" not in mp_log(mp):
        fail("the restarted MP did not load its 4 sent records")
    tetherlib.kill_group(mp.proc, signal.SIGTERM)
    mp.proc.wait(timeout=30)
    recv.httpd.shutdown()


if __name__ == "__main__":
    sys.exit(tetherlib.run_test(test))
