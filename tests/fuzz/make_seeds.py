#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets added for issue 7.

    python3 tests/fuzz/make_seeds.py

Refreshes the seed-* files of tests/fuzz/corpus/{fuzz_config, fuzz_connect,
fuzz_decoders, fuzz_handshake}/ from what is in git: the captured handshakes
of tests/data/ (see its README.md), the shipped configurations (conf/,
conf/scenarios/) and the configuration fixtures of the unit tests
(tests/unit/fixtures/config/), comments dropped so that the seeds stay
small.  Other files there (crash-* inputs kept as regression tests, what a
fuzzing run added by hand) are left alone.  Deterministic: the same tree
gives the same files.
"""
import os
import re
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(ROOT, "tests", "data")
CORPUS = os.path.join(ROOT, "tests", "fuzz", "corpus")

# Must match fuzz_types[] in fuzz_decoders.c.
DECODER_TYPES = [1, 2, 11, 22, 12, 13, 16, 4, 0, 8, 14, 15, 20, 24, 5, 254]
MESSAGE_TYPES = {
    "client_hello": 1, "client_hello2": 1, "server_hello": 2, "hello_retry_request": 2,
    "certificate": 11, "client_certificate": 11, "certificate_status": 22,
    "server_key_exchange": 12, "certificate_request": 13, "client_key_exchange": 16,
    "new_session_ticket": 4, "certificate_verify": 15,
}


def read(path):
    with open(path, "rb") as f:
        return f.read()


def refresh(target, seeds):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    for old in os.listdir(d):
        if old.startswith("seed-"):
            os.unlink(os.path.join(d, old))
    for name, body in sorted(seeds.items()):
        with open(os.path.join(d, "seed-" + name), "wb") as f:
            f.write(body)
    print("%-18s %3d seeds, %6d bytes" % (target, len(seeds), sum(map(len, seeds.values()))))


def records(stream):
    """(type, body) of each whole record of a captured direction."""
    off = 0
    while off + 5 <= len(stream):
        n = stream[off + 3] << 8 | stream[off + 4]
        if off + 5 + n > len(stream):
            break
        yield stream[off], stream[off + 5:off + 5 + n]
        off += 5 + n


def clear_handshake(stream):
    """The handshake bytes sent in clear: handshake records before the first CCS."""
    out = b""
    for ctype, body in records(stream):
        if ctype == 20 or ctype == 23:
            break
        if ctype == 22:
            out += body
    return out


def suite_of(case):
    """The cipher suite the case's ServerHello chose, or 0."""
    path = os.path.join(DATA, case + ".server_hello.bin")
    if not os.path.exists(path):
        return 0
    sh = read(path)
    sid = sh[34]
    return sh[35 + sid] << 8 | sh[36 + sid]


def cases():
    return sorted({n.split(".")[0] for n in os.listdir(DATA) if n.endswith(".bin")})


# ------------------------------------------------------------ fuzz_decoders

def decoder_seeds():
    seeds = {}
    for case in cases():
        tls13 = 1 if "tls13" in case else 0
        suite = suite_of(case)
        for msg, htype in MESSAGE_TYPES.items():
            path = os.path.join(DATA, "%s.%s.bin" % (case, msg))
            if not os.path.exists(path):
                continue
            body = read(path)
            head = bytes([DECODER_TYPES.index(htype), tls13]) + struct.pack(">H", suite)
            seeds["%s.%s" % (case, msg)] = head + body
        alert = os.path.join(DATA, case + ".alert.bin")
        if os.path.exists(alert):
            seeds[case + ".alert"] = bytes([DECODER_TYPES.index(20), 0, 0, 0]) + read(alert)
    # The ServerKeyExchange layouts by suite: ECDHE body under a DHE suite and the reverse.
    ske = sorted(n for n in seeds if n.endswith(".server_key_exchange"))
    for i, name in enumerate(ske[:2]):
        seeds[name + "-other-suite"] = seeds[name][:1] + b"\x04" + bytes([3 - i, 0]) + seeds[name][4:]
    return seeds


# ------------------------------------------------------------ fuzz_handshake

def handshake_seeds():
    seeds = {}
    for case in cases():
        for direction in ("c2s", "s2c"):
            path = os.path.join(DATA, "%s.%s.bin" % (case, direction))
            if not os.path.exists(path):
                continue
            hs = clear_handshake(read(path))
            if not hs:
                continue
            # Pieces of up to 16 bytes, 256 KiB cap, decode on; and whole records, 1 KiB cap.
            seeds["%s.%s" % (case, direction)] = b"\x12\x34" + bytes([0x80 | 0x38 | 3, 0]) + hs
            if direction == "s2c" and "tls12" in case:
                seeds["%s.%s-cap" % (case, direction)] = b"\x56\x78" + bytes([0x17, 0]) + hs
    first = seeds[sorted(seeds)[0]]
    seeds["mut-stop-second"] = first[:2] + bytes([first[2] | 0x40, 1]) + first[4:]
    seeds["mut-16mib"] = b"\x00\x01\x3f\x00" + b"\x01\xff\xff\xff" + bytes(64)
    seeds["mut-empty-messages"] = b"\x00\x02\x00\x00" + b"\x0e\x00\x00\x00" * 4
    return seeds


# ------------------------------------------------------------ fuzz_config

def strip_comments(text):
    out = []
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith("#") or s.startswith("//"):
            continue
        out.append(line.rstrip())
    return ("\n".join(out) + "\n").encode()


SPECS = [
    "delay:ms=50,jitter=10,dir=s2c,probability=0.25,seed=3",
    "reset:after_bytes=100,to=client,match.probability=0.5",
    "alert:description=70,level=warning,after=server_hello,dir=auto",
    "strip-intermediates:keep=0,2,name=chain",
    "append-bytes:bytes=hex:170303,record=2",
    "append-bytes:bytes=a\\,b,dir=s2c",
    "corrupt:offset=-1,xor=0xff,nth=2,every=3,first=4,times=5",
    "server-versions:min=TLS1.0,max=TLS1.2",
    "strip-ciphers:pattern=*CHACHA20*:0x00ff",
    "downgrade:version=TLS1.1,remove_extension=true,sni=*.lab.test",
    "delay:ms=1e3,client=10.0.0.0/8,dest=fd00::/64,dest_port=443",
]

SOAK_CONF = b"""listeners = ( { name = "soak"; listen = "127.0.0.1:0"; upstream = "127.0.0.1:4433"; } );
timeouts = { handshake = 2; idle = 5; };
faults = (
  { name = "d"; fault = "delay"; ms = 20; match = { probability = 0.05; seed = 1; }; },
  { name = "r"; fault = "reset"; match = { probability = 0.05; seed = 2; }; },
  { name = "a"; fault = "alert"; match = { probability = 0.05; seed = 3; }; },
  { name = "x"; fault = "drop-server-hello"; match = { probability = 0.02; seed = 4; }; }
);
"""


def config_seeds():
    seeds = {}
    dirs = [("conf", os.path.join(ROOT, "conf")),
            ("scenario", os.path.join(ROOT, "conf", "scenarios")),
            ("fixture", os.path.join(ROOT, "tests", "unit", "fixtures", "config"))]
    for prefix, d in dirs:
        for name in sorted(os.listdir(d)):
            if not (name.endswith(".conf") or name.endswith(".inc")):
                continue
            with open(os.path.join(d, name), encoding="utf-8", errors="replace") as f:
                seeds["%s-%s" % (prefix, name)] = strip_comments(f.read())
    for i, spec in enumerate(SPECS):
        seeds["spec-%02d" % i] = spec.encode()
    seeds["soak.conf"] = SOAK_CONF
    return seeds


# ------------------------------------------------------------ fuzz_connect

def connect_seeds():
    ok = b"CONNECT lab.test:443 HTTP/1.1\r\nHost: lab.test:443\r\n\r\n"
    return {
        "ok": ok,
        "ok-tunnel": ok + b"\x16\x03\x01\x00\x05hello",
        "ok-lf": b"\nCONNECT 10.0.0.1:8443 HTTP/1.0\nUser-Agent: curl/7.88\n\n",
        "ok-v6": b"CONNECT [fd00::1]:443 HTTP/1.1\r\nHost: [fd00::1]:443\r\n\r\n",
        "allow": b"*.lab.test:443\n[fd00::*]:*\nexample.com\0" + ok,
        "allow-v6": b"lab.test:8443\n[fd00::*]:443\0CONNECT [FD00:0:0::2]:443 HTTP/1.1\r\n\r\n",
        "allow-bad": b"[x\n:1\nhost:70000\nhost:*\0" + ok,
        "get": b"GET http://lab.test/ HTTP/1.1\r\nHost: lab.test\r\n\r\n",
        "tls": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        "bad-target": b"CONNECT user@lab.test:443 HTTP/1.1\r\n\r\n",
        "bad-port": b"CONNECT lab.test:0 HTTP/1.1\r\n\r\n",
        "bad-folded": b"CONNECT lab.test:443 HTTP/1.1\r\nA: b\r\n c\r\n\r\n",
        "bad-version": b"CONNECT lab.test:443 HTTP/2.0\r\n\r\n",
        "partial": b"CONNECT lab.test:443 HTTP/1.1\r\nHost: lab",
        "big": b"CONNECT lab.test:443 HTTP/1.1\r\n" + b"X-Pad: " + b"a" * 8200 + b"\r\n\r\n",
    }


def main():
    if len(sys.argv) > 1:
        sys.exit(__doc__)
    refresh("fuzz_config", config_seeds())
    refresh("fuzz_connect", connect_seeds())
    refresh("fuzz_decoders", decoder_seeds())
    refresh("fuzz_handshake", handshake_seeds())


if __name__ == "__main__":
    main()
