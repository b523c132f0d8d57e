"""test_handshakes — real clients through tlsfault (quick mode, passthrough)
to openssl s_server: TLS 1.3, TLS 1.2 (ECDHE-RSA), TLS 1.3 with a
HelloRetryRequest, TLS 1.2 resumption, and large payloads both ways.

For every client (curl, openssl s_client, gnutls-cli, Python ssl) the
proxied run must look exactly like the direct one (exit code, page
content), and the JSON event log must tell the handshake as it happened."""

import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tflib  # noqa: E402
from tflib import (PKI, SServer, TCPServer, Tlsfault, fmt_events, handler_bulk,  # noqa: E402
                   IANA_SUITE_RX, OPENSSL_TO_IANA, www_page_core)

TS_RX = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|[+-]\d\d:?\d\d)$")

CASES = [
    {
        "name": "TLS 1.3", "server": "1.3", "sargs": [], "version": "TLS 1.3", "hrr": False,
        "suite": None,
        "curl": [], "s_client": [], "gnutls": [],
    },
    {
        "name": "TLS 1.2 ECDHE-RSA", "server": "1.2",
        "sargs": ["-cipher", "ECDHE-RSA-AES128-GCM-SHA256"], "version": "TLS 1.2", "hrr": False,
        "suite": "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        "curl": [], "s_client": [], "gnutls": [],
    },
    {
        "name": "TLS 1.3 HelloRetryRequest", "server": "1.3", "sargs": ["-groups", "P-256"],
        "version": "TLS 1.3", "hrr": True, "suite": None,
        # Each client sends a key share the server does not take, which wants
        # P-256: X25519 first for the OpenSSL clients; GnuTLS sends one share
        # per curve family (X25519 and P-256 together), so it offers P-384 first.
        "curl": ["--curves", "X25519:P-256"],
        "s_client": ["-groups", "X25519:P-256"],
        "gnutls": ["--priority", "NORMAL:-GROUP-ALL:+GROUP-SECP384R1:+GROUP-SECP256R1"],
    },
]
CLIENTS = ["curl", "s_client", "gnutls-cli", "python"]

BULK = 64 << 20
BULK12 = 8 << 20


def html_part(text):
    i = text.find("<HTML>")
    return text[i:] if i >= 0 else ""


def run_client(client, port, case):
    """Runs one client; returns (rc, content, description).  content is what
    must be equal between a direct and a proxied run."""
    if client == "curl":
        r = tflib.curl(port, extra=case["curl"], timeout=15)
        return r.rc, www_page_core(r.out), r.describe()
    if client == "s_client":
        r = tflib.s_client(port, extra=case["s_client"], timeout=15)
        lines = [ln.strip() for ln in r.out.splitlines()]
        keep = [ln for ln in lines if ln.startswith(("Protocol  :", "Cipher    :",
                                                     "Verify return code:"))]
        first_new = [ln for ln in lines if ln.startswith("New, ")][:1]
        content = "\n".join(first_new + keep) + "\n" + www_page_core(html_part(r.out))
        return r.rc, content, r.describe()
    if client == "gnutls-cli":
        r = tflib.gnutls_cli(port, extra=case["gnutls"], timeout=12)
        desc = [ln.strip() for ln in r.out.splitlines() if ln.strip().startswith("- Description:")]
        content = "\n".join(desc) + "\n" + www_page_core(html_part(r.out))
        return r.rc, content, r.describe()
    if client == "python":
        r = tflib.py_client(port)
        content = "%s %s\n%s" % (r.version, r.cipher,
                                 www_page_core(r.data.decode("utf-8", "replace")))
        return (0 if r.ok else 1), content, repr(r)
    raise ValueError(client)


def expected_handshakes(case):
    if case["hrr"]:
        return [("c2s", "client_hello"), ("s2c", "hello_retry_request"),
                ("c2s", "client_hello"), ("s2c", "server_hello")]
    if case["version"] == "TLS 1.3":
        return [("c2s", "client_hello"), ("s2c", "server_hello")]
    return [("c2s", "client_hello"), ("s2c", "server_hello"), ("s2c", "certificate"),
            ("s2c", "server_key_exchange"), ("s2c", "server_hello_done"),
            ("c2s", "client_key_exchange")]


def clear_sequence(events):
    """handshake and change_cipher_spec events as (dir, name)."""
    seq = []
    for e in events:
        if e.get("event") == "handshake":
            seq.append((e.get("dir"), e.get("type")))
        elif e.get("event") == "change_cipher_spec":
            seq.append((e.get("dir"), "change_cipher_spec"))
    return seq


def check_common(events, fid, upstream):
    """Checks every flow must pass; returns a list of problems."""
    bad = []
    for e in events:
        if e.get("flow") != fid:
            bad.append("event of another flow: %r" % e)
        if not isinstance(e.get("ts"), str) or not TS_RX.match(e["ts"]):
            bad.append("ts not RFC 3339 with microseconds: %r" % e.get("ts"))
        if "dir" in e and e["dir"] not in ("c2s", "s2c"):
            bad.append("bad dir: %r" % e)
        if e.get("event") in ("handshake", "change_cipher_spec", "alert", "encrypted") \
                and e.get("dir") not in ("c2s", "s2c"):
            bad.append("%s without dir: %r" % (e.get("event"), e))
        if e.get("event") == "handshake" and not isinstance(e.get("length"), int):
            bad.append("handshake without integer length: %r" % e)
        if e.get("event") == "encrypted" and not ("content_type" in e and "length" in e):
            bad.append("encrypted without content_type/length: %r" % e)
    starts = [e for e in events if e.get("event") == "flow_start"]
    ends = [e for e in events if e.get("event") == "flow_end"]
    if len(starts) != 1:
        bad.append("expected one flow_start, got %d" % len(starts))
    else:
        s = starts[0]
        for k in ("listener", "client", "upstream", "mode"):
            if k not in s:
                bad.append("flow_start lacks %s" % k)
        if upstream and s.get("upstream") not in (upstream, upstream.replace("127.0.0.1", "localhost")):
            bad.append("flow_start upstream %r != %r" % (s.get("upstream"), upstream))
        if events and events[0] is not s:
            bad.append("flow_start is not the first event of the flow")
    if len(ends) != 1:
        bad.append("expected one flow_end, got %d" % len(ends))
    elif events and events[-1] is not ends[0]:
        bad.append("flow_end is not the last event of the flow")
    return bad


def check_handshake_flow(events, fid, case, upstream, want_suite=None):
    bad = check_common(events, fid, upstream)
    ends = [e for e in events if e.get("event") == "flow_end"]
    end = ends[0] if ends else {}
    seq = clear_sequence(events)
    hs = [x for x in seq if x[1] != "change_cipher_spec"]
    want = expected_handshakes(case)
    if case["version"] == "TLS 1.2":
        # The server may add a NewSessionTicket before its ChangeCipherSpec.
        hs_core = [x for x in hs if x != ("s2c", "new_session_ticket")]
        if hs_core != want:
            bad.append("handshake sequence %r, want %r" % (hs, want))
        ccs = [x for x in seq if x[1] == "change_cipher_spec"]
        if ccs != [("c2s", "change_cipher_spec"), ("s2c", "change_cipher_spec")]:
            bad.append("TLS 1.2 change_cipher_spec events %r, want one c2s then one s2c" % ccs)
        try:
            i_cke = seq.index(("c2s", "client_key_exchange"))
            i_ccs = seq.index(("c2s", "change_cipher_spec"))
            if i_ccs < i_cke:
                bad.append("c2s change_cipher_spec before client_key_exchange")
        except ValueError:
            pass
    else:
        if hs != want:
            bad.append("handshake sequence %r, want %r" % (hs, want))
        for d in ("c2s", "s2c"):
            n = sum(1 for x in seq if x == (d, "change_cipher_spec"))
            if n > 1:
                bad.append("more than one %s change_cipher_spec in TLS 1.3" % d)
    # decoded fields
    chs = [e for e in events if e.get("event") == "handshake" and e.get("type") == "client_hello"]
    for ch in chs:
        sn = ch.get("server_name")
        if not (sn == "lab.test" or (isinstance(sn, list) and "lab.test" in sn)):
            bad.append("client_hello server_name %r, want lab.test" % sn)
        if not ch.get("cipher_suites"):
            bad.append("client_hello lacks cipher_suites")
        if case["version"] == "TLS 1.3" and not ch.get("supported_versions"):
            bad.append("client_hello lacks supported_versions")
    shs = [e for e in events if e.get("event") == "handshake" and e.get("type") == "server_hello"]
    for sh in shs:
        if "version" not in sh or "cipher_suite" not in sh:
            bad.append("server_hello lacks version/cipher_suite: %r" % sh)
        elif end and sh.get("cipher_suite") != end.get("cipher_suite"):
            bad.append("server_hello cipher_suite %r != flow_end %r" % (
                sh.get("cipher_suite"), end.get("cipher_suite")))
    # flow_end
    if end:
        for k, v in (("handshake", "complete"), ("outcome", "ok"), ("version", case["version"]),
                     ("sni", "lab.test")):
            if end.get(k) != v:
                bad.append("flow_end %s = %r, want %r" % (k, end.get(k), v))
        suite = end.get("cipher_suite")
        if not isinstance(suite, str) or not IANA_SUITE_RX.match(suite):
            bad.append("flow_end cipher_suite %r is not an IANA name" % suite)
        want_suite = want_suite or case["suite"]
        if want_suite and suite != want_suite:
            bad.append("flow_end cipher_suite %r, want %r" % (suite, want_suite))
        b = end.get("bytes") or {}
        if not (isinstance(b.get("c2s"), int) and b["c2s"] > 0 and
                isinstance(b.get("s2c"), int) and b["s2c"] > 0):
            bad.append("flow_end bytes %r: want c2s > 0 and s2c > 0" % b)
        if case["hrr"] and end.get("hello_retry_request") is not True:
            bad.append("flow_end hello_retry_request %r, want true" % end.get("hello_retry_request"))
        if not case["hrr"] and end.get("hello_retry_request"):
            bad.append("flow_end hello_retry_request set without one")
        if end.get("resumed"):
            bad.append("flow_end resumed is set on a full handshake")
        if end.get("closed_by") not in ("client", "server", "proxy"):
            bad.append("flow_end closed_by %r" % end.get("closed_by"))
        if end.get("close") not in ("fin", "reset", "error", "timeout", "shutdown"):
            bad.append("flow_end close %r" % end.get("close"))
        if not isinstance(end.get("duration_ms"), int):
            bad.append("flow_end duration_ms %r" % end.get("duration_ms"))
        for k in ("listener", "client", "upstream"):
            if k not in end:
                bad.append("flow_end lacks %s" % k)
    return bad


def test_case(tap, case):
    pki = PKI.get()
    srv = SServer(case["server"], "www", case["sargs"], pki=pki)
    proxy = Tlsfault(upstream=srv.addr, name="hs")
    try:
        for client in CLIENTS:
            label = "%s, %s" % (case["name"], client)
            drc, dcontent, ddesc = run_client(client, srv.port, case)
            before = proxy.events.max_flow()
            prc, pcontent, pdesc = run_client(client, proxy.port, case)
            tap.ok(drc == 0 and prc == drc,
                   "%s: succeeds through the proxy as directly (exit %r, direct %r)" % (
                       label, prc, drc),
                   "direct:\n%s\nproxied:\n%s" % (ddesc, pdesc))
            tap.ok(pcontent == dcontent and pcontent.strip() != "",
                   "%s: same content through the proxy as directly" % label,
                   _diff(dcontent, pcontent))
            ends = proxy.events.new_flow_ends(before, 1, timeout=10)
            if not ends:
                tap.ok(False, "%s: JSON events tell the handshake" % label,
                       "no flow_end after flow %d\n%s" % (before, proxy.stderr_tail()))
                continue
            fid = ends[0]["flow"]
            evs = proxy.events.flow(fid)
            want_suite = None
            if client == "python" and dcontent.split("\n")[0].split(" ")[-1] in OPENSSL_TO_IANA:
                want_suite = OPENSSL_TO_IANA[dcontent.split("\n")[0].split(" ")[-1]]
            bad = check_handshake_flow(evs, fid, case, srv.addr, want_suite)
            if len(ends) != 1:
                bad.append("expected 1 new flow, got %d" % len(ends))
            tap.ok(not bad, "%s: JSON events tell the handshake (%s)" % (label, case["version"]),
                   "\n".join(bad) + "\n" + fmt_events(evs))
    finally:
        if not proxy.alive():
            tap.diag("tlsfault died: %s" % proxy.stderr_tail())
        proxy.stop()
        srv.stop()


def _diff(a, b):
    al, bl = a.splitlines(), b.splitlines()
    out = []
    for i in range(max(len(al), len(bl))):
        x = al[i] if i < len(al) else "<none>"
        y = bl[i] if i < len(bl) else "<none>"
        if x != y:
            out.append("line %d: direct  %r\n         proxied %r" % (i + 1, x, y))
        if len(out) > 10:
            break
    return "\n".join(out) or "(both empty)"


def test_resumption(tap):
    pki = PKI.get()
    srv = SServer("1.2", "www", ["-cipher", "ECDHE-RSA-AES128-GCM-SHA256"], pki=pki)
    proxy = Tlsfault(upstream=srv.addr, name="resume")
    try:
        d_sess = tflib.tmppath("direct.sess")
        p_sess = tflib.tmppath("proxied.sess")
        r1 = tflib.s_client(srv.port, extra=["-sess_out", d_sess], timeout=15)
        r2 = tflib.s_client(srv.port, extra=["-sess_in", d_sess], timeout=15)
        tap.ok(r1.rc == 0 and r2.rc == 0 and "\nReused, TLSv1.2" in r2.out
               and "\nNew, TLSv1.2" in r1.out,
               "TLS 1.2 resumption directly: second s_client says Reused",
               r1.describe() + "\n" + r2.describe())
        before = proxy.events.max_flow()
        p1 = tflib.s_client(proxy.port, extra=["-sess_out", p_sess], timeout=15)
        p2 = tflib.s_client(proxy.port, extra=["-sess_in", p_sess], timeout=15)
        tap.ok(p1.rc == 0 and p2.rc == 0 and "\nReused, TLSv1.2" in p2.out
               and "\nNew, TLSv1.2" in p1.out,
               "TLS 1.2 resumption through the proxy: second s_client says Reused",
               p1.describe() + "\n" + p2.describe())
        ends = proxy.events.new_flow_ends(before, 2, timeout=10)
        bad = []
        if len(ends) != 2:
            bad.append("expected 2 flows, got %d" % len(ends))
        else:
            e1, e2 = ends
            if e1.get("resumed"):
                bad.append("first flow marked resumed")
            if e2.get("resumed") is not True:
                bad.append("second flow_end resumed = %r, want true" % e2.get("resumed"))
            for e in (e1, e2):
                if e.get("handshake") != "complete" or e.get("outcome") != "ok":
                    bad.append("flow %s: handshake %r outcome %r" % (
                        e["flow"], e.get("handshake"), e.get("outcome")))
                if e.get("version") != "TLS 1.2":
                    bad.append("flow %s: version %r" % (e["flow"], e.get("version")))
            evs2 = proxy.events.flow(e2["flow"])
            seq = clear_sequence(evs2)
            core = [x for x in seq if x != ("s2c", "new_session_ticket")]
            want = [("c2s", "client_hello"), ("s2c", "server_hello"),
                    ("s2c", "change_cipher_spec"), ("c2s", "change_cipher_spec")]
            if core != want:
                bad.append("resumed sequence %r, want %r (abbreviated handshake)" % (seq, want))
        tap.ok(not bad, "TLS 1.2 resumption: JSON flow_end of the second flow has resumed: true",
               "\n".join(bad) + "\n" + fmt_events(
                   [e for f in [x["flow"] for x in ends] for e in proxy.events.flow(f)]))
    finally:
        proxy.stop()
        srv.stop()


def test_bulk(tap):
    pki = PKI.get()
    payload = tflib.pattern_bytes(BULK)
    want = tflib.sha256(payload)
    for label, size, smax, cmax in (
            ("TLS 1.3", BULK, None, None),
            ("TLS 1.2", BULK12, tflib.ssl.TLSVersion.TLSv1_2, tflib.ssl.TLSVersion.TLSv1_2)):
        data = payload[:size]
        h = want if size == BULK else tflib.sha256(data)
        srv = TCPServer(handler_bulk, tls=pki.server_context(max_version=smax))
        proxy = Tlsfault(upstream=srv.addr, name="bulk")
        try:
            before = proxy.events.max_flow()
            t0 = tflib.time.monotonic()
            try:
                got, gh = tflib.bulk_client("127.0.0.1", proxy.port, data,
                                            ctx=pki.client_context(max_version=cmax), timeout=60)
                err = None
            except Exception as e:
                got, gh, err = 0, None, e
            dt = tflib.time.monotonic() - t0
            res = srv.wait_results(1, timeout=10)
            tap.diag("%s bulk: %d MiB each way through the proxy in %.2fs" % (label, size >> 20, dt))
            tap.ok(res and res[0] == (size, h),
                   "%s: %d MiB client->server arrive byte-identical (sha256)" % (label, size >> 20),
                   "server saw %r, want %r; client error %r; server errors %r" % (
                       res, (size, h), err, srv.errors))
            tap.ok(got == size and gh == h,
                   "%s: %d MiB server->client arrive byte-identical (sha256)" % (label, size >> 20),
                   "client got %d bytes sha256 %s, want %d %s; error %r" % (got, gh, size, h, err))
            ends = proxy.events.new_flow_ends(before, 1, timeout=10)
            end = ends[0] if ends else {}
            b = end.get("bytes") or {}
            ok = (end.get("outcome") == "ok" and end.get("handshake") == "complete"
                  and isinstance(b.get("c2s"), int) and b["c2s"] >= size
                  and isinstance(b.get("s2c"), int) and b["s2c"] >= size
                  and end.get("version") == label)
            tap.ok(ok, "%s bulk: flow_end counts >= %d MiB each way, outcome ok" % (
                label, size >> 20), fmt_events([end]) if end else "no flow_end")
        finally:
            proxy.stop()
            srv.stop()


def main(tap):
    if not tflib.binary_ready():
        print("Bail out! tlsfault binary not found: %s" % tflib.TF_BIN, flush=True)
        tap.finish()
        return
    for case in CASES:
        tap.section(len(CLIENTS) * 3, case["name"], test_case, tap, case)
    tap.section(3, "TLS 1.2 resumption", test_resumption, tap)
    tap.section(6, "bulk", test_bulk, tap)


PLAN = len(CASES) * len(CLIENTS) * 3 + 3 + 2 * 3

if __name__ == "__main__":
    tflib.run_main(PLAN, main)
