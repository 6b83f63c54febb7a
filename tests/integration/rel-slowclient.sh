#!/bin/bash
# rel-slowclient.sh - slow and stalled clients against hybridmoe-server (idle_timeout 2 s,
# header_timeout 3 s, body_timeout 3 s):
#  * clients that stop in the middle of the headers or of the body are disconnected by the
#    idle timeout (checked: closed within idle_timeout + 4 s);
#  * clients that trickle a request one byte at a time (every 0.3 s, so never idle) are cut
#    by the total deadlines: one trickling its headers within header_timeout + 3 s, one
#    trickling its body (headers sent at once) within body_timeout + 3 s - closed, or 408;
#  * while they are connected, normal completions keep succeeding promptly, and a stream
#    that lasts longer than both deadlines is not cut (it was fully received);
#  * 100 connections that open and say nothing do not stop normal requests.
# HM_LONG_TESTS=1: more tricklers and normal requests.
. "$(dirname "$0")/rel-lib.sh"
rel_need
rel_watchdog $([ "$REL_LONG" = 1 ] && echo 600 || echo 120)
IDLE=2
HDR_T=3
BODY_T=3
# 20 ms steps: the 150-token stream below lasts about 3 s or more, past both deadlines
rel_start --idle-timeout $IDLE --header-timeout $HDR_T --body-timeout $BODY_T \
    --max-connections 512 --debug-step-delay-ms 20 || { rel_fail "server start"; rel_done; }

now_ms() { date +%s%3N; }

# stall_client NAME TEXT: sends TEXT at once, then nothing; writes the seconds until the
# server closed the connection (or "open" after 20 s) to $REL_TMP/NAME.t
stall_client() {
    local name=$1 text=$2 t0
    (
        trap '' PIPE
        exec 3<>"/dev/tcp/127.0.0.1/$PORT" || exit 1
        t0=$(now_ms)
        printf '%b' "$text" >&3
        if timeout 20 cat <&3 >"$REL_TMP/$name.resp"; then
            echo $(( $(now_ms) - t0 )) >"$REL_TMP/$name.t"
        else
            echo open >"$REL_TMP/$name.t"
        fi
    ) &
    REL_PIDS+=($!)
}

# trickle_client NAME HEAD TEXT DELAY: sends HEAD at once, then TEXT one byte at a time,
# DELAY s apart, while reading. Writes "<ms until the server closed> <first status or
# closed>" to NAME.t ("open" when still open after 30 s).
trickle_client() {
    local name=$1 head=$2 text=$3 delay=$4
    (
        trap '' PIPE
        exec 3<>"/dev/tcp/127.0.0.1/$PORT" || exit 1
        local i n=${#text} t0 st
        t0=$(now_ms)
        ( if timeout 30 cat <&3 >"$REL_TMP/$name.resp"; then
              echo $(( $(now_ms) - t0 )) >"$REL_TMP/$name.end"
          else
              echo open >"$REL_TMP/$name.end"
          fi ) &
        printf '%b' "$head" >&3 2>/dev/null
        for ((i = 0; i < n; i++)); do
            [ -e "$REL_TMP/$name.end" ] && break
            printf '%s' "${text:i:1}" >&3 2>/dev/null || break
            sleep "$delay"
        done
        wait
        st=$(head -n 1 "$REL_TMP/$name.resp" | cut -d' ' -f2 | tr -d '\r')
        echo "$(cat "$REL_TMP/$name.end") ${st:-closed}" >"$REL_TMP/$name.t"
    ) &
    REL_PIDS+=($!)
}

body='{"prompt":"Hi","max_tokens":2}'
hdr="POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${#body}\r\n\r\n"

# 1. stalled in the headers and in the body
stall_client stall-hdr 'POST /v1/completions HTTP/1.1\r\nHost: 127'
stall_client stall-body "${hdr}{\"prompt\":"
stall_client stall-nothing ''
# 2. tricklers (0.3 s a byte: never idle), half in the headers, half in the body
ntrickle=4
[ "$REL_LONG" = 1 ] && ntrickle=20
delay=0.3
request=$(printf '%b%s' "$hdr" "$body") # body last: $(...) keeps the header's \r\n
for i in $(seq "$ntrickle"); do
    if [ $((i % 2)) = 1 ]; then
        trickle_client "trickle-hdr-$i" '' "$request" "$delay"
    else
        trickle_client "trickle-body-$i" "$hdr" "$body" "$delay"
    fi
done
# a stream that outlasts both deadlines: received at once, so never cut by them
curl -s -N -o "$REL_TMP/long-stream" --max-time 60 -H 'Content-Type: application/json' \
    -d '{"prompt":"a","max_tokens":150,"ignore_eos":true,"stream":true}' \
    "$URL/v1/completions" &
long_pid=$!
REL_PIDS+=("$long_pid")
# 3. idle connections
nidle=100
for i in $(seq "$nidle"); do
    stall_client "idle-$i" ''
done
sleep 0.5

# normal requests while all of that is connected
ngood=20
[ "$REL_LONG" = 1 ] && ngood=200
okc=0
t0=$(now_ms)
for i in $(seq "$ngood"); do
    code=$(rel_post_json "$REL_TMP/good" /v1/completions '{"prompt":"Hello","max_tokens":4}')
    [ "$code" = 200 ] && rel_is_completion "$REL_TMP/good" && okc=$((okc + 1))
done
t1=$(now_ms)
rel_log "$okc/$ngood normal completions while $ntrickle tricklers, 3 stalled and $nidle idle clients were connected ($((t1 - t0)) ms)"
rel_check "every normal request succeeded" test "$okc" = "$ngood"
rel_check "normal requests served promptly (under 1 s each on average)" \
    test $((t1 - t0)) -lt $((ngood * 1000))

# wait for the stalled ones and the tricklers
for f in stall-hdr stall-body stall-nothing; do
    for _ in $(seq 250); do [ -s "$REL_TMP/$f.t" ] && break; sleep 0.1; done
done
for f in stall-hdr stall-body stall-nothing; do
    t=$(cat "$REL_TMP/$f.t" 2>/dev/null || echo none)
    rel_log "$f: closed by the server after $t ms"
    rel_check "$f cut by the idle timeout" test "$t" != open -a "$t" != none
    [ "$t" != open ] && [ "$t" != none ] && rel_check "$f cut within idle_timeout + 4 s" test "$t" -le $(( (IDLE + 4) * 1000 ))
done
deadline=$((SECONDS + 60))
for i in $(seq "$ntrickle"); do
    f=$REL_TMP/trickle-hdr-$i.t
    [ $((i % 2)) = 0 ] && f=$REL_TMP/trickle-body-$i.t
    while [ ! -s "$f" ] && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
done
for f in "$REL_TMP"/trickle-*.t; do
    name=$(basename "$f" .t)
    read -r ms st <"$f"
    rel_log "$name (1 byte / $delay s): $ms ms, $st"
    limit=$HDR_T
    case $name in trickle-body-*) limit=$BODY_T ;; esac
    rel_check "$name cut (closed or 408), not served" test "$st" = closed -o "$st" = 408
    rel_check "$name cut within $limit + 3 s" test "$ms" != open -a "${ms:-999999}" -le $(( (limit + 3) * 1000 ))
done
wait "$long_pid"
rel_check "the long stream was not cut (complete, [DONE])" rel_is_stream "$REL_TMP/long-stream"
rel_check "the long stream ran to its length" grep -q '"finish_reason":"length"' "$REL_TMP/long-stream"
closed=$(rel_metric hybridmoe_slow_clients_closed_total)
rel_log "slow clients closed (metric): $closed"
rel_check "metric counts the cut tricklers" test "${closed:-0}" -ge "$ntrickle"
rel_check "server alive" kill -0 "$SRV_PID"
rel_check "/health ok" test "$(rel_req "$REL_TMP/h" "$URL/health")" = 200
open=$(rel_metric hybridmoe_open_connections)
rel_log "open connections now: $open"
rel_stop_server TERM
rel_check "SIGTERM: exit 0" test "$SRV_RC" = 0
rel_done
