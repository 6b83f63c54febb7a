#!/bin/bash
# rel-sigterm.sh - graceful shutdown under load, and crash restart.
#  1. SIGTERM while 30 requests (half streaming) run or wait: every request sent before
#     the signal completes (200 / full stream with [DONE]) or ends with a clean error
#     (a 503 JSON error body, or a stream's error event then [DONE]); requests sent during
#     the drain are refused (503 or connection refused), never hang; exit status 0.
#  2. The same with drain_timeout 1 and long requests: the rest are cancelled cleanly at
#     the deadline and the exit status is still 0.
#  3. SIGKILL under load, then restart on the same port: measures the time until /health
#     says ok and a completion succeeds again.
# HM_LONG_TESTS=1: 100 requests per phase and 5 kill/restart cycles.
. "$(dirname "$0")/rel-lib.sh"
rel_need
rel_watchdog $([ "$REL_LONG" = 1 ] && echo 900 || echo 170)
N=30
CYCLES=1
[ "$REL_LONG" = 1 ] && N=100 CYCLES=5
J='Content-Type: application/json'

# launch N requests in the background, max_tokens $1; files $REL_TMP/$2-i
launch() {
    local mt=$1 tag=$2 i
    LAUNCHED=()
    for i in $(seq "$N"); do
        if [ $((i % 2)) = 0 ]; then
            curl -s -N -o "$REL_TMP/$tag-$i" -w '%{http_code}' --max-time 60 -H "$J" \
                -d '{"prompt":"Once upon a time","max_tokens":'"$mt"',"ignore_eos":true,"stream":true}' \
                "$URL/v1/completions" >"$REL_TMP/$tag-$i.code" 2>/dev/null &
        else
            curl -s -o "$REL_TMP/$tag-$i" -w '%{http_code}' --max-time 60 -H "$J" \
                -d '{"messages":[{"role":"user","content":"Hi"}],"max_tokens":'"$mt"',"ignore_eos":true}' \
                "$URL/v1/chat/completions" >"$REL_TMP/$tag-$i.code" 2>/dev/null &
        fi
        LAUNCHED+=($!)
    done
}

# waits (up to 20 s) until the server holds all N requests: running + waiting + finished
# generation requests (so none is still in the kernel's accept queue at the signal)
wait_accepted() {
    local i run wait done_ base=$1
    for i in $(seq 200); do
        run=$(rel_metric hybridmoe_running_sequences)
        wait=$(rel_metric hybridmoe_waiting_sequences)
        done_=$(rel_metric hybridmoe_request_latency_seconds_count)
        [ $(( ${run:-0} + ${wait:-0} + ${done_:-0} - base )) -ge "$N" ] && return 0
        sleep 0.1
    done
    rel_log "only $run running + $wait waiting + $((done_ - base)) done of $N after 20 s"
    return 1
}

# classify the results of tag: sets C_OK C_ERR C_BAD
classify() {
    local tag=$1 i f code
    C_OK=0 C_ERR=0 C_BAD=0
    for i in $(seq "$N"); do
        f=$REL_TMP/$tag-$i
        code=$(cat "$f.code" 2>/dev/null)
        if [ "$code" = 200 ] && { rel_is_completion "$f" || rel_is_stream "$f"; }; then
            if grep -q '^data: {"error"' "$f" 2>/dev/null; then C_ERR=$((C_ERR + 1)); else C_OK=$((C_OK + 1)); fi
        elif [ "$code" = 200 ] && grep -q '^data: {"error":{"message":"[^"]' "$f" &&
             [ "$(tail -n 2 "$f" | head -n 1)" = "data: [DONE]" ]; then
            C_ERR=$((C_ERR + 1)) # cancelled before its first token: error event, [DONE]
        elif [ "$code" = 503 ] && rel_is_error_body "$f"; then
            C_ERR=$((C_ERR + 1))
        else
            C_BAD=$((C_BAD + 1))
            echo "unclean end: $tag-$i status '$code': $(head -c 200 "$f" 2>/dev/null)"
        fi
    done
}

# ---- 1. drain completes everything ----
rel_start --max-running 4 --queue-size 100 --debug-step-delay-ms 10 --drain-timeout 30 ||
    { rel_fail "server start"; rel_done; }
base=$(rel_metric hybridmoe_request_latency_seconds_count)
launch 24 a
rel_check "drain: all $N requests accepted before the signal" wait_accepted "${base:-0}"
kill -TERM "$SRV_PID"
sleep 0.2
late=$(curl -s -o "$REL_TMP/late" -w '%{http_code}' --max-time 10 -H "$J" \
    -d '{"prompt":"x","max_tokens":2}' "$URL/v1/completions")
wait "${LAUNCHED[@]}"
wait "$SRV_PID"
SRV_RC=$?
classify a
rel_log "SIGTERM with $N requests in flight: $C_OK completed, $C_ERR clean errors, $C_BAD unclean; a request during the drain got '$late'; exit $SRV_RC"
rel_check "drain: no unclean ends" test "$C_BAD" = 0
rel_check "drain: all completed (drain_timeout 30 s is ample)" test "$C_OK" = "$N"
rel_check "drain: new request refused (503 or refused connection)" test "$late" = 503 -o "$late" = 000
[ "$late" = 503 ] && rel_check "drain: 503 body" rel_is_error_body "$REL_TMP/late"
rel_check "drain: exit 0" test "$SRV_RC" = 0

# ---- 2. drain deadline cancels cleanly ----
rel_start --max-running 4 --queue-size 100 --debug-step-delay-ms 20 --drain-timeout 1 ||
    { rel_fail "server start 2"; rel_done; }
base=$(rel_metric hybridmoe_request_latency_seconds_count)
launch 200 b
rel_check "deadline: all $N requests accepted before the signal" wait_accepted "${base:-0}"
t0=$(date +%s%3N)
kill -TERM "$SRV_PID"
wait "${LAUNCHED[@]}"
wait "$SRV_PID"
SRV_RC=$?
t1=$(date +%s%3N)
classify b
rel_log "SIGTERM, drain_timeout 1 s, long requests: $C_OK completed, $C_ERR cancelled cleanly, $C_BAD unclean; exit $SRV_RC after $((t1 - t0)) ms"
rel_check "deadline: no unclean ends" test "$C_BAD" = 0
rel_check "deadline: some were cancelled at the deadline" test "$C_ERR" -gt 0
rel_check "deadline: exit 0" test "$SRV_RC" = 0

# ---- 3. SIGKILL and restart on the same port ----
rel_start --max-running 4 --debug-step-delay-ms 5 || { rel_fail "server start 3"; rel_done; }
port=$PORT
times=()
for c in $(seq "$CYCLES"); do
    launch 50 k
    sleep 0.3
    rel_stop_server KILL
    rel_check "SIGKILL: killed by signal 9" test "$SRV_RC" = 137
    wait "${LAUNCHED[@]}"
    t0=$(date +%s%3N)
    SRV_LOG=$REL_TMP/server-restart$c.log
    "$REL_SERVER" --model "$REL_MODEL" --host 127.0.0.1 --port "$port" >"$SRV_LOG" 2>&1 &
    SRV_PID=$!
    REL_PIDS+=("$SRV_PID")
    ready=0
    for _ in $(seq 600); do
        if [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$port/health")" = 200 ]; then
            ready=1
            break
        fi
        kill -0 "$SRV_PID" 2>/dev/null || break
        sleep 0.02
    done
    t1=$(date +%s%3N)
    rel_check "restart $c: ready again on port $port" test "$ready" = 1
    URL=http://127.0.0.1:$port
    code=$(rel_post_json "$REL_TMP/good" /v1/completions '{"prompt":"Hello","max_tokens":4}')
    t2=$(date +%s%3N)
    rel_check "restart $c: completion works" test "$code" = 200
    times+=("$((t1 - t0))/$((t2 - t0))")
done
rel_log "restart after SIGKILL: ms to /health ok / to first completion: ${times[*]}"
rel_stop_server TERM
rel_check "final SIGTERM: exit 0" test "$SRV_RC" = 0
rel_done
