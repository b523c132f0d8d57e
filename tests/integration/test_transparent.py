"""test_transparent — the redirect and tproxy routes with real netfilter
rules, in network namespaces (root only; skipped otherwise).

scripts/lab-netns.sh makes a lab of three namespaces: client tfc
(10.200.1.2, fd00:200:1::2) - router tfr - server tfs (10.200.2.2,
fd00:200:2::2); tfr forwards, and its REDIRECT or TPROXY rules send the
client's TCP to port 443 to tlsfault on port 8443.  The clients have no
proxy settings at all: they connect to the server's own address (the name
lab.test pinned to it: curl --resolve, -servername, server_hostname).
For redirect, then tproxy:
 1. curl, openssl s_client, gnutls-cli and Python over IPv4 and IPv6:
    verified handshake, the s_server page whole; flow_start has route,
    original_dst (the server's address, port 443) and the client's own
    address.
 2. drop-server-hello (passthrough) and cert-expired (mitm, --ca): curl
    fails as in forward mode (28 "Connection timed out", 60 "certificate
    has expired"), checked against a forward listener of the same
    tlsfault, also in the lab.
 3. Quick mode (--listen 0.0.0.0:8443 --route redirect|tproxy) relays.
 4. 1 MiB each way through the proxy intact (Python client and server);
    the server sees the router's address as the peer; with tproxy and
    spoof_source (config and --spoof-source) it sees the client's own
    address, 10.200.1.2 / fd00:200:1::2.
 5. Loops: a client that connects straight to tlsfault's port has its own
    listener as original destination: refused, with a log line.
The lab again with native nft rules and with iptables-legacy (scripts/
lab-netns.sh --backend nft|legacy): both routes, both families, the
server's view of the peer (tproxy with spoof_source).
Then the one-machine recipe, in a private network namespace (unshare -n):
 6. iptables -t nat OUTPUT -o lo ... -m mark ! --mark 0x2 -j REDIRECT and
    tlsfault --mark 2: curl to 127.0.0.1:19443 goes through the proxy
    (whose own connection, marked, is not redirected again); the same
    with the nft rule, and with ip6tables on ::1."""

import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tflib  # noqa: E402
from tflib import LAB_ADDR, PKI, LabCA, TlsfaultCmd, fmt_events, hostport, page_ok  # noqa: E402

TIMEOUT = 10.0
HANG = 2
GET = "GET / HTTP/1.0\r\n\r\n"
PORT, PROXY_PORT = 443, 8443
MODES = ["redirect", "tproxy"]
FAMILIES = [4, 6]

# A TLS server for the lab's server namespace: on each address given, port
# 443.  "GET ..." gets an HTTP answer naming the peer's address; anything
# else is a length-prefixed bulk echo (8-byte length, bytes; all sent back).
# Prints one JSON line per connection: peer, kind, length, sha256.
SERVER_PY = r'''
import hashlib, json, socket, ssl, sys, threading
chain, key = sys.argv[1], sys.argv[2]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(chain, key)
def serve(conn, peer):
    try:
        conn.settimeout(20)
        s = ctx.wrap_socket(conn, server_side=True)
        head = b""
        while len(head) < 8:
            b = s.recv(8 - len(head))
            if not b:
                break
            head += b
        if head.startswith(b"GET "):
            body = ("peer=%s\n" % peer[0]).encode()
            s.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            rec = {"peer": peer[0], "kind": "get"}
        else:
            n = int.from_bytes(head, "big")
            buf = bytearray()
            while len(buf) < n:
                b = s.recv(min(1 << 20, n - len(buf)))
                if not b:
                    break
                buf += b
            s.sendall(bytes(buf))
            rec = {"peer": peer[0], "kind": "bulk", "len": len(buf),
                   "sha256": hashlib.sha256(buf).hexdigest()}
        print(json.dumps(rec), flush=True)
        try:
            s.unwrap()
        except (OSError, ssl.SSLError, ValueError):
            pass
    except Exception as e:
        print(json.dumps({"peer": peer[0], "error": repr(e)}), flush=True)
    finally:
        conn.close()
def loop(ls):
    while True:
        c, a = ls.accept()
        threading.Thread(target=serve, args=(c, a), daemon=True).start()
for addr in sys.argv[3:]:
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    ls = socket.socket(fam, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((addr, 443))
    ls.listen(64)
    threading.Thread(target=loop, args=(ls,), daemon=True).start()
print("listening", flush=True)
threading.Event().wait()
'''

# The matching client, for the lab's client namespace: connects to
# addr:443, TLS with SNI lab.test verified against the CA; "get" prints the
# answer's body, "bulk N" sends N pattern bytes and checks the echo.
# Prints one JSON line: ok, error, body / len, sha256, local address.
CLIENT_PY = r'''
import hashlib, json, socket, ssl, sys
ca, addr, what = sys.argv[1], sys.argv[2], sys.argv[3]
out = {"ok": False}
try:
    ctx = ssl.create_default_context(cafile=ca)
    raw = socket.create_connection((addr, 443), timeout=15)
    out["local"] = raw.getsockname()[0]
    with ctx.wrap_socket(raw, server_hostname="lab.test") as s:
        out["version"] = s.version()
        if what == "get":
            s.sendall(b"GET / HTTP/1.0\r\nHost: lab.test\r\n\r\n")
            data = b""
            while True:
                try:
                    b = s.recv(65536)
                except ssl.SSLZeroReturnError:
                    break
                if not b:
                    break
                data += b
            out["body"] = data.split(b"\r\n\r\n", 1)[-1].decode()
        else:
            n = int(sys.argv[4])
            block = b"".join(hashlib.sha256(b"tf%d" % i).digest() for i in range(2048))
            payload = (block * (n // len(block) + 1))[:n]
            s.sendall(n.to_bytes(8, "big") + payload)
            buf = bytearray()
            while len(buf) < n:
                b = s.recv(1 << 20)
                if not b:
                    break
                buf += b
            out["sent_sha256"] = hashlib.sha256(payload).hexdigest()
            out["len"] = len(buf)
            out["sha256"] = hashlib.sha256(bytes(buf)).hexdigest()
    out["ok"] = True
except Exception as e:
    out["error"] = "%s: %s" % (type(e).__name__, e)
print(json.dumps(out))
'''


def server_addr(fam):
    return LAB_ADDR[fam]["server"]


def original_dst(fam):
    return hostport(server_addr(fam), PORT)


# ------------------------------------------------------------ processes in the lab

def s_servers(lab):
    """openssl s_server -www in the server namespace, one per family."""
    pki = PKI.get()
    procs = []
    for fam in FAMILIES:
        argv = ["openssl", "s_server", "-accept", hostport(server_addr(fam), PORT),
                "-cert", pki.leaf, "-key", pki.leaf_key, "-cert_chain", pki.inter,
                "-www", "-naccept", "1000000"] + (["-6"] if fam == 6 else [])
        p = lab.proc("server", argv, name="s_server-v%d" % fam)
        if not p.wait_for(r"ACCEPT", stream="out", timeout=10):
            raise RuntimeError("s_server (IPv%d) did not start in the lab: %s" % (fam, p.err))
        procs.append(p)
    return procs


def stop_all(procs):
    for p in procs:
        p.stop()


def py_server(lab):
    pki = PKI.get()
    script = tflib.write_file("lab_server.py", SERVER_PY)
    p = lab.proc("server", ["python3", script, pki.chain, pki.leaf_key]
                 + [server_addr(f) for f in FAMILIES], name="py-server")
    if not p.wait_for(r"listening", stream="out", timeout=10):
        raise RuntimeError("the Python server did not start in the lab: %s" % p.err)
    return p


def server_records(p, start=0, count=1, timeout=10.0):
    """The JSON lines the Python server printed, from line start on (waits
    for count of them)."""
    def probe():
        lines = [ln for ln in p.out.splitlines() if ln.startswith("{")][start:]
        return lines if len(lines) >= count else None
    lines = tflib.wait_until(probe, timeout, 0.05) or \
        [ln for ln in p.out.splitlines() if ln.startswith("{")][start:]
    out = []
    for ln in lines:
        try:
            out.append(json.loads(ln))
        except ValueError:
            pass
    return out


def py_client(lab, fam, what, n=0):
    pki = PKI.get()
    script = tflib.write_file("lab_client.py", CLIENT_PY)
    r = lab.run("client", ["python3", script, pki.ca, server_addr(fam), what, n], timeout=30)
    try:
        return json.loads(r.out.strip().splitlines()[-1]), r
    except (ValueError, IndexError):
        return {"ok": False, "error": "no JSON: " + r.describe()}, r


def config(name, listeners, json_path, extra=""):
    """listeners: [(name, listen, route, more-settings)]."""
    ls = ",\n".join('  { name = "%s"; listen = "%s"; route = "%s"; %s }' % l for l in listeners)
    return tflib.write_file(name + ".conf", "listeners = (\n%s\n);\n"
                            'log = { text = "stderr"; json = "%s"; };\nworkers = 1;\n%s'
                            % (ls, json_path, extra))


def lab_proxy(lab, mode, name, more="", extra=""):
    """tlsfault in the router namespace: listeners v4 (0.0.0.0:8443) and
    v6 ([::]:8443) of this route."""
    js = tflib.tmppath("%s.jsonl" % name)
    conf = config(name, [("v4", "0.0.0.0:%d" % PROXY_PORT, mode, more),
                         ("v6", "[::]:%d" % PROXY_PORT, mode, more)], js, extra)
    return TlsfaultCmd(["-c", conf], json_path=js, prefix=lab.argv("router", []),
                       name="tlsfault-" + name)


# ------------------------------------------------------------ clients in the lab

def curl(lab, fam, extra=(), ca=None, host="lab.test", port=PORT, addr=None, timeout=TIMEOUT):
    ca = ca or PKI.get().ca
    addr = addr or server_addr(fam)
    rs = "%s:%d:%s" % (host, port, ("[%s]" % addr) if ":" in addr else addr)
    return lab.run("client", ["curl", "-sS", "--cacert", ca, "--resolve", rs,
                              "--max-time", str(int(timeout - 2))] + list(extra)
                   + ["https://%s:%d/" % (host, port)], timeout=timeout)


def s_client(lab, fam):
    pki = PKI.get()
    return lab.run("client", ["openssl", "s_client", "-connect", hostport(server_addr(fam), PORT),
                              "-servername", "lab.test", "-CAfile", pki.ca,
                              "-verify_return_error", "-verify_hostname", "lab.test",
                              "-ign_eof"], input=GET, timeout=TIMEOUT)


def gnutls_cli(lab, fam):
    pki = PKI.get()
    argv = lab.argv("client", ["gnutls-cli", "--x509cafile", pki.ca, "-p", str(PORT),
                               "--sni-hostname", "lab.test", "--verify-hostname", "lab.test",
                               server_addr(fam)])
    return tflib.run_fed(argv, GET, r"</HTML>|</html>", TIMEOUT)


def curl_error(r):
    """curl's message without what differs between runs (ports, times)."""
    m = re.search(r"curl: \((\d+)\) (.*)", r.err)
    if not m:
        return None
    t = re.sub(r"after \d+ milliseconds", "after N milliseconds", m.group(2))
    t = re.sub(r" in connection to \S+", "", t)
    return "%s: %s" % (m.group(1), t.strip())


# ------------------------------------------------------------ 1. clients

def part_clients(tap, lab, mode, proxy):
    ev = proxy.events
    for fam in FAMILIES:
        before = ev.max_flow()
        where = "%s, IPv%d" % (mode, fam)
        r = curl(lab, fam)
        tap.ok(r.rc == 0 and page_ok(r.out),
               "%s: curl https://lab.test/ (resolved to %s, no proxy settings): page whole"
               % (where, server_addr(fam)), r.describe())
        r = s_client(lab, fam)
        tap.ok(r.rc == 0 and page_ok(r.out) and "Verification: OK" in r.out,
               "%s: openssl s_client -connect %s: verified, page whole"
               % (where, original_dst(fam)), r.describe())
        r = gnutls_cli(lab, fam)
        tap.ok(r.rc == 0 and page_ok(r.out),
               "%s: gnutls-cli %s: verified, page whole" % (where, server_addr(fam)),
               r.describe())
        out, r = py_client(lab, fam, "get")
        tap.ok(out.get("ok") and "<HTML>" in out.get("body", ""),
               "%s: Python ssl to %s: verified, page read" % (where, server_addr(fam)),
               "%r\n%s" % (out, r.describe()))
        # Four flows of this family, each saying where it was going.
        starts = tflib.wait_until(lambda: (lambda s: s if len(s) >= 4 else None)(
            [e for e in ev.all() if e.get("event") == "flow_start" and e.get("flow", 0) > before]),
            5, 0.05) or [e for e in ev.all() if e.get("event") == "flow_start"
                         and e.get("flow", 0) > before]
        want_client = LAB_ADDR[fam]["client"]
        bad = [e for e in starts
               if e.get("original_dst") != original_dst(fam) or e.get("route") != mode
               or e.get("listener") != "v%d" % fam
               or not str(e.get("client", "")).startswith(hostport(want_client, 0)[:-1])]
        tap.ok(len(starts) == 4 and not bad,
               "%s: the 4 flow_start events: route %s, original_dst %s, client %s, listener v%d"
               % (where, mode, original_dst(fam), want_client, fam), fmt_events(starts))


# ------------------------------------------------------------ 2. faults

def part_faults(tap, lab, mode):
    labca = LabCA.get()
    fwd_listen = "%s:9443" % LAB_ADDR[4]["router_c"]
    cases = [
        # (fault, mode, curl's CA, expected rc, expected text)
        ("drop-server-hello", "passthrough", PKI.get().ca, 28,
         r"^28: Connection timed out after N milliseconds$"),
        ("cert-expired", "mitm", labca.root, 60,
         r"^60: SSL certificate problem: certificate has expired$"),
    ]
    for fault, fmode, ca, want_rc, want_rx in cases:
        js = tflib.tmppath("faults-%s-%s.jsonl" % (mode, fault))
        more = 'mode = "%s";' % fmode
        extra = 'faults = ( { name = "f"; fault = "%s"; } );\n' % fault
        if fmode == "mitm":
            extra += 'ca = { dir = "%s"; };\n' % labca.dir
        conf = config("faults-%s-%s" % (mode, fault),
                      [("v4", "0.0.0.0:%d" % PROXY_PORT, mode, more),
                       ("v6", "[::]:%d" % PROXY_PORT, mode, more),
                       ("fwd", fwd_listen, "forward",
                        more + ' upstream = "%s";' % original_dst(4))], js, extra)
        proxy = TlsfaultCmd(["-c", conf], json_path=js, prefix=lab.argv("router", []),
                            name="tlsfault-%s-%s" % (mode, fault))
        try:
            t = HANG + 2 if fault == "drop-server-hello" else TIMEOUT
            runs = tflib.parallel([
                lambda: curl(lab, 4, ca=ca, timeout=t),
                lambda: curl(lab, 6, ca=ca, timeout=t),
                lambda: curl(lab, 4, ca=ca, port=9443, addr=LAB_ADDR[4]["router_c"], timeout=t),
            ])
            texts = [curl_error(r) if isinstance(r, tflib.Result) else repr(r) for r in runs]
            for fam, r, text in ((4, runs[0], texts[0]), (6, runs[1], texts[1])):
                tap.ok(isinstance(r, tflib.Result) and r.rc == want_rc and text
                       and re.search(want_rx, text),
                       "%s, IPv%d, %s (%s): curl %s" % (mode, fam, fault, fmode, text),
                       r.describe() if isinstance(r, tflib.Result) else repr(r))
            tap.ok(texts[0] == texts[2] and texts[1] == texts[2],
                   "%s, %s: curl says the same as through a forward listener (%s)"
                   % (mode, fault, texts[2]), "\n".join(map(str, texts)))
        finally:
            proxy.stop()


# ------------------------------------------------------------ 3. quick mode

def part_quick(tap, lab, mode):
    js = tflib.tmppath("quick-%s.jsonl" % mode)
    t = TlsfaultCmd(["--listen", "0.0.0.0:%d" % PROXY_PORT, "--route", mode, "--json", js,
                     "--text", "none", "-w", "1"], json_path=js, prefix=lab.argv("router", []),
                    name="tlsfault-quick-" + mode)
    try:
        r = curl(lab, 4)
        start = t.events.wait(lambda e: e.get("event") == "flow_start", 5) or {}
        tap.ok(r.rc == 0 and page_ok(r.out) and start.get("original_dst") == original_dst(4),
               "%s, quick mode (--listen 0.0.0.0:%d --route %s): curl through it, original_dst "
               "%s" % (mode, PROXY_PORT, mode, original_dst(4)),
               "%s\n%s" % (r.describe(), fmt_events(t.events.all())))
    finally:
        rc = t.stop()
    tap.eq(rc, 0, "%s quick-mode tlsfault exits 0 on SIGTERM" % mode, t.stderr_tail())


# ------------------------------------------------------------ 4. payload, peer address

def part_payload(tap, lab, mode, srv):
    n = 1 << 20
    proxy = lab_proxy(lab, mode, "payload-" + mode)
    try:
        for fam in FAMILIES:
            k = len([ln for ln in srv.out.splitlines() if ln.startswith("{")])
            out, r = py_client(lab, fam, "bulk", n)
            rec = server_records(srv, k, 1)
            rec = rec[0] if rec else {}
            tap.ok(out.get("ok") and out.get("len") == n
                   and out.get("sha256") == out.get("sent_sha256") == rec.get("sha256")
                   and rec.get("len") == n,
                   "%s, IPv%d: 1 MiB to the server and back through the proxy, intact"
                   % (mode, fam), "client %r\nserver %r\n%s" % (out, rec, r.describe()))
        peers = []
        for fam in FAMILIES:
            out, r = py_client(lab, fam, "get")
            peers.append(out.get("body", "").strip())
        want = ["peer=%s" % LAB_ADDR[f]["router_s"] for f in FAMILIES]
        tap.eq(peers, want, "%s without spoof_source: the server sees the router's address"
               % mode)
    finally:
        proxy.stop()


def part_spoof(tap, lab, srv):
    proxy = lab_proxy(lab, "tproxy", "spoof", more="spoof_source = true;")
    try:
        for fam in FAMILIES:
            out, r = py_client(lab, fam, "get")
            end = proxy.events.wait(lambda e, f=fam: e.get("event") == "flow_end"
                                    and e.get("listener") == "v%d" % f, 5) or {}
            want = "peer=%s" % LAB_ADDR[fam]["client"]
            tap.ok(out.get("ok") and out.get("body", "").strip() == want
                   and end.get("outcome") == "ok",
                   "tproxy + spoof_source, IPv%d: the server sees the client's own address "
                   "(%s), flow ok" % (fam, LAB_ADDR[fam]["client"]),
                   "%r\n%s" % (out, fmt_events(proxy.events.all()[-6:])))
        n = 1 << 20
        k = len([ln for ln in srv.out.splitlines() if ln.startswith("{")])
        out, r = py_client(lab, 4, "bulk", n)
        rec = (server_records(srv, k, 1) or [{}])[0]
        tap.ok(out.get("ok") and out.get("sha256") == out.get("sent_sha256") == rec.get("sha256")
               and rec.get("peer") == LAB_ADDR[4]["client"],
               "tproxy + spoof_source: 1 MiB each way intact, server's peer %s"
               % LAB_ADDR[4]["client"], "client %r\nserver %r" % (out, rec))
    finally:
        rc = proxy.stop()
    tap.eq(rc, 0, "tproxy + spoof_source tlsfault exits 0 on SIGTERM", proxy.stderr_tail())
    js = tflib.tmppath("spoof-quick.jsonl")
    t = TlsfaultCmd(["--listen", "0.0.0.0:%d" % PROXY_PORT, "--route", "tproxy",
                     "--spoof-source", "--json", js, "--text", "none", "-w", "1"], json_path=js,
                    prefix=lab.argv("router", []), name="tlsfault-spoof-quick")
    try:
        out, r = py_client(lab, 4, "get")
        tap.eq(out.get("body", "").strip(), "peer=%s" % LAB_ADDR[4]["client"],
               "tproxy, quick mode --spoof-source: the server sees the client's address",
               "%r\n%s" % (out, t.stderr_tail()))
    finally:
        t.stop()


# ------------------------------------------------------------ 5. loops

def part_loop(tap, lab, mode, proxy):
    ev = proxy.events
    for fam in FAMILIES:
        me = hostport(LAB_ADDR[fam]["router_c"], PROXY_PORT)
        before = ev.max_flow()
        r = lab.run("client", ["curl", "-sS", "--max-time", "5", "http://%s/" % me],
                    timeout=TIMEOUT)
        end = ev.wait(lambda e, b=before: e.get("event") == "flow_end" and e.get("flow", 0) > b
                      and e.get("original_dst") == me, 5) or {}
        text = [ln for ln in proxy.proc.err.splitlines() if "refusing a loop" in ln and me in ln]
        tap.ok(r.rc == 52 and end.get("close") == "refused"
               and "own listener" in str(end.get("error", "")) and text,
               "%s, IPv%d: a client that connects straight to %s (original destination: "
               "tlsfault's own listener) is refused, with a log line" % (mode, fam, me),
               "%s\n%s\nlog lines: %r" % (r.describe(), fmt_events(ev.all()[-4:]), text))


# ------------------------------------------------------------ a mode

def run_mode(tap, mode):
    t0 = time.monotonic()
    lab = tflib.LabNetns(mode=mode, v6=True, port=PORT, proxy_port=PROXY_PORT)
    servers = s_servers(lab)
    proxy = lab_proxy(lab, mode, "main-" + mode)
    tap.section(10, "%s clients" % mode, part_clients, tap, lab, mode, proxy)
    tap.section(2, "%s loops" % mode, part_loop, tap, lab, mode, proxy)
    rc = proxy.stop()
    tap.eq(rc, 0, "%s: tlsfault exits 0 on SIGTERM" % mode, proxy.stderr_tail())
    tap.section(6, "%s faults" % mode, part_faults, tap, lab, mode)
    tap.section(2, "%s quick mode" % mode, part_quick, tap, lab, mode)
    stop_all(servers)
    srv = py_server(lab)
    tap.section(3, "%s payload" % mode, part_payload, tap, lab, mode, srv)
    if mode == "tproxy":
        tap.section(5, "tproxy spoof_source", part_spoof, tap, lab, srv)
    srv.stop()
    lab.down()
    tap.diag("%s: %.1fs" % (mode, time.monotonic() - t0))


MODE_TESTS = {"redirect": 10 + 2 + 1 + 6 + 2 + 3, "tproxy": 10 + 2 + 1 + 6 + 2 + 3 + 5}


# ------------------------------------------------------------ other rule backends

BACKENDS = ["nft", "legacy"]


def part_backend(tap, backend):
    """The lab with native nft rules or iptables-legacy: both modes, both
    families, the Python client and server (tproxy with spoof_source)."""
    for mode in MODES:
        lab = tflib.LabNetns(mode=mode, v6=True, port=PORT, proxy_port=PROXY_PORT,
                             backend=backend)
        try:
            srv = py_server(lab)
            more = "spoof_source = true;" if mode == "tproxy" else ""
            proxy = lab_proxy(lab, mode, "%s-%s" % (backend, mode), more=more)
            try:
                for fam in FAMILIES:
                    out, r = py_client(lab, fam, "get")
                    peer = LAB_ADDR[fam]["client" if mode == "tproxy" else "router_s"]
                    start = proxy.events.wait(lambda e, f=fam: e.get("event") == "flow_start"
                                              and e.get("listener") == "v%d" % f, 5) or {}
                    tap.ok(out.get("ok") and out.get("body", "").strip() == "peer=" + peer
                           and start.get("original_dst") == original_dst(fam),
                           "lab-netns.sh --backend %s --mode %s, IPv%d: through the proxy "
                           "(original_dst %s), server's peer %s" % (
                               backend, mode, fam, original_dst(fam), peer),
                           "%r\n%s\n%s" % (out, fmt_events(proxy.events.all()[-4:]),
                                            lab.status()))
            finally:
                proxy.stop()
                srv.stop()
        finally:
            lab.down()


BACKEND_TESTS = len(MODES) * len(FAMILIES)


# ------------------------------------------------------------ 6. one machine

def part_one_machine(tap):
    pki = PKI.get()
    net = tflib.PrivateNet()
    ipt = tflib.netfilter_cmd(4, net.argv)
    ip6t = tflib.netfilter_cmd(6, net.argv)
    if ipt is None:
        raise RuntimeError("no working iptables in the private namespace")
    rule = ["-t", "nat", "-A", "OUTPUT", "-o", "lo", "-p", "tcp", "-d", "127.0.0.1",
            "--dport", "19443", "-m", "mark", "!", "--mark", "0x2",
            "-j", "REDIRECT", "--to-ports", "18443"]
    r = net.run([ipt] + rule)
    if r.rc != 0:
        raise RuntimeError("iptables failed: %s" % r.describe())
    srv = []
    for acc, six in (("127.0.0.1:19443", []), ("[::1]:19443", ["-6"])):
        p = net.proc(["openssl", "s_server", "-accept", acc, "-cert", pki.leaf, "-key",
                      pki.leaf_key, "-cert_chain", pki.inter, "-www", "-naccept", "1000000"]
                     + six, name="s_server-lo")
        if not p.wait_for(r"ACCEPT", stream="out", timeout=10):
            raise RuntimeError("s_server %s: %s" % (acc, p.err))
        srv.append(p)
    js = tflib.tmppath("one-machine.jsonl")
    conf = config("one-machine", [("lo4", "127.0.0.1:18443", "redirect", ""),
                                  ("lo6", "[::1]:18443", "redirect", "")], js, "mark = 2;\n")
    proxy = TlsfaultCmd(["-c", conf], json_path=js, prefix=net.argv([]), name="tlsfault-lo")
    ev = proxy.events

    def curl_lo(addr="127.0.0.1", port=19443):
        rs = "lab.test:%d:%s" % (port, ("[%s]" % addr) if ":" in addr else addr)
        return net.run(["curl", "-sS", "--cacert", pki.ca, "--resolve", rs, "--max-time", "8",
                        "https://lab.test:%d/" % port], timeout=TIMEOUT)

    try:
        before = ev.max_flow()
        r = curl_lo()
        end = ev.wait(lambda e: e.get("event") == "flow_end" and e.get("flow", 0) > before, 5) \
            or {}
        flows = [e for e in ev.all() if e.get("event") == "flow_start"]
        tap.ok(r.rc == 0 and page_ok(r.out) and end.get("outcome") == "ok"
               and end.get("original_dst") == "127.0.0.1:19443" and len(flows) == 1,
               "one machine (%s OUTPUT -o lo ... -m mark ! --mark 0x2 -j REDIRECT, tlsfault "
               "mark = 2): curl https://lab.test:19443/ goes through the proxy once, "
               "original_dst 127.0.0.1:19443" % ipt,
               "%s\n%s" % (r.describe(), fmt_events(ev.all()[-8:])))
        # Loop: straight to the proxy's port.
        before = ev.max_flow()
        r = net.run(["curl", "-sS", "--max-time", "5", "http://127.0.0.1:18443/"], timeout=TIMEOUT)
        end = ev.wait(lambda e: e.get("event") == "flow_end" and e.get("flow", 0) > before, 5) \
            or {}
        tap.ok(r.rc == 52 and end.get("close") == "refused"
               and "refusing a loop" in str(end.get("error", "")),
               "one machine: a client straight to 127.0.0.1:18443 is refused as a loop",
               "%s\n%s" % (r.describe(), fmt_events(ev.all()[-4:])))
        # IPv6 on ::1 with ip6tables.
        if ip6t:
            rule6 = ["-t", "nat", "-A", "OUTPUT", "-o", "lo", "-p", "tcp", "-d", "::1",
                     "--dport", "19443", "-m", "mark", "!", "--mark", "0x2",
                     "-j", "REDIRECT", "--to-ports", "18443"]
            r6 = net.run([ip6t] + rule6)
            before = ev.max_flow()
            r = curl_lo("::1")
            end = ev.wait(lambda e: e.get("event") == "flow_end" and e.get("flow", 0) > before,
                          5) or {}
            tap.ok(r6.rc == 0 and r.rc == 0 and page_ok(r.out)
                   and end.get("original_dst") == "[::1]:19443" and end.get("listener") == "lo6",
                   "one machine, IPv6 (%s on ::1): through listener lo6, original_dst "
                   "[::1]:19443" % ip6t, "%s\n%s\n%s" % (r6.describe(), r.describe(),
                                                         fmt_events(ev.all()[-4:])))
        else:
            tap.skip("one machine, IPv6", "no ip6tables")
        # The same with nft instead of iptables.
        if tflib.have("nft"):
            net.run([ipt, "-t", "nat", "-F", "OUTPUT"])
            if ip6t:
                net.run([ip6t, "-t", "nat", "-F", "OUTPUT"])
            nft = ("table ip tlsfault {\n chain output {\n"
                   "  type nat hook output priority -100; policy accept;\n"
                   "  oifname \"lo\" ip daddr 127.0.0.1 tcp dport 19443 meta mark != 0x2 "
                   "redirect to :18443\n }\n}\n")
            rn = net.run(["nft", "-f", "-"], input=nft)
            before = ev.max_flow()
            r = curl_lo()
            end = ev.wait(lambda e: e.get("event") == "flow_end" and e.get("flow", 0) > before,
                          5) or {}
            tap.ok(rn.rc == 0 and r.rc == 0 and page_ok(r.out)
                   and end.get("original_dst") == "127.0.0.1:19443",
                   "one machine with nft (meta mark != 0x2 redirect to :18443): curl through "
                   "the proxy", "%s\n%s\n%s" % (rn.describe(), r.describe(),
                                               fmt_events(ev.all()[-4:])))
        else:
            tap.skip("one machine with nft", "no nft command")
    finally:
        rc = proxy.stop()
        stop_all(srv)
    tap.eq(rc, 0, "one machine: tlsfault exits 0 on SIGTERM", proxy.stderr_tail())


ONE_MACHINE_TESTS = 5


def main(tap):
    if not tflib.binary_ready():
        print("Bail out! tlsfault binary not found: %s" % tflib.TF_BIN, flush=True)
        tap.finish()
        return
    why = tflib.netns_unavailable()
    if why is None:
        h = tflib.run([tflib.TF_BIN, "--help"], timeout=10)
        if "--route" not in h.out + h.err:
            why = "this tlsfault has no --route"
    if why:
        tap.skip_rest("namespace lab unavailable: %s" % why)
        return
    PKI.get()
    LabCA.get()
    for mode in MODES:
        tap.section(MODE_TESTS[mode], mode, run_mode, tap, mode)
    for backend in BACKENDS:
        t0 = time.monotonic()
        if backend == "legacy" and not tflib.have("iptables-legacy"):
            for _ in range(BACKEND_TESTS):
                tap.skip("backend legacy", "no iptables-legacy")
            continue
        if backend == "nft" and not tflib.have("nft"):
            for _ in range(BACKEND_TESTS):
                tap.skip("backend nft", "no nft command")
            continue
        tap.section(BACKEND_TESTS, "backend " + backend, part_backend, tap, backend)
        tap.diag("backend %s: %.1fs" % (backend, time.monotonic() - t0))
    t0 = time.monotonic()
    tap.section(ONE_MACHINE_TESTS, "one machine", part_one_machine, tap)
    tap.diag("one machine: %.1fs" % (time.monotonic() - t0))


PLAN = sum(MODE_TESTS.values()) + len(BACKENDS) * BACKEND_TESTS + ONE_MACHINE_TESTS

if __name__ == "__main__":
    tflib.run_main(PLAN, main)
