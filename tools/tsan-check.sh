#!/bin/sh
# ThreadSanitizer run of the multi-threaded parts: the batcher, the compute pool (check_engine),
# the kernels (pool-parallel matmul) and the server's event loop (integration/check_server_http).
#
#   tools/tsan-check.sh [BUILDDIR]     (default: ./build-tsan under the current directory)
#
# Configures BUILDDIR with --enable-sanitizers=thread (once), builds what the four tests need
# and runs them through make check, so their logs land in BUILDDIR/tests/*.log. Any report from
# ThreadSanitizer fails the run: every process (the Check children and the server that
# check_server_http starts, whose stderr that test discards) writes its reports to
# BUILDDIR/tsan-report.PID, and any such file is a failure. Suppressions live in
# tools/tsan.supp and cover only documented false positives in uninstrumented third-party code.
# Exit status: 0 clean, non-zero on a race, a failed test or a build failure.
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$(pwd)/build-tsan}
jobs=${HM_JOBS:-2}
tests="tests/check_server_batcher tests/check_engine tests/check_kernels \
tests/integration/check_server_http"

supp=$src/tools/tsan.supp

[ -x "$src/configure" ] || (cd "$src" && autoreconf -fi)
mkdir -p "$build"
build=$(cd "$build" && pwd)
if [ -f "$src/config.status" ]; then
    # the source tree is configured in place (tools/build.sh, .ci/run), so a VPATH build of it
    # is refused: build from a fresh copy of the distributed files instead
    rm -rf "$build/src"
    make -C "$src" -s distdir distdir="$build/src" >/dev/null
    src=$build/src
    build=$build/obj
    mkdir -p "$build"
fi
cd "$build"
if [ ! -f Makefile ] || [ "$src/configure" -nt config.status ]; then
    "$src/configure" -q --enable-sanitizers=thread
fi
make -j"$jobs" all        # (all recurses into all-am: never in the same make as other goals)
make -j"$jobs" $tests

# TSan needs the address layout it expects; kernels with more ASLR entropy than it supports
# make it abort at startup ("unexpected memory mapping"): rerun without randomisation then.
run=""
if ! TSAN_OPTIONS=report_bugs=0 ./hybridmoe --help >/dev/null 2>&1; then
    if command -v setarch >/dev/null 2>&1 && setarch "$(uname -m)" -R true 2>/dev/null; then
        run="setarch $(uname -m) -R"
    fi
fi

rm -f tsan-report.*
TSAN_OPTIONS="exitcode=66 second_deadlock_stack=1 history_size=4 log_path=$(pwd)/tsan-report"
TSAN_OPTIONS="$TSAN_OPTIONS suppressions=$supp"
export TSAN_OPTIONS
# the forked Check children report to the same log; CK_DEFAULT_TIMEOUT scaled for TSan (5-15x)
CK_TIMEOUT_MULTIPLIER=${CK_TIMEOUT_MULTIPLIER:-10}
export CK_TIMEOUT_MULTIPLIER
rc=0
$run make -j"$jobs" check TESTS="$tests" || rc=$?
for t in $tests; do
    [ -f "$t.log" ] && grep -H -E '^[0-9]+%: Checks: ' "$t.log"
done
for r in tsan-report.*; do
    [ -f "$r" ] || continue
    echo "== $build/$r"
    head -60 "$r"
    rc=1
done
if [ $rc -ne 0 ]; then
    echo "tsan-check: FAILED (see $build/tests/*.log)" >&2
else
    echo "tsan-check: clean"
fi
exit $rc
