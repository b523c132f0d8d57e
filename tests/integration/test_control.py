"""test_control — the control API and `tlsfault ctl`, as a test suite uses them.

A tlsfault in quick mode (--control 127.0.0.1:0) in front of a threaded
Python TLS server, driven the way a CI job drives it:

 1. A CI session with `tlsfault ctl`: add drop-server-hello for one SNI,
    the client for that name hangs (curl 28) while another name passes,
    `ctl wait-fault` returns 0 (and 1 for a rule that does not exist),
    `ctl rm`, the client passes; ls/show/faults/flows/stats print.
 2. disable/enable (ctl and PATCH), PATCH params with counters carried and
    reset, and that a flow in progress keeps the rules it started with.
 3. GET /stats: flows, bytes, handshakes by version, outcomes, faults per
    rule, verdicts.
 4. GET /flows and /flows/ID while a stalled flow is live, with its events
    so far; gone from /flows once it ends.
 5. GET /events: chunked JSON Lines (read by curl) with a fault event;
    ?flow= and ?event= filters; `ctl events`.
 6. Refusals: bad JSON (400 with line/column/position), unknown fault or
    parameter (422 with the valid names), unknown rule (404), duplicate
    (409), wrong method (405), no JSON content type (415), DNS-rebinding
    Host (403), ctl usage (exit 2) and an unreachable API (exit 1).
 7. A bearer token from the file (401 without it; ctl --token-file), and
    a non-loopback control.listen refused at config load (file:line).
 8. POST /reload / `ctl reload`: the file's rules replace runtime ones; a
    broken file is refused and nothing changes.
 9. mitm: a certificate fault added and removed at runtime.
10. Concurrency: 50 rule changes (add, patch, delete) from several threads
    while clients run and an /events stream comes and goes: every client
    passes, no crash, and tlsfault exits 0 on SIGTERM without a sanitizer
    report.
"""

import json
import os
import re
import signal
import socket
import ssl
import sys
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tflib  # noqa: E402
from tflib import PKI, Proc, TCPServer, Tlsfault, run, write_file  # noqa: E402

PLAN = 91
TF_BIN = tflib.TF_BIN
SAN_RX = re.compile(r"(ERROR|WARNING): (Address|Leak|UndefinedBehavior)Sanitizer|runtime error:")
STOPPED = []   # (what, exit code, stderr) of every tlsfault this test stopped


# ------------------------------------------------------------ helpers

def handler_http(conn, srv):
    """A tiny HTTP/1.0 responder: reads the request, answers "ok", closes."""
    data = b""
    while b"\r\n\r\n" not in data:
        b = conn.recv(4096)
        if not b:
            return
        data += b
    conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n")


class Api:
    """The control API over HTTP (urllib), and `tlsfault ctl` against it."""

    def __init__(self, addr, token_file=None):
        self.addr = addr
        self.token_file = token_file
        self.token = open(token_file).read().strip() if token_file else None

    def call(self, method, path, body=None, ctype="application/json", token=None, raw=None,
             headers=None):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None
                                             else None)
        req = urllib.request.Request("http://%s%s" % (self.addr, path), data=data,
                                     method=method)
        if ctype and (data is not None or method in ("POST", "PATCH")):
            req.add_header("Content-Type", ctype)
        tok = token if token is not None else self.token
        if tok:
            req.add_header("Authorization", "Bearer " + tok)
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                status, text = r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read().decode()
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def ctl(self, *args, timeout=20.0):
        argv = [TF_BIN, "ctl", "--control", self.addr]
        if self.token_file:
            argv += ["--token-file", self.token_file]
        return run(argv + list(args), timeout=timeout)


def start(extra=(), config=None, name="tlsfault"):
    """A tlsfault with the control API; returns (tlsfault, Api)."""
    if config is None:
        tf = Tlsfault(upstream=UPSTREAM.addr, extra=("--control", "127.0.0.1:0") + tuple(extra),
                      workers=2, name=name)
    else:
        tf = Tlsfault(config=config, name=name)
    m = re.search(r"control API on (\S+)", tf.proc.err)
    if not m:
        raise RuntimeError("no control API line: %s" % tf.stderr_tail())
    return tf, Api(m.group(1))


def stop(tf, what):
    rc = tf.stop()
    STOPPED.append((what, rc, tf.proc.err))
    return rc


def client(tf, host="lab.test", timeout=5.0):
    """Python ssl client: handshake + GET; returns (ok, elapsed, error)."""
    t0 = time.monotonic()
    try:
        raw = socket.create_connection(("127.0.0.1", tf.port), timeout=timeout)
        ctx = PKI.get().client_context()
        with ctx.wrap_socket(raw, server_hostname=host) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            data = tflib.recv_all(s)
        return data.endswith(b"ok\n"), time.monotonic() - t0, None
    except (OSError, ssl.SSLError) as e:
        return False, time.monotonic() - t0, repr(e)


def curl(tf, host, max_time=3):
    return run(["curl", "-sS", "--cacert", PKI.get().ca, "--resolve",
                "%s:%d:127.0.0.1" % (host, tf.port), "--max-time", str(max_time),
                "https://%s:%d/" % (host, tf.port)], timeout=max_time + 10)


def rule_names(api):
    st, rules = api.call("GET", "/rules")
    return [r["name"] for r in rules] if st == 200 else None


# ------------------------------------------------------------ 1. the CI session

def test_ci_session(tap, tf, api):
    r = api.ctl("ls")
    tap.ok(r.rc == 0 and r.out.startswith("NAME") and len(r.out.splitlines()) == 1,
           "ctl ls: no rules yet (header only)", r.describe())
    r = api.ctl("add", "no-hello", "drop-server-hello", "--sni", "lab.test")
    tap.ok(r.rc == 0 and "rule no-hello added: drop-server-hello, match sni=lab.test" in r.out,
           "ctl add no-hello drop-server-hello --sni lab.test", r.describe())
    r = curl(tf, "lab.test", max_time=2)
    tap.eq(r.rc, 28, "curl to lab.test hangs until its timeout (28): the ServerHello is withheld",
           r.describe())
    r = curl(tf, "localhost")
    tap.ok(r.rc == 0 and r.out == "ok\n", "curl to another SNI (localhost) passes", r.describe())
    r = api.ctl("wait-fault", "no-hello", "--timeout", "5")
    tap.ok(r.rc == 0 and "rule no-hello has acted" in r.out,
           "ctl wait-fault no-hello: 0, the rule has acted", r.describe())
    r = api.ctl("ls")
    line = [ln for ln in r.out.splitlines() if ln.startswith("no-hello")]
    tap.ok(r.rc == 0 and line and re.search(r"enabled\s+1\s+1\s+1\s+sni=lab\.test", line[0]),
           "ctl ls: no-hello enabled, seen 1 (only lab.test matched), fired 1, 1 fault event",
           r.describe())
    r = api.ctl("show", "no-hello")
    shown = json.loads(r.out) if r.rc == 0 else {}
    tap.ok(shown.get("fault") == "drop-server-hello" and shown.get("match") == {"sni": "lab.test"}
           and shown.get("fired") == 1, "ctl show no-hello: the rule as JSON", r.describe())
    r = api.ctl("rm", "no-hello")
    tap.ok(r.rc == 0 and "rule no-hello removed" in r.out, "ctl rm no-hello", r.describe())
    r = curl(tf, "lab.test")
    tap.ok(r.rc == 0 and r.out == "ok\n", "after rm, curl to lab.test passes", r.describe())
    r = api.ctl("wait-fault", "no-hello", "--timeout", "1")
    tap.ok(r.rc == 1 and 'no rule called "no-hello"' in r.err,
           "ctl wait-fault on a removed rule: exit 1, says so", r.describe())

    # wait-fault that has to wait: the fault fires while it follows /events.
    api.ctl("add", "later", "reset-after-client-hello", "--sni", "later.lab.test")
    waiter = Proc([TF_BIN, "ctl", "--control", api.addr, "wait-fault", "later", "--timeout", "8"])
    time.sleep(0.5)
    curl(tf, "later.lab.test")
    rc = waiter.wait(10)
    tap.ok(rc == 0 and re.search(r"rule later acted on flow \d+: ", waiter.out),
           "ctl wait-fault follows /events: returns 0 when the fault fires",
           "rc=%r out=%r err=%r" % (rc, waiter.out, waiter.err))
    r = api.ctl("wait-fault", "later", "--new", "--timeout", "1")
    tap.ok(r.rc == 1 and "did not act within 1 s" in r.err and r.elapsed >= 0.9,
           "ctl wait-fault --new ignores past events: exit 1 after the timeout", r.describe())
    api.ctl("rm", "later")

    r = api.ctl("faults")
    tap.ok(r.rc == 0 and re.search(r"^drop-server-hello\s+passthrough\s+withholds", r.out, re.M),
           "ctl faults: the catalogue", r.describe())
    r = api.ctl("stats")
    st = json.loads(r.out) if r.rc == 0 else {}
    tap.ok(st.get("faults", {}).get("no-hello", {}).get("events") == 1,
           "ctl stats: faults fired per rule (no-hello: 1 event)", r.describe())


# ------------------------------------------------------------ 2. enable, disable, patch

def test_enable_disable(tap, tf, api):
    r = api.ctl("add", "rst", "reset-after-client-hello")
    tap.eq(r.rc, 0, "ctl add rst reset-after-client-hello (every flow)", r.describe())
    ok, _, err = client(tf)
    tap.ok(not ok and err and "Reset" in err, "with rst: the client is reset", err)
    r = api.ctl("disable", "rst")
    tap.ok(r.rc == 0 and "rule rst disabled" in r.out, "ctl disable rst", r.describe())
    ok, _, err = client(tf)
    tap.ok(ok, "rst disabled: the client passes", err)
    st, rule = api.call("PATCH", "/rules/rst", {"enabled": True})
    tap.ok(st == 200 and rule.get("enabled") is True and rule.get("fired") == 1,
           "PATCH enabled=true: 200, counters carried over (fired 1)", (st, rule))
    ok, _, err = client(tf)
    tap.ok(not ok, "rst enabled again: the client is reset", err)
    st, rule = api.call("PATCH", "/rules/rst", {"reset": True, "match": {"sni": "none.invalid"}})
    tap.ok(st == 200 and rule.get("fired") == 0 and rule.get("seen") == 0 and
           rule.get("match") == {"sni": "none.invalid"} and rule.get("events") == 0,
           "PATCH reset + match: counters and events zero, the new match shown", (st, rule))
    ok, _, err = client(tf)
    tap.ok(ok, "rst now matches another SNI: the client passes", err)
    r = api.ctl("rm", "rst")
    tap.eq(r.rc, 0, "ctl rm rst", r.describe())

    # PATCH params: null puts the default back; the rest of the rule stays.
    api.call("POST", "/rules", {"name": "d", "fault": "delay", "params": {"ms": 5, "dir": "s2c"},
                                "match": {"sni": "none.invalid"}})
    st, rule = api.call("PATCH", "/rules/d", {"params": {"ms": 7, "dir": None}})
    tap.ok(st == 200 and rule["params"]["ms"] == 7 and rule["params"]["dir"] == "both" and
           rule["match"] == {"sni": "none.invalid"},
           "PATCH params: ms=7, dir null -> default both, match kept", (st, rule))
    r = api.ctl("set", "d", "ms=9", "--sni", "")
    st, rule = api.call("GET", "/rules/d")
    tap.ok(r.rc == 0 and rule["params"]["ms"] == 9 and rule["match"] == {},
           "ctl set d ms=9 --sni '': parameter changed, match removed", (r.describe(), rule))
    api.call("DELETE", "/rules/d")

    # A flow in progress keeps the rules it started with; new flows see the change at once.
    api.ctl("add", "slow", "delay", "ms=700", "dir=s2c")
    res = {}
    t = threading.Thread(target=lambda: res.update(a=client(tf, timeout=15)))
    t.start()
    tflib.wait_until(lambda: api.call("GET", "/flows")[1], timeout=5)
    r = api.ctl("rm", "slow")
    ok_b, el_b, err_b = client(tf)
    t.join(20)
    ok_a, el_a, err_a = res.get("a", (False, 0, "no result"))
    tap.ok(r.rc == 0 and ok_a and el_a >= 1.4 and ok_b and el_b < 0.7,
           "rule removed mid-flow: the flow in progress stays delayed (%.2fs), a new flow is "
           "not (%.2fs)" % (el_a, el_b), (r.describe(), err_a, err_b))


# ------------------------------------------------------------ 3. stats

def test_stats(tap, tf, api):
    st, s = api.call("GET", "/stats")
    tap.eq(st, 200, "GET /stats: 200")
    fl = s.get("flows", {})
    tap.ok(fl.get("started", 0) >= 8 and fl.get("ended", 0) >= 7 and
           fl["started"] - fl["ended"] == fl.get("live"),
           "stats.flows: started, ended, live agree", fl)
    tap.ok(s.get("bytes", {}).get("c2s", 0) > 0 and s["bytes"].get("s2c", 0) > 0,
           "stats.bytes: both directions counted", s.get("bytes"))
    tap.ok(s.get("handshakes", {}).get("TLS 1.3", 0) >= 3 and s["handshakes"].get("none", 0) >= 1,
           "stats.handshakes: flows counted by version (none: no ServerHello seen)",
           s.get("handshakes"))
    tap.ok(s.get("outcomes", {}).get("ok", 0) >= 3 and s["outcomes"].get("failed", 0) +
           s["outcomes"].get("aborted", 0) >= 2, "stats.outcomes: ok and failed flows",
           s.get("outcomes"))
    tap.ok(s.get("faults", {}).get("rst", {}).get("fault") == "reset-after-client-hello" and
           s["faults"]["rst"].get("events", 0) >= 2 and s["faults"]["rst"].get("flows", 0) >= 2,
           "stats.faults: per rule, its fault, events and flows", s.get("faults"))
    tap.ok(isinstance(s.get("verdicts"), dict) and isinstance(s.get("rules"), dict) and
           s.get("events", {}).get("total", 0) > 0,
           "stats.verdicts (by cause), rules (current, with counters), events.total",
           {k: s.get(k) for k in ("verdicts", "rules", "events")})


# ------------------------------------------------------------ 4. live flows

def test_flows(tap, tf, api):
    api.ctl("add", "hold", "drop-server-hello", "--sni", "stall.lab.test")
    # s_client waits for the ServerHello until it is killed: the flow stays live.
    held = Proc(["openssl", "s_client", "-connect", "127.0.0.1:%d" % tf.port, "-servername",
                 "stall.lab.test"], name="s_client-held", stdin_pipe=True)

    def stalled():
        st, flows = api.call("GET", "/flows")
        mine = [f for f in flows if f.get("sni") == "stall.lab.test"] if st == 200 else []
        return mine[0] if mine and "hold" in mine[0].get("faults", []) else None
    f = tflib.wait_until(stalled, timeout=5)
    tap.ok(f and f.get("live") is True and f.get("listener") == "listener1" and
           f.get("age_ms", -1) >= 0 and f.get("events", 0) >= 3,
           "GET /flows: the stalled flow is live, with its SNI, the rule that acts on it, age "
           "and event count", f)
    fid = f["id"] if f else 0
    st, one = api.call("GET", "/flows/%d" % fid)
    names = [e.get("event") for e in one.get("event_log", [])] if st == 200 else []
    tap.ok(st == 200 and names[:1] == ["flow_start"] and "fault" in names and
           any(e.get("type") == "client_hello" for e in one["event_log"]),
           "GET /flows/ID: its events so far (flow_start, the ClientHello, the fault)", names)
    r = api.ctl("flows")
    tap.ok(r.rc == 0 and re.search(r"^%d\s.*stall\.lab\.test\s.*\bhold\b" % fid, r.out, re.M),
           "ctl flows: a table row for the flow", r.describe())
    held.kill()
    gone = tflib.wait_until(lambda: fid not in [x["id"] for x in api.call("GET", "/flows")[1]],
                            timeout=5)
    st, one = api.call("GET", "/flows/%d" % fid)
    tap.ok(gone and st == 200 and one.get("live") is False and one.get("outcome"),
           "once it ends: gone from /flows; /flows/ID still answers for a while, with the outcome",
           one)
    st, body = api.call("GET", "/flows/999999")
    tap.ok(st == 404 and "no flow 999999" in body.get("error", ""), "GET /flows/999999: 404",
           body)
    api.ctl("rm", "hold")


# ------------------------------------------------------------ 5. /events

def test_events(tap, tf, api):
    everything = Proc(["curl", "-sN", "http://%s/events" % api.addr], name="curl-events")
    faults = Proc(["curl", "-sN", "http://%s/events?event=fault" % api.addr], name="curl-faults")
    follow = Proc([TF_BIN, "ctl", "--control", api.addr, "events", "--event", "flow_end",
                   "--timeout", "8"], name="ctl-events")
    tflib.wait_until(lambda: api.call("GET", "/stats")[1]["events"]["streams"] >= 3, timeout=5)
    api.ctl("add", "ev", "close-after-client-hello", "--sni", "ev.lab.test")
    curl(tf, "ev.lab.test")
    m = faults.wait_for(r'(\{[^\n]*"event":"fault"[^\n]*\})\n', stream="out", timeout=5)
    ev = json.loads(m.group(1)) if m else {}
    tap.ok(ev.get("rule") == "ev" and ev.get("fault") == "close-after-client-hello" and
           ev.get("action") and ev.get("ts"),
           "GET /events?event=fault: the fault event arrives as a JSON line (curl reads the "
           "chunked stream)", faults.out[-800:])
    fid = ev.get("flow", 0)
    m = everything.wait_for(r'"flow":%d,"event":"flow_end"' % fid, stream="out", timeout=5)
    lines = [json.loads(x) for x in everything.out.splitlines() if '"flow":%d,' % fid in x]
    tap.ok(m and [x["event"] for x in lines][0] == "flow_start" and
           lines[-1]["event"] == "flow_end",
           "GET /events: every event of the flow, flow_start to flow_end",
           [x["event"] for x in lines])
    tap.ok(all(json.loads(x)["event"] == "fault" for x in faults.out.splitlines()),
           "?event=fault carries nothing else", faults.out[-500:])
    byflow = Proc(["curl", "-sN", "http://%s/events?flow=%d" % (api.addr, fid + 1)],
                  name="curl-flow")
    tflib.wait_until(lambda: api.call("GET", "/stats")[1]["events"]["streams"] >= 4, timeout=5)
    curl(tf, "localhost")
    curl(tf, "localhost")
    m = byflow.wait_for(r'"event":"flow_end"', stream="out", timeout=5)
    tap.ok(m and all(json.loads(x)["flow"] == fid + 1 for x in byflow.out.splitlines()),
           "?flow=ID: only that flow's events", byflow.out[-500:])
    rc = follow.wait(12)
    got = [json.loads(x)["event"] for x in follow.out.splitlines() if x]
    tap.ok(rc == 0 and len(got) >= 3 and set(got) == {"flow_end"},
           "ctl events --event flow_end --timeout 8: the flow_end lines, then exit 0",
           "rc=%r events=%r err=%r" % (rc, got, follow.err))
    for p in (everything, faults, byflow):
        p.kill()
    gone = tflib.wait_until(lambda: api.call("GET", "/stats")[1]["events"]["streams"] == 0,
                            timeout=5)
    tap.ok(gone, "subscribers that hang up are forgotten (streams back to 0)")
    st, body = api.call("GET", "/events?bogus=1")
    tap.ok(st == 400 and "unknown query parameter" in body.get("error", ""),
           "GET /events?bogus=1: 400", body)
    api.ctl("rm", "ev")


# ------------------------------------------------------------ 6. refusals

def test_refusals(tap, tf, api):
    st, body = api.call("POST", "/rules", raw=b'{"name": "x",\n "fault": }')
    tap.ok(st == 400 and body.get("line") == 2 and body.get("column") == 11 and
           body.get("position") == 25 and body["error"].startswith("invalid JSON: ") and
           "line 2, column 11" in body["error"],
           "bad JSON: 400 with jansson's reason, line, column and position", body)
    st, body = api.call("POST", "/rules", {"name": "x", "fault": "drop-server-helo"})
    tap.ok(st == 422 and 'fault "drop-server-helo" is unknown' in body.get("error", "") and
           "drop-server-hello" in body.get("valid", []) and "delay" in body["valid"],
           "unknown fault: 422 listing the valid names", body)
    st, body = api.call("POST", "/rules", {"name": "x", "fault": "delay",
                                           "params": {"msec": 5}})
    tap.ok(st == 422 and body.get("valid") == ["ms", "jitter", "dir", "after_bytes"] and
           'unknown parameter "msec" for fault "delay"' in body["error"],
           "unknown parameter: 422 listing the fault's parameters", body)
    st, body = api.call("POST", "/rules", {"name": "x", "fault": "stall",
                                           "match": {"host": "a"}})
    tap.ok(st == 422 and "sni" in body.get("valid", []), "unknown match key: 422 listing them",
           body)
    st, body = api.call("POST", "/rules", {"name": "x", "fault": "delay", "params": {"ms": -5}})
    tap.ok(st == 422 and body.get("error") == '"ms" must be between 0 and 3600000, not -5',
           "bad value: 422 with the same words as the file", body)
    st, body = api.call("POST", "/rules", {"name": "x", "fault": "stall",
                                           "match": {"listener": "nope"}})
    tap.ok(st == 422 and 'unknown listener "nope" in match; valid: listener1' in
           body.get("error", ""), "unknown listener: 422 (judged against the listeners)", body)
    st, body = api.call("POST", "/rules", {"name": "x", "fault": "cert-expired"})
    tap.ok(st == 422 and 'needs a listener with mode "mitm"' in body.get("error", ""),
           "a mitm fault without a mitm listener: 422", body)
    api.call("POST", "/rules", {"name": "dup", "fault": "stall", "match": {"sni": "x.invalid"}})
    st, body = api.call("POST", "/rules", {"name": "dup", "fault": "delay"})
    tap.ok(st == 409 and 'a rule called "dup" exists already' in body.get("error", ""),
           "duplicate name: 409", body)
    for method, body_ in (("GET", None), ("PATCH", {"enabled": False}), ("DELETE", None)):
        st, body = api.call(method, "/rules/nope", body_)
        tap.ok(st == 404 and 'no rule called "nope"' in body.get("error", ""),
               "%s /rules/nope: 404" % method, body)
    st, body = api.call("PATCH", "/rules/dup", {"enable": False})
    tap.ok(st == 422 and body.get("valid") == ["enabled", "params", "match", "reset"],
           "PATCH with an unknown key: 422 listing the valid ones", body)
    st, body = api.call("PATCH", "/rules/dup", {"params": {"dir": "sideways"}})
    tap.ok(st == 422 and api.call("GET", "/rules/dup")[1]["params"]["dir"] == "both",
           "PATCH with a bad value: 422 and the rule unchanged", body)
    st, body = api.call("DELETE", "/rules")
    tap.ok(st == 405 and "allowed: GET, POST" in body.get("error", ""), "DELETE /rules: 405",
           body)
    st, body = api.call("POST", "/rules", raw=b'{"name": "y", "fault": "stall"}',
                        ctype="text/plain")
    tap.ok(st == 415 and "y" not in rule_names(api), "POST without application/json: 415",
           body)
    st, body = api.call("GET", "/rules", headers={"Host": "attacker.example:8474"})
    tap.ok(st == 403, "a Host that is a name other than localhost: 403 (DNS rebinding)", body)
    st, body = api.call("GET", "/nope")
    tap.ok(st == 404 and "no such endpoint" in body.get("error", ""), "unknown endpoint: 404",
           body)
    api.call("DELETE", "/rules/dup")
    tap.eq(rule_names(api), [], "after all that, no rule is left half-added")

    r = api.ctl("add", "x")
    tap.ok(r.rc == 2 and "add NAME FAULT" in r.err, "ctl add with too few words: exit 2",
           r.describe())
    r = api.ctl("frobnicate")
    tap.ok(r.rc == 2 and 'unknown command "frobnicate"' in r.err, "ctl unknown command: exit 2",
           r.describe())
    r = api.ctl("add", "x", "stall", "sni=a.test")
    tap.ok(r.rc == 1 and '"sni" belongs in "match"' in r.err and "(HTTP 422)" in r.err,
           "ctl add with a match key as a parameter: exit 1, the server's hint", r.describe())
    r = run([TF_BIN, "ctl", "--control", "127.0.0.1:%d" % tflib.free_port(), "ls"])
    tap.ok(r.rc == 1 and "cannot connect to the control API" in r.err,
           "ctl with nothing listening: exit 1, says so", r.describe())


# ------------------------------------------------------------ 7. token, remote

def test_token(tap):
    token = write_file("control.token", "t0k3n-%d\n" % os.getpid())
    json_path = tflib.tmppath("token.jsonl")
    conf = write_file("token.conf", tflib.config_text(
        [("lab", "127.0.0.1:0", UPSTREAM.addr)], json_path,
        extra='control = { listen = "127.0.0.1:0"; token_file = "%s"; };\n' % token))
    r = run([TF_BIN, "-c", conf, "-t"])
    tap.ok(r.rc == 0 and re.search(r"control API on 127\.0\.0\.1:0 \(bearer token required\)",
                                   r.out), "-t: the control line, token required", r.describe())
    tf, api = start(config=conf, name="tlsfault-token")
    bare = Api(api.addr)
    st, body = bare.call("GET", "/rules")
    tap.ok(st == 401 and "bearer token is required" in body.get("error", ""),
           "no token: 401", body)
    st, _ = bare.call("GET", "/rules", token="wrong")
    tap.eq(st, 401, "a wrong token: 401")
    st, _ = bare.call("GET", "/rules", token=open(token).read().strip())
    tap.eq(st, 200, "the right token: 200")
    r = Api(api.addr, token_file=token).ctl("add", "t", "stall", "--sni", "t.invalid")
    r2 = bare.ctl("ls")
    tap.ok(r.rc == 0 and r2.rc == 1 and "(HTTP 401)" in r2.err,
           "ctl --token-file: accepted; without it: exit 1 (401)", (r.describe(), r2.describe()))
    tap.eq(stop(tf, "token"), 0, "tlsfault with a token stops with 0")

    remote = write_file("remote.conf", tflib.config_text(
        [("lab", "127.0.0.1:0", UPSTREAM.addr)], json_path,
        extra='control = {\n  listen = "0.0.0.0:0";\n};\n'))
    r = run([TF_BIN, "-c", remote, "-t"])
    tap.ok(r.rc == 2 and re.search(r'%s:\d+: control\.listen "0\.0\.0\.0:0" is not a loopback '
                                   r'address' % re.escape(remote), r.err),
           "a non-loopback control.listen: refused at load (file:line, exit 2)", r.describe())
    remote_ok = write_file("remote-ok.conf", tflib.config_text(
        [("lab", "127.0.0.1:0", UPSTREAM.addr)], json_path,
        extra='control = { listen = "0.0.0.0:0"; allow_remote = true; token_file = "%s"; };\n'
        % token))
    r = run([TF_BIN, "-c", remote_ok, "-t"])
    tap.eq(r.rc, 0, "with allow_remote and a token it loads", r.describe())
    r = run([TF_BIN, "--listen", "127.0.0.1:0", "--upstream", UPSTREAM.addr, "--control",
             "0.0.0.0:8474", "-t"])
    tap.ok(r.rc == 2 and "--control: \"0.0.0.0:8474\" is not a loopback address" in r.err,
           "quick mode: --control on a non-loopback address is refused (exit 2)", r.describe())


# ------------------------------------------------------------ 8. reload

def test_reload(tap):
    json_path = tflib.tmppath("reload.jsonl")
    body = tflib.config_text([("lab", "127.0.0.1:0", UPSTREAM.addr)], json_path,
                             extra='control = { listen = "127.0.0.1:0"; };\n'
                                   'faults = ( { name = "from-file"; fault = "stall"; '
                                   'match = { sni = "file.invalid"; }; } );\n')
    conf = write_file("reload.conf", body)
    tf, api = start(config=conf, name="tlsfault-reload")
    api.ctl("add", "runtime", "stall", "--sni", "rt.invalid")
    tap.eq(rule_names(api), ["from-file", "runtime"], "file rule and runtime rule")
    r = api.ctl("reload")
    tap.ok(r.rc == 0 and "reloaded %s (1 rule)" % conf in r.out and
           rule_names(api) == ["from-file"],
           "ctl reload: the file's rules replace the runtime ones", r.describe())
    write_file("reload.conf", body.replace('fault = "stall"', 'fault = "stal"'))
    r = api.ctl("reload")
    tap.ok(r.rc == 1 and re.search(r'%s:\d+: fault "stal" is unknown' % re.escape(conf), r.err)
           and rule_names(api) == ["from-file"],
           "a broken file: ctl reload exits 1 with file:line, rules unchanged", r.describe())
    tap.eq(stop(tf, "reload"), 0, "tlsfault (reload) stops with 0")


# ------------------------------------------------------------ 9. mitm

def test_mitm(tap):
    """Runtime rules on a mitm listener: certificate faults on and off; the
    snapshots made by the API share the listener's mitm material."""
    ca = tflib.LabCA.get()
    tf, api = start(extra=tuple(ca.mitm_args()), name="tlsfault-mitm")

    def curl_lab():
        return run(["curl", "-sS", "--cacert", ca.root, "--resolve",
                    "lab.test:%d:127.0.0.1" % tf.port, "--max-time", "5",
                    "https://lab.test:%d/" % tf.port], timeout=15)
    r = curl_lab()
    tap.ok(r.rc == 0 and r.out == "ok\n", "mitm: curl trusts the forged chain", r.describe())
    a = api.ctl("add", "exp", "cert-expired", "--sni", "lab.test")
    r = curl_lab()
    tap.ok(a.rc == 0 and r.rc == 60 and "expired" in r.err,
           "ctl add exp cert-expired: curl 60, certificate has expired",
           (a.describe(), r.describe()))
    api.ctl("rm", "exp")
    r = curl_lab()
    tap.ok(r.rc == 0 and r.out == "ok\n", "ctl rm exp: curl passes again", r.describe())
    tap.eq(stop(tf, "mitm"), 0, "tlsfault (mitm) stops with 0")


# ------------------------------------------------------------ 10. concurrency

def test_concurrency(tap, tf, api):
    stop_clients = threading.Event()
    results = []
    errors = []

    def clients():
        while not stop_clients.is_set():
            results.append(client(tf, timeout=10))

    def changes(k):
        for i in range(k, 50, 5):
            name = "c%d" % i
            try:
                st1, _ = api.call("POST", "/rules", {"name": name, "fault": "delay",
                                                     "params": {"ms": 1}})
                st2, _ = api.call("PATCH", "/rules/" + name,
                                  {"enabled": i % 2 == 0, "params": {"ms": 2},
                                   "match": {"probability": 0.5}})
                api.call("GET", "/flows")
                api.call("GET", "/stats")
                st3, _ = api.call("DELETE", "/rules/" + name) if i % 3 else (200, None)
                if (st1, st2, st3) != (201, 200, 200):
                    errors.append((name, st1, st2, st3))
            except Exception as e:  # reported below
                errors.append((name, repr(e)))

    def stream_churn():
        for _ in range(5):
            p = Proc(["curl", "-sN", "http://%s/events" % api.addr], name="curl-churn")
            time.sleep(0.3)
            p.kill()

    cl = [threading.Thread(target=clients) for _ in range(3)]
    ch = [threading.Thread(target=changes, args=(k,)) for k in range(5)]
    sc = threading.Thread(target=stream_churn)
    for t in cl + ch + [sc]:
        t.start()
    for t in ch + [sc]:
        t.join(60)
    stop_clients.set()
    for t in cl:
        t.join(30)
    bad = [r for r in results if not r[0]]
    tap.ok(not errors, "50 rules added, patched and (two in three) deleted from 5 threads: "
           "every answer 201/200", errors[:5])
    tap.ok(len(results) >= 20 and not bad,
           "%d client connections meanwhile, every one passed" % len(results), bad[:5])
    left = rule_names(api) or []
    tap.eq(sorted(left, key=lambda n: int(n[1:])), ["c%d" % i for i in range(0, 50, 3)],
           "the rules left are exactly those not deleted")
    tap.ok(tf.alive(), "tlsfault is still running")


def main(tap):
    global UPSTREAM
    UPSTREAM = TCPServer(handler_http, tls=PKI.get().server_context())
    tf, api = start()
    tap.section(14, "CI session", test_ci_session, tap, tf, api)
    tap.section(12, "enable/disable", test_enable_disable, tap, tf, api)
    tap.section(7, "stats", test_stats, tap, tf, api)
    tap.section(5, "flows", test_flows, tap, tf, api)
    tap.section(7, "events", test_events, tap, tf, api)
    tap.section(22, "refusals", test_refusals, tap, tf, api)
    tap.section(4, "concurrency", test_concurrency, tap, tf, api)
    tap.eq(stop(tf, "main"), 0, "tlsfault stops with 0 on SIGTERM")
    tap.section(9, "token", test_token, tap)
    tap.section(4, "reload", test_reload, tap)
    tap.section(4, "mitm", test_mitm, tap)
    reports = [(what, SAN_RX.search(err).group(0)) for what, _, err in STOPPED
               if SAN_RX.search(err)]
    tap.ok(not reports, "no sanitizer report from any tlsfault (%d stopped)" % len(STOPPED),
           reports)
    tap.ok(all(rc == 0 for _, rc, _ in STOPPED), "every tlsfault exited 0",
           [(w, rc) for w, rc, _ in STOPPED])


if __name__ == "__main__":
    tflib.run_main(PLAN, main)
