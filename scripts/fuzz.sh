#!/bin/sh
# Builds every libFuzzer target in tests/fuzz with clang (ASan+UBSan) and
# runs each for SECONDS (default 60) on a copy of its seed corpus.  New
# crashing inputs are left in fuzz-out/NAME/ and make the script fail.
# CI runs it briefly (scripts/test.sh: 10 s each); run it longer by hand:
#   sh scripts/fuzz.sh 3600
set -eu
cd "$(dirname "$0")/.."
secs=${1:-60}
out=fuzz-out
mkdir -p "$out"
CFLAGS="-std=c11 -D_GNU_SOURCE -DTF_LIBFUZZER -g -O1 -Iinclude -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined"
LIBS="$(pkg-config --libs jansson openssl)"
status=0
for src in tests/fuzz/fuzz_*.c; do
    name=$(basename "$src" .c)
    deps="src/record.c src/handshake.c src/inspect.c src/decode.c src/names.c src/rewrite.c"
    clang $CFLAGS "$src" $deps $LIBS -o "$out/$name"
    mkdir -p "$out/$name.corpus"
    cp tests/fuzz/corpus/"$name"/* "$out/$name.corpus/" 2>/dev/null || true
    echo "fuzz: $name for ${secs}s"
    if ! (cd "$out" && ./"$name" -max_total_time="$secs" -max_len=20000 -timeout=10 \
            -artifact_prefix="$name-" "$name.corpus" > "$name.log" 2>&1); then
        echo "fuzz: $name FAILED; see $out/$name.log and $out/$name-*"
        tail -n 30 "$out/$name.log"
        status=1
    else
        grep -E '^#[0-9]+.*DONE' "$out/$name.log" | tail -1 || true
    fi
done
exit $status
