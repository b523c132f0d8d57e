#!/bin/sh
# The main job, as a demonstration: builds tlsfault if needed, starts a
# local TLS origin (openssl s_server with a throwaway lab CA), puts tlsfault
# in front of it and drives real clients through it (curl, openssl
# s_client, gnutls-cli, Python), then shows the handshake log and how each
# connection ended, including ones that fail: an unreachable upstream, a
# client that speaks HTTP to the TLS port, a forced HelloRetryRequest, and
# one run per fault (a missing ServerHello, a reset, an alert, a plaintext
# answer, a downgrade, appended and corrupted bytes, tiny records, delay).
# Everything runs on loopback; the output stays in ./demo-out/.
set -eu
cd "$(dirname "$0")/.."
top=$(pwd)
[ -x build/src/tlsfault ] || sh scripts/bootstrap.sh
make -s -C build >/dev/null
TF=$top/build/src/tlsfault
out=$top/demo-out
rm -rf "$out"; mkdir -p "$out"
cd "$out"

pids=""
cleanup() { for p in $pids; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Waits for a listening socket without connecting to it (a probe would be a
# flow of its own in the log).
wait_port() { for _ in $(seq 100); do
    ss -Hltn "sport = :$1" 2>/dev/null | grep -q LISTEN && return 0
    sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "a throwaway lab CA and a certificate for lab.test"
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 30 \
    -subj "/CN=tlsfault demo CA" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout lab.key -out lab.csr -subj "/CN=lab.test" 2>/dev/null
printf 'subjectAltName=DNS:lab.test,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > ext.cnf
openssl x509 -req -in lab.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 \
    -extfile ext.cnf -out lab.pem 2>/dev/null
echo "ca.pem, lab.pem"

origin=$(free_port); proxy=$(free_port); closed=$(free_port)
say "origin: openssl s_server on 127.0.0.1:$origin (TLS 1.2 and 1.3, groups P-256:X25519)"
openssl s_server -accept "$origin" -cert lab.pem -key lab.key -www -groups P-256:X25519 \
    -quiet >/dev/null 2>&1 &
pids="$pids $!"
wait_port "$origin"

say "tlsfault on 127.0.0.1:$proxy -> 127.0.0.1:$origin"
"$TF" --listen "127.0.0.1:$proxy" --upstream "127.0.0.1:$origin" --json events.jsonl \
    --text events.txt -w 1 2> tlsfault.stderr &
pids="$pids $!"
wait_port "$proxy"

say "curl (OpenSSL), TLS 1.3"
curl -sS --resolve "lab.test:$proxy:127.0.0.1" --cacert ca.pem "https://lab.test:$proxy/" \
    -o /dev/null -w 'curl: HTTP %{http_code}, exit 0\n' || echo "curl exit $?"
say "openssl s_client, TLS 1.2"
echo | openssl s_client -connect "127.0.0.1:$proxy" -servername lab.test -tls1_2 \
    -CAfile ca.pem -verify_return_error 2>/dev/null | grep -E '^(New|    Protocol|    Cipher|Verify return)' || true
say "gnutls-cli, TLS 1.3 offering only X25519 first: the server answers with a HelloRetryRequest"
gnutls-cli --x509cafile ca.pem -p "$proxy" --sni-hostname lab.test --verify-hostname lab.test \
    --priority 'NORMAL:-GROUP-ALL:+GROUP-X25519:+GROUP-SECP256R1' 127.0.0.1 </dev/null 2>&1 |
    grep -E 'Description|HelloRetry|Handshake was completed' | head -3 || true
say "Python ssl"
python3 - "$proxy" <<'PY'
import socket, ssl, sys
ctx = ssl.create_default_context(cafile="ca.pem")
with socket.create_connection(("127.0.0.1", int(sys.argv[1]))) as s:
    with ctx.wrap_socket(s, server_hostname="lab.test") as t:
        print("python:", t.version(), t.cipher()[0])
PY
say "a client that speaks HTTP to the TLS port (relayed unchanged, logged as non_tls)"
printf 'GET / HTTP/1.0\r\nHost: lab.test\r\n\r\n' | timeout 3 python3 -c "
import socket,sys; s=socket.create_connection(('127.0.0.1',$proxy)); s.sendall(sys.stdin.buffer.read()); s.settimeout(2)
try: print('answer:', repr(s.recv(64)))
except Exception as e: print('answer:', e)" || true
kill %2 2>/dev/null || true

say "faults: the failures of the troubleshooting guides, reproduced on the wire"
# One tlsfault per fault, in front of the same healthy origin; curl reports
# what a real client sees.  conf/scenarios/ has each as a config file.
for spec in drop-server-hello reset-after-client-hello 'alert:description=protocol_version' \
            plaintext-response downgrade record-version-too-high 'append-bytes:bytes=INSPECTED' \
            corrupt 'fragment:size=16' 'delay:ms=150'; do
    fp=$(free_port)
    "$TF" --listen "127.0.0.1:$fp" --upstream "127.0.0.1:$origin" --fault "$spec" \
        --json events.jsonl --text events.txt -w 1 2>> tlsfault.stderr &
    fpid=$!
    wait_port "$fp"
    printf '%-38s ' "--fault $spec:"
    curl -sS --max-time 2 --resolve "lab.test:$fp:127.0.0.1" --cacert ca.pem \
        "https://lab.test:$fp/" -o /dev/null -w 'HTTP %{http_code}\n' 2>&1 | head -1 || true
    sleep 0.2
    kill "$fpid" 2>/dev/null || true
    wait "$fpid" 2>/dev/null || true
done

say "mitm: tlsfault terminates both legs with certificates forged by its lab CA"
rm -rf lab-ca
"$TF" --ca-init lab-ca >/dev/null
for spec in none cert-expired cert-wrong-host cert-no-intermediate server-versions; do
    fp=$(free_port)
    if [ "$spec" = none ]; then set --; else set -- --fault "$spec"; fi
    "$TF" --listen "127.0.0.1:$fp" --upstream "127.0.0.1:$origin" --mode mitm --ca lab-ca \
        --keylog keys.log "$@" --json events.jsonl --text events.txt -w 1 2>> tlsfault.stderr &
    fpid=$!
    wait_port "$fp"
    printf '%-38s ' "--mode mitm ${spec#none}:"
    curl -sS --max-time 3 --resolve "lab.test:$fp:127.0.0.1" --cacert lab-ca/root.pem \
        "https://lab.test:$fp/" -o /dev/null -w 'HTTP %{http_code}\n' 2>&1 | head -1 || true
    sleep 0.2
    kill "$fpid" 2>/dev/null || true
    wait "$fpid" 2>/dev/null || true
done

say "an unreachable upstream: tlsfault -> 127.0.0.1:$closed (nothing listens)"
bad=$(free_port)
"$TF" --listen "127.0.0.1:$bad" --upstream "127.0.0.1:$closed" --json events.jsonl \
    --text events.txt -w 1 2>> tlsfault.stderr &
pids="$pids $!"
wait_port "$bad"
curl -sS --resolve "lab.test:$bad:127.0.0.1" --cacert ca.pem "https://lab.test:$bad/" \
    -o /dev/null 2>&1 | sed 's/^/client says: /' || true
sleep 0.3
cleanup; pids=""; sleep 0.3

say "the handshake log (text sink, events.txt)"
cut -c 12- events.txt | cut -c -200
say "how each connection ended (flow_end from events.jsonl)"
if command -v jq >/dev/null; then
    jq -r 'select(.event=="flow_end") | "#\(.flow) \(.outcome): \(.summary)"' events.jsonl
else
    grep '"flow_end"' events.jsonl
fi
echo
"$TF" report events.jsonl -o report.html 2>/dev/null && echo "report: $out/report.html (open it in a browser)"
echo "logs: $out/events.txt, $out/events.jsonl; mitm session keys: $out/keys.log"
