#!/bin/sh
# README command 2: install what is needed, build, and run the whole test suite.
# Prints each Check suite's summary line and exits non-zero on any failure.
set -eu
cd "$(dirname "$0")/.."
tools/install-deps.sh --test
tools/build.sh
rc=0
make -j"$(nproc)" check || rc=$?
echo "== test summaries"
for f in tests/*.log tests/*/*.log; do
    [ -f "$f" ] || continue
    case "$f" in */test-suite.log) continue ;; esac
    grep -H -E '^[0-9]+%: Checks: |^(# )?[0-9]+ passed, [0-9]+ failed' "$f" || true
done
# automake writes a :test-result: line into each .trs file; say why a test skipped
for f in tests/*.trs tests/*/*.trs; do
    [ -f "$f" ] || continue
    if grep -q '^:test-result: SKIP' "$f"; then
        log="${f%.trs}.log"
        why=$(grep -m1 -E '^(# )?SKIP:' "$log" 2>/dev/null || true)
        echo "== skipped: ${f%.trs}: ${why:-(no reason given)}"
    fi
done
if [ $rc -ne 0 ]; then
    # test-suite.log (top level) holds the full log of every failed test
    echo "== failures"
    head -c 200000 test-suite.log 2>/dev/null || true
fi
exit $rc
