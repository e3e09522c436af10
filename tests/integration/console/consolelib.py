# SPDX-License-Identifier: Apache-2.0
"""Helpers for the console tests: a real tether-mp with its console on a
port-0 listener, real tetherd agents (each with a hostname of its own in a
UTS namespace when root), console accounts made with `tether-mp user add`,
and a small HTTPS client that verifies the MP's certificate."""

import http.client
import json
import os
import re
import ssl
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "agent"))
from tetherlib import *  # noqa: E402,F401,F403
import tetherlib  # noqa: E402


def pg_url():
    """The throwaway PostgreSQL of tests/integration/mp-pg/pg-run.sh, if any."""
    return os.environ.get("TETHER_TEST_PG") or None


def console_mp(tmp, approval="auto"):
    extra = ["--console-listen", "127.0.0.1:0", "--keepalive", "5", "--approval", approval]
    if pg_url():
        extra += ["--store", pg_url()]
    mp = MP(tmp, extra=extra)  # noqa: F405
    mp.write_machine_policy()
    mp.start()
    ports = dict(l.strip().split("=", 1) for l in open(os.path.join(mp.dir, "ports")) if "=" in l)
    mp.console = int(ports["console"])
    return mp


def agent_named(tmp, mp, name, hostname):
    """A real tetherd; as root its hostname is set in a UTS namespace of its own."""
    a = Agent(tmp, "127.0.0.1", mp.tcp, mp.https, site_pub=os.path.join(mp.dir, "site.pub"),  # noqa: F405
              ca_file=os.path.join(mp.dir, "tls.crt"), name=name)
    a.hostname = None
    if os.geteuid() == 0 and hostname:
        a.hostname = hostname
        # sethostname(2) directly: hostname(1) refuses names a test needs
        # (markup in a hostname, to see it escaped)
        setter = ("import ctypes, os, sys; h = sys.argv[1].encode(); "
                  "ctypes.CDLL(None, use_errno=True).sethostname(h, len(h)) == 0 or sys.exit('sethostname'); "
                  "os.execv(sys.argv[2], sys.argv[2:])")
        cmd = ["unshare", "--uts", sys.executable, "-c", setter, hostname,
               tetherlib.TETHERD, "--config", a.conf, "--foreground", "--single-process"]
        a.proc = tetherlib.spawn(cmd, a.log)
    else:
        a.start()
    return a


def store_sql(mp, sql):
    """Runs SQL on the MP's records behind its back (SQLite file or PostgreSQL)."""
    if pg_url():
        r = subprocess.run(["psql", pg_url(), "-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql],  # noqa: F405
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            fail("psql: %s" % r.stderr)  # noqa: F405
        return r.stdout.strip()
    import sqlite3
    db = sqlite3.connect(os.path.join(mp.dir, "tether-mp.db"), timeout=10)
    try:
        rows = db.execute(sql).fetchall()
        db.commit()
    finally:
        db.close()
    return "\n".join("|".join(str(c) for c in row) for row in rows)


def user_add(mp, name, role, password=None, collection=None):
    args = [tetherlib.TETHER_MP, "user", "add", name, "--role", role, "--state-dir", mp.dir]
    if collection:
        args += ["--collection", collection]
    if password:
        args.append("--password-stdin")
    r = subprocess.run(args, input=(password + "\n") if password else None,  # noqa: F405
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        fail("user add %s: %s %s" % (name, r.stdout, r.stderr))  # noqa: F405
    if password:
        return password
    m = re.search(r"shown only now:\n(\S+)", r.stdout)
    if not m:
        fail("user add printed no one-time password: %r" % r.stdout)  # noqa: F405
    return m.group(1)


class Client:
    """One console user: session cookie and CSRF token, or a bearer token."""

    def __init__(self, mp, token=None):
        self.mp = mp
        self.ctx = ssl.create_default_context(cafile=os.path.join(mp.dir, "tls.crt"))
        self.cookie = None
        self.csrf = None
        self.token = token

    def request(self, method, path, body=None, raw=None, headers=None, csrf=True, ctype="application/json"):
        conn = http.client.HTTPSConnection("127.0.0.1", self.mp.console, context=self.ctx, timeout=60)
        h = dict(headers or {})
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
        if data is not None and ctype:
            h["Content-Type"] = ctype
        if self.cookie:
            h["Cookie"] = self.cookie
        if self.csrf and csrf and method != "GET":
            h["X-CSRF-Token"] = self.csrf
        if self.token:
            h["Authorization"] = "Bearer " + self.token
        conn.request(method, path, body=data, headers=h)
        r = conn.getresponse()
        text = r.read().decode(errors="replace")
        hdrs = {k.lower(): v for k, v in r.getheaders()}
        conn.close()
        try:
            js = json.loads(text) if text and "json" in hdrs.get("content-type", "") else None
        except ValueError:
            js = None
        return r.status, js, hdrs, text

    def login(self, user, password):
        st, js, hdrs, text = self.request("POST", "/api/v1/login", {"user": user, "password": password})
        if st != 200:
            return st, js, hdrs
        cookie = hdrs.get("set-cookie", "")
        for attr in ("HttpOnly", "Secure", "SameSite=Strict"):
            if attr not in cookie:
                fail("session cookie without %s: %r" % (attr, cookie))  # noqa: F405
        self.cookie = cookie.split(";")[0]
        self.csrf = js["csrf_token"]
        return st, js, hdrs

    def get(self, path):
        return self.request("GET", path)

    def post(self, path, body, **kw):
        return self.request("POST", path, body, **kw)


def expect(got, want, what):
    st = got[0]
    if st != want:
        fail("%s: HTTP %d, wanted %d: %s" % (what, st, want, got[3][:500]))  # noqa: F405
    return got[1]


def mp_log(mp):
    with open(mp.log, errors="replace") as f:
        return f.read()


def wait_online(client, n, timeout=60):
    def ok():
        st, js, _, _ = client.get("/api/v1/devices?online=true")
        return js if st == 200 and js["total"] >= n else None
    return wait_for(ok, timeout, "%d devices online in the console" % n)  # noqa: F405


def wait_answered(client, push_id, timeout=60):
    def ok():
        st, js, _, _ = client.get("/api/v1/pushes/%d" % push_id)
        if st == 200 and all(t.get("state") == "answered" for t in js["targets"]):
            return js
        return None
    return wait_for(ok, timeout, "push %d answered" % push_id, interval=0.3)  # noqa: F405
