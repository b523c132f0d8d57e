"""test_routes — the routes that find the server in the connection itself
and need no netfilter: sni and connect, on loopback, with real clients.

sni: tlsfault reads the ClientHello, resolves its server name (evdns:
/etc/hosts first) and connects to it on upstream_port.  Two origins,
openssl s_server with a certificate each (a.lab.test on 127.0.0.2,
b.lab.test on 127.0.0.3, the same port): every client names one of them
and reaches the proxy (curl --resolve NAME:PORT:127.0.0.1), and the
certificate it verifies says which origin answered.  The names resolve
for tlsfault through a private /etc/hosts: tlsfault runs under
`unshare -m` (root) or `unshare -rm` (a user namespace) with a temporary
hosts file bind-mounted over /etc/hosts; the machine's own /etc/hosts is
never touched.  Without either, the two-name part is skipped.
 1. curl, s_client, gnutls-cli and Python each reach a.lab.test and
    b.lab.test through one listener; flow_start/flow_end say route sni
    and the upstream name:port.
 2. A name outside `allow` is closed before any server is contacted
    (flow_end close "refused", "not in the allow list"); a hello without
    SNI goes to default_upstream, or is closed where there is none; bytes
    that are not TLS are refused; a fault rule matching one SNI name fires
    on that origin only.
 3. Quick mode: --route sni --upstream-port N.

connect: an HTTP CONNECT proxy (curl --proxy http://127.0.0.1:P -p,
openssl s_client -proxy, Python by hand).
 4. The tunnel carries curl's and s_client's handshake to the origin, and
    1 MiB both ways intact (Python, length-prefixed echo).
 5. A target outside `allow`: 403 (curl: exit 56 "CONNECT tunnel failed,
    response 403"); a refused upstream: 502; a request that is not
    CONNECT: 405 with "Allow: CONNECT"; each flow_end says why.
 6. A rule matching dest/dest_port fires on the connection to that
    origin only.
 7. Quick mode: --route connect.
The connect proxies resolve "localhost" through a private /etc/hosts too
where one can be had, so no name query ever leaves the machine."""

import os
import re
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tflib  # noqa: E402
from tflib import PKI, Proc, TlsfaultCmd, fmt_events, page_ok  # noqa: E402

TIMEOUT = 10.0
GET = "GET / HTTP/1.0\r\n\r\n"


# ------------------------------------------------------------ origins

class Origin:
    """openssl s_server -www on addr:port with its own certificate."""

    def __init__(self, addr, port, chain, key, name):
        pki = PKI.get()
        self.addr, self.port, self.name = addr, port, name
        self.proc = Proc(["openssl", "s_server", "-accept", tflib.hostport(addr, port),
                          "-cert", chain, "-key", key, "-cert_chain", pki.inter,
                          "-naccept", "1000000", "-www"], name="s_server-" + name)
        if not self.proc.wait_for(r"ACCEPT", stream="out", timeout=10):
            err = self.proc.err
            self.proc.kill()
            raise RuntimeError("s_server %s on %s:%d did not start: %s" % (name, addr, port, err))

    def stop(self):
        self.proc.stop()


def port_free_on(port, addrs):
    for a in addrs:
        s = socket.socket()
        try:
            s.bind((a, port))
        except OSError:
            return False
        finally:
            s.close()
    return True


def shared_port(addrs):
    """A port free on every address in addrs (all on loopback)."""
    for _ in range(50):
        p = tflib.free_port(host=addrs[0])
        if port_free_on(p, addrs):
            return p
    raise RuntimeError("no port free on all of %r" % (addrs,))


# ------------------------------------------------------------ clients

def curl(proxy_port, host, extra=(), timeout=TIMEOUT):
    """curl -v to https://host:PROXY/ with host resolved to the proxy."""
    pki = PKI.get()
    return tflib.run(["curl", "-sS", "-v", "--cacert", pki.ca, "--resolve",
                      "%s:%d:127.0.0.1" % (host, proxy_port), "--max-time", str(int(timeout - 2))]
                     + list(extra) + ["https://%s:%d/" % (host, proxy_port)], timeout=timeout)


def curl_subject(err):
    m = re.search(r"\*\s+subject: (.*)", err)
    return m.group(1).strip() if m else None


def s_client(port, servername=None, verify_name=None, extra=(), timeout=TIMEOUT):
    """s_client to 127.0.0.1:port; servername None sends no SNI."""
    pki = PKI.get()
    argv = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-CAfile", pki.ca,
            "-verify_return_error", "-ign_eof"]
    argv += ["-servername", servername] if servername else ["-noservername"]
    if verify_name:
        argv += ["-verify_hostname", verify_name]
    return tflib.run(argv + list(extra), input=GET, timeout=timeout)


def peer_cn(text):
    """The subject CN of the peer's certificate in s_client's output."""
    m = re.search(r"(?m)^subject=.*CN\s*=\s*([^,\n]+)", text)
    return m.group(1).strip() if m else None


def flow_of(events, pred, timeout=5.0):
    """(flow_start, flow_end) of the first flow whose flow_start satisfies pred."""
    start = events.wait(lambda e: e.get("event") == "flow_start" and pred(e), timeout)
    if not start:
        return None, None
    return start, events.flow_end(start["flow"], timeout)


def end_where(events, after, pred, timeout=5.0):
    """The first flow_end of a flow numbered above after that satisfies
    pred, waiting for it ({} if none comes).  Flows are told apart by what
    they carried, not by order: a client's flow_end may be logged after the
    client has exited and the next one has started."""
    e = events.wait(lambda e: e.get("event") == "flow_end" and isinstance(e.get("flow"), int)
                    and e["flow"] > after and pred(e), timeout)
    return e or {}


def ends_after(events, after):
    return [e for e in events.all() if e.get("event") == "flow_end"
            and isinstance(e.get("flow"), int) and e["flow"] > after]


# ------------------------------------------------------------ the sni lab

class SniLab:
    def __init__(self):
        pki = PKI.get()
        self.pki = pki
        self.port = shared_port(["127.0.0.2", "127.0.0.3"])
        a_chain, a_key = tflib.make_leaf("a.lab.test")
        b_chain, b_key = tflib.make_leaf("b.lab.test")
        self.a = Origin("127.0.0.2", self.port, a_chain, a_key, "a")
        self.b = Origin("127.0.0.3", self.port, b_chain, b_key, "b")
        # c.lab.test resolves (to nothing listening) so that a refusal is
        # the allow list's, never a failed resolution.
        self.hosts = tflib.write_file("routes-hosts", (
            "127.0.0.1 localhost\n::1 localhost ip6-localhost\n"
            "127.0.0.2 a.lab.test\n127.0.0.3 b.lab.test\n127.0.0.4 c.lab.test\n"))
        self.json = tflib.tmppath("routes-sni.jsonl")
        la = tflib.listen_addr
        conf = """
listeners = (
  { name = "sni"; listen = "%s"; route = "sni"; upstream_port = %d;
    allow = [ "a.lab.test", "B.LAB.TEST" ]; default_upstream = "127.0.0.2:%d"; },
  { name = "sni-nodefault"; listen = "%s"; route = "sni"; upstream_port = %d; },
  { name = "sni-fault"; listen = "%s"; route = "sni"; upstream_port = %d; }
);
faults = (
  { name = "b-reset"; fault = "reset-after-client-hello";
    match = { listener = "sni-fault"; sni = "b.*"; }; }
);
log = { text = "stderr"; json = "%s"; };
workers = 1;
""" % (la("127.0.0.1:0"), self.port, self.port, la("127.0.0.1:0"), self.port,
       la("127.0.0.1:0"), self.port, self.json)
        self.conf = tflib.write_file("routes-sni.conf", conf)
        self.proxy = TlsfaultCmd(["-c", self.conf], json_path=self.json, name="tlsfault-sni",
                                 prefix=tflib.with_hosts([], self.hosts))
        self.events = self.proxy.events

    def stop(self):
        rc = self.proxy.stop()
        self.a.stop()
        self.b.stop()
        return rc


def part_sni_names(tap, lab):
    p = lab.proxy.port_of("sni")
    ev = lab.events
    for name, cn in (("a.lab.test", "a.lab.test"), ("b.lab.test", "b.lab.test")):
        before = ev.max_flow()
        r = curl(p, name)
        subj = curl_subject(r.err)
        tap.ok(r.rc == 0 and page_ok(r.out) and subj and ("CN=%s" % cn) in subj,
               "sni: curl https://%s/ through the proxy: origin %s answered (its certificate "
               "verified), page whole" % (name, cn), "subject %r\n%s" % (subj, r.describe()))
        want = "%s:%d" % (name, lab.port)
        end = end_where(ev, before, lambda e, w=want: e.get("upstream") == w)
        start = ev.wait(lambda e, f=end.get("flow", -1):
                        e.get("flow") == f and e.get("event") == "flow_start", 3) or {}
        tap.ok(start.get("route") == "sni" and end.get("route") == "sni"
               and end.get("sni") == name and end.get("outcome") == "ok",
               "sni: flow_start and flow_end say route sni, upstream %s, outcome ok" % want,
               fmt_events(ev.flow(end["flow"]) if end else ends_after(ev, before)))
    r = s_client(p, "b.lab.test", "b.lab.test")
    tap.ok(r.rc == 0 and page_ok(r.out) and peer_cn(r.out) == "b.lab.test",
           "sni: openssl s_client -servername b.lab.test: verified, origin b answered",
           "cn %r\n%s" % (peer_cn(r.out), r.describe()))
    r = tflib.gnutls_cli(p, host="a.lab.test", timeout=TIMEOUT)
    tap.ok(r.rc == 0 and "CN=a.lab.test" in r.out and page_ok(r.out),
           "sni: gnutls-cli --sni-hostname a.lab.test: verified, origin a answered", r.describe())
    ctx = lab.pki.client_context()
    r = tflib.py_client(p, host="b.lab.test", ctx=ctx, timeout=TIMEOUT)
    tap.ok(r.ok and page_ok(r.data.decode("utf-8", "replace")),
           "sni: Python ssl with server_hostname b.lab.test: verified, page whole", repr(r))


def part_sni_refusals(tap, lab):
    p = lab.proxy.port_of("sni")
    ev = lab.events
    # Not in the allow list.
    before = ev.max_flow()
    r = curl(p, "c.lab.test")
    end = end_where(ev, before, lambda e: e.get("sni") == "c.lab.test")
    ends = [end]
    tap.ok(r.rc == 35 and end.get("close") == "refused"
           and "not in the allow list" in str(end.get("error", "")) + str(end.get("summary", "")),
           "sni: c.lab.test (not in allow) is closed before any server: curl 35, flow_end "
           "close=refused, 'not in the allow list'", "%s\n%s" % (r.describe(), fmt_events(ends)))
    # The allow list is without regard to case ("B.LAB.TEST" allows b.lab.test, done
    # above); the refusal named the SNI.
    tap.ok("c.lab.test" in str(end.get("error", "")) + str(end.get("summary", "")),
           "sni: the refusal names the server name", fmt_events(ends))
    # No SNI: default_upstream (origin a).
    r = s_client(p, None, "a.lab.test")
    tap.ok(r.rc == 0 and page_ok(r.out) and peer_cn(r.out) == "a.lab.test",
           "sni: a ClientHello without SNI goes to default_upstream (origin a)", r.describe())
    # No SNI, no default: closed.
    q = lab.proxy.port_of("sni-nodefault")
    before = ev.max_flow()
    r = s_client(q, None, "a.lab.test")
    end = end_where(ev, before, lambda e: e.get("listener") == "sni-nodefault")
    ends = [end]
    tap.ok(r.rc != 0 and end.get("close") == "refused"
           and re.search(r"no server name", str(end.get("error", ""))),
           "sni: without SNI and without default_upstream the client is closed "
           "(flow_end: refused, no server name)", "%s\n%s" % (r.describe(), fmt_events(ends)))
    # Not TLS at all.
    before = end.get("flow", before)
    try:
        with socket.create_connection(("127.0.0.1", q), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
            got = tflib.recv_all(s)
    except OSError as e:
        got = repr(e).encode()
    end = end_where(ev, before, lambda e: e.get("listener") == "sni-nodefault")
    ends = [end]
    tap.ok(end.get("close") == "refused" and "ClientHello" in str(end.get("error", "")),
           "sni: bytes that are not a ClientHello are refused (%d bytes back)" % len(got),
           fmt_events(ends))
    # A fault rule matching one name fires on that origin only.
    f = lab.proxy.port_of("sni-fault")
    ra = curl(f, "a.lab.test")
    rb = curl(f, "b.lab.test")
    tap.ok(ra.rc == 0 and page_ok(ra.out) and rb.rc == 35
           and "Connection reset by peer" in rb.err,
           "sni: rule b-reset (match sni b.*) resets b.lab.test only (a: %r, b: %r)"
           % (ra.rc, rb.rc), "%s\n%s" % (ra.describe(), rb.describe()))


def part_sni_quick(tap, lab):
    js = tflib.tmppath("routes-sni-quick.jsonl")
    t = TlsfaultCmd(["--listen", tflib.listen_addr("127.0.0.1:0"), "--route", "sni",
                     "--upstream-port", lab.port, "--json", js, "--text", "none", "-w", "1"],
                    json_path=js, name="tlsfault-sni-quick",
                    prefix=tflib.with_hosts([], lab.hosts))
    try:
        r = curl(t.port, "b.lab.test")
        subj = curl_subject(r.err)
        end = t.events.wait(lambda e: e.get("event") == "flow_end", 5) or {}
        tap.ok(r.rc == 0 and subj and "CN=b.lab.test" in subj and page_ok(r.out)
               and end.get("upstream") == "b.lab.test:%d" % lab.port,
               "sni, quick mode (--route sni --upstream-port %d): curl reaches b.lab.test"
               % lab.port, "%s\n%s" % (r.describe(), fmt_events(t.events.all())))
    finally:
        rc = t.stop()
    tap.eq(rc, 0, "sni quick-mode tlsfault exits 0 on SIGTERM", t.stderr_tail())


def part_sni(tap):
    method = tflib.hosts_method()
    if method is None:
        for _ in range(7 + 6 + 1 + 2):
            tap.skip("sni with two names", "no private /etc/hosts here (unshare -m needs root, "
                     "unshare -rm needs user namespaces)")
        return
    tap.diag("sni: names resolved by a private /etc/hosts (%s)" %
             ("unshare -m + mount --bind" if method == "root" else "unshare -rm + mount --bind"))
    lab = SniLab()
    tap.section(7, "sni names", part_sni_names, tap, lab)
    tap.section(6, "sni refusals", part_sni_refusals, tap, lab)
    rc = lab.stop()
    tap.eq(rc, 0, "sni tlsfault exits 0 on SIGTERM", lab.proxy.stderr_tail())
    # Quick mode last (its own tlsfault; the origins are restarted).
    lab.a = Origin("127.0.0.2", lab.port, *tflib.make_leaf("a.lab.test"), name="a")
    lab.b = Origin("127.0.0.3", lab.port, *tflib.make_leaf("b.lab.test"), name="b")
    tap.section(2, "sni quick mode", part_sni_quick, tap, lab)
    lab.a.stop()
    lab.b.stop()


# ------------------------------------------------------------ connect

def curl_proxy(proxy_port, url, extra=(), timeout=TIMEOUT):
    pki = PKI.get()
    return tflib.run(["curl", "-sS", "--cacert", pki.ca, "--proxy",
                      "http://127.0.0.1:%d" % proxy_port, "-p", "--max-time",
                      str(int(timeout - 2))] + list(extra) + [url], timeout=timeout)


def connect_tunnel(proxy_port, target, timeout=TIMEOUT):
    """A socket through the CONNECT proxy to target ("host:port"): returns
    (socket, status line, head); the socket is None unless the answer is 200."""
    s = socket.create_connection(("127.0.0.1", proxy_port), timeout=timeout)
    s.sendall(("CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (target, target)).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        b = s.recv(1)
        if not b:
            break
        head += b
    text = head.decode("latin-1")
    status = text.split("\r\n", 1)[0]
    if not re.match(r"HTTP/1\.[01] 200 ", status):
        s.close()
        return None, status, text
    return s, status, text


class ConnectLab:
    def __init__(self):
        self.pki = PKI.get()
        self.srv = tflib.SServer()            # origin on 127.0.0.1 (certificate: localhost)
        self.srv2 = tflib.SServer()           # a second origin, for the dest_port rule
        self.bulk = tflib.TCPServer(tflib.handler_bulk, tls=self.pki.server_context())
        self.closed = tflib.free_port()       # nothing listens there
        self.json = tflib.tmppath("routes-connect.jsonl")
        conf = """
listeners = (
  { name = "conn"; listen = "%s"; route = "connect";
    allow = [ "localhost", "lab.test:*" ]; }
);
faults = (
  { name = "second-origin"; fault = "reset-after-client-hello";
    match = { dest = "127.0.0.0/8"; dest_port = %d; }; }
);
log = { text = "stderr"; json = "%s"; };
workers = 1;
""" % (tflib.listen_addr("127.0.0.1:0"), self.srv2.port, self.json)
        self.conf = tflib.write_file("routes-connect.conf", conf)
        # "localhost" from a known /etc/hosts where one can be had (no DNS query
        # ever leaves the machine); else from the machine's own.
        self.hosts = tflib.write_file("routes-connect-hosts", "127.0.0.1 localhost\n")
        prefix = tflib.with_hosts([], self.hosts) if tflib.hosts_method() else ()
        self.proxy = TlsfaultCmd(["-c", self.conf], json_path=self.json, name="tlsfault-connect",
                                 prefix=prefix)
        self.events = self.proxy.events
        self.port = self.proxy.port_of("conn")


def part_connect_ok(tap, lab):
    ev = lab.events
    before = ev.max_flow()
    r = curl_proxy(lab.port, "https://localhost:%d/" % lab.srv.port, ["-v"])
    tap.ok(r.rc == 0 and page_ok(r.out)
           and re.search(r"< HTTP/1\.1 200 Connection established", r.err),
           "connect: curl --proxy http://127.0.0.1:%d -p https://localhost:%d/: 200, then "
           "the page over the tunnel" % (lab.port, lab.srv.port), r.describe(3000))
    want = "localhost:%d" % lab.srv.port
    end = end_where(ev, before, lambda e: e.get("upstream") == want)
    start = ev.wait(lambda e, f=end.get("flow", -1):
                    e.get("flow") == f and e.get("event") == "flow_start", 3) or {}
    tap.ok(start.get("route") == "connect" and end.get("upstream") == want
           and end.get("outcome") == "ok" and end.get("sni") == "localhost",
           "connect: flow_start route connect; flow_end upstream %s, outcome ok, the tunnelled "
           "ClientHello decoded (sni localhost)" % want, fmt_events(ev.flow(end.get("flow"))))
    r = tflib.run(["openssl", "s_client", "-proxy", "127.0.0.1:%d" % lab.port, "-connect",
                   "localhost:%d" % lab.srv.port, "-servername", "lab.test", "-CAfile",
                   lab.pki.ca, "-verify_return_error", "-verify_hostname", "lab.test",
                   "-ign_eof"], input=GET, timeout=TIMEOUT)
    tap.ok(r.rc == 0 and page_ok(r.out),
           "connect: openssl s_client -proxy: verified handshake and page over the tunnel",
           r.describe())
    # 1 MiB each way through the tunnel.
    payload = tflib.pattern_bytes(1 << 20)
    s, _status, head = connect_tunnel(lab.port, "localhost:%d" % lab.bulk.port)
    got = None
    if s is not None:
        try:
            t = lab.pki.client_context().wrap_socket(s, server_hostname="lab.test")
            t.sendall(len(payload).to_bytes(8, "big") + payload)
            buf = bytearray()
            while len(buf) < len(payload):
                b = t.recv(1 << 20)
                if not b:
                    break
                buf += b
            got = bytes(buf)
            t.close()
        except (OSError, ValueError) as e:
            got = repr(e).encode()
    srv = lab.bulk.wait_results(1, 10)
    tap.ok(s is not None and got == payload and srv and srv[-1] == (len(payload),
                                                                       tflib.sha256(payload)),
           "connect: Python through the tunnel: 1 MiB to an echo server and back, intact",
           "answer %r, got %r bytes, server saw %r" % (head, len(got or b""), srv))


def part_connect_refusals(tap, lab):
    ev = lab.events
    cases = [
        # (title, url, want status, error regex)
        ("a target outside allow (127.0.0.1:%d)" % lab.srv.port,
         "https://127.0.0.1:%d/" % lab.srv.port, 403, r"not in the allow list"),
        ("an allowed target where nothing listens (localhost:%d)" % lab.closed,
         "https://localhost:%d/" % lab.closed, 502, r"[Cc]onnection refused"),
    ]
    for title, url, status, rx in cases:
        before = ev.max_flow()
        r = curl_proxy(lab.port, url)
        end = end_where(ev, before, lambda e, rx=rx: re.search(rx, str(e.get("error", ""))))
        ends = [end] if end else ends_after(ev, before)
        tap.ok(r.rc == 56 and re.search(r"curl: \(56\) CONNECT tunnel failed, response %d"
                                        % status, r.err),
               "connect: %s: curl exit 56, 'CONNECT tunnel failed, response %d'" % (title, status),
               r.describe())
        tap.ok(re.search(rx, str(end.get("error", "")) + " " + str(end.get("summary", ""))),
               "connect: %s: flow_end says why (/%s/)" % (title, rx), fmt_events(ends))
    # Not CONNECT: an absolute-form GET, as curl sends for http:// without -p.
    before = ev.max_flow()
    r = tflib.run(["curl", "-sS", "-i", "--proxy", "http://127.0.0.1:%d" % lab.port,
                   "--max-time", "8", "http://localhost:%d/" % lab.srv.port], timeout=TIMEOUT)
    end = end_where(ev, before, lambda e: e.get("close") == "refused")
    ends = [end] if end else ends_after(ev, before)
    tap.ok(r.rc == 0 and re.match(r"HTTP/1\.1 405 ", r.out)
           and re.search(r"(?mi)^Allow: CONNECT\r?$", r.out),
           "connect: a GET (curl --proxy without -p, http://): 405 with Allow: CONNECT",
           r.describe())
    tap.ok(end.get("close") == "refused" and "not a CONNECT request" in str(end.get("error")),
           "connect: the GET's flow_end: refused, 'not a CONNECT request'", fmt_events(ends))


def part_connect_dest(tap, lab):
    ev = lab.events
    ra = curl_proxy(lab.port, "https://localhost:%d/" % lab.srv.port)
    before = ev.max_flow()
    rb = curl_proxy(lab.port, "https://localhost:%d/" % lab.srv2.port)
    end = end_where(ev, before, lambda e: e.get("upstream") == "localhost:%d" % lab.srv2.port)
    tap.ok(ra.rc == 0 and rb.rc == 35 and "Connection reset by peer" in rb.err,
           "connect: rule second-origin (match dest 127.0.0.0/8, dest_port %d) resets the "
           "tunnel to that origin only" % lab.srv2.port, "%s\n%s" % (ra.describe(), rb.describe()))
    names = [x if isinstance(x, str) else (x or {}).get("rule") for x in end.get("faults") or []]
    tap.ok("second-origin" in names,
           "connect: that flow_end names the rule", fmt_events(ev.flow(end.get("flow"))
                                                                if end else ev.all()[-20:]))


def part_connect_quick(tap, lab):
    js = tflib.tmppath("routes-connect-quick.jsonl")
    t = TlsfaultCmd(["--listen", tflib.listen_addr("127.0.0.1:0"), "--route", "connect",
                     "--json", js, "--text", "none", "-w", "1"], json_path=js,
                    name="tlsfault-connect-quick",
                    prefix=tflib.with_hosts([], lab.hosts) if tflib.hosts_method() else ())
    try:
        r = curl_proxy(t.port, "https://localhost:%d/" % lab.srv.port)
        tap.ok(r.rc == 0 and page_ok(r.out),
               "connect, quick mode (--route connect): curl through it", r.describe())
    finally:
        rc = t.stop()
    tap.eq(rc, 0, "connect quick-mode tlsfault exits 0 on SIGTERM", t.stderr_tail())


def part_connect(tap):
    lab = ConnectLab()
    tap.section(4, "connect ok", part_connect_ok, tap, lab)
    tap.section(6, "connect refusals", part_connect_refusals, tap, lab)
    tap.section(2, "connect dest rule", part_connect_dest, tap, lab)
    rc = lab.proxy.stop()
    tap.eq(rc, 0, "connect tlsfault exits 0 on SIGTERM", lab.proxy.stderr_tail())
    tap.section(2, "connect quick mode", part_connect_quick, tap, lab)
    lab.srv.stop()
    lab.srv2.stop()


def main(tap):
    if not tflib.binary_ready():
        print("Bail out! tlsfault binary not found: %s" % tflib.TF_BIN, flush=True)
        tap.finish()
        return
    t0 = time.monotonic()
    PKI.get()
    part_sni(tap)
    tap.diag("sni: %.1fs" % (time.monotonic() - t0))
    t1 = time.monotonic()
    part_connect(tap)
    tap.diag("connect: %.1fs" % (time.monotonic() - t1))


PLAN = 7 + 6 + 1 + 2 + 4 + 6 + 2 + 1 + 2

if __name__ == "__main__":
    tflib.run_main(PLAN, main)
