#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""tetherctl status shows the users with an active (or online) login
session, whom a user-policy cycle runs for. tetherd runs in a mount
namespace of the test's own where /run/systemd is a tmpfs holding a fake
logind state (/run/systemd/users/<uid>, as sd-login reads it): one active
user, one online, one closing (not shown). Needs root (the namespace)."""
import os
import pwd
import subprocess
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tetherlib import *  # noqa: E402,F403

FAKE_USERS = {0: "active", 1: "closing", 65534: "online"}


def test_ctl_status_users(tmp):
    if os.geteuid() != 0 or not os.path.isdir("/run/systemd"):
        log("SKIP: needs root and /run/systemd (to mount a private tmpfs over it)")
        sys.exit(77)
    key = tmp.sub("site.key")
    make_key(key)
    agent = Agent(tmp, "127.0.0.1", 1, 1, site_pub=key + ".pub", user=privsep_user())
    setup = "mount -t tmpfs -o mode=0755 tether-test /run/systemd && mkdir /run/systemd/users"
    for uid, state in FAKE_USERS.items():
        setup += " && printf 'NAME=%s\\nSTATE=%s\\n' > /run/systemd/users/%d" % (pwd.getpwuid(uid).pw_name, state, uid)
    cmd = [TETHERD, "--config", agent.conf, "--foreground"]
    cmd += ["--user", agent.user] if agent.user else ["--single-process"]
    agent.proc = spawn(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                        setup + ' && exec "$0" "$@"'] + cmd, agent.log)
    st = wait_for(agent.status, 30, "tetherctl status to answer")
    want = [pwd.getpwuid(0).pw_name, pwd.getpwuid(65534).pw_name]
    if sorted(st.get("users", [None])) != sorted(want):
        fail("status users %r, wanted %r" % (st.get("users"), want))
    r = subprocess.run([TETHERCTL, "--socket", os.path.join(agent.run, "tetherd.sock"), "status"],
                       capture_output=True, text=True, timeout=30)
    line = [l for l in r.stdout.splitlines() if l.startswith("Users:")]
    if r.returncode != 0 or not line or any(u not in line[0] for u in want) or \
            pwd.getpwuid(1).pw_name in line[0]:
        fail("tetherctl status: %d %r" % (r.returncode, r.stdout))


if __name__ == "__main__":
    sys.exit(run_test(test_ctl_status_users))
