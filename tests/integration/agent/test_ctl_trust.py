#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Trust modes, approval, tetherctl and configuration handling, against a
real tether-mp in manual approval mode:
 - site_key_fingerprint: the key comes from SIGNIN_CONFIRM, is checked and
   pinned; Pending waits (status says so) until the administrator approves;
 - a wrong fingerprint never signs in, and says why;
 - trust_on_first_use pins the MP's key;
 - tetherctl trigger (name and schedule-ID alias) runs the cycle's hooks;
   identity show/reset (a new ClientID that signs in again); status fields;
 - a changed machine-id file makes a new identity at restart (clone);
 - the control socket: 0660, group of the channel user; a user outside the
   group cannot connect, one inside can ask for status but not reset the
   identity (root only);
 - SIGHUP reloads; a broken configuration is refused and the old one kept;
 - --check-config and --help."""
import os
import shutil
import signal
import subprocess
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tetherlib import *  # noqa: E402,F403


def approve_when_seen(mp, agent):
    def pending():
        st = agent.status()
        return st if st and "pending approval" in st.get("last_error", "") else None
    st = wait_for(pending, 30, "the agent to report a pending sign-in")
    mp.admin("approve", st["client_id"])
    return agent.wait_signed_in()["client_id"]


def same_key(a, b):
    return openssl("pkey", "-pubin", "-in", a, "-outform", "DER") == \
        openssl("pkey", "-pubin", "-in", b, "-outform", "DER")


def test_ctl_trust(tmp):
    mp = MP(tmp, extra=["--approval", "manual"])
    mp.write_machine_policy()
    mp.start()
    fp = [l.split(":", 1)[1].strip() for l in mp.admin("site-key").stdout.splitlines()
          if l.startswith("fingerprint:")][0]
    ca = os.path.join(mp.dir, "tls.crt")
    site_pub = os.path.join(mp.dir, "site.pub")

    # Fingerprint mode, pending until approved.
    a = Agent(tmp, "127.0.0.1", mp.tcp, mp.https, fingerprint=fp, ca_file=ca, name="a", user=privsep_user())
    marker = tmp.sub("hook.out")
    write_hook(a.cycles, "machine-policy", "10-mark", 'echo "local:$TETHER_TASK_GUID" >> %s' % marker)
    a.start()
    cid = approve_when_seen(mp, a)
    st = a.status()
    if st["site_key_fingerprint"] != fp or st["transport"] != "tcp" or st["client_id"] != cid:
        fail("status %r" % st)
    for key in ("mp", "pending_tasks", "queued_responses", "last_error", "transport_mode"):
        if key not in st:
            fail("status lacks %s: %r" % (key, st))
    if not same_key(os.path.join(a.state, "trust", "site.pub"), site_pub):
        fail("the learned site key is not the MP's")

    # tetherctl trigger, by name and by schedule-ID alias.
    if a.ctl("trigger", "machine-policy")["triggered"] != "machine-policy":
        fail("trigger answer")
    wait_for(lambda: os.path.exists(marker), 30, "the triggered hook")
    wait_for(lambda: "Local machine policy cycle finished" in a.logtext(), 30, "the local cycle to finish")
    a.ctl("trigger", "{00000000-0000-0000-0000-000000000021}")
    wait_for(lambda: open(marker).read().count("local:") >= 2, 30, "the hook via the schedule-ID alias")
    r = subprocess.run([TETHERCTL, "--socket", os.path.join(a.run, "tetherd.sock"), "trigger", "reboot"],
                       capture_output=True, text=True)
    if r.returncode == 0 or "unknown cycle" not in r.stderr:
        fail("trigger of an unknown cycle: %d %r" % (r.returncode, r.stderr))

    # Identity: show, reset, sign in again with the new ClientID.
    ident = a.ctl("identity", "show")
    if ident["client_id"] != cid or len(ident["device_key_fingerprint"]) != 64:
        fail("identity show %r" % ident)
    new = a.ctl("identity", "reset")["client_id"]
    if new == cid:
        fail("identity reset kept the ClientID")
    if approve_when_seen(mp, a) != new:
        fail("signed in with the wrong ClientID after the reset")

    # Who may use the control socket.
    sock = os.path.join(a.run, "tetherd.sock")
    if a.user and shutil.which("setpriv"):
        import pwd
        import stat
        st = os.stat(sock)
        gid = pwd.getpwnam(a.user).pw_gid
        if stat.S_IMODE(st.st_mode) != 0o660 or st.st_uid != 0 or st.st_gid != gid:
            fail("control socket mode %o owner %d:%d" % (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid))

        def as_user(uid, gid_, *args):
            return subprocess.run(["setpriv", "--reuid=%d" % uid, "--regid=%d" % gid_, "--clear-groups",
                                   TETHERCTL, "--socket", sock] + list(args), capture_output=True, text=True)
        r = as_user(54321, 54321, "status")
        if r.returncode == 0 or "Permission denied" not in r.stderr:
            fail("a user outside the group used the control socket: %r" % (r.stdout + r.stderr))
        r = as_user(54321, gid, "status")
        if r.returncode != 0:
            fail("a group member could not ask for status: %r" % r.stderr)
        r = as_user(54321, gid, "identity", "reset")
        if r.returncode == 0 or "needs root" not in r.stderr:
            fail("a group member reset the identity: %r" % (r.stdout + r.stderr))

    # SIGHUP: a broken configuration is refused, a good one applied.
    good = open(a.conf).read()
    with open(a.conf, "w") as f:
        f.write(good.replace("host = 127.0.0.1", "host_name = 127.0.0.1"))
    os.kill(a.proc.pid, signal.SIGHUP)
    wait_for(lambda: "keeping the old one" in a.logtext(), 10, "the broken configuration to be refused")
    with open(a.conf, "w") as f:
        f.write(good)
    os.kill(a.proc.pid, signal.SIGHUP)
    wait_for(lambda: "Configuration reloaded" in a.logtext(), 10, "the reload")
    if a.status()["state"] != "signed-in":
        fail("not signed in after the reload")

    # A cloned image: the machine-id changes, a new identity is made at start.
    a.kill(signal.SIGTERM)
    with open(a.machine_id, "w") as f:
        f.write("0123456789abcdef0123456789abcdef\n")
    a.start()
    wait_for(lambda: "because the machine-id changed" in a.logtext(), 20, "the clone to be detected")
    cloned = approve_when_seen(mp, a)
    if cloned in (cid, new):
        fail("no new identity after the machine-id changed")

    # A wrong fingerprint never signs in.
    b = Agent(tmp, "127.0.0.1", mp.tcp, mp.https, fingerprint="00" * 32, ca_file=ca, name="b")
    b.start()

    def refused():
        st = b.status()
        return st if st and "not the configured" in st.get("last_error", "") else None
    wait_for(refused, 30, "the wrong fingerprint to be reported")
    if b.status()["state"] == "signed-in":
        fail("signed in with a wrong fingerprint")
    if os.path.exists(os.path.join(b.state, "trust", "site.pub")):
        fail("pinned a key that does not match the fingerprint")

    # Trust on first use pins the MP's key.
    c = Agent(tmp, "127.0.0.1", mp.tcp, mp.https, ca_file=ca, name="c", tofu=True)
    c.start()
    approve_when_seen(mp, c)
    if not same_key(os.path.join(c.state, "trust", "site.pub"), site_pub):
        fail("TOFU pinned another key")

    # --check-config and --help.
    bad = tmp.sub("bad.conf")
    with open(bad, "w") as f:
        f.write("[mp]\nhost = x\ntcp_port = 99999\n[trust]\nsite_key = relative\n[agent]\nfoo = 1\n")
    r = subprocess.run([TETHERD, "--check-config", "--config", bad], capture_output=True, text=True)
    want = ["%s:3: [mp] tcp_port" % bad, "%s:5: [trust] site_key: not an absolute path" % bad,
            "%s:7: [agent] foo: unknown key" % bad]
    if r.returncode != 1 or any(w not in r.stdout for w in want):
        fail("--check-config: %d %r" % (r.returncode, r.stdout))
    r = subprocess.run([TETHERD, "--check-config", "--config", a.conf], capture_output=True, text=True)
    if r.returncode != 0 or r.stdout.strip() != "configuration OK":
        fail("--check-config of a good file: %d %r %r" % (r.returncode, r.stdout, r.stderr))
    for prog in (TETHERD, TETHERCTL):
        r = subprocess.run([prog, "--help"], capture_output=True, text=True)
        if r.returncode != 0 or "Usage:" not in r.stdout:
            fail("%s --help" % prog)


if __name__ == "__main__":
    sys.exit(run_test(test_ctl_trust))
