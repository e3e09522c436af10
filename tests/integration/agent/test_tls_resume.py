#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""tetherd resumes its TLS session when it reconnects (issue #16): it keeps
the ticket the MP sent, and the MP, restarted on the same state directory
(ticket.keys), resumes the session; the agent then signs in again as
before. The MP's debug log says "TLS session resumed" or "new"."""
import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tetherlib import *  # noqa: E402,F403


def sessions(mp):
    with open(mp.log, errors="replace") as f:
        text = f.read()
    return text.count("TLS session new"), text.count("TLS session resumed")


def test_tls_resume(tmp):
    mp = MP(tmp, extra=["--verbose"])
    mp.start()
    agent = Agent(tmp, "127.0.0.1", mp.tcp, mp.https, site_pub=os.path.join(mp.dir, "site.pub"),
                  ca_file=os.path.join(mp.dir, "tls.crt"))
    agent.start()
    agent.wait_signed_in()
    new, resumed = sessions(mp)
    if new < 1 or resumed != 0:
        fail("first connection: %d new, %d resumed TLS sessions" % (new, resumed))

    # The same ports again, so the agent finds it after its backoff.
    mp.kill()
    log("MP killed; restarting it on the same state directory")
    mp.start()
    wait_for(lambda: sessions(mp)[1] >= 1 or None, 90, "a resumed TLS session in the MP's log")
    agent.wait_signed_in(timeout=30)
    new2, resumed2 = sessions(mp)
    log("TLS sessions in the MP's log: %d new, %d resumed" % (new2, resumed2))


if __name__ == "__main__":
    sys.exit(run_test(test_tls_resume))
