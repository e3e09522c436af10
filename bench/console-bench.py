#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""The console's figures with many devices (a benchmark, not a test).

Started by `mp-swarm --console bench/console-bench.py` once its simulated
agents are signed in, with: STATE_DIR TETHER_MP N RESULT_FILE. It makes an
administrator, logs in as the web console does (session cookie + CSRF),
and measures:
  - the device list's first page, GET /api/v1/devices?limit=50 (target
    < 50 ms): the first request and 20 more;
  - an action on a rule collection holding the N devices, POST
    /api/v1/actions (target: accepted, 202, in < 200 ms);
  - an open console: a reader of GET /api/v1/events that, like the page
    (mp/webui/app.js), re-reads GET /api/v1/pushes/ID on each "push"
    event, until the page shows N answered (target: it keeps up).
It prints the figures with their targets and writes
"page_all_answered=<CLOCK_MONOTONIC s>" to RESULT_FILE for mp-swarm,
which knows when the last response was acknowledged."""

import http.client
import json
import os
import ssl
import statistics
import subprocess
import sys
import threading
import time

PASSWORD = "bench-console-password"
PAGE_TARGET_MS = 50
ACTION_TARGET_MS = 200


def ms(t):
    return t * 1000.0


class Session:
    """One keep-alive HTTPS connection with the console's cookie and CSRF token."""

    def __init__(self, port, cafile):
        self.port = port
        self.ctx = ssl.create_default_context(cafile=cafile)
        self.conn = None
        self.cookie = self.csrf = None

    def connect(self):
        return http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx, timeout=120)

    def request(self, method, path, body=None):
        if self.conn is None:
            self.conn = self.connect()
        h = {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        if self.cookie:
            h["Cookie"] = self.cookie
        if self.csrf and method != "GET":
            h["X-CSRF-Token"] = self.csrf
        t0 = time.monotonic()
        try:
            self.conn.request(method, path, body=data, headers=h)
            r = self.conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            # the server closed the idle keep-alive connection: a browser
            # opens a new one (its handshake is part of the figure)
            self.conn = self.connect()
            self.conn.request(method, path, body=data, headers=h)
            r = self.conn.getresponse()
        text = r.read()
        dt = time.monotonic() - t0
        if r.getheader("Connection", "").lower() == "close":
            self.conn.close()
            self.conn = None
        js = json.loads(text) if text and "json" in (r.getheader("Content-Type") or "") else None
        return r.status, js, dt, r

    def login(self, user):
        st, js, _, r = self.request("POST", "/api/v1/login", {"user": user, "password": PASSWORD})
        if st != 200:
            sys.exit("console-bench: login: HTTP %d %r" % (st, js))
        self.cookie = r.getheader("Set-Cookie").split(";")[0]
        self.csrf = js["csrf_token"]


class Page:
    """The open console: the event stream, and the push re-read on each push event."""

    def __init__(self, sess, n):
        self.sess = sess
        self.n = n
        self.push_id = None
        self.lock = threading.Condition()
        self.device_events = 0
        self.push_events = 0
        self.events_while_busy = 0
        self.t_open = self.t_devices_all = None
        self.reads = []  # (seconds the re-read took, answered)
        self.t_all_answered = None
        self.error = None
        self.pending = False

    def stream(self):
        try:
            conn = self.sess.connect()
            conn.request("GET", "/api/v1/events", headers={"Cookie": self.sess.cookie,
                                                            "Accept": "text/event-stream"})
            r = conn.getresponse()
            if r.status != 200:
                raise RuntimeError("events: HTTP %d" % r.status)
            self.t_open = time.monotonic()
            event = None
            while self.t_all_answered is None:
                line = r.readline()
                if not line:
                    raise RuntimeError("the event stream ended")
                line = line.decode().rstrip("\n")
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    self.on_event(event, json.loads(line[6:]))
        except Exception as e:  # reported by the main thread
            self.error = str(e)
            with self.lock:
                self.lock.notify_all()

    def on_event(self, event, data):
        with self.lock:
            if event == "device":
                self.device_events += 1
                if self.device_events == self.n:
                    self.t_devices_all = time.monotonic()
                    self.lock.notify_all()
            elif event == "push" and data.get("push_id") == self.push_id:
                self.push_events += 1
                if self.pending:
                    self.events_while_busy += 1
                self.pending = True
                self.lock.notify_all()

    def reader(self, sess):
        """Re-reads the push as app.js does; events during a re-read are coalesced."""
        while True:
            with self.lock:
                while not self.pending and self.error is None and self.t_all_answered is None:
                    self.lock.wait(1.0)
                if self.error or self.t_all_answered is not None:
                    return
                self.pending = False
                push_id = self.push_id
            st, js, dt, _ = sess.request("GET", "/api/v1/pushes/%d" % push_id)
            answered = js["counts"].get("answered", 0) if st == 200 else -1
            with self.lock:
                self.reads.append((dt, answered))
                if answered >= self.n:
                    self.t_all_answered = time.monotonic()
                    self.lock.notify_all()


def main():
    state, mp_bin, n, result = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    ports = dict(l.strip().split("=", 1) for l in open(os.path.join(state, "ports")) if "=" in l)
    cafile = os.path.join(state, "tls.crt")
    r = subprocess.run([mp_bin, "user", "add", "bench", "--role", "full-administrator", "--password-stdin",
                        "--state-dir", state], input=PASSWORD + "\n", capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        sys.exit("console-bench: user add: %s %s" % (r.stdout, r.stderr))
    sess = Session(int(ports["console"]), cafile)
    sess.login("bench")

    deadline = time.monotonic() + 120
    while sess.request("GET", "/api/v1/devices?limit=1")[1]["total"] < n:
        if time.monotonic() > deadline:
            sys.exit("console-bench: fewer than %d devices listed" % n)
        time.sleep(0.5)

    pages = [sess.request("GET", "/api/v1/devices?limit=50")[2] for _ in range(21)]
    first, rest = pages[0], sorted(pages[1:])
    st, _, _, _ = sess.request("PUT", "/api/v1/collections/bench-swarm", {"rule": {"hostname": "swarm"}})
    if st != 200:
        sys.exit("console-bench: PUT collection: HTTP %d" % st)

    page = Page(sess, n)
    threading.Thread(target=page.stream, daemon=True).start()
    reader_sess = Session(sess.port, cafile)
    reader_sess.cookie, reader_sess.csrf = sess.cookie, sess.csrf
    with page.lock:
        while page.t_devices_all is None and page.error is None:
            if not page.lock.wait(120):
                break
    t_devices = (page.t_devices_all - page.t_open) if page.t_devices_all else None

    sess.request("GET", "/api/v1/me")  # the page is open: its connection is warm
    st, js, t_action, _ = sess.request("POST", "/api/v1/actions",
                                       {"action": "RequestMachinePolicy", "collection": "bench-swarm"})
    t_accepted = time.monotonic()
    if st != 202:
        sys.exit("console-bench: action: HTTP %d %r" % (st, js))
    with page.lock:
        page.push_id = js["push_id"]
        page.pending = True  # the page shows the push at once (watchPush)
        page.lock.notify_all()
    rd = threading.Thread(target=page.reader, args=(reader_sess,), daemon=True)
    rd.start()
    rd.join(300)
    if page.t_all_answered is None:
        sys.exit("console-bench: the page did not show %d answered within 300 s (%s)" % (n, page.error))
    with open(result, "w") as f:
        f.write("page_all_answered=%.6f\n" % page.t_all_answered)

    reads = sorted(dt for dt, _ in page.reads)
    p95 = rest[int(len(rest) * 0.95) - 1]
    print("console: %d devices, load average %s" % (n, " ".join(open("/proc/loadavg").read().split()[:3])))
    print("first page:           GET /api/v1/devices?limit=50: first %.1f ms, then median %.1f ms, p95 %.1f ms,"
          " max %.1f ms (target < %d ms)" % (ms(first), ms(statistics.median(rest)), ms(p95), ms(rest[-1]),
                                            PAGE_TARGET_MS))
    print("action accepted:      POST /api/v1/actions on collection bench-swarm (%d devices): HTTP 202 in %.1f ms "
          "(target < %d ms)" % (js.get("targets", n), ms(t_action),
                                 ACTION_TARGET_MS))
    print("event stream:         %d device events (all %d devices) %.2f s after it opened"
          % (page.device_events, n, t_devices if t_devices is not None else float("nan")))
    print("results on the page:  %d answered seen %.2f s after the action was accepted; %d push events, "
          "%d re-reads of the push (median %.0f ms, max %.0f ms), %d events arrived during a re-read"
          % (n, page.t_all_answered - t_accepted, page.push_events, len(reads), ms(statistics.median(reads)),
             ms(reads[-1]), page.events_while_busy))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
