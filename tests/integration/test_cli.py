"""test_cli — the command line contract: --version, --help, usage errors,
-t on every shipped configuration, and config errors as FILE:LINE."""

import glob
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tflib  # noqa: E402
from tflib import TF_BIN, TF_SRCDIR, run, write_file  # noqa: E402


def conf_files():
    files = sorted(glob.glob(os.path.join(TF_SRCDIR, "conf", "*.conf")))
    files += sorted(glob.glob(os.path.join(TF_SRCDIR, "conf", "scenarios", "*.conf")))
    return files


def lab_copy(path):
    """A mitm file names its lab CA relative to its own directory
    (ca.dir = "lab-ca"), made by `tlsfault --ca-init`: check a copy beside
    a CA made that way, as a user would, without writing into the source
    tree.  Other files are checked where they are."""
    with open(path) as f:
        text = f.read()
    if not re.search(r'^\s*mode\s*=\s*"mitm"', text, re.M):
        return path
    lab = os.path.join(tflib.tmpdir(), "lab-%s" % os.path.basename(path))
    os.makedirs(lab, exist_ok=True)
    if not os.path.exists(os.path.join(lab, "lab-ca", "root.pem")):
        r = run([TF_BIN, "--ca-init", os.path.join(lab, "lab-ca")], timeout=30)
        if r.rc != 0:
            return path  # the -t that follows reports the missing CA
    copy = os.path.join(lab, os.path.basename(path))
    with open(copy, "w") as f:
        f.write(text)
    return copy


GOOD = """# a valid file: used as the base of the bad ones
listeners = (
  { name = "a"; listen = "127.0.0.1:18443"; route = "forward"; upstream = "127.0.0.1:4433"; }
);
log = { text = "none"; };
timeouts = { connect = 10.0; handshake = 30.0; idle = 300.0; grace = 10.0; };
workers = 1;
"""

# (name, text, line that must be reported)
BAD = [
    ("unknown key in a listener",
     'listeners = (\n  { name = "a"; listen = "127.0.0.1:18443";\n    bogus_key = 1;\n'
     '    upstream = "127.0.0.1:4433"; }\n);\n', 3),
    ("syntax error",
     'listeners = (\n  { name = "a"; listen = "127.0.0.1:18443"; upstream = "127.0.0.1:4433"; }\n'
     ');\nlog = { text = ; };\n', 4),
    ("bad upstream port",
     'listeners = (\n  { name = "a";\n    listen = "127.0.0.1:18443";\n'
     '    upstream = "127.0.0.1:99999"; }\n);\n', 4),
    ("unknown top-level key",
     GOOD + "\nnot_a_setting = true;\n", GOOD.count("\n") + 2),
    ("negative timeout",
     'listeners = ( { name = "a"; listen = "127.0.0.1:18443"; upstream = "127.0.0.1:4433"; } );\n'
     'timeouts = {\n  handshake = -1.0;\n};\n', 3),
]

# Two independent problems: both lines must be reported (errors keep counting).
TWO_ERRORS = ('listeners = (\n  { name = "a"; listen = "127.0.0.1:18443"; upstream = "127.0.0.1:4433";\n'
              '    colour = "blue"; }\n);\nlog = { text = "none";\n  volume = 11; };\n')


def main(tap):
    files = conf_files()
    tap.diag("TF_BIN=%s TF_SRCDIR=%s" % (TF_BIN, TF_SRCDIR))
    if not tflib.binary_ready():
        tap.diag("tlsfault binary not found at %s" % TF_BIN)
        print("Bail out! tlsfault binary not found: %s" % TF_BIN, flush=True)
        tap.finish()
        return

    # --version
    r = run([TF_BIN, "--version"], timeout=10)
    tap.ok(r.rc == 0 and r.out.startswith("tlsfault "), "--version exits 0 and prints 'tlsfault '",
           r.describe())

    # --help
    r = run([TF_BIN, "--help"], timeout=10)
    text = r.out + r.err
    missing = [w for w in ("-c", "-t", "--listen", "--upstream", "--json") if w not in text]
    tap.ok(r.rc == 0 and not missing, "--help exits 0 and mentions -c, -t, --listen, --upstream, --json",
           "missing: %r\n%s" % (missing, r.describe()))

    # usage errors: exit 2
    usage_cases = [
        ("unknown option", ["--no-such-option"]),
        ("no arguments", []),
        ("--listen without --upstream", ["--listen", "127.0.0.1:0"]),
        ("--upstream without --listen", ["--upstream", "127.0.0.1:4433"]),
        ("bad --listen address", ["--listen", "not-an-address", "--upstream", "127.0.0.1:4433"]),
        ("bad --upstream port", ["--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:0"]),
        ("bad --workers", ["--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:4433", "-w", "0"]),
        ("bad --busy-poll", ["--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:4433",
                             "--busy-poll", "-5"]),
        ("-c with --listen", ["-c", "/nonexistent.conf", "--listen", "127.0.0.1:0",
                              "--upstream", "127.0.0.1:4433"]),
    ]
    for name, args in usage_cases:
        r = run([TF_BIN] + args, timeout=10)
        tap.ok(r.rc == 2, "bad usage (%s) exits 2" % name, r.describe())

    # -t on every shipped configuration
    if not files:
        tap.skip("-t on conf/*.conf and conf/scenarios/*.conf", "no configuration files in %s/conf"
                 % TF_SRCDIR)
    for f in files:
        r = run([TF_BIN, "-c", lab_copy(f), "-t"], timeout=10)
        tap.ok(r.rc == 0, "-t accepts %s" % os.path.relpath(f, TF_SRCDIR), r.describe())

    # -t on a good file
    good = write_file("good.conf", GOOD)
    r = run([TF_BIN, "-c", good, "-t"], timeout=10)
    tap.ok(r.rc == 0, "-t accepts a minimal valid file", r.describe())

    # -t on bad files: exit 2, FILE:LINE: prefix
    for i, (name, text, line) in enumerate(BAD):
        path = write_file("bad%d.conf" % i, text)
        r = run([TF_BIN, "-c", path, "-t"], timeout=10)
        prefix = "%s:%d: " % (path, line)
        tap.ok(r.rc == 2 and prefix in r.err,
               "-t on a bad file (%s) exits 2 with '%s:%d: ' on stderr" % (
                   name, os.path.basename(path), line),
               "config:\n%s\n%s" % (text, r.describe()))

    path = write_file("two-errors.conf", TWO_ERRORS)
    r = run([TF_BIN, "-c", path, "-t"], timeout=10)
    tap.ok(r.rc == 2 and ("%s:3: " % path) in r.err and ("%s:6: " % path) in r.err,
           "-t reports every problem, each with its own FILE:LINE",
           "config:\n%s\n%s" % (TWO_ERRORS, r.describe()))

    # the same bad file without -t: refused at start-up the same way
    path = write_file("bad-run.conf", BAD[0][1])
    r = run([TF_BIN, "-c", path], timeout=10)
    tap.ok(r.rc == 2 and ("%s:3: " % path) in r.err,
           "running (not -t) with a bad file exits 2 with FILE:LINE", r.describe())

    # missing file
    missing_path = os.path.join(tflib.tmpdir(), "no-such-file.conf")
    r = run([TF_BIN, "-c", missing_path, "-t"], timeout=10)
    tap.ok(r.rc == 2 and missing_path in r.err, "-t on a missing file exits 2 naming the file",
           r.describe())
    r = run([TF_BIN, "-c", missing_path], timeout=10)
    tap.ok(r.rc == 2, "running with a missing file exits 2", r.describe())

    # listen port 0: the kernel picks the port, the log line names it
    for label, kw in (("quick mode", {"upstream": "127.0.0.1:4433"}),
                      ("config mode", {"config": write_file("port0.conf", GOOD.replace(
                          "127.0.0.1:18443", "127.0.0.1:0").replace(
                          'text = "none";', 'text = "none"; json = "%s";'
                          % tflib.tmppath("port0.jsonl")))})):
        try:
            p = tflib.Tlsfault(listen="127.0.0.1:0", port0=True, **kw)
            ok = p.port > 0 and tflib.wait_port(p.port, timeout=5)
            why = "listeners %r" % p.listeners
            rc = p.stop()
            ok = ok and rc == 0
            why += "; exit after SIGTERM %r" % rc
        except RuntimeError as e:
            ok, why = False, str(e)
        tap.ok(ok, "listen 127.0.0.1:0 (%s): ready, prints the real port, accepts, exits 0" % label,
               why)


def plan():
    n = 2 + 9 + max(1, len(conf_files())) + 1 + len(BAD) + 1 + 1 + 2 + 2
    return n


if __name__ == "__main__":
    tflib.run_main(plan(), main)
