"""test_bad_input — what tlsfault does with input that is not a good TLS
handshake, and with upstreams that fail.

Clients send an HTTP request, random bytes, a truncated record, an SSLv2-
style hello, a ClientHello trickled a byte at a time, and first handshake
messages that cannot be a ClientHello (one claiming 16 MiB, a ServerHello):
a mitm listener must step aside so that the server answers at once, an
SNI-routed one must refuse at once, instead of waiting for the timeout.  A
server that speaks first (a banner) is relayed as it is through mitm too, and
a ClientHello the server sends says nothing about the client.  Non-TLS bytes
must be reported (non_tls event) and relayed unchanged: a recording
upstream checks what arrived, and a real s_server must answer through the
proxy exactly as it answers directly.  Upstreams that refuse or never
answer must end the flow with the right outcome and reason.  Afterwards the
proxy still serves a normal client and holds no more file descriptors than
before."""

import os
import random
import socket
import ssl
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tflib  # noqa: E402
from tflib import (PKI, SServer, TCPServer, Tlsfault, fmt_events, handler_record,  # noqa: E402
                   handler_silent, recv_all, write_config)


def sslv2_hello():
    """An SSL 2.0-compatible ClientHello (RFC 5246 E.2) offering TLS 1.0."""
    specs = bytes.fromhex("00003900003800003500002f010080")
    challenge = bytes(range(16))
    body = (b"\x01" + b"\x03\x01" + len(specs).to_bytes(2, "big") + (0).to_bytes(2, "big")
            + len(challenge).to_bytes(2, "big") + specs + challenge)
    return (0x8000 | len(body)).to_bytes(2, "big") + body


def random_bytes():
    rnd = random.Random(20240611)
    # First byte 0x01: neither a TLS content type, nor SSLv2, nor text.
    return b"\x01" + bytes(rnd.randrange(256) for _ in range(1999))


HTTP_REQ = b"GET / HTTP/1.1\r\nHost: lab.test\r\nUser-Agent: tlsfault-test\r\nAccept: */*\r\n\r\n"
TRUNCATED = b"\x16\x03\x01\x01\x2c" + b"\x01\x00\x01\x28\x03\x03" + b"\x00" * 4  # claims 300, sends 10

BANNER = b"220 banner.test ESMTP ready\r\n"
SERVER_SENT_SNI = b"server-sent.test"


def handler_banner(conn, srv):
    """Speaks first (an SMTP-style banner), then records until EOF."""
    conn.sendall(BANNER)
    srv.add_result(recv_all(conn))


SERVER_SENT_HELLO = tflib.client_hello(SERVER_SENT_SNI)


def handler_server_hello_first(conn, srv):
    """Speaks first with a ClientHello of its own (a TLS client on the
    upstream's port), then records until EOF."""
    conn.sendall(SERVER_SENT_HELLO)
    srv.add_result(recv_all(conn))


NON_TLS = [
    # name, bytes, kind, preview must start with
    ("HTTP request", HTTP_REQ, "http", "GET / HTTP/1.1"),
    ("random bytes", random_bytes(), "unknown", "\\x01"),
    ("SSLv2-style hello", sslv2_hello(), "sslv2", "\\x80"),
]


def raw_exchange(port, data, shut=False, timeout=5.0):
    """Connects, sends data (optionally half-closes), reads until EOF or
    timeout.  Returns (local_port, reply bytes, error)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    lp = s.getsockname()[1]
    err = None
    got = b""
    try:
        s.sendall(data)
        if shut:
            s.shutdown(socket.SHUT_WR)
        got = recv_all(s)
    except OSError as e:
        err = e
    finally:
        s.close()
    return lp, got, err


def send_and_close(port, data):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    lp = s.getsockname()[1]
    s.sendall(data)
    s.close()
    return lp


class SlowHandshake:
    """A real TLS client (ssl.MemoryBIO) whose ClientHello leaves one byte
    per TCP segment: the first `slow` bytes one per second, the rest every
    `gap` seconds; then the handshake goes on at full speed and fetches the
    s_server -www page."""

    def __init__(self, port, slow=5, gap=0.005):
        self.port, self.slow, self.gap = port, slow, gap
        self.ok = False
        self.error = None
        self.local_port = None
        self.hello_len = 0
        self.page = b""
        self.version = None
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        try:
            self._handshake()
            self.ok = True
        except Exception as e:
            self.error = e

    def _handshake(self):
        ctx = PKI.get().client_context()
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(inc, out, server_hostname="lab.test")
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=15)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.local_port = sock.getsockname()[1]
        try:
            try:
                obj.do_handshake()
            except ssl.SSLWantReadError:
                pass
            hello = out.read()
            self.hello_len = len(hello)
            for i in range(len(hello)):
                sock.sendall(hello[i:i + 1])
                time.sleep(1.0 if i < self.slow else self.gap)
            while True:
                try:
                    obj.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    pending = out.read()
                    if pending:
                        sock.sendall(pending)
                    b = sock.recv(65536)
                    if not b:
                        raise ConnectionError("server closed during the handshake")
                    inc.write(b)
            pending = out.read()
            if pending:
                sock.sendall(pending)
            self.version = obj.version()
            obj.write(b"GET / HTTP/1.0\r\n\r\n")
            sock.sendall(out.read())
            page = bytearray()
            while True:
                try:
                    d = obj.read(65536)
                    if not d:
                        break
                    page += d
                except ssl.SSLWantReadError:
                    b = sock.recv(65536)
                    if not b:
                        break
                    inc.write(b)
                except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                    break
            self.page = bytes(page)
        finally:
            sock.close()

    def join(self, timeout):
        self.t.join(timeout)
        return not self.t.is_alive()


def flow_of(proxy, local_port, timeout=10.0, listener=None):
    """(flow id, flow_end, events) of the flow from this client port, or
    (None, None, []) when there is none (or no port: the client never
    connected)."""
    if not local_port:
        return None, None, []
    fid = proxy.events.flow_by_client_port(local_port, timeout, listener)
    if fid is None:
        return None, None, []
    end = proxy.events.flow_end(fid, timeout)
    return fid, end, proxy.events.flow(fid)


def settle_fds(proxy, baseline, timeout=5.0):
    return tflib.wait_fd_count(proxy.pid, baseline, timeout)


class Lab:
    """The servers and the two proxies every part of this script uses.
    Proxy A: listeners tls (-> s_server), rec (-> recording upstream),
    refused (-> a closed port).  Proxy B: silent (-> an upstream that never
    answers) with a 2 s handshake timeout."""

    def __init__(self):
        pki = PKI.get()
        self.srv = SServer("1.3", "www", pki=pki)
        self.rec = TCPServer(handler_record)
        self.silent = TCPServer(handler_silent)
        self.banner = TCPServer(handler_banner)
        self.talker = TCPServer(handler_server_hello_first)
        closed_port = tflib.free_port()
        conf_a, _ = write_config("bad-a", [
            ("tls", "127.0.0.1:0", self.srv.addr),
            ("rec", "127.0.0.1:0", self.rec.addr),
            ("refused", "127.0.0.1:0", "127.0.0.1:%d" % closed_port),
            ("talker", "127.0.0.1:0", self.talker.addr),
            ("banner", "127.0.0.1:0", self.banner.addr),
        ])
        conf_b, _ = write_config("bad-b", [("silent", "127.0.0.1:0", self.silent.addr)],
                                 timeouts={"handshake": 2.0})
        self.pa = Tlsfault(config=conf_a, name="bad-a")
        self.pb = Tlsfault(config=conf_b, name="bad-b")
        self.tls_port = self.pa.port_of("tls")
        self.rec_port = self.pa.port_of("rec")
        self.refused_port = self.pa.port_of("refused")
        self.talker_port = self.pa.port_of("talker")
        self.banner_port = self.pa.port_of("banner")
        self.base_a = self.base_b = None
        self.slow = None


def part_baseline(tap, lab):
    r = tflib.py_client(lab.tls_port)
    fid, end, evs = flow_of(lab.pa, r.local_port, listener="tls")
    tap.ok(r.ok and end is not None and end.get("outcome") == "ok",
           "a normal TLS client works through the proxy (baseline)",
           "%r\n%s" % (r, fmt_events(evs)))
    time.sleep(0.2)
    lab.base_a = lab.pa.fd_count()
    lab.base_b = lab.pb.fd_count()
    tap.diag("fd baselines: proxy A %d, proxy B %d" % (lab.base_a, lab.base_b))


def part_non_tls(tap, lab, name, data, kind, preview):
    """Reported, relayed unchanged, answered by s_server as directly."""
    pa, rec = lab.pa, lab.rec
    rec.results.clear()
    lp, _, err = raw_exchange(lab.rec_port, data, shut=True)
    fid, end, evs = flow_of(pa, lp, listener="rec")
    res = rec.wait_results(1, timeout=5)
    recorded = res[-1] if res else None
    tap.ok(recorded == data,
           "%s: relayed unchanged to the upstream (%d bytes)" % (name, len(data)),
           "upstream received %r bytes (want %d); client error %r" % (
               None if recorded is None else len(recorded), len(data), err))
    nt = [e for e in evs if e.get("event") == "non_tls"]
    bad = []
    if not nt:
        bad.append("no non_tls event")
    else:
        e = nt[0]
        if e.get("kind") != kind:
            bad.append("kind %r, want %r" % (e.get("kind"), kind))
        if not str(e.get("preview", "")).startswith(preview):
            bad.append("preview %r does not start with %r" % (e.get("preview"), preview))
        if e.get("dir") != "c2s":
            bad.append("dir %r, want c2s" % e.get("dir"))
        if e.get("offset") != 0:
            bad.append("offset %r, want 0" % e.get("offset"))
        if not e.get("reason"):
            bad.append("no reason")
    if end is None:
        bad.append("no flow_end")
    else:
        if end.get("handshake") != "incomplete":
            bad.append("flow_end handshake %r" % end.get("handshake"))
        if not end.get("non_tls"):
            bad.append("flow_end lacks non_tls")
        if (end.get("bytes") or {}).get("c2s") != len(data):
            bad.append("flow_end bytes.c2s %r, want %d" % (
                (end.get("bytes") or {}).get("c2s"), len(data)))
    tap.ok(not bad, "%s: non_tls event kind %r with a preview, flow_end says so" % (name, kind),
           "\n".join(bad) + "\n" + fmt_events(evs))

    _, direct, derr = raw_exchange(lab.srv.port, data)
    lp, proxied, perr = raw_exchange(lab.tls_port, data)
    fid, end, evs = flow_of(pa, lp, listener="tls")
    tap.ok(proxied == direct and end is not None,
           "%s: s_server's answer through the proxy is the same as directly (%r)" % (
               name, direct[:16]),
           "direct %r (%r)\nproxied %r (%r)\n%s" % (direct, derr, proxied, perr,
                                                  fmt_events(evs)))


def hello_16mib():
    """A full record whose ClientHello header claims 16 MiB (more than the
    handshake cap, and than any server takes)."""
    body = b"\x01\xff\xff\xff\x03\x03" + bytes(16384 - 6)
    return b"\x16\x03\x01\x40\x00" + body


def server_hello_first():
    """A ServerHello as the client's first message (RFC 8446 §4.1.2: it must be a ClientHello)."""
    msg = b"\x02\x00\x00\x26\x03\x03" + bytes(32) + b"\x00\x13\x01\x00"
    return b"\x16\x03\x01" + len(msg).to_bytes(2, "big") + msg


UNREADABLE_HELLOS = [
    ("ClientHello claiming 16 MiB", hello_16mib(), "exceeds the"),
    ("ServerHello sent first", server_hello_first(), None),
]


class HelloLab:
    """A mitm listener and an SNI-routed one, both in front of the lab's
    s_server, with a 10 s handshake timeout: waiting for a ClientHello that
    cannot come would show as a wait of seconds."""

    def __init__(self, lab):
        ca = tflib.LabCA.get()
        json_path = tflib.tmppath("bad-hello.jsonl")
        conf = tflib.write_file("bad-hello.conf", """
listeners = (
  { name = "mitm"; listen = "%s"; route = "forward"; upstream = "%s"; mode = "mitm"; },
  { name = "sni"; listen = "%s"; route = "sni"; upstream_port = %d; },
  { name = "banner"; listen = "%s"; route = "forward"; upstream = "%s"; mode = "mitm"; }
);
ca = { dir = "%s"; };
timeouts = { handshake = 10.0; };
log = { text = "none"; json = "%s"; };
workers = 1;
""" % (tflib.listen_addr("127.0.0.1:0"), lab.srv.addr, tflib.listen_addr("127.0.0.1:0"),
       lab.srv.port, tflib.listen_addr("127.0.0.1:0"), lab.banner.addr, ca.dir, json_path))
        self.proxy = Tlsfault(config=conf, name="bad-hello")
        self.mitm_port = self.proxy.port_of("mitm")
        self.sni_port = self.proxy.port_of("sni")
        self.banner_port = self.proxy.port_of("banner")


def part_unreadable_hello(tap, lab, hl, name, data, error):
    """A mitm listener steps aside and relays (the server answers at once, as
    directly); an SNI-routed one refuses at once with its reason."""
    t0 = time.monotonic()
    _, direct, derr = raw_exchange(lab.srv.port, data)
    lp, proxied, perr = raw_exchange(hl.mitm_port, data)
    secs = time.monotonic() - t0
    fid, end, evs = flow_of(hl.proxy, lp, listener="mitm")
    tap.ok(direct and proxied == direct and secs < 3.0,
           "%s, mitm: the server's own answer, at once, as directly (%r)" % (name, direct[:8]),
           "direct %r (%r)\nproxied %r (%r) after %.1f s\n%s" % (
               direct, derr, proxied, perr, secs, fmt_events(evs)))
    bad = []
    if end is None:
        bad.append("no flow_end")
    else:
        if end.get("handshake") != "incomplete":
            bad.append("flow_end handshake %r" % end.get("handshake"))
        if end.get("version") is not None:
            bad.append("flow_end claims a version %r: nothing was negotiated" % end.get("version"))
        if (end.get("bytes") or {}).get("c2s") != len(data):
            bad.append("flow_end bytes.c2s %r, want %d" % ((end.get("bytes") or {}).get("c2s"),
                                                           len(data)))
    told = [e for e in evs if e.get("event") == "handshake" and e.get("dir") == "c2s"]
    if not told:
        bad.append("no c2s handshake event says what the client sent")
    elif error and error not in str(told[0].get("error", "")):
        bad.append("the handshake event's error %r lacks %r" % (told[0].get("error"), error))
    tap.ok(not bad, "%s, mitm: the log says what came instead of a ClientHello" % name,
           "\n".join(bad) + "\n" + fmt_events(evs))

    t0 = time.monotonic()
    lp, got, err = raw_exchange(hl.sni_port, data)
    secs = time.monotonic() - t0
    fid, end, evs = flow_of(hl.proxy, lp, listener="sni")
    reason = str((end or {}).get("reason", "")) + str((end or {}).get("summary", ""))
    tap.ok(end is not None and secs < 3.0 and "ClientHello" in reason,
           "%s, SNI route: refused at once, the reason names the ClientHello" % name,
           "after %.1f s, client got %r (%r)\nflow_end %r\n%s" % (
               secs, got, err, end, fmt_events(evs)))


def banner_exchange(port, reply=b"QUIT\r\n", timeout=5.0):
    """Waits for the banner (without sending a byte), answers, half-closes
    and reads to EOF.  Returns (local_port, what came, seconds to the banner)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    lp = s.getsockname()[1]
    t0 = time.monotonic()
    got = b""
    secs = None
    try:
        while len(got) < len(BANNER):
            b = s.recv(65536)
            if not b:
                break
            got += b
        secs = time.monotonic() - t0
        s.sendall(reply)
        s.shutdown(socket.SHUT_WR)
        got += recv_all(s)
    except OSError:
        pass
    finally:
        s.close()
    return lp, got, secs


def part_server_first(tap, lab, proxy, port, listener):
    """A server that talks first is no TLS server: relayed both ways, and
    the log says the server spoke first."""
    _, direct, _ = banner_exchange(lab.banner.port)
    lab.banner.results.clear()
    lp, proxied, secs = banner_exchange(port)
    res = lab.banner.wait_results(1, timeout=5)
    fid, end, evs = flow_of(proxy, lp, listener=listener)
    tap.ok(proxied == direct == BANNER and secs is not None and secs < 3.0
           and res and res[-1] == b"QUIT\r\n",
           "server speaks first, %s: the client gets the banner at once, the server the reply"
           % listener,
           "direct %r\nproxied %r after %r s\nserver got %r\n%s" % (
               direct, proxied, secs, res, fmt_events(evs)))
    nt = [e for e in evs if e.get("event") == "non_tls" and e.get("dir") == "s2c"]
    bad = []
    if not nt or not str(nt[0].get("preview", "")).startswith("220 banner.test"):
        bad.append("no s2c non_tls event with the banner as preview")
    if end is None:
        bad.append("no flow_end")
    else:
        if (end.get("bytes") or {}).get("s2c") != len(BANNER):
            bad.append("flow_end bytes.s2c %r, want %d" % ((end.get("bytes") or {}).get("s2c"),
                                                           len(BANNER)))
        if end.get("server_spoke_first") is not True:
            bad.append("flow_end lacks server_spoke_first")
        if "server spoke first" not in str(end.get("summary")):
            bad.append("summary %r does not say the server spoke first" % end.get("summary"))
        verdict = end.get("verdict") or {}
        if verdict.get("cause") != "not_tls_server" or "spoke first" not in str(
                verdict.get("summary")):
            bad.append("verdict %r" % verdict)
    tap.ok(not bad, "server speaks first, %s: the log shows the banner, says the server spoke "
           "first and blames the server" % listener, "\n".join(bad) + "\n" + fmt_events(evs))


def part_server_sent_hello(tap, lab):
    """A ClientHello from the server is logged, but it is not the client's;
    a real client fails as it does directly."""
    hello = SERVER_SENT_HELLO
    s = socket.create_connection(("127.0.0.1", lab.talker_port), timeout=5)
    lp = s.getsockname()[1]
    got = b""
    try:
        while len(got) < len(hello):
            b = s.recv(65536)
            if not b:
                break
            got += b
    except OSError:
        pass
    s.close()
    fid, end, evs = flow_of(lab.pa, lp, listener="talker")
    bad = []
    if got != hello:
        bad.append("the client got %r, not the server's %d bytes" % (got[:16], len(hello)))
    if not [e for e in evs if e.get("event") == "handshake" and e.get("dir") == "s2c"
            and e.get("type") == "client_hello"]:
        bad.append("no s2c client_hello event")
    if end is None:
        bad.append("no flow_end")
    else:
        for k in ("sni", "client_max_version"):
            if end.get(k) is not None:
                bad.append("flow_end %s %r comes from the server's hello" % (k, end.get(k)))
        verdict = end.get("verdict") or {}
        if verdict.get("cause") != "server_spoke_first" or verdict.get("who_fixes") != "server":
            bad.append("verdict %r" % verdict)
    tap.ok(not bad, "a ClientHello sent by the server is relayed and logged, not taken as the "
           "client's (no sni, no offered version); verdict server_spoke_first",
           "\n".join(bad) + "\n" + fmt_events(evs))

    def attempt(port):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
                with ctx.wrap_socket(raw, server_hostname="lab.test"):
                    return "handshake completed"
        except ssl.SSLError as e:
            return tflib.ssl_error_text(e)
        except OSError as e:
            return repr(e)
    direct, proxied = attempt(lab.talker.port), attempt(lab.talker_port)
    tap.ok(direct == proxied and "UNEXPECTED_MESSAGE" in direct.upper().replace(" ", "_"),
           "a Python client fails through the proxy as directly (%s)" % direct,
           "direct %r\nproxied %r" % (direct, proxied))


def part_truncated(tap, lab):
    """Header claims 300 bytes, 10 follow, then the client closes."""
    pa, rec = lab.pa, lab.rec
    rec.results.clear()
    lp = send_and_close(lab.rec_port, TRUNCATED)
    res = rec.wait_results(1, timeout=5)
    fid, end, evs = flow_of(pa, lp, listener="rec")
    tap.ok(res and res[-1] == TRUNCATED and end is not None
           and end.get("handshake") == "incomplete" and end.get("closed_by") == "client",
           "truncated record: relayed as is; flow_end incomplete, closed by the client",
           "upstream got %r\n%s" % (res, fmt_events(evs)))
    _, direct, _ = raw_exchange(lab.srv.port, TRUNCATED, shut=True)
    lp, proxied, perr = raw_exchange(lab.tls_port, TRUNCATED, shut=True)
    fid, end, evs = flow_of(pa, lp, listener="tls")
    tap.ok(proxied == direct and end is not None and end.get("handshake") == "incomplete",
           "truncated record: s_server's answer (%r) is the same through the proxy" % direct,
           "direct %r proxied %r (%r)\n%s" % (direct, proxied, perr, fmt_events(evs)))


def part_refused(tap, lab):
    lport = tflib.free_port()
    r = tflib.curl(lab.refused_port, extra=["--local-port", str(lport)], timeout=15)
    tap.diag("curl through the proxy to a refusing upstream: exit %d (%s)" % (
        r.rc, r.err.strip()[:200]))
    tap.ok(r.rc in (7, 35, 56), "upstream refuses: curl's connection is closed (exit %d)" % r.rc,
           r.describe())
    fid, end, evs = flow_of(lab.pa, lport, listener="refused")
    tap.ok(end is not None and end.get("outcome") == "failed"
           and "Connection refused" in str(end.get("error", "")),
           "upstream refuses: flow_end outcome failed, error says Connection refused",
           fmt_events(evs) or "no flow for client port %d" % lport)


def part_silent(tap, lab):
    """The upstream accepts and never answers; handshake timeout 2 s."""
    t0 = time.monotonic()
    r = tflib.py_client(lab.pb.port, timeout=15)
    dt = time.monotonic() - t0
    tap.ok(not r.ok and 1.5 <= dt <= 6.0,
           "silent upstream: the client is cut off after the 2 s handshake timeout (%.1fs)" % dt,
           repr(r))
    fid, end, evs = flow_of(lab.pb, r.local_port, listener="silent")
    tap.ok(end is not None and end.get("close") == "timeout"
           and "waiting for the server" in str(end.get("error", ""))
           and end.get("closed_by") == "proxy" and end.get("outcome") != "ok",
           "silent upstream: flow_end close timeout, 'waiting for the server', closed by proxy",
           fmt_events(evs))


def part_slow(tap, lab):
    slow = lab.slow
    done = slow.join(20)
    fid, end, evs = flow_of(lab.pa, slow.local_port, listener="tls")
    tap.ok(done and slow.ok and b"</HTML>" in slow.page,
           "ClientHello one byte per segment (%d bytes): the handshake completes" % slow.hello_len,
           "error %r, version %r, page %d bytes" % (slow.error, slow.version, len(slow.page)))
    # The hello is one record: 5 bytes of record header, 4 of handshake header.
    chs = [e for e in evs if e.get("event") == "handshake" and e.get("type") == "client_hello"]
    tap.ok(len(chs) == 1 and chs[0].get("server_name") == "lab.test"
           and chs[0].get("length") == slow.hello_len - 9 and end is not None
           and end.get("handshake") == "complete",
           "trickled ClientHello logged once, whole (length %d), flow complete" % (
               slow.hello_len - 9), fmt_events(evs))


def part_after(tap, lab):
    pa, pb = lab.pa, lab.pb
    r = tflib.py_client(lab.tls_port)
    fid, end, evs = flow_of(pa, r.local_port, listener="tls")
    tap.ok(r.ok and pa.alive() and end is not None and end.get("outcome") == "ok",
           "after all that, a normal TLS client still works", "%r\n%r\n%s" % (r, end, pa.stderr_tail()))
    na = settle_fds(pa, lab.base_a)
    nb = settle_fds(pb, lab.base_b)
    tap.ok(na == lab.base_a and nb == lab.base_b,
           "open fds back to the baseline (A %d/%d, B %d/%d)" % (na, lab.base_a, nb, lab.base_b),
           "proxy A fds:\n%s\nproxy B fds:\n%s" % ("\n".join(tflib.fd_list(pa.pid)),
                                                  "\n".join(tflib.fd_list(pb.pid))))
    rca = pa.stop()
    rcb = pb.stop()
    tap.ok(rca == 0 and rcb == 0, "both proxies exit 0 on SIGTERM (%r, %r)" % (rca, rcb),
           "A: %s\nB: %s" % (pa.stderr_tail(), pb.stderr_tail()))


def main(tap):
    if not tflib.binary_ready():
        print("Bail out! tlsfault binary not found: %s" % tflib.TF_BIN, flush=True)
        tap.finish()
        return
    lab = Lab()
    tap.section(1, "baseline", part_baseline, tap, lab)
    # The trickled ClientHello runs alongside the rest (it takes ~8 s).
    lab.slow = SlowHandshake(lab.tls_port)
    for name, data, kind, preview in NON_TLS:
        tap.section(3, name, part_non_tls, tap, lab, name, data, kind, preview)
    hl = HelloLab(lab)
    for name, data, error in UNREADABLE_HELLOS:
        tap.section(3, name, part_unreadable_hello, tap, lab, hl, name, data, error)
    tap.section(2, "server speaks first (mitm)", part_server_first, tap, lab, hl.proxy,
                hl.banner_port, "banner")
    hl.proxy.stop()
    tap.section(2, "server speaks first (passthrough)", part_server_first, tap, lab, lab.pa,
                lab.banner_port, "banner")
    tap.section(2, "server sends a ClientHello", part_server_sent_hello, tap, lab)
    tap.section(2, "truncated record", part_truncated, tap, lab)
    tap.section(2, "upstream refuses", part_refused, tap, lab)
    tap.section(2, "silent upstream", part_silent, tap, lab)
    tap.section(2, "slow ClientHello", part_slow, tap, lab)
    tap.section(3, "afterwards", part_after, tap, lab)
    lab.srv.stop()


PLAN = 1 + 3 * len(NON_TLS) + 3 * len(UNREADABLE_HELLOS) + 2 + 2 + 2 + 2 + 2 + 2 + 2 + 3

if __name__ == "__main__":
    tflib.run_main(PLAN, main)
