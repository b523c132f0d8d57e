#!/bin/sh
# Soak and abuse test of tlsfault (issue 7): many connections through it
# with random faults and misbehaving clients, then slow and hostile peers,
# then SIGHUP/SIGTERM in the middle of a run.  Loopback only, bounded.
#
#   sh scripts/soak.sh                      # full size: 50,000 connections,
#                                           # 5,000 hostile clients (10-20 min)
#   sh scripts/soak.sh --quick              # CI size: 2,000 / 500 (under a minute)
#   sh scripts/soak.sh --connections 20000 --minutes 5
#   TF_BIN=build-asan/src/tlsfault sh scripts/soak.sh --quick   # under ASan
#
# Other options: --hostile N, --signal-connections N, --concurrency N
# (default 50 in flight), --seed N, --keep (keep the work directory).
# Needs python3, curl and openssl; tlsfault built in build/ (or TF_BIN).
# Prints a summary of the figures; exits non-zero when a check failed.
# See tests/soak/soak.py for what is checked.
set -eu
cd "$(dirname "$0")/.."
# The hostile phase holds thousands of sockets open on both sides of the
# proxy: raise the soft open-files limit to the hard one.
hard=$(ulimit -Hn)
if [ "$hard" = unlimited ]; then
    ulimit -n 65536 2>/dev/null || true
else
    ulimit -n "$hard" 2>/dev/null || true
fi
TF_SRCDIR=$(pwd)
export TF_SRCDIR
exec python3 tests/soak/soak.py "$@"
