#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""The console's event stream with 10,000 devices: a new stream's first
view (one "device" event per device, about 2 MiB) arrives whole and the
stream stays open (its unread-data cap applies to earlier ticks' data, not
to one tick's own). The device rows are written into the MP's SQLite
records behind its back (no agents: the figure is the stream's, not the
sign-ins'); timing is the benchmark's business (bench/bench.py console)."""

import http.client
import os
import ssl
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from consolelib import *  # noqa: E402,F401,F403
import tetherlib  # noqa: E402

N = 10000


def test(tmp):
    mp = console_mp(tmp)  # noqa: F405
    import sqlite3
    db = sqlite3.connect(os.path.join(mp.dir, "tether-mp.db"), timeout=30)
    now = int(time.time())
    db.executemany("INSERT INTO devices (client_id, hostname, version, public_key, fingerprint, status, "
                   "first_seen, last_seen, address) VALUES (?, ?, '1.0', 'k', ?, 0, ?, ?, '127.0.0.1')",
                   [("%08X-0000-4000-8000-%012X" % (i, i), "scale-%05d" % i, "%064x" % i, now, now)
                    for i in range(N)])
    db.commit()
    db.close()
    password = user_add(mp, "scaleadmin", "full-administrator", password="scale-admin-password")  # noqa: F405
    cl = Client(mp)  # noqa: F405
    st, _, _ = cl.login("scaleadmin", password)
    if st != 200:
        tetherlib.fail("login: HTTP %d" % st)
    st, js, _, _ = cl.get("/api/v1/devices?limit=50")
    if st != 200 or js["total"] != N:
        tetherlib.fail("device list: HTTP %d, total %r" % (st, js and js.get("total")))

    ctx = ssl.create_default_context(cafile=os.path.join(mp.dir, "tls.crt"))
    conn = http.client.HTTPSConnection("127.0.0.1", mp.console, context=ctx, timeout=60)
    conn.request("GET", "/api/v1/events", headers={"Cookie": cl.cookie, "Accept": "text/event-stream"})
    r = conn.getresponse()
    if r.status != 200:
        tetherlib.fail("events: HTTP %d" % r.status)
    seen = set()
    deadline = time.monotonic() + 90
    while len(seen) < N and time.monotonic() < deadline:
        line = r.readline()
        if not line:
            tetherlib.fail("the event stream ended after %d of %d device events" % (len(seen), N))
        if line.startswith(b"data: ") and b'"client_id"' in line:
            seen.add(line.split(b'"client_id":"', 1)[1].split(b'"', 1)[0])
    if len(seen) != N:
        tetherlib.fail("%d of %d device events within 90 s" % (len(seen), N))
    # still open: a ping (15 s) or nothing, but not the end of the stream
    conn.sock.settimeout(20)
    try:
        line = r.readline()
        if not line:
            tetherlib.fail("the event stream ended after its first view")
    except TimeoutError:
        pass
    conn.close()
    tetherlib.log("first view: %d device events, stream open" % len(seen))


if __name__ == "__main__":
    sys.exit(tetherlib.run_test(test))
