#!/bin/bash
# rel-stream-disconnect.sh - 200 streaming clients (curl -N) that hang up at random points
# (--max-time 0.05..2 s, so before the first token, mid-stream or after the end). Then:
# the server still serves, the running/waiting/KV gauges in /metrics return to zero,
# requests_cancelled_total counted the hang-ups, and resident memory does not grow beyond
# a bound from one round to the next.
# Short: 2 rounds of 200. HM_LONG_TESTS=1: 10 rounds of 200 (RSS checked after each).
. "$(dirname "$0")/rel-lib.sh"
rel_need
rel_watchdog $([ "$REL_LONG" = 1 ] && echo 900 || echo 170)
# a 5 ms pause per engine step makes each stream last about a second, so hang-ups land
# in every phase (queued, prefill, decoding)
rel_start --max-running 16 --queue-size 400 --keepalive-interval 1 --debug-step-delay-ms 5 \
    --max-connections 1024 || { rel_fail "server start"; rel_done; }

NCLIENTS=200
ROUNDS=2
[ "$REL_LONG" = 1 ] && ROUNDS=10
J='Content-Type: application/json'

round() {
    local r=$1 i t m pids=()
    for i in $(seq "$NCLIENTS"); do
        m=200
        [ $((i % 3)) = 0 ] && m=4 # a third are short enough to finish
        t=$(( (RANDOM % 40) * 5 + 50 ))  # 50..245 ms
        [ $((i % 4)) = 0 ] && t=$(( RANDOM % 2000 + 50 )) # a quarter up to 2 s
        if [ $((i % 2)) = 0 ]; then
            curl -s -N --max-time "$(printf '%d.%03d' $((t / 1000)) $((t % 1000)))" -H "$J" \
                -d '{"prompt":"Once upon a time","max_tokens":'"$m"',"ignore_eos":true,"stream":true}' \
                "$URL/v1/completions" >"$REL_TMP/s$r-$i.out" 2>/dev/null &
        else
            curl -s -N --max-time "$(printf '%d.%03d' $((t / 1000)) $((t % 1000)))" -H "$J" \
                -d '{"messages":[{"role":"user","content":"Tell me a story"}],"max_tokens":'"$m"',"ignore_eos":true,"stream":true}' \
                "$URL/v1/chat/completions" >"$REL_TMP/s$r-$i.out" 2>/dev/null &
        fi
        pids+=($!)
    done
    wait "${pids[@]}" 2>/dev/null
}

# gauges back to zero (the server notices a gone client at its next write or keep-alive)
settle() {
    local i run wait kv
    for i in $(seq 150); do
        run=$(rel_metric hybridmoe_running_sequences)
        wait=$(rel_metric hybridmoe_waiting_sequences)
        kv=$(rel_metric hybridmoe_kv_bytes_used)
        [ "$run" = 0 ] && [ "$wait" = 0 ] && [ "$kv" = 0 ] && return 0
        sleep 0.2
    done
    rel_log "gauges did not return to zero: running=$run waiting=$wait kv=$kv"
    return 1
}

# one full stream first (warm-up, and a reference that streams work)
code=$(rel_req "$REL_TMP/full" -N -H "$J" -d '{"prompt":"Hi","max_tokens":8,"stream":true}' \
    "$URL/v1/completions")
rel_check "a complete stream before" test "$code" = 200
rel_check "it is well-formed SSE ending in [DONE]" rel_is_stream "$REL_TMP/full"

rss_first=
for r in $(seq "$ROUNDS"); do
    round "$r"
    settle || rel_fail "round $r: gauges stuck"
    done_streams=$(grep -l '^data: \[DONE\]' "$REL_TMP"/s"$r"-*.out 2>/dev/null | wc -l)
    rss=$(rel_rss_kb "$SRV_PID")
    [ -n "$rss_first" ] || rss_first=$rss
    rel_log "round $r: $NCLIENTS clients, $done_streams streams complete, $((NCLIENTS - done_streams)) cut; RSS $rss KiB"
    rm -f "$REL_TMP"/s"$r"-*.out
done
cancelled=$(rel_metric hybridmoe_requests_cancelled_total)
rel_log "requests_cancelled_total=$cancelled; RSS after round 1: $rss_first KiB, at the end: $rss KiB"
rel_check "hang-ups were counted" test "${cancelled:-0}" -gt 0
rel_check_rss "RSS grew less than 32 MiB after the first round" "$rss_first" "$rss" 32768
rel_check "server alive" kill -0 "$SRV_PID"
code=$(rel_post_json "$REL_TMP/good" /v1/completions '{"prompt":"Hello","max_tokens":4}')
rel_check "a normal completion after" test "$code" = 200
rel_check "well-formed" rel_is_completion "$REL_TMP/good"
code=$(rel_req "$REL_TMP/full2" -N -H "$J" -d '{"prompt":"Hi","max_tokens":8,"stream":true}' \
    "$URL/v1/completions")
rel_check "a complete stream after" rel_is_stream "$REL_TMP/full2"
rel_stop_server TERM
rel_check "SIGTERM: exit 0" test "$SRV_RC" = 0
rel_done
