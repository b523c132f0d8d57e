"""test_faults — every fault of docs/faults.md, through tlsfault in quick mode
(--fault SPEC), against openssl s_server -www (TLS 1.2 and TLS 1.3), with
the four real clients: curl, openssl s_client, gnutls-cli and Python ssl.

For each fault and version, each client gets its own s_server and its own
tlsfault (s_server serves one connection at a time, and a hang must be the
fault's, not a queue behind another client's), and the four clients run at
once.  Each client's outcome is asserted precisely enough that the test
fails if the fault did nothing; the JSON log must show a `fault` event of
the rule and a `flow_end` whose `faults` and `summary` name it.

Also: a rule that does not match leaves the flow byte-for-byte intact
(tshark on both legs), fragment:size=16 puts <= 16-byte handshake records
on the wire, and append-bytes' bytes are on the client's leg only.

The table of what each client reported is printed as TAP diagnostics and
written to $TF_FAULT_TABLE (markdown) when that is set."""

import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tflib  # noqa: E402
from tflib import (OSSL_ERR_RX, PKI, Outcome, SServer, Tlsfault, fmt_events,  # noqa: E402
                   html_part, min_elapsed, page_ok, parallel, www_page_core)

CLIENTS = ["curl", "s_client", "gnutls-cli", "python"]
CLIENT_TITLES = {"curl": "curl", "s_client": "OpenSSL s_client", "gnutls-cli": "GnuTLS",
                 "python": "Python ssl"}
HANG = 2.0          # client timeout where the fault is a hang
TIMEOUT = 12.0      # bound on every other client run
GET = "GET / HTTP/1.0\r\n\r\n"

# Server set-ups: s_server arguments.
SERVERS = {
    "1.2": ("1.2", []),
    "1.3": ("1.3", []),
    "both": (None, []),
    "1.2-aes128": ("1.2", ["-cipher", "ECDHE-RSA-AES128-GCM-SHA256"]),
    "1.3-aes128": ("1.3", ["-ciphersuites", "TLS_AES_128_GCM_SHA256"]),
}

# ------------------------------------------------------------ expectations
#
# An expectation is (rcs, regex): the client's exit code must be in rcs and
# regex must match its output (stdout + stderr; for Python the exception
# text).  "ok" means: exit 0 and the same s_server page as a direct run.
# TIMEOUT_RC (124) is the harness killing a client that has no timeout of
# its own (s_client, gnutls-cli) after HANG seconds.

K = tflib.TIMEOUT_RC
OK = "ok"
E = tflib.expect_exit


CURL_EOF = r"curl: \(35\) OpenSSL SSL_connect: SSL_ERROR_SYSCALL in connection to lab\.test:\d+"

# The handshake never ends: curl's own timeout, and the harness kills
# s_client and gnutls-cli (which have none) after HANG seconds.
HUNG = tflib.hung_expectation()
RESET = {
    "curl": E(35, r"curl: \(35\) Recv failure: Connection reset by peer"),
    "s_client": E(1, r"write:errno=104"),
    "gnutls-cli": E(1, r"\*\*\* Fatal error: Error in the pull function"),
    "python": E(1, r"^ConnectionResetError: Connection reset by peer"),
}
EOF_IN_HANDSHAKE = {
    # curl 7.88 with OpenSSL 3.0 says SSL_ERROR_SYSCALL for an EOF in the
    # handshake; OpenSSL's own text is in s_client's and Python's message.
    "curl": E(35, CURL_EOF),
    "s_client": E(1, r"unexpected eof while reading"),
    "gnutls-cli": E(1, r"\*\*\* Fatal error: The TLS connection was non-properly terminated"),
    "python": E(1, r"^SSLEOFError: UNEXPECTED_EOF_WHILE_READING"),
}


# A fatal alert from the 'server' during the handshake.
ALERT = tflib.alert_expectation

HANDSHAKE_FAILURE = ALERT(40, "sslv3 alert handshake failure", "Handshake failed",
                          "SSLV3_ALERT_HANDSHAKE_FAILURE")
# A TLS 1.2 hello edited in flight: with extended master secret the two
# sides derive different keys, so the server cannot read the client's
# Finished and answers bad_record_mac.
TRANSCRIPT_12 = ALERT(20, "sslv3 alert bad record mac", "Bad record MAC",
                      "SSLV3_ALERT_BAD_RECORD_MAC")
# The same in TLS 1.3: the handshake keys depend on the transcript, so the
# client cannot decrypt the server's EncryptedExtensions.
TRANSCRIPT_13 = {
    "curl": E(35, r"curl: \(35\) OpenSSL/[\d.]+: error:[0-9A-F]+:SSL routines::"
                  r"decryption failed or bad record mac"),
    "s_client": E(1, r"SSL routines:[^:]*:decryption failed or bad record mac"),
    "gnutls-cli": E(1, r"\*\*\* Fatal error: Decryption has failed"),
    "python": E(1, r"^SSLError: DECRYPTION_FAILED_OR_BAD_RECORD_MAC"),
}
WRONG_VERSION = {
    "s_client": E(1, r"SSL routines:[^:]*:wrong version number"),
    "python": E(1, r"^SSLError: WRONG_VERSION_NUMBER"),
}
# A record after the handshake that does not decrypt.  OpenSSL 3.0 with
# AES-GCM in TLS 1.2 fails inside the provider first ("cipher operation
# failed"), in TLS 1.3 it says bad record mac.
BAD_MAC = {
    "curl": E(56, r"curl: \(56\) OpenSSL SSL_read: OpenSSL/[\d.]+: error:[0-9A-F]+:"
                  r"(Provider routines::cipher operation failed|"
                  r"SSL routines::decryption failed or bad record mac)"),
    "s_client": E(1, r"decryption failed or bad record mac"),
    "gnutls-cli": E(1, r"Discarded message\[\d+\] due to invalid decryption"
                       r"(.|\n)*\*\*\* Fatal error: Decryption has failed"),
    "python": E(1, r"^SSLError: DECRYPTION_FAILED_OR_BAD_RECORD_MAC"),
}
SUCCEEDS = {c: OK for c in CLIENTS}

# Known proxy problems go in a case's todo={version: text}: printed as a TAP
# diagnostic before the case, which still asserts the documented behaviour.


def case(fault, spec, versions, expect, title=None, hang=False, servers=None, clients=None,
         check=None, todo=None):
    """expect: {client: expectation} or {version: {client: expectation}}.
    servers: {version: SERVERS key} (default: the version itself).  check:
    an extra per-run check(version, client, outcome, events) -> problem or None."""
    return {"fault": fault, "spec": spec, "versions": versions, "expect": expect,
            "title": title or fault, "hang": hang, "servers": servers or {},
            "clients": clients or {}, "check": check, "todo": todo or {}}


ALPN_CLIENTS = {
    "curl": [],  # curl offers h2 and http/1.1 by default
    "s_client": ["-alpn", "http/1.1"],
    "gnutls-cli": ["--alpn", "http/1.1"],
    "python": ["alpn"],
}

BOTH = ["1.2", "1.3"]

ALL_CASES = [
    # ---------------------------------------------------------------- network
    case("delay", "delay:ms=100", BOTH, SUCCEEDS, "delay (ms=100)",
         check=min_elapsed(0.35)),
    case("bandwidth", "bandwidth:rate=20000", BOTH, SUCCEEDS, "bandwidth (rate=20000)",
         check=min_elapsed(0.3)),
    case("stall", "stall", BOTH, HUNG, hang=True),
    case("reset", "reset", BOTH, RESET),
    case("close", "close", BOTH, EOF_IN_HANDSHAKE),
    # The page and the server's flight are over 6 KB s2c: 60-odd pieces, 2 ms apart.
    case("slice", "slice:size=100,pause=2", BOTH, SUCCEEDS, "slice (size=100, pause=2)",
         check=min_elapsed(0.11)),
    # ---------------------------------------------------------------- passthrough
    case("drop-server-hello", "drop-server-hello", BOTH, HUNG, hang=True),
    case("reset-after-client-hello", "reset-after-client-hello", BOTH, RESET),
    case("close-after-client-hello", "close-after-client-hello", BOTH, EOF_IN_HANDSHAKE),
    case("alert", "alert", BOTH, HANDSHAKE_FAILURE,
         "alert (handshake_failure after client_hello)"),
    case("alert", "alert:description=protocol_version", BOTH,
         ALERT(70, "tlsv1 alert protocol version", "Error in protocol version",
               "TLSV1_ALERT_PROTOCOL_VERSION"),
         "alert (description=protocol_version)"),
    case("plaintext-response", "plaintext-response", BOTH, dict(WRONG_VERSION, **{
        # "HTTP/1.1 400": 'H' (72) read as a record's content type.
        "curl": E(35, r"curl: \(35\) OpenSSL/[\d.]+: error:[0-9A-F]+:SSL routines::"
                      r"wrong version number"),
        "gnutls-cli": E(1, r"Received record packet of unknown type 72"
                           r"(.|\n)*\*\*\* Fatal error: An unexpected TLS packet was received"),
    })),
    case("downgrade", "downgrade", BOTH, {
        "1.2": TRANSCRIPT_12,
        "1.3": {
            # The 1.2+1.3 server puts the downgrade sentinel in its random.
            "curl": E(35, r"curl: \(35\) OpenSSL/[\d.]+: error:[0-9A-F]+:SSL routines::"
                          r"inappropriate fallback"),
            "s_client": E(1, r"SSL routines:[^:]*:inappropriate fallback"),
            "gnutls-cli": E(1, r"Detected downgrade to TLS 1\.2 from TLS 1\.3"
                               r"(.|\n)*\*\*\* Fatal error: An illegal parameter has been "
                               r"received"),
            "python": E(1, r"^SSLError: INAPPROPRIATE_FALLBACK"),
        },
    }, "downgrade (TLS 1.2 only / TLS 1.3 client to a 1.2+1.3 server)",
        servers={"1.3": "both"}),
    case("strip-ciphers", "strip-ciphers:pattern=*AES_128_GCM*", BOTH, HANDSHAKE_FAILURE,
         "strip-ciphers (pattern=*AES_128_GCM*, server AES-128-GCM only)",
         servers={"1.2": "1.2-aes128", "1.3": "1.3-aes128"}),
    case("strip-sni", "strip-sni", BOTH, {"1.2": TRANSCRIPT_12, "1.3": TRANSCRIPT_13}),
    case("strip-alpn", "strip-alpn", BOTH, {"1.2": TRANSCRIPT_12, "1.3": TRANSCRIPT_13},
         "strip-alpn (clients offer ALPN)", clients=ALPN_CLIENTS),
    case("record-version-too-high", "record-version-too-high", BOTH, dict(WRONG_VERSION, **{
        "curl": E(35, r"curl: \(35\) OpenSSL/[\d.]+: error:[0-9A-F]+:SSL routines::"
                      r"wrong version number"),
        "gnutls-cli": E(1, r"\*\*\* Fatal error: A packet with illegal or unsupported version "
                           r"was received"),
    })),
    case("strip-intermediates", "strip-intermediates", ["1.2"], {
        "curl": E(60, r"curl: \(60\) SSL certificate problem: unable to get local issuer "
                      r"certificate"),
        "s_client": E(1, r"verify error:num=20:unable to get local issuer certificate"),
        "gnutls-cli": E(1, r"Status: The certificate is NOT trusted\. The certificate issuer "
                           r"is unknown"),
        "python": E(1, r"^SSLCertVerificationError: unable to get local issuer certificate"),
    }),
    # "INSPECTED" after the first application_data record: its 'I' (73) is
    # read as the next record's content type.
    case("append-bytes", "append-bytes", BOTH, dict(WRONG_VERSION, **{
        "curl": E(56, r"curl: \(56\) OpenSSL SSL_read: OpenSSL/[\d.]+: error:[0-9A-F]+:"
                      r"SSL routines::wrong version number"),
        "gnutls-cli": E(1, r"Received record packet of unknown type 73"
                           r"(.|\n)*\*\*\* Fatal error: An unexpected TLS packet was received"),
    })),
    case("corrupt", "corrupt", BOTH, BAD_MAC),
    case("truncate", "truncate", BOTH, {
        # curl 7.88 ignores an unexpected EOF (SSL_OP_IGNORE_UNEXPECTED_EOF):
        # it sees an empty answer.
        "curl": E(52, r"curl: \(52\) Empty reply from server"),
        "s_client": E(1, r"SSL routines:[^:]*:unexpected eof while reading"),
        "gnutls-cli": E(1, r"\*\*\* Fatal error: Error decoding the received TLS packet"),
        # Python's default (suppress_ragged_eofs) reads the EOF as the end:
        # no exception, and no page.
        "python": E(0, r"^no error, \d+ bytes, page incomplete"),
    }),
    case("duplicate", "duplicate", BOTH, BAD_MAC),
    case("fragment", "fragment:size=16", BOTH, SUCCEEDS, "fragment (size=16)"),
]


# TF_FAULT_ONLY=name,name: only these faults (a debugging aid).
_only = [x for x in os.environ.get("TF_FAULT_ONLY", "").split(",") if x]
CASES = [c for c in ALL_CASES if not _only or c["fault"] in _only]


# ------------------------------------------------------------ running clients

def _diff(a, b):
    import difflib
    d = list(difflib.unified_diff(www_page_core(a).splitlines(), www_page_core(b).splitlines(),
                                  "direct", "proxied", lineterm="", n=1))
    return "\n".join(d[:30])


def short_text(client, rc, out, err, hang):
    """A short, table-sized description of what a client reported."""
    if client == "curl":
        t = tflib.curl_error_text(err)
        if t is not None:
            return t[:80]
        return "ok" if rc == 0 else err.strip()[-80:]
    if client == "s_client":
        if rc == tflib.TIMEOUT_RC:
            return "no answer, killed after %gs" % HANG
        reasons = OSSL_ERR_RX.findall(err) + OSSL_ERR_RX.findall(out)
        extra = []
        m = re.search(r"SSL alert number (\d+)", err + out)
        if m:
            extra.append("alert %s" % m.group(1))
        m = re.search(r"(write|read):errno=(\d+)", err + out)
        if m:
            extra.append("%s:errno=%s" % m.groups())
        m = re.search(r"verify error:num=(\d+):(.*)", err + out)
        if m:
            extra.append("verify error %s: %s" % (m.group(1), m.group(2).strip()))
        if reasons or extra:
            return "; ".join(list(dict.fromkeys(reasons))[:2] + extra)[:100]
        return "ok" if rc == 0 else (err.strip().splitlines() or [""])[-1][:80]
    if client == "gnutls-cli":
        if rc == tflib.TIMEOUT_RC:
            return "no answer, killed after %gs" % HANG
        both = err + "\n" + out
        keep = []
        for rx in (r"Status: (.*NOT trusted.*?)$", r"\*\*\* (Received alert .*?)$",
                   r"\*\*\* (Fatal error: .*?)$", r"\*\*\* (Detected downgrade .*?)$",
                   r"\|<\d+>\| (Received record packet of unknown type \d+)",
                   r"\|<\d+>\| (Discarded message.*?)$", r"\*\*\* (handshake has failed.*?)$"):
            for m in re.finditer(rx, both, re.M):
                keep.append((m.start(), m.group(1).strip()))
        if keep:
            return "; ".join(dict.fromkeys(t for _, t in sorted(keep)))[:140]
        return "ok" if rc == 0 else (err.strip().splitlines() or [""])[-1][:80]
    return out


def run_client(client, port, hang, extra):
    """Runs one client against port; returns an Outcome."""
    timeout = HANG if hang else TIMEOUT
    t0 = time.monotonic()
    pki = PKI.get()
    if client == "curl":
        argv = ["curl", "-sS", "--cacert", pki.ca, "--resolve", "lab.test:%d:127.0.0.1" % port,
                "--max-time", "%g" % timeout] + list(extra) + ["https://lab.test:%d/" % port]
        r = tflib.run(argv, timeout=timeout + 8)
    elif client == "s_client":
        r = tflib.s_client(port, extra=extra, timeout=timeout)
    elif client == "gnutls-cli":
        # gnutls-cli quits at stdin EOF: stdin stays open until the page is
        # in or it has exited; killed after timeout seconds in all.
        argv = ["gnutls-cli", "--x509cafile", pki.ca, "-p", str(port), "--sni-hostname",
                "lab.test", "--verify-hostname", "lab.test"] + list(extra) + ["127.0.0.1"]
        r = tflib.run_fed(argv, GET, r"</HTML>", timeout)
    elif client == "python":
        ctx = pki.client_context()
        if "alpn" in extra:
            ctx.set_alpn_protocols(["http/1.1"])
        ok, text, page = tflib.py_page(port, ctx, "lab.test", GET.encode(), timeout)
        return Outcome(0 if ok else 1, text, text, page, time.monotonic() - t0)
    else:
        raise ValueError(client)
    return Outcome(r.rc, short_text(client, r.rc, r.out, r.err, hang), r.out + "\n" + r.err,
                   html_part(r.out), time.monotonic() - t0)


_servers = {}
_baselines = {}


def server(kind, client):
    """One s_server per (set-up, client), started on first use."""
    key = (kind, client)
    if key not in _servers:
        version, args = SERVERS[kind]
        _servers[key] = SServer(version, "www", args, pki=PKI.get())
    return _servers[key]


def baseline(kind, client, extra):
    """The page core of a direct run (no proxy), once per set-up and client."""
    key = (kind, client, tuple(extra))
    if key not in _baselines:
        out = run_client(client, server(kind, client).port, False, extra)
        _baselines[key] = out
    return _baselines[key]


def rule_name(c):
    return "t-" + c["fault"]


def full_spec(c):
    return c["spec"] + ("," if ":" in c["spec"] else ":") + "name=" + rule_name(c)


def check_events(events, rule, fault):
    """Problems with the JSON log of a flow where rule (of fault) must fire;
    every fault event names its action."""
    bad = tflib.fault_flow_problems(events, rule, fault)
    for e in events:
        if e.get("event") == "fault" and not e.get("action"):
            bad.append("fault event without action: %r" % e)
    return bad


expectation = tflib.case_expectation


RESULTS = []   # (title, version label, {client: Outcome})


def run_case(tap, c, version):
    kind = c["servers"].get(version, version)
    rule = rule_name(c)
    spec = full_spec(c)
    label = "%s, TLS %s" % (c["title"], version)
    if kind == "both":
        label += " client, 1.2+1.3 server"

    def start(client):
        return Tlsfault(upstream=server(kind, client).addr, name="f-%s" % c["fault"],
                        extra=["--fault", spec])
    if version in c["todo"]:
        tap.diag(c["todo"][version])
    for client in CLIENTS:
        server(kind, client)
    proxies = parallel([lambda cl=cl: start(cl) for cl in CLIENTS])
    try:
        for p in proxies:
            if isinstance(p, Exception):
                raise p
        outs = parallel([lambda cl=cl, p=p: run_client(cl, p.port, c["hang"],
                                                       c["clients"].get(cl, []))
                         for cl, p in zip(CLIENTS, proxies)])
        RESULTS.append((c["title"], "TLS %s" % version + (" (1.2+1.3 server)" if kind == "both"
                                                          else ""),
                        dict(zip(CLIENTS, outs))))
        for client, p, out in zip(CLIENTS, proxies, outs):
            what = "%s: %s" % (label, client)
            if isinstance(out, Exception):
                tap.ok(False, "%s: client ran" % what, repr(out))
                tap.ok(False, "%s: JSON log names rule %s" % (what, rule))
                continue
            exp = expectation(c, version, client)
            ends = p.events.new_flow_ends(0, 1, timeout=10)
            events = p.events.all()
            if exp == OK:
                base = baseline(kind, client, c["clients"].get(client, []))
                good = (out.rc == 0 and page_ok(out.page)
                        and www_page_core(out.page) == www_page_core(base.page))
                why = "direct run: rc %r, page %d bytes\n%s" % (base.rc, len(base.page),
                                                              _diff(base.page, out.page))
                desc = "%s: succeeds with the same page as directly (%.2fs, direct %.2fs)" % (
                    what, out.elapsed, base.elapsed)
            else:
                rcs, rx = exp
                good = out.rc in rcs and re.search(rx, out.full, re.M) is not None
                why = "want exit in %r and output matching /%s/" % (rcs, rx)
                desc = "%s: want exit %s, got %s: %s" % (
                    what, "/".join(str(x) for x in rcs), out.rc, out.text[:70])
            problem = c["check"](version, client, out, events) if c["check"] else None
            if problem:
                good = False
                why += "\n" + problem
            tap.ok(good, desc, "%s\ngot exit %r (%.2fs): %s\noutput:\n%s\nJSON:\n%s" % (
                why, out.rc, out.elapsed, out.text, tflib._tail(out.full, 1500),
                fmt_events(events, 25)))
            bad = check_events(events, rule, c["fault"]) if ends else [
                "no flow_end within 10 s"]
            tap.ok(not bad, "%s: JSON: fault event of %s, flow_end faults/summary name it" % (
                what, rule), "\n".join(bad) + "\n" + fmt_events(events, 30) + "\n"
                + p.stderr_tail(800))
    finally:
        for p in proxies:
            if isinstance(p, Tlsfault):
                if not p.alive():
                    tap.diag("tlsfault died: %s" % p.stderr_tail())
                p.stop()


# ------------------------------------------------------------ wire checks

def test_no_match(tap):
    """A rule that does not match: the proxied flow is byte-for-byte the
    direct one (client leg == server leg, both directions) and the page is
    the same as a direct run's."""
    srv = server("1.2", "curl")
    proxy = Tlsfault(upstream=srv.addr, name="nomatch",
                     extra=["--fault", "drop-server-hello:sni=other.test,name=t-nomatch"])
    try:
        cap = tflib.RawCapture([proxy.port, srv.port]) if tflib.have_tshark() else None
        out = run_client("curl", proxy.port, False, [])
        streams = cap.finish() if cap else {}
        base = baseline("1.2", "curl", [])
        tap.ok(out.rc == 0 and page_ok(out.page)
               and www_page_core(out.page) == www_page_core(base.page),
               "non-matching rule (sni=other.test): curl gets the same page as directly",
               "exit %r: %s\n%s" % (out.rc, out.text, tflib._tail(out.full, 800)))
        c2p, p2c = tflib.streams_between(streams, proxy.port)
        s_in, s_out = tflib.streams_between(streams, srv.port)
        if cap is None:
            tap.skip("non-matching rule: byte-for-byte on both legs", "tshark not available")
        else:
            tap.ok(len(c2p) > 100 and c2p == s_in and len(s_out) > 1000 and s_out == p2c,
                   "non-matching rule: both directions byte-for-byte identical on both legs "
                   "(c2s %d/%d bytes, s2c %d/%d bytes)" % (len(c2p), len(s_in), len(s_out),
                                                          len(p2c)),
                   "client leg c2s sha %s, server leg c2s sha %s; server leg s2c sha %s, "
                   "client leg s2c sha %s" % (tflib.sha256(c2p), tflib.sha256(s_in),
                                              tflib.sha256(s_out), tflib.sha256(p2c)))
        ends = proxy.events.new_flow_ends(0, 1, timeout=10)
        evs = proxy.events.all()
        end = ends[0] if ends else {}
        b = end.get("bytes") or {}
        tap.ok(end and not [e for e in evs if e.get("event") == "fault"]
               and not end.get("faults") and end.get("outcome") == "ok"
               and (cap is None or (b.get("c2s") == len(c2p) and b.get("s2c") == len(p2c))),
               "non-matching rule: no fault event, flow_end outcome ok, no faults, "
               "bytes as on the wire",
               "wire: c2s %d s2c %d\n%s" % (len(c2p), len(p2c), fmt_events(evs)))
    finally:
        proxy.stop()


def test_fragment_wire(tap):
    srv = server("1.2", "s_client")
    proxy = Tlsfault(upstream=srv.addr, name="fragwire",
                     extra=["--fault", "fragment:size=16,name=t-frag"])
    try:
        cap = tflib.RawCapture([proxy.port, srv.port])
        out = run_client("s_client", proxy.port, False, [])
        streams = cap.finish()
        _, p2c = tflib.streams_between(streams, proxy.port)
        _, s_out = tflib.streams_between(streams, srv.port)
        recs = tflib.tls_records(p2c)
        srecs = tflib.tls_records(s_out)
        tap.ok(out.rc == 0 and page_ok(out.page),
               "fragment:size=16 on the wire: s_client (TLS 1.2) still succeeds",
               "exit %r: %s" % (out.rc, out.text))
        # Before the ChangeCipherSpec every s2c handshake record is clear:
        # all of them must be at most 16 bytes, carrying the same handshake
        # bytes as the server's (larger) records.
        clear = _clear_sizes(recs)
        sclear = _clear_sizes(srecs)
        tap.ok(len(clear) > 50 and max(clear) <= 16 and sclear and max(sclear) > 16
               and sum(clear) == sum(sclear),
               "fragment:size=16 on the wire (tshark): %d clear s2c handshake records, "
               "largest %s bytes (server sent %d records, largest %s)" % (
                   len(clear), max(clear) if clear else None, len(sclear),
                   max(sclear) if sclear else None),
               "client leg s2c records: %r\nserver leg s2c records: %r" % (
                   [(ct, len(b)) for ct, _, b in recs][:80],
                   [(ct, len(b)) for ct, _, b in srecs][:20]))
    finally:
        proxy.stop()


def _clear_sizes(recs):
    out = []
    for ct, _, body in recs:
        if ct == 20:
            break
        if ct == 22:
            out.append(len(body))
    return out


def test_append_wire(tap):
    srv = server("1.2", "python")
    marker = b"TLSFAULT-APPENDED"
    proxy = Tlsfault(upstream=srv.addr, name="appendwire",
                     extra=["--fault", "append-bytes:bytes=%s,name=t-append" % marker.decode()])
    try:
        cap = tflib.RawCapture([proxy.port, srv.port])
        out = run_client("python", proxy.port, False, [])
        streams = cap.finish()
        _, p2c = tflib.streams_between(streams, proxy.port)
        _, s_out = tflib.streams_between(streams, srv.port)
        # Where it must be: right after the first application_data record.
        recs = tflib.tls_records(s_out)
        off = 0
        first_app_end = None
        for ct, _, body in recs:
            off += 5 + len(body) if ct is not None else 0
            if ct == 23:
                first_app_end = off
                break
        want = (s_out[:first_app_end] + marker) if first_app_end else None
        tap.ok(out.rc != 0 and marker in p2c and marker not in s_out and want is not None
               and p2c.startswith(want),
               "append-bytes on the wire (tshark): %r follows the first s2c application_data "
               "record on the client leg only" % marker.decode(),
               "client: %s\nmarker on client leg at %r (want %r), on server leg: %r" % (
                   out.text, p2c.find(marker), first_app_end, marker in s_out))
    finally:
        proxy.stop()


# ------------------------------------------------------------ table

def table():
    return tflib.outcome_table(RESULTS, CLIENTS, CLIENT_TITLES)


def main(tap):
    if not tflib.binary_ready():
        print("Bail out! tlsfault binary not found: %s" % tflib.TF_BIN, flush=True)
        tap.finish()
        return
    r = tflib.run([tflib.TF_BIN, "--list-faults"], timeout=10)
    missing = [c["fault"] for c in CASES if not re.search(r"(?m)^\s*%s\b" % re.escape(c["fault"]),
                                                           r.out)]
    tap.ok(r.rc == 0 and not missing,
           "tlsfault --list-faults lists every fault this test drives",
           "exit %r, missing %r\n%s%s" % (r.rc, missing, r.out[-1500:], r.err[-500:]))
    t0 = time.monotonic()
    PKI.get()
    for c in CASES:
        for v in c["versions"]:
            t1 = time.monotonic()
            tap.section(2 * len(CLIENTS), "%s TLS %s" % (c["title"], v), run_case, tap, c, v)
            tap.diag("%s TLS %s: %.2fs" % (c["title"], v, time.monotonic() - t1))
    tap.section(3, "non-matching rule", test_no_match, tap)
    if tflib.have_tshark():
        tap.section(2, "fragment on the wire", test_fragment_wire, tap)
        tap.section(1, "append-bytes on the wire", test_append_wire, tap)
    else:
        for _ in range(3):
            tap.skip("tshark checks", "tshark not available or not root")
    t = table()
    tap.diag("What the clients reported (exit code: error), %.1fs:" % (time.monotonic() - t0))
    tap.diag(t)
    path = os.environ.get("TF_FAULT_TABLE")
    if path:
        with open(path, "w") as f:
            f.write(t + "\n")
    for s in list(_servers.values()):
        s.stop()


PLAN = 1 + sum(2 * len(CLIENTS) * len(c["versions"]) for c in CASES) + 3 + 2 + 1

if __name__ == "__main__":
    tflib.run_main(PLAN, main)
