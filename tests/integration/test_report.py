"""test_report — `tlsfault report`: the picture of each handshake, checked in a
real browser.

 1. Real flows make the log: through a passthrough tlsfault to openssl
    s_server -www, a healthy TLS 1.3 and a healthy TLS 1.2 flow (Python
    ssl), an alert fault, drop-server-hello (the client times out), a
    downgrade (the client answers with a fatal alert), a raw ClientHello
    whose SNI is "<script>alert(1)</script>" and plaintext whose preview
    holds a <script> tag; through a mitm tlsfault (lab CA from --ca-init,
    log.content on) a healthy flow with decrypted data and a cert-expired
    flow.  The two logs are joined (flow ids repeat, as in a log several
    runs appended to) with a few hand-made hostile events.
 2. The HTML report is one self-contained file: no external reference, a
    CSP that allows only its own inline style and script.
 3. Headless Chromium loads it (a screenshot goes to the build directory,
    its path printed as a TAP diagnostic) and the DOM after the script ran
    has every flow of the log and every event of each flow (counted per
    flow against the log), one arrow per message with the right columns
    (mitm legs client↔tlsfault and tlsfault↔server), alerts with class
    "alert", a fault marker per fault event, a hover title and a field
    table per event; the script ran (the CSP hash matches) and it is the
    only script: the hostile strings are text, never markup.
 4. --text: a ladder per flow (arrows, alerts marked, fault lines,
    verdicts), --flow ID and ID#N, stdin, control characters escaped.
 5. Malformed lines are named on stderr with their line numbers and
    skipped; the report still has every flow.  Usage errors exit 2,
    a missing file or flow 1.
 6. A large log (~50 MB) is streamed: --max-flows and --max-events bound
    what is drawn, and the report's peak memory stays small.
 7. No report run printed a sanitizer report (ASan/UBSan builds).

TF_REPORT_CMD (e.g. "/path/driver report") overrides the command when the
binary has no `report` subcommand yet."""

import json
import os
import re
import shlex
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from html.parser import HTMLParser

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tflib  # noqa: E402
from tflib import PKI, LabCA, SServer, Tlsfault  # noqa: E402

HOSTILE = "<script>alert(1)</script>"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


# ------------------------------------------------------------ helpers

def report_cmd():
    """The argv prefix that runs `tlsfault report`, or None."""
    r = tflib.run([tflib.TF_BIN, "report", "--help"], timeout=10)
    if r.rc == 0 and "tlsfault report" in r.out:
        return [tflib.TF_BIN, "report"]
    env = os.environ.get("TF_REPORT_CMD")
    if env:
        return shlex.split(env)
    return None


REPORT_STDERR = []      # stderr of every report run, checked for sanitizer reports


def rrun(argv, **kw):
    r = tflib.run(argv, **kw)
    REPORT_STDERR.append(r.err)
    return r


def build_dir():
    d = os.environ.get("TF_BUILDDIR") or os.path.join(tflib.TF_SRCDIR, "build")
    d = os.path.join(d, "tests", "integration")
    os.makedirs(d, exist_ok=True)
    return d


def chromium_bin():
    for name in ("chromium", "chromium-browser"):
        if tflib.have(name):
            return name
    return None


def chromium(args, timeout=40):
    profile = tempfile.mkdtemp(prefix="tfchrome-", dir=tflib.tmpdir())
    return tflib.run([chromium_bin()] + CHROMIUM_FLAGS + ["--user-data-dir=" + profile] + args,
                     timeout=timeout)


def send_raw(port, data, wait=1.0):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        s.settimeout(wait)
        try:
            while s.recv(65536):
                pass
        except OSError:
            pass


def py_get(port, ctx, sni, timeout=5.0):
    """GET / with Python ssl; returns None or the exception."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
            raw.settimeout(timeout)
            with ctx.wrap_socket(raw, server_hostname=sni) as s:
                s.sendall(b"GET / HTTP/1.0\r\n\r\n")
                while s.recv(65536):
                    pass
        return None
    except Exception as e:  # the outcome is what the test looks at
        return e


def unverified(max_version=None):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if max_version:
        ctx.maximum_version = max_version
    return ctx


def read_events(path):
    """The log's events (valid JSON objects with flow and event) in order."""
    out = []
    with open(path, "rb") as f:
        for line in f:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if isinstance(e, dict) and isinstance(e.get("flow"), int) and \
                    isinstance(e.get("event"), str):
                out.append(e)
    return out


def group_flows(events):
    """{label: [events]} in first-seen order, the way the report groups
    them: each flow_start opens a new flow; a repeated id is "ID#N"."""
    flows, current, count = {}, {}, {}
    for e in events:
        fid = e["flow"]
        if e["event"] == "flow_start" or fid not in current:
            count[fid] = count.get(fid, 0) + 1
            current[fid] = str(fid) if count[fid] == 1 else "%d#%d" % (fid, count[fid])
            flows[current[fid]] = []
        flows[current[fid]].append(e)
    return flows


class DomScan(HTMLParser):
    """The report's DOM as Chromium serialised it: per flow section, its
    event elements; every script element; every on* attribute."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.section = None
        self.sections = {}          # label -> attrs
        self.events = {}            # label -> [attrs of details.ev]
        self.markers = {}           # label -> count of .fault-marker
        self.summaries = {}         # label -> [title]
        self.scripts = []
        self.on_attrs = []
        self.tags = {}
        self.body = {}
        self.rows = []              # summary table rows (data-flow)
        self.links = []             # values of src/href/action/... attributes
        self.anchors = []           # targets of the summary table's links
        self.text = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags[tag] = self.tags.get(tag, 0) + 1
        for k, v in attrs:
            if k.lower().startswith("on"):
                self.on_attrs.append((tag, k))
            if k.lower() in ("src", "href", "action", "srcset", "poster", "data", "formaction"):
                self.links.append(v or "")
        cls = (a.get("class") or "").split()
        if tag == "body":
            self.body = a
        elif tag == "script":
            self.scripts.append(a)
        elif tag == "a" and (a.get("href") or "").startswith("#"):
            self.anchors.append(a["href"][1:])
        elif tag == "tr" and "data-flow" in a:
            self.rows.append(a["data-flow"])
        elif tag == "section" and "flow" in cls:
            self.section = a.get("data-flow")
            self.sections[self.section] = a
            self.events[self.section] = []
            self.markers[self.section] = 0
            self.summaries[self.section] = []
        elif self.section is not None:
            if tag == "details" and "ev" in cls:
                a["_class"] = cls
                self.events[self.section].append(a)
            elif tag == "summary":
                self.summaries[self.section].append(a.get("title") or "")
            elif "fault-marker" in cls:
                self.markers[self.section] += 1

    def handle_endtag(self, tag):
        if tag == "section":
            self.section = None

    def handle_data(self, data):
        self.text.append(data)


# ------------------------------------------------------------ 1. real flows

class Run:
    pass


def make_logs(tap, run):
    pki = PKI.get()
    srv = SServer(pki=pki)
    run.servers = [srv]
    faults = ["alert:description=protocol_version,sni=alert.lab.test",
              "drop-server-hello:sni=drop.lab.test",
              "downgrade:sni=downgrade.lab.test"]
    extra = []
    for f in faults:
        extra += ["--fault", f]
    pt = Tlsfault(upstream=srv.addr, name="report-pt", extra=extra)
    run.pt_json = pt.json_path
    results = {}
    ends = 0

    def step(name, fn):
        nonlocal ends
        results[name] = fn()
        ends += 1
        got = tflib.wait_until(lambda: len([e for e in pt.events.all()
                                            if e.get("event") == "flow_end"]) >= ends, 10)
        if not got:
            tap.diag("no flow_end after %s" % name)

    step("tls13", lambda: py_get(pt.port, pki.client_context(
        min_version=ssl.TLSVersion.TLSv1_3), "lab.test"))
    step("tls12", lambda: py_get(pt.port, pki.client_context(
        max_version=ssl.TLSVersion.TLSv1_2), "lab.test"))
    step("alert", lambda: py_get(pt.port, unverified(), "alert.lab.test"))
    step("downgrade", lambda: py_get(pt.port, unverified(), "downgrade.lab.test"))
    step("hostile-sni", lambda: send_raw(pt.port, tflib.client_hello(HOSTILE.encode()), 0.5))
    step("plaintext", lambda: send_raw(pt.port, ("GET /%s HTTP/1.0\r\n\r\n" % HOSTILE).encode(),
                                       0.5))
    step("drop", lambda: py_get(pt.port, unverified(), "drop.lab.test", timeout=1.5))
    pt.stop()
    tap.ok(results["tls13"] is None and results["tls12"] is None,
           "setup: the healthy TLS 1.3 and TLS 1.2 flows succeed through passthrough",
           repr(results))
    tap.ok(results["alert"] is not None and results["downgrade"] is not None
           and results["drop"] is not None,
           "setup: the alert, downgrade and drop-server-hello flows fail as the faults make "
           "them", repr(results))

    lab = LabCA.get()
    mitm_json = tflib.tmppath("report-mitm.jsonl")
    conf = tflib.write_file("report-mitm.conf", """
listeners = ( { name = "lab"; listen = "%s"; route = "forward"; upstream = "%s";
                mode = "mitm"; } );
ca = { dir = "%s"; };
faults = ( { name = "expired"; fault = "cert-expired"; match = { sni = "expired.lab.test"; }; } );
log = { text = "none"; json = "%s"; content = 256; };
workers = 1;
""" % (tflib.listen_addr(), srv.addr, lab.dir, mitm_json))
    mt = Tlsfault(config=conf, name="report-mitm")
    lctx = lab.client_context()
    r1 = py_get(mt.port, lctx, "lab.test")
    tflib.wait_until(lambda: mt.events.flow_end(1, 0.1), 10)
    ectx = lab.client_context()
    ectx.check_hostname = False
    r2 = py_get(mt.port, ectx, "expired.lab.test")
    tflib.wait_until(lambda: mt.events.flow_end(2, 0.1), 10)
    mt.stop()
    tap.ok(r1 is None and isinstance(r2, ssl.SSLCertVerificationError),
           "setup: through mitm the healthy flow succeeds and cert-expired is refused",
           "healthy: %r, expired: %r" % (r1, r2))

    # The hand-made hostile flow: every string a place markup could hide.
    ts = "2026-01-01T00:00:0%d.000000Z"
    hostile = [
        {"ts": ts % 0, "flow": 900, "event": "flow_start",
         "client": '"><img src=x onerror=alert(2)>',
         "upstream": "127.0.0.1:1'><svg onload=alert(3)>", "mode": "passthrough"},
        {"ts": ts % 1, "flow": 900, "event": "handshake", "dir": "c2s", "type": "client_hello",
         "server_name": HOSTILE, "<b onmouseover=alert(4)>": "</summary></details><script>alert(5)"
         "</script>", "cipher_suites": ["<i>", "\u001b[31mred"]},
        {"ts": ts % 2, "flow": 900, "event": "alert", "dir": "s2c", "level": "fatal\u001b[2J",
         "description": "'\"><iframe src=javascript:alert(6)>"},
        {"ts": ts % 3, "flow": 900, "event": "fault", "dir": "s2c", "rule": HOSTILE,
         "fault": "<style>*{display:none}</style>", "action": "<a href=//evil.test>x</a>"},
        {"ts": ts % 4, "flow": 900, "event": "flow_end", "outcome": 'failed" onclick="alert(7)',
         "summary": HOSTILE, "sni": HOSTILE, "faults": [{"rule": HOSTILE, "fault": "x"}]},
    ]
    run.events_path = tflib.tmppath("report-events.jsonl")
    with open(run.events_path, "wb") as out:
        for p in (run.pt_json, mitm_json):
            with open(p, "rb") as f:
                out.write(f.read())
        for e in hostile:
            out.write(json.dumps(e).encode() + b"\n")
    run.events = read_events(run.events_path)
    run.flows = group_flows(run.events)
    run.mitm_labels = [k for k, evs in run.flows.items()
                       if any(e.get("mode") == "mitm" for e in evs)]
    kinds = {e["event"] for e in run.events}
    tap.ok({"handshake", "change_cipher_spec", "alert", "encrypted", "non_tls", "fault", "data",
            "flow_start", "flow_end"} <= kinds and len(run.mitm_labels) == 2,
           "setup: the joined log has every kind of event and two mitm flows (%d flows, "
           "%d events)" % (len(run.flows), len(run.events)), sorted(kinds))
    sni_seen = any(e.get("server_name") == HOSTILE for e in run.events
                   if e.get("flow") != 900)
    tap.ok(sni_seen, "setup: tlsfault logged the raw ClientHello's SNI %s as it was" % HOSTILE)


# ------------------------------------------------------------ 2-3. HTML in Chromium

def test_html(tap, run, cmd):
    out_html = os.path.join(build_dir(), "report.html")
    r = rrun(cmd + [run.events_path, "-o", out_html], timeout=60)
    tap.ok(r.rc == 0 and os.path.exists(out_html), "html: report -o writes the file (exit 0)",
           r.describe())
    html = open(out_html, encoding="utf-8").read()
    raw = DomScan()
    raw.feed(html)
    external = [v for v in raw.links if not v.startswith("#")]
    style = re.search(r"<style>(.*?)</style>", html, re.S)
    tap.ok(not external and style and "url(" not in style.group(1)
           and "@import" not in style.group(1),
           "html: self-contained (no src/href other than #anchors, no url() or @import)",
           repr(external[:5]))
    csp = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)"', html)
    tap.ok(csp and "default-src 'none'" in csp.group(1) and "'unsafe-inline'" not in csp.group(1)
           and "script-src 'sha256-" in csp.group(1),
           "html: a CSP forbids every fetch and pins the one script by its hash",
           csp.group(1) if csp else "no CSP meta")
    tap.ok(HOSTILE not in html and "<img" not in html and "<iframe" not in html
           and "<svg" not in html and "<b onmouseover" not in html,
           "html: the hostile strings are escaped in the file itself")
    tap.ok(html.count("<script") == 1, "html: exactly one <script> in the file",
           "found %d" % html.count("<script"))

    if chromium_bin() is None:
        for desc in ("chromium: screenshot", "chromium: script ran", "chromium: flows",
                     "chromium: events per flow", "chromium: arrows per flow",
                     "chromium: mitm legs", "chromium: alerts", "chromium: fault markers",
                     "chromium: hover titles", "chromium: details fields", "chromium: hostile",
                     "chromium: hostile flow"):
            tap.skip(desc, "chromium is not installed (scripts/bootstrap.sh installs it)")
        return

    # The whole report, and one failing flow alone (its ladder with the fault
    # marker and the client's alert), each as a screenshot.
    shot = os.path.join(build_dir(), "report-screenshot.png")
    shot_flow = os.path.join(build_dir(), "report-screenshot-flow.png")
    flow_html = os.path.join(build_dir(), "report-flow.html")
    downgrade = next((k for k, evs in run.flows.items()
                      if any(e.get("fault") == "downgrade" for e in evs)), None)
    rf = rrun(cmd + [run.events_path, "--flow", str(downgrade), "-o", flow_html], timeout=30)
    results = []
    for path, page, size in ((shot, out_html, "1400,2000"), (shot_flow, flow_html, "1400,1100")):
        if os.path.exists(path):
            os.unlink(path)
        results.append(chromium(["--screenshot=" + path, "--window-size=" + size,
                                 "file://" + page]))
    sizes = [os.path.getsize(p) if os.path.exists(p) else 0 for p in (shot, shot_flow)]
    ok = rf.rc == 0 and min(sizes) > 10000
    tap.ok(ok, "chromium: screenshots of the report and of flow %s alone (%d and %d bytes)" % (
        downgrade, sizes[0], sizes[1]), "\n".join(x.describe(800) for x in [rf] + results))
    if ok:
        tap.diag("screenshot: %s" % shot)
        tap.diag("screenshot of flow %s: %s" % (downgrade, shot_flow))
        tap.diag("report: %s" % out_html)
    url = "file://" + out_html

    r = chromium(["--dump-dom", url])
    dom = DomScan()
    dom.feed(r.out)
    tap.ok(dom.body.get("data-ready") == "1",
           "chromium: the report's script ran under its CSP (body data-ready=1)",
           r.describe(800))

    want = list(run.flows.keys())
    ids = [a.get("id") for a in dom.sections.values()]
    tap.ok(list(dom.sections.keys()) == want and dom.anchors == ids and len(set(ids)) == len(ids),
           "chromium: one section per flow of the log, in log order (%d), each the target of "
           "its summary row's link" % len(want),
           "sections %r\nwant %r\nanchors %r" % (list(dom.sections.keys()), want, dom.anchors))
    bad = []
    for label, evs in run.flows.items():
        got = [a.get("data-ev") for a in dom.events.get(label, [])]
        if got != [e["event"] for e in evs]:
            bad.append((label, got, [e["event"] for e in evs]))
    tap.ok(not bad and dom.rows == want,
           "chromium: every event of every flow is drawn, in order (%d events), and every flow "
           "has its summary row" % len(run.events), repr(bad[:2]))

    bad = []
    for label, evs in run.flows.items():
        arrows = [a for a in dom.events.get(label, []) if a.get("data-arrow")]
        want_n = len([e for e in evs if e["event"] != "fault" and e.get("dir") in ("c2s", "s2c")])
        if len(arrows) != want_n:
            bad.append((label, len(arrows), want_n))
        # the columns each arrow joins, from dir and leg
        for a, e in zip(dom.events.get(label, []), evs):
            if not a.get("data-arrow"):
                continue
            lo, hi = "client", "server"
            if e.get("leg") == "client":
                hi = "tlsfault"
            elif e.get("leg") == "upstream":
                lo = "tlsfault"
            want_a = "%s-%s" % ((lo, hi) if e["dir"] == "c2s" else (hi, lo))
            if a["data-arrow"] != want_a:
                bad.append((label, e["event"], e.get("type"), a["data-arrow"], want_a))
    tap.ok(not bad, "chromium: one arrow per message, between the columns its dir and leg "
           "name", repr(bad[:4]))

    legs = set()
    for label in run.mitm_labels:
        for a in dom.events[label]:
            legs.add(a.get("data-arrow"))
    tap.ok({"client-tlsfault", "tlsfault-client", "tlsfault-server", "server-tlsfault"} <= legs,
           "chromium: mitm flows show both legs (client<->tlsfault and tlsfault<->server arrows)",
           repr(sorted(x for x in legs if x)))

    alerts = [(label, a) for label, evs in dom.events.items() for a in evs
              if a.get("data-ev") == "alert"]
    want_alerts = len([e for e in run.events if e["event"] == "alert"])
    tap.ok(len(alerts) == want_alerts and want_alerts >= 2
           and all("alert" in a["_class"] for _, a in alerts),
           "chromium: every alert (%d) has the alert class" % want_alerts,
           repr([(label, a["_class"]) for label, a in alerts][:5]))

    bad = [(label, dom.markers.get(label), len([e for e in evs if e["event"] == "fault"]))
           for label, evs in run.flows.items()
           if dom.markers.get(label) != len([e for e in evs if e["event"] == "fault"])]
    nfaults = len([e for e in run.events if e["event"] == "fault"])
    tap.ok(not bad and nfaults >= 4,
           "chromium: a fault marker on the tlsfault column for each fault event (%d)" % nfaults,
           repr(bad))

    bad = []
    for label, evs in run.flows.items():
        titles = dom.summaries.get(label, [])
        for t, e in zip(titles, evs):
            if e["event"] == "handshake" and e.get("type") == "client_hello" and \
                    "cipher_suites" not in t:
                bad.append((label, t[:80]))
            if not t:
                bad.append((label, e["event"], "empty title"))
    tap.ok(not bad, "chromium: every event has a hover title with its decoded fields",
           repr(bad[:3]))
    ntables = r.out.count('class="kv"')
    tap.ok(ntables >= len(run.events),
           "chromium: every event has a click-to-expand table of fields (%d tables)" % ntables)

    hostile_text = "".join(dom.text)
    tap.ok(len(dom.scripts) == 1 and not dom.on_attrs and not dom.tags.get("img")
           and not dom.tags.get("iframe") and not dom.tags.get("svg")
           and not dom.tags.get("style", 0) > 1 and HOSTILE in hostile_text,
           "chromium: hostile SNI, previews, keys and verdicts are text: one script, no on* "
           "attribute, no injected element",
           "scripts %d, on-attrs %r, tags %r" % (len(dom.scripts), dom.on_attrs[:3],
                                                {k: dom.tags.get(k) for k in
                                                 ("img", "iframe", "svg", "style")}))
    sec = dom.sections.get("900", {})
    tap.ok(sec.get("data-outcome") == "unknown" and len(dom.events.get("900", [])) == 5,
           "chromium: the hostile flow is drawn whole; an unknown outcome gets no class "
           "from the log", repr(sec))


# ------------------------------------------------------------ 4. text

def test_text(tap, run, cmd):
    r = rrun(cmd + [run.events_path, "--text"], timeout=60)
    out = r.out
    tap.ok(r.rc == 0, "text: report --text exits 0", r.describe())
    heads = re.findall(r"(?m)^flow (\S+)  ", out)
    tap.eq(heads, list(run.flows.keys()), "text: one block per flow, in log order")
    tap.ok(re.search(r"(?m)^ +\+\d+\.\d{3} ms  client +─── client_hello lab\.test.*─▶ server$",
                     out) is not None
           and re.search(r"(?m)^ +\+\d+\.\d{3} ms  client +◀── server_hello TLS 1\.3 ", out)
           is not None,
           "text: arrows client ──client_hello──▶ server with the time since the flow's start",
           out[:1500])
    tap.ok(re.search(r"(?m)^!! +\+\d+\.\d{3} ms  client .*alert fatal illegal_parameter.*"
                     r"ALERT$", out) is not None,
           "text: alerts are marked (!! ... ALERT)", out[:3000])
    tap.ok(re.search(r"(?m)^⚡ +\+\d+\.\d{3} ms  tlsfault ⚡ fault fault\d \(drop-server-hello\)"
                     r".*withheld", out) is not None,
           "text: fault lines on the tlsfault column with the rule, fault and action")
    tap.ok(re.search(r"(?m)^ +\+\d+\.\d{3} ms  client +─── client_hello.*─▶ tlsfault$", out)
           is not None and
           re.search(r"(?m)^ +\+\d+\.\d{3} ms  tlsfault ─── client_hello.*─▶ server$", out)
           is not None,
           "text: mitm flows show both legs (client ─▶ tlsfault, tlsfault ─▶ server)")
    verdicts = re.findall(r"(?m)^  verdict: ", out)
    tap.eq(len(verdicts), len(run.flows), "text: a verdict line per flow")
    tap.ok("\x1b" not in out and "\\x1b[2J" in out,
           "text: control characters from the log are escaped (no raw ESC reaches the terminal)")

    first = list(run.flows.keys())[0]
    dup = [k for k in run.flows if "#" in k]
    r1 = rrun(cmd + [run.events_path, "--text", "--flow", first], timeout=30)
    r2 = rrun(cmd + [run.events_path, "--text", "--flow", dup[0]], timeout=30) if dup else None
    ok2 = r2 is not None and re.findall(r"(?m)^flow (\S+)  ", r2.out) == [dup[0]]
    tap.ok(re.findall(r"(?m)^flow (\S+)  ", r1.out) ==
           [k for k in run.flows if k.split("#")[0] == first] and ok2,
           "text: --flow ID shows every flow with that id, --flow ID#N only the Nth",
           r1.out[:300] + "\n" + (r2.out[:300] if r2 else "no repeated id"))
    with open(run.events_path, "rb") as f:
        data = f.read()
    p = subprocess.run(cmd + ["-", "--text"], input=data, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60)
    REPORT_STDERR.append(p.stderr.decode("utf-8", "replace"))
    tap.ok(p.returncode == 0 and p.stdout.decode("utf-8", "replace") == out,
           "text: the log on stdin (\"-\") gives the same report")


# ------------------------------------------------------------ 5. malformed input, usage

def test_malformed(tap, run, cmd):
    with open(run.events_path, "rb") as f:
        lines = f.read().split(b"\n")
    lines = [x for x in lines if x]
    junk = {
        2: b"this is not json",
        4: b'{"flow": 1, "event": "handshake"',
        6: b"[1, 2, 3]",
        8: b'{"event": "handshake", "dir": "c2s"}',
        10: b'{"flow": -3, "event": "alert"}',
        12: b"\xff\xfe\x00binary\x01",
        14: b"{" + b'"x":"' + b"a" * (1024 * 1024 + 10) + b'"}',
        16: b"",
        18: b"   ",
        20: b"\x1b[2J\x1b]0;pwned\x07 not json",
    }
    out_lines = []
    for i in range(1, len(lines) + len(junk) + 1):
        if i in junk:
            out_lines.append(junk[i])
        elif lines:
            out_lines.append(lines.pop(0))
    bad_path = tflib.tmppath("report-bad.jsonl")
    with open(bad_path, "wb") as f:
        f.write(b"\n".join(out_lines))      # and no final newline
    html_path = tflib.tmppath("report-bad.html")
    r = rrun(cmd + [bad_path, "-o", html_path], timeout=60)
    named = sorted(int(n) for n in re.findall(r"report-bad\.jsonl:(\d+): ", r.err))
    tap.ok(r.rc == 0 and os.path.exists(html_path),
           "malformed: a log with bad lines still gives a report (exit 0)", r.describe())
    tap.eq(named, [2, 4, 6, 8, 10, 12, 14, 20],
           "malformed: each bad line is named on stderr with its line number (blank lines are "
           "not errors)", r.err[-1500:])
    tap.ok(re.search(r"8 of %d lines were not events" % len(out_lines), r.err) is not None
           and "longer than" in r.err and "not JSON" in r.err and 'no "flow"' in r.err
           and "\x1b" not in r.err and "\\x1b" in r.err,
           "malformed: the count and the reason of each (not JSON, no flow id, too long); "
           "control characters quoted from a bad line are escaped",
           r.err[-1500:])
    html = open(html_path, encoding="utf-8").read() if os.path.exists(html_path) else ""
    sections = re.findall(r'<section class="flow [^"]*" id="[^"]+" data-flow="([^"]+)"', html)
    tap.eq(sections, list(run.flows.keys()), "malformed: every flow is still in the report")

    usage = rrun(cmd, timeout=10)
    missing = rrun(cmd + [tflib.tmppath("no-such.jsonl")], timeout=10)
    noflow = rrun(cmd + [run.events_path, "--flow", "987654"], timeout=10)
    badopt = rrun(cmd + [run.events_path, "--flow", "x1"], timeout=10)
    unknown = rrun(cmd + [run.events_path, "--bogus"], timeout=10)
    tap.ok(usage.rc == 2 and badopt.rc == 2 and unknown.rc == 2 and "usage:" in usage.err
           and missing.rc == 1 and "No such file" in missing.err
           and noflow.rc == 1 and "no flow 987654" in noflow.err,
           "usage: no log / bad --flow / unknown option exit 2; missing file and unknown flow "
           "exit 1 with the reason",
           "\n".join(x.describe(300) for x in (usage, missing, noflow, badopt, unknown)))


# ------------------------------------------------------------ 6. a large log

def test_large(tap, run, cmd):
    path = tflib.tmppath("report-large.jsonl")
    pad = "x" * 200
    nflows, per = 4000, 30
    with open(path, "w") as f:
        # flow 1: a long-lived flow with many records, interleaved with all the others
        f.write(json.dumps({"ts": "2026-01-01T00:00:00.000000Z", "flow": 1,
                            "event": "flow_start", "client": "c", "upstream": "u"}) + "\n")
        for i in range(2, nflows + 2):
            base = '"ts": "2026-01-01T00:00:01.%06dZ", "flow": %d' % (i % 1000000, i)
            f.write('{%s, "event": "flow_start", "client": "127.0.0.1:%d", "upstream": "u"}\n'
                    % (base, i % 65536))
            for j in range(per):
                f.write('{%s, "event": "encrypted", "dir": "%s", "content_type": '
                        '"application_data", "length": %d, "pad": "%s"}\n'
                        % (base, "c2s" if j % 2 else "s2c", j, pad))
                if j % 5 == 0:
                    f.write('{"ts": "2026-01-01T00:00:02.000000Z", "flow": 1, '
                            '"event": "encrypted", "dir": "s2c", "length": %d, "pad": "%s"}\n'
                            % (j, pad))
            f.write('{%s, "event": "flow_end", "outcome": "ok", "summary": "fine"}\n' % base)
        f.write('{"ts": "2026-01-01T00:00:03.000000Z", "flow": 1, "event": "flow_end", '
                '"outcome": "ok"}\n')
    size = os.path.getsize(path)
    out = tflib.tmppath("report-large.html")
    t0 = time.monotonic()
    # Under AddressSanitizer freed memory waits in a quarantine (256 MB by
    # default) before reuse; a small one keeps the peak about our allocations.
    env = dict(os.environ)
    env["ASAN_OPTIONS"] = (env.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=16").lstrip(":")
    p = subprocess.Popen(cmd + [path, "-o", out], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, env=env)
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    err = p.stderr.read().decode("utf-8", "replace")
    p.stderr.close()
    REPORT_STDERR.append(err)
    elapsed = time.monotonic() - t0
    html = open(out, encoding="utf-8").read() if os.path.exists(out) else ""
    drawn = re.findall(r'data-flow="([^"]+)" data-events="(\d+)" data-drawn="(\d+)"', html)
    first = drawn[0] if drawn else None
    tap.ok(p.returncode == 0 and len(drawn) == 2000 and "2001 more flows not drawn" in html,
           "large: %.0f MB, %d flows: --max-flows (default 2000) bounds the flows drawn and "
           "says how many were left out" % (size / 1e6, nflows + 1),
           "rc %r, %d sections, %.1fs\n%s" % (p.returncode, len(drawn), elapsed, err[-500:]))
    tap.ok(first is not None and first[0] == "1" and int(first[1]) == 4000 * 6 + 2
           and first[2] == "1000" and "more events of this flow not drawn" in html,
           "large: --max-events (default 1000) bounds one flow's arrows; the count is exact",
           repr(first))
    tap.ok(ru.ru_maxrss < 150 * 1024,
           "large: peak memory %d MiB for a %.0f MB log (streamed, not loaded)" % (
               ru.ru_maxrss // 1024, size / 1e6))
    r = rrun(cmd + [path, "--text", "--max-flows", "3", "--max-events", "5"], timeout=60)
    tap.ok(r.rc == 0 and len(re.findall(r"(?m)^flow ", r.out)) == 3
           and "3998 more flows not shown" in r.out and "more events not shown" in r.out,
           "large: --max-flows and --max-events in text mode", r.out[-600:])


# ------------------------------------------------------------ main

def test_sanitizers(tap):
    found = [e for e in REPORT_STDERR
             if re.search(r"ERROR: (Address|Leak)Sanitizer|runtime error:", e)]
    tap.ok(REPORT_STDERR and not found,
           "no sanitizer report from any of the %d report runs" % len(REPORT_STDERR),
           found[0][-3000:] if found else "")


PLAN = 5 + (5 + 12) + 10 + 5 + 4 + 1


def main(tap):
    if not tflib.binary_ready():
        tap.skip_rest("tlsfault binary not built (%s)" % tflib.TF_BIN)
        return
    cmd = report_cmd()
    if cmd is None:
        tap.diag("%s has no `report` subcommand and TF_REPORT_CMD is not set" % tflib.TF_BIN)
        return      # finish() turns the plan into "not ok"
    run = Run()
    tap.section(5, "setup", make_logs, tap, run)
    if not hasattr(run, "events_path"):
        return
    tap.section(17, "html", test_html, tap, run, cmd)
    tap.section(10, "text", test_text, tap, run, cmd)
    tap.section(5, "malformed", test_malformed, tap, run, cmd)
    tap.section(4, "large", test_large, tap, run, cmd)
    tap.section(1, "sanitizers", test_sanitizers, tap)


if __name__ == "__main__":
    tflib.run_main(PLAN, main)
