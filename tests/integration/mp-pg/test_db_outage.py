#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""tether-mp on PostgreSQL (TETHER_TEST_PG, from pg-run.sh) while the
database is down: the agent's channel stays up and its keepalives are
answered, a push is refused with a clear reason (nothing recorded), and once
the database is back (reconnected with backoff) pushes work again."""
import os
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "agent"))
from tetherlib import *  # noqa: E402,F403


def pg_ctl(*args):
    d, b = os.environ["TETHER_TEST_PG_DIR"], os.environ["TETHER_TEST_PG_BIN"]
    cmd = [os.path.join(b, "pg_ctl"), "-D", os.path.join(d, "data"), "-w", "-t", "60"] + list(args)
    if os.geteuid() == 0:
        cmd = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"] + cmd
    subprocess.run(cmd, check=True, cwd=d, stdout=subprocess.DEVNULL)


def answered(mp, push_id):
    st = mp.push_status(push_id, wait=30)
    return [t for t in st.get("targets", []) if t.get("state") == "answered" and t.get("return_code") == 1]


def test_db_outage(tmp):
    url = os.environ.get("TETHER_TEST_PG")
    if not url:
        fail("TETHER_TEST_PG is not set: run under tests/integration/mp-pg/pg-run.sh")
    mp = MP(tmp, "mp", extra=["--store", url, "--keepalive", "2"]).start()
    agent = Agent(tmp, "127.0.0.1", mp.tcp, mp.https, site_pub=os.path.join(mp.dir, "site.pub"),
                  ca_file=os.path.join(mp.dir, "tls.crt"), extra_conf="[agent]\nkeepalive_seconds = 1\n")
    agent.start()
    cid = agent.wait_signed_in()["client_id"]
    if len(answered(mp, mp.push(1, cid)["push_id"])) != 1:
        fail("first push not answered")
    signins = agent.logtext().count("Connection closed")

    pg_ctl("stop", "-m", "fast")
    try:
        # should fail: the records cannot be written; the reason is given
        r = mp.admin("push", "--type", "1", cid, "--json", check=False)
        if r.returncode == 0 or "unreachable" not in (r.stdout + r.stderr):
            fail("push while the database is down: rc %d, %s %s" % (r.returncode, r.stdout, r.stderr))
        # keepalives (every second) answered for 6 s: the channel stays
        deadline = time.time() + 6
        while time.time() < deadline:
            st = agent.status()
            if not st or st.get("state") != "signed-in":
                fail("agent left signed-in while the database was down: %r" % st)
            time.sleep(0.5)
        if agent.logtext().count("Connection closed") != signins:
            fail("the channel was closed while the database was down")
        if mp.proc.poll() is not None:
            fail("tether-mp exited while the database was down")
    finally:
        pg_ctl("start", "-l", os.path.join(os.environ["TETHER_TEST_PG_DIR"], "server.log"), "-o",
               "-k %s -c listen_addresses= -c fsync=off" % os.environ["TETHER_TEST_PG_DIR"])

    # back: reconnected (backoff at most 30 s), and pushes work again
    def push_ok():
        r = mp.admin("push", "--type", "1", cid, "--json", check=False)
        return r if r.returncode == 0 else None
    r = wait_for(push_ok, 45, "a push accepted after the database came back", interval=1)
    import json
    if len(answered(mp, json.loads(r.stdout)["push_id"])) != 1:
        fail("push after the outage not answered")
    with open(mp.log, errors="replace") as f:
        text = f.read()
    if "PostgreSQL connection back" not in text:
        fail("no reconnection logged")


if __name__ == "__main__":
    sys.exit(run_test(test_db_outage))
