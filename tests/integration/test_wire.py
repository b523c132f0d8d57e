"""test_wire — tshark as an independent judge: what tlsfault says it saw in
clear (handshake messages, ChangeCipherSpec, plaintext alerts, in order,
with their direction) must be what tshark dissects on the client's side of
the proxy; and in passthrough the server's side must carry the same.

Records tshark cannot dissect (encrypted handshake records, application
data) and tlsfault's "encrypted" events are left out of the comparison.
tshark shows a HelloRetryRequest as a ServerHello (type 2)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tflib  # noqa: E402
from tflib import PKI, SServer, TShark, Tlsfault, fmt_events  # noqa: E402

CASES = [
    # name, server version, server args, client, client args, expected client exit
    ("TLS 1.2, s_client", "1.2", ["-cipher", "ECDHE-RSA-AES128-GCM-SHA256"], "s_client", [], 0),
    ("TLS 1.3, s_client", "1.3", [], "s_client", [], 0),
    ("TLS 1.3 HelloRetryRequest, s_client", "1.3", ["-groups", "P-256"], "s_client",
     ["-groups", "X25519:P-256"], 0),
    ("TLS 1.2, gnutls-cli", "1.2", [], "gnutls-cli", [], 0),
    ("TLS 1.3, gnutls-cli", "1.3", [], "gnutls-cli", [], 0),
    ("version mismatch (plaintext alert), s_client", "1.2", [], "s_client", ["-tls1_3"], 1),
]


def run_client(client, port, extra):
    if client == "s_client":
        return tflib.s_client(port, extra=extra, timeout=15)
    return tflib.gnutls_cli(port, extra=extra, timeout=12)


def fmt_seq(seq):
    names = {"hs:%d" % k: v for k, v in tflib.HANDSHAKE_TYPES.items()}
    out = []
    for d, what in seq:
        if what.startswith("alert:"):
            n = int(what.split(":")[1])
            what = "alert %s" % tflib.ALERTS.get(n, n)
        out.append("%s %s" % (d, names.get(what, what)))
    return ", ".join(out)


def test_case(tap, case):
    name, sver, sargs, client, cargs, want_rc = case
    srv = SServer(sver, "www", sargs)
    proxy = Tlsfault(upstream=srv.addr, name="wire")
    try:
        ts = TShark([proxy.port, srv.port], duration=30)
        before = proxy.events.max_flow()
        r = run_client(client, proxy.port, cargs)
        ends = proxy.events.new_flow_ends(before, 1, timeout=10)
        records = ts.finish()
        client_side = tflib.tshark_sequence(records, proxy.port)
        server_side = tflib.tshark_sequence(records, srv.port)
        if not ends:
            tap.ok(False, "%s: tlsfault's events match tshark on the client side" % name,
                   "no flow_end; client %s\n%s" % (r.describe(), proxy.stderr_tail()))
        else:
            evs = proxy.events.flow(ends[0]["flow"])
            logged = tflib.wire_sequence(evs)
            ok = (logged == client_side and r.rc == want_rc and client_side[:1] == [("c2s", "hs:1")])
            tap.ok(ok, "%s: tlsfault's events match tshark on the client side (%s)" % (
                name, fmt_seq(logged)),
                "client exit %r (want %r)\ntshark: %s\nevents: %s\n%s\n%s" % (
                    r.rc, want_rc, fmt_seq(client_side), fmt_seq(logged), fmt_events(evs),
                    r.describe(600)))
        tap.ok(server_side == client_side and client_side,
               "%s: the server's side carries the same clear messages as the client's" % name,
               "client side: %s\nserver side: %s" % (fmt_seq(client_side), fmt_seq(server_side)))
    finally:
        proxy.stop()
        srv.stop()


def main(tap):
    if not tflib.have_tshark():
        tap.skip_rest("tshark not installed" if not tflib.have("tshark") else "tshark needs root")
        return
    if not tflib.binary_ready():
        print("Bail out! tlsfault binary not found: %s" % tflib.TF_BIN, flush=True)
        tap.finish()
        return
    PKI.get()
    for case in CASES:
        tap.section(2, case[0], test_case, tap, case)


if __name__ == "__main__":
    tflib.run_main(len(CASES) * 2, main)
