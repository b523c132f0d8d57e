#!/bin/sh
# Sums automake's per-test results (*.trs) under the given build trees and
# prints the line CI reads: "N passed, N failed, N skipped".
# Usage: scripts/summarize-trs.sh BUILDDIR...
pass=0 fail=0 skip=0
for dir in "$@"; do
    for trs in $(find "$dir" -name '*.trs' 2>/dev/null); do
        p=$(grep -c '^:test-result: PASS' "$trs")
        x=$(grep -c '^:test-result: XFAIL' "$trs")
        f=$(grep -c '^:test-result: FAIL' "$trs")
        xp=$(grep -c '^:test-result: XPASS' "$trs")
        e=$(grep -c '^:test-result: ERROR' "$trs")
        s=$(grep -c '^:test-result: SKIP' "$trs")
        pass=$((pass + p + x))
        fail=$((fail + f + xp + e))
        skip=$((skip + s))
    done
done
echo "$pass passed, $fail failed, $skip skipped"
