#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""A device that reaches its MP only through a stock squid (issue #11).

Runs in namespaces of its own: network (lo up), so that the MP can listen
on 443 and nothing clashes with other tests; mount, with a private /dev/shm
for squid's shared memory segments; and PID, so that every process of the
test, squid's pinger helper too (it leaves squid's session), ends with it.
Inside them:

- squid from Debian's package, run with Debian's default
  /etc/squid/squid.conf copied unchanged except for the listening address,
  the pid file and the log and core directories (the test shows the diff and
  checks that the ACL lines Safe_ports, SSL_ports and "http_access deny
  CONNECT !SSL_ports" are Debian's own): CONNECT to 10124 is refused (403),
  CONNECT to 443 allowed.
- tether-mp with HTTPSListen on 10124 and 443, its TCP channel port 10123
  closed to the device by an nftables rule (TCP RST).
- tetherd with [mp] proxy set and the default https_alt_ports (443): it falls
  back to HTTPS, is refused on 10124 by squid, moves to 443, signs in through
  squid; a machine-policy push (its policy fetched through squid on 443) and
  an app-evaluation push (its hook in cycles.d/app-evaluation/ run and named
  in Detail) are answered Success.
- Then the firewall opens 10123: with tcp_retry_interval = 2 the channel is
  back on TCP within seconds, and a push is answered over it.
"""
import difflib
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tetherlib import *  # noqa: E402,F403

NETNS_ENV = "TETHER_SQUID_TEST_NETNS"
SQUID_CONF = "/etc/squid/squid.conf"
SQUID_PORT = 3128  # inside the test's own network namespace
NFT_TABLE = "tether_squid_test"


def squid_config(tmp):
    """Debian's squid.conf with only its listening address, pid file and
    log/core paths moved into the test's directory. Returns the path."""
    d = tmp.sub("squid")
    os.makedirs(d)
    proxy = pwd.getpwnam("proxy")  # Debian's cache_effective_user
    os.chown(d, proxy.pw_uid, proxy.pw_gid)
    with open(SQUID_CONF) as f:
        original = f.read().splitlines()

    copy = []
    for line in original:
        if line == "http_port 3128":
            line = "http_port 127.0.0.1:%d" % SQUID_PORT
        elif line == "coredump_dir /var/spool/squid":
            line = "coredump_dir %s" % d
        copy.append(line)
    copy += ["pid_filename %s/squid.pid" % d,
             "cache_log %s/cache.log" % d,
             "access_log stdio:%s/access.log" % d]

    diff = [l for l in difflib.unified_diff(original, copy, SQUID_CONF, "test copy", n=0, lineterm="")]
    log("squid.conf changes against Debian's default:\n" + "\n".join(diff))
    removed = sorted(l[1:] for l in diff if l.startswith("-") and not l.startswith("---"))
    if removed != ["coredump_dir /var/spool/squid", "http_port 3128"]:
        fail("%s is not Debian's default (lines changed: %r)" % (SQUID_CONF, removed))

    def acl_lines(lines):
        return [l for l in lines if not l.startswith("#") and re.search(r"Safe_ports|SSL_ports|CONNECT", l)]
    if acl_lines(copy) != acl_lines(original):
        fail("the ACL lines differ from Debian's")
    acls = acl_lines(original)
    log("squid ACL lines, as in Debian's default:\n" + "\n".join(acls))
    for want in ("acl SSL_ports port 443", "http_access deny !Safe_ports",
                 "http_access deny CONNECT !SSL_ports"):
        if want not in acls:
            fail("Debian's squid.conf lacks %r: this test assumes the stock ACLs" % want)
    path = os.path.join(d, "squid.conf")
    with open(path, "w") as f:
        f.write("\n".join(copy) + "\n")
    return d, path


def start_squid(tmp):
    d, conf = squid_config(tmp)
    r = subprocess.run(["squid", "-k", "parse", "-f", conf], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        fail("squid -k parse: %s" % r.stderr[-2000:])
    proc = spawn(["squid", "-N", "-f", conf], tmp.sub("squid.log"))

    def listening():
        if proc.poll() is not None:
            fail("squid exited (%s): see %s/cache.log" % (proc.returncode, d))
        try:
            socket.create_connection(("127.0.0.1", SQUID_PORT), timeout=1).close()
            return True
        except OSError:
            return False
    wait_for(listening, 30, "squid to listen")
    return d


def firewall(block):
    """Blocks (TCP RST) or opens the MP's TCP channel port, in this
    namespace only."""
    subprocess.run(["nft", "delete", "table", "inet", NFT_TABLE], capture_output=True)
    if block:
        rules = ("table inet %s {\n chain out {\n  type filter hook output priority 0; policy accept;\n"
                 "  tcp dport 10123 reject with tcp reset\n }\n}\n" % NFT_TABLE)
        r = subprocess.run(["nft", "-f", "-"], input=rules, capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            fail("nft: %s" % r.stderr)


def push_answered(mp, cid, task_type, timeout=60):
    p = mp.push(task_type, cid)
    status = mp.push_status(p["PushID"] if "PushID" in p else p["push_id"], wait=timeout)
    targets = status.get("targets") or status.get("devices") or []
    if not targets:
        fail("push-status without targets: %r" % status)
    tgt = targets[0]
    rc = tgt.get("return_code", tgt.get("ReturnCode"))
    if tgt.get("state") != "answered" or rc != 1:
        fail("TaskType %d: %r" % (task_type, tgt))
    xml = tgt.get("response_xml") or tgt.get("response") or ""
    m = re.search(r"<Detail>(.*)</Detail>", xml)
    return m.group(1) if m else ""


def test_https_squid(tmp):
    squid_dir = start_squid(tmp)
    firewall(block=True)

    mp = MP(tmp, tcp_port=10123, https_port=10124,
            extra=["--https-listen", "127.0.0.1:10124,127.0.0.1:443"])
    mp.write_machine_policy()
    mp.start()
    if "HTTPS also on port 443" not in open(mp.log).read():
        fail("the MP does not say it listens on 443")

    agent = Agent(tmp, "127.0.0.1", 10123, 10124, site_pub=os.path.join(mp.dir, "site.pub"),
                  ca_file=os.path.join(mp.dir, "tls.crt"), user=privsep_user(),
                  extra_conf="[mp]\nproxy = http://127.0.0.1:%d\nhttps_hold_seconds = 5\n"
                             "tcp_retry_interval = 2\n" % SQUID_PORT)
    marker = tmp.sub("app-hook-ran")
    write_hook(agent.cycles, "app-evaluation", "10-report",
               'echo "$TETHER_CYCLE $TETHER_TASK_GUID" > %s\necho "app hook done"' % marker)
    env = {k: v for k, v in os.environ.items()
           if k.lower() not in ("no_proxy", "https_proxy", "http_proxy", "all_proxy")}
    agent.start(env=env)

    st = agent.wait_signed_in(timeout=60)
    if st.get("transport") != "https" or st.get("mp") != "127.0.0.1:443":
        fail("expected https on 127.0.0.1:443 through squid: %r" % st)
    text = agent.logtext()
    for want in ("Failed to connect to 127.0.0.1:10123: Connection refused; trying the HTTPS fallback",
                 "CONNECT tunnel failed, response 403",
                 "trying HTTPS on 127.0.0.1:443",
                 "Connected to 127.0.0.1:443 (https)"):
        if want not in text:
            fail("no agent log line %r" % want)
    access = open(os.path.join(squid_dir, "access.log")).read()
    if not re.search(r"TCP_DENIED/403 .* CONNECT 127\.0\.0\.1:10124 ", access):
        fail("squid did not refuse CONNECT to 10124: %r" % access)
    cid = st["client_id"]

    # The policy is fetched through squid on 443 too.
    detail = push_answered(mp, cid, 1)
    if not re.search(r"machine policy: policy \S+ stored", detail):
        fail("machine policy Detail %r" % detail)
    detail = push_answered(mp, cid, 3)
    if "1 hook ran" not in detail:
        fail("app evaluation Detail does not report its hook: %r" % detail)
    with open(marker) as f:
        if not f.read().startswith("app-evaluation "):
            fail("the app-evaluation hook did not run as one")
    if agent.status().get("transport") != "https":
        fail("left HTTPS while TCP was still blocked")

    # The firewall is fixed: back on TCP within tcp_retry_interval (2 s,
    # +/- 25 %), where the old fixed interval was 5 minutes.
    firewall(block=False)
    start = time.monotonic()
    wait_for(lambda: (agent.status() or {}).get("transport") == "tcp", 30, "the channel back on TCP")
    took = time.monotonic() - start
    log("back on TCP after %.1f s" % took)
    if took > 12:
        fail("back on TCP only after %.1f s with tcp_retry_interval = 2" % took)
    if "TCP to 127.0.0.1:10123 works again: moving the channel back from HTTPS" not in agent.logtext():
        fail("no 'works again' log line")
    agent.wait_signed_in(timeout=30)
    push_answered(mp, cid, 2)

    agent.kill()
    # Squid logs a tunnel when it closes: the 443 one carried the channel.
    wait_for(lambda: re.search(r"TCP_TUNNEL/200 .* CONNECT 127\.0\.0\.1:443 ",
                               open(os.path.join(squid_dir, "access.log")).read()),
             30, "squid's access.log line for the tunnel to 443")


def main():
    if os.environ.get(NETNS_ENV) == "1":
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=1777,size=64m", "tether-squid-shm", "/dev/shm"],
                       check=True)
        return run_test(test_https_squid)
    if os.geteuid() != 0:
        log("SKIP: needs root for its own network namespace (unshare -n), squid and port 443")
        return 77
    for tool in ("squid", "unshare", "nft", "ip"):
        if not shutil.which(tool):
            log("FAIL: %s is not installed: run scripts/install-deps.sh" % tool)
            return 1
    if not os.path.exists(SQUID_CONF):
        log("FAIL: %s missing: install Debian's squid (scripts/install-deps.sh)" % SQUID_CONF)
        return 1
    env = dict(os.environ)
    env[NETNS_ENV] = "1"
    # --kill-child: if ctest kills unshare at a time-out, the namespace's
    # first process goes too, and with it every other one.
    return subprocess.run(["unshare", "--net", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc",
                           "--", sys.executable, os.path.abspath(__file__)], env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
