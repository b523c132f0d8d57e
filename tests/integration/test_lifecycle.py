"""test_lifecycle — the daemon's life around its flows: SIGTERM drain,
SIGHUP reload (good and broken files), IPv4 and IPv6 listeners together,
half-close, and back-pressure against an upstream that stops reading."""

import hashlib
import os
import signal
import socket
import ssl
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tflib  # noqa: E402
from tflib import (PKI, TCPServer, Tlsfault, fmt_events, handler_echo,  # noqa: E402
                   handler_record_then_reply, listen_addr, make_tagger, recv_all,
                   write_config, write_file, config_text)


def tls_connect(port, host="127.0.0.1", timeout=10.0):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    raw = socket.socket(family, socket.SOCK_STREAM)
    raw.settimeout(timeout)
    raw.connect((host, port))
    lp = raw.getsockname()[1]
    s = PKI.get().client_context().wrap_socket(raw, server_hostname="lab.test")
    return s, lp


def ask(s, data, want_len, timeout=5.0):
    """Sends data and reads exactly want_len bytes back (or what came)."""
    s.settimeout(timeout)
    s.sendall(data)
    got = b""
    while len(got) < want_len:
        b = s.recv(want_len - len(got))
        if not b:
            break
        got += b
    return got


def tls_close(s):
    try:
        s = s.unwrap()
    except (OSError, ssl.SSLError, ValueError):
        pass
    try:
        s.close()
    except OSError:
        pass


def connect_refused(port, host="127.0.0.1"):
    try:
        c = socket.create_connection((host, port), timeout=2)
    except ConnectionRefusedError:
        return True, "refused"
    except OSError as e:
        return False, repr(e)
    # Accepted by the kernel: see whether anyone serves it.
    c.close()
    return False, "connection accepted"


def test_sigterm(tap, echo_addr):
    # a) a live flow finishes during the grace period; new ones are refused
    conf, _ = write_config("term", [("a", "127.0.0.1:0", echo_addr)], timeouts={"grace": 5.0})
    p = Tlsfault(config=conf, name="term")
    s, lp = tls_connect(p.port)
    first = ask(s, b"before", 6)
    off = p.proc.err_len()
    t0 = time.monotonic()
    p.proc.send_signal(signal.SIGTERM)
    saw = p.proc.wait_for(r"SIGTERM", timeout=3, start=off)
    time.sleep(0.2)
    refused, how = connect_refused(p.port)
    tap.ok(saw and refused, "SIGTERM: new connections are refused (%s)" % how,
           "stderr after SIGTERM: %s" % p.proc.err[off:][-1500:])
    try:
        second = ask(s, b"during the grace period", 23)
    except OSError as e:
        second = repr(e).encode()
    tls_close(s)
    tap.ok(first == b"before" and second == b"during the grace period",
           "SIGTERM: the live connection keeps working until it ends", "got %r, %r" % (
               first, second))
    rc = p.proc.wait(7.0)
    dt = time.monotonic() - t0
    if rc is None:
        p.stop(signal.SIGKILL)
    fid = p.events.flow_by_client_port(lp, timeout=1)
    end = p.events.flow_end(fid, timeout=1) if fid else None
    tap.ok(rc == 0 and dt < 5.0 + 1.0 and end is not None and end.get("outcome") == "ok",
           "SIGTERM: exits 0 within the grace period once the live flow ended (%.1fs)" % dt,
           "exit %r after %.1fs\nflow_end %r\nstderr: %s" % (rc, dt, end, p.stderr_tail()))

    # b) a flow still open when the grace period ends is closed by the proxy
    conf, _ = write_config("term2", [("a", "127.0.0.1:0", echo_addr)], timeouts={"grace": 1.0})
    p = Tlsfault(config=conf, name="term2")
    s, lp = tls_connect(p.port)
    ask(s, b"x", 1)
    t0 = time.monotonic()
    p.proc.send_signal(signal.SIGTERM)
    rc = p.proc.wait(6.0)
    dt = time.monotonic() - t0
    if rc is None:
        p.stop(signal.SIGKILL)
    try:
        s.settimeout(2)
        tail = s.recv(10)
    except (OSError, ssl.SSLError) as e:
        tail = repr(e)
    s.close()
    fid = p.events.flow_by_client_port(lp, timeout=1)
    end = p.events.flow_end(fid, timeout=1) if fid else None
    tap.ok(rc == 0 and 0.8 <= dt <= 3.0 and end is not None and end.get("closed_by") == "proxy"
           and end.get("close") == "shutdown",
           "SIGTERM: after the grace period (1 s) a live flow is closed (close shutdown), exit 0 "
           "(%.1fs)" % dt,
           "exit %r after %.1fs; client read %r\nflow_end %r\nstderr: %s" % (
               rc, dt, tail, end, p.stderr_tail()))


def test_sighup(tap):
    pki = PKI.get()
    a = TCPServer(make_tagger(b"A:"), tls=pki.server_context())
    b = TCPServer(make_tagger(b"B:"), tls=pki.server_context())
    listen = listen_addr("127.0.0.1:0")
    json_path = tflib.tmppath("hup.jsonl")
    path = write_file("hup.conf", config_text([("lab", listen, a.addr)], json_path))
    p = Tlsfault(config=path, name="hup", port0=True)
    try:
        live, live_lp = tls_connect(p.port)
        r0 = ask(live, b"1", 3)
        # good new file: upstream B
        write_file("hup.conf", config_text([("lab", listen, b.addr)], json_path))
        off = p.proc.err_len()
        p.proc.send_signal(signal.SIGHUP)
        reloaded = p.proc.wait_for(r"reload", timeout=5, start=off)
        s, lp = tls_connect(p.port)
        r1 = ask(s, b"2", 3)
        tls_close(s)
        fid = p.events.flow_by_client_port(lp)
        start = [e for e in p.events.flow(fid) if e.get("event") == "flow_start"] if fid else []
        tap.ok(reloaded and r1 == b"B:2" and start and start[0].get("upstream") == b.addr,
               "SIGHUP with a good file: new flows go to the new upstream",
               "reload line: %r; reply %r; flow_start %r\nstderr: %s" % (
                   reloaded and reloaded.group(0), r1, start, p.proc.err[off:]))
        r2 = ask(live, b"3", 3)
        tap.ok(r0 == b"A:1" and r2 == b"A:3",
               "SIGHUP with a good file: the live flow keeps its upstream",
               "live flow replies %r, %r" % (r0, r2))

        # broken file: refused with file:line, the running config stays
        broken = config_text([("lab", listen, a.addr)], json_path)
        broken_lines = broken.splitlines()
        broken_lines.insert(2, "timeouts = { handshake = ; };")  # line 3
        write_file("hup.conf", "\n".join(broken_lines) + "\n")
        off = p.proc.err_len()
        p.proc.send_signal(signal.SIGHUP)
        m = p.proc.wait_for(r"%s:3: " % path.replace(".", r"\."), timeout=5, start=off)
        tap.ok(m is not None and p.alive(),
               "SIGHUP with a broken file: stderr shows %s:3: ..." % os.path.basename(path),
               "stderr after SIGHUP: %s" % p.proc.err[off:][-1500:])
        s, lp = tls_connect(p.port)
        r3 = ask(s, b"4", 3)
        tls_close(s)
        r4 = ask(live, b"5", 3)
        tap.ok(r3 == b"B:4" and r4 == b"A:5",
               "SIGHUP with a broken file: the running configuration keeps working",
               "new flow %r (want B:4), live flow %r (want A:5)" % (r3, r4))
        tls_close(live)
        fid = p.events.flow_by_client_port(live_lp)
        end = p.events.flow_end(fid) if fid else None
        tap.ok(end is not None and end.get("outcome") == "ok" and end.get("upstream") == a.addr,
               "the flow that lived through two reloads ends ok, on its first upstream",
               fmt_events(p.events.flow(fid)) if fid else "no flow")
    finally:
        rc = p.stop()
        if rc != 0:
            tap.diag("hup proxy exit %r: %s" % (rc, p.stderr_tail()))


def test_dual_stack(tap, echo_addr):
    conf, _ = write_config("dual", [("v4", "127.0.0.1:0", echo_addr),
                                    ("v6", "[::1]:0", echo_addr)])
    try:
        p = Tlsfault(config=conf, name="dual")
    except RuntimeError as e:
        tap.ok(False, "two listeners (127.0.0.1 and [::1]): IPv4 works", str(e))
        tap.ok(False, "two listeners (127.0.0.1 and [::1]): IPv6 works", str(e))
        return
    try:
        for name, host in (("v4", "127.0.0.1"), ("v6", "::1")):
            port = p.port_of(name) if name in p.listeners else 0
            try:
                s, lp = tls_connect(port, host=host)
                got = ask(s, b"dual-" + name.encode(), 7)
                tls_close(s)
                err = None
            except (OSError, ssl.SSLError) as e:
                got, lp, err = b"", None, e
            fid = p.events.flow_by_client_port(lp) if lp else None
            start = [e for e in p.events.flow(fid) if e.get("event") == "flow_start"] if fid else []
            tap.ok(got == b"dual-" + name.encode() and start and start[0].get("listener") == name,
                   "two listeners (127.0.0.1 and [::1]): %s works (%s port %d)" % (
                       "IPv4" if name == "v4" else "IPv6", host, port),
                   "listeners %r; got %r; error %r; flow_start %r" % (
                       p.listeners, got, err, start))
    finally:
        p.stop()


def test_half_close(tap):
    srv = TCPServer(handler_record_then_reply)
    p = Tlsfault(upstream=srv.addr, name="half")
    try:
        data = tflib.pattern_bytes(1 << 20, seed=b"half-close")
        c = socket.create_connection(("127.0.0.1", p.port), timeout=10)
        lp = c.getsockname()[1]
        c.sendall(data)
        c.shutdown(socket.SHUT_WR)
        got = recv_all(c)
        c.close()
        want = hashlib.sha256(data).digest() + data
        fid = p.events.flow_by_client_port(lp)
        end = p.events.flow_end(fid) if fid else None
        tap.ok(got == want,
               "half-close: after the client's FIN the whole answer still arrives (%d bytes)"
               % len(want), "got %d bytes (want %d), equal prefix %r" % (
                   len(got), len(want), got[:32] == want[:32]))
        b = (end or {}).get("bytes") or {}
        tap.ok(end is not None and end.get("close") == "fin" and b.get("c2s") == len(data)
               and b.get("s2c") == len(want),
               "half-close: flow_end close fin, bytes c2s %d s2c %d" % (len(data), len(want)),
               fmt_events([end]) if end else "no flow_end")
    finally:
        p.stop()


class SlowReader:
    """Upstream that accepts, reads nothing for `delay` seconds, then reads
    everything to EOF while hashing."""

    def __init__(self, delay):
        self.delay = delay
        self.started = threading.Event()
        self.reading = threading.Event()

    def __call__(self, conn, srv):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        conn.settimeout(10)
        if not conn.recv(1, socket.MSG_PEEK):
            return  # the warm-up connection: closed without data
        self.started.set()
        time.sleep(self.delay)
        self.reading.set()
        conn.settimeout(60)
        h = hashlib.sha256()
        n = 0
        while True:
            b = conn.recv(1 << 20)
            if not b:
                break
            h.update(b)
            n += len(b)
        srv.add_result((n, h.hexdigest()))


def test_back_pressure(tap):
    total = 200 << 20
    block = tflib.pattern_bytes(1 << 20, seed=b"back-pressure")
    h = hashlib.sha256()
    for _ in range(total // len(block)):
        h.update(block)
    want = (total, h.hexdigest())
    reader = SlowReader(3.0)
    srv = TCPServer(reader)
    p = Tlsfault(upstream=srv.addr, name="bp")
    try:
        # warm up so the baseline includes what one flow allocates
        c = socket.create_connection(("127.0.0.1", p.port), timeout=5)
        c.close()
        time.sleep(0.3)
        srv.results.clear()
        base = p.rss_kib()
        sent = [0]
        err = [None]

        def sender():
            try:
                s = socket.create_connection(("127.0.0.1", p.port), timeout=60)
                for _ in range(total // len(block)):
                    s.sendall(block)
                    sent[0] += len(block)
                s.shutdown(socket.SHUT_WR)
                recv_all(s)
                s.close()
            except OSError as e:
                err[0] = e

        t = threading.Thread(target=sender, daemon=True)
        t.start()
        reader.started.wait(5)
        peak = base
        while not reader.reading.is_set():
            peak = max(peak, p.rss_kib())
            time.sleep(0.05)
        sent_during_stall = sent[0]
        growth = (peak - base) / 1024.0
        tap.diag("back-pressure: RSS %d KiB at start, peak %d KiB while the upstream stalled; "
                 "sender had pushed %d MiB of %d" % (base, peak, sent_during_stall >> 20,
                                                     total >> 20))
        tap.ok(base > 0 and growth < 32,
               "back-pressure: RSS grows by %.1f MiB (< 32) while the upstream does not read"
               % growth, "base %d KiB peak %d KiB; sent %d bytes" % (base, peak, sent_during_stall))
        t.join(60)
        res = srv.wait_results(1, timeout=30)
        tap.ok(res and res[0] == want and err[0] is None,
               "back-pressure: all %d MiB arrive intact once the upstream reads" % (total >> 20),
               "upstream got %r, want %r; sender error %r" % (res, want, err[0]))
    finally:
        p.stop()


def test_connection_limit(tap, echo_addr):
    """limits.connections = 3: a fourth client is accepted and closed at
    once with a warning; once one leaves, the next is served again."""
    conf, _ = write_config("limit", [("l", "127.0.0.1:0", echo_addr)],
                           extra="limits = { connections = 3; };\n")
    p = Tlsfault(config=conf)
    held = []
    try:
        for _ in range(3):
            s, _lp = tls_connect(p.port)
            held.append(s)
        answers = [ask(s, b"ping %d\n" % i, 7) for i, s in enumerate(held)]
        c = socket.create_connection(("127.0.0.1", p.port), timeout=5)
        c.settimeout(5)
        t0 = time.time()
        try:
            extra = c.recv(100)
        except OSError as e:
            extra = repr(e).encode()
        waited = time.time() - t0
        c.close()
        warned = p.proc.wait_for(r"connection limit 3 reached \(limits\.connections\)", timeout=5)
        tap.ok(answers == [b"ping %d\n" % i for i in range(3)] and extra == b"" and waited < 2
               and warned,
               "limits.connections = 3: three clients served, the fourth closed at once "
               "(%.2fs) with a warning" % waited,
               "answers %r, fourth got %r after %.2fs\n%s" % (answers, extra, waited,
                                                            p.proc.err[-1500:]))
        tls_close(held.pop())
        ok = tflib.wait_until(lambda: _served(p.port), timeout=5)
        tap.ok(ok and p.alive(), "after one left, a new client is served again",
               p.proc.err[-1500:])
    finally:
        for s in held:
            tls_close(s)
        p.stop()


def test_busy_poll(tap, echo_addr):
    """--busy-poll: the workers poll without sleeping while bytes flow, but
    sleep once idle (a spinning idle worker would burn a core), relay
    every byte as usual, and stop on SIGTERM."""
    p = Tlsfault(upstream=echo_addr, workers=2, extra=["--busy-poll", "500"], name="busy")
    said = "until 500 us pass idle (busy_poll_us)" in p.proc.err
    try:
        data = tflib.pattern_bytes(256 << 10, seed=b"busy-poll")
        s, _lp = tls_connect(p.port)
        got = ask(s, data, len(data), timeout=20)
        # Both directions just streamed, so a polling worker gathers what comes next
        # (relay.c): short messages must still go on at once, not wait for more.
        rtts = []
        for i in range(20):
            m = b"after %d\n" % i
            t = time.monotonic()
            a = ask(s, m, len(m))
            rtts.append((time.monotonic() - t, a == m))
        tls_close(s)
        tap.ok(all(ok for _, ok in rtts) and max(r for r, _ in rtts) < 0.1,
               "busy-poll: after a stream, short messages on the same connection are echoed at "
               "once (slowest %.1f ms)" % (max(r for r, _ in rtts) * 1000),
               "round trips (s, intact): %r" % rtts)
        small = []
        for i in range(10):
            s, _lp = tls_connect(p.port)
            small.append(ask(s, b"busy %d\n" % i, len(b"busy %d\n" % i)))
            tls_close(s)
        tap.ok(said and got == data and small == [b"busy %d\n" % i for i in range(10)],
               "busy-poll: said at start; 256 KiB and ten short connections echoed through "
               "intact", "said %r; echoed %d of %d bytes (equal: %r); short answers %r\n%s" % (
                   said, len(got or b""), len(data), got == data, small, p.stderr_tail()))

        time.sleep(0.3)
        c0, t0 = tflib.cpu_seconds(p.pid), time.time()
        time.sleep(1.5)
        idle = (tflib.cpu_seconds(p.pid) - c0) / (time.time() - t0)
        s, _lp = tls_connect(p.port)
        c1, t1 = tflib.cpu_seconds(p.pid), time.time()
        answers = []
        for i in range(10):
            answers.append(ask(s, b"tick %d\n" % i, len(b"tick %d\n" % i)))
            time.sleep(0.1)
        trickle = (tflib.cpu_seconds(p.pid) - c1) / (time.time() - t1)
        tls_close(s)
        tap.ok(idle < 0.2 and trickle < 0.3 and answers == [b"tick %d\n" % i for i in range(10)],
               "busy-poll: idle workers sleep (%.0f%% of a core idle, %.0f%% with a message "
               "every 100 ms)" % (idle * 100, trickle * 100),
               "a spinning worker would use 100%% per worker; answers %r" % answers)
    finally:
        rc = p.stop()
    tap.ok(rc == 0, "busy-poll: SIGTERM stops the polling workers, exit 0 (got %r)" % rc,
           p.stderr_tail())


SYS_PIDFD_GETFD = 438  # x86_64 and aarch64 (asm-generic) alike


def tcp_sockets_of(pid):
    """The TCP sockets a process holds, as (local port, peer port, TCP_NODELAY),
    read from duplicates of its descriptors (pidfd_getfd(2), root)."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    found, errors = [], []
    pidfd = os.pidfd_open(pid)
    try:
        for name in os.listdir("/proc/%d/fd" % pid):
            try:
                if not os.readlink("/proc/%d/fd/%s" % (pid, name)).startswith("socket:"):
                    continue
            except OSError:
                continue
            fd = libc.syscall(SYS_PIDFD_GETFD, pidfd, int(name), 0)
            if fd < 0:
                errors.append("fd %s: %s" % (name, os.strerror(ctypes.get_errno())))
                continue
            s = socket.socket(fileno=fd)
            try:
                if s.type != socket.SOCK_STREAM or s.family not in (socket.AF_INET,
                                                                     socket.AF_INET6):
                    continue
                try:
                    peer = s.getpeername()[1]
                except OSError:
                    peer = None  # a listener
                found.append((s.getsockname()[1], peer,
                              s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)))
            finally:
                s.close()
    finally:
        os.close(pidfd)
    return found, errors


def test_nodelay(tap, echo_addr):
    """Both legs of a flow send without Nagle's delay: fault pieces and
    records leave when written.  The client's socket has it from its
    listener (inherited on Linux), the upstream's is set when connected."""
    upstream_port = int(echo_addr.rsplit(":", 1)[1])
    for label, extra in (("relay", []), ("fault rule", ["--fault", "delay:ms=1"])):
        p = Tlsfault(upstream=echo_addr, extra=extra, name="nodelay")
        try:
            s, lp = tls_connect(p.port)
            echoed = ask(s, b"nodelay\n", 8)
            socks, errors = tcp_sockets_of(p.pid)
            tls_close(s)
        finally:
            p.stop()
        client_leg = [nd for local, peer, nd in socks if local == p.port and peer == lp]
        upstream_leg = [nd for local, peer, nd in socks if peer == upstream_port]
        tap.ok(echoed == b"nodelay\n" and client_leg == [1] and upstream_leg == [1],
               "TCP_NODELAY on both legs of a flow (%s)" % label,
               "echo %r; client leg %r, upstream leg %r; sockets %r; errors %r" % (
                   echoed, client_leg, upstream_leg, socks, errors))


def _served(port):
    try:
        s, _lp = tls_connect(port, timeout=2)
    except (OSError, ssl.SSLError):
        return False
    try:
        return ask(s, b"again\n", 6, timeout=2) == b"again\n"
    finally:
        tls_close(s)


def main(tap):
    if not tflib.binary_ready():
        print("Bail out! tlsfault binary not found: %s" % tflib.TF_BIN, flush=True)
        tap.finish()
        return
    pki = PKI.get()
    echo = TCPServer(handler_echo, tls=pki.server_context())
    tap.section(4, "SIGTERM", test_sigterm, tap, echo.addr)
    tap.section(5, "SIGHUP", test_sighup, tap)
    tap.section(2, "dual stack", test_dual_stack, tap, echo.addr)
    tap.section(2, "half-close", test_half_close, tap)
    tap.section(2, "back-pressure", test_back_pressure, tap)
    tap.section(2, "connection limit", test_connection_limit, tap, echo.addr)
    tap.section(4, "busy-poll", test_busy_poll, tap, echo.addr)
    tap.section(2, "TCP_NODELAY", test_nodelay, tap, echo.addr)


PLAN = 4 + 5 + 2 + 2 + 2 + 2 + 4 + 2

if __name__ == "__main__":
    tflib.run_main(PLAN, main)
