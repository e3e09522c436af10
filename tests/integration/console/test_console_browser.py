#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""The web console in headless Chromium (Debian's chromium and
chromium-driver), against a real tether-mp and a real tetherd: log in, see
the device online, press Sync Machine Policy and see the result arrive
without a reload; stop the agent and see it turn offline with its reason;
a read-only analyst sees the buttons disabled with the reason; a hostname
holding markup is shown as text; an administrator adds a user. Screenshots
of the device list and the device page go to $TETHER_SCREENSHOT_DIR when
set (docs/ holds the committed ones)."""
import os
import shutil
import signal
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from consolelib import *  # noqa: E402,F403
from webdriver import Browser  # noqa: E402

XSS = "<img src=x onerror=window.__xss=1>"
WEBROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "mp", "webui")


def login(b, url, user, password):
    b.go(url)
    b.type(b.wait("#login:not([hidden]) #login-user"), user)
    b.type(b.find("#login-password"), password)
    b.click(b.find("#login-submit"))
    b.wait("#devices", what="the device list after login")


def test_console_browser(tmp):
    if not os.path.exists("/usr/bin/chromium") or not shutil.which("chromedriver"):
        if os.geteuid() == 0:
            fail("chromium or chromium-driver missing: run scripts/install-deps.sh")
        log("SKIP: no chromium/chromium-driver")
        sys.exit(77)
    mp = MP(tmp, extra=["--console-listen", "127.0.0.1:0", "--console-webroot", WEBROOT,  # noqa: F405
                        "--keepalive", "5"])
    mp.write_machine_policy()
    mp.start()
    ports = dict(l.strip().split("=", 1) for l in open(os.path.join(mp.dir, "ports")) if "=" in l)
    mp.console = int(ports["console"])
    agent = agent_named(tmp, mp, "agent1", "web-01")
    cid = agent.wait_signed_in()["client_id"]
    # a hostname holding markup (root only: it needs a UTS namespace)
    other = agent_named(tmp, mp, "agent2", XSS) if os.geteuid() == 0 else None
    cid2 = other.wait_signed_in()["client_id"] if other else None
    alice_pw = user_add(mp, "alice", "operator")
    user_add(mp, "bob", "read-only-analyst", password="bob's long password")
    admin_pw = user_add(mp, "root-admin", "full-administrator")
    url = "https://127.0.0.1:%d/" % mp.console
    shots = os.environ.get("TETHER_SCREENSHOT_DIR") or tmp.sub("shots")
    os.makedirs(shots, exist_ok=True)

    b = Browser(tmp.path, tmp.sub("chromedriver.log"))
    try:
        login(b, url, "alice", alice_pw)
        row = 'tr[data-client-id="%s"]' % cid
        b.wait(row + ' td[data-field="online"].online', what="the device online in the list")
        if cid2:
            link = b.wait('tr[data-client-id="%s"] a' % cid2, what="the second device")
            if b.text(link) != XSS or b.find("#devices img") or b.js("return window.__xss || 0;") != 0:
                fail("a hostname was rendered as markup")
        b.screenshot(os.path.join(shots, "console-devices.png"))

        b.click(b.wait(row + " a"))
        sync = b.wait('button[data-action="RequestMachinePolicy"]', what="the Sync Machine Policy button")
        if not b.enabled(sync) or b.text(sync) != "Sync Machine Policy":
            fail("the operator's Sync Machine Policy button is not enabled")
        b.js("window.__noReload = 1;")
        b.click(sync)
        b.wait('#push-targets tr[data-client-id="%s"] td[data-field="result"]' % cid,
               pred=lambda e: b.text(e) == "Success", timeout=60, what="the answer (Success)")
        if b.js("return window.__noReload;") != 1:
            fail("the page reloaded")
        b.screenshot(os.path.join(shots, "console-device.png"))

        # stop the agent: the page shows it offline, with why
        agent.kill(signal.SIGTERM)
        e = b.wait("#device-online.offline", timeout=40, what="the device offline on its page")
        log("device page after SIGTERM: %r" % b.text(e))
        if "offline: the agent said goodbye (shutdown)" not in b.text(e) or b.js("return window.__noReload;") != 1:
            fail("offline without its reason, or reloaded: %r" % b.text(e))

        # a read-only analyst: the buttons are disabled with the reason
        b.click(b.find("#logout"))
        b.wait("#login:not([hidden]) #login-user", what="the login form after logout")
        login(b, url, "bob", "bob's long password")
        b.go(url + "#/device/" + cid)
        sync = b.wait('button[data-action="RequestMachinePolicy"]')
        if b.enabled(sync) or "actions.run" not in (b.attr(sync, "title") or ""):
            fail("bob's button is enabled or has no reason")
        reason = b.wait('p[data-reason-for="RequestMachinePolicy"]')
        if "actions.run" not in b.text(reason):
            fail("bob's page does not show the reason: %r" % b.text(reason))

        # an administrator adds a user on the Users page; its password is shown once
        b.click(b.find("#logout"))
        b.wait("#login:not([hidden]) #login-user", what="the login form after logout")
        login(b, url, "root-admin", admin_pw)
        b.go(url + "#/users")
        b.type(b.wait("#new-user-name"), "carol")
        b.click(b.find("#new-user button"))
        out = b.wait("#new-user-result code", what="the new user's one-time password")
        if len(b.text(out)) < 16:
            fail("one-time password: %r" % b.text(out))
    finally:
        b.close()


if __name__ == "__main__":
    sys.exit(run_test(test_console_browser))
