#!/bin/bash
# rel-wrk.sh - sustained load with wrk: 64 connections POSTing completions and chat
# completions (tests/integration/rel-wrk.lua) for 5 s (HM_LONG_TESTS=1: 180 s). Checks:
# zero socket errors, zero non-2xx, every response a well-formed completion, the gauges
# back to zero afterwards, RSS growth bounded, and the server still serving.
. "$(dirname "$0")/rel-lib.sh"
rel_need
command -v wrk >/dev/null || rel_skip "wrk not installed (tools/install-deps.sh --test)"
DUR=5
[ "$REL_LONG" = 1 ] && DUR=180
rel_watchdog $((DUR + 120))
# queue_size above the connection count: overload is rel-overload.sh's subject, here
# every request must be served
rel_start --max-running 16 --queue-size 128 --max-connections 512 ||
    { rel_fail "server start"; rel_done; }
# warm-up and the reference RSS
for i in 1 2 3; do rel_post_json "$REL_TMP/w" /v1/completions '{"prompt":"x","max_tokens":4}' >/dev/null; done
rss0=$(rel_rss_kb "$SRV_PID")
wrk -t 2 -c 64 -d "${DUR}s" --timeout 30s -s "$HM_SRCDIR/tests/integration/rel-wrk.lua" "$URL" \
    >"$REL_TMP/wrk.out" 2>&1
rc=$?
cat "$REL_TMP/wrk.out"
line=$(grep '^REL good=' "$REL_TMP/wrk.out")
val() { echo "$line" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
rss1=$(rel_rss_kb "$SRV_PID")
rel_check "wrk ran" test "$rc" = 0 -a -n "$line"
rel_check "requests were made" test "$(val good)" -gt 0
rel_check "every response a well-formed 200" test "$(val bad)" = 0
for e in connect_errors read_errors write_errors status_errors timeouts; do
    rel_check "no $e" test "$(val $e)" = 0
done
ok=0
for _ in $(seq 100); do
    [ "$(rel_metric hybridmoe_running_sequences)" = 0 ] && [ "$(rel_metric hybridmoe_kv_bytes_used)" = 0 ] &&
        { ok=1; break; }
    sleep 0.1
done
rel_check "running and KV gauges back to zero" test $ok = 1
rel_log "wrk ${DUR}s x 64 connections: $(val requests) requests, $(val good) good, $(val bad) bad, p50 $(val p50_ms) ms, p99 $(val p99_ms) ms; RSS $rss0 -> $rss1 KiB"
rel_check_rss "RSS growth under 64 MiB" "$rss0" "$rss1" 65536
code=$(rel_post_json "$REL_TMP/good" /v1/completions '{"prompt":"Hello","max_tokens":4}')
rel_check "a normal completion after" test "$code" = 200
rel_stop_server TERM
rel_check "SIGTERM: exit 0" test "$SRV_RC" = 0
rel_done
