"""test_verdicts — observe mode in front of real misconfigured servers.

tlsfault runs as a plain passthrough proxy (no fault rules) in front of
servers that are wrong in the ways the troubleshooting guides list:
expired, not yet valid, wrong host, self-signed, untrusted root, missing
intermediate, wrong EKU, SHA-1, RSA-1024 (openssl s_server with
certificates made here by `openssl ca`, dates set with -startdate and
-enddate), TLS 1.0 only, no shared cipher (TLS 1.2 and TLS 1.3), silent (a
TCP server that never answers), reset (RST after the ClientHello),
plaintext (an HTTP answer), SNI required and unknown name (Python ssl with
an sni_callback).  curl, openssl s_client, gnutls-cli and Python's ssl
connect through it, trusting the lab root, with TLS 1.2 and TLS 1.3 where
the server allows both.  Each flow_end's verdict must name the right
cause.

TLS 1.3 hides the certificate: without probe the cause is cert_rejected,
with the client's encrypted alert as evidence; a second tlsfault with
probe on (TLSFAULT_PROBE=1) fetches the chain over a side connection and
names the refined cause.

Every (server, version, client) run has its own listener, so runs go in
parallel and each flow_end is known by its listener.  The table of
verdicts is printed as TAP diagnostics and written to $TF_VERDICT_TABLE
(markdown) when that is set."""

import os
import socket
import ssl
import struct
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tflib  # noqa: E402
from tflib import TCPServer, Tlsfault, fmt_events, run  # noqa: E402

CLIENTS = ["curl", "s_client", "gnutls-cli", "python"]
TITLES = {"curl": "curl", "s_client": "OpenSSL", "gnutls-cli": "GnuTLS", "python": "Python"}
HANG = 2.0           # client patience where the server never answers
TIMEOUT = 10.0       # bound on every other client run
GET = "GET / HTTP/1.0\r\n\r\n"


# ------------------------------------------------------------ certificates

class LabPKI:
    """A trusted root and intermediate, an untrusted pair, and one leaf per
    misconfiguration, all RSA-2048 and SHA-256 unless the case says not."""

    def __init__(self, d):
        self.d = d
        os.makedirs(os.path.join(d, "db"), exist_ok=True)
        self.p = lambda n: os.path.join(d, n)  # noqa: E731
        self.ca = self.p("root.pem")
        with open(self.p("ca.cnf"), "w") as f:
            f.write(CA_CONFIG.replace("@DIR@", d))
        open(self.p("db/index.txt"), "w").close()
        with open(self.p("db/serial"), "w") as f:
            f.write("1000\n")
        self._root("root", "/O=tlsfault verdicts/CN=verdict lab root")
        self._inter("inter", "root", "/O=tlsfault verdicts/CN=verdict lab intermediate")
        self._root("other-root", "/O=somebody else/CN=untrusted root")
        self._inter("other-inter", "other-root", "/O=somebody else/CN=untrusted intermediate")
        day = 86400
        now = time.time()
        soon, later = self._date(now - day), self._date(now + 365 * day)
        self.leaf("good", "inter", soon, later)
        self.leaf("expired", "inter", "20200101000000Z", "20210101000000Z")
        self.leaf("future", "inter", "20400101000000Z", "20410101000000Z")
        self.leaf("wronghost", "inter", soon, later, ext="leaf_wronghost")
        self.leaf("eku", "inter", soon, later, ext="leaf_eku")
        self.leaf("sha1", "inter", soon, later, md="sha1")
        self.leaf("rsa1024", "inter", soon, later, bits=1024)
        self.leaf("untrusted", "other-inter", soon, later)
        self._openssl("req", "-x509", "-new", "-key", self._key("selfsigned"), "-out",
                      self.p("selfsigned.pem"), "-days", "365", "-subj", "/CN=lab.test",
                      "-addext", "subjectAltName=DNS:lab.test",
                      "-addext", "basicConstraints=critical,CA:FALSE")

    @staticmethod
    def _date(t):
        return time.strftime("%Y%m%d%H%M%SZ", time.gmtime(t))

    def _openssl(self, *args):
        r = run(["openssl"] + list(args), timeout=60)
        if r.rc != 0:
            raise RuntimeError("openssl %s failed: %s" % (args[0], r.err))

    def _key(self, name, bits=2048):
        path = self.p(name + ".key")
        self._openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:%d" % bits,
                      "-out", path)
        return path

    def _root(self, name, subj):
        self._openssl("req", "-x509", "-new", "-key", self._key(name), "-out",
                      self.p(name + ".pem"), "-days", "3650", "-subj", subj,
                      "-addext", "basicConstraints=critical,CA:TRUE",
                      "-addext", "keyUsage=critical,keyCertSign,cRLSign")

    def _sign(self, csr, out, issuer, ext, start, end, md="sha256"):
        self._openssl("ca", "-batch", "-config", self.p("ca.cnf"), "-cert",
                      self.p(issuer + ".pem"), "-keyfile", self.p(issuer + ".key"),
                      "-in", csr, "-out", out, "-extensions", ext, "-startdate", start,
                      "-enddate", end, "-md", md, "-notext")

    def _inter(self, name, issuer, subj):
        csr = self.p(name + ".csr")
        self._openssl("req", "-new", "-key", self._key(name), "-out", csr, "-subj", subj)
        self._sign(csr, self.p(name + ".pem"), issuer, "inter", "20250101000000Z",
                   "20350101000000Z")

    def leaf(self, name, issuer, start, end, ext="leaf", md="sha256", bits=2048):
        csr = self.p(name + ".csr")
        self._openssl("req", "-new", "-key", self._key(name, bits), "-out", csr,
                      "-subj", "/O=tlsfault verdicts/CN=lab.test")
        self._sign(csr, self.p(name + ".pem"), issuer, ext, start, end, md)

    def cert(self, name):
        return self.p(name + ".pem"), self.p(name + ".key")


CA_CONFIG = """
[ca]
default_ca = lab
[lab]
database = @DIR@/db/index.txt
serial = @DIR@/db/serial
new_certs_dir = @DIR@/db
default_md = sha256
policy = any
unique_subject = no
copy_extensions = none
email_in_dn = no
[any]
commonName = supplied
organizationName = optional
[inter]
basicConstraints = critical,CA:TRUE,pathlen:0
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[leaf]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:lab.test,DNS:localhost
[leaf_wronghost]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:other.test
[leaf_eku]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = clientAuth
subjectAltName = DNS:lab.test
"""


# ------------------------------------------------------------ servers

class SServer(tflib.SServer):
    """openssl s_server with one of the lab's leaves (chain: intermediate unless None)."""

    def __init__(self, pki, leaf, chain="inter", extra=()):
        cert, key = pki.cert(leaf)
        argv = ["openssl", "s_server", "-accept", "127.0.0.1:0", "-cert", cert, "-key", key,
                "-naccept", "1000000", "-www", "-num_tickets", "0"] + list(extra)
        if chain is not None:
            argv += ["-cert_chain", pki.p(chain + ".pem")]
        self.proc = tflib.Proc(argv, name="s_server-" + leaf)
        m = self.proc.wait_for(r"ACCEPT \S+:(\d+)", stream="out", timeout=10)
        if not m:
            err = self.proc.err
            self.proc.kill()
            raise RuntimeError("s_server %s did not start: %s" % (leaf, err))
        self.port = int(m.group(1))
        self.addr = "127.0.0.1:%d" % self.port


def handler_silent(conn, srv):
    """Accepts, reads, never answers (until the peer leaves)."""
    conn.settimeout(30)
    try:
        while conn.recv(65536):
            pass
    except OSError:
        pass


def handler_reset(conn, srv):
    """Reads the ClientHello, then RST (SO_LINGER 0)."""
    conn.settimeout(10)
    try:
        conn.recv(65536)
    except OSError:
        pass
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def handler_http(conn, srv):
    """What a plain HTTP server says to a ClientHello."""
    conn.settimeout(10)
    try:
        conn.recv(65536)
        body = b"<html><body><h1>400 Bad Request</h1></body></html>\r\n"
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/html\r\n"
                     b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
        conn.shutdown(socket.SHUT_WR)
        conn.recv(65536)
    except OSError:
        pass


def handler_page(conn, srv):
    try:
        conn.recv(65536)
        conn.sendall(b"HTTP/1.0 200 OK\r\n\r\n<html>ok</html>\r\n")
    except OSError:
        pass


def probe_blind_server(pki):
    """TLS 1.3 with the expired leaf for the first connection (the client's);
    silence for every later one (the probe's), which must time out."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert, key = pki.cert("expired")
    chain = pki.p("expired-chain.pem")
    with open(chain, "w") as out:
        for f in (cert, pki.p("inter.pem")):
            with open(f) as src:
                out.write(src.read())
    ctx.load_cert_chain(chain, key)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    seen = []
    lock = threading.Lock()

    def handler(conn, srv):
        with lock:
            seen.append(conn)
            first = len(seen) == 1
        if not first:
            handler_silent(conn, srv)
            return
        try:
            tls = ctx.wrap_socket(conn, server_side=True)
            handler_page(tls, srv)
            tls.close()
        except (ssl.SSLError, OSError):
            pass
    return TCPServer(handler)


def sni_server(pki):
    """Python ssl serving lab.test only: no SNI or another name gets unrecognized_name."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert, key = pki.cert("good")
    chain = pki.p("good-chain.pem")
    with open(chain, "w") as out:
        for f in (cert, pki.p("inter.pem")):
            with open(f) as src:
                out.write(src.read())
    ctx.load_cert_chain(chain, key)

    def pick(sock, name, context):
        if name != "lab.test":
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        return None
    ctx.sni_callback = pick
    return TCPServer(handler_page, tls=ctx)


# ------------------------------------------------------------ clients

def client_run(client, port, pki, version, host="lab.test", sni=True, patience=None, ca=None):
    """One client run through tlsfault's port; returns a short text of what it said."""
    t = patience or TIMEOUT
    if ca is not None:
        pki = type("CA", (), {"ca": ca})
    if client == "curl":
        argv = ["curl", "-sS", "--cacert", pki.ca, "--max-time", str(t)]
        if version == "1.2":
            argv += ["--tlsv1.2", "--tls-max", "1.2"]
        elif version == "1.3":
            argv += ["--tlsv1.3"]
        if sni:
            argv += ["--resolve", "%s:%d:127.0.0.1" % (host, port), "https://%s:%d/" % (host, port)]
        else:
            argv += ["https://127.0.0.1:%d/" % port]
        r = run(argv, timeout=t + 3)
        return "rc %d %s" % (r.rc, r.err.strip()[:160])
    if client == "s_client":
        argv = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-CAfile", pki.ca,
                "-verify_return_error", "-verify_hostname", host]
        argv += ["-servername", host] if sni else ["-noservername"]
        if version == "1.2":
            argv.append("-tls1_2")
        elif version == "1.3":
            argv.append("-tls1_3")
        r = run(argv, input=GET, timeout=t)
        err = [ln for ln in r.err.splitlines() if "error" in ln or "alert" in ln]
        return "rc %d %s" % (r.rc, (err[0] if err else "")[:160])
    if client == "gnutls-cli":
        argv = ["gnutls-cli", "--x509cafile", pki.ca, "-p", str(port)]
        if sni:
            argv += ["--sni-hostname", host, "--verify-hostname", host]
        if version == "1.2":
            argv += ["--priority", "NORMAL:-VERS-ALL:+VERS-TLS1.2"]
        elif version == "1.3":
            argv += ["--priority", "NORMAL:-VERS-ALL:+VERS-TLS1.3"]
        argv.append("127.0.0.1")
        r = tflib.run_fed(argv, GET, r"</HTML>|</html>|\*\*\* ", t)
        err = [ln for ln in (r.out + r.err).splitlines() if ln.startswith("***") or "rror" in ln]
        return "rc %d %s" % (r.rc, (err[0] if err else "")[:160])
    ctx = ssl.create_default_context(cafile=pki.ca)
    if version == "1.2":
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    elif version == "1.3":
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    if not sni:
        ctx.check_hostname = False
    res = tflib.py_client(port, ctx=ctx, host=host if sni else None, timeout=t)
    return tflib.ssl_error_text(res.error)


# ------------------------------------------------------------ the cases

# name: (server kind, versions, expected cause, TLS 1.3 cause without probe, client options)
CERT_CASES = [
    ("good", "good", "handshake_ok"),
    ("expired", "expired", "cert_expired"),
    ("not-yet-valid", "future", "cert_not_yet_valid"),
    ("wrong-host", "wronghost", "cert_wrong_host"),
    ("self-signed", "selfsigned", "cert_self_signed"),
    ("untrusted-root", "untrusted", "cert_untrusted_root"),
    ("missing-intermediate", "good", "cert_missing_intermediate"),
    ("wrong-eku", "eku", "cert_wrong_eku"),
    ("sha1", "sha1", "cert_weak_signature"),
    ("rsa1024", "rsa1024", "cert_weak_key"),
]


def start_servers(pki):
    weak = ["-cipher", "DEFAULT:@SECLEVEL=0"]
    s = {}
    for name, leaf, _ in CERT_CASES:
        chain = {"untrusted-root": "other-inter", "missing-intermediate": None,
                 "self-signed": None}.get(name, "inter")
        s[name] = SServer(pki, leaf, chain, weak if name in ("sha1", "rsa1024") else ())
    s["tls1.0-only"] = SServer(pki, "good", extra=["-tls1", "-cipher", "DEFAULT:@SECLEVEL=0"])
    s["no-shared-cipher-1.2"] = SServer(pki, "good", extra=["-tls1_2", "-cipher",
                                                            "NULL-SHA256:@SECLEVEL=0"])
    s["no-shared-cipher-1.3"] = SServer(pki, "good", extra=["-tls1_3", "-ciphersuites",
                                                            "TLS_AES_128_CCM_8_SHA256"])
    s["silent"] = TCPServer(handler_silent)
    s["reset"] = TCPServer(handler_reset)
    s["plaintext"] = TCPServer(handler_http)
    sni = sni_server(pki)
    s["sni-required"] = sni
    s["unknown-name"] = sni
    s["probe-blind"] = probe_blind_server(pki)
    return s


# The probe's own connection gets no answer: it times out, flow_end says so.
PROBE_EXTRA = [("p-timeout", "probe-blind", "1.3", "python", ("cert_rejected", None), {})]


# Where a client does not fail, or fails where a bystander cannot see it:
# (server, version, client, probe) -> (cause, a finding the verdict must list).
EXCEPTIONS = {
    # GnuTLS takes a 1024-bit RSA key: the handshake is fine, the lint says it.
    ("rsa1024", "1.2", "gnutls-cli", False): ("handshake_ok", "cert_weak_key"),
    ("rsa1024", "1.3", "gnutls-cli", False): ("handshake_ok", None),
    ("rsa1024", "1.3", "gnutls-cli", True): ("handshake_ok", "cert_weak_key"),
    # curl compares the host name after the handshake and leaves without a word
    # (a FIN, or a reset when the server's last bytes are unread): with TLS 1.3
    # and no chain to look at, that is a handshake like any other.
    ("wrong-host", "1.3", "curl", False): (("handshake_ok", "client_aborted"), None),
    # GnuTLS still speaks TLS 1.0.
    ("tls1.0-only", None, "gnutls-cli", False): ("handshake_ok", "protocol_deprecated"),
}


def expected(server, ver, client, cause, probe=False):
    """(cause, finding) for one run."""
    exc = EXCEPTIONS.get((server, ver, client, probe))
    if exc:
        return exc
    if ver == "1.3" and not probe and cause.startswith("cert_"):
        return "cert_rejected", None
    return cause, None


def matrix():
    """[(run id, server name, version, client, expected cause, options)]"""
    runs = []
    for name, _, cause in CERT_CASES:
        for ver in ("1.2", "1.3"):
            for c in CLIENTS:
                runs.append(("%s-%s-%s" % (name, ver, c), name, ver, c,
                             expected(name, ver, c, cause), {}))
    other = [
        ("tls1.0-only", "tls1.0-only", None, "version_mismatch", {}),
        ("no-shared-cipher-1.2", "no-shared-cipher-1.2", None, "no_shared_cipher", {}),
        ("no-shared-cipher-1.3", "no-shared-cipher-1.3", None, "no_shared_cipher", {}),
        ("silent", "silent", None, "server_silent", {"patience": HANG}),
        ("reset", "reset", None, "server_reset_after_hello", {}),
        ("plaintext", "plaintext", None, "not_tls_server", {}),
        ("sni-required", "sni-required", None, "sni_required", {"sni": False}),
        ("unknown-name", "unknown-name", None, "unrecognized_name", {"host": "other.test"}),
    ]
    for title, server, ver, cause, opts in other:
        for c in CLIENTS:
            runs.append(("%s-%s" % (title, c), server, ver, c, expected(server, ver, c, cause),
                         opts))
    return runs


def probe_matrix():
    """TLS 1.3 certificate cases again, through the tlsfault that probes."""
    runs = []
    for name, _, cause in CERT_CASES:
        for c in CLIENTS:
            runs.append(("p-%s-1.3-%s" % (name, c), name, "1.3", c,
                         expected(name, "1.3", c, cause, probe=True), {}))
    return runs


def config_for(runs, servers, json_name, extra=""):
    listeners = [(rid, "127.0.0.1:0", servers[server].addr)
                 for rid, server, _, _, _, _ in runs]
    return tflib.write_config(json_name, listeners, timeouts={"handshake": 5.0}, extra=extra)


def run_all(tf, runs, pki, results):
    """Runs every client at once (a few at a time); fills results[rid] = (said, flow_end)."""
    def one(r):
        rid, server, ver, client, want, opts = r
        opts = dict(opts)
        trust = opts.pop("trust", None)
        if trust == "lab":
            opts["ca"] = tflib.LabCA.get().root
        said = client_run(client, tf.port_of(rid), pki, ver, **opts)
        end = tf.events.wait(lambda e: e.get("event") == "flow_end" and
                             e.get("listener") == rid, timeout=8.0)
        results[rid] = (said, end)
    with ThreadPoolExecutor(max_workers=6) as ex:
        list(ex.map(one, runs))


# mitm sees the real chain whatever the version: (listener, server, upstream_tls keys,
# the client trusts "lab" (tlsfault's lab CA) or "pki" (the servers' root), cause, finding).
MITM_CASES = [
    ("m-verify-expired", "expired", 'upstream_tls = { verify = "file"; ca_file = "@ROOT@"; };',
     "pki", "cert_expired", None),
    # The forged leaf copies the server's dates: the client meets the same problem.
    ("m-forge-expired", "expired", "", "lab", "cert_expired", "cert_expired"),
    ("m-untrusted", "good", "", "pki", "cert_untrusted_root", None),
]


def mitm_matrix():
    return [("%s-%s" % (name, c), server, "1.3", c, (cause, finding), {"trust": trust})
            for name, server, _, trust, cause, finding in MITM_CASES for c in CLIENTS]


def mitm_config(servers, pki, lab):
    json_path = tflib.tmppath("mitm.jsonl")
    ls = []
    for rid, server, _, _, _, _ in mitm_matrix():
        keys = [k for n, _, k, _, _, _ in MITM_CASES if rid.startswith(n + "-")][0]
        ls.append('  { name = "%s"; listen = "127.0.0.1:0"; route = "forward"; upstream = "%s"; '
                  'mode = "mitm"; %s }' % (rid, servers[server].addr,
                                           keys.replace("@ROOT@", pki.ca)))
    text = "listeners = (\n%s\n);\n" % ",\n".join(ls)
    text += 'ca = { dir = "%s"; };\n' % lab.dir
    text += 'log = { text = "none"; json = "%s"; };\n' % json_path
    text += "timeouts = { handshake = 5.0; };\nworkers = 1;\n"
    return tflib.write_file("mitm.conf", text)


def cause_of(end):
    return ((end or {}).get("verdict") or {}).get("cause")


# ------------------------------------------------------------ checks

def check_runs(tap, runs, results, label):
    for rid, server, ver, client, (want, finding), opts in runs:
        said, end = results.get(rid, ("did not run", None))
        got = cause_of(end)
        v = (end or {}).get("verdict") or {}
        ids = [f.get("id") for f in v.get("findings", [])]
        wants = want if isinstance(want, tuple) else (want,)
        tap.ok(got in wants and (finding is None or finding in ids) and
               (end or {}).get("outcome") == v.get("outcome"),
               "%s: %s %s via %s: cause %s%s" % (label, server, ver or "any", TITLES[client],
                                                 " or ".join(wants),
                                                 " with finding " + finding if finding else ""),
               "got %r (client said: %s)\nverdict: %r\nflow_end: %r" % (
                   got, said, v, {k: end.get(k) for k in ("close", "closed_by", "alerts",
                                                          "last_message", "handshake",
                                                          "bytes")} if end else None))


def tflib_ts(e):
    """An event's ts in seconds (RFC 3339 with microseconds)."""
    t = e.get("ts", "")
    try:
        base = time.mktime(time.strptime(t[:19], "%Y-%m-%dT%H:%M:%S"))
        return base + float("0" + t[19:].rstrip("Z"))
    except ValueError:
        return 0.0


def check_details(tap, results, tfp_events):
    """What the verdicts rest on, for a few cases the table alone would not show."""
    def verdict(rid):
        return ((results.get(rid) or (None, None))[1] or {}).get("verdict") or {}

    def fields(v):
        return {e.get("field"): e.get("value") for e in v.get("evidence", []) if "field" in e}

    v, vp = verdict("tls1.0-only-curl"), verdict("tls1.0-only-python")
    f, fp = fields(v), fields(vp)
    tap.ok(f.get("selected_version") == "TLS 1.0" and f.get("client_max_version") == "TLS 1.3"
           and any(e.get("event") == "alert" and e.get("description") == "internal_error"
                   for e in v.get("evidence", [])) and
           fp.get("offered_versions") == ["TLS 1.3", "TLS 1.2"] and
           any(e.get("event") == "alert" and e.get("dir") == "s2c" and
               e.get("description") == "protocol_version" for e in vp.get("evidence", [])),
           "version_mismatch evidence: to curl the server chose TLS 1.0 though it offered up "
           "to TLS 1.3 (curl gave up: internal_error, legacy sigalg); to Python, which offers "
           "only TLS 1.3 and 1.2, the server said protocol_version", repr(v) + "\n" + repr(vp))
    v = verdict("no-shared-cipher-1.2-python")
    suites = fields(v).get("offered_cipher_suites") or []
    tap.ok(len(suites) > 3 and any(e.get("description") == "handshake_failure"
                                   for e in v.get("evidence", [])),
           "no_shared_cipher evidence: the offered suites and the server's handshake_failure",
           repr(v))
    v = verdict("expired-1.3-gnutls-cli")
    tap.ok(any(e.get("event") == "alert" and e.get("dir") == "c2s" and e.get("encrypted") and
               e.get("inferred") == "size" for e in v.get("evidence", [])) and
           "probe" in v.get("summary", ""),
           "TLS 1.3 without probe, GnuTLS: its encrypted alert (known by its size) is the "
           "evidence, the summary suggests probe", repr(v))
    v = verdict("expired-1.3-curl")
    tap.ok(any(e.get("event") == "alert" and e.get("dir") == "c2s" and
               e.get("description") == "certificate_expired" for e in v.get("evidence", [])),
           "TLS 1.3 without probe, curl: OpenSSL sends its alert before it has keys, in clear: "
           "certificate_expired is the evidence", repr(v))
    v = verdict("p-wrong-host-1.3-curl")
    tap.ok(v.get("cause") == "cert_wrong_host" and v.get("outcome") == "failed" and
           any(e.get("field") == "client_data_records" for e in v.get("evidence", [])),
           "curl's host check after the handshake, seen with probe: cert_wrong_host, outcome "
           "failed, the client sent no data", repr(v))
    v = verdict("expired-1.2-s_client")
    tap.ok(v.get("chain_source") == "handshake" and
           [f.get("id") for f in v.get("findings", [])] == ["cert_expired"] and
           v.get("who_fixes") == "server",
           "TLS 1.2: the clear chain is linted (one finding: cert_expired), server fixes",
           repr(v))
    v = verdict("p-expired-1.3-python")
    tap.ok(v.get("chain_source") == "probe" and (v.get("probe") or {}).get("status") in
           ("done", "cached") and (v.get("probe") or {}).get("chain_length") == 2,
           "TLS 1.3 with probe: the chain came from the probe (2 certificates)", repr(v))
    v = verdict("p-good-1.3-gnutls-cli")
    tap.ok(v.get("cause") == "handshake_ok" and v.get("findings") == [] and
           (v.get("probe") or {}).get("status") in ("done", "cached"),
           "TLS 1.3 with probe, good server: handshake_ok, the probed chain has no findings",
           repr(v))
    v = verdict("missing-intermediate-1.2-gnutls-cli")
    tap.ok(any(e.get("finding") == "cert_missing_intermediate" for e in v.get("evidence", [])),
           "missing intermediate: the finding is in the evidence", repr(v))
    end = (results.get("p-timeout") or (None, None))[1] or {}
    v = end.get("verdict") or {}
    evs = [e for e in tfp_events if e.get("flow") == end.get("flow")] if end else []
    waited = (tflib_ts(evs[-1]) - tflib_ts(evs[-2])) if len(evs) >= 2 else 0
    tap.ok((v.get("probe") or {}).get("status") == "timeout" and 2.5 <= waited < 6.0 and
           v.get("cause") == "cert_rejected",
           "a probe that gets no answer: flow_end waits for it (%.1f s, bound 3 s), then says "
           "probe timeout and stays at cert_rejected" % waited, repr(v))
    v = verdict("m-verify-expired-python")
    tap.ok(v.get("chain_source") == "upstream" and
           any(e.get("field") == "verify_code" for e in v.get("evidence", [])),
           "mitm, TLS 1.3: the upstream leg's chain and verify result are the evidence", repr(v))
    v = verdict("m-untrusted-curl")
    tap.ok(v.get("who_fixes") == "proxy-config" and "lab" in v.get("summary", ""),
           "mitm, a client without the lab CA: proxy-config fixes (install the lab root)",
           repr(v))
    v = verdict("silent-curl")
    tap.ok(fields(v).get("bytes_s2c") == 0 and v.get("who_fixes") == "server",
           "server_silent: no byte came from the server, the server fixes", repr(v))


def table(runs, results, probe_results, mitm_results):
    """Markdown: a row per server kind and version, a column per client."""
    rows = {}
    order = []
    for rid, server, ver, client, want, opts in runs:
        key = (server, ver or "any")
        if key not in rows:
            rows[key] = {}
            order.append(key)
        rows[key][client] = cause_of((results.get(rid) or (None, None))[1]) or "?"
    for rid, server, ver, client, want, opts in probe_matrix():
        key = (server, "1.3 + probe")
        if key not in rows:
            rows[key] = {}
            order.append(key)
        rows[key][client] = cause_of((probe_results.get(rid) or (None, None))[1]) or "?"
    for rid, server, ver, client, want, opts in mitm_matrix():
        key = (rid[:-len(client) - 1], "1.3 mitm")
        if key not in rows:
            rows[key] = {}
            order.append(key)
        rows[key][client] = cause_of((mitm_results.get(rid) or (None, None))[1]) or "?"
    lines = ["| server | TLS | %s |" % " | ".join(TITLES[c] for c in CLIENTS),
             "| --- | --- | %s |" % " | ".join("---" for _ in CLIENTS)]
    for key in sorted(order, key=lambda k: (order.index((k[0], "1.2")) if (k[0], "1.2") in
                                            order else order.index(k), k[1])):
        lines.append("| %s | %s | %s |" % (key[0], key[1], " | ".join(
            rows[key].get(c, "") for c in CLIENTS)))
    return "\n".join(lines)


def main(tap):
    if not tflib.binary_ready():
        tap.skip_rest("tlsfault binary not built")
        return
    missing = [c for c in ("curl", "openssl", "gnutls-cli") if not tflib.have(c)]
    if missing:
        tap.skip_rest("missing " + ", ".join(missing))
        return
    t0 = time.monotonic()
    pki = LabPKI(tflib.tmppath("verdict-pki"))
    servers = start_servers(pki)
    runs = matrix()
    probe_runs = probe_matrix()

    conf, _ = config_for(runs, servers, "observe")
    tf = Tlsfault(config=conf, name="tlsfault-observe")
    old = os.environ.get("TLSFAULT_PROBE")
    os.environ["TLSFAULT_PROBE"] = "1"
    try:
        pconf, _ = config_for(probe_runs + PROBE_EXTRA, servers, "probe")
        tfp = Tlsfault(config=pconf, name="tlsfault-probe")
    finally:
        if old is None:
            del os.environ["TLSFAULT_PROBE"]
        else:
            os.environ["TLSFAULT_PROBE"] = old

    lab = tflib.LabCA.get()
    tfm = Tlsfault(config=mitm_config(servers, pki, lab), name="tlsfault-mitm")
    mitm_runs = mitm_matrix()

    results, probe_results, mitm_results = {}, {}, {}
    ths = [threading.Thread(target=run_all, args=(tf, runs, pki, results), daemon=True),
           threading.Thread(target=run_all, args=(tfm, mitm_runs, pki, mitm_results),
                            daemon=True)]
    for th in ths:
        th.start()
    run_all(tfp, probe_runs + PROBE_EXTRA, pki, probe_results)
    for th in ths:
        th.join(120)

    check_runs(tap, runs, results, "observe")
    check_runs(tap, probe_runs + PROBE_EXTRA, probe_results, "probe")
    check_runs(tap, mitm_runs, mitm_results, "mitm")
    check_details(tap, {**results, **probe_results, **mitm_results}, tfp.events.all())

    procs = (tf, tfp, tfm)
    tap.ok(all(p.alive() for p in procs), "the three tlsfault instances are alive after %d "
           "flows" % (len(runs) + len(probe_runs) + len(mitm_runs)),
           "".join(p.stderr_tail() for p in procs))
    bad = [e for p in procs for e in p.events.all() if e.get("event") == "__bad_json__"]
    tap.ok(not bad, "every event line is JSON", fmt_events(bad))
    rcs = [p.stop() for p in procs]
    tap.ok(rcs == [0, 0, 0] and not any("Sanitizer" in p.proc.err for p in procs),
           "all three stop cleanly (exit 0, no sanitizer report)",
           "exits %r\n%s" % (rcs, "".join(p.stderr_tail() for p in procs)))

    text = table(runs, results, probe_results, mitm_results)
    tap.diag("verdicts by server and client (%.1f s):" % (time.monotonic() - t0))
    tap.diag(text)
    path = os.environ.get("TF_VERDICT_TABLE")
    if path:
        with open(path, "w") as f:
            f.write(text + "\n")


PLAN = len(matrix()) + len(probe_matrix()) + len(PROBE_EXTRA) + len(mitm_matrix()) + 13 + 3

if __name__ == "__main__":
    tflib.run_main(PLAN, main)
