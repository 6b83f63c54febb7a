#!/bin/bash
# run-fuzzers.sh - builds the libFuzzer targets (clang, ASan+UBSan) and runs each for a
# fixed time. Exit status 0 only if no target crashed, leaked or broke a property.
#
#   tests/fuzz/run-fuzzers.sh [--seconds N] [--builddir DIR] [--workdir DIR] [--no-build]
#                             [TARGET...]
#
#   --seconds N    run time of each target (default 60)
#   --builddir DIR build directory; configured with CC=clang --enable-fuzzing if it has
#                  no Makefile (default: ./build-fuzz under the current directory)
#   --workdir DIR  where the growing corpora and crash artifacts go (default DIR/fuzz-work)
#   --no-build     the targets are already built in --builddir (used by `make fuzz`)
#   TARGET         fuzz_gguf fuzz_tokenizer fuzz_utf8 fuzz_config fuzz_request fuzz_stop
#                  (default: all)
#
# CI (about 5 minutes of fuzzing plus a clang build), from an unconfigured source tree:
#   tests/fuzz/run-fuzzers.sh --seconds 60 --builddir /tmp/hm-fuzz
# A crash leaves DIR/fuzz-work/artifacts/<target>/crash-* ; reproduce with
#   DIR/tests/fuzz/<target> FILE      or     DIR/tests/fuzz/replay_<target> FILE
# and copy the file into tests/fuzz/regressions/<target>/ so make check replays it.
set -uo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
seconds=60
bld=$PWD/build-fuzz
work=
build=1
all=(fuzz_gguf fuzz_tokenizer fuzz_utf8 fuzz_config fuzz_request fuzz_stop)
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
    --seconds) seconds=$2; shift 2 ;;
    --builddir) bld=$2; shift 2 ;;
    --workdir) work=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    -h|--help) sed -n '2,/^[^#]/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    fuzz_*) targets+=("$1"); shift ;;
    *) echo "run-fuzzers.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")
mkdir -p "$bld"
bld=$(cd "$bld" && pwd)
[ -n "$work" ] || work=$bld/fuzz-work
case "$work" in /*) ;; *) work=$bld/$work ;; esac

if [ $build = 1 ]; then
    command -v clang >/dev/null || { echo "run-fuzzers.sh: clang not found" >&2; exit 2; }
    if [ ! -f "$bld/Makefile" ] && [ -f "$src/config.status" ]; then
        echo "run-fuzzers.sh: $src is configured in place; run 'make distclean' there first" \
             "(a separate build directory needs an unconfigured source tree)" >&2
        exit 2
    fi
    if [ ! -f "$bld/Makefile" ]; then
        echo "== configuring $bld (CC=clang --enable-fuzzing)"
        (cd "$bld" && CC=clang "$src/configure" -q --enable-fuzzing) || exit 2
    fi
    echo "== building ${targets[*]}"
    (cd "$bld" && make -j"$(nproc)" >/dev/null && \
        make -j"$(nproc)" $(printf 'tests/fuzz/%s ' "${targets[@]}") >/dev/null) || exit 2
fi

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export OPENBLAS_NUM_THREADS=1
failed=()
summary=()
for t in "${targets[@]}"; do
    bin=$bld/tests/fuzz/$t
    seeds=$src/tests/fuzz/corpus/$t
    regs=$src/tests/fuzz/regressions/$t
    corpus=$work/corpus/$t
    art=$work/artifacts/$t
    mkdir -p "$corpus" "$art"
    dict=
    case $t in
    fuzz_gguf) dict=$src/tests/fuzz/gguf.dict ;;
    fuzz_request) dict=$src/tests/fuzz/json.dict ;;
    fuzz_config) dict=$src/tests/fuzz/config.dict ;;
    esac
    args=(-max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 -max_len=65536
          -print_final_stats=1 -artifact_prefix="$art/")
    [ -n "$dict" ] && args+=(-dict="$dict")
    dirs=("$corpus" "$seeds")
    [ -d "$regs" ] && dirs+=("$regs")
    echo "== $t: ${seconds}s"
    log=$work/$t.log
    "$bin" "${args[@]}" "${dirs[@]}" >"$log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
    summary+=("$t: exit $rc, ${execs:-?} runs, ${cov:-cov: ?}, corpus $(ls "$corpus" | wc -l) files")
    if [ $rc -ne 0 ]; then
        failed+=("$t")
        echo "-- $t FAILED (exit $rc); last lines of $log:"
        grep -v '^#' "$log" | tail -40
        ls -1 "$art"
    fi
done
echo "== summary"
printf '  %s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
    echo "== FAILED: ${failed[*]} (artifacts under $work/artifacts)"
    exit 1
fi
echo "== all fuzz targets ran clean"
