#!/bin/sh
# Runs the whole test suite: installs what is missing (scripts/bootstrap.sh),
# then builds and runs `make check` twice: the development build (-Werror)
# in build/ and an AddressSanitizer+UndefinedBehaviorSanitizer build in
# build-asan/; then checks that the release tarball builds (make distcheck
# with a short test list), runs every fuzz target briefly and the soak at
# its quick size.  Ends with the line "N passed, N failed, N skipped".
set -u
cd "$(dirname "$0")/.."
top=$(pwd)
sh scripts/bootstrap.sh || { echo "0 passed, 1 failed"; exit 1; }

jobs=$(nproc)
status=0

run_check() {  # builddir configure-args...
    dir=$1; shift
    mkdir -p "$dir"
    (cd "$dir" && { [ -f Makefile ] || "$top/configure" "$@"; } && make -j"$jobs" &&
        make -j"$jobs" check) || status=1
    for log in $(grep -l -E '^:test-result: (FAIL|ERROR|XPASS)' $(find "$dir" -name '*.trs') 2>/dev/null); do
        echo "==== ${log%.trs}.log"
        tail -n 60 "${log%.trs}.log"
    done
}

run_check build
run_check build-asan --enable-sanitizers

# Checks outside automake's harness count as one test each.
extra_pass=0 extra_fail=0
extra() {  # name command...
    name=$1; shift
    if "$@" > "build/$name.log" 2>&1; then
        echo "PASS: $name"; extra_pass=$((extra_pass + 1))
    else
        echo "FAIL: $name"; tail -n 40 "build/$name.log"; extra_fail=$((extra_fail + 1))
    fi
}
# The release tarball must build and install; its own check runs one quick test.
extra distcheck make -C build -j"$jobs" distcheck TESTS="tests/unit/test_cursor"
# A brief libFuzzer run of every target (scripts/fuzz.sh runs longer by hand).
extra fuzz-brief sh scripts/fuzz.sh 10
# The soak and abuse run at its CI size (2,000 connections, 500 hostile peers, ~30 s).
extra soak-brief sh scripts/soak.sh --quick

set -- $(sh scripts/summarize-trs.sh build/tests build-asan/tests)
pass=$(( $1 + extra_pass )); fail=$(( $3 + extra_fail )); skip=$5
if [ $status -ne 0 ] && [ "$fail" -eq 0 ]; then
    fail=1  # a build failure is a failure even if no test reported one
fi
[ "$fail" -eq 0 ] || status=1
echo "$pass passed, $fail failed, $skip skipped"
exit $status
