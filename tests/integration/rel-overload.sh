#!/bin/bash
# rel-overload.sh - more requests than the server can run or queue (max_running 2,
# queue_size 4, a 20 ms pause per engine step): the excess is refused at once with 503
# server_overloaded and a Retry-After header; every request that was admitted completes
# with a well-formed 200; nothing else happens (no other status, no hang, no crash); the
# rejected_total counter matches; the server serves normally afterwards.
# Short: 40 concurrent requests, 2 waves. HM_LONG_TESTS=1: 200 concurrent, 10 waves.
. "$(dirname "$0")/rel-lib.sh"
rel_need
rel_watchdog $([ "$REL_LONG" = 1 ] && echo 900 || echo 150)
rel_start --max-running 2 --queue-size 4 --debug-step-delay-ms 20 --max-connections 1024 ||
    { rel_fail "server start"; rel_done; }
N=40
WAVES=2
[ "$REL_LONG" = 1 ] && N=200 WAVES=10
J='Content-Type: application/json'

total=0 ok=0 rej=0 other=0 retry_after=0 bad_body=0
for w in $(seq "$WAVES"); do
    pids=()
    for i in $(seq "$N"); do
        if [ $((i % 3)) = 0 ]; then
            curl -s -o "$REL_TMP/o$i" -D "$REL_TMP/o$i.h" -w '%{http_code}' --max-time 60 -H "$J" \
                -d '{"messages":[{"role":"user","content":"Hi"}],"max_tokens":16}' \
                "$URL/v1/chat/completions" >"$REL_TMP/o$i.code" &
        else
            curl -s -o "$REL_TMP/o$i" -D "$REL_TMP/o$i.h" -w '%{http_code}' --max-time 60 -H "$J" \
                -d '{"prompt":"Hello there","max_tokens":16}' \
                "$URL/v1/completions" >"$REL_TMP/o$i.code" &
        fi
        pids+=($!)
    done
    wait "${pids[@]}"
    for i in $(seq "$N"); do
        total=$((total + 1))
        code=$(cat "$REL_TMP/o$i.code")
        case $code in
        200)
            ok=$((ok + 1))
            rel_is_completion "$REL_TMP/o$i" || { bad_body=$((bad_body + 1)); head -c 300 "$REL_TMP/o$i"; echo; }
            ;;
        503)
            rej=$((rej + 1))
            grep -qi '^Retry-After: [0-9]' "$REL_TMP/o$i.h" && retry_after=$((retry_after + 1))
            rel_is_error_body "$REL_TMP/o$i" server_overloaded || { bad_body=$((bad_body + 1)); head -c 300 "$REL_TMP/o$i"; echo; }
            ;;
        *)
            other=$((other + 1))
            echo "unexpected status $code: $(head -c 300 "$REL_TMP/o$i")"
            ;;
        esac
    done
done
counter=$(rel_metric hybridmoe_requests_rejected_total)
rel_log "$total requests ($N at once, $WAVES waves): $ok completed (200), $rej refused (503, $retry_after with Retry-After), $other other; rejected_total=$counter"
rel_check "some requests were refused (overload reached)" test "$rej" -gt 0
rel_check "some requests were admitted" test "$ok" -gt 0
rel_check "no other status (admitted = completed)" test "$other" = 0
rel_check "every body well-formed" test "$bad_body" = 0
rel_check "every 503 has Retry-After" test "$retry_after" = "$rej"
rel_check "rejected_total counts them" test "${counter:-x}" = "$rej"
code=$(rel_post_json "$REL_TMP/good" /v1/completions '{"prompt":"Hello","max_tokens":4}')
rel_check "a normal completion after" test "$code" = 200
rel_check "server alive" kill -0 "$SRV_PID"
rel_stop_server TERM
rel_check "SIGTERM: exit 0" test "$SRV_RC" = 0
rel_done
