"""test_scenarios — the ready-made fault scenarios in conf/scenarios/.

Every conf/scenarios/*.conf must pass `tlsfault -c FILE -t` (exit 0); a copy
with a typo in a fault name must be refused (exit 2) with FILE:LINE pointing
at the misspelt `fault = ...` line.  Each scenario is also run for real (its
listener moved to a free port and its upstream to a local openssl s_server):
every rule in it must fire, and the curl command of the comment's "Run it"
part must exit with the code the comment's "curl:" line says.

The files are checked as copies in one directory of the test's own, beside
a lab CA made there with `tlsfault --ca-init` (mitm scenarios name
ca.dir = "lab-ca", taken from the file's directory).  In the curl command,
--cacert .../lab-ca/root.pem becomes that lab CA's root, any other --cacert
the test PKI's root, port 8443 the proxy's port, and --max-time the test's."""

import glob
import os
import re
import shlex
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


_workdir = None


def workdir():
    """The directory the copies live in, with a lab CA in lab-ca/."""
    global _workdir
    if _workdir is None:
        d = os.path.join(tflib.tmpdir(), "scenarios")
        os.makedirs(d, exist_ok=True)
        r = run([TF_BIN, "--ca-init", os.path.join(d, "lab-ca")], timeout=60)
        if r.rc != 0:
            sys.stderr.write("tlsfault --ca-init failed: %s\n" % r.describe())
        _workdir = d
    return _workdir


def copy_of(path, prefix=""):
    dst = os.path.join(workdir(), prefix + os.path.basename(path))
    with open(path) as f, open(dst, "w") as g:
        g.write(f.read())
    return dst




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
    r = run([TF_BIN, "-c", copy_of(path), "-t"], timeout=20)
    tap.ok(r.rc == 0, "%s: tlsfault -c FILE -t exits 0" % base, r.describe())
    text = open(path).read()
    m = FAULT_LINE_RX.search(text)
    if not m:
        tap.ok(False, "%s: has a fault = \"...\" line to misspell" % base)
        return
    line = text.count("\n", 0, m.start()) + 1
    bad_name = typo(m.group(2))
    mutated = text[:m.start()] + m.group(1) + bad_name + m.group(3) + text[m.end():]
    mpath = os.path.join(workdir(), "typo-" + base)
    with open(mpath, "w") as f:
        f.write(mutated)
    r = run([TF_BIN, "-c", mpath, "-t"], timeout=20)
    want = r"(?m)^%s:%d: .*%s.*unknown" % (re.escape(mpath), line, re.escape('"%s"' % bad_name))
    tap.ok(r.rc == 2 and re.search(want, r.err) is not None,
           "%s with fault \"%s\": exit 2 and %s:%d names it" % (base, bad_name,
                                                                  os.path.basename(mpath), line),
           "want stderr matching /%s/\n%s" % (want, r.describe()))


def curl_command(comment, port, max_time):
    """The curl command of the comment's "Run it" part, pointed at port,
    with the test's CA files and max_time.  None if there is none."""
    lines = comment.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"#\s+(curl\s.*)$", line)
        if not m:
            continue
        cmd = m.group(1).strip()
        while cmd.endswith("\\") and i + 1 < len(lines):
            i += 1
            cmd = cmd[:-1] + " " + lines[i].lstrip("#").strip()
        args = shlex.split(cmd)[1:]
        out = ["curl", "-sS", "--max-time", str(max_time)]
        j = 0
        while j < len(args):
            a = args[j]
            if a == "--max-time":
                j += 2
                continue
            if a == "--cacert" and j + 1 < len(args):
                ca = (os.path.join(workdir(), "lab-ca", "root.pem")
                      if args[j + 1].endswith("lab-ca/root.pem") else PKI.get().ca)
                out += [a, ca]
                j += 2
                continue
            out.append(a.replace(":8443", ":%d" % port))
            j += 1
        return out
    return None


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
    live = os.path.join(workdir(), "live-%s.conf" % name)
    with open(live, "w") as f:
        f.write(text)
    return live


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
        max_time = HANG_MAX_TIME if want_rc == 28 else CURL_MAX_TIME
        argv = curl_command(comment, proxy.port, max_time)
        if argv is None:
            tap.ok(False, "%s live: the comment shows how to run curl" % base)
            tap.ok(False, "%s live: every rule fires" % base)
            return
        r = run(argv, timeout=max_time + 10)
        tap.ok(want_rc is not None and r.rc == want_rc,
               "%s live: the comment's curl command exits %r as it says" % (base, want_rc),
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
