# SPDX-License-Identifier: Apache-2.0
"""Helpers for tetherd integration tests: a real tether-mp on 127.0.0.1 with
port 0, a real tetherd with temporary state, hooks in a temporary cycles dir,
and a fake MP (TLS on loopback) for pushes that the real MP would never send.
Every process is started in its own session and killed (whole process group)
when the test ends, pass or fail."""

import json
import os
import pwd
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time
import uuid

BUILD = os.environ.get("TETHER_BINARY_DIR", "")
TETHERD = os.environ.get("TETHERD", os.path.join(BUILD, "agent", "tetherd"))
TETHERCTL = os.environ.get("TETHERCTL", os.path.join(BUILD, "agent", "tetherctl"))
TETHER_MP = os.environ.get("TETHER_MP", os.path.join(BUILD, "mp", "tether-mp"))

_procs = []
_hook_pid_files = []


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def fail(msg):
    raise AssertionError(msg)


def wait_for(pred, timeout, what, interval=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    fail("timed out after %.0f s waiting for %s" % (timeout, what))


def spawn(args, logfile, env=None):
    out = open(logfile, "ab")
    p = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    out.close()
    _procs.append(p)
    return p


def kill_group(p, sig=signal.SIGKILL):
    try:
        os.killpg(p.pid, sig)
    except ProcessLookupError:
        pass


def cleanup():
    # Hooks run in process groups of their own (the scheduler's): they
    # survive a SIGKILL of tetherd, so they are ended here.
    for path in _hook_pid_files:
        try:
            with open(path) as f:
                pids = [int(x) for x in f.read().split()]
        except (OSError, ValueError):
            continue
        for pid in pids:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    for p in _procs:
        kill_group(p, signal.SIGKILL)
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def privsep_user():
    """'nobody' when running as root (so the privilege split is exercised), else None."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("nobody")
        return "nobody"
    except KeyError:
        return None


class TempDir:
    def __init__(self, name):
        self.path = tempfile.mkdtemp(prefix="tether-%s-" % name)
        # The unprivileged channel process must reach its state directory.
        os.chmod(self.path, 0o755)

    def sub(self, *parts):
        p = os.path.join(self.path, *parts)
        return p


class MP:
    def __init__(self, tmp, name="mp", tcp_port=0, https_port=0, extra=()):
        self.dir = tmp.sub(name)
        os.makedirs(os.path.join(self.dir, "policies"), exist_ok=True)
        self.log = tmp.sub(name + ".log")
        self.extra = list(extra)
        # TETHER_TEST_MP_STORE=pg (under tests/integration/mp-pg/pg-run.sh):
        # the same test with tether-mp on the throwaway PostgreSQL.
        if os.environ.get("TETHER_TEST_MP_STORE") == "pg" and "--store" not in self.extra:
            self.extra += ["--store", os.environ["TETHER_TEST_PG"]]
        self.tcp = tcp_port
        self.https = https_port
        self.proc = None

    def start(self):
        ports = os.path.join(self.dir, "ports")
        if os.path.exists(ports):
            os.unlink(ports)
        self.proc = spawn([TETHER_MP, "serve", "--state-dir", self.dir,
                           "--listen", "127.0.0.1:%d" % self.tcp,
                           "--https-listen", "127.0.0.1:%d" % self.https,
                           "--console-listen", "off"] + self.extra, self.log)

        def read_ports():
            if self.proc.poll() is not None:
                fail("tether-mp exited: see %s" % self.log)
            try:
                kv = dict(l.strip().split("=", 1) for l in open(ports) if "=" in l)
                return int(kv["tcp"]), int(kv["https"])
            except (OSError, KeyError, ValueError):
                return None
        self.tcp, self.https = wait_for(read_ports, 20, "tether-mp ports")
        return self

    def kill(self):
        kill_group(self.proc, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def admin(self, *args, check=True):
        r = subprocess.run([TETHER_MP] + list(args) + ["--state-dir", self.dir],
                           capture_output=True, text=True, timeout=60)
        if check and r.returncode != 0:
            fail("tether-mp %s failed (%d): %s%s" % (" ".join(args), r.returncode, r.stdout, r.stderr))
        return r

    def push(self, task_type, client_id, param=None):
        args = ["push", "--type", str(task_type), "--json"]
        if param is not None:
            args += ["--param", param]
        out = json.loads(self.admin(*(args + [client_id])).stdout)
        return out

    def push_status(self, push_id, wait=30):
        r = self.admin("push-status", str(push_id), "--wait", str(wait), "--json", check=False)
        if r.returncode not in (0, 3):
            fail("push-status failed: %s %s" % (r.stdout, r.stderr))
        return json.loads(r.stdout)

    def responses(self, limit=1000):
        return json.loads(self.admin("responses", "--json", "--limit", str(limit)).stdout)

    def write_machine_policy(self):
        ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60))
        with open(os.path.join(self.dir, "policies", "machine.xml"), "w") as f:
            f.write('<Policy Version="1" Scope="machine" TimeStamp="%s" PolicyID="%s">'
                    '<Settings><Setting Name="test">1</Setting></Settings></Policy>\n'
                    % (ts, str(uuid.uuid4()).upper()))


def write_hook(cycles_dir, cycle, name, body):
    d = os.path.join(cycles_dir, cycle)
    os.makedirs(d, exist_ok=True)
    p = os.path.join(d, name)
    pids = os.path.join(os.path.dirname(os.path.abspath(cycles_dir)), "hook.pids")
    if pids not in _hook_pid_files:
        _hook_pid_files.append(pids)
    with open(p, "w") as f:
        f.write("#!/bin/sh\necho $$ >> %s\n" % pids + body + "\n")
    os.chmod(p, 0o755)
    return p


class Agent:
    def __init__(self, tmp, host, tcp, https, site_pub=None, ca_file=None, name="agent", extra_conf="",
                 user=None, fingerprint=None, tofu=False):
        self.tmp = tmp
        self.state = tmp.sub(name, "state")
        self.run = tmp.sub(name, "run")
        self.cycles = tmp.sub(name, "cycles")
        self.conf = tmp.sub(name, "tether.conf")
        self.log = tmp.sub(name + ".log")
        self.machine_id = tmp.sub(name, "machine-id")
        self.user = user
        self.proc = None
        for d in (self.cycles, self.run):
            os.makedirs(d, exist_ok=True)
        os.chmod(tmp.sub(name), 0o755)
        with open(self.machine_id, "w") as f:
            f.write(uuid.uuid4().hex + "\n")
        if site_pub:
            trust = "site_key = %s\n" % site_pub
        elif fingerprint:
            trust = "site_key_fingerprint = %s\n" % fingerprint
        else:
            trust = "trust_on_first_use = %s\n" % ("yes" if tofu else "no")
        with open(self.conf, "w") as f:
            f.write("[mp]\nhost = %s\ntcp_port = %d\nhttps_port = %d\n" % (host, tcp, https))
            if ca_file:
                f.write("ca_file = %s\n" % ca_file)
            f.write("[trust]\n" + trust)
            # A CI machine may have just booted: no boot-time spread here.
            f.write("[agent]\nstate_dir = %s\nruntime_dir = %s\nmachine_id_file = %s\n"
                    "boot_start_delay_max_seconds = 0\n"
                    % (self.state, self.run, self.machine_id))
            f.write("[cycles]\ncycles_dir = %s\n" % self.cycles)
            f.write("[log]\nlevel = debug\n")
            f.write(extra_conf)

    def start(self, env=None, args=()):
        cmd = [TETHERD, "--config", self.conf, "--foreground"] + list(args)
        if self.user:
            cmd += ["--user", self.user]
        elif os.geteuid() == 0:
            cmd += ["--single-process"]
        self.proc = spawn(cmd, self.log, env=env)
        return self

    def ctl(self, *args, check=True):
        r = subprocess.run([TETHERCTL, "--socket", os.path.join(self.run, "tetherd.sock"), "--json"] + list(args),
                           capture_output=True, text=True, timeout=30)
        if check and r.returncode != 0:
            fail("tetherctl %s failed: %s %s" % (" ".join(args), r.stdout, r.stderr))
        return json.loads(r.stdout) if r.returncode == 0 else None

    def status(self):
        try:
            return self.ctl("status", check=False)
        except (json.JSONDecodeError, subprocess.TimeoutExpired):
            return None

    def wait_signed_in(self, timeout=30):
        def ok():
            if self.proc.poll() is not None:
                fail("tetherd exited with %s: see %s" % (self.proc.returncode, self.log))
            s = self.status()
            return s if s and s.get("state") == "signed-in" else None
        return wait_for(ok, timeout, "tetherd to sign in")

    def kill(self, sig=signal.SIGKILL):
        kill_group(self.proc, sig)
        self.proc.wait(timeout=20)

    def logtext(self):
        with open(self.log, errors="replace") as f:
            return f.read()


def run_test(fn):
    """Runs fn(); cleans up every process; prints logs on failure."""
    tmp = TempDir(fn.__name__)
    ok = False
    try:
        fn(tmp)
        ok = True
    finally:
        cleanup()
        if not ok:
            for root, _, files in os.walk(tmp.path):
                for name in files:
                    if name.endswith(".log"):
                        p = os.path.join(root, name)
                        log("==== %s" % p)
                        with open(p, errors="replace") as f:
                            log(f.read()[-6000:])
        elif os.environ.get("TETHER_KEEP_TMP"):
            log("kept %s" % tmp.path)
        else:
            subprocess.run(["rm", "-rf", tmp.path])
    log("PASS" if ok else "FAIL")
    return 0 if ok else 1


# --- a fake MP for what the real one never does (foreign signatures, replays) ---

FRAME = {"SIGNIN": 1, "SIGNIN_CONFIRM": 2, "PUSH": 3, "PUSH_ACK": 4, "RESPONSE": 5, "RESPONSE_ACK": 6,
         "KEEPALIVE": 7, "GOODBYE": 8}


def openssl(*args, input=None):
    r = subprocess.run(["openssl"] + list(args), input=input, capture_output=True, timeout=30)
    if r.returncode != 0:
        fail("openssl %s: %s" % (" ".join(args), r.stderr.decode(errors="replace")))
    return r.stdout


def make_key(path):
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path)
    pub = path + ".pub"
    openssl("pkey", "-in", path, "-pubout", "-out", pub)
    return pub


def spki_b64(pub_pem):
    import base64
    der = openssl("pkey", "-pubin", "-in", pub_pem, "-outform", "DER")
    return base64.b64encode(der).decode()


def sign(key_path, ftype, body):
    return openssl("dgst", "-sha256", "-sign", key_path, input=b"TETHER1" + bytes([ftype]) + body)


def verify(pub_path, ftype, body, sig, tmpdir):
    sp = os.path.join(tmpdir, "sig.der")
    with open(sp, "wb") as f:
        f.write(sig)
    r = subprocess.run(["openssl", "dgst", "-sha256", "-verify", pub_path, "-signature", sp],
                       input=b"TETHER1" + bytes([ftype]) + body, capture_output=True, timeout=30)
    return r.returncode == 0


def frame(ftype, body, sig=b""):
    return struct.pack(">2sBBIH", b"TH", 1, ftype, len(body), len(sig)) + body + sig


def utc(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


class FakeMP:
    """One TLS connection at a time on 127.0.0.1, frames in and out."""

    def __init__(self, tmp):
        self.dir = tmp.sub("fake-mp")
        os.makedirs(self.dir)
        os.chmod(self.dir, 0o755)
        self.site_key = os.path.join(self.dir, "site.key")
        self.site_pub = make_key(self.site_key)
        self.tls_key = os.path.join(self.dir, "tls.key")
        self.tls_crt = os.path.join(self.dir, "tls.crt")
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", self.tls_key, "-out", self.tls_crt, "-days", "2", "-subj", "/CN=127.0.0.1",
                "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost")
        os.chmod(self.tls_crt, 0o644)
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(self.tls_crt, self.tls_key)
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(4)
        self.port = self.listener.getsockname()[1]
        # A port that refuses, for the HTTPS side the agent never needs here.
        self.conn = None
        self.buf = b""

    def accept(self, timeout=30):
        self.listener.settimeout(timeout)
        raw, _ = self.listener.accept()
        raw.settimeout(timeout)
        self.conn = self.ctx.wrap_socket(raw, server_side=True)
        self.buf = b""

    def read_frame(self, timeout=30):
        self.conn.settimeout(timeout)
        while True:
            if len(self.buf) >= 10:
                magic, ver, ftype, blen, slen = struct.unpack(">2sBBIH", self.buf[:10])
                if magic != b"TH" or ver != 1:
                    fail("bad frame from the agent")
                if len(self.buf) >= 10 + blen + slen:
                    body = self.buf[10:10 + blen]
                    sig = self.buf[10 + blen:10 + blen + slen]
                    self.buf = self.buf[10 + blen + slen:]
                    return ftype, body, sig
            chunk = self.conn.recv(65536)
            if not chunk:
                fail("the agent closed the connection")
            self.buf += chunk

    def read_until(self, ftype, timeout=30, skip=(7,)):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                fail("no frame of type %d in time" % ftype)
            t, body, sig = self.read_frame(left)
            if t == ftype:
                return body, sig
            if t not in skip:
                fail("unexpected frame type %d: %r" % (t, body[:200]))

    def send(self, ftype, body, key=None):
        sig = sign(key, ftype, body) if key else b""
        self.conn.sendall(frame(ftype, body, sig))

    def confirm(self, skew=0, status="Approved"):
        body = ('<BgbSignInConfirmMessage TimeStamp="%s" MessageVersion="1"><Status>%s</Status>'
                '<KeepAliveSeconds>180</KeepAliveSeconds></BgbSignInConfirmMessage>'
                % (utc(time.time() + skew), status)).encode()
        self.send(FRAME["SIGNIN_CONFIRM"], body, self.site_key)

    def push_body(self, guid, task_type=1, push_id=7, task_id=8, param="", expires_in=3600):
        return ('<BgbRequestMessage TimeStamp="%s"><PushID>%d</PushID><TaskID>%d</TaskID>'
                '<TaskGUID>%s</TaskGUID><TaskType>%d</TaskType><TaskParam>%s</TaskParam>'
                '<Expires>%s</Expires></BgbRequestMessage>'
                % (utc(time.time()), push_id, task_id, guid, task_type, param,
                   utc(time.time() + expires_in))).encode()


def serve_machine_policy(fake, tmp):
    """An HTTPS policy endpoint for the fake MP: the machine policy, signed
    with the site key (detached, type byte 0x50). Returns the port."""
    import base64
    import http.server
    import threading

    ts = utc(time.time() - 60)
    body = ('<Policy Version="1" Scope="machine" TimeStamp="%s" PolicyID="%s"></Policy>\n'
            % (ts, str(uuid.uuid4()).upper())).encode()
    sig = base64.b64encode(sign(fake.site_key, 0x50, body)).decode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path != "/tether/v1/policy/machine":
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Tether-Signature", sig)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.socket = fake.ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv.server_address[1]
