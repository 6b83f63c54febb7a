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
if [ $rc -ne 0 ]; then
    echo "== failures"
    cat tests/test-suite.log 2>/dev/null | head -200 || true
fi
exit $rc
