#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""The console's REST API against a real tether-mp and real tetherd agents:
an operator's action reaches the device and its answer appears; a
read-only analyst's action answers 403, nothing is pushed, and the audit
log holds the refusal; a collection hides and protects the devices outside
it; API tokens expire; bad input gets a clear 4xx and changes nothing;
failed logins lock out; an edited audit row breaks the chain; an approver
approves the pending devices."""
import http.client
import os
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from consolelib import *  # noqa: E402,F403

XSS = "<script>x</script>"


def count_pushes(mp):
    return mp_log(mp).count("Starting to send push task")


def test_console_api(tmp):
    mp = console_mp(tmp, approval="manual")
    root = os.geteuid() == 0
    a1 = agent_named(tmp, mp, "agent1", "web-01")
    a2 = agent_named(tmp, mp, "agent2", XSS if root else None)

    # -- approvals: the devices wait for an approver
    user_add(mp, "ann", "approver", password="ann's long password")
    ann = Client(mp)
    if ann.login("ann", "ann's long password")[0] != 200:
        fail("ann cannot log in")

    def two_pending():
        st, js, _, _ = ann.get("/api/v1/approvals")
        return js["pending"] if st == 200 and len(js["pending"]) == 2 else None
    for d in wait_for(two_pending, 60, "two devices pending approval"):  # noqa: F405
        if d["status"] != "pending":
            fail("approvals list: %r" % d)
        r = expect(ann.post("/api/v1/approvals/" + d["client_id"], {"decision": "approve"}), 200, "approve")
        if r["status"] != "approved":
            fail("approval answer: %r" % r)
    id1 = a1.wait_signed_in()["client_id"]
    id2 = a2.wait_signed_in()["client_id"]
    # an approver runs no actions
    expect(ann.post("/api/v1/devices/%s/actions" % id1, {"action": "RequestMachinePolicy"}), 403, "approver's action")

    admin_pw = user_add(mp, "root-admin", "full-administrator")
    alice_pw = user_add(mp, "alice", "operator")
    user_add(mp, "bob", "read-only-analyst", password="bob's long password")
    admin = Client(mp)
    alice, bob = Client(mp), Client(mp)
    for c, u, pw in ((admin, "root-admin", admin_pw), (alice, "alice", alice_pw),
                     (bob, "bob", "bob's long password")):
        if c.login(u, pw)[0] != 200:
            fail("%s cannot log in" % u)

    # -- the operator's action reaches the device and the answer appears
    devs = wait_online(alice, 2)
    if {d["client_id"] for d in devs["devices"]} != {id1, id2}:
        fail("device list: %r" % devs)
    dev = expect(alice.get("/api/v1/devices/" + id1), 200, "device page")
    sync = [x for x in dev["actions"] if x["action"] == "RequestMachinePolicy"][0]
    if not sync["allowed"] or sync["label"] != "Sync Machine Policy":
        fail("operator's Sync Machine Policy not allowed: %r" % sync)
    out = expect(alice.post("/api/v1/devices/%s/actions" % id1, {"action": "RequestMachinePolicy"}), 202,
                 "operator's action")
    push = wait_answered(alice, out["push_id"])
    if push["targets"][0]["return_code"] != 1 or push["targets"][0]["client_id"] != id1:
        fail("the answer: %r" % push)
    text = mp_log(mp)
    guid = out["task_guid"]
    lines = ["Received new notification. Validating basic notification details...",
             "Validating device action message content...",
             "Authorized to perform client action. TemplateID: RequestMachinePolicy User: alice Role: operator",
             "Forwarded BGB remote task. TemplateID: 1 TaskGuid: %s TaskParam:  TargetDeviceIDs: %s" % (guid, id1),
             "Starting to send push task (PushID: %d TaskID:" % out["push_id"]]
    pos = 0
    for line in lines:
        pos = text.find(line, pos)
        if pos < 0:
            fail("MP log lacks, in order: %r" % line)
    if "TaskGUID: %s" % guid not in text:
        fail("the MP's push line does not carry the TaskGUID")

    # -- a read-only analyst: 403 with the reason, nothing pushed, audited
    before = count_pushes(mp)
    dev = expect(bob.get("/api/v1/devices/" + id1), 200, "bob's device page")
    sync = [x for x in dev["actions"] if x["action"] == "RequestMachinePolicy"][0]
    if sync["allowed"] or "actions.run" not in (sync["reason"] or ""):
        fail("bob's button not disabled with a reason: %r" % sync)
    r = expect(bob.post("/api/v1/devices/%s/actions" % id1, {"action": "RequestMachinePolicy"}), 403, "bob")
    if "actions.run" not in r["error"]:
        fail("refusal without its reason: %r" % r)
    if "Unauthorized to perform client action. TemplateID: RequestMachinePolicy User: bob" not in mp_log(mp):
        fail("no Unauthorized line for bob")
    time.sleep(1)
    if count_pushes(mp) != before:
        fail("bob's refused action was pushed")
    audit = expect(admin.get("/api/v1/audit?limit=500"), 200, "audit")["records"]
    if not any(x["actor"] == "bob" and x["action"] == "device.action" and x["outcome"] == "denied"
               for x in audit):
        fail("the audit log lacks bob's refusal: %r" % audit[-5:])
    # an operator may not read the audit log, nor decide approvals
    expect(alice.get("/api/v1/audit"), 403, "operator reading the audit log")
    expect(bob.get("/api/v1/approvals"), 403, "analyst reading approvals")
    expect(alice.post("/api/v1/approvals/" + id2, {"decision": "reject"}), 403, "operator rejecting")
    if not any(x["action"] == "device.approval" and x["actor"] == "ann" and x["outcome"] == "ok" for x in audit):
        fail("the approvals are not in the audit log")

    # -- the live events of a scoped user: only her devices
    def events_of(client, seconds):
        conn = http.client.HTTPSConnection("127.0.0.1", mp.console, context=client.ctx, timeout=seconds)
        conn.request("GET", "/api/v1/events", headers={"Cookie": client.cookie})
        r = conn.getresponse()
        if r.status != 200 or r.getheader("Content-Type") != "text/event-stream":
            fail("events: %d %r" % (r.status, r.getheaders()))
        seen, buf, deadline = set(), b"", time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                if seen:
                    conn.sock.settimeout(2)  # the first burst is whole once 2 s pass quietly
                chunk = r.read1(65536)
                if not chunk:
                    break
                buf += chunk
                while b"\n\n" in buf:
                    ev, buf = buf.split(b"\n\n", 1)
                    lines = dict(x.split(": ", 1) for x in ev.decode().splitlines() if ": " in x)
                    if lines.get("event") == "device":
                        seen.add(json.loads(lines["data"])["client_id"])
        except (TimeoutError, OSError):
            pass
        conn.close()
        return seen
    expect(admin.request("PUT", "/api/v1/collections/First", {"client_ids": [id1]}), 200, "collection")
    carol_pw = user_add(mp, "carol", "operator", collection="First")
    carol = Client(mp)
    carol.login("carol", carol_pw)
    seen = expect(carol.get("/api/v1/devices"), 200, "carol's list")
    if [d["client_id"] for d in seen["devices"]] != [id1] or seen["total"] != 1:
        fail("carol sees outside her collection: %r" % seen)
    expect(carol.get("/api/v1/devices/" + id2), 404, "carol's look at device 2")
    if events_of(carol, 10) != {id1}:
        fail("carol's live events show devices outside her collection")
    if events_of(alice, 10) != {id1, id2}:
        fail("alice's live events do not show both devices")
    before = count_pushes(mp)
    expect(carol.post("/api/v1/devices/%s/actions" % id2, {"action": "AppEvaluation"}), 404, "carol's action")
    expect(carol.post("/api/v1/actions", {"action": "AppEvaluation", "targets": [id1, id2]}), 404,
           "carol's action on both")
    if count_pushes(mp) != before:
        fail("carol's action outside her scope was pushed")
    # a rule collection: hostname glob (root: the agents have their own hostnames)
    if root:
        expect(admin.request("PUT", "/api/v1/collections/Web", {"rule": {"hostname": "web-*"}}), 200, "rule")
        out = expect(admin.post("/api/v1/actions", {"action": "RequestUserPolicy", "collection": "Web"}), 202,
                     "action on a collection")
        push = wait_answered(admin, out["push_id"])
        if [t["client_id"] for t in push["targets"]] != [id1]:
            fail("the Web collection's push: %r" % push)
        # the hostname with a script is returned as data, never as markup
        d2 = expect(admin.get("/api/v1/devices/" + id2), 200, "device 2")
        if d2["hostname"] != XSS:
            fail("hostname: %r" % d2["hostname"])

    # -- accounts and grants over the API (users.manage)
    expect(alice.post("/api/v1/users", {"name": "eve", "role": "full-administrator"}), 403,
           "an operator adding a user")
    dan = expect(admin.post("/api/v1/users", {"name": "dan", "role": "read-only-analyst"}), 201, "user add")
    if Client(mp).login("dan", dan["password"])[0] != 200:
        fail("the one-time password answered by POST /users does not log in")
    expect(admin.request("PUT", "/api/v1/users/carol/grants",
                         {"grants": [{"role": "operator", "collection": "No such"}]}), 400, "unknown collection")
    expect(admin.request("PUT", "/api/v1/users/carol/grants",
                         {"grants": [{"role": "read-only-analyst", "collection": "All devices"}]}), 200, "grants")
    seen = expect(carol.get("/api/v1/devices"), 200, "carol's list after her new grant")
    if seen["total"] != 2:
        fail("carol's new grant did not take effect at once: %r" % seen)
    expect(carol.post("/api/v1/devices/%s/actions" % id1, {"action": "AppEvaluation"}), 403,
           "carol, now an analyst")
    users = expect(admin.get("/api/v1/users"), 200, "users")["users"]
    if "argon2" in json.dumps(users) or {u["name"] for u in users} != {"ann", "root-admin", "alice", "bob", "carol",
                                                                        "dan"}:
        fail("users list: %r" % users)

    # -- a password change ends the sessions; a removed account and its tokens stop working
    dan_c = Client(mp)
    dan_c.login("dan", dan["password"])
    dan_tok = expect(dan_c.post("/api/v1/tokens", {"label": "dan's"}), 201, "dan's token")["token"]
    expect(dan_c.post("/api/v1/me/password", {"old": "wrong", "new": "dan's new long password"}), 403,
           "a wrong old password")
    expect(dan_c.post("/api/v1/me/password", {"old": dan["password"], "new": "dan's new long password"}), 200,
           "password change")
    expect(dan_c.get("/api/v1/me"), 401, "the session after a password change")
    if Client(mp).login("dan", dan["password"])[0] != 401:
        fail("the old password still logs in")
    dan_c = Client(mp)
    if dan_c.login("dan", "dan's new long password")[0] != 200:
        fail("the new password does not log in")
    expect(alice.request("DELETE", "/api/v1/users/dan"), 403, "an operator removing a user")
    expect(admin.request("DELETE", "/api/v1/users/dan"), 200, "removing dan")
    expect(dan_c.get("/api/v1/me"), 401, "a removed user's session")
    expect(Client(mp, token=dan_tok).get("/api/v1/me"), 401, "a removed user's token")
    # a token revoked by its owner; not by another analyst
    tok_a = expect(alice.post("/api/v1/tokens", {}), 201, "alice's token")
    expect(bob.request("DELETE", "/api/v1/tokens/" + tok_a["id"]), 403, "bob revoking alice's token")
    expect(alice.request("DELETE", "/api/v1/tokens/" + tok_a["id"]), 200, "alice revoking her token")
    expect(Client(mp, token=tok_a["token"]).get("/api/v1/me"), 401, "a revoked token")

    # -- a session after logout is stale
    gone = Client(mp)
    gone.login("bob", "bob's long password")
    expect(gone.post("/api/v1/logout", {}), 200, "logout")
    expect(gone.get("/api/v1/devices"), 401, "a logged-out session")

    # -- tokens: shown once, work as bearer, expire
    tok = expect(admin.post("/api/v1/tokens", {"label": "ci", "expires_in": 3}), 201, "token")
    api = Client(mp, token=tok["token"])
    expect(api.get("/api/v1/devices"), 200, "bearer token")
    forged = Client(mp, token=tok["token"][:-2] + ("AA" if not tok["token"].endswith("AA") else "BB"))
    expect(forged.get("/api/v1/devices"), 401, "forged token")
    time.sleep(4)
    r = expect(api.get("/api/v1/devices"), 401, "expired token")
    if "expired" not in r["error"]:
        fail("expired token's message: %r" % r)

    # -- bad input: a clear 4xx, nothing changed
    before = count_pushes(mp)
    dev_path = "/api/v1/devices/%s/actions" % id1
    expect(alice.request("POST", dev_path, raw=b"{" + b" " * 70000 + b"}"), 413, "oversized body")
    expect(alice.request("POST", dev_path, raw=b'{"action": "RequestMachinePolicy"'), 400, "malformed JSON")
    expect(alice.post(dev_path, {"action": "RequestMachinePolicy", "evil": 1}), 400, "unknown field")
    expect(alice.request("POST", dev_path, raw=b'{"action":"RequestMachinePolicy"}', ctype="text/plain"), 415,
           "wrong content type")
    expect(alice.post(dev_path, {"action": "RequestMachinePolicy"}, csrf=False), 403, "CSRF without the token")
    expect(alice.get("/api/v1/devices?limit=100000"), 400, "huge page size")
    expect(alice.get("/api/v1/devices?sort=evil"), 400, "unknown sort")
    stale = Client(mp)
    stale.cookie = "tether_session=" + "0" * 64
    expect(stale.get("/api/v1/devices"), 401, "forged session")
    expect(Client(mp).get("/api/v1/devices"), 401, "no session")
    if count_pushes(mp) != before:
        fail("bad input pushed something")
    # every answer carries the strict headers
    _, _, hdrs, _ = alice.get("/api/v1/me")
    csp = hdrs.get("content-security-policy", "")
    if "default-src 'none'" not in csp or "script-src 'self'" not in csp or hdrs.get(
            "x-content-type-options") != "nosniff":
        fail("security headers: %r" % hdrs)

    # -- login rate limiting: five failures lock the account out (the address,
    # 127.0.0.1, counts the earlier failure with dan's old password too)
    for i in range(5):
        st = Client(mp).login("alice", "wrong password")[0]
        if st != 401 and not (st == 429 and i == 4):
            fail("wrong password %d answered %d" % (i + 1, st))
    st, js, hdrs = Client(mp).login("alice", alice_pw)
    if st != 429 or not hdrs.get("retry-after"):
        fail("the sixth login answered %d %r" % (st, hdrs))

    # -- the audit export and the chain
    st, _, hdrs, text = admin.request("GET", "/api/v1/audit?format=jsonl")
    rows = [json.loads(x) for x in text.splitlines()]
    if st != 200 or len(rows) < 10 or any(r["seq"] != i + 1 for i, r in enumerate(rows)):
        fail("audit export: %d %r" % (st, rows[:3]))
    r = mp.admin("audit", "verify")
    if "intact" not in r.stdout:
        fail("audit verify: %r" % r.stdout)
    cli_rows = [json.loads(x) for x in mp.admin("audit", "export").stdout.splitlines()]
    if [x["hash"] for x in cli_rows[:len(rows)]] != [x["hash"] for x in rows]:
        fail("tether-mp audit export differs from the API's export")
    store_sql(mp, "UPDATE audit SET outcome = 'ok' WHERE actor = 'bob' AND outcome = 'denied'")
    bad = int(store_sql(mp, "SELECT min(seq) FROM audit WHERE actor = 'bob' AND action = 'device.action'"))
    r = mp.admin("audit", "verify", check=False)
    if r.returncode != 1 or ("record %d" % bad) not in r.stdout or "edited" not in r.stdout:
        fail("audit verify after an edit: %d %r" % (r.returncode, r.stdout))


if __name__ == "__main__":
    sys.exit(run_test(test_console_api))
