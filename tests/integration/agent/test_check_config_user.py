#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""--check-config checks the files the configuration names as the user who
reads them at run time: a site_key and a ca_file that only root can read
(0600) are errors "as user 'nobody'", and the same files readable are OK.
Started with them anyway, the channel process stops with the configuration
exit status (78, the unit's RestartPreventExitStatus=), and the root process
does not respawn it in a loop. Needs root."""
import os
import shutil
import subprocess
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tetherlib import *  # noqa: E402,F403

EXIT_CONFIG = 78


def check(agent, user):
    return subprocess.run([TETHERD, "--check-config", "--config", agent.conf, "--user", user],
                          capture_output=True, text=True, timeout=30)


def test_check_config_user(tmp):
    user = privsep_user()
    if not user:
        log("SKIP: needs root and the user 'nobody'")
        sys.exit(77)
    key = tmp.sub("site.key")
    make_key(key)
    site_pub = tmp.sub("site-private.pub")
    shutil.copy(key + ".pub", site_pub)
    ca = tmp.sub("ca-private.pem")
    openssl("req", "-x509", "-new", "-key", key, "-subj", "/CN=test-ca", "-days", "2", "-out", ca)
    for p in (site_pub, ca):
        os.chmod(p, 0o600)
    agent = Agent(tmp, "127.0.0.1", 1, 1, site_pub=site_pub, ca_file=ca, user=user)

    r = check(agent, user)
    want = ["[trust] site_key: cannot load '%s': Permission denied (as user '%s')" % (site_pub, user),
            "[mp] ca_file: cannot read '%s': Permission denied (as user '%s')" % (ca, user)]
    if r.returncode != 1 or any(w not in r.stdout for w in want) or "configuration OK" in r.stdout:
        fail("--check-config with root-only files: %d %r %r" % (r.returncode, r.stdout, r.stderr))

    agent.start()
    try:
        agent.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        fail("tetherd kept running with files its channel process cannot read")
    if agent.proc.returncode != EXIT_CONFIG:
        fail("tetherd exited with %d, wanted %d (configuration)" % (agent.proc.returncode, EXIT_CONFIG))
    text = agent.logtext()
    if "Permission denied" not in text or "starting a new one" in text:
        fail("wanted one clear refusal and no respawn loop")

    for p in (site_pub, ca):
        os.chmod(p, 0o644)
    r = check(agent, user)
    if r.returncode != 0 or r.stdout.strip() != "configuration OK":
        fail("--check-config with readable files: %d %r %r" % (r.returncode, r.stdout, r.stderr))


if __name__ == "__main__":
    sys.exit(run_test(test_check_config_user))
