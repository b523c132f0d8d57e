#!/usr/bin/env python3
"""capture-testdata.py - record real TLS handshakes for tlsfault's tests.

Makes a throwaway PKI (RSA, ECDSA and Ed25519) with the openssl CLI in a
temporary directory, starts `openssl s_server` or `gnutls-serv` on loopback,
and drives `openssl s_client` or `gnutls-cli` through a small TCP relay that
records the raw bytes of each direction.  For every case it writes

    tests/data/<case>.c2s.bin, tests/data/<case>.s2c.bin    the TCP streams
    tests/data/<case>.<message>.bin                         clear handshake
                                                            message bodies

where <message> is client_hello, server_hello, hello_retry_request,
certificate, server_key_exchange, ... (a second message of the same kind
gets a "2" suffix; a client's Certificate is "client_certificate") and
<case>.alert.bin is the body of the first clear alert record.  A message
body is what follows the 4-byte handshake header (RFC 8446 §4, RFC 5246
§7.4); bytes are taken only while the direction is in clear: in TLS 1.2
until that side's ChangeCipherSpec, in TLS 1.3 only records of type
handshake (everything encrypted travels as application_data, RFC 8446 §5.2).

Also writes tests/data/README.md with the commands, the date and the tool
versions, and refreshes the fuzz seeds in tests/fuzz/corpus/<target>/: the
captured messages plus a few hand-damaged variants, all named seed-*.  Other
files there (crash-* regression inputs found by fuzzing) are left alone.
Python standard library only.

Usage: scripts/capture-testdata.py [--out DIR] [--corpus DIR] [--keep-temp] [CASE...]
"""

import argparse
import datetime
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

HS_NAMES = {
    1: "client_hello",
    2: "server_hello",
    4: "new_session_ticket",
    11: "certificate",
    12: "server_key_exchange",
    13: "certificate_request",
    15: "certificate_verify",
    16: "client_key_exchange",
    22: "certificate_status",
}

# RFC 8446 §4.1.3: a ServerHello with this random is a HelloRetryRequest.
HRR_RANDOM = bytes.fromhex(
    "cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")

MAX_STREAM = 100 * 1024


# ------------------------------------------------------------------ PKI

def run(cmd, cwd, **kw):
    """Runs a command, failing loudly with its output."""
    p = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)
    if p.returncode != 0:
        sys.exit("command failed: %s\n%s" % (" ".join(cmd), p.stdout.decode(errors="replace")))
    return p.stdout


EXTENSIONS = """
[ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:server.lab.test, DNS:*.lab.test, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[ecserver]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = DNS:ec.lab.test, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth, emailProtection
subjectAltName = email:client@lab.test
"""

KEYGEN = {
    "rsa": ["-newkey", "rsa:2048"],
    "rsa3072": ["-newkey", "rsa:3072"],
    "p256": ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
    "p384": ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"],
    "ed25519": ["-newkey", "ed25519"],
}


def make_root(d, name, key, subject):
    run(["openssl", "req", "-x509", "-nodes", *KEYGEN[key], "-keyout", name + ".key",
         "-out", name + ".crt", "-days", "3650", "-subj", subject, "-sha256",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"], d)


def make_signed(d, name, key, subject, issuer, section, days=825):
    run(["openssl", "req", "-new", "-nodes", *KEYGEN[key], "-keyout", name + ".key",
         "-out", name + ".csr", "-subj", subject], d)
    run(["openssl", "x509", "-req", "-in", name + ".csr", "-CA", issuer + ".crt",
         "-CAkey", issuer + ".key", "-CAcreateserial", "-days", str(days), "-sha256",
         "-extfile", "ext.cnf", "-extensions", section, "-out", name + ".crt"], d)


def make_pki(d):
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write(EXTENSIONS)
    make_root(d, "rsa-root", "rsa3072", "/O=tlsfault lab/CN=tlsfault Test Root RSA")
    make_signed(d, "rsa-inter", "rsa", "/O=tlsfault lab/CN=tlsfault Test Intermediate RSA",
                "rsa-root", "ca", 1825)
    make_signed(d, "rsa-leaf", "rsa", "/O=tlsfault lab/CN=server.lab.test", "rsa-inter",
                "server")
    make_signed(d, "client", "p256", "/O=tlsfault lab/CN=client.lab.test", "rsa-root",
                "client")
    make_root(d, "ec-root", "p384", "/O=tlsfault lab/CN=tlsfault Test Root EC")
    make_signed(d, "ec-inter", "p256", "/O=tlsfault lab/CN=tlsfault Test Intermediate EC",
                "ec-root", "ca", 1825)
    make_signed(d, "ec-leaf", "p256", "/O=tlsfault lab/CN=ec.lab.test", "ec-inter",
                "ecserver")
    # A self-signed Ed25519 leaf: no CA flag, no chain.
    run(["openssl", "req", "-x509", "-nodes", *KEYGEN["ed25519"], "-keyout", "ed-leaf.key",
         "-out", "ed-leaf.crt", "-days", "825", "-subj", "/O=tlsfault lab/CN=ed.lab.test",
         "-addext", "subjectAltName=DNS:ed.lab.test",
         "-addext", "basicConstraints=critical,CA:FALSE"], d)
    for leaf, inter in (("rsa-leaf", "rsa-inter"), ("ec-leaf", "ec-inter")):
        with open(os.path.join(d, leaf + ".chain.pem"), "w") as out:
            for part in (leaf, inter):
                with open(os.path.join(d, part + ".crt")) as f:
                    out.write(f.read())
    make_ocsp_response(d)


def make_ocsp_response(d):
    """A "good" OCSP response for rsa-leaf, signed by its issuer."""
    serial = run(["openssl", "x509", "-in", "rsa-leaf.crt", "-noout", "-serial"], d)
    serial = serial.decode().strip().split("=", 1)[1]
    subject = run(["openssl", "x509", "-in", "rsa-leaf.crt", "-noout", "-subject",
                   "-nameopt", "compat"], d).decode().strip().split("=", 1)[1].strip()
    expiry = (datetime.datetime.now(datetime.timezone.utc) +
              datetime.timedelta(days=365)).strftime("%y%m%d%H%M%SZ")
    with open(os.path.join(d, "index.txt"), "w") as f:
        f.write("V\t%s\t\t%s\tunknown\t%s\n" % (expiry, serial, subject))
    run(["openssl", "ocsp", "-issuer", "rsa-inter.crt", "-cert", "rsa-leaf.crt",
         "-no_nonce", "-reqout", "ocsp-req.der"], d)
    run(["openssl", "ocsp", "-index", "index.txt", "-rsigner", "rsa-inter.crt",
         "-rkey", "rsa-inter.key", "-CA", "rsa-inter.crt", "-reqin", "ocsp-req.der",
         "-respout", "ocsp-resp.der", "-ndays", "365"], d)


# ------------------------------------------------------------------ relay

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=15.0):
    """Waits until something listens on port (a probe connection the server shrugs off)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            time.sleep(0.1)
    return False


class Relay:
    """Accepts one connection, relays it to upstream, records each direction."""

    def __init__(self, upstream_port):
        self.upstream_port = upstream_port
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.listener.settimeout(30)
        self.port = self.listener.getsockname()[1]
        self.c2s = bytearray()
        self.s2c = bytearray()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @staticmethod
    def _pump(src, dst, record):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                record += data
                dst.sendall(data)
        except OSError:
            pass
        # Pass the half-close on, as a proxy should.
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _serve(self):
        try:
            client, _ = self.listener.accept()
        except OSError:
            return
        with client, socket.create_connection(("127.0.0.1", self.upstream_port)) as up:
            pumps = [threading.Thread(target=self._pump, args=(client, up, self.c2s)),
                     threading.Thread(target=self._pump, args=(up, client, self.s2c))]
            for t in pumps:
                t.start()
            for t in pumps:
                t.join(30)

    def finish(self):
        self.thread.join(30)
        self.listener.close()


# ------------------------------------------------------------------ framing

def records(stream):
    """Yields (content_type, body) for each complete TLS record."""
    off = 0
    while off + 5 <= len(stream):
        ctype = stream[off]
        length = (stream[off + 3] << 8) | stream[off + 4]
        if off + 5 + length > len(stream):
            break
        yield ctype, bytes(stream[off + 5:off + 5 + length])
        off += 5 + length


def clear_messages(stream, tls13):
    """Yields (type, body) of the handshake messages sent in clear."""
    buf = bytearray()
    for ctype, body in records(stream):
        if ctype == 20 and not tls13:
            break
        if ctype != 22:
            continue
        buf += body
        while len(buf) >= 4:
            length = (buf[1] << 8 | buf[2]) << 8 | buf[3]
            if len(buf) < 4 + length:
                break
            yield buf[0], bytes(buf[4:4 + length])
            del buf[:4 + length]


def clear_alert(stream, tls13):
    for ctype, body in records(stream):
        if ctype == 21:
            return body
        if ctype == 20 and not tls13:
            return None
    return None


def ext_block_offset(body, server):
    """Offset of a hello's extensions length: after the fixed fields (RFC 8446 §4.1.2-4.1.3)."""
    off = 2 + 32
    off += 1 + body[off]
    if server:
        return off + 3
    off += 2 + (body[off] << 8 | body[off + 1])
    return off + 1 + body[off]


def hello_extensions(body, server):
    """Returns {type: data} of a ClientHello/ServerHello (no validation: test data)."""
    off = ext_block_offset(body, server)
    exts = {}
    if off + 2 > len(body):
        return exts
    end = off + 2 + (body[off] << 8 | body[off + 1])
    off += 2
    while off + 4 <= end:
        etype = body[off] << 8 | body[off + 1]
        elen = body[off + 2] << 8 | body[off + 3]
        exts[etype] = body[off + 4:off + 4 + elen]
        off += 4 + elen
    return exts


def negotiated_tls13(s2c):
    for mtype, body in clear_messages(s2c, True):
        if mtype == 2:
            sv = hello_extensions(body, True).get(43)
            if sv is not None:
                return sv == b"\x03\x04"
            return False
    return False


def extract(case, c2s, s2c, out):
    """Writes the clear handshake message bodies of both directions; returns their names."""
    tls13 = negotiated_tls13(s2c)
    written = []
    for direction, stream in (("c2s", c2s), ("s2c", s2c)):
        seen = {}
        for mtype, body in clear_messages(stream, tls13):
            name = HS_NAMES.get(mtype)
            if name is None:
                continue
            if mtype == 2 and body[2:34] == HRR_RANDOM:
                name = "hello_retry_request"
            if direction == "c2s" and mtype == 11:
                name = "client_certificate"
            seen[name] = seen.get(name, 0) + 1
            if seen[name] > 1:
                name += str(seen[name])
            with open(os.path.join(out, "%s.%s.bin" % (case, name)), "wb") as f:
                f.write(body)
            written.append(name)
        alert = clear_alert(stream, tls13)
        if alert is not None and "alert" not in written:
            with open(os.path.join(out, "%s.alert.bin" % case), "wb") as f:
                f.write(alert)
            written.append("alert")
    return tls13, written


# ------------------------------------------------------------------ cases

def openssl_server(port, pki, cert="rsa-leaf", chain="rsa-inter", extra=()):
    cmd = ["openssl", "s_server", "-accept", str(port), "-www", "-cert", cert + ".crt",
           "-key", cert + ".key"]
    if chain:
        cmd += ["-cert_chain", chain + ".crt"]
    return cmd + list(extra)


def gnutls_server(port, pki, chain="rsa-leaf.chain.pem", key="rsa-leaf.key", extra=()):
    return ["gnutls-serv", "--http", "-p", str(port), "--x509certfile", chain,
            "--x509keyfile", key] + list(extra)


def openssl_client(port, extra=(), ca="rsa-root.crt", host="server.lab.test"):
    return ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-servername", host,
            "-CAfile", ca, "-ign_eof"] + list(extra)


def gnutls_client(port, extra=(), ca="rsa-root.crt", host="server.lab.test"):
    return ["gnutls-cli", "-p", str(port), "--x509cafile", ca, "--sni-hostname", host,
            "--verify-hostname", host] + list(extra) + ["127.0.0.1"]


# Each case: name, what it shows, server command builder, client command
# builder(s).  A case with "prime" runs that client once before the
# recorded connection (for resumption).
CASES = [
    {
        "name": "openssl-tls13",
        "what": "TLS 1.3, OpenSSL client and server, ALPN",
        "server": lambda p, k: openssl_server(p, k, extra=["-alpn", "h2,http/1.1"]),
        "client": lambda p: openssl_client(p, ["-alpn", "h2,http/1.1"]),
    },
    {
        "name": "openssl-tls13-hrr",
        "what": "TLS 1.3 HelloRetryRequest: client shares x25519, server accepts only P-256",
        "server": lambda p, k: openssl_server(p, k, extra=["-groups", "P-256"]),
        "client": lambda p: openssl_client(p, ["-groups", "X25519:P-256"]),
    },
    {
        "name": "openssl-tls12-ecdhe-rsa",
        "what": "TLS 1.2 ECDHE-RSA, leaf + intermediate, ALPN",
        "server": lambda p, k: openssl_server(p, k, extra=["-alpn", "http/1.1"]),
        "client": lambda p: openssl_client(p, ["-tls1_2", "-alpn", "http/1.1",
                                               "-cipher", "ECDHE-RSA-AES256-GCM-SHA384"]),
    },
    {
        "name": "openssl-tls12-ecdhe-ecdsa",
        "what": "TLS 1.2 ECDHE-ECDSA, P-256 leaf + intermediate",
        "server": lambda p, k: openssl_server(p, k, cert="ec-leaf", chain="ec-inter"),
        "client": lambda p: openssl_client(p, ["-tls1_2"], ca="ec-root.crt", host="ec.lab.test"),
    },
    {
        "name": "openssl-tls12-ed25519",
        "what": "TLS 1.2 ECDHE with a self-signed Ed25519 leaf",
        "server": lambda p, k: openssl_server(p, k, cert="ed-leaf", chain=None),
        "client": lambda p: openssl_client(p, ["-tls1_2", "-sigalgs", "ed25519"],
                                           ca="ed-leaf.crt", host="ed.lab.test"),
    },
    {
        "name": "openssl-tls12-dhe",
        "what": "TLS 1.2 DHE-RSA (server's automatic DH parameters)",
        "server": lambda p, k: openssl_server(p, k),
        "client": lambda p: openssl_client(p, ["-tls1_2", "-cipher",
                                               "DHE-RSA-AES128-GCM-SHA256"]),
    },
    {
        "name": "openssl-tls12-resumed",
        "what": "TLS 1.2 resumption with a session ticket (second connection recorded)",
        "server": lambda p, k: openssl_server(p, k),
        "prime": lambda p: openssl_client(p, ["-tls1_2", "-sess_out", "sess.pem"]),
        "client": lambda p: openssl_client(p, ["-tls1_2", "-sess_in", "sess.pem"]),
    },
    {
        "name": "openssl-tls12-ocsp",
        "what": "TLS 1.2 with status_request and a stapled OCSP response",
        "server": lambda p, k: openssl_server(p, k, extra=["-status_file", "ocsp-resp.der"]),
        "client": lambda p: openssl_client(p, ["-tls1_2", "-status"]),
    },
    {
        "name": "openssl-tls12-client-auth",
        "what": "TLS 1.2 with a CertificateRequest and a client certificate",
        "server": lambda p, k: openssl_server(p, k, extra=["-Verify", "1", "-CAfile",
                                                           "rsa-root.crt"]),
        "client": lambda p: openssl_client(p, ["-tls1_2", "-cert", "client.crt",
                                               "-key", "client.key"]),
    },
    {
        "name": "openssl-tls12-no-shared-cipher",
        "what": "TLS 1.2 failure: the only offered suite is one the server lacks (alert)",
        "server": lambda p, k: openssl_server(p, k, extra=["-cipher",
                                                           "ECDHE-RSA-AES128-GCM-SHA256"]),
        "client": lambda p: openssl_client(p, ["-tls1_2", "-cipher",
                                               "ECDHE-RSA-AES256-GCM-SHA384"]),
    },
    {
        "name": "gnutls-openssl-tls13",
        "what": "TLS 1.3, GnuTLS client, OpenSSL server",
        "server": lambda p, k: openssl_server(p, k),
        "client": lambda p: gnutls_client(p, ["--alpn", "http/1.1"]),
    },
    {
        "name": "gnutls-openssl-tls12",
        "what": "TLS 1.2, GnuTLS client, OpenSSL server",
        "server": lambda p, k: openssl_server(p, k),
        "client": lambda p: gnutls_client(p, ["--priority", "NORMAL:-VERS-ALL:+VERS-TLS1.2"]),
    },
    {
        "name": "openssl-gnutls-tls13",
        "what": "TLS 1.3, OpenSSL client, GnuTLS server",
        "server": lambda p, k: gnutls_server(p, k),
        "client": lambda p: openssl_client(p),
    },
    {
        "name": "openssl-gnutls-tls12",
        "what": "TLS 1.2, OpenSSL client, GnuTLS server with the ECDSA chain",
        "server": lambda p, k: gnutls_server(p, k, chain="ec-leaf.chain.pem", key="ec-leaf.key"),
        "client": lambda p: openssl_client(p, ["-tls1_2"], ca="ec-root.crt",
                                           host="ec.lab.test"),
    },
]

REQUEST = b"GET / HTTP/1.0\r\nHost: server.lab.test\r\n\r\n"


def run_client(cmd, pki, log):
    """Runs a client; the servers answer one HTTP request and close."""
    log.write("$ %s\n" % " ".join(cmd))
    p = subprocess.Popen(cmd, cwd=pki, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT)
    try:
        p.stdin.write(REQUEST)
        p.stdin.flush()
    except OSError:
        pass
    try:
        out, _ = p.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
    log.write(out.decode(errors="replace"))
    return p.returncode


def capture(case, pki, out, log):
    port = free_port()
    server_cmd = case["server"](port, pki)
    log.write("\n=== %s\n$ %s\n" % (case["name"], " ".join(server_cmd)))
    server = subprocess.Popen(server_cmd, cwd=pki, stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not wait_port(port, server):
            sys.exit("%s: server did not start" % case["name"])
        if "prime" in case:
            run_client(case["prime"](port), pki, log)
        relay = Relay(port)
        client_cmd = case["client"](relay.port)
        rc = run_client(client_cmd, pki, log)
        relay.finish()
    finally:
        server.terminate()
        try:
            server.wait(5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    c2s, s2c = bytes(relay.c2s), bytes(relay.s2c)
    if not c2s or not s2c:
        sys.exit("%s: nothing recorded" % case["name"])
    if len(c2s) > MAX_STREAM or len(s2c) > MAX_STREAM:
        sys.exit("%s: capture larger than %d bytes" % (case["name"], MAX_STREAM))
    base = os.path.join(out, case["name"])
    for suffix, data in ((".c2s.bin", c2s), (".s2c.bin", s2c)):
        with open(base + suffix, "wb") as f:
            f.write(data)
    tls13, written = extract(case["name"], c2s, s2c, out)
    return {
        "name": case["name"],
        "what": case["what"],
        "server": " ".join(server_cmd).replace(str(port), "PORT"),
        "prime": " ".join(case["prime"](port)).replace(str(port), "PORT") if "prime" in case
        else None,
        "client": " ".join(client_cmd).replace(str(relay.port), "RELAY"),
        "client_rc": rc,
        "sizes": (len(c2s), len(s2c)),
        "tls13": tls13,
        "messages": written,
    }


# ------------------------------------------------------------------ fuzz seeds

def u16(v):
    return bytes([v >> 8 & 0xff, v & 0xff])


def u24(v):
    return bytes([v >> 16 & 0xff, v >> 8 & 0xff, v & 0xff])


def ext(etype, data):
    return u16(etype) + u16(len(data)) + data


def find_ext(body, server, etype):
    """Offset of extension etype's header in a hello, or None."""
    off = ext_block_offset(body, server)
    end = off + 2 + (body[off] << 8 | body[off + 1])
    off += 2
    while off + 4 <= end:
        if (body[off] << 8 | body[off + 1]) == etype:
            return off
        off += 4 + (body[off + 2] << 8 | body[off + 3])
    return None


def bump16(body, off, delta):
    b = bytearray(body)
    v = (b[off] << 8 | b[off + 1]) + delta
    b[off:off + 2] = u16(v & 0xffff)
    return bytes(b)


def client_hello_mutants(ch):
    """Hand-damaged ClientHellos: each breaks one rule the decoder checks."""
    out = {"truncated-half": ch[:len(ch) // 2]}
    eb = ext_block_offset(ch, False)
    out["ext-block-overrun"] = bump16(ch, eb, 1)
    groups = find_ext(ch, False, 10)
    if groups is not None:
        out["groups-inner-overrun"] = bump16(ch, groups + 4, 2)
        glen = 4 + (ch[groups + 2] << 8 | ch[groups + 3])
        dup = ch + ch[groups:groups + glen]
        out["duplicate-groups"] = bump16(dup, eb, glen)
    head = u16(0x0303) + bytes(32) + b"\x00"
    out["empty-suites"] = head + u16(0) + b"\x01\x00"
    exts = (ext(0, u16(12) + b"\x00" + u16(9) + b"a\x01b\\c.lab") +
            ext(43, b"\x06\x1a\x1a\x03\x04\x03\x03") +
            ext(0x7777, b"") +
            ext(16, u16(5) + b"\x02h2\x01x") +
            ext(51, u16(0)) + ext(28, u16(0x4000)) + ext(21, bytes(5)) +
            ext(5, b"\x01\x00\x00\x00\x00") + ext(0xfe0d, b"\x01\x02") +
            ext(41, u16(7) + u16(1) + b"I" + bytes(4) + u16(33) + b"\x20" + bytes(32)))
    out["grease-and-friends"] = (head + u16(6) + u16(0xdada) + u16(0x1301) + u16(0x7777) +
                                 b"\x01\x00" + u16(len(exts)) + exts)
    return out


def server_hello_mutants(sh):
    # Cut inside the extensions: a cut right after the fixed fields is a valid hello.
    out = {"truncated": sh[:-3]}
    tls11 = bytearray(sh)
    tls11[2 + 24:2 + 32] = b"DOWNGRD\x00"
    out["tls11-sentinel"] = bytes(tls11)
    head = u16(0x0303) + HRR_RANDOM + b"\x00" + u16(0x1301) + b"\x00"
    exts = ext(43, u16(0x0304)) + ext(51, u16(0x17)) + ext(44, u16(3) + b"abc")
    out["hrr-cookie"] = head + u16(len(exts)) + exts
    exts = ext(43, u16(0x0304)) + ext(51, u16(0x17) + u16(0))
    out["hrr-key-share-extra"] = head + u16(len(exts)) + exts
    return out


def certificate_mutants(cert):
    """cert: a TLS 1.2 Certificate body with at least one entry."""
    entries = []
    off = 3
    while off + 3 <= len(cert):
        n = cert[off] << 16 | cert[off + 1] << 8 | cert[off + 2]
        entries.append(cert[off + 3:off + 3 + n])
        off += 3 + n
    sct = ext(18, b"\xab\xcd")
    body13 = b"".join(u24(len(e)) + e + (u16(len(sct)) + sct if i == 0 else u16(0))
                      for i, e in enumerate(entries))
    half = entries[0][:len(entries[0]) // 2]
    out = {
        "tls13-layout": b"\x00" + u24(len(body13)) + body13,
        "garbage-entry": u24(11) + u24(8) + b"\x30\x82\xff\xff\x30\x82\xff\xff",
        "der-cut-in-half": u24(3 + len(half)) + u24(len(half)) + half,
        "list-overrun": u24(len(cert)) + cert[3:],
        "empty": u24(0),
    }
    return out


def write_seeds(data_dir, corpus_dir):
    """Refreshes seed-* files in corpus/<target>/ from the captures; keeps everything else."""
    targets = {
        "fuzz_client_hello": ("client_hello", "client_hello2"),
        "fuzz_server_hello": ("server_hello", "hello_retry_request"),
        "fuzz_certificate": ("certificate", "client_certificate"),
    }
    for target, messages in targets.items():
        d = os.path.join(corpus_dir, target)
        os.makedirs(d, exist_ok=True)
        for old in os.listdir(d):
            if old.startswith("seed-"):
                os.unlink(os.path.join(d, old))
        seen = set()
        seeds = {}
        for name in sorted(os.listdir(data_dir)):
            parts = name.split(".")
            if len(parts) != 3 or parts[1] not in messages or parts[2] != "bin":
                continue
            with open(os.path.join(data_dir, name), "rb") as f:
                body = f.read()
            digest = hashlib.sha256(body).digest()
            if digest not in seen:
                seen.add(digest)
                seeds["seed-%s.%s" % (parts[0], parts[1])] = body

        def base(n):
            with open(os.path.join(data_dir, n), "rb") as f:
                return f.read()
        if target == "fuzz_client_hello":
            mutants = client_hello_mutants(base("openssl-tls13.client_hello.bin"))
        elif target == "fuzz_server_hello":
            mutants = server_hello_mutants(base("openssl-tls12-ecdhe-rsa.server_hello.bin"))
        else:
            mutants = certificate_mutants(base("openssl-gnutls-tls12.certificate.bin"))
        for k, v in mutants.items():
            seeds["seed-mut-" + k] = v
        for k, v in seeds.items():
            with open(os.path.join(d, k), "wb") as f:
                f.write(v)
        print("%-32s %d seeds" % (target, len(seeds)))


def tool_version(cmd):
    try:
        out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT).stdout
        return out.decode(errors="replace").splitlines()[0].strip()
    except (OSError, IndexError):
        return "unknown"


def write_readme(out, results):
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Captured TLS handshakes",
        "",
        "Generated by `scripts/capture-testdata.py` on %s with:" % now,
        "",
        "- %s" % tool_version(["openssl", "version"]),
        "- %s" % tool_version(["gnutls-cli", "--version"]),
        "- Python %s" % sys.version.split()[0],
        "",
        "The script makes a throwaway PKI in a temporary directory (RSA 3072 root,",
        "RSA 2048 intermediate and leaf `CN=server.lab.test`; EC P-384 root, P-256",
        "intermediate and leaf `CN=ec.lab.test`; a self-signed Ed25519 leaf",
        "`CN=ed.lab.test`; a P-256 client certificate `CN=client.lab.test` signed by",
        "the RSA root; a stapled OCSP response from `openssl ocsp`), starts the",
        "server on loopback and runs the client through a Python relay that records",
        "each direction.  The keys are discarded; the certificates live on only in",
        "these captures.  Re-running the script replaces every file here, with new",
        "keys, randoms and dates, so tests assert names, not bytes.",
        "",
        "Files per case:",
        "",
        "- `<case>.c2s.bin`, `<case>.s2c.bin`: the raw TCP bytes of each direction.",
        "- `<case>.<message>.bin`: the body (after the 4-byte header) of each handshake",
        "  message sent in clear; a repeated message gets a `2` suffix, a client's",
        "  Certificate is `client_certificate`.",
        "- `<case>.alert.bin`: the body of the first clear alert record.",
        "",
        "`PORT` is the server's loopback port, `RELAY` the recording relay's.  Paths",
        "are relative to the temporary PKI directory.",
        "",
        "The same run refreshes the fuzz seeds `tests/fuzz/corpus/<target>/seed-*`:",
        "the distinct captured messages of each kind plus a few hand-damaged",
        "variants (`seed-mut-*`).  Other files there, such as `crash-*` inputs kept",
        "as regression tests, are left alone.",
        "",
        "To regenerate: `python3 scripts/capture-testdata.py` (needs `openssl`,",
        "`gnutls-cli` and `gnutls-serv`; takes a few seconds; loopback only).",
        "",
    ]
    for r in results:
        lines += [
            "## %s" % r["name"],
            "",
            r["what"] + ".  Negotiated %s; client exit status %d; %d bytes c2s, %d s2c." % (
                "TLS 1.3" if r["tls13"] else "TLS 1.2 or older", r["client_rc"],
                r["sizes"][0], r["sizes"][1]),
            "",
            "```",
            "server: " + r["server"],
        ]
        if r["prime"]:
            lines.append("prime:  " + r["prime"])
        lines += [
            "client: " + r["client"],
            "```",
            "",
            "Messages: " + ", ".join("`%s`" % m for m in r["messages"]),
            "",
        ]
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write("\n".join(lines))


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(root, "tests", "data"))
    ap.add_argument("--corpus", default=os.path.join(root, "tests", "fuzz", "corpus"))
    ap.add_argument("--keep-temp", action="store_true", help="keep the PKI directory")
    ap.add_argument("cases", nargs="*", help="case names (default: all)")
    args = ap.parse_args()

    cases = [c for c in CASES if not args.cases or c["name"] in args.cases]
    if args.cases and len(cases) != len(args.cases):
        sys.exit("unknown case; known: %s" % ", ".join(c["name"] for c in CASES))
    os.makedirs(args.out, exist_ok=True)
    pki = tempfile.mkdtemp(prefix="tlsfault-capture-")
    results = []
    try:
        make_pki(pki)
        with open(os.path.join(pki, "capture.log"), "w") as log:
            for case in cases:
                for old in os.listdir(args.out):
                    if old.startswith(case["name"] + ".") and old.endswith(".bin"):
                        os.unlink(os.path.join(args.out, old))
                r = capture(case, pki, args.out, log)
                print("%-32s %6d/%-6d %s" % (r["name"], r["sizes"][0], r["sizes"][1],
                                            " ".join(r["messages"])))
                results.append(r)
        if not args.cases:
            write_readme(args.out, results)
            write_seeds(args.out, args.corpus)
    finally:
        if args.keep_temp:
            print("PKI and client log kept in " + pki)
        else:
            shutil.rmtree(pki, ignore_errors=True)


if __name__ == "__main__":
    main()
