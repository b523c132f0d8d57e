"""test_mitm — tlsfault in mode "mitm" with the four real clients (curl,
openssl s_client, gnutls-cli, Python ssl), each trusting only the lab CA
that `tlsfault --ca-init` makes, through the proxy to openssl s_server
(TLS 1.2 and TLS 1.3).

 1. No fault: every client succeeds; the s_server page arrives whole and is
    the page a direct openssl s_client gets (the upstream leg is the
    proxy's own OpenSSL); 1 MiB goes both ways intact (curl POST to an HTTP
    echo, Python to a length-prefixed echo); the JSON log tells both legs'
    handshakes (leg = client / upstream) and flow_end has `mitm` with both
    legs' version and suite and the forged subject.
 2. Every certificate fault x {curl, s_client, gnutls-cli, Python} x
    {TLS 1.2, TLS 1.3}: the precise verification failure of each client,
    and the forged leaf seen on the wire (openssl s_client -showcerts) for
    cert-expired and cert-wrong-host.
 3. The client-leg settings faults: server-versions, server-ciphers,
    require-sni (clients without SNI fail, with SNI succeed).
 4. Passthrough faults on the raw client leg of a mitm listener:
    append-bytes, drop-server-hello, delay.
 5. log.keylog / --keylog: tshark decrypts the client leg with it and finds
    the HTTP request; the file is mode 0600.
 6. upstream_tls verify = "file" with a CA that does not sign the server:
    on_verify_failure close (client cut off, flow_end says why) and forge
    (client served, flow_end shows the failed verification).
 7. The scenario files conf/scenarios/ of the mitm faults pass -t beside a
    lab CA (a copy, outside the source tree) and each names its fault.

For the fault matrices one tlsfault (configuration file) has a mitm
listener per TLS version and client, each to its own s_server, so the
eight clients of a fault run at once.  The table of what each client
reported is printed as TAP diagnostics and written to $TF_MITM_TABLE
(markdown) when that is set.  TF_MITM_ONLY=name,name runs only those
matrix cases (a debugging aid)."""

import difflib
import glob
import json
import os
import re
import ssl
import stat
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tflib  # noqa: E402
from tflib import (PKI, LabCA, SServer, TCPServer, Tlsfault, fmt_events,  # noqa: E402
                   www_page_core)

CLIENTS = ["curl", "s_client", "gnutls-cli", "python"]
CLIENT_TITLES = {"curl": "curl", "s_client": "OpenSSL s_client", "gnutls-cli": "GnuTLS",
                 "python": "Python ssl"}
VERSIONS = ["1.2", "1.3"]
HANG = 2.0          # client timeout where the fault is a hang
TIMEOUT = 10.0      # bound on every other client run
GET = "GET / HTTP/1.0\r\n\r\n"
K = tflib.TIMEOUT_RC
OK = "ok"

# Each client limited to one version (so "TLS 1.2" is the client leg's
# version too: the proxy's client leg would otherwise take TLS 1.3 whatever
# the upstream speaks).
VERSION_ARGS = {
    "curl": {"1.2": ["--tlsv1.2", "--tls-max", "1.2"], "1.3": ["--tlsv1.3"]},
    "s_client": {"1.2": ["-tls1_2"], "1.3": ["-tls1_3"]},
    "gnutls-cli": {"1.2": ["--priority", "NORMAL:-VERS-ALL:+VERS-TLS1.2"],
                   "1.3": ["--priority", "NORMAL:-VERS-ALL:+VERS-TLS1.3"]},
}
PY_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
OSSL_NAMES = {"1.2": "TLSv1.2", "1.3": "TLSv1.3"}


# ------------------------------------------------------------ clients

class Outcome:
    def __init__(self, rc, text, full, page, elapsed, argv=None):
        self.rc, self.text, self.full, self.page, self.elapsed = rc, text, full, page, elapsed
        self.argv = argv

    def cell(self):
        return "%s: %s" % (self.rc, self.text)

    def __repr__(self):
        return "Outcome(rc=%r, %r)" % (self.rc, self.text)


def html_part(text):
    i = text.find("<HTML>")
    return text[i:] if i >= 0 else ""


def page_ok(page):
    return re.search(r"<HTML>.*</BODY></HTML>", page, re.S) is not None


OSSL_ERR_RX = re.compile(r"^[0-9A-F]+:error:[0-9A-F]+:[^:]*:[^:]*:([^:]+):", re.M)


def short_text(client, rc, out, err, timeout):
    """A short, table-sized description of what a client reported."""
    both = err + "\n" + out
    if client == "curl":
        m = re.search(r"curl: \((\d+)\) (.*)", err)
        if m:
            t = m.group(2)
            t = re.sub(r"^(OpenSSL SSL_connect|OpenSSL SSL_read): ", "", t)
            t = re.sub(r"OpenSSL/[\d.]+: ", "", t)
            t = re.sub(r"error:[0-9A-F]+:(SSL|Provider) routines::", "", t)
            t = re.sub(r" in connection to (lab\.test|127\.0\.0\.1):\d+ *$", "", t)
            t = re.sub(r"^SSL certificate problem: ", "", t)
            t = re.sub(r", errno \d+$", "", t)
            return t[:90]
        return "ok" if rc == 0 else err.strip()[-80:]
    if rc == K:
        return "no answer, killed after %gs" % timeout
    if client == "s_client":
        extra = []
        m = re.search(r"verify error:num=(\d+):(.*)", both)
        if m:
            extra.append("verify error %s: %s" % (m.group(1), m.group(2).strip()))
        reasons = OSSL_ERR_RX.findall(both)
        m = re.search(r"SSL alert number (\d+)", both)
        if m:
            extra.append("alert %s" % m.group(1))
        m = re.search(r"(write|read):errno=(\d+)", both)
        if m:
            extra.append("%s:errno=%s" % m.groups())
        if extra or reasons:
            return "; ".join(extra[:1] + list(dict.fromkeys(reasons))[:2] + extra[1:])[:110]
        if rc == 0:
            m = re.search(r"Verify return code: (\d+ \(.*?\))", out)
            return "ok" + (" (verify %s)" % m.group(1) if m and not m.group(1).startswith("0 ")
                           else "")
        return (err.strip().splitlines() or [""])[-1][:80]
    if client == "gnutls-cli":
        keep = []
        for rx in (r"Status: (.*NOT trusted.*?)$", r"\*\*\* (Received alert .*?)$",
                   r"\*\*\* (Fatal error: .*?)$", r"\*\*\* (handshake has failed.*?)$",
                   r"\|<\d+>\| (Received record packet of unknown type \d+)"):
            for m in re.finditer(rx, both, re.M):
                keep.append(m.group(1).strip())
        if keep:
            return "; ".join(dict.fromkeys(keep))[:160]
        return "ok" if rc == 0 else (err.strip().splitlines() or [""])[-1][:80]
    return out


def run_client(client, port, version, sni=True, hang=False, cafile=None, timeout=None):
    """Runs one client, limited to TLS version, against the proxy's port;
    returns an Outcome.  sni=False: the clients connect to 127.0.0.1 by
    address (no server_name) and verify the address instead of lab.test."""
    timeout = timeout or (HANG if hang else TIMEOUT)
    cafile = cafile or LabCA.get().root
    host = "lab.test" if sni else "127.0.0.1"
    t0 = time.monotonic()
    if client == "curl":
        argv = ["curl", "-sS", "--cacert", cafile, "--max-time", "%g" % timeout]
        if sni:
            argv += ["--resolve", "lab.test:%d:127.0.0.1" % port]
        argv += VERSION_ARGS[client][version] + ["https://%s:%d/" % (host, port)]
        r = tflib.run(argv, timeout=timeout + 8)
    elif client == "s_client":
        argv = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-CAfile", cafile,
                "-verify_return_error", "-ign_eof"]
        argv += (["-servername", host, "-verify_hostname", host] if sni
                 else ["-noservername", "-verify_ip", host])
        argv += VERSION_ARGS[client][version]
        r = tflib.run(argv, input=GET, timeout=timeout)
    elif client == "gnutls-cli":
        argv = ["gnutls-cli", "--x509cafile", cafile, "-p", str(port)]
        if sni:
            argv += ["--sni-hostname", host, "--verify-hostname", host]
        argv += VERSION_ARGS[client][version] + ["127.0.0.1"]
        r = gnutls_run(argv, timeout)
    elif client == "python":
        ok, ver, data, err = py_client(port, version, host, cafile, timeout)
        page = html_part(data.decode("utf-8", "replace"))
        if ok and page_ok(page):
            text = "ok (%s)" % ver
        elif ok:
            text = "no error, %d bytes, page incomplete (%s)" % (len(data), ver)
        else:
            text = tflib.ssl_error_text(err)
        return Outcome(0 if ok else 1, text, text, page, time.monotonic() - t0, ["python"])
    else:
        raise ValueError(client)
    return Outcome(r.rc, short_text(client, r.rc, r.out, r.err, timeout), r.out + "\n" + r.err,
                   html_part(r.out), time.monotonic() - t0, r.argv)


def gnutls_run(argv, timeout):
    """gnutls-cli quits at stdin EOF: stdin stays open until the page is in
    or it has exited; killed after timeout seconds in all."""
    t0 = time.monotonic()
    p = tflib.Proc(argv, stdin_pipe=True)
    try:
        p.write(GET.encode())
    except OSError:
        pass
    p.wait_for(r"</HTML>", stream="out", timeout=timeout)
    p.close_stdin()
    rc = p.wait(max(0.1, timeout - (time.monotonic() - t0)))
    if rc is None:
        p.kill()
        rc = K
    elif p in tflib._procs:
        tflib._procs.remove(p)
    return tflib.Result(p.argv, rc, p.out, p.err, time.monotonic() - t0)


def py_context(version, cafile=None):
    ctx = ssl.create_default_context(cafile=cafile or LabCA.get().root)
    ctx.minimum_version = ctx.maximum_version = PY_VERSIONS[version]
    return ctx


def py_client(port, version, host, cafile, timeout):
    """Python ssl: handshake, GET, read to the end (an EOF without
    close_notify is an error).  Returns (ok, version, data, exception)."""
    data = bytearray()
    ver = None
    try:
        raw = tflib.socket.create_connection(("127.0.0.1", port), timeout=timeout)
        with py_context(version, cafile).wrap_socket(raw, server_hostname=host) as s:
            ver = s.version()
            s.sendall(GET.encode())
            while True:
                try:
                    b = s.recv(65536)
                except ssl.SSLZeroReturnError:
                    break
                if not b:
                    break
                data += b
        return True, ver, bytes(data), None
    except Exception as e:
        return False, ver, bytes(data), e


def parallel(fns, join=60):
    """Runs the callables at once; returns their results (or exceptions)."""
    res = [None] * len(fns)

    def wrap(i, fn):
        try:
            res[i] = fn()
        except Exception as e:  # reported by the caller
            res[i] = e
    ts = [threading.Thread(target=wrap, args=(i, fn), daemon=True) for i, fn in enumerate(fns)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(join)
    return res


# ------------------------------------------------------------ servers and proxies

_servers = {}


def upstream(version, client="any", extra=()):
    """One s_server -www per (version, client, extra), started on first use:
    s_server serves one connection at a time, and a client's hang must be
    the fault's, not a queue behind another client."""
    key = (version, client, tuple(extra))
    if key not in _servers:
        _servers[key] = SServer(version, "www", list(extra), pki=PKI.get())
    return _servers[key]


def lval(v):
    """A Python value as a libconfig value."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return '"%s"' % str(v).replace("\\", "\\\\").replace('"', '\\"')


def rule_text(rule):
    """{"name": .., "fault": .., params...} as a libconfig group."""
    return "{ %s }" % " ".join("%s = %s;" % (k, lval(v)) for k, v in rule.items())


def mitm_config(name, listeners, rules=(), log_extra="", ca_dir=None, workers=1):
    """Writes a configuration with mitm listeners; returns its path.
    listeners: [(name, upstream address, extra listener keys as text)]."""
    json_path = tflib.tmppath("%s-%d.jsonl" % (name, int(time.time() * 1e6)))
    ls = ",\n".join(
        '  { name = "%s"; listen = "%s"; route = "forward"; upstream = "%s"; mode = "mitm";%s }'
        % (n, tflib.listen_addr(), u, (" " + x) if x else "") for n, u, x in listeners)
    text = "listeners = (\n%s\n);\n" % ls
    if rules:
        text += "faults = (\n  %s\n);\n" % ",\n  ".join(rule_text(r) for r in rules)
    text += 'ca = { dir = "%s"; };\n' % (ca_dir or LabCA.get().dir)
    text += 'log = { text = "none"; json = "%s";%s };\n' % (json_path, log_extra)
    text += "timeouts = { connect = 5.0; handshake = 10.0; idle = 30.0; grace = 2.0; };\n"
    text += "workers = %d;\n" % workers
    return tflib.write_file("%s.conf" % name, text)


def lname(version, client):
    return "v%s-%s" % (version.replace(".", ""), client.replace("_", "").replace("-", ""))


def flows_by_listener(events):
    """{listener name: [events of its flows]} from one JSON log."""
    owner = {}
    for e in events:
        if e.get("event") == "flow_start" and "listener" in e:
            owner[e.get("flow")] = e["listener"]
    out = {}
    for e in events:
        ln = owner.get(e.get("flow"))
        if ln is not None:
            out.setdefault(ln, []).append(e)
    return out


def flow_ends(events):
    return [e for e in events if e.get("event") == "flow_end"]


def wait_flow_ends(proxy, count, timeout=10.0):
    proxy.events.new_flow_ends(0, count, timeout=timeout)
    return proxy.events.all()


# ------------------------------------------------------------ expectations

def E(rcs, rx):
    return (tuple(rcs) if isinstance(rcs, (list, tuple)) else (rcs,), rx)


def CERT(curl_text, num, ossl_text, gnutls_status, py_text=None):
    """A verification failure: curl exit 60, s_client's verify error (with
    -verify_return_error s_client prints "Verification error: ..." and then,
    an OpenSSL quirk, "Verify return code: 0 (ok)": the code is in the
    "verify error:num=N" line), GnuTLS's status line, Python's
    SSLCertVerificationError and its verify_message."""
    return {
        "curl": E(60, r"curl: \(60\) (SSL certificate problem|SSL): %s" % curl_text),
        "s_client": E(1, r"Verification error: %s(.|\n)*verify error:num=%d:%s(.|\n)*"
                         r"certificate verify failed" % (ossl_text, num, ossl_text)),
        "gnutls-cli": E(1, r"- Status: The certificate is NOT trusted\. %s"
                           r"(.|\n)*\*\*\* Fatal error: Error in the certificate\." % gnutls_status),
        "python": E(1, r"^SSLCertVerificationError: %s$" % (py_text or ossl_text)),
    }


def ALERT(num, ossl, gnutls, py):
    """A fatal alert from the proxy's client leg during the handshake."""
    return {
        "curl": E(35, r"curl: \(35\) OpenSSL/[\d.]+: error:[0-9A-F]+:SSL routines::%s" % ossl),
        "s_client": E(1, r"%s:.*SSL alert number %d" % (ossl, num)),
        "gnutls-cli": E(1, r"\*\*\* Received alert \[%d\]: %s" % (num, gnutls)),
        "python": E(1, r"^SSLError: %s" % py),
    }


SUCCEEDS = {c: OK for c in CLIENTS}
HUNG = {
    "curl": E(28, r"curl: \(28\) Operation timed out after \d+ milliseconds"),
    "s_client": E(K, r""),
    "gnutls-cli": E(K, r""),
    "python": E(1, r"^TimeoutError: .*The handshake operation timed out"),
}

BOTH = VERSIONS


def case(title, rule, expect, versions=BOTH, hang=False, sni=True, check=None, todo=None,
         group="cert"):
    """rule: the fault rule ({"fault": ..., params}); expect: {client: exp}
    or {version: {client: exp}}.  check(version, client, outcome, events) ->
    problem or None, for more than the client's words."""
    return {"title": title, "rule": rule, "expect": expect, "versions": versions,
            "hang": hang, "sni": sni, "check": check, "todo": todo or {}, "group": group}


def min_elapsed(seconds):
    def check(version, client, out, events):
        if out.elapsed < seconds:
            return "finished in %.2fs: the fault should have made it take >= %.2fs" % (
                out.elapsed, seconds)
        return None
    return check


CERT_CASES = [
    case("cert-expired", {"fault": "cert-expired"},
         CERT("certificate has expired", 10, "certificate has expired",
              r"The certificate chain uses expired certificate\.")),
    case("cert-not-yet-valid", {"fault": "cert-not-yet-valid"},
         CERT("certificate is not yet valid", 9, "certificate is not yet valid",
              r"The certificate chain uses not yet valid certificate\.")),
    case("cert-wrong-host", {"fault": "cert-wrong-host"},
         CERT("no alternative certificate subject name matches target host name "
              "'lab\\.test'", 62, "hostname mismatch", r"The name in the certificate does not match the expected\.",
              py_text=r"Hostname mismatch, certificate is not valid for 'lab\.test'\.")),
    case("cert-self-signed", {"fault": "cert-self-signed"},
         CERT("self-signed certificate", 18, "self-signed certificate",
              r"The certificate issuer is unknown\.")),
    case("cert-untrusted-root", {"fault": "cert-untrusted-root"},
         CERT("unable to get local issuer certificate", 20,
              "unable to get local issuer certificate", r"The certificate issuer is unknown\.")),
    case("cert-no-intermediate", {"fault": "cert-no-intermediate"},
         CERT("unable to get local issuer certificate", 20,
              "unable to get local issuer certificate", r"The certificate issuer is unknown\.")),
    case("cert-wrong-eku", {"fault": "cert-wrong-eku"},
         CERT("unsuitable certificate purpose", 26, "unsuitable certificate purpose",
              r"The certificate chain does not match the intended purpose\.")),
    case("cert-sha1", {"fault": "cert-sha1"},
         CERT("CA signature digest algorithm too weak", 68,
              "CA signature digest algorithm too weak",
              r"The certificate chain uses insecure algorithm\.")),
    case("cert-weak-key", {"fault": "cert-weak-key"},
         dict(CERT("EE certificate key too weak", 66, "EE certificate key too weak", ""), **{
             # GnuTLS 3.7 takes an RSA-1024 leaf at its default priority.
             "gnutls-cli": E(0, r"RSA key 1024 bits(.|\n)*- Status: The certificate is "
                                r"trusted\.(.|\n)*</BODY></HTML>"),
         })),
]

PROTOCOL_VERSION = ALERT(70, "tlsv1 alert protocol version", "Error in protocol version",
                         "TLSV1_ALERT_PROTOCOL_VERSION")
HANDSHAKE_FAILURE = ALERT(40, "sslv3 alert handshake failure", "Handshake failed",
                          "SSLV3_ALERT_HANDSHAKE_FAILURE")
UNRECOGNIZED_NAME = ALERT(112, "tlsv1 unrecognized name", "The server name sent was not recognized",
                          "TLSV1_UNRECOGNIZED_NAME")

SETTINGS_CASES = [
    case("server-versions", {"fault": "server-versions"}, PROTOCOL_VERSION,
         group="settings"),
    case("server-versions (min=max=TLS1.3)",
         {"fault": "server-versions", "min": "TLS1.3", "max": "TLS1.3"},
         {"1.2": PROTOCOL_VERSION, "1.3": SUCCEEDS}, group="settings"),
    case("server-ciphers", {"fault": "server-ciphers"}, HANDSHAKE_FAILURE, group="settings"),
    case("require-sni (clients without SNI)", {"fault": "require-sni"}, UNRECOGNIZED_NAME,
         sni=False, group="settings"),
    case("require-sni (clients with SNI)", {"fault": "require-sni"}, SUCCEEDS,
         group="settings"),
]
WRONG_VERSION_APPENDED = {
    # "INSPECTED" after the proxy's first application_data record: its 'I'
    # (73) is read as the next record's content type.
    "curl": E(56, r"curl: \(56\) OpenSSL SSL_read: OpenSSL/[\d.]+: error:[0-9A-F]+:"
                  r"SSL routines::wrong version number"),
    "s_client": E(1, r"SSL routines:[^:]*:wrong version number"),
    "gnutls-cli": E(1, r"Received record packet of unknown type 73"
                       r"(.|\n)*\*\*\* Fatal error: An unexpected TLS packet was received"),
    "python": E(1, r"^SSLError: WRONG_VERSION_NUMBER"),
}

WIRE_CASES = [
    case("append-bytes", {"fault": "append-bytes"}, WRONG_VERSION_APPENDED, group="wire"),
    case("drop-server-hello", {"fault": "drop-server-hello"}, HUNG, hang=True, group="wire"),
    case("delay (ms=100)", {"fault": "delay", "ms": 100}, SUCCEEDS, group="wire",
         check=min_elapsed(0.3)),
]

ALL_CASES = CERT_CASES + SETTINGS_CASES + WIRE_CASES
_only = [x for x in os.environ.get("TF_MITM_ONLY", "").split(",") if x]
CASES = [c for c in ALL_CASES if not _only or c["title"] in _only]

RESULTS = []   # (title, version, {client: Outcome})


# ------------------------------------------------------------ matrix runner

_refs = {}


def reference_page(version, client="any"):
    """What the upstream serves to a direct openssl s_client with OpenSSL's
    defaults: through a mitm listener every client should get exactly this
    page (the s_server -www page describes the upstream leg, whose client
    is the proxy's own OpenSSL), whatever the client itself offered."""
    key = (version, client)
    if key not in _refs:
        srv = upstream(version, client)
        r = tflib.run(["openssl", "s_client", "-connect", srv.addr, "-servername", "lab.test",
                       "-CAfile", PKI.get().ca, "-verify_return_error", "-ign_eof"],
                      input=GET, timeout=TIMEOUT)
        _refs[key] = html_part(r.out)
    return _refs[key]


def page_diff(a, b):
    d = list(difflib.unified_diff(www_page_core(a).splitlines(), www_page_core(b).splitlines(),
                                  "direct", "proxied", lineterm="", n=1))
    return "\n".join(d[:30])


def rule_name(c):
    return "t-" + re.sub(r"[^a-z0-9]+", "-", c["title"].lower()).strip("-")


def check_fault_events(events, rule, fault):
    """Problems with the JSON log of a flow where rule (of fault) must fire."""
    bad = []
    fe = [e for e in events if e.get("event") == "fault"]
    if not any(e.get("rule") == rule and e.get("fault") == fault for e in fe):
        bad.append("no fault event with rule %r and fault %r (fault events: %r)" % (
            rule, fault, fe))
    ends = flow_ends(events)
    if len(ends) != 1:
        bad.append("expected one flow_end, got %d" % len(ends))
    else:
        end = ends[0]
        names = [x if isinstance(x, str) else (x or {}).get("rule")
                 for x in (end.get("faults") or [])]
        if rule not in names:
            bad.append("flow_end faults %r does not name %r" % (end.get("faults"), rule))
        if rule not in str(end.get("summary", "")):
            bad.append("flow_end summary %r does not mention %r" % (end.get("summary"), rule))
        if not isinstance(end.get("mitm"), dict):
            bad.append("flow_end has no mitm object: %r" % end)
    return bad


def expectation(c, version, client):
    exp = c["expect"]
    if version in exp:
        exp = exp[version]
    return exp[client]


def judge(c, version, client, out):
    """(good, description, why) for one client's outcome."""
    exp = expectation(c, version, client)
    what = "%s, TLS %s: %s" % (c["title"], version, client)
    if exp == OK:
        ref = reference_page(version, client)
        good = out.rc == 0 and page_ok(out.page) and www_page_core(out.page) == www_page_core(ref)
        why = "want exit 0 and the page a direct s_client gets\n" + page_diff(ref, out.page)
        desc = "%s: succeeds, same page as a direct s_client (%.2fs)" % (what, out.elapsed)
    else:
        rcs, rx = exp
        good = out.rc in rcs and re.search(rx, out.full, re.M) is not None
        why = "want exit in %r and output matching /%s/" % (rcs, rx)
        desc = "%s: want exit %s, got %s: %s" % (what, "/".join(str(x) for x in rcs), out.rc,
                                                 out.text[:80])
    return good, desc, why


def run_case(tap, c):
    rule = dict(name=rule_name(c), **c["rule"])
    combos = [(v, cl) for v in c["versions"] for cl in CLIENTS]
    for v in c["versions"]:
        if v in c["todo"]:
            tap.diag(c["todo"][v])
    cfg = mitm_config(rule["name"], [(lname(v, cl), upstream(v, cl).addr, "")
                                     for v, cl in combos], [rule])
    proxy = Tlsfault(config=cfg, name="m-" + rule["name"])
    try:
        outs = parallel([lambda v=v, cl=cl: run_client(cl, proxy.port_of(lname(v, cl)), v,
                                                        sni=c["sni"], hang=c["hang"])
                         for v, cl in combos])
        events = wait_flow_ends(proxy, len(combos))
        byl = flows_by_listener(events)
        for v in c["versions"]:
            RESULTS.append((c["title"], v, {cl: o for (vv, cl), o in zip(combos, outs)
                                            if vv == v}))
        for (v, cl), out in zip(combos, outs):
            what = "%s, TLS %s: %s" % (c["title"], v, cl)
            evs = byl.get(lname(v, cl), [])
            if isinstance(out, Exception):
                tap.ok(False, "%s: client ran" % what, repr(out))
                tap.ok(False, "%s: JSON names rule %s" % (what, rule["name"]))
                continue
            good, desc, why = judge(c, v, cl, out)
            problem = c["check"](v, cl, out, evs) if c["check"] else None
            if problem:
                good = False
                why += "\n" + problem
            tap.ok(good, desc, "%s\ngot exit %r (%.2fs): %s\ncommand: %s\noutput:\n%s\nJSON:\n%s"
                   % (why, out.rc, out.elapsed, out.text, " ".join(out.argv or []),
                      tflib._tail(out.full, 1500), fmt_events(evs, 25)))
            bad = check_fault_events(evs, rule["name"], rule["fault"])
            tap.ok(not bad, "%s: JSON: fault event of %s, flow_end faults/summary name it, "
                   "flow_end has mitm" % (what, rule["name"]),
                   "\n".join(bad) + "\n" + fmt_events(evs, 30) + "\n" + proxy.stderr_tail(800))
    finally:
        if not proxy.alive():
            tap.diag("tlsfault died: %s" % proxy.stderr_tail())
        proxy.stop()
