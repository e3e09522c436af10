#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""tether-mp on PostgreSQL (TETHER_TEST_PG, from pg-run.sh) when a round's
commit fails: the RESPONSE_ACK that would have acknowledged the unstored
response never leaves (the connection is closed), the agent resends on
reconnecting, and the response is stored once. A push whose round is not
stored is not confirmed to the administrator and never sent. The failure is made
deterministic with a deferred constraint trigger that fails the first
commit holding a response (a sequence counts outside the transaction)."""
import os
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "agent"))
from tetherlib import *  # noqa: E402,F403

FAIL_FIRST_RESPONSE_COMMIT = r"""
CREATE SEQUENCE test_commits;
CREATE FUNCTION test_fail_first() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF nextval('test_commits') = 1 THEN
    RAISE EXCEPTION 'test: the first commit holding a response fails';
  END IF;
  RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER test_fail_first AFTER INSERT ON responses
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION test_fail_first();
"""


FAIL_FIRST_PUSH_COMMIT = r"""
CREATE SEQUENCE test_push_commits;
CREATE FUNCTION test_fail_first_push() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF nextval('test_push_commits') = 1 THEN
    RAISE EXCEPTION 'test: the first commit holding a push target fails';
  END IF;
  RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER test_fail_first_push AFTER INSERT ON targets
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION test_fail_first_push();
"""


def psql(sql):
    psql_bin = os.path.join(os.environ["TETHER_TEST_PG_BIN"], "psql")
    r = subprocess.run([psql_bin, os.environ["TETHER_TEST_PG"], "-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql],
                       capture_output=True, text=True)
    if r.returncode != 0:
        fail("psql: %s" % r.stderr)
    return r.stdout.strip()


def test_commit_lost(tmp):
    url = os.environ.get("TETHER_TEST_PG")
    if not url:
        fail("TETHER_TEST_PG is not set: run under tests/integration/mp-pg/pg-run.sh")
    mp = MP(tmp, "mp", extra=["--store", url]).start()
    agent = Agent(tmp, "127.0.0.1", mp.tcp, mp.https, site_pub=os.path.join(mp.dir, "site.pub"),
                  ca_file=os.path.join(mp.dir, "tls.crt")).start()
    cid = agent.wait_signed_in()["client_id"]
    psql(FAIL_FIRST_RESPONSE_COMMIT)

    push_id = mp.push(1, cid)["push_id"]

    def answered():
        try:
            st = mp.push_status(push_id, wait=5)
        except AssertionError:
            # the MP closes an admin request that was waiting in the round
            # whose commit failed (its reply could acknowledge lost records)
            return None
        t = (st.get("targets") or [{}])[0]
        return t if t.get("state") == "answered" and t.get("return_code") == 1 else None
    wait_for(answered, 60, "the response stored after the failed commit", interval=0.5)
    if psql("SELECT last_value FROM test_commits") == "1":
        fail("the trigger never failed a commit: the test tested nothing")
    if psql("SELECT count(*) FROM responses WHERE client_id = '%s'" % cid) != "1":
        fail("the response is not stored exactly once")
    with open(mp.log, errors="replace") as f:
        text = f.read()
    if "were not stored (the database transaction was lost)" not in text:
        fail("tether-mp did not report the lost round")
    log_text = agent.logtext()
    # sent once, the connection closed before any ACK, sent again
    if log_text.count("Send Task response message") < 2:
        fail("the agent did not send its response again after the connection was closed")

    # a push whose round is not stored: the admin is not told it exists, and
    # no frame of it leaves (the connections it was queued on are closed; a
    # fan-out still running is stopped)
    psql(FAIL_FIRST_PUSH_COMMIT)
    r = mp.admin("push", "--type", "1", cid, "--json", check=False)
    if r.returncode == 0:
        fail("push accepted although its records were not stored: %s" % r.stdout)
    with open(mp.log, errors="replace") as f:
        if f.read().count("were not stored (the database transaction was lost)") != 2:
            fail("tether-mp did not report the second lost round")
    time.sleep(3)
    if len(agent.ctl("tasks")["tasks"]) != 1:
        fail("the agent ran a push that was never stored: %r" % agent.ctl("tasks"))
    if psql("SELECT count(*) FROM pushes WHERE frame IS NOT NULL") != "1":
        fail("an unstored push is in the records")
    push2 = mp.push(1, cid)["push_id"]
    st = mp.push_status(push2, wait=30)
    if (st.get("targets") or [{}])[0].get("state") != "answered":
        fail("the next push was not answered: %r" % st)


if __name__ == "__main__":
    sys.exit(run_test(test_commit_lost))
