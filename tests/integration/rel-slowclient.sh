#!/bin/bash
# rel-slowclient.sh - slow and stalled clients against hybridmoe-server (idle_timeout 2 s):
#  * clients that stop in the middle of the headers or of the body are disconnected by the
#    idle timeout (checked: closed within idle_timeout + 4 s);
#  * clients that send a whole request one byte at a time (every 0.05 s; 0.3 s in the long
#    version, so never idle for long) do not delay others: while they are connected, normal
#    completions keep succeeding; each trickled request gets its 200 in the end;
#  * 100 connections that open and say nothing do not stop normal requests.
# libmicrohttpd's timeout is an inactivity timeout: a client sending a byte every
# (timeout - 1) s is not cut by it (see docs/reliability.md; front it with nginx for that).
# HM_LONG_TESTS=1: more and slower clients.
. "$(dirname "$0")/rel-lib.sh"
rel_need
rel_watchdog $([ "$REL_LONG" = 1 ] && echo 600 || echo 120)
IDLE=2
rel_start --idle-timeout $IDLE --max-connections 512 || { rel_fail "server start"; rel_done; }

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

# trickle_client NAME TEXT DELAY: sends TEXT one byte at a time, DELAY s apart; then
# reads the answer. Writes "status <code>" or "closed after <n> bytes" to NAME.t
trickle_client() {
    local name=$1 text=$2 delay=$3
    (
        trap '' PIPE
        exec 3<>"/dev/tcp/127.0.0.1/$PORT" || exit 1
        local i n=${#text}
        for ((i = 0; i < n; i++)); do
            printf '%s' "${text:i:1}" >&3 2>/dev/null || { echo "closed after $i bytes" >"$REL_TMP/$name.t"; exit 0; }
            sleep "$delay"
        done
        timeout 20 cat <&3 >"$REL_TMP/$name.resp"
        echo "status $(head -n 1 "$REL_TMP/$name.resp" | cut -d' ' -f2 | tr -d '\r')" >"$REL_TMP/$name.t"
    ) &
    REL_PIDS+=($!)
}

body='{"prompt":"Hi","max_tokens":2}'
hdr="POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${#body}\r\n\r\n"

# 1. stalled in the headers and in the body
stall_client stall-hdr 'POST /v1/completions HTTP/1.1\r\nHost: 127'
stall_client stall-body "${hdr}{\"prompt\":"
stall_client stall-nothing ''
# 2. tricklers, headers and body one byte at a time
ntrickle=4
[ "$REL_LONG" = 1 ] && ntrickle=20
delay=0.05
[ "$REL_LONG" = 1 ] && delay=0.3
request=$(printf '%b%s' "$hdr" "$body") # body last: $(...) keeps the header's \r\n
for i in $(seq "$ntrickle"); do
    trickle_client "trickle-$i" "$request" "$delay"
done
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
    while [ ! -s "$REL_TMP/trickle-$i.t" ] && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
done
ttr=$(cat "$REL_TMP"/trickle-*.t 2>/dev/null | sort | uniq -c | tr -s ' ' | tr '\n' ';')
rel_log "tricklers (1 byte / $delay s): $ttr"
rel_check "every trickler got its completion (200)" \
    test "$(cat "$REL_TMP"/trickle-*.t 2>/dev/null | grep -c '^status 200$')" = "$ntrickle"
rel_check "server alive" kill -0 "$SRV_PID"
rel_check "/health ok" test "$(rel_req "$REL_TMP/h" "$URL/health")" = 200
open=$(rel_metric hybridmoe_open_connections)
rel_log "open connections now: $open"
rel_stop_server TERM
rel_check "SIGTERM: exit 0" test "$SRV_RC" = 0
rel_done
