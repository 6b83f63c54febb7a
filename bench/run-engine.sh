#!/bin/sh
# run-engine.sh - generate the benchmark models into a scratch directory and run
# bench/bench_engine over them; prints markdown (machine, versions, tables) on stdout.
#
#   make bench                       # from a build directory
#   HM_BUILDDIR=/path/to/build sh bench/run-engine.sh [bench_engine options]
#
# Environment: HM_BUILDDIR (build tree, default .), BENCH_DIR (scratch directory for the
# models, default $HM_BUILDDIR/bench-models), BENCH_THREADS (default: all cores),
# BENCH_MODELS (space-separated subset of: tiny default mini-f32 mini-f16 mini-q8_0; default
# is the trained $HM_SRCDIR/models/default.gguf, skipped if absent), BENCH_LONG
# (prompt length of the long-context table, run on mini-q8_0; default 1024, 0 = off).
# Options are passed on to bench_engine (e.g. --reps 3 --batches 1,8).
set -eu

builddir=${HM_BUILDDIR:-.}
scratch=${BENCH_DIR:-$builddir/bench-models}
threads=${BENCH_THREADS:-$(nproc)}
models=${BENCH_MODELS:-"tiny default mini-f32 mini-f16 mini-q8_0"}
long=${BENCH_LONG:-1024}
hm="$builddir/hybridmoe"
bench="$builddir/bench/bench_engine"

for exe in "$hm" "$bench"; do
    if [ ! -x "$exe" ]; then
        echo "run-engine.sh: $exe not built (run 'make bench')" >&2
        exit 1
    fi
done
mkdir -p "$scratch"

args=""
for m in $models; do
    if [ "$m" = default ]; then
        f="${HM_SRCDIR:-.}/models/default.gguf"
        if [ -s "$f" ]; then
            args="$args $f=default"
        else
            echo "run-engine.sh: $f not found; skipping the default model" >&2
        fi
        continue
    fi
    case $m in
    tiny) preset=tiny; type=f32 ;;
    mini-*) preset=mini; type=${m#mini-} ;;
    *) echo "run-engine.sh: unknown model '$m'" >&2; exit 2 ;;
    esac
    f="$scratch/$m.gguf"
    if [ ! -s "$f" ]; then
        echo "run-engine.sh: generating $f" >&2
        "$hm" mkmodel --preset "$preset" --type "$type" --seed 1 -q -o "$f.tmp"
        mv "$f.tmp" "$f"
    fi
    args="$args $f=$m"
    if [ "$m" = mini-q8_0 ] && [ "$long" -gt 0 ]; then
        args="$args --long $long --long-label mini-q8_0"
    fi
done

cpu=$(grep -m1 '^model name' /proc/cpuinfo | sed 's/.*: //')
flags=$(grep -m1 '^flags' /proc/cpuinfo | sed 's/.*: //' | tr ' ' '\n' |
        grep -E '^(sse4_2|avx|avx2|fma|f16c|avx512f|avx512bw|avx512_vnni|avx_vnni|amx_tile)$' |
        tr '\n' ' ')
blas=$(dpkg-query -W -f='${Version}' libopenblas0-pthread 2>/dev/null ||
       dpkg-query -W -f='${Version}' libopenblas0 2>/dev/null || echo unknown)
cc=$(sed -n 's/^CC = //p' "$builddir/Makefile" 2>/dev/null | head -n1)
ccver=$(${cc:-cc} --version 2>/dev/null | head -n1)
cflags=$(sed -n 's/^CFLAGS = //p' "$builddir/Makefile" 2>/dev/null | head -n1)
native=$(sed -n 's/^NATIVE_FLAGS = //p' "$builddir/Makefile" 2>/dev/null | head -n1)
cflags="$cflags${native:+ $native}"
rev=$(git -C "${HM_SRCDIR:-.}" rev-parse --short HEAD 2>/dev/null || echo unknown)

echo "## Engine benchmarks"
echo
echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
ncpu=$(grep -c '^processor' /proc/cpuinfo)
echo "- CPU: $cpu, $(nproc) cores usable ($ncpu logical in /proc/cpuinfo), flags: $flags"
echo "- memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
echo "- kernel: $(uname -r); compiler: $ccver; CFLAGS: $cflags"
echo "- OpenBLAS (Debian package): $blas; source revision: $rev"
echo "- threads: $threads"
echo
# shellcheck disable=SC2086
"$bench" -t "$threads" "$@" $args
