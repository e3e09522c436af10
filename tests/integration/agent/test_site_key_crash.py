#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""A crash of the agent between receiving the site key chain and persisting
it loses nothing (issue #15): the agent dies by SIGKILL at that point (the
test hook TETHER_TEST_KILL_BEFORE_CHAIN_SAVE), restarts trusting the old key
only, takes the chain again, and answers a push signed by the new key."""
import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tetherlib import *  # noqa: E402,F403


def test_site_key_crash(tmp):
    mp = MP(tmp)
    mp.write_machine_policy()
    mp.start()
    agent = Agent(tmp, "127.0.0.1", mp.tcp, mp.https, site_pub=os.path.join(mp.dir, "site.pub"),
                  ca_file=os.path.join(mp.dir, "tls.crt"), user=privsep_user())
    agent.start()
    cid = agent.wait_signed_in()["client_id"]
    agent.kill(signal.SIGTERM)
    chain_file = os.path.join(agent.state, "trust", "site-chain")

    mp.admin("site-key", "rotate")  # NotBefore now: serial 2 signs at once

    env = dict(os.environ, TETHER_TEST_KILL_BEFORE_CHAIN_SAVE="1")
    agent.start(env=env)
    # One process (not root): tetherd itself dies. The privilege split: the
    # channel process dies and the root half starts a new one (which dies
    # the same way), so the first death is the crash to look at.
    wait_for(lambda: agent.proc.poll() is not None or
             "The channel process was killed by signal" in agent.logtext(), 60,
             "the agent to die before persisting the chain")
    if agent.proc.poll() is None:
        agent.kill(signal.SIGTERM)
    if os.path.exists(chain_file):
        fail("the chain was persisted although the agent died before")
    leftovers = [n for n in os.listdir(os.path.dirname(chain_file)) if n != "site.pub"]
    if leftovers:
        fail("files left in the trust directory: %r" % leftovers)

    agent.start()
    st = agent.wait_signed_in()
    if [k["serial"] for k in st["site_keys"]] != [1, 2] or st["site_keys"][1]["state"] != "current":
        fail("after the restart: %r" % st["site_keys"])
    if not os.path.exists(chain_file):
        fail("the chain was not persisted after the restart")
    out = json.loads(mp.admin("push", "--type", "3", "--json", cid).stdout)
    st = mp.push_status(out.get("PushID", out.get("push_id")), wait=60)
    tgt = st["targets"][0]
    if tgt["state"] != "answered" or tgt["return_code"] != 1:
        fail("push signed by serial 2 after the crash: %r" % tgt)


if __name__ == "__main__":
    sys.exit(run_test(test_site_key_crash))
