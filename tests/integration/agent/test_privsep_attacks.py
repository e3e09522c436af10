#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Issue 10, the root half: the attacks of the audit, against the real
tetherd with the real privilege split, the channel user being a throwaway
system user and the attacker a process running as that user. The
directories are laid out as the package lays them out (state, runtime and
log directories owned by the channel user). Each attack must have no
effect:

 1. a json.py in the state directory is not imported by a root hook
    (`python3 -c 'import json'`): hooks and commands run in "/";
 2. the state directory's policies/ swapped for a symlink to an attacker's
    directory, and the policy file replaced with forged Settings while the
    hooks run: the root hook still reads exactly the signed bytes
    (TETHER_POLICY=/dev/fd/3), and root keeps its policies in a directory
    the channel user cannot even list;
 3. 404 from the MP: the stored policy stays, the hooks still see it;
 4. rollback: an older signed revision is refused, also after the stored
    policy file is gone (the floor is kept apart from it); the MP's signed
    empty Policy is what withdraws a policy;
 5. at every start (several restarts): a symlink renamed over the control
    socket as soon as it appears (inotify), a directory in spool/ swapped
    for a symlink to a root directory during the hand-over walk, a hard
    link to a root file planted in spool/ and as the CMTrace log: no root
    file changes owner, mode or content.
Needs root (exits 77, skipped, otherwise)."""
import os
import pwd
import re
import signal
import subprocess
import sys
import time
import uuid

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tetherlib  # noqa: E402
from tetherlib import *  # noqa: E402,F403

ATTACKER = r'''
import ctypes, os, select, struct, sys, threading, time
mode, run_dir, victim_sock, spool, victim_dir, seconds = sys.argv[1:7]
end = time.monotonic() + float(seconds)

def swap_loop():
    # A directory of ours in spool/, swapped for a symlink to root's
    # directory again and again: a walk by path would descend into it.
    d, real = os.path.join(spool, "d"), os.path.join(spool, "d.real")
    os.makedirs(real, exist_ok=True)
    for i in range(20):
        open(os.path.join(real, "f%d" % i), "w").close()
    while time.monotonic() < end:
        try:
            os.rename(real, d)
            os.rename(d, real)
            os.symlink(victim_dir, d)
            os.unlink(d)
        except OSError:
            pass
        os.sched_yield()

def socket_race():
    # As soon as root binds the control socket, rename a symlink to a
    # root file over it: a chmod/chown by path would follow it.
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(os.O_NONBLOCK)
    if fd < 0 or libc.inotify_add_watch(fd, run_dir.encode(), 0x100) < 0:  # IN_CREATE
        sys.exit("inotify failed")
    sock = os.path.join(run_dir, "tetherd.sock")
    tmp = os.path.join(run_dir, "evil")
    while time.monotonic() < end:
        r, _, _ = select.select([fd], [], [], 0.2)
        if not r:
            continue
        data = os.read(fd, 65536)
        off = 0
        while off + 16 <= len(data):
            _, mask, _, n = struct.unpack_from("iIII", data, off)
            name = data[off + 16:off + 16 + n].rstrip(b"\0")
            off += 16 + n
            if name == b"tetherd.sock":
                try:
                    os.symlink(victim_sock, tmp)
                    os.rename(tmp, sock)
                    print("socket swapped", flush=True)
                except OSError:
                    pass

if mode == "race":
    t = threading.Thread(target=swap_loop, daemon=True)
    t.start()
    socket_race()
    t.join()
'''

POLICY_SWAPPER = r'''
import os, sys, time
state, forged, seconds = sys.argv[1], sys.argv[2].encode(), float(sys.argv[3])
evil = os.path.join(state, "evil")
os.makedirs(evil, exist_ok=True)
pol = os.path.join(state, "policies")
end = time.monotonic() + seconds
while time.monotonic() < end:
    try:
        if not os.path.islink(pol):
            if os.path.isdir(pol):
                os.rename(pol, os.path.join(state, "old-%f" % time.time()))
            os.symlink(evil, pol)
        with open(os.path.join(evil, ".x"), "wb") as f:
            f.write(forged)
        os.rename(os.path.join(evil, ".x"), os.path.join(evil, "machine.xml"))
    except OSError:
        pass
    time.sleep(0.01)
'''


# The attacker runs as the throwaway user, who cannot reach a Python
# installed under /root: the system one, the one the hooks' PATH finds.
SYSTEM_PYTHON = "/usr/bin/python3"


def make_user():
    name = "tether-t-%s" % uuid.uuid4().hex[:8]
    subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                    "--shell", "/usr/sbin/nologin", name], check=True, capture_output=True)
    return name


def as_user(user):
    pw = pwd.getpwnam(user)

    def drop():
        os.setgroups([])
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)
    return drop


def run_as(user, code, *args, timeout=60):
    return subprocess.run([SYSTEM_PYTHON, "-c", code] + [str(a) for a in args], preexec_fn=as_user(user),
                          capture_output=True, text=True, timeout=timeout)


def spawn_as(user, code, *args, logfile):
    out = open(logfile, "ab")
    p = subprocess.Popen([SYSTEM_PYTHON, "-c", code] + [str(a) for a in args], preexec_fn=as_user(user),
                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    out.close()
    tetherlib._procs.append(p)  # killed by cleanup(), pass or fail
    return p


def policy_xml(ts, secret):
    return ('<Policy Version="1" Scope="machine" TimeStamp="%s" PolicyID="%s">'
            '<Settings><Setting Name="secret">%s</Setting></Settings></Policy>\n'
            % (ts, str(uuid.uuid4()).upper(), secret))


def push_machine_policy(mp, cid):
    p = mp.push(1, cid)
    status = mp.push_status(p.get("PushID", p.get("push_id")), wait=60)
    tgt = (status.get("targets") or status.get("devices") or [{}])[0]
    if tgt.get("state") != "answered":
        fail("push not answered: %r" % tgt)
    xml = tgt.get("response_xml") or tgt.get("response") or ""
    m = re.search(r"<Detail>(.*)</Detail>", xml, re.S)
    return tgt.get("return_code", tgt.get("ReturnCode")), (m.group(1) if m else "")


def owned_by(user, *paths):
    pw = pwd.getpwnam(user)
    for p in paths:
        os.makedirs(p, exist_ok=True)
        os.chown(p, pw.pw_uid, pw.pw_gid)
        os.chmod(p, 0o750)


def read(path):
    with open(path) as f:
        return f.read()


def root_file(path, text):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)
    os.chown(path, 0, 0)


def check_root_file(path, text):
    st = os.lstat(path)
    if (st.st_uid, st.st_gid, st.st_mode & 0o7777) != (0, 0, 0o600) or read(path) != text:
        fail("%s changed: uid %d gid %d mode %o content %r" % (path, st.st_uid, st.st_gid, st.st_mode & 0o7777,
                                                            read(path)))


def policy_phase(tmp, user, mp, agent, marks, state_root):
    now = time.time()
    rev0, rev1 = policy_xml(utc(now - 900), "signed-0"), policy_xml(utc(now - 600), "signed-1")
    rev2 = policy_xml(utc(now - 300), "signed-2")
    mp_policy = os.path.join(mp.dir, "policies", "machine.xml")
    with open(mp_policy, "w") as f:
        f.write(rev1)
    cid = agent.wait_signed_in()["client_id"]

    # 1 + 2: json.py in the state dir, policies/ swapped, the file forged.
    with open(os.path.join(agent.state, "json.py"), "w") as f:
        f.write("open(%r, 'w').write('root')\n" % os.path.join(marks, "pwned-json"))
    os.chown(os.path.join(agent.state, "json.py"), pwd.getpwnam(user).pw_uid, -1)
    forged = policy_xml(utc(now), "forged")
    swapper = spawn_as(user, POLICY_SWAPPER, agent.state, forged, 40, logfile=tmp.sub("swapper.log"))
    rc, detail = push_machine_policy(mp, cid)
    if rc != 1:
        fail("machine policy cycle: %s %s" % (rc, detail))
    seen = read(os.path.join(marks, "policy"))
    if seen != rev1:
        fail("the root hook read %r, not the signed policy %r" % (seen, rev1))
    json_file = read(os.path.join(marks, "json")).strip()
    if os.path.exists(os.path.join(marks, "pwned-json")) or not json_file or json_file.startswith(agent.state):
        fail("a root hook's python3 imported json from %r" % json_file)
    if read(os.path.join(marks, "pwd")).strip() != "/":
        fail("root hook cwd: %r" % read(os.path.join(marks, "pwd")))
    if read(os.path.join(state_root, "policies", "machine.xml")) != rev1:
        fail("root's stored policy is not the signed one")
    r = run_as(user, "import os, sys\ntry:\n os.listdir(sys.argv[1]); print('listed')\n"
               "except PermissionError: print('denied')", state_root)
    if r.stdout.strip() != "denied":
        fail("the channel user can list root's state: %r %r" % (r.stdout, r.stderr))
    log("ok: hooks run in / with the signed bytes; json.py not imported; root's state unreachable")

    with open(mp_policy, "w") as f:
        f.write(rev2)
    rc, detail = push_machine_policy(mp, cid)
    if rc != 1 or read(os.path.join(marks, "policy")) != rev2:
        fail("revision 2: %s %s" % (rc, detail))
    swapper.kill()
    swapper.wait()

    # 3: 404 keeps the stored policy, and the hooks still get it.
    os.unlink(mp_policy)
    os.unlink(os.path.join(marks, "policy"))
    rc, detail = push_machine_policy(mp, cid)
    if rc != 1 or "kept" not in detail:
        fail("404: %s %r" % (rc, detail))
    if read(os.path.join(state_root, "policies", "machine.xml")) != rev2 or \
            read(os.path.join(marks, "policy")) != rev2:
        fail("a 404 removed or changed the policy in force")
    log("ok: a 404 keeps the policy: %s" % detail)

    # 4: rollback to revision 1, also once the stored file is gone.
    run_as(user, "import shutil, sys; shutil.rmtree(sys.argv[1], ignore_errors=True)",
           os.path.join(agent.state, "policies"))
    # The second replay is another old revision: the channel process keeps
    # the ETag of what it fetched, and the same bytes would come as a 304.
    for attempt, old in (("stored policy present", rev1), ("stored policy deleted", rev0)):
        with open(mp_policy, "w") as f:
            f.write(old)
        rc, detail = push_machine_policy(mp, cid)
        if rc != 2 or "older than" not in detail:
            fail("rollback (%s) accepted: %s %r" % (attempt, rc, detail))
        if read(os.path.join(marks, "policy")) != rev2:
            fail("rollback (%s): hooks saw an older revision" % attempt)
        for name in ("machine.xml", "machine.xml.sig"):
            p = os.path.join(state_root, "policies", name)
            if os.path.exists(p):
                os.unlink(p)
    log("ok: rollback refused, also without the stored policy: %s" % detail)

    # 5: only a signed statement takes a policy away: the empty Policy,
    # published by the MP like any other and signed when served.
    empty = '<Policy Version="1" Scope="machine" TimeStamp="%s" PolicyID="%s"/>\n' % (
        utc(now - 60), str(uuid.uuid4()).upper())
    with open(mp_policy, "w") as f:
        f.write(empty)
    rc, detail = push_machine_policy(mp, cid)
    if rc != 1 or "(empty) stored" not in detail or read(os.path.join(marks, "policy")) != empty:
        fail("the signed empty policy: %s %r" % (rc, detail))
    log("ok: the signed empty Policy withdraws the policy: %s" % detail)


def restart_phase(tmp, user, agent, marks, logdir):
    victim_sock = os.path.join(marks, "victim-sock")
    victim_dir = os.path.join(marks, "victim-dir")
    victim_link = os.path.join(marks, "victim-link")
    victim_log = os.path.join(marks, "victim-log")
    os.makedirs(victim_dir)
    root_file(victim_sock, "sock\n")
    root_file(os.path.join(victim_dir, "inside"), "inside\n")
    root_file(victim_link, "link\n")
    root_file(victim_log, "log\n")
    spool = os.path.join(agent.state, "spool")
    # Hard links to root files in the channel user's directories. The
    # channel user could make them itself where fs.protected_hardlinks is
    # 0; that is system-wide, so the test makes them as root instead.
    os.link(victim_link, os.path.join(spool, "planted"))
    cmtrace = os.path.join(logdir, "tetherd.log")
    if os.path.exists(cmtrace):
        os.unlink(cmtrace)
    os.link(victim_log, cmtrace)

    attacker = spawn_as(user, ATTACKER, "race", agent.run, victim_sock, spool, victim_dir, 60,
                        logfile=tmp.sub("attacker.log"))
    time.sleep(0.5)
    for i in range(8):
        # A start that the attack makes fail is only a denial of service,
        # which the channel user can always cause; what counts is below.
        ready = agent.logtext().count("Both halves running")
        agent.start()
        wait_for(lambda: agent.logtext().count("Both halves running") > ready or agent.proc.poll() is not None,
                 30, "both halves, start %d" % i)
        agent.kill(signal.SIGTERM)
    attacker.kill()
    attacker.wait()
    swaps = read(tmp.sub("attacker.log")).count("socket swapped")
    if swaps < 4:
        fail("the attacker swapped the control socket only %d times in 8 starts: %s" % (
            swaps, read(tmp.sub("attacker.log"))))
    check_root_file(victim_sock, "sock\n")
    check_root_file(os.path.join(victim_dir, "inside"), "inside\n")
    st = os.stat(victim_dir)
    if st.st_uid != 0:
        fail("victim directory given away")
    check_root_file(victim_link, "link\n")
    check_root_file(victim_log, "log\n")
    if "Cannot open the CMTrace log" not in agent.logtext():
        fail("the hard-linked CMTrace log was not refused")
    log("ok: 8 restarts under attack (%d socket swaps), no root file changed" % swaps)

    # Without the attacker, the socket is born root:<group> 0660.
    for p in (os.path.join(agent.run, "tetherd.sock"), os.path.join(agent.run, "evil")):
        if os.path.lexists(p):
            os.unlink(p)
    agent.start()
    agent.wait_signed_in()
    st = os.lstat(os.path.join(agent.run, "tetherd.sock"))
    if (st.st_uid, st.st_gid, st.st_mode & 0o7777) != (0, pwd.getpwnam(user).pw_gid, 0o660):
        fail("control socket: uid %d gid %d mode %o" % (st.st_uid, st.st_gid, st.st_mode & 0o7777))


def test_privsep_attacks(tmp):
    user = make_user()
    try:
        mp = MP(tmp)
        mp.start()
        logdir = tmp.sub("log")
        marks = tmp.sub("marks")
        os.makedirs(marks, mode=0o700)
        agent = Agent(tmp, "127.0.0.1", mp.tcp, mp.https, site_pub=os.path.join(mp.dir, "site.pub"),
                      ca_file=os.path.join(mp.dir, "tls.crt"), user=user,
                      extra_conf="cmtrace_file = %s\n" % os.path.join(logdir, "tetherd.log"))
        # As the package lays them out: the channel user owns these.
        owned_by(user, agent.state, agent.run, logdir)
        state_root = agent.state + "-root"
        write_hook(agent.cycles, "machine-policy", "10-check",
                   'pwd > %(m)s/pwd\n'
                   'python3 -c "import json; print(json.__file__)" > %(m)s/json || true\n'
                   'sleep 1\n'
                   '[ -z "$TETHER_POLICY" ] || cat "$TETHER_POLICY" > %(m)s/policy.tmp\n'
                   '[ -z "$TETHER_POLICY" ] || mv %(m)s/policy.tmp %(m)s/policy' % {"m": marks})
        agent.start()
        policy_phase(tmp, user, mp, agent, marks, state_root)
        agent.kill(signal.SIGTERM)
        st = os.stat(state_root)
        if (st.st_uid, st.st_mode & 0o7777) != (0, 0o700):
            fail("%s: uid %d mode %o" % (state_root, st.st_uid, st.st_mode & 0o7777))
        restart_phase(tmp, user, agent, marks, logdir)
    finally:
        cleanup()
        subprocess.run(["userdel", user], capture_output=True)


if __name__ == "__main__":
    if os.geteuid() != 0:
        log("SKIP: needs root (a throwaway user and the real privilege split)")
        sys.exit(77)
    sys.exit(run_test(test_privsep_attacks))
