"""test_scenarios — the ready-made fault scenarios in conf/scenarios/.

Every conf/scenarios/*.conf must pass `tlsfault -c FILE -t` (exit 0); a copy
with a typo in a fault name must be refused (exit 2) with FILE:LINE pointing
at the misspelt `fault = ...` line.  Each scenario is also run for real (its
listener moved to a free port and its upstream to a local openssl s_server):
every rule in it must fire, and curl must exit with the code the file's
leading comment says it does."""

import glob
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tflib  # noqa: E402
from tflib import PKI, SServer, TF_BIN, TF_SRCDIR, Tlsfault, fmt_events, run  # noqa: E402

EXPECTED = [
    "missing-server-hello", "server-rejects-tls", "protocol-mismatch", "no-shared-cipher",
    "wrong-service-on-port", "middlebox-downgrade", "middlebox-cipher-filter", "sni-lost",
    "record-version-too-high", "incomplete-chain", "middlebox-appends-bytes",
    "corrupted-record", "slow-network", "tiny-records",
]
# Scenarios whose fault needs a TLS 1.2 origin (a clear Certificate message).
TLS12_ORIGIN = {"incomplete-chain"}
HANG_MAX_TIME = 2     # curl --max-time where the scenario is a hang (exit 28)
CURL_MAX_TIME = 20    # otherwise: slow scenarios must still finish

FAULT_LINE_RX = re.compile(r'^(\s*fault\s*=\s*")([^"]+)(";.*)$', re.M)
RULE_NAME_RX = re.compile(r'^\s*name\s*=\s*"([^"]+)";', re.M)
CURL_RX = re.compile(r"^#\s+curl:\s+exit (\d+)", re.M)


def scenario_files():
    return sorted(glob.glob(os.path.join(TF_SRCDIR, "conf", "scenarios", "*.conf")))


def typo(name):
    """A plausible slip: the name with one letter dropped (drop-server-helo)."""
    i = max(i for i, ch in enumerate(name) if ch.isalpha() and i > 0)
    return name[:i] + name[i + 1:]


def leading_comment(text):
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line)
    return "\n".join(lines)


def check_file(tap, path):
    base = os.path.basename(path)
    r = run([TF_BIN, "-c", path, "-t"], timeout=20)
    tap.ok(r.rc == 0, "%s: tlsfault -c FILE -t exits 0" % base, r.describe())
    text = open(path).read()
    m = FAULT_LINE_RX.search(text)
    if not m:
        tap.ok(False, "%s: has a fault = \"...\" line to misspell" % base)
        return
    line = text.count("\n", 0, m.start()) + 1
    bad_name = typo(m.group(2))
    mutated = text[:m.start()] + m.group(1) + bad_name + m.group(3) + text[m.end():]
    mpath = tflib.write_file("typo-" + base, mutated)
    r = run([TF_BIN, "-c", mpath, "-t"], timeout=20)
    want = r"(?m)^%s:%d: .*%s.*unknown" % (re.escape(mpath), line, re.escape('"%s"' % bad_name))
    tap.ok(r.rc == 2 and re.search(want, r.err) is not None,
           "%s with fault \"%s\": exit 2 and %s:%d names it" % (base, bad_name,
                                                                  os.path.basename(mpath), line),
           "want stderr matching /%s/\n%s" % (want, r.describe()))


def live_config(path, upstream):
    """The scenario with its listener on a free port, its upstream on the
    local s_server and its logs in the test's directory."""
    text = open(path).read()
    name = os.path.basename(path)[:-5]
    json_path = tflib.tmppath("scenario-%s.jsonl" % name)
    text, n1 = re.subn(r'listen\s*=\s*"[^"]*"', 'listen = "%s"' % tflib.listen_addr(), text)
    text, n2 = re.subn(r'upstream\s*=\s*"[^"]*"', 'upstream = "%s"' % upstream, text)
    text, n3 = re.subn(r'json\s*=\s*"[^"]*"', 'json = "%s"' % json_path, text)
    text = re.sub(r'text\s*=\s*"[^"]*"', 'text = "none"', text)
    if (n1, n2, n3) != (1, 1, 1):
        raise RuntimeError("%s: expected one listen, upstream and json setting, got %r" % (
            path, (n1, n2, n3)))
    return tflib.write_file("live-%s.conf" % name, text)


def run_live(tap, path, servers):
    base = os.path.basename(path)
    name = base[:-5]
    text = open(path).read()
    comment = leading_comment(text)
    m = CURL_RX.search(comment)
    want_rc = int(m.group(1)) if m else None
    rules = [n for n in RULE_NAME_RX.findall(text.split("faults", 1)[-1])]
    srv = servers["1.2" if name in TLS12_ORIGIN else "any"]
    proxy = Tlsfault(config=live_config(path, srv.addr), name="scen-" + name)
    try:
        pki = PKI.get()
        max_time = HANG_MAX_TIME if want_rc == 28 else CURL_MAX_TIME
        r = run(["curl", "-sS", "--cacert", pki.ca, "--resolve",
                 "lab.test:%d:127.0.0.1" % proxy.port, "--max-time", str(max_time),
                 "https://lab.test:%d/" % proxy.port], timeout=max_time + 10)
        tap.ok(want_rc is not None and r.rc == want_rc,
               "%s live: curl exits %r as the file's comment says" % (base, want_rc),
               "comment: %r\n%s" % (m.group(0) if m else None, r.describe(800)))
        ends = proxy.events.new_flow_ends(0, 1, timeout=10)
        evs = proxy.events.all()
        fired = {e.get("rule") for e in evs if e.get("event") == "fault"}
        missing = [x for x in rules if x not in fired]
        tap.ok(ends and rules and not missing,
               "%s live: every rule fires (%s)" % (base, ", ".join(rules)),
               "rules %r, fired %r\n%s\n%s" % (rules, sorted(x for x in fired if x), fmt_events(evs),
                                               proxy.stderr_tail(800)))
    finally:
        proxy.stop()


def main(tap):
    if not tflib.binary_ready():
        print("Bail out! tlsfault binary not found: %s" % TF_BIN, flush=True)
        tap.finish()
        return
    files = scenario_files()
    names = [os.path.basename(f)[:-5] for f in files]
    missing = [n for n in EXPECTED if n not in names]
    tap.ok(not missing, "conf/scenarios has the %d expected scenarios" % len(EXPECTED),
           "missing: %r (found %r)" % (missing, names))
    for f in files:
        tap.section(2, os.path.basename(f), check_file, tap, f)
    servers = {"any": SServer(None, "www", pki=PKI.get()),
               "1.2": SServer("1.2", "www", pki=PKI.get())}
    try:
        for f in files:
            tap.section(2, os.path.basename(f) + " live", run_live, tap, f, servers)
    finally:
        for s in servers.values():
            s.stop()


def plan():
    return 1 + 4 * len(scenario_files())


if __name__ == "__main__":
    tflib.run_main(plan(), main)
