#!/bin/sh
# tlsfault benchmark: one command.
#
#   sh bench/run.sh [--quick] [--pinned] [--reps N] [--keep-logs]
#
# Installs the Debian packages it needs when missing (nginx-light, haproxy,
# wrk, curl, openssl, python3; `apt-get update` first), builds tlsfault
# (scripts/bootstrap.sh) if build/src/tlsfault is missing and bench/hsload,
# then runs bench/bench.py: an nginx origin, HAProxy `mode tcp`, tlsfault
# passthrough and mitm on loopback; bulk, keep-alive, handshake and idle
# loads interleaved per repetition; a table of medians, min-max and ratios
# to direct and to HAProxy; the issue 7 targets and whether each is met.
# Informative only: it exits 0 whenever it could measure.  Raw numbers go to
# bench/out/ (gitignored).  TLSFAULT=/path/to/tlsfault benchmarks another
# build.  docs/benchmark.md explains every figure.  Loopback only.
set -eu
cd "$(dirname "$0")/.."
TOP=$(pwd)

PACKAGES="nginx-light haproxy wrk curl openssl python3 build-essential libssl-dev procps util-linux"
missing=""
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
        missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "bench: installing:$missing"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -q
    # policy-rc.d-less containers may try to start the packaged nginx/haproxy
    # services; the benchmark starts its own instances on its own ports.
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing
fi

TLSFAULT=${TLSFAULT:-$TOP/build/src/tlsfault}
if [ ! -x "$TLSFAULT" ]; then
    echo "bench: building tlsfault (scripts/bootstrap.sh)"
    sh scripts/bootstrap.sh
fi

mkdir -p bench/out
if [ ! -x bench/out/hsload ] || [ bench/hsload.c -nt bench/out/hsload ]; then
    echo "bench: building bench/out/hsload"
    cc -O2 -Wall -Wextra -o bench/out/hsload bench/hsload.c -lssl -lcrypto
fi
if [ ! -x bench/out/minrelay ] || [ bench/minrelay.c -nt bench/out/minrelay ]; then
    echo "bench: building bench/out/minrelay"
    cc -O2 -Wall -Wextra -o bench/out/minrelay bench/minrelay.c
fi

# 8,000 idle connections through a proxy need ~16,000 descriptors in it.
hard=$(ulimit -Hn)
if [ "$hard" = unlimited ] || [ "$hard" -gt 65536 ]; then hard=65536; fi
ulimit -n "$hard" 2>/dev/null || true
if [ "$(ulimit -n)" -lt 17000 ]; then
    echo "bench: warning: only $(ulimit -n) open files allowed; the 8,000-connection idle figure may fail"
fi

exec python3 bench/bench.py --tlsfault "$TLSFAULT" --hsload bench/out/hsload \
    --minrelay bench/out/minrelay "$@"
