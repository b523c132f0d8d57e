#!/bin/sh
# Builds every libFuzzer target in tests/fuzz with clang (ASan+UBSan) and
# runs each for SECONDS (default 60) on a copy of its seed corpus.  New
# crashing inputs are left in fuzz-out/NAME-crash-* and make the script
# fail.  CI runs it briefly (scripts/test.sh: 10 s each); run it longer by
# hand (see docs/fuzzing.md):
#   sh scripts/fuzz.sh 3600                    # every target, one after another
#   FUZZ_JOBS=2 sh scripts/fuzz.sh 300         # two targets at a time
#   sh scripts/fuzz.sh 600 fuzz_config fuzz_connect   # only these
# Each target's last lines (libFuzzer's -print_final_stats) give the number
# of inputs run: "stat::number_of_executed_units"; the script prints it per
# target and in fuzz-out/summary.txt.
set -eu
cd "$(dirname "$0")/.."
top=$(pwd)
secs=${1:-60}
[ $# -gt 0 ] && shift
out=fuzz-out
jobs=${FUZZ_JOBS:-1}
mkdir -p "$out/obj"
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
CFLAGS="-std=c11 -D_GNU_SOURCE -DTF_LIBFUZZER -g -O1 -Iinclude $SAN"
LIBS="$(pkg-config --libs libconfig jansson openssl)"
# libconfig's scanner leaks a byte on some syntax errors: see tests/lsan.supp.
LSAN_OPTIONS="suppressions=$top/tests/lsan.supp${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
export LSAN_OPTIONS

# The project code, instrumented for coverage once, linked into every target.
deps="record handshake inspect jsontext events decode names rewrite config fault connect forge log"
objs=""
for d in $deps; do
    clang $CFLAGS -fsanitize=fuzzer-no-link -c "src/$d.c" -o "$out/obj/$d.o"
    objs="$objs $out/obj/$d.o"
done

if [ $# -gt 0 ]; then
    targets="$*"
else
    targets=$(for src in tests/fuzz/fuzz_*.c; do basename "$src" .c; done)
fi
for name in $targets; do
    clang $CFLAGS -fsanitize=fuzzer "tests/fuzz/$name.c" $objs $LIBS -o "$out/$name"
done

# Runs one target; its verdict goes to $out/NAME.status.
run_one() {
    name=$1
    mkdir -p "$out/$name.corpus"
    cp tests/fuzz/corpus/"$name"/* "$out/$name.corpus/" 2>/dev/null || true
    echo "fuzz: $name for ${secs}s"
    if (cd "$out" && ./"$name" -max_total_time="$secs" -max_len=20000 -timeout=10 \
            -print_final_stats=1 -artifact_prefix="$name-" "$name.corpus" > "$name.log" 2>&1); then
        echo ok > "$out/$name.status"
    else
        echo failed > "$out/$name.status"
    fi
}

report_one() {
    name=$1
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/$name.log" | tail -1)
    if [ "$(cat "$out/$name.status")" = ok ]; then
        printf '%-22s %12s executions, no finding\n' "$name" "${execs:-?}" | tee -a "$out/summary.txt"
    else
        printf '%-22s %12s executions, FAILED: see %s/%s.log and %s/%s-*\n' "$name" \
            "${execs:-?}" "$out" "$name" "$out" "$name" | tee -a "$out/summary.txt"
        tail -n 40 "$out/$name.log"
        status=1
    fi
}

status=0
echo "# $(date -u '+%Y-%m-%d %H:%M UTC'): sh scripts/fuzz.sh $secs (FUZZ_JOBS=$jobs)" >> "$out/summary.txt"
set -- $targets
while [ $# -gt 0 ]; do
    batch=""
    i=0
    while [ $# -gt 0 ] && [ $i -lt "$jobs" ]; do
        run_one "$1" &
        batch="$batch $1"
        i=$((i + 1))
        shift
    done
    wait
    for name in $batch; do
        report_one "$name"
    done
done
exit $status
