# SPDX-License-Identifier: Apache-2.0
"""A minimal W3C WebDriver client (Python standard library only) for
Debian's chromium-driver driving headless /usr/bin/chromium."""

import base64
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1280,900"]


class WebDriverError(Exception):
    pass


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Browser:
    def __init__(self, tmpdir, log):
        self.driver_bin = shutil.which("chromedriver") or "/usr/bin/chromedriver"
        self.chrome = "/usr/bin/chromium"
        self.port = free_port()
        self.profile = os.path.join(tmpdir, "chromium-profile")
        os.makedirs(self.profile, exist_ok=True)
        out = open(log, "ab")
        self.proc = subprocess.Popen([self.driver_bin, "--port=%d" % self.port], stdout=out,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        self.base = "http://127.0.0.1:%d" % self.port
        deadline = time.monotonic() + 30
        while True:
            try:
                self._call("GET", "/status")
                break
            except (OSError, WebDriverError):
                if time.monotonic() > deadline:
                    raise WebDriverError("chromedriver did not start")
                time.sleep(0.2)
        caps = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "acceptInsecureCerts": True,  # the MP's certificate is self-signed in the test
            "goog:chromeOptions": {"binary": self.chrome,
                                   "args": CHROME_FLAGS + ["--user-data-dir=" + self.profile]}}}}
        self.session = self._call("POST", "/session", caps)["sessionId"]

    def _call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return json.loads(r.read().decode()).get("value")
        except urllib.error.HTTPError as e:
            raise WebDriverError("%s %s: %s" % (method, path, e.read().decode(errors="replace")[:500]))

    def cmd(self, method, path, body=None):
        return self._call(method, "/session/%s%s" % (self.session, path), body)

    def go(self, url):
        self.cmd("POST", "/url", {"url": url})

    def find(self, css):
        """The first element matching css, or None."""
        found = self.cmd("POST", "/elements", {"using": "css selector", "value": css})
        return found[0][ELEMENT] if found else None

    def wait(self, css, timeout=30, pred=None, what=None):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                e = self.find(css)
                if e and (pred is None or pred(e)):
                    return e
            except WebDriverError:
                pass  # the page changed under the lookup
            time.sleep(0.2)
        raise WebDriverError("timed out waiting for %s" % (what or css))

    def text(self, e):
        return self.cmd("GET", "/element/%s/text" % e)

    def attr(self, e, name):
        return self.cmd("GET", "/element/%s/attribute/%s" % (e, name))

    def enabled(self, e):
        return self.cmd("GET", "/element/%s/enabled" % e)

    def click(self, e):
        self.cmd("POST", "/element/%s/click" % e, {})

    def type(self, e, text):
        self.cmd("POST", "/element/%s/clear" % e, {})
        self.cmd("POST", "/element/%s/value" % e, {"text": text})

    def js(self, script, *args):
        return self.cmd("POST", "/execute/sync", {"script": script, "args": list(args)})

    def screenshot(self, path):
        with open(path, "wb") as f:
            f.write(base64.b64decode(self.cmd("GET", "/screenshot")))

    def close(self):
        try:
            self.cmd("DELETE", "")
        except (OSError, WebDriverError):
            pass
        try:
            os.killpg(self.proc.pid, 9)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)
