"""tflib — shared helpers for tlsfault's integration tests.

Every test script imports this module and drives real peers on loopback:
openssl s_server / s_client, curl, gnutls-cli, Python's ssl module, plain
sockets, and tshark as an independent judge of the wire.

Rules the helpers keep so that a failing test never leaves debris behind:
  - every subprocess is started in its own process group, registered, and
    killed (the whole group) at exit, on failure, and on SIGTERM/SIGINT;
  - every wait is bounded by a timeout;
  - every temporary file lives under one per-run directory (removed at exit
    unless TF_KEEP=1).

Environment: TF_BIN (the tlsfault binary; make check sets it, by hand the
default is build/src/tlsfault under the source root), TF_SRCDIR (source
root, default: two directories above this file), TF_KEEP=1 (keep the
temporary directory).
"""

import atexit
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
TF_SRCDIR = os.environ.get("TF_SRCDIR") or os.path.normpath(os.path.join(HERE, "..", ".."))
TF_BIN = os.environ.get("TF_BIN") or os.path.join(TF_SRCDIR, "build", "src", "tlsfault")

_procs = []            # every Proc still possibly alive
_cleanups = []         # callables run at exit (servers, sockets)
_tmpdir = None


# ------------------------------------------------------------------ cleanup

def _cleanup_all():
    for fn in reversed(_cleanups[:]):
        try:
            fn()
        except Exception:
            pass
    for p in _procs[:]:
        try:
            p.kill()
        except Exception:
            pass
    if _tmpdir and os.environ.get("TF_KEEP") != "1":
        shutil.rmtree(_tmpdir, ignore_errors=True)


atexit.register(_cleanup_all)


def _on_signal(signum, frame):
    # Turn a termination request into an exception so atexit handlers run.
    raise KeyboardInterrupt("signal %d" % signum)


signal.signal(signal.SIGTERM, _on_signal)


def add_cleanup(fn):
    _cleanups.append(fn)


def tmpdir():
    """The per-run temporary directory (created on first use)."""
    global _tmpdir
    if _tmpdir is None:
        _tmpdir = tempfile.mkdtemp(prefix="tftest-")
    return _tmpdir


def tmppath(name):
    return os.path.join(tmpdir(), name)


def write_file(name, text):
    path = tmppath(name)
    with open(path, "w") as f:
        f.write(text)
    return path


# ------------------------------------------------------------------ TAP

class TAP:
    """A TAP producer with a fixed plan.

    The plan is printed at once.  finish() pads missing tests with "not ok"
    so that a script that stops early is never mistaken for a passing one.
    """

    def __init__(self, plan):
        self.plan = plan
        self.n = 0
        self.failed = 0
        print("1..%d" % plan, flush=True)

    def _line(self, s):
        print(s, flush=True)

    def diag(self, msg):
        for line in str(msg).splitlines() or [""]:
            self._line("# " + line)

    def ok(self, cond, desc, diag=None):
        self.n += 1
        desc = desc.replace("#", "\\#").replace("\n", " ")
        if cond:
            self._line("ok %d - %s" % (self.n, desc))
        else:
            self.failed += 1
            self._line("not ok %d - %s" % (self.n, desc))
            if diag:
                self.diag(diag)
        return bool(cond)

    def eq(self, got, want, desc, diag=None):
        extra = "got:  %r\nwant: %r" % (got, want)
        if diag:
            extra += "\n" + str(diag)
        return self.ok(got == want, desc, extra)

    def section(self, count, name, fn, *args, **kwargs):
        """Runs fn(*args), which should emit exactly count tests.  If it
        raises, the tests it did not reach become "not ok" with the reason,
        so one broken part neither hides the others nor breaks the plan."""
        start = self.n
        err = None
        try:
            fn(*args, **kwargs)
        except Exception as e:
            err = e
            self.diag("%s: crashed: %r" % (name, e))
            self.diag(traceback.format_exc())
        done = self.n - start
        while self.n - start < count:
            self.ok(False, "%s: not run (%s)" % (name, "crashed: %r" % (err,) if err
                                                 else "section ended early"))
        if done > count:
            self.diag("BUG: section %s ran %d tests, planned %d" % (name, done, count))

    def skip(self, desc, reason):
        self.n += 1
        self._line("ok %d - %s # SKIP %s" % (self.n, desc, reason))

    def skip_rest(self, reason):
        while self.n < self.plan:
            self.skip("skipped", reason)

    def finish(self):
        while self.n < self.plan:
            self.n += 1
            self.failed += 1
            self._line("not ok %d - not run (script ended early)" % self.n)
        if self.n > self.plan:
            self._line("# BUG: %d tests run, plan was %d" % (self.n, self.plan))


def run_main(plan, body):
    """Runs body(tap) with a TAP object; a crash becomes "not ok" + Bail out."""
    tap = TAP(plan)
    try:
        body(tap)
    except BaseException as e:  # noqa: B902 - a crash of any kind must show in TAP
        tap.diag("crashed: %r" % (e,))
        tap.diag(traceback.format_exc())
        tap.finish()
        print("Bail out! %s crashed: %s" % (os.path.basename(sys.argv[0]), e), flush=True)
        _cleanup_all()
        os._exit(0)
    tap.finish()
    _cleanup_all()
    sys.exit(0)


# ------------------------------------------------------------------ ports, waits

def free_port(family=socket.AF_INET, host="127.0.0.1"):
    """A port that was free a moment ago (bind to 0, read, close)."""
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.bind((host, 0))
        return s.getsockname()[1]
    finally:
        s.close()


def wait_until(pred, timeout=10.0, interval=0.05):
    """Polls pred() until it returns a true value; returns it or None."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


def wait_port(port, host="127.0.0.1", timeout=10.0):
    def probe():
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            return False
    return bool(wait_until(probe, timeout, 0.05))


def sha256(b):
    return hashlib.sha256(b).hexdigest()


# ------------------------------------------------------------------ processes

class Proc:
    """A background subprocess in its own process group, with its stdout and
    stderr collected by reader threads (so it never blocks on a full pipe)."""

    def __init__(self, argv, name=None, stdin_pipe=False, env=None, cwd=None):
        self.argv = [str(a) for a in argv]
        self.name = name or os.path.basename(self.argv[0])
        self._out = bytearray()
        self._err = bytearray()
        self._cv = threading.Condition()
        self.p = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True, env=env, cwd=cwd)
        _procs.append(self)
        self._threads = []
        for stream, buf in ((self.p.stdout, self._out), (self.p.stderr, self._err)):
            t = threading.Thread(target=self._reader, args=(stream, buf), daemon=True)
            t.start()
            self._threads.append(t)

    def _reader(self, stream, buf):
        while True:
            try:
                chunk = stream.read1(65536)
            except (OSError, ValueError):
                break
            if not chunk:
                break
            with self._cv:
                buf.extend(chunk)
                self._cv.notify_all()
        with self._cv:
            self._cv.notify_all()

    @property
    def pid(self):
        return self.p.pid

    @property
    def out(self):
        with self._cv:
            return self._out.decode("utf-8", "replace")

    @property
    def err(self):
        with self._cv:
            return self._err.decode("utf-8", "replace")

    def alive(self):
        return self.p.poll() is None

    def wait_for(self, regex, stream="err", timeout=10.0, start=0):
        """Waits until regex matches the collected stdout/stderr (from byte
        offset start); returns the match, or None on timeout or exit."""
        rx = re.compile(regex)
        buf = self._err if stream == "err" else self._out
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                m = rx.search(buf[start:].decode("utf-8", "replace"))
                if m:
                    return m
                if self.p.poll() is not None and all(not t.is_alive() for t in self._threads):
                    return None
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cv.wait(min(left, 0.1))

    def err_len(self):
        with self._cv:
            return len(self._err)

    def write(self, data):
        self.p.stdin.write(data)
        self.p.stdin.flush()

    def close_stdin(self):
        try:
            self.p.stdin.close()
        except Exception:
            pass

    def send_signal(self, sig):
        if self.alive():
            os.kill(self.p.pid, sig)

    def wait(self, timeout=10.0):
        """Waits for exit; returns the exit code or None on timeout."""
        try:
            rc = self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        for t in self._threads:
            t.join(2.0)
        return rc

    def kill(self):
        """Kills the whole process group (SIGKILL) and reaps."""
        try:
            os.killpg(self.p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        for t in self._threads:
            t.join(1.0)
        if self in _procs:
            _procs.remove(self)

    def stop(self, sig=signal.SIGTERM, timeout=5.0):
        """Asks politely (sig to the group), then kills.  Returns exit code."""
        if self.alive():
            try:
                os.killpg(self.p.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        rc = self.wait(timeout)
        if rc is None:
            self.kill()
            rc = self.p.returncode
        if self in _procs:
            _procs.remove(self)
        return rc


class Result:
    def __init__(self, argv, rc, out, err, elapsed):
        self.argv, self.rc, self.out, self.err, self.elapsed = argv, rc, out, err, elapsed

    def __repr__(self):
        return "Result(rc=%r, argv=%r)" % (self.rc, " ".join(self.argv))

    def describe(self, limit=1500):
        return ("command: %s\nexit: %r (%.2fs)\nstdout: %s\nstderr: %s" % (
            " ".join(self.argv), self.rc, self.elapsed,
            _tail(self.out, limit), _tail(self.err, limit)))


def _tail(s, limit):
    s = s if isinstance(s, str) else s.decode("utf-8", "replace")
    return s if len(s) <= limit else "..." + s[-limit:]


TIMEOUT_RC = 124


def run(argv, input=None, timeout=20.0, env=None, text=True):
    """Runs a command to completion (bounded); returns a Result.  A timeout
    kills the process group and gives rc 124."""
    argv = [str(a) for a in argv]
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         start_new_session=True, env=env)
    if isinstance(input, str):
        input = input.encode()
    try:
        out, err = p.communicate(input, timeout=timeout)
        rc = p.returncode
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, err = p.communicate()
        rc = TIMEOUT_RC
    if text:
        out = out.decode("utf-8", "replace")
        err = err.decode("utf-8", "replace")
    return Result(argv, rc, out, err, time.monotonic() - t0)


class Feeder:
    """Runs a client whose stdin stays open until told otherwise (s_client
    and gnutls-cli quit at stdin EOF, sometimes before the answer arrives)."""

    def __init__(self, argv, data, close_when=None, timeout=20.0):
        self.proc = Proc(argv, stdin_pipe=True)
        self.data = data
        self.close_when = close_when
        self.timeout = timeout

    def run(self):
        t0 = time.monotonic()
        try:
            if self.data:
                self.proc.write(self.data if isinstance(self.data, bytes) else self.data.encode())
        except (BrokenPipeError, OSError):
            pass
        if self.close_when:
            self.proc.wait_for(self.close_when, stream="out", timeout=self.timeout)
        self.proc.close_stdin()
        rc = _reap(self.proc, self.timeout)
        if rc is None:
            rc = TIMEOUT_RC
        return Result(self.proc.argv, rc, self.proc.out, self.proc.err, time.monotonic() - t0)


def _reap(proc, timeout):
    """Waits up to timeout seconds for proc to exit and unregisters it;
    kills its group if it has not.  Returns the exit code, or None when it
    had to be killed."""
    rc = proc.wait(timeout)
    if rc is None:
        proc.kill()
    elif proc in _procs:
        _procs.remove(proc)
    return rc


def run_fed(argv, data, close_when, timeout):
    """Runs a client that quits at stdin EOF (gnutls-cli) with data on its
    stdin, which stays open until close_when shows on its stdout or it has
    exited.  Unlike Feeder the whole run, that wait included, is bounded by
    timeout seconds; then the client is killed (rc TIMEOUT_RC).  Returns a
    Result."""
    t0 = time.monotonic()
    p = Proc(argv, stdin_pipe=True)
    try:
        p.write(data if isinstance(data, bytes) else data.encode())
    except OSError:
        pass
    p.wait_for(close_when, stream="out", timeout=timeout)
    p.close_stdin()
    rc = _reap(p, max(0.1, timeout - (time.monotonic() - t0)))
    if rc is None:
        rc = TIMEOUT_RC
    return Result(p.argv, rc, p.out, p.err, time.monotonic() - t0)


# ------------------------------------------------------------------ PKI

class PKI:
    """Root CA -> intermediate -> leaf for lab.test / localhost / 127.0.0.1 /
    ::1, RSA-2048, made with the openssl CLI once per run."""

    _instance = None

    @classmethod
    def get(cls):
        if cls._instance is None:
            cls._instance = cls(os.path.join(tmpdir(), "pki"))
        return cls._instance

    def __init__(self, d):
        self.dir = d
        os.makedirs(d, exist_ok=True)
        p = lambda n: os.path.join(d, n)  # noqa: E731
        self.ca, self.ca_key = p("ca.pem"), p("ca.key")
        self.inter, self.inter_key = p("inter.pem"), p("inter.key")
        self.leaf, self.leaf_key = p("leaf.pem"), p("leaf.key")
        self.chain = p("chain.pem")            # leaf + intermediate
        if not os.path.exists(self.chain):
            self._make()

    def _openssl(self, *args):
        r = run(["openssl"] + list(args), timeout=60)
        if r.rc != 0:
            raise RuntimeError("openssl %s failed: %s" % (args[0], r.err))

    def _make(self):
        d = self.dir
        ext_ca = os.path.join(d, "ca.ext")
        ext_inter = os.path.join(d, "inter.ext")
        ext_leaf = os.path.join(d, "leaf.ext")
        with open(ext_ca, "w") as f:
            f.write("basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n"
                    "subjectKeyIdentifier=hash\n")
        with open(ext_inter, "w") as f:
            f.write("basicConstraints=critical,CA:TRUE,pathlen:0\n"
                    "keyUsage=critical,keyCertSign,cRLSign\n"
                    "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid:always\n")
        with open(ext_leaf, "w") as f:
            f.write("basicConstraints=critical,CA:FALSE\n"
                    "keyUsage=critical,digitalSignature,keyEncipherment\n"
                    "extendedKeyUsage=serverAuth\n"
                    "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid:always\n"
                    "subjectAltName=DNS:lab.test,DNS:localhost,IP:127.0.0.1,IP:::1\n")
        for key in (self.ca_key, self.inter_key, self.leaf_key):
            self._openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                          "-out", key)
        self._openssl("req", "-new", "-x509", "-key", self.ca_key, "-out", self.ca,
                      "-days", "30", "-subj", "/O=tlsfault tests/CN=tlsfault test root",
                      "-extensions", "v3_ca_tf", "-config", self._req_config(ext_ca))
        csr = os.path.join(d, "inter.csr")
        self._openssl("req", "-new", "-key", self.inter_key, "-out", csr,
                      "-subj", "/O=tlsfault tests/CN=tlsfault test intermediate")
        self._openssl("x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.ca_key,
                      "-set_serial", "2", "-days", "30", "-sha256", "-extfile", ext_inter,
                      "-out", self.inter)
        csr = os.path.join(d, "leaf.csr")
        self._openssl("req", "-new", "-key", self.leaf_key, "-out", csr,
                      "-subj", "/O=tlsfault tests/CN=lab.test")
        self._openssl("x509", "-req", "-in", csr, "-CA", self.inter, "-CAkey", self.inter_key,
                      "-set_serial", "3", "-days", "30", "-sha256", "-extfile", ext_leaf,
                      "-out", self.leaf)
        with open(self.chain, "w") as out:
            for f in (self.leaf, self.inter):
                with open(f) as src:
                    out.write(src.read())

    def _req_config(self, ext_file):
        path = os.path.join(self.dir, "req.cnf")
        with open(ext_file) as f:
            ext = f.read()
        with open(path, "w") as f:
            f.write("[req]\ndistinguished_name=dn\n[dn]\n[v3_ca_tf]\n" + ext)
        return path

    def server_context(self, min_version=None, max_version=None):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.chain, self.leaf_key)
        if min_version:
            ctx.minimum_version = min_version
        if max_version:
            ctx.maximum_version = max_version
        return ctx

    def client_context(self, min_version=None, max_version=None):
        ctx = ssl.create_default_context(cafile=self.ca)
        if min_version:
            ctx.minimum_version = min_version
        if max_version:
            ctx.maximum_version = max_version
        return ctx


# ------------------------------------------------------------------ openssl s_server

class SServer:
    """openssl s_server on 127.0.0.1 (port chosen by the kernel).

    style: "www" (an HTML status page per request), "rev" (reverses lines),
    "plain" (prints what it reads; nothing comes back).  version: "1.2",
    "1.3" or None (both).  extra: more s_server arguments (-groups P-256,
    -num_tickets 0, -cipher ..., ...)."""

    def __init__(self, version=None, style="www", extra=(), pki=None):
        self.pki = pki or PKI.get()
        argv = ["openssl", "s_server", "-accept", "127.0.0.1:0",
                "-cert", self.pki.leaf, "-key", self.pki.leaf_key,
                "-cert_chain", self.pki.inter, "-naccept", "1000000"]
        if version == "1.2":
            argv.append("-tls1_2")
        elif version == "1.3":
            argv.append("-tls1_3")
        if style == "www":
            argv.append("-www")
        elif style == "rev":
            argv.append("-rev")
        argv += list(extra)
        self.proc = Proc(argv, name="s_server", stdin_pipe=(style == "plain"))
        m = self.proc.wait_for(r"ACCEPT \S+:(\d+)", stream="out", timeout=10)
        if not m:
            err = self.proc.err
            self.proc.kill()
            raise RuntimeError("s_server did not start: %s" % err)
        self.port = int(m.group(1))
        self.addr = "127.0.0.1:%d" % self.port

    def stop(self):
        self.proc.stop()


# ------------------------------------------------------------------ Python servers

class TCPServer:
    """A threaded TCP server on loopback; handler(conn, server) runs per
    connection in its own thread.  With tls=SSLContext the connection is
    wrapped (server side) before the handler sees it."""

    def __init__(self, handler, host="127.0.0.1", tls=None, family=None):
        family = family or (socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(128)
        self.host = host
        self.port = self.sock.getsockname()[1]
        self.addr = ("[%s]:%d" if ":" in host else "%s:%d") % (host, self.port)
        self.handler = handler
        self.tls = tls
        self.conns = []
        self.errors = []
        self.results = []     # handlers may append what they saw
        self.accepted = 0
        self.lock = threading.Lock()
        self.cv = threading.Condition(self.lock)
        self._stop = False
        self.t = threading.Thread(target=self._loop, daemon=True)
        self.t.start()
        add_cleanup(self.stop)

    def _loop(self):
        while not self._stop:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                break
            with self.cv:
                self.accepted += 1
                self.conns.append(conn)
                self.cv.notify_all()
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            conn.settimeout(30)
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
                with self.cv:
                    self.conns.append(conn)
            self.handler(conn, self)
        except Exception as e:  # recorded for the test to inspect
            with self.cv:
                self.errors.append(repr(e))
                self.cv.notify_all()
        finally:
            try:
                conn.close()
            except Exception:
                pass

    def add_result(self, r):
        with self.cv:
            self.results.append(r)
            self.cv.notify_all()

    def wait_results(self, n, timeout=10.0):
        deadline = time.monotonic() + timeout
        with self.cv:
            while len(self.results) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cv.wait(left)
            return list(self.results)

    def stop(self):
        self._stop = True
        try:
            self.sock.close()
        except Exception:
            pass
        with self.lock:
            conns = self.conns[:]
        for c in conns:
            try:
                c.close()
            except Exception:
                pass


def client_hello(sni):
    """A minimal TLS 1.2 ClientHello record with this server name (bytes,
    sent as they are: no hostname rules apply)."""
    def ext(t, body):
        return struct.pack("!HH", t, len(body)) + body
    name = struct.pack("!BH", 0, len(sni)) + sni
    exts = (ext(0, struct.pack("!H", len(name)) + name)
            + ext(10, bytes.fromhex("0004001d0017"))          # x25519, secp256r1
            + ext(11, bytes.fromhex("0100"))
            + ext(13, bytes.fromhex("0006080404010403"))      # rsa_pss, rsa_pkcs1, ecdsa
            + ext(23, b""))                                   # extended_master_secret
    suites = bytes.fromhex("c02fc02bc030009c")
    body = (b"\x03\x03" + os.urandom(32) + b"\x00" + struct.pack("!H", len(suites)) + suites
            + b"\x01\x00" + struct.pack("!H", len(exts)) + exts)
    hs = b"\x01" + struct.pack("!I", len(body))[1:] + body
    return b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs


def recv_all(conn, bufsize=262144):
    """Reads until EOF; returns bytes."""
    chunks = []
    while True:
        try:
            b = conn.recv(bufsize)
        except (ssl.SSLZeroReturnError, ConnectionResetError):
            break
        except ssl.SSLEOFError:
            break
        if not b:
            break
        chunks.append(b)
    return b"".join(chunks)


def recv_exact(conn, n, bufsize=262144):
    buf = bytearray()
    while len(buf) < n:
        b = conn.recv(min(bufsize, n - len(buf)))
        if not b:
            break
        buf.extend(b)
    return bytes(buf)


def handler_echo(conn, srv):
    """Echoes every chunk back until EOF."""
    while True:
        b = conn.recv(65536)
        if not b:
            break
        conn.sendall(b)


def handler_record(conn, srv):
    """Records everything until EOF (the result is the bytes), then closes."""
    data = recv_all(conn)
    srv.add_result(data)


def handler_record_then_reply(conn, srv):
    """Reads until EOF, then sends back sha256(data) + data, then closes:
    proves a half-closed connection still carries the answer."""
    data = recv_all(conn)
    srv.add_result(data)
    conn.sendall(hashlib.sha256(data).digest() + data)
    try:
        conn.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def handler_silent(conn, srv):
    """Accepts and says nothing; holds the connection until the peer closes."""
    conn.settimeout(60)
    try:
        while conn.recv(65536):
            pass
    except OSError:
        pass


def make_tagger(tag):
    """Answers every chunk with tag + chunk (tells which upstream served)."""
    def handler(conn, srv):
        while True:
            b = conn.recv(65536)
            if not b:
                break
            conn.sendall(tag + b)
    return handler


def handler_bulk(conn, srv):
    """Length-prefixed bulk echo: 8-byte big-endian length, that many bytes;
    it hashes them, then sends them all back and closes.  Records the hash."""
    hdr = recv_exact(conn, 8)
    n = int.from_bytes(hdr, "big")
    h = hashlib.sha256()
    got = 0
    chunks = []
    while got < n:
        b = conn.recv(min(1 << 20, n - got))
        if not b:
            break
        h.update(b)
        chunks.append(b)
        got += len(b)
    srv.add_result((got, h.hexdigest()))
    data = b"".join(chunks)
    chunks = None
    view = memoryview(data)
    for off in range(0, len(data), 1 << 20):
        conn.sendall(view[off:off + (1 << 20)])
    try:
        conn.unwrap() if isinstance(conn, ssl.SSLSocket) else conn.shutdown(socket.SHUT_WR)
    except (OSError, ssl.SSLError, ValueError):
        pass


def bulk_client(host, port, payload, ctx=None, server_hostname="lab.test", timeout=60.0):
    """Client side of handler_bulk; returns (sent, received_sha256, received_len)."""
    s = socket.create_connection((host, port), timeout=timeout)
    if ctx is not None:
        s = ctx.wrap_socket(s, server_hostname=server_hostname)
    try:
        s.sendall(len(payload).to_bytes(8, "big"))
        view = memoryview(payload)
        for off in range(0, len(payload), 1 << 20):
            s.sendall(view[off:off + (1 << 20)])
        h = hashlib.sha256()
        got = 0
        while got < len(payload):
            b = s.recv(1 << 20)
            if not b:
                break
            h.update(b)
            got += len(b)
        # A clean end: read to the server's close, then close our side
        # (closing with unread bytes would reset the connection).
        recv_all(s)
        if isinstance(s, ssl.SSLSocket):
            try:
                s = s.unwrap()
            except (OSError, ssl.SSLError, ValueError):
                pass
        return got, h.hexdigest()
    finally:
        s.close()


def pattern_bytes(n, seed=b"tlsfault"):
    """n deterministic pseudo-random bytes (fast: sha256 counter blocks
    repeated with a varying 1 MiB period)."""
    block = bytearray()
    i = 0
    while len(block) < (1 << 20):
        block += hashlib.sha256(seed + i.to_bytes(8, "big")).digest()
        i += 1
    block = bytes(block[:1 << 20])
    out = bytearray()
    k = 0
    while len(out) < n:
        # rotate the block each MiB so equal MiBs do not repeat trivially
        r = k % 997
        out += block[r:] + block[:r]
        k += 1
    return bytes(out[:n])


# ------------------------------------------------------------------ tlsfault

class EventLog:
    """Reads tlsfault's JSON Lines file (complete lines only)."""

    def __init__(self, path):
        self.path = path
        self._claimed = set()

    def all(self):
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return []
        out = []
        for line in data.split(b"\n")[:-1] if not data.endswith(b"\n") else data.split(b"\n"):
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"event": "__bad_json__", "raw": line.decode("utf-8", "replace")})
        return out

    def flow(self, fid):
        return [e for e in self.all() if e.get("flow") == fid]

    def flows(self):
        ids = []
        for e in self.all():
            f = e.get("flow")
            if f is not None and f not in ids:
                ids.append(f)
        return ids

    def max_flow(self):
        ids = [e.get("flow") for e in self.all() if isinstance(e.get("flow"), int)]
        return max(ids) if ids else 0

    def wait(self, pred, timeout=10.0):
        """Waits until some event satisfies pred; returns it or None."""
        def probe():
            for e in self.all():
                if pred(e):
                    return e
            return None
        return wait_until(probe, timeout, 0.05)

    def flow_end(self, fid, timeout=10.0):
        return self.wait(lambda e: e.get("flow") == fid and e.get("event") == "flow_end",
                         timeout)

    def new_flow_ends(self, after, count=1, timeout=10.0):
        """Waits for count flow_end events of flows with id > after; returns
        them sorted by flow id."""
        def probe():
            ends = [e for e in self.all() if e.get("event") == "flow_end"
                    and isinstance(e.get("flow"), int) and e["flow"] > after]
            return ends if len(ends) >= count else None
        r = wait_until(probe, timeout, 0.05)
        if r is None:
            r = [e for e in self.all() if e.get("event") == "flow_end"
                 and isinstance(e.get("flow"), int) and e["flow"] > after]
        return sorted(r, key=lambda e: e["flow"])

    def flow_by_client_port(self, port, timeout=10.0, listener=None):
        """The flow id whose flow_start names a client with this source port
        (and, if given, this listener).  The kernel reuses a source port as
        soon as the 4-tuple differs, so several flows can match: the newest
        one not handed out by an earlier call wins."""
        def probe():
            ids = [e["flow"] for e in self.all()
                   if e.get("event") == "flow_start" and isinstance(e.get("flow"), int)
                   and str(e.get("client", "")).endswith(":%d" % port)
                   and (listener is None or e.get("listener") == listener)
                   and e["flow"] not in self._claimed]
            return max(ids) if ids else None
        fid = wait_until(probe, timeout, 0.05)
        if fid is not None:
            self._claimed.add(fid)
        return fid


def fmt_events(events, limit=40):
    lines = [json.dumps(e, sort_keys=True) for e in events[:limit]]
    if len(events) > limit:
        lines.append("... %d more" % (len(events) - limit))
    return "\n".join(lines)


def listen_addr(addr="127.0.0.1:0"):
    """A listen address for tlsfault.  Port 0 (the kernel chooses) is part
    of the contract and the default; TF_TEST_NO_PORT0=1 picks a free port
    here instead (a debugging aid only, racy)."""
    if os.environ.get("TF_TEST_NO_PORT0") == "1" and addr.endswith(":0"):
        host = addr[:-2]
        if host.startswith("["):
            return "%s:%d" % (host, free_port(socket.AF_INET6, host.strip("[]")))
        return "%s:%d" % (host, free_port(socket.AF_INET, host))
    return addr


def config_text(listeners, json_path, timeouts=None, workers=1, text="none", extra=""):
    """A libconfig file for tlsfault.  listeners: [(name, listen, upstream)]
    (listen addresses go through listen_addr()); timeouts: {"handshake": 2.0}."""
    ls = ",\n".join(
        '  { name = "%s"; listen = "%s"; route = "forward"; upstream = "%s"; }'
        % (n, listen_addr(a), u) for n, a, u in listeners)
    out = "listeners = (\n%s\n);\n" % ls
    out += 'log = { text = "%s"; json = "%s"; };\n' % (text, json_path)
    if timeouts:
        out += "timeouts = { %s };\n" % " ".join(
            "%s = %s;" % (k, float(v)) for k, v in timeouts.items())
    out += "workers = %d;\n" % workers
    return out + extra


def write_config(name, listeners, timeouts=None, workers=1, extra=""):
    """Writes a config file; returns (path, json_path)."""
    json_path = tmppath(name + ".jsonl")
    path = write_file(name + ".conf", config_text(listeners, json_path, timeouts, workers,
                                                  extra=extra))
    return path, json_path


class Tlsfault:
    """A running tlsfault.  Either quick mode (upstream=...) or config mode
    (config=path).  Waits for "ready" and parses the listener lines."""

    READY = r"tlsfault: info: tlsfault \S+ ready"
    LISTENER = r"listener (\S+) on (\S+):(\d+) -> (\S+) \((\d+) workers?\)"

    def __init__(self, upstream=None, config=None, listen="127.0.0.1:0", json_path=None,
                 workers=1, extra=(), log_level=None, timeout=20.0, name="tlsfault",
                 port0=False):
        self.json_path = json_path
        if not port0:
            listen = listen_addr(listen)
        if config is None:
            if self.json_path is None:
                self.json_path = tmppath("%s-%d.jsonl" % (name, int(time.time() * 1e6)))
            argv = [TF_BIN, "--listen", listen, "--upstream", upstream,
                    "--json", self.json_path, "--text", "none", "-w", str(workers)]
        else:
            argv = [TF_BIN, "-c", config]
            if self.json_path is None:
                m = re.search(r'json\s*=\s*"([^"]+)"', open(config).read())
                self.json_path = m.group(1) if m else None
        if log_level:
            argv += ["-v", log_level]
        argv += list(extra)
        self.config = config
        self.proc = Proc(argv, name=name)
        self.events = EventLog(self.json_path) if self.json_path else None
        if not self.proc.wait_for(self.READY, timeout=timeout):
            err = self.proc.err
            rc = self.proc.p.poll()
            self.proc.kill()
            raise RuntimeError("tlsfault did not become ready (exit %r): %s" % (rc, err[-3000:]))
        self.listeners = {}
        for m in re.finditer(self.LISTENER, self.proc.err):
            host = m.group(2)
            if host.startswith("[") and host.endswith("]"):
                host = host[1:-1]
            self.listeners[m.group(1)] = (host, int(m.group(3)))
        if not self.listeners:
            raise RuntimeError("tlsfault printed no listener line: %s" % self.proc.err[-2000:])
        first = next(iter(self.listeners.values()))
        self.host, self.port = first

    @property
    def pid(self):
        return self.proc.pid

    def port_of(self, name):
        return self.listeners[name][1]

    def alive(self):
        return self.proc.alive()

    def fd_count(self):
        return fd_count(self.pid)

    def rss_kib(self):
        return rss_kib(self.pid)

    def stop(self, sig=signal.SIGTERM, timeout=15.0):
        return self.proc.stop(sig, timeout)

    def stderr_tail(self, n=2000):
        return _tail(self.proc.err, n)


def fd_count(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return -1


def fd_list(pid):
    out = []
    try:
        for fd in sorted(os.listdir("/proc/%d/fd" % pid), key=int):
            try:
                out.append("%s -> %s" % (fd, os.readlink("/proc/%d/fd/%s" % (pid, fd))))
            except OSError:
                pass
    except OSError:
        pass
    return out


def rss_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


def cpu_seconds(pid):
    """User plus system CPU time of a process so far, in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_fd_count(pid, want, timeout=5.0):
    """Waits until the process has at most want open fds; returns the count."""
    n = wait_until(lambda: fd_count(pid) <= want and fd_count(pid), timeout, 0.05)
    return n if n else fd_count(pid)


# ------------------------------------------------------------------ clients

def curl(port, path="/", host="lab.test", pki=None, extra=(), timeout=20.0, addr="127.0.0.1"):
    pki = pki or PKI.get()
    argv = ["curl", "-sS", "--cacert", pki.ca, "--resolve", "%s:%d:%s" % (host, port, addr),
            "--max-time", str(int(timeout) - 2 if timeout > 4 else timeout)] + list(extra) + \
        ["https://%s:%d%s" % (host, port, path)]
    return run(argv, timeout=timeout)


def s_client(port, extra=(), data="GET / HTTP/1.0\r\n\r\n", host="lab.test", pki=None,
             timeout=20.0, wait_out=None):
    """openssl s_client with name verification.  stdin stays open until the
    server closes (-ign_eof) so the answer is read whole."""
    pki = pki or PKI.get()
    argv = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-servername", host,
            "-CAfile", pki.ca, "-verify_return_error", "-verify_hostname", host,
            "-ign_eof"] + list(extra)
    return run(argv, input=data, timeout=timeout)


def gnutls_cli(port, extra=(), data="GET / HTTP/1.0\r\n\r\n", host="lab.test", pki=None,
               timeout=20.0, close_when=r"</HTML>|</html>"):
    """gnutls-cli with name verification.  stdin is closed only once the
    answer (close_when on stdout) is in, since gnutls-cli quits at EOF."""
    pki = pki or PKI.get()
    argv = ["gnutls-cli", "--x509cafile", pki.ca, "-p", str(port), "--sni-hostname", host,
            "--verify-hostname", host] + list(extra) + ["127.0.0.1"]
    return Feeder(argv, data, close_when=close_when, timeout=timeout).run()


class PyResult:
    def __init__(self):
        self.ok = False
        self.version = None
        self.cipher = None
        self.data = b""
        self.error = None
        self.local_port = None

    def __repr__(self):
        return "PyResult(ok=%r, version=%r, cipher=%r, error=%r, %d bytes)" % (
            self.ok, self.version, self.cipher, self.error, len(self.data))


def py_client(port, data=b"GET / HTTP/1.0\r\n\r\n", ctx=None, host="lab.test", timeout=15.0,
              addr="127.0.0.1"):
    """Python ssl client: handshake, send data, read to EOF."""
    r = PyResult()
    ctx = ctx or PKI.get().client_context()
    try:
        raw = socket.create_connection((addr, port), timeout=timeout)
        r.local_port = raw.getsockname()[1]
        with ctx.wrap_socket(raw, server_hostname=host) as s:
            r.version = s.version()
            c = s.cipher()
            r.cipher = c[0] if c else None
            if data:
                s.sendall(data)
            r.data = recv_all(s)
        r.ok = True
    except Exception as e:
        r.error = e
    return r


# ------------------------------------------------------------------ names

HANDSHAKE_TYPES = {
    0: "hello_request", 1: "client_hello", 2: "server_hello", 3: "hello_verify_request",
    4: "new_session_ticket", 5: "end_of_early_data", 8: "encrypted_extensions",
    11: "certificate", 12: "server_key_exchange", 13: "certificate_request",
    14: "server_hello_done", 15: "certificate_verify", 16: "client_key_exchange",
    20: "finished", 21: "certificate_url", 22: "certificate_status",
    23: "supplemental_data", 24: "key_update", 254: "message_hash",
}
HANDSHAKE_NUMBERS = {v: k for k, v in HANDSHAKE_TYPES.items()}
HANDSHAKE_NUMBERS["hello_retry_request"] = 2

ALERTS = {
    0: "close_notify", 10: "unexpected_message", 20: "bad_record_mac",
    21: "decryption_failed", 22: "record_overflow", 30: "decompression_failure",
    40: "handshake_failure", 41: "no_certificate", 42: "bad_certificate",
    43: "unsupported_certificate", 44: "certificate_revoked", 45: "certificate_expired",
    46: "certificate_unknown", 47: "illegal_parameter", 48: "unknown_ca", 49: "access_denied",
    50: "decode_error", 51: "decrypt_error", 60: "export_restriction", 70: "protocol_version",
    71: "insufficient_security", 80: "internal_error", 86: "inappropriate_fallback",
    90: "user_canceled", 100: "no_renegotiation", 109: "missing_extension",
    110: "unsupported_extension", 111: "certificate_unobtainable", 112: "unrecognized_name",
    113: "bad_certificate_status_response", 114: "bad_certificate_hash_value",
    115: "unknown_psk_identity", 116: "certificate_required", 120: "no_application_protocol",
}
ALERT_NUMBERS = {v: k for k, v in ALERTS.items()}

IANA_SUITE_RX = re.compile(r"^TLS_[A-Z0-9_]+$")

# OpenSSL names -> IANA names, for suites the tests negotiate.
OPENSSL_TO_IANA = {
    "ECDHE-RSA-AES128-GCM-SHA256": "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "ECDHE-RSA-AES256-GCM-SHA384": "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "ECDHE-RSA-CHACHA20-POLY1305": "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    "DHE-RSA-AES128-GCM-SHA256": "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256",
    "DHE-RSA-AES256-GCM-SHA384": "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384",
    "AES128-GCM-SHA256": "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "AES256-GCM-SHA384": "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_AES_128_GCM_SHA256": "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384": "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256": "TLS_CHACHA20_POLY1305_SHA256",
}


def wire_sequence(events):
    """The (dir, what) sequence of clear-text protocol events of one flow, as
    tshark would show it: ("c2s", "hs:1"), ("s2c", "ccs"), ("s2c", "alert:40")."""
    seq = []
    for e in events:
        ev = e.get("event")
        if ev == "handshake":
            t = e.get("type")
            num = HANDSHAKE_NUMBERS.get(t, t)
            seq.append((e.get("dir"), "hs:%s" % num))
        elif ev == "change_cipher_spec":
            seq.append((e.get("dir"), "ccs"))
        elif ev == "alert":
            d = e.get("description")
            num = ALERT_NUMBERS.get(d, d) if isinstance(d, str) else d
            seq.append((e.get("dir"), "alert:%s" % num))
    return seq


# ------------------------------------------------------------------ tshark

def have_tshark():
    return shutil.which("tshark") is not None and os.geteuid() == 0


def _probe_listener():
    """A listening socket on 127.0.0.1 for a capture's probe connections:
    (socket, port)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    probe.bind(("127.0.0.1", 0))
    probe.listen(16)
    add_cleanup(probe.close)
    return probe, probe.getsockname()[1]


def _start_tshark(argv, probe_port, marker, probe_data):
    """Starts tshark (argv, which captures probe_port too) and returns its
    Proc once the capture is live: once marker shows on its stdout after a
    probe connection to probe_port (sending probe_data, if any).  "Capturing
    on" comes earlier than that."""
    proc = Proc(argv, name="tshark")
    if not proc.wait_for(r"Capture started|Capturing on", stream="err", timeout=15):
        err = proc.err
        proc.kill()
        raise RuntimeError("tshark did not start: %s" % err)
    deadline = time.monotonic() + 15
    while True:
        try:
            with socket.create_connection(("127.0.0.1", probe_port), timeout=2) as c:
                if probe_data:
                    c.sendall(probe_data)
        except OSError:
            pass
        if proc.wait_for(marker, stream="out", timeout=0.3):
            return proc
        if time.monotonic() > deadline or not proc.alive():
            err = proc.err
            proc.kill()
            raise RuntimeError("tshark never saw its probe: %s" % err[-1000:])


def _stop_tshark(proc, settle):
    """Lets the last packets in (settle seconds), then stops tshark."""
    time.sleep(settle)
    proc.send_signal(signal.SIGINT)
    _reap(proc, 10)


class TShark:
    """Captures one TCP port on lo and dissects it as TLS (-T json).

    start() returns once tshark says "Capturing on"; finish() stops it and
    returns the list of records seen, in order, each
    {"time", "srcport", "ct", "hs": [types...], "alert": desc|None}."""

    PROBE = b"\x15\x03\x03\x00\x02\x01\x00"  # a TLS warning alert (close_notify)

    def __init__(self, ports, duration=20):
        self.ports = [ports] if isinstance(ports, int) else list(ports)
        # A probe listener, captured too: the capture is live once tshark
        # has dissected a record sent to it ("Capturing on" comes earlier).
        self.probe, self.probe_port = _probe_listener()
        ports = self.ports + [self.probe_port]
        bpf = " or ".join("tcp port %d" % p for p in ports)
        argv = ["tshark", "-i", "lo", "-f", bpf]
        for p in ports:
            argv += ["-d", "tcp.port==%d,tls" % p]
        argv += ["-l", "-n", "-Y", "tls", "-a", "duration:%d" % duration,
                 "-T", "json", "-J", "frame tcp tls"]
        self.proc = _start_tshark(argv, self.probe_port, r'"tcp.dstport": "%d"' % self.probe_port,
                                  self.PROBE)
        self.probe.close()

    def finish(self, settle=0.5):
        _stop_tshark(self.proc, settle)
        return parse_tshark_json(self.proc.out)


def _pairs_all(node, key):
    """All values of key in a JSON object parsed as a list of pairs (tshark
    repeats keys: one "tls.record" per record, one "tls.handshake" per
    message)."""
    if not isinstance(node, list):
        return []
    return [v for k, v in node if k == key]


def _pairs_get(node, key, default=None):
    vals = _pairs_all(node, key)
    return vals[0] if vals else default


def parse_tshark_json(text):
    """Flattens tshark -T json output into records in capture order."""
    hook = lambda pairs: list(pairs)  # noqa: E731 - keep duplicate keys, in order
    try:
        pkts = json.loads(text, object_pairs_hook=hook) if text.strip() else []
    except ValueError:
        # A stopped capture can leave the array unterminated.
        t = text.rstrip().rstrip(",")
        try:
            pkts = json.loads(t + "]", object_pairs_hook=hook)
        except ValueError:
            pkts = []
    records = []
    for p in pkts:
        layers = _pairs_get(_pairs_get(p, "_source", []), "layers", [])
        frame = _pairs_get(layers, "frame", [])
        tcp = _pairs_get(layers, "tcp", [])
        t = float(_pairs_get(frame, "frame.time_relative", "0") or 0)
        srcport = int(_pairs_get(tcp, "tcp.srcport", "0") or 0)
        dstport = int(_pairs_get(tcp, "tcp.dstport", "0") or 0)
        for tls in _pairs_all(layers, "tls"):
            for rec in _pairs_all(tls, "tls.record"):
                try:
                    ct = int(_pairs_get(rec, "tls.record.content_type"))
                except (TypeError, ValueError):
                    ct = None
                hs = []
                for h in _pairs_all(rec, "tls.handshake"):
                    typ = _pairs_get(h, "tls.handshake.type")
                    if typ is not None:
                        try:
                            hs.append(int(typ))
                        except ValueError:
                            pass
                alert = None
                for a in _pairs_all(rec, "tls.alert_message"):
                    desc = _pairs_get(a, "tls.alert_message.desc")
                    if desc is not None:
                        alert = int(desc)
                records.append({"time": t, "srcport": srcport, "dstport": dstport,
                                "ct": ct, "hs": hs,
                                "alert": alert})
    return records


def tshark_sequence(records, server_port):
    """(dir, what) in the same vocabulary as wire_sequence(), for the
    connections to server_port (frames from it are s2c, to it c2s)."""
    seq = []
    for r in records:
        if r["srcport"] == server_port:
            d = "s2c"
        elif r["dstport"] == server_port:
            d = "c2s"
        else:
            continue
        if r["ct"] == 22:
            for h in r["hs"]:
                seq.append((d, "hs:%d" % h))
        elif r["ct"] == 20:
            seq.append((d, "ccs"))
        elif r["ct"] == 21 and r["alert"] is not None:
            seq.append((d, "alert:%d" % r["alert"]))
    return seq


# ------------------------------------------------------------------ misc

def have(cmd):
    return shutil.which(cmd) is not None


def binary_ready():
    return os.path.isfile(TF_BIN) and os.access(TF_BIN, os.X_OK)


def www_page_core(page):
    """The part of an s_server -www page that must not differ between a
    direct and a proxied connection: drops session-specific lines (ids,
    keys, times, tickets, counters)."""
    out = []
    for line in page.splitlines():
        if re.match(r"\s+\d+ items in the session cache", line):
            break  # the statistics block that follows differs per connection
        if re.match(r"\s*(Session-ID|Resumption PSK|Master-Key|Start Time|Timeout|"
                    r"TLS session ticket|PSK identity|Extended master secret)", line):
            continue
        if re.match(r"\s*[0-9a-f]{4} - ", line):
            continue  # ticket hex dump
        if re.match(r"\s*(Reused|New), ", line):
            continue  # compared apart (resumption is per connection)
        out.append(line)
    return "\n".join(out)


# ------------------------------------------------------------------ raw capture (bytes on the wire)

class RawCapture:
    """Captures the TCP payload of some ports on lo with tshark, so a test
    can compare the exact bytes of two legs of a proxied connection.

    start: the constructor returns once tshark has shown a probe segment
    (the capture is live).  finish() returns {(srcport, dstport): bytes},
    each direction of each connection reassembled by sequence number."""

    def __init__(self, ports, duration=30):
        self.ports = [ports] if isinstance(ports, int) else list(ports)
        self.probe, self.probe_port = _probe_listener()
        bpf = " or ".join("tcp port %d" % p for p in self.ports + [self.probe_port])
        argv = ["tshark", "-i", "lo", "-f", bpf, "-l", "-n", "-a", "duration:%d" % duration,
                "-Y", "tcp.len > 0", "-T", "fields", "-e", "tcp.srcport", "-e", "tcp.dstport",
                "-e", "tcp.seq", "-e", "tcp.payload"]
        self.proc = _start_tshark(argv, self.probe_port, r"(?m)^\d+\t%d\t" % self.probe_port,
                                  b"probe")
        self.probe.close()

    def finish(self, settle=0.3):
        _stop_tshark(self.proc, settle)
        streams = {}
        for line in self.proc.out.splitlines():
            f = line.split("\t")
            if len(f) < 4 or not f[0].isdigit() or not f[1].isdigit():
                continue
            sp, dp = int(f[0]), int(f[1])
            if self.probe_port in (sp, dp):
                continue
            try:
                seq = int(f[2])
                data = bytes.fromhex(f[3].replace(":", ""))
            except ValueError:
                continue
            buf = streams.setdefault((sp, dp), bytearray())
            off = max(seq - 1, 0)            # relative sequence numbers start at 1
            if len(buf) < off + len(data):
                buf.extend(b"\0" * (off + len(data) - len(buf)))
            buf[off:off + len(data)] = data
        return {k: bytes(v) for k, v in streams.items()}


def streams_between(streams, port):
    """From RawCapture.finish(): (bytes sent to port, bytes sent from port)
    of the connection to the listening port.  Several connections: the one
    that carried the most bytes."""
    best = (b"", b"")
    for (sp, dp), data in streams.items():
        if dp != port:
            continue
        back = streams.get((port, sp), b"")
        if len(data) + len(back) > len(best[0]) + len(best[1]):
            best = (data, back)
    return best


def tls_records(data):
    """Splits a byte stream into TLS records: a list of
    (content_type, version, body).  Stops at the first bytes that are not a
    whole record (their count is in the last item as (None, None, rest))."""
    out = []
    i = 0
    while i + 5 <= len(data):
        ct = data[i]
        ver = (data[i + 1] << 8) | data[i + 2]
        n = (data[i + 3] << 8) | data[i + 4]
        if ct not in (20, 21, 22, 23, 24) or i + 5 + n > len(data):
            break
        out.append((ct, ver, data[i + 5:i + 5 + n]))
        i += 5 + n
    if i < len(data):
        out.append((None, None, data[i:]))
    return out


def ssl_error_text(e):
    """A short description of a Python client's exception: class name and,
    for ssl errors, the reason or the verification message."""
    if e is None:
        return "ok"
    name = type(e).__name__
    if isinstance(e, ssl.SSLCertVerificationError):
        return "%s: %s" % (name, e.verify_message)
    if isinstance(e, ssl.SSLError):
        return "%s: %s" % (name, e.reason or (e.args[-1] if e.args else ""))
    if isinstance(e, OSError) and e.strerror:
        return "%s: %s" % (name, e.strerror)
    return "%s: %s" % (name, e) if str(e) else name


# ------------------------------------------------------------------ client matrix

# For the tests that run curl, s_client, gnutls-cli and Python's ssl
# through the proxy, judge each client's exit code and words against an
# expectation, and tabulate what each reported (test_faults.py,
# test_mitm.py).  An expectation is "ok" or expect_exit(rcs, regex).

def expect_exit(rcs, rx):
    """An expectation: the exit code is in rcs (one or a list), and rx
    matches the output (stdout + stderr; for Python the exception text)."""
    return (tuple(rcs) if isinstance(rcs, (list, tuple)) else (rcs,), rx)


def alert_expectation(num, ossl, gnutls, py):
    """A fatal alert num during the handshake, as each client reports it:
    ossl is OpenSSL's reason text, gnutls GnuTLS's alert name, py the ssl
    module's reason."""
    return {
        "curl": expect_exit(35, r"curl: \(35\) OpenSSL/[\d.]+: error:[0-9A-F]+:SSL routines::%s"
                            % ossl),
        "s_client": expect_exit(1, r"%s:.*SSL alert number %d" % (ossl, num)),
        "gnutls-cli": expect_exit(1, r"\*\*\* Received alert \[%d\]: %s" % (num, gnutls)),
        "python": expect_exit(1, r"^SSLError: %s" % py),
    }


def hung_expectation():
    """The handshake never ends: curl's own timeout, and the harness kills
    s_client and gnutls-cli (which have none) after their timeout."""
    return {
        "curl": expect_exit(28, r"curl: \(28\) Connection timed out after \d+ milliseconds"),
        "s_client": expect_exit(TIMEOUT_RC, r""),
        "gnutls-cli": expect_exit(TIMEOUT_RC, r""),
        "python": expect_exit(1, r"^TimeoutError: .*The handshake operation timed out"),
    }


def case_expectation(case, version, client):
    """A matrix case's expectation for one run: case["expect"] is
    {client: expectation} or {version: {client: expectation}}."""
    exp = case["expect"]
    if version in exp:
        exp = exp[version]
    return exp[client]


def min_elapsed(seconds):
    """A per-run check(version, client, outcome, events): the client took
    at least seconds."""
    def check(version, client, out, events):
        if out.elapsed < seconds:
            return "finished in %.2fs: the fault should have made it take >= %.2fs" % (
                out.elapsed, seconds)
        return None
    return check


class Outcome:
    """One client run: exit code, a short text for the table, the whole
    output, the s_server -www page in it, seconds taken, the command."""

    def __init__(self, rc, text, full, page, elapsed, argv=None):
        self.rc, self.text, self.full, self.page, self.elapsed = rc, text, full, page, elapsed
        self.argv = argv

    def cell(self):
        return "%s: %s" % (self.rc, self.text)

    def __repr__(self):
        return "Outcome(rc=%r, %r)" % (self.rc, self.text)


def html_part(text):
    """The s_server -www page in a client's output ("" if none)."""
    i = text.find("<HTML>")
    return text[i:] if i >= 0 else ""


def page_ok(page):
    """The whole s_server -www page arrived."""
    return re.search(r"<HTML>.*</BODY></HTML>", page, re.S) is not None


# The reason in an OpenSSL error line (error:CODE:LIB:FUNC:REASON:...).
OSSL_ERR_RX = re.compile(r"^[0-9A-F]+:error:[0-9A-F]+:[^:]*:[^:]*:([^:]+):", re.M)


def curl_error_text(err):
    """curl's error message in its stderr without the parts every such
    message repeats (OpenSSL's prefixes and version, host and port, errno),
    or None when there is none."""
    m = re.search(r"curl: \((\d+)\) (.*)", err)
    if not m:
        return None
    t = m.group(2)
    t = re.sub(r"^(OpenSSL SSL_connect|OpenSSL SSL_read): ", "", t)
    t = re.sub(r"OpenSSL/[\d.]+: ", "", t)
    t = re.sub(r"error:[0-9A-F]+:(SSL|Provider) routines::", "", t)
    t = re.sub(r" in connection to (lab\.test|127\.0\.0\.1):\d+ *$", "", t)
    t = re.sub(r", errno \d+$", "", t)
    return t


def py_page(port, ctx, host="lab.test", data=b"GET / HTTP/1.0\r\n\r\n", timeout=15.0):
    """Python ssl: handshake, send data, read to the end.  Unlike py_client
    an EOF without close_notify is an error (ssl.SSLEOFError), as an
    application that reads a response would see it.  Returns (ok, text,
    page): whether no exception came, a short description for a table, and
    the s_server -www page received."""
    got = bytearray()
    version = None
    try:
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        with ctx.wrap_socket(raw, server_hostname=host) as s:
            version = s.version()
            s.sendall(data)
            while True:
                try:
                    b = s.recv(65536)
                except ssl.SSLZeroReturnError:
                    break
                if not b:
                    break
                got += b
        ok, err = True, None
    except Exception as e:
        ok, err = False, e
    page = html_part(got.decode("utf-8", "replace"))
    if ok and page_ok(page):
        text = "ok (%s)" % version
    elif ok:
        # ssl's default suppress_ragged_eofs=True: an EOF without
        # close_notify reads as a clean end of the stream.
        text = "no error, %d bytes, page incomplete (%s)" % (len(got), version)
    else:
        text = ssl_error_text(err)
    return ok, text, page


def parallel(fns, join=60):
    """Runs the callables at once; returns their results (or exceptions)."""
    res = [None] * len(fns)

    def wrap(i, fn):
        try:
            res[i] = fn()
        except Exception as e:  # reported by the caller
            res[i] = e
    ts = [threading.Thread(target=wrap, args=(i, fn), daemon=True) for i, fn in enumerate(fns)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(join)
    return res


def fault_flow_problems(events, rule, fault):
    """Problems with the JSON log of one flow where rule (of fault) must
    fire: a fault event of it, one flow_end whose faults and summary name
    it."""
    bad = []
    fe = [e for e in events if e.get("event") == "fault"]
    if not any(e.get("rule") == rule and e.get("fault") == fault for e in fe):
        bad.append("no fault event with rule %r and fault %r (fault events: %r)" % (
            rule, fault, fe))
    ends = [e for e in events if e.get("event") == "flow_end"]
    if len(ends) != 1:
        bad.append("expected one flow_end, got %d" % len(ends))
        return bad
    end = ends[0]
    names = [x if isinstance(x, str) else (x or {}).get("rule")
             for x in (end.get("faults") or [])]
    if rule not in names:
        bad.append("flow_end faults %r does not name %r" % (end.get("faults"), rule))
    if rule not in str(end.get("summary", "")):
        bad.append("flow_end summary %r does not mention %r" % (end.get("summary"), rule))
    return bad


def outcome_table(results, clients, titles, label=str):
    """A Markdown table of results, [(title, version, {client: Outcome})]:
    a column per client (titles[client]), the version as label(version)."""
    lines = ["| fault | TLS | %s |" % " | ".join(titles[c] for c in clients),
             "| --- | --- | %s |" % " | ".join("---" for _ in clients)]
    for title, ver, outs in results:
        cells = []
        for c in clients:
            o = outs.get(c)
            cells.append(o.cell().replace("|", "\\|") if isinstance(o, Outcome)
                         else "(did not run: %r)" % (o,))
        lines.append("| %s | %s | %s |" % (title, label(ver), " | ".join(cells)))
    return "\n".join(lines)


# ------------------------------------------------------------------ lab CA (mitm)

class LabCA:
    """A lab CA made by `tlsfault --ca-init DIR`, once per run (one per test
    script): root.pem (what the lab's clients trust), intermediate.pem (signs
    the forged leaves) and untrusted-root.pem (fault cert-untrusted-root),
    with their keys.  For mitm listeners: --mode mitm --ca DIR, or
    ca = { dir = "DIR"; } in a configuration file."""

    _instance = None

    @classmethod
    def get(cls):
        if cls._instance is None:
            cls._instance = cls(os.path.join(tmpdir(), "lab-ca"))
        return cls._instance

    def __init__(self, d):
        self.dir = d
        p = lambda n: os.path.join(d, n)  # noqa: E731
        self.root = p("root.pem")
        self.intermediate = p("intermediate.pem")
        self.untrusted_root = p("untrusted-root.pem")
        if not os.path.exists(self.root):
            self.init(d)

    @staticmethod
    def init(d):
        """Makes a lab CA in d with tlsfault --ca-init; raises on failure."""
        r = run([TF_BIN, "--ca-init", d], timeout=60)
        if r.rc != 0 or not os.path.exists(os.path.join(d, "root.pem")):
            raise RuntimeError("tlsfault --ca-init %s failed: %s" % (d, r.describe()))
        return d

    def mitm_args(self):
        """The quick-mode arguments of a mitm listener signing with this CA."""
        return ["--mode", "mitm", "--ca", self.dir]

    def client_context(self, min_version=None, max_version=None):
        """A Python client context trusting root.pem only."""
        ctx = ssl.create_default_context(cafile=self.root)
        if min_version:
            ctx.minimum_version = min_version
        if max_version:
            ctx.maximum_version = max_version
        return ctx


class PcapCapture:
    """tshark writing a pcap file of some ports on lo (for a later
    `tshark -r FILE -o tls.keylog_file:...`).  The constructor returns once
    tshark has shown a probe connection's SYN (the capture is live);
    finish() stops it and returns the file's path."""

    def __init__(self, ports, path, duration=30):
        self.ports = [ports] if isinstance(ports, int) else list(ports)
        self.path = path
        self.probe, self.probe_port = _probe_listener()
        bpf = " or ".join("tcp port %d" % p for p in self.ports + [self.probe_port])
        # -P: print a summary of each packet while writing the file.
        argv = ["tshark", "-i", "lo", "-f", bpf, "-n", "-l", "-P", "-w", path,
                "-a", "duration:%d" % duration]
        self.proc = _start_tshark(argv, self.probe_port, r"\b%d\b" % self.probe_port, None)
        self.probe.close()

    def finish(self, settle=0.3):
        _stop_tshark(self.proc, settle)
        return self.path


# ------------------------------------------------------------------ more leaves

def make_leaf(name, dns=(), ips=(), pki=None):
    """A leaf certificate for name (CN and first DNS name; dns and ips add
    more subjectAltNames), signed by the PKI's intermediate like the usual
    leaf, made once per run.  Returns (chain, key): chain is leaf +
    intermediate, ready for s_server -cert (or load_cert_chain)."""
    pki = pki or PKI.get()
    tag = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    chain = os.path.join(pki.dir, "leaf-%s-chain.pem" % tag)
    key = os.path.join(pki.dir, "leaf-%s.key" % tag)
    if os.path.exists(chain):
        return chain, key
    cert = os.path.join(pki.dir, "leaf-%s.pem" % tag)
    csr = os.path.join(pki.dir, "leaf-%s.csr" % tag)
    ext = os.path.join(pki.dir, "leaf-%s.ext" % tag)
    sans = ["DNS:%s" % n for n in [name] + [d for d in dns if d != name]]
    sans += ["IP:%s" % a for a in ips]
    with open(ext, "w") as f:
        f.write("basicConstraints=critical,CA:FALSE\n"
                "keyUsage=critical,digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=serverAuth\n"
                "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid:always\n"
                "subjectAltName=%s\n" % ",".join(sans))
    serial = str(int(hashlib.sha256(name.encode()).hexdigest()[:12], 16))
    pki._openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", key)
    pki._openssl("req", "-new", "-key", key, "-out", csr, "-subj", "/O=tlsfault tests/CN=%s" % name)
    pki._openssl("x509", "-req", "-in", csr, "-CA", pki.inter, "-CAkey", pki.inter_key,
                 "-set_serial", serial, "-days", "30", "-sha256", "-extfile", ext, "-out", cert)
    with open(chain + ".tmp", "w") as out:
        for f in (cert, pki.inter):
            with open(f) as src:
                out.write(src.read())
    os.rename(chain + ".tmp", chain)
    return chain, key


# ------------------------------------------------------------------ private /etc/hosts

_hosts_method_cache = []

def hosts_method():
    """How a command can get a private /etc/hosts here: "root" (unshare -m,
    then mount --bind), "userns" (unshare -rm: a user namespace, for
    non-root users where the kernel allows it), or None.  Tried once."""
    if _hosts_method_cache:
        return _hosts_method_cache[0]
    probe = write_file("hosts-probe", "127.0.0.9 tlsfault-hosts-probe.test\n")
    script = 'mount --bind "$1" /etc/hosts && grep -q tlsfault-hosts-probe /etc/hosts'
    method = None
    for m, pre in (("root", ["unshare", "-m"]), ("userns", ["unshare", "-rm"])):
        if m == "root" and os.geteuid() != 0:
            continue
        if have("unshare") and run(pre + ["sh", "-c", script, "sh", probe], timeout=10).rc == 0:
            method = m
            break
    _hosts_method_cache.append(method)
    return method


def with_hosts(argv, hosts_path):
    """argv run with hosts_path bind-mounted over /etc/hosts in a private
    mount namespace (see hosts_method(); the host's /etc/hosts is never
    touched).  The command keeps the process id (exec), so Proc can stop
    it.  Raises RuntimeError when no method works here."""
    m = hosts_method()
    if m is None:
        raise RuntimeError("no private /etc/hosts here (unshare -m needs root, "
                           "unshare -rm needs user namespaces)")
    pre = ["unshare", "-m"] if m == "root" else ["unshare", "-rm"]
    return pre + ["sh", "-c", 'mount --bind "$1" /etc/hosts && shift && exec "$@"', "sh",
                  hosts_path] + [str(a) for a in argv]


# ------------------------------------------------------------------ network namespaces

LAB_NETNS = os.path.join(TF_SRCDIR, "scripts", "lab-netns.sh")
# The addresses scripts/lab-netns.sh gives the lab (client tfc, router tfr,
# server tfs).
LAB_ADDR = {
    4: {"client": "10.200.1.2", "router_c": "10.200.1.1", "router_s": "10.200.2.1",
        "server": "10.200.2.2"},
    6: {"client": "fd00:200:1::2", "router_c": "fd00:200:1::1", "router_s": "fd00:200:2::1",
        "server": "fd00:200:2::2"},
}


def hostport(host, port):
    """host:port, with brackets around an IPv6 address."""
    return ("[%s]:%d" if ":" in host else "%s:%d") % (host, port)


def netns_unavailable():
    """None when this machine can run the namespace lab (root, ip netns,
    veth pairs, an iptables that works inside a namespace), else why not."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, netfilter rules)"
    for cmd in ("ip", "unshare", "nsenter"):
        if not have(cmd):
            return "no %s command" % cmd
    if not (have("iptables") or have("iptables-legacy")):
        return "no iptables (Debian package iptables)"
    name = "tfprobe%d" % os.getpid()
    try:
        r = run(["ip", "netns", "add", name], timeout=10)
        if r.rc != 0:
            return "ip netns add fails: %s" % r.err.strip()
        r = run(["ip", "-n", name, "link", "add", "p0", "type", "veth", "peer", "name", "p1"],
                timeout=10)
        if r.rc != 0:
            return "no veth pairs: %s" % r.err.strip()
        ok = False
        for ipt in ("iptables", "iptables-legacy"):
            if have(ipt) and run(["ip", "netns", "exec", name, ipt, "-t", "nat", "-S"],
                                 timeout=10).rc == 0:
                ok = True
                break
        if not ok:
            return "neither iptables nor iptables-legacy works in a namespace"
    finally:
        run(["ip", "netns", "del", name], timeout=10)
    return None


class LabNetns:
    """The three-namespace lab of scripts/lab-netns.sh (client, router,
    server), made at construction and removed at exit.  mode: redirect,
    tproxy or none; the namespace names carry a suffix unique to this
    process (and instance), so parallel runs do not collide."""

    _count = 0

    def __init__(self, mode="redirect", v6=True, port=443, proxy_port=8443, backend="iptables",
                 suffix=None):
        LabNetns._count += 1
        self.suffix = suffix or "t%d-%d" % (os.getpid(), LabNetns._count)
        self.mode, self.v6, self.port, self.proxy_port = mode, v6, port, proxy_port
        self.opts = ["--mode", mode, "--port", str(port), "--proxy-port", str(proxy_port),
                     "--backend", backend, "--suffix", self.suffix] + (["--v6"] if v6 else [])
        self.ns = {"client": "tfc" + self.suffix, "router": "tfr" + self.suffix,
                   "server": "tfs" + self.suffix}
        self.up_result = run(["sh", LAB_NETNS] + self.opts + ["up"], timeout=30)
        add_cleanup(self.down)
        if self.up_result.rc != 0:
            self.down()
            raise RuntimeError("lab-netns.sh up failed: %s" % self.up_result.describe())

    def argv(self, where, argv):
        """argv run in namespace where (client, router, server)."""
        return ["ip", "netns", "exec", self.ns[where]] + [str(a) for a in argv]

    def run(self, where, argv, **kw):
        return run(self.argv(where, argv), **kw)

    def proc(self, where, argv, **kw):
        return Proc(self.argv(where, argv), **kw)

    def status(self):
        return run(["sh", LAB_NETNS] + self.opts + ["status"], timeout=30).out

    def down(self):
        if getattr(self, "_down", False):
            return
        self._down = True
        run(["sh", LAB_NETNS] + self.opts + ["down"], timeout=30)


class PrivateNet:
    """A private network namespace (`unshare -n`) with its loopback up, held
    open by a sleeping process; argv() runs commands in it (nsenter).  Its
    netfilter rules and sockets are its own: tests may add rules freely."""

    def __init__(self):
        self.holder = Proc(["unshare", "-n", "sh", "-c",
                            "ip link set lo up && echo ready && exec sleep 3600"],
                           name="unshare-n")
        if not self.holder.wait_for(r"ready", stream="out", timeout=10):
            err = self.holder.err
            self.holder.kill()
            raise RuntimeError("unshare -n failed: %s" % err)
        add_cleanup(self.holder.kill)

    def argv(self, argv):
        return ["nsenter", "-t", str(self.holder.pid), "-n"] + [str(a) for a in argv]

    def run(self, argv, **kw):
        return run(self.argv(argv), **kw)

    def proc(self, argv, **kw):
        return Proc(self.argv(argv), **kw)


def netfilter_cmd(family=4, netns_argv=None):
    """The iptables command that works where netns_argv(argv) runs (default:
    here): iptables, else iptables-legacy; ip6tables for family 6."""
    wrap = netns_argv or (lambda a: a)
    for ipt in ("iptables", "iptables-legacy"):
        if have(ipt) and run(wrap([ipt, "-t", "nat", "-S"]), timeout=10).rc == 0:
            return ipt if family == 4 else ipt.replace("iptables", "ip6tables")
    return None


class TlsfaultCmd(Tlsfault):
    """A running tlsfault started with exactly these arguments (quick mode
    with any route, or -c FILE), optionally inside something: prefix is
    prepended (ip netns exec NS, nsenter, unshare; see with_hosts()).  Like
    Tlsfault it waits for "ready" and reads the listener lines; json_path
    is the JSON log the arguments name (for .events)."""

    def __init__(self, args, json_path=None, prefix=(), timeout=20.0, name="tlsfault"):
        self.config = None
        self.json_path = json_path
        argv = list(prefix) + [TF_BIN] + [str(a) for a in args]
        self.proc = Proc(argv, name=name)
        self.events = EventLog(json_path) if json_path else None
        if not self.proc.wait_for(self.READY, timeout=timeout):
            err = self.proc.err
            rc = self.proc.p.poll()
            self.proc.kill()
            raise RuntimeError("tlsfault did not become ready (exit %r): %s\ncommand: %s" % (
                rc, err[-3000:], " ".join(argv)))
        self.listeners = {}
        for m in re.finditer(self.LISTENER, self.proc.err):
            host = m.group(2)
            if host.startswith("[") and host.endswith("]"):
                host = host[1:-1]
            self.listeners[m.group(1)] = (host, int(m.group(3)))
        if not self.listeners:
            raise RuntimeError("tlsfault printed no listener line: %s" % self.proc.err[-2000:])
        self.host, self.port = next(iter(self.listeners.values()))
