#!/usr/bin/env python3
"""soak.py — tlsfault under a long mix of real and hostile clients (issue 7).

Loopback only, bounded in time.  Usage (normally through scripts/soak.sh):

    python3 tests/soak/soak.py [--connections N] [--minutes M] [--quick]
                               [--hostile N] [--signal-connections N]
                               [--concurrency N] [--keep]

Environment: TF_BIN (the tlsfault binary; default build/src/tlsfault, or
an AddressSanitizer build such as build-asan/src/tlsfault: then the VmRSS
figures are reported but not checked, ASan's quarantine holds freed
memory), TF_SRCDIR.

What it does, in order:

1. Makes an EC P-256 certificate and starts an origin farm: two Python
   asyncio TLS servers (TLS 1.2 and 1.3) sharing one port (SO_REUSEPORT);
   each answers "GET" with a 128-byte body and closes.
   Before the soak, a deterministic check: a real ClientHello sent in two reads
   to listeners with rules that rewrite or answer it (strip-sni, strip-alpn,
   downgrade, strip-ciphers, fragment, alert), and a captured server flight in
   two reads under strip-intermediates: every byte must be counted and
   inspected once (flow_end's bytes; no non_tls event).
2. Starts tlsfault with a configuration file: listener "soak" with random
   fault rules (probability rules with seeds: delay, reset, close, alert,
   corrupt, append-bytes, drop-server-hello, slice, fragment, truncate,
   duplicate, strip-sni, downgrade, stall), listener "clean" without
   faults (for latency probes), listener "mitm" (mode mitm, a lab CA made
   with tlsfault --ca-init; rules cert-expired, cert-wrong-host,
   cert-self-signed, cert-no-intermediate, server-versions, reset, close,
   slice), timeouts { handshake = 2; idle = 5; }, JSON event log.
3. Warm-up (a tenth of the connections, 1,000 to 2,000: the mitm listener's
   caches fill up too), idle, then takes the
   baselines: open file descriptors (/proc/PID/fd) and VmRSS.
4. The soak: N connections (default 50,000), C in flight (default 50), of a
   mix of clients: Python ssl clients (TLS 1.3 and 1.2) making a request,
   curl, openssl s_client, and a custom client that aborts at random points
   (a partial ClientHello, closing after the ServerHello, garbage, RST via
   SO_LINGER 0 before or after the handshake); --mitm-share of them
   (default 0.2) go to the mitm listener, the rest to "soak", and at least a
   quarter of the mitm ones must complete a request.  Stops launching at
   the --minutes deadline (and says so).
5. Idle until the flows are gone; fds must be back to the baseline (+-2) and
   VmRSS within 10% of the warmed-up baseline.
6. Slow and hostile peers: H clients (default 5,000) that connect and send
   nothing, or one byte a second, or a record header claiming 65535 bytes
   (more than the 18 KiB a record may hold), or a ClientHello whose
   handshake header claims 16 MiB, every fifth of them to the mitm listener
   (shown as "mitm/KIND"); the handshake timeout must close them
   (closed within timeout + 3 s), VmRSS must stay bounded, and curl through
   the clean listener meanwhile must see a median latency within 2x of its
   median before the abuse.  fds back to the baseline afterwards.  Then
   more waves (--hostile-waves, default 3): each closed in time, and the
   last wave's VmRSS peak within 50% of the first's (memory is reused;
   a coarse check: glibc keeps what it freed).
7. SIGTERM; tlsfault must exit 0 with no sanitizer report on stderr; in
   its JSON log every flow_start has a flow_end; faults fired are counted.
8. A separate short run for signals: M connections (default 3,000) of
   clients that complete a request; SIGHUP (with a changed file) a third of
   the way and SIGTERM two thirds of the way; every client that completed
   must have its flow_start and flow_end in the log, and every flow that
   started must have ended.

Prints a summary with the figures and exits 0 when every check passed, 1
otherwise.
"""

import argparse
import asyncio
import calendar
import collections
import json
import os
import random
import resource
import shutil
import signal
import socket
import ssl
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
SRCDIR = os.environ.get("TF_SRCDIR") or os.path.normpath(os.path.join(HERE, "..", ".."))
HOST = "127.0.0.1"
SNI = "soak.lab.test"
BODY = b"x" * 127 + b"\n"
HANDSHAKE_TIMEOUT = 2.0
IDLE_TIMEOUT = 5.0
GRACE = 3.0
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                   "SUMMARY: UndefinedBehaviorSanitizer", "ERROR: ThreadSanitizer")


def log(msg):
    print("soak: %s" % msg, flush=True)


# ------------------------------------------------------------------ origin

def origin_main(port, cert, key):
    """One origin process: an asyncio TLS server on port (SO_REUSEPORT)."""
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    response = (b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                b"Connection: close\r\n\r\n" % len(BODY)) + BODY

    async def handle(reader, writer):
        try:
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            writer.write(response)
            await asyncio.wait_for(writer.drain(), 30)
        except Exception:
            pass
        finally:
            try:
                writer.close()
            except Exception:
                pass

    async def serve():
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((HOST, port))
        sock.listen(4096)
        server = await asyncio.start_server(handle, sock=sock, ssl=ctx, backlog=4096,
                                            ssl_handshake_timeout=30)
        async with server:
            await server.serve_forever()

    loop = asyncio.new_event_loop()
    loop.set_exception_handler(lambda loop, context: None)
    loop.run_until_complete(serve())


# ------------------------------------------------------------------ helpers

def free_port():
    s = socket.socket()
    s.bind((HOST, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def proc_fds(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return -1


def proc_rss_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


def proc_cpu_s(pid):
    """utime + stime of a process, in seconds."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def listen_overflows():
    """The host's TcpExt ListenOverflows counter (connections a full accept queue
    dropped), or -1."""
    try:
        with open("/proc/net/netstat") as f:
            lines = f.read().splitlines()
        for names, values in zip(lines[0::2], lines[1::2]):
            if names.startswith("TcpExt:"):
                return int(dict(zip(names.split(), values.split()))["ListenOverflows"])
    except (OSError, KeyError, ValueError):
        pass
    return -1


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def percentile(values, p):
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))]


def make_client_hellos(count=8):
    """Real ClientHello records (TLS 1.3 and 1.2 offers) from Python's ssl."""
    hellos = []
    for i in range(count):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        if i % 2:
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(inc, out, server_hostname=SNI)
        try:
            obj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        hellos.append(out.read())
    return hellos


# ------------------------------------------------------------------ tlsfault

class Proxy:
    def __init__(self, binary, conf, workdir, name):
        self.conf = conf
        self.err_path = os.path.join(workdir, name + ".stderr")
        self.err_file = open(self.err_path, "wb")
        env = dict(os.environ)
        supp = os.path.join(SRCDIR, "tests", "lsan.supp")
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        env.setdefault("LSAN_OPTIONS", "suppressions=%s" % supp)
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
        self.p = subprocess.Popen([binary, "-c", conf], stdin=subprocess.DEVNULL,
                                  stdout=self.err_file, stderr=self.err_file,
                                  cwd=workdir, env=env, start_new_session=True)

    @property
    def pid(self):
        return self.p.pid

    def alive(self):
        return self.p.poll() is None

    def signal(self, sig):
        if self.alive():
            os.kill(self.p.pid, sig)

    def stop(self, timeout=GRACE + 20):
        self.signal(signal.SIGTERM)
        try:
            rc = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.p.pid, signal.SIGKILL)
            rc = self.p.wait()
        self.err_file.close()
        return rc

    def kill(self):
        if self.alive():
            try:
                os.killpg(self.p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.p.wait()

    def stderr(self):
        if not self.err_file.closed:
            self.err_file.flush()
        with open(self.err_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_ready(self, timeout=15.0):
        """Waits for "ready" on stderr: signal handlers are in place from then on."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.alive():
            if " ready" in self.stderr():
                return True
            time.sleep(0.05)
        return False

    def sanitizer_report(self):
        text = self.stderr()
        for mark in SANITIZER_MARKS:
            at = text.find(mark)
            if at >= 0:
                return text[max(0, at - 200):at + 3000]
        return None


FAULT_RULES = """
  { name = "delay"; fault = "delay"; ms = 100; jitter = 50; dir = "s2c";
    match = { listener = "soak"; probability = 0.05; seed = 11; }; },
  { name = "reset"; fault = "reset"; after_bytes = 200;
    match = { listener = "soak"; probability = 0.03; seed = 12; }; },
  { name = "close"; fault = "close"; dir = "s2c"; after_bytes = 100;
    match = { listener = "soak"; probability = 0.03; seed = 13; }; },
  { name = "alert"; fault = "alert";
    match = { listener = "soak"; probability = 0.03; seed = 14; }; },
  { name = "corrupt"; fault = "corrupt"; dir = "s2c"; record = 3;
    match = { listener = "soak"; probability = 0.03; seed = 15; }; },
  { name = "append"; fault = "append-bytes"; dir = "s2c"; record = 0;
    match = { listener = "soak"; probability = 0.03; seed = 16; }; },
  { name = "no-hello"; fault = "drop-server-hello";
    match = { listener = "soak"; probability = 0.01; seed = 17; }; },
  { name = "slice"; fault = "slice"; size = 7; pause = 1;
    match = { listener = "soak"; probability = 0.02; seed = 18; }; },
  { name = "fragment"; fault = "fragment"; size = 16;
    match = { listener = "soak"; probability = 0.02; seed = 19; }; },
  { name = "truncate"; fault = "truncate"; dir = "s2c"; record = 2; keep = 3;
    match = { listener = "soak"; probability = 0.02; seed = 20; }; },
  { name = "duplicate"; fault = "duplicate"; dir = "s2c"; record = 1;
    match = { listener = "soak"; probability = 0.02; seed = 21; }; },
  { name = "strip-sni"; fault = "strip-sni";
    match = { listener = "soak"; probability = 0.02; seed = 22; }; },
  { name = "downgrade"; fault = "downgrade";
    match = { listener = "soak"; probability = 0.02; seed = 23; }; },
  { name = "stall"; fault = "stall"; dir = "s2c"; after_bytes = 50;
    match = { listener = "soak"; probability = 0.005; seed = 24; }; }
"""

# The mitm listener's rules: its certificate faults, a version limit, and network faults.
MITM_FAULT_RULES = """
  { name = "m-expired"; fault = "cert-expired";
    match = { listener = "mitm"; probability = 0.04; seed = 31; }; },
  { name = "m-wrong-host"; fault = "cert-wrong-host";
    match = { listener = "mitm"; probability = 0.04; seed = 32; }; },
  { name = "m-self-signed"; fault = "cert-self-signed";
    match = { listener = "mitm"; probability = 0.03; seed = 33; }; },
  { name = "m-no-intermediate"; fault = "cert-no-intermediate";
    match = { listener = "mitm"; probability = 0.03; seed = 34; }; },
  { name = "m-versions"; fault = "server-versions"; min = "TLS1.2"; max = "TLS1.2";
    match = { listener = "mitm"; probability = 0.04; seed = 35; }; },
  { name = "m-reset"; fault = "reset"; after_bytes = 300;
    match = { listener = "mitm"; probability = 0.03; seed = 36; }; },
  { name = "m-close"; fault = "close"; dir = "s2c"; after_bytes = 150;
    match = { listener = "mitm"; probability = 0.03; seed = 37; }; },
  { name = "m-slice"; fault = "slice"; size = 9; pause = 1;
    match = { listener = "mitm"; probability = 0.03; seed = 38; }; }
"""


def is_sanitized(binary):
    """Whether the binary is built with AddressSanitizer (its RSS then says little:
    the quarantine keeps freed memory, so the RSS checks only report)."""
    try:
        with open(binary, "rb") as f:
            return b"__asan_init" in f.read()
    except OSError:
        return False


def write_conf(path, soak_port, clean_port, origin_port, json_path, rules, delay_ms=100,
               mitm_port=None, ca_dir=None):
    """The soak's configuration; with mitm_port, a third listener "mitm" that
    terminates TLS with certificates forged by the lab CA in ca_dir."""
    mitm = ""
    if mitm_port is not None:
        mitm = (',\n  { name = "mitm"; listen = "%s:%d"; upstream = "%s:%d"; mode = "mitm"; }'
                % (HOST, mitm_port, HOST, origin_port))
        rules = rules + "," + MITM_FAULT_RULES
    text = """# written by tests/soak/soak.py
workers = 2;
listeners = (
  { name = "soak"; listen = "%s:%d"; upstream = "%s:%d"; },
  { name = "clean"; listen = "%s:%d"; upstream = "%s:%d"; }%s
);
timeouts = { connect = 5; handshake = %g; idle = %g; grace = %g; };
log = { text = "none"; json = "%s"; level = "info"; };
faults = (%s);
""" % (HOST, soak_port, HOST, origin_port, HOST, clean_port, HOST, origin_port, mitm,
       HANDSHAKE_TIMEOUT, IDLE_TIMEOUT, GRACE, json_path, rules.replace("ms = 100;", "ms = %d;" % delay_ms))
    if ca_dir is not None:
        text += 'ca = { dir = "%s"; };\n' % ca_dir
    with open(path, "w") as f:
        f.write(text)


def parse_ts(ts):
    """An event's "ts" (RFC 3339, UTC) as seconds since the epoch."""
    try:
        return calendar.timegm(time.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S")) + float(
            "0" + ts[19:].rstrip("Z"))
    except (TypeError, ValueError):
        return 0.0


def read_events(path, details=None):
    """flow_start / flow_end / fault events of a JSON log, without loading it all.
    details (a dict) receives client address -> [(end time, flow, close, duration_ms,
    error, faults fired, non_tls preview)] for every flow_end."""
    starts, ends, faults = {}, {}, collections.Counter()
    non_tls = {}
    bad_lines = 0
    with open(path, "rb") as f:
        for raw in f:
            if (b'"flow_start"' in raw or b'"flow_end"' in raw or b'"event":"fault"' in raw or
                    (details is not None and b'"event":"non_tls"' in raw)):
                try:
                    ev = json.loads(raw)
                except ValueError:
                    bad_lines += 1
                    continue
                kind = ev.get("event")
                if kind == "flow_start":
                    starts[ev["flow"]] = ev.get("client")
                elif kind == "flow_end":
                    ends[ev["flow"]] = ev.get("client")
                    if details is not None:
                        details.setdefault(ev.get("client"), []).append((
                            parse_ts(ev.get("ts")), ev["flow"], ev.get("close"),
                            ev.get("duration_ms"), ev.get("error"),
                            [x.get("fault") for x in ev.get("faults", [])],
                            non_tls.get(ev["flow"])))
                elif kind == "fault":
                    faults[ev.get("fault") or ev.get("rule") or "?"] += 1
                elif kind == "non_tls":
                    non_tls[ev["flow"]] = ev.get("preview")
    return starts, ends, faults, bad_lines


def flow_of(details, port, when):
    """The flow_end of the client on port that ended nearest to when (ports are reused)."""
    rows = details.get("%s:%s" % (HOST, port)) or []
    return min(rows, key=lambda r: abs(r[0] - when), default=None)


# ------------------------------------------------------------------ clients

class Stats:
    def __init__(self):
        self.kinds = collections.Counter()
        self.outcomes = collections.Counter()
        self.completed_ports = collections.Counter()
        self.listeners = collections.Counter()     # clients per listener
        self.listeners_ok = collections.Counter()  # of which completed a request
        self.bugs = {}

    def add(self, kind, outcome, port=None, listener="soak"):
        self.kinds[kind] += 1
        self.outcomes[(kind, outcome)] += 1
        self.listeners[listener] += 1
        if outcome == "ok":
            self.listeners_ok[listener] += 1
        if outcome == "ok" and port:
            self.completed_ports[port] += 1


REQUEST = b"GET / HTTP/1.0\r\nHost: " + SNI.encode() + b"\r\n\r\n"


def client_ctx(max12=False):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if max12:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


CTX13 = client_ctx()
CTX12 = client_ctx(True)


def linger_rst(sock):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def tls_request(port, ctx, rst_after_handshake=False, timeout=10.0):
    """A full TLS request; returns (outcome, local port)."""
    writer = None
    lport = None
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        try:
            await asyncio.wait_for(loop.sock_connect(sock, (HOST, port)), timeout)
            lport = sock.getsockname()[1]
        except BaseException:
            sock.close()
            raise
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(sock=sock, ssl=ctx, server_hostname=SNI,
                                    ssl_handshake_timeout=timeout), timeout)
        if rst_after_handshake:
            tsock = writer.get_extra_info("socket")
            if tsock is None:  # already closed by the other side
                return "tls-error", lport
            linger_rst(tsock)
            writer.transport.abort()
            writer = None
            return "aborted", lport
        writer.write(REQUEST)
        data = await asyncio.wait_for(reader.read(-1), timeout)
        if data.startswith(b"HTTP/1.0 200 OK") and data.endswith(BODY):
            return "ok", lport
        return "short", lport
    except (ssl.SSLError, ConnectionError, asyncio.IncompleteReadError):
        return "tls-error", lport
    except asyncio.TimeoutError:
        return "timeout", lport
    except OSError:
        return "os-error", lport
    finally:
        if writer is not None:
            writer.transport.abort()
        elif rst_after_handshake is not None:
            sock.close()  # the transport's, if there was one, is closed already


async def raw_client(port, hellos, how, rng, timeout=10.0):
    """The custom client that misbehaves: returns its outcome."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(loop.sock_connect(sock, (HOST, port)), timeout)
        hello = rng.choice(hellos)
        if how == "partial-hello":
            await loop.sock_sendall(sock, hello[:rng.randrange(1, len(hello))])
            if rng.random() < 0.5:
                await asyncio.sleep(rng.random() * 0.2)
        elif how == "after-server-hello":
            await loop.sock_sendall(sock, hello)
            got = b""
            while True:
                chunk = await asyncio.wait_for(loop.sock_recv(sock, 65536), timeout)
                if not chunk:
                    break
                got += chunk
                if len(got) >= 5 and len(got) >= 5 + (got[3] << 8 | got[4]):
                    break
        elif how == "garbage":
            junk = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 600)))
            if rng.random() < 0.5:
                junk = b"\x16\x03\x01" + junk
            await loop.sock_sendall(sock, junk)
            try:
                await asyncio.wait_for(loop.sock_recv(sock, 65536), 0.3)
            except asyncio.TimeoutError:
                pass
        elif how == "rst-early":
            if rng.random() < 0.5:
                await loop.sock_sendall(sock, hello[:rng.randrange(1, len(hello))])
            linger_rst(sock)
        return "aborted"
    except asyncio.TimeoutError:
        return "timeout"
    except OSError:
        return "os-error"
    finally:
        sock.close()


async def curl_client(port, timeout=10):
    p = await asyncio.create_subprocess_exec(
        "curl", "-sk", "--max-time", str(timeout), "-o", "/dev/null", "-w", "%{http_code}",
        "--resolve", "%s:%d:%s" % (SNI, port, HOST), "https://%s:%d/" % (SNI, port),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    out, _ = await p.communicate()
    return "ok" if out.strip() == b"200" else "failed"


async def s_client(port, timeout=10):
    p = await asyncio.create_subprocess_exec(
        "openssl", "s_client", "-connect", "%s:%d" % (HOST, port), "-servername", SNI, "-quiet",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL)
    try:
        out, _ = await asyncio.wait_for(p.communicate(REQUEST), timeout)
    except asyncio.TimeoutError:
        p.kill()
        await p.wait()
        return "timeout"
    return "ok" if out.startswith(b"HTTP/1.0 200 OK") and out.endswith(BODY) else "failed"


MIX = [  # kind, weight
    ("py-tls13", 50), ("py-tls12", 10), ("curl", 4), ("s_client", 3),
    ("partial-hello", 7), ("after-server-hello", 7), ("garbage", 5), ("rst-early", 6),
    ("rst-after-handshake", 8),
]


async def one_client(kind, port, hellos, rng, stats, listener="soak"):
    lport = None
    if kind == "py-tls13":
        outcome, lport = await tls_request(port, CTX13)
    elif kind == "py-tls12":
        outcome, lport = await tls_request(port, CTX12)
    elif kind == "rst-after-handshake":
        outcome, lport = await tls_request(port, CTX13 if rng.random() < 0.5 else CTX12,
                                           rst_after_handshake=True)
    elif kind == "curl":
        outcome = await curl_client(port)
    elif kind == "s_client":
        outcome = await s_client(port)
    else:
        outcome = await raw_client(port, hellos, kind, rng)
    stats.add(kind, outcome, lport, listener)


async def drive(port, n, concurrency, hellos, seed, deadline=None, kinds=None,
                on_progress=None, sampler=None, mitm_port=None, mitm_share=0.0):
    """n clients, concurrency in flight, a mitm_share of them to mitm_port (the
    same mix of clients); returns (Stats, launched, seconds)."""
    rng = random.Random(seed)
    stats = Stats()
    population = [k for k, _ in (kinds or MIX)]
    weights = [w for _, w in (kinds or MIX)]
    sem = asyncio.Semaphore(concurrency)
    tasks = set()
    launched = 0
    t0 = time.monotonic()
    for i in range(n):
        if deadline is not None and time.monotonic() >= deadline:
            break
        await sem.acquire()
        kind = rng.choices(population, weights)[0]
        to_mitm = mitm_port is not None and rng.random() < mitm_share

        async def run(kind=kind, r=random.Random(rng.getrandbits(64)), to_mitm=to_mitm):
            try:
                await one_client(kind, mitm_port if to_mitm else port, hellos, r, stats,
                                 "mitm" if to_mitm else "soak")
            except Exception as e:  # noqa: BLE001 - counted, never fatal
                stats.add(kind, "client-bug:%s" % type(e).__name__)
                stats.bugs.setdefault(type(e).__name__, traceback.format_exc())
            finally:
                sem.release()

        t = asyncio.ensure_future(run())
        tasks.add(t)
        t.add_done_callback(tasks.discard)
        launched += 1
        if on_progress is not None:
            on_progress(launched)
        if sampler is not None and launched % 200 == 0:
            sampler()
    if tasks:
        await asyncio.gather(*list(tasks))
    return stats, launched, time.monotonic() - t0


# ------------------------------------------------------------------ hostile

async def hostile_client(port, how, hellos, rng, results, hold, label=None):
    """Connects and misbehaves until the proxy closes; records how long that took
    (under label, default how)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(loop.sock_connect(sock, (HOST, port)), 30)
        lport = sock.getsockname()[1]
    except (OSError, asyncio.TimeoutError):
        results.append((label or how, "connect-failed", None, None, time.time()))
        sock.close()
        return
    t0 = time.monotonic()
    payload = b""
    if how == "trickle":
        payload = rng.choice(hellos)
    elif how == "record-64k":
        payload = b"\x16\x03\x01\xff\xff\x01\x00\xff\xfb" + bytes(4096)
    elif how == "hello-16mib":
        # A whole first record whose handshake header claims 16 MiB, then more records.
        first_body = b"\x01\xff\xff\xff\x03\x03" + bytes(16384 - 6)
        payload = (b"\x16\x03\x01\x40\x00" + first_body) * 2
    sent = 0
    outcome = "still-open"
    try:
        if how in ("record-64k", "hello-16mib"):
            # The headers and a first part at once, then one byte a second.
            first = 4105 if how == "record-64k" else 5 + 16384
            await loop.sock_sendall(sock, payload[:first])
            sent = first
        while time.monotonic() - t0 < hold:
            try:
                chunk = await asyncio.wait_for(loop.sock_recv(sock, 65536), 1.0)
                if not chunk:
                    outcome = "closed"
                    break
                continue  # an alert or error page: keep reading until the close
            except asyncio.TimeoutError:
                pass
            if how != "silent" and sent < len(payload):
                await loop.sock_sendall(sock, payload[sent:sent + 1])
                sent += 1
    except (ConnectionResetError, BrokenPipeError):
        outcome = "reset"
    except OSError:
        outcome = "os-error"
    finally:
        sock.close()
    results.append((label or how, outcome, time.monotonic() - t0, lport, time.time()))


async def curl_latency(port, count, pause=0.05):
    """count sequential curls (TLS 1.2: with TLS 1.3 this Python origin answers about
    half of curl's requests 40 ms late, direct or through tlsfault, which would drown
    the comparison); returns (seconds of the successful ones, failures)."""
    times = []
    failures = 0
    for _ in range(count):
        p = await asyncio.create_subprocess_exec(
            "curl", "-sk", "--tls-max", "1.2", "--max-time", "10", "-o", "/dev/null",
            "-w", "%{http_code} %{time_total}",
            "--resolve", "%s:%d:%s" % (SNI, port, HOST), "https://%s:%d/" % (SNI, port),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        out, _ = await p.communicate()
        parts = out.decode().split()
        if len(parts) == 2 and parts[0] == "200":
            times.append(float(parts[1]))
        else:
            failures += 1
        await asyncio.sleep(pause)
    return times, failures


async def hostile_phase(proxy, soak_port, clean_port, n, hellos, seed, rss_samples,
                        mitm_port=None):
    """n hostile clients, every fifth to mitm_port when there is one (its kinds
    labelled "mitm/..."); returns (results, seconds to open, curl times, failures)."""
    rng = random.Random(seed)
    kinds = ["silent", "trickle", "record-64k", "hello-16mib"]
    results = []
    hold = HANDSHAKE_TIMEOUT + 8.0
    stop_sampling = asyncio.Event()

    async def sample():
        while not stop_sampling.is_set():
            rss_samples.append(proc_rss_kib(proxy.pid))
            await asyncio.sleep(0.2)

    sampler = asyncio.ensure_future(sample())
    tasks = []
    t0 = time.monotonic()
    # Opened in batches, so that the accept queue is not the thing measured.
    for i in range(n):
        how = kinds[i % len(kinds)]
        port, label = soak_port, how
        if mitm_port is not None and i % 5 == 4:  # 4 and 5 coprime: every kind, both listeners
            port, label = mitm_port, "mitm/" + how
        tasks.append(asyncio.ensure_future(
            hostile_client(port, how, hellos, random.Random(rng.getrandbits(64)), results,
                           hold, label)))
        if i % 250 == 249:
            await asyncio.sleep(0.05)
    opened = time.monotonic() - t0
    probe = asyncio.ensure_future(curl_latency(clean_port, 15, 0.1))
    await asyncio.gather(*tasks)
    times, failures = await probe
    stop_sampling.set()
    await sampler
    return results, opened, times, failures


# ------------------------------------------------------------------ phases

def wait_idle(proxy, want_fds, timeout):
    """Waits until the proxy's fd count is at most want_fds (+2) and steady."""
    deadline = time.monotonic() + timeout
    last, steady_since = None, time.monotonic()
    while time.monotonic() < deadline:
        n = proc_fds(proxy.pid)
        if n != last:
            last, steady_since = n, time.monotonic()
        if want_fds is not None and n <= want_fds + 2 and time.monotonic() - steady_since > 1.0:
            return n
        if want_fds is None and time.monotonic() - steady_since > 2.0:
            return n
        time.sleep(0.2)
    return proc_fds(proxy.pid)


class Checks:
    def __init__(self):
        self.items = []

    def check(self, ok, what):
        self.items.append((bool(ok), what))
        log("%s: %s" % ("PASS" if ok else "FAIL", what))
        return ok

    def note(self, ok, what):
        """A figure that is reported but not checked (RSS under ASan)."""
        log("INFO: %s (%s; not checked under ASan)" % (what, "would pass" if ok else "would fail"))
        return ok

    def failed(self):
        return [w for ok, w in self.items if not ok]


def summarize_stats(stats):
    rows = []
    for kind, _ in MIX:
        if not stats.kinds[kind]:
            continue
        outs = {o: c for (k, o), c in stats.outcomes.items() if k == kind}
        rows.append("    %-20s %6d  %s" % (kind, stats.kinds[kind], ", ".join(
            "%s %d" % (o, c) for o, c in sorted(outs.items(), key=lambda x: -x[1]))))
    return "\n".join(rows)


def main_run(args, binary, workdir, hellos, origin_port, checks, figures):
    soak_port, clean_port = free_port(), free_port()
    mitm_port = free_port() if args.mitm_share > 0 else None
    ca_dir = None
    if mitm_port is not None:
        ca_dir = os.path.join(workdir, "lab-ca")
        r = subprocess.run([binary, "--ca-init", ca_dir], capture_output=True, text=True)
        if not checks.check(r.returncode == 0, "the lab CA for the mitm listener is made "
                            "(tlsfault --ca-init)"):
            log(r.stdout + r.stderr)
            return
    json_path = os.path.join(workdir, "soak.jsonl")
    conf = os.path.join(workdir, "soak.conf")
    write_conf(conf, soak_port, clean_port, origin_port, json_path, FAULT_RULES,
               mitm_port=mitm_port, ca_dir=ca_dir)
    r = subprocess.run([binary, "-c", conf, "-t"], capture_output=True, text=True)
    if not checks.check(r.returncode == 0, "the soak configuration is valid (tlsfault -t)"):
        log(r.stdout + r.stderr)
        return
    proxy = Proxy(binary, conf, workdir, "soak")
    try:
        if not checks.check(proxy.wait_ready() and wait_port(soak_port) and wait_port(clean_port)
                            and (mitm_port is None or wait_port(mitm_port)),
                            "tlsfault is ready and listens"):
            log(proxy.stderr())
            return
        time.sleep(0.5)
        figures["fds_start"] = proc_fds(proxy.pid)
        figures["rss_start"] = proc_rss_kib(proxy.pid)

        warm = min(2000, max(1000, args.connections // 10))
        log("warm-up: %d connections" % warm)
        asyncio.run(drive(soak_port, warm, args.concurrency, hellos, args.seed,
                          mitm_port=mitm_port, mitm_share=args.mitm_share))
        figures["fds_base"] = wait_idle(proxy, figures["fds_start"], IDLE_TIMEOUT + 15)
        figures["rss_warm"] = proc_rss_kib(proxy.pid)
        log("baseline: %d fds (at start %d), VmRSS %d KiB (at start %d KiB)" % (
            figures["fds_base"], figures["fds_start"], figures["rss_warm"], figures["rss_start"]))

        deadline = time.monotonic() + args.minutes * 60 if args.minutes else None
        peak = [0]
        progress_every = max(1000, args.connections // 10)

        def sampler():
            peak[0] = max(peak[0], proc_rss_kib(proxy.pid))

        def progress(k):
            if k % progress_every == 0:
                log("  %d connections launched, %d fds, VmRSS %d KiB" % (
                    k, proc_fds(proxy.pid), proc_rss_kib(proxy.pid)))

        log("soak: %d connections, %d in flight%s" % (
            args.connections, args.concurrency,
            ", for at most %g minutes" % args.minutes if args.minutes else ""))
        cpu0 = proc_cpu_s(proxy.pid)
        stats, launched, secs = asyncio.run(drive(
            soak_port, args.connections, args.concurrency, hellos, args.seed + 1, deadline,
            on_progress=progress, sampler=sampler, mitm_port=mitm_port,
            mitm_share=args.mitm_share))
        figures["cpu_soak"] = proc_cpu_s(proxy.pid) - cpu0
        figures["connections"] = launched
        figures["soak_seconds"] = secs
        figures["stats"] = stats
        figures["rss_peak_soak"] = peak[0]
        if launched < args.connections:
            log("the --minutes deadline stopped the soak at %d of %d connections" % (
                launched, args.connections))
        checks.check(proxy.alive(), "tlsfault alive after %d connections" % launched)
        if mitm_port is not None:
            # Its own rules fail a sixth of them on purpose, the aborting clients a third.
            m, m_ok = stats.listeners["mitm"], stats.listeners_ok["mitm"]
            checks.check(m > 0 and m_ok >= m // 4,
                         "the mitm listener served its share: %d of %d clients completed a "
                         "request" % (m_ok, m))
        figures["fds_after"] = wait_idle(proxy, figures["fds_base"], IDLE_TIMEOUT + 20)
        time.sleep(1.0)
        figures["rss_after"] = proc_rss_kib(proxy.pid)
        checks.check(abs(figures["fds_after"] - figures["fds_base"]) <= 2,
                     "fds back to the baseline after idle: %d vs %d" % (
                         figures["fds_after"], figures["fds_base"]))
        rss_check = checks.check if not args.asan else checks.note
        rss_check(figures["rss_after"] <= figures["rss_warm"] * 1.10,
                     "VmRSS within 10%% of the warmed-up baseline: %d KiB vs %d KiB (%+.1f%%)" % (
                         figures["rss_after"], figures["rss_warm"],
                         100.0 * (figures["rss_after"] - figures["rss_warm"]) / figures["rss_warm"]))

        if args.hostile > 0:
            log("latency before abuse: 15 curls through the clean listener")
            normal, normal_fail = asyncio.run(curl_latency(clean_port, 15))
            log("hostile: %d clients (silent, one byte a second, 64 KiB record header, "
                "16 MiB ClientHello)" % args.hostile)
            rss_samples = []
            rss_before = proc_rss_kib(proxy.pid)
            cpu0 = proc_cpu_s(proxy.pid)
            overflows0 = listen_overflows()
            results, opened, abuse, abuse_fail = asyncio.run(hostile_phase(
                proxy, soak_port, clean_port, args.hostile, hellos, args.seed + 2, rss_samples,
                mitm_port))
            figures["hostile"] = results
            figures["cpu_hostile"] = proc_cpu_s(proxy.pid) - cpu0
            figures["listen_overflows"] = listen_overflows() - overflows0
            figures["hostile_open_s"] = opened
            figures["lat_normal"] = normal
            figures["lat_abuse"] = abuse
            figures["rss_hostile_before"] = rss_before
            figures["rss_hostile_peak"] = max(rss_samples) if rss_samples else -1
            checks.check(proxy.alive(), "tlsfault alive after the hostile clients")
            limit = HANDSHAKE_TIMEOUT + 3.0
            by_kind = collections.defaultdict(list)
            for how, outcome, secs, _, _ in results:
                by_kind[how].append((outcome, secs))
            late = [r for r in results
                    if r[1] not in ("closed", "reset") or r[2] is None or r[2] > limit]
            figures["hostile_late"] = late
            figures["hostile_by_kind"] = by_kind
            checks.check(not late, "every hostile client closed by the proxy within %.0f s "
                         "(%d of %d late or never)" % (limit, len(late), len(results)))
            if late:
                log("late: %s" % collections.Counter(r[:2] for r in late).most_common(8))
            grow = figures["rss_hostile_peak"] - rss_before
            per = grow * 1.0 / max(1, args.hostile)
            rss_check(per < 64, "VmRSS bounded under abuse: peak %d KiB, +%d KiB "
                         "(%.1f KiB per hostile client)" % (figures["rss_hostile_peak"], grow, per))
            med_n = statistics.median(normal) if normal else float("nan")
            med_a = statistics.median(abuse) if abuse else float("nan")
            checks.check(normal and abuse and not normal_fail and not abuse_fail and
                         med_a <= 2 * med_n,
                         "curl meanwhile: median %.1f ms under abuse vs %.1f ms normal "
                         "(%d / %d failures)" % (1000 * med_a, 1000 * med_n, abuse_fail,
                                                 normal_fail))
            figures["fds_after_hostile"] = wait_idle(proxy, figures["fds_base"], IDLE_TIMEOUT + 20)
            figures["rss_after_hostile"] = proc_rss_kib(proxy.pid)
            checks.check(abs(figures["fds_after_hostile"] - figures["fds_base"]) <= 2,
                         "fds back to the baseline after the hostile clients: %d vs %d" % (
                             figures["fds_after_hostile"], figures["fds_base"]))
            # More waves: the memory the first one took is reused, not added to.
            peaks = [figures["rss_hostile_peak"]]
            late_more = []
            abuse_more = []
            for wave in range(2, args.hostile_waves + 1):
                log("hostile, wave %d: %d clients" % (wave, args.hostile))
                samples = []
                results_w, _, abuse_w, _ = asyncio.run(hostile_phase(
                    proxy, soak_port, clean_port, args.hostile, hellos, args.seed + 10 + wave,
                    samples, mitm_port))
                peaks.append(max(samples) if samples else -1)
                abuse_more += abuse_w
                late_more += [r for r in results_w if r[1] not in ("closed", "reset") or
                              r[2] is None or r[2] > limit]
                wait_idle(proxy, figures["fds_base"], IDLE_TIMEOUT + 20)
                log("  wave %d: peak VmRSS %d KiB, after %d KiB" % (wave, peaks[-1],
                                                                 proc_rss_kib(proxy.pid)))
            figures["rss_hostile_peaks"] = peaks
            figures["lat_abuse2"] = abuse_more
            if args.hostile_waves > 1:
                checks.check(proxy.alive() and not late_more,
                             "waves 2..%d: alive, every hostile client closed within %.0f s "
                             "(%d late)" % (args.hostile_waves, limit, len(late_more)))
                if late_more:
                    log("late: %s" % collections.Counter(r[:2] for r in late_more).most_common(8))
                figures["hostile_late"] = late + late_more
                # Allocator slack (glibc keeps freed memory; the first peak varies with how
                # many flows overlap): the last wave may not peak 50% above the first.
                rss_check(peaks[-1] <= peaks[0] * 1.5,
                             "VmRSS bounded over %d waves: peaks %s KiB" % (
                                 len(peaks), ", ".join(str(p) for p in peaks)))
                figures["fds_after_hostile2"] = wait_idle(proxy, figures["fds_base"],
                                                          IDLE_TIMEOUT + 20)
                figures["rss_after_hostile2"] = proc_rss_kib(proxy.pid)
                checks.check(abs(figures["fds_after_hostile2"] - figures["fds_base"]) <= 2,
                             "fds back to the baseline after the last wave: %d vs %d" % (
                                 figures["fds_after_hostile2"], figures["fds_base"]))

        rc = proxy.stop()
        checks.check(rc == 0, "tlsfault exits 0 on SIGTERM (got %r)" % rc)
        report = proxy.sanitizer_report()
        checks.check(report is None, "no sanitizer report on tlsfault's stderr")
        if report:
            log(report)
        details = {}
        starts, ends, faults, bad = read_events(json_path, details)
        late_flows = collections.Counter()
        for how, outcome, secs, lport, when in figures.get("hostile_late", []):
            row = flow_of(details, lport, when)
            if row is None:
                late_flows[(how, "no flow_end found")] += 1
                continue
            _, flow, close, ms, error, fired, preview = row
            # A flow much shorter than the client's wait started late: the connection sat
            # in (or was dropped from) a full accept queue before tlsfault saw it.
            queued = secs is not None and (ms or 0) / 1000.0 < secs - 3.0
            late_flows[(how, "close %s after about %s s%s%s%s" % (
                close, round((ms or 0) / 1000.0), ", faults fired %s" % fired if fired else "",
                ", non_tls %s" % preview if preview else "",
                " (accepted about %.0f s after the client connected: the listen queue "
                "overflowed)" % (secs - (ms or 0) / 1000.0) if queued else ""))] += 1
        for (how, what), n in late_flows.most_common(12):
            log("late hostile clients: %d x %s: %s" % (n, how, what))
        figures["late_flows"] = late_flows
        figures["flow_starts"] = len(starts)
        figures["flow_ends"] = len(ends)
        figures["faults"] = faults
        missing = sorted(set(starts) - set(ends))
        checks.check(not missing and not bad,
                     "every flow_start has a flow_end (%d starts, %d ends, %d unreadable lines)"
                     % (len(starts), len(ends), bad))
        if missing:
            log("flows without flow_end: %s" % missing[:20])
        checks.check(sum(faults.values()) > 0, "faults fired: %d" % sum(faults.values()))
    finally:
        proxy.kill()


SPLIT_FAULTS = [
    ("strip-sni", 'fault = "strip-sni";'),
    ("strip-alpn", 'fault = "strip-alpn";'),
    ("downgrade", 'fault = "downgrade";'),
    ("strip-ciphers", 'fault = "strip-ciphers"; pattern = "*CHACHA20*";'),
    ("fragment", 'fault = "fragment"; size = 16;'),
    ("alert", 'fault = "alert";'),
    ("none", None),
]


def split_hello_run(binary, workdir, hellos, checks, figures):
    """A real ClientHello sent in two reads (100 bytes, then the rest 200 ms later) to
    listeners with a rule that rewrites or answers it: tlsfault must count and inspect
    each byte once (flow_end bytes.c2s = what was sent; no non_tls event)."""
    sink = socket.socket()
    sink.bind((HOST, 0))
    sink.listen(64)
    sink.settimeout(0.2)
    stop = [False]
    upstream = []

    def serve():
        while not stop[0]:
            try:
                c, _ = sink.accept()
            except socket.timeout:
                continue
            c.settimeout(0.5)
            data = b""
            try:
                while True:
                    x = c.recv(65536)
                    if not x:
                        break
                    data += x
            except OSError:
                pass
            upstream.append(data)
            c.close()

    # The server's side: a captured TLS 1.2 server flight (leaf + intermediate) sent in
    # two reads, cut inside the Certificate, after the client's first 100 bytes.
    with open(os.path.join(SRCDIR, "tests", "data", "openssl-tls12-ecdhe-rsa.s2c.bin"), "rb") as f:
        flight = f.read()
    fsrv = socket.socket()
    fsrv.bind((HOST, 0))
    fsrv.listen(8)
    fsrv.settimeout(0.2)

    def serve_flight():
        while not stop[0]:
            try:
                c, _ = fsrv.accept()
            except socket.timeout:
                continue
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            c.settimeout(1.0)
            try:
                c.recv(100)
                c.sendall(flight[:200])
                time.sleep(0.2)
                c.sendall(flight[200:])
                time.sleep(0.3)
            except OSError:
                pass
            c.close()

    import threading
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    t2 = threading.Thread(target=serve_flight, daemon=True)
    t2.start()
    ports = {name: free_port() for name, _ in SPLIT_FAULTS}
    ports["strip-intermediates"] = free_port()
    json_path = os.path.join(workdir, "split.jsonl")
    conf = os.path.join(workdir, "split.conf")
    listeners = ",\n".join('  { name = "%s"; listen = "%s:%d"; upstream = "%s:%d"; }' % (
        name, HOST, ports[name], HOST, sink.getsockname()[1]) for name, _ in SPLIT_FAULTS)
    listeners += ',\n  { name = "strip-intermediates"; listen = "%s:%d"; upstream = "%s:%d"; }' % (
        HOST, ports["strip-intermediates"], HOST, fsrv.getsockname()[1])
    rules = ",\n".join('  { name = "r-%s"; %s match = { listener = "%s"; }; }' % (name, rule, name)
                        for name, rule in SPLIT_FAULTS if rule)
    rules += (',\n  { name = "r-strip-intermediates"; fault = "strip-intermediates"; '
              'match = { listener = "strip-intermediates"; }; }')
    with open(conf, "w") as f:
        f.write("listeners = (\n%s\n);\nfaults = (\n%s\n);\n"
                "log = { text = \"none\"; json = \"%s\"; };\n" % (listeners, rules, json_path))
    proxy = Proxy(binary, conf, workdir, "split")
    hello = hellos[0]
    sent = {}
    try:
        if not checks.check(proxy.wait_ready(), "split-hello run: tlsfault is ready"):
            log(proxy.stderr())
            return
        for name, _ in SPLIT_FAULTS:
            c = socket.create_connection((HOST, ports[name]), timeout=5)
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sent[c.getsockname()[1]] = name
            c.sendall(hello[:100])
            time.sleep(0.2)
            c.sendall(hello[100:])
            time.sleep(0.3)
            c.close()
        c = socket.create_connection((HOST, ports["strip-intermediates"]), timeout=5)
        sent[c.getsockname()[1]] = "strip-intermediates"
        c.sendall(hello[:100])
        c.settimeout(1.5)
        try:
            while c.recv(65536):
                pass
        except OSError:
            pass
        c.close()
        time.sleep(0.5)
    finally:
        proxy.stop()
        stop[0] = True
        t.join(2)
        t2.join(2)
        sink.close()
        fsrv.close()
    counted, non_tls = {}, set()
    flows = {}
    with open(json_path) as f:
        for line in f:
            ev = json.loads(line)
            port = int(ev.get("client", ":0").rsplit(":", 1)[1]) if ev.get("client") else None
            if ev["event"] == "flow_start":
                flows[ev["flow"]] = port
            elif ev["event"] == "flow_end" and port in sent:
                counted[sent[port]] = ev["bytes"]["c2s"]
                if sent[port] == "strip-intermediates":
                    counted[sent[port]] = (ev["bytes"]["c2s"], ev["bytes"]["s2c"])
            elif ev["event"] == "non_tls" and flows.get(ev["flow"]) in sent:
                non_tls.add(sent[flows[ev["flow"]]])
    wrong = ["%s: c2s %s, non_tls %s" % (name, counted.get(name), name in non_tls)
             for name, _ in SPLIT_FAULTS if counted.get(name) != len(hello) or name in non_tls]
    figures["split_wrong"] = wrong
    checks.check(not wrong, "a ClientHello in two reads is counted and inspected once under "
                 "every rewriting rule (%d bytes sent; wrong: %s)" % (
                     len(hello), "; ".join(wrong) or "none"))
    got = counted.get("strip-intermediates")
    bad = got != (100, len(flight)) or "strip-intermediates" in non_tls
    checks.check(not bad, "a server flight in two reads is counted and inspected once under "
                 "strip-intermediates (c2s, s2c: %s, want (100, %d); non_tls %s)" % (
                     got, len(flight), "strip-intermediates" in non_tls))


def signal_run(args, binary, workdir, hellos, origin_port, checks, figures):
    soak_port, clean_port = free_port(), free_port()
    json_path = os.path.join(workdir, "signals.jsonl")
    conf = os.path.join(workdir, "signals.conf")
    rules = """
  { name = "delay"; fault = "delay"; ms = 100; dir = "s2c";
    match = { probability = 0.3; seed = 5; }; }
"""
    write_conf(conf, soak_port, clean_port, origin_port, json_path, rules)
    proxy = Proxy(binary, conf, workdir, "signals")
    n = args.signal_connections
    sent = {}
    try:
        if not checks.check(proxy.wait_ready() and wait_port(soak_port),
                            "tlsfault (signals run) is ready and listens"):
            return

        def progress(k):
            if k == n // 3 and "hup" not in sent:
                write_conf(conf, soak_port, clean_port, origin_port, json_path, rules, 150)
                proxy.signal(signal.SIGHUP)
                sent["hup"] = k
            elif k == 2 * n // 3 and "term" not in sent:
                proxy.signal(signal.SIGTERM)
                sent["term"] = k

        kinds = [("py-tls13", 3), ("py-tls12", 1)]
        stats, launched, secs = asyncio.run(drive(soak_port, n, args.concurrency, hellos,
                                                  args.seed + 3, kinds=kinds,
                                                  on_progress=progress))
        try:
            rc = proxy.p.wait(GRACE + 20)
        except subprocess.TimeoutExpired:
            rc = None
        proxy.err_file.close()
        checks.check(rc == 0, "signals run: tlsfault exits 0 after SIGHUP at %s and SIGTERM at "
                     "%s of %d connections (got %r)" % (sent.get("hup"), sent.get("term"), n, rc))
        report = proxy.sanitizer_report()
        checks.check(report is None, "signals run: no sanitizer report")
        if report:
            log(report)
        err = proxy.stderr()
        checks.check("reloaded" in err,
                     "signals run: the SIGHUP reload is logged")
        starts, ends, faults, bad = read_events(json_path)
        completed = stats.completed_ports
        ended_ports = collections.Counter()
        for flow, client in ends.items():
            if client and client.startswith(HOST + ":"):
                ended_ports[int(client.rsplit(":", 1)[1])] += 1
        lost = [p for p, c in completed.items() if ended_ports[p] < c]
        figures["sig_completed"] = sum(completed.values())
        figures["sig_starts"] = len(starts)
        figures["sig_ends"] = len(ends)
        figures["sig_refused"] = sum(c for (k, o), c in stats.outcomes.items() if o != "ok")
        checks.check(not lost and figures["sig_completed"] > 0,
                     "signals run: every completed client's flow has its flow_end "
                     "(%d completed, %d flow_end, %d lost)" % (
                         figures["sig_completed"], len(ends), len(lost)))
        missing = sorted(set(starts) - set(ends))
        checks.check(not missing and not bad,
                     "signals run: every flow_start has a flow_end (%d / %d)" % (
                         len(starts), len(ends)))
    finally:
        proxy.kill()


def print_summary(args, binary, figures, checks, elapsed):
    f = figures
    print()
    print("==== soak summary (%s, %s)" % (time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                         os.path.relpath(binary, SRCDIR)))
    if "connections" in f:
        print("connections:        %d in %.0f s (%.0f/s), %d in flight; warm-up before" % (
            f["connections"], f["soak_seconds"], f["connections"] / max(f["soak_seconds"], 1e-9),
            args.concurrency))
        print(summarize_stats(f["stats"]))
        st = f["stats"]
        print("listeners:          %s" % ", ".join(
            "%s %d (%d completed a request)" % (name, st.listeners[name], st.listeners_ok[name])
            for name in sorted(st.listeners)))
        print("tlsfault CPU:       %.1f s for the soak (%.2f ms per connection)" % (
            f["cpu_soak"], 1000.0 * f["cpu_soak"] / max(1, f["connections"])))
        for name, tb in f["stats"].bugs.items():
            print("client exception %s (the soak client's, not tlsfault's):\n%s" % (name, tb))
    if "faults" in f:
        print("faults fired:       %d (%s)" % (sum(f["faults"].values()), ", ".join(
            "%s %d" % kv for kv in f["faults"].most_common())))
        print("flow_start/end:     %d / %d" % (f["flow_starts"], f["flow_ends"]))
    if "fds_base" in f:
        print("fds:                start %d, warm baseline %d, after soak %s, after hostile %s / %s"
              % (f["fds_start"], f["fds_base"], f.get("fds_after", "-"),
                 f.get("fds_after_hostile", "-"), f.get("fds_after_hostile2", "-")))
        print("VmRSS KiB:          start %d, warm %d, peak during soak %s, after soak %s" % (
            f["rss_start"], f["rss_warm"], f.get("rss_peak_soak", "-"), f.get("rss_after", "-")))
        print("VmRSS KiB, hostile: before %s, wave 1 peak %s, after %s; peaks of the waves %s, "
              "after the last %s" % (
                  f.get("rss_hostile_before", "-"), f.get("rss_hostile_peak", "-"),
                  f.get("rss_after_hostile", "-"),
                  ", ".join(str(p) for p in f.get("rss_hostile_peaks", [])),
                  f.get("rss_after_hostile2", "-")))
    if "hostile" in f:
        print("hostile:            %d clients opened in %.1f s; tlsfault CPU meanwhile %.2f s; "
              "listen queue overflows on the host meanwhile %d" % (
                  len(f["hostile"]), f["hostile_open_s"], f["cpu_hostile"],
                  f.get("listen_overflows", -1)))
        for how, rows in sorted(f["hostile_by_kind"].items()):
            secs = [s for o, s in rows if s is not None and o in ("closed", "reset")]
            outs = collections.Counter(o for o, _ in rows)
            print("    %-12s %5d  %s; closed after p50 %.2f s, max %.2f s" % (
                how, len(rows), ", ".join("%s %d" % kv for kv in outs.most_common()),
                percentile(secs, 50), max(secs) if secs else float("nan")))
        ln, la = f["lat_normal"], f["lat_abuse"]
        la2 = f.get("lat_abuse2") or []
        print("curl latency:       normal median %.1f ms (max %.1f), under abuse median %.1f ms "
              "(max %.1f), later waves median %.1f ms (max %.1f)" % (
                  1000 * statistics.median(ln) if ln else -1, 1000 * max(ln) if ln else -1,
                  1000 * statistics.median(la) if la else -1, 1000 * max(la) if la else -1,
                  1000 * statistics.median(la2) if la2 else -1, 1000 * max(la2) if la2 else -1))
    if "sig_completed" in f:
        print("signals run:        %d completed clients, %d flow_start, %d flow_end, %d not "
              "completed (refused after SIGTERM or delayed past it)" % (
                  f["sig_completed"], f["sig_starts"], f["sig_ends"], f["sig_refused"]))
    failed = checks.failed()
    print("checks:             %d passed, %d failed%s" % (
        len(checks.items) - len(failed), len(failed), "" if not failed else ": " + "; ".join(failed)))
    print("elapsed:            %.0f s" % elapsed)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--connections", type=int, default=50000)
    ap.add_argument("--minutes", type=float, default=20.0,
                    help="stop launching soak connections after this long (0: no limit)")
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--hostile", type=int, default=5000)
    ap.add_argument("--hostile-waves", type=int, default=3,
                    help="waves of hostile clients (the later ones check RSS stays bounded)")
    ap.add_argument("--signal-connections", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--mitm-share", type=float, default=0.2,
                    help="the share of soak clients sent to the mitm listener (0: no mitm "
                    "listener)")
    ap.add_argument("--quick", action="store_true",
                    help="CI size: 2,000 connections, 500 hostile, 300 in the signals run")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--origin", nargs=3, metavar=("PORT", "CERT", "KEY"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.origin:
        origin_main(int(args.origin[0]), args.origin[1], args.origin[2])
        return 0
    if args.quick:
        args.connections, args.hostile, args.signal_connections = 2000, 500, 300
    binary = os.environ.get("TF_BIN") or os.path.join(SRCDIR, "build", "src", "tlsfault")
    binary = os.path.abspath(binary)
    args.asan = is_sanitized(binary)
    if not os.access(binary, os.X_OK):
        log("no tlsfault binary at %s (build first, or set TF_BIN)" % binary)
        return 1
    for tool in ("curl", "openssl"):
        if shutil.which(tool) is None:
            log("%s is needed" % tool)
            return 1
    nofile = raise_nofile()
    need = 3 * args.hostile + 2 * args.concurrency + 200
    if nofile[0] < need:
        log("open-files limit %d is below the %d the hostile phase needs; fewer hostile "
            "clients" % (nofile[0], need))
        args.hostile = max(0, (nofile[0] - 2 * args.concurrency - 200) // 3)

    t0 = time.monotonic()
    workdir = tempfile.mkdtemp(prefix="tfsoak-")
    origins = []
    checks = Checks()
    figures = {}
    try:
        cert, key = os.path.join(workdir, "cert.pem"), os.path.join(workdir, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", cert,
                        "-days", "2", "-subj", "/CN=" + SNI, "-addext",
                        "subjectAltName=DNS:%s,IP:%s" % (SNI, HOST)],
                       check=True, capture_output=True)
        origin_port = free_port()
        for _ in range(2):
            origins.append(subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "--origin", str(origin_port), cert,
                 key], stdin=subprocess.DEVNULL, start_new_session=True))
        if not wait_port(origin_port):
            log("the origin did not start")
            return 1
        hellos = make_client_hellos()
        log("work directory %s; tlsfault %s; origin on %d; open-files limit %d" % (
            workdir, binary, origin_port, nofile[0]))
        split_hello_run(binary, workdir, hellos, checks, figures)
        main_run(args, binary, workdir, hellos, origin_port, checks, figures)
        if args.signal_connections > 0:
            log("signals run: %d connections, SIGHUP at 1/3, SIGTERM at 2/3" %
                args.signal_connections)
            signal_run(args, binary, workdir, hellos, origin_port, checks, figures)
    finally:
        for p in origins:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log("kept %s" % workdir)
    print_summary(args, binary, figures, checks, time.monotonic() - t0)
    return 1 if checks.failed() else 0


if __name__ == "__main__":
    sys.exit(main())
