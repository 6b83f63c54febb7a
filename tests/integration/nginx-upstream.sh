#!/bin/bash
# nginx-upstream.sh - etc/nginx/hybridmoe.conf with Debian's nginx in front of two
# hybridmoe-server instances, all on loopback: completions and streams pass through, load
# spreads over both instances, and requests sent after one instance stopped still succeed.
# nginx runs in the foreground with its own prefix, config, pid and logs in a temp dir; the
# system's nginx service and port 80 are never touched.
set -u
. "$(dirname "$0")/deploy-lib.sh"

NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] || hm_skip "nginx not installed (tools/install-deps.sh --test)"
command -v curl > /dev/null || hm_skip "curl not installed"
[ -x "$BLD/hybridmoe-server" ] || hm_skip "no $BLD/hybridmoe-server"

PA=$(hm_free_port 11) || hm_fail "no free port"
PB=$(hm_free_port 23) || hm_fail "no free port"
PN=$(hm_free_port 37) || hm_fail "no free port"
[ "$PA" != "$PB" ] && [ "$PB" != "$PN" ] && [ "$PA" != "$PN" ] || hm_fail "port clash"
hm_log "instances on $PA and $PB, nginx on $PN"

# ---- the shipped config, pointed at our ports and files ----
N="$TMP/nginx"
mkdir -p "$N/logs" "$N/tmp"
sed -e "s|127\.0\.0\.1:8081|127.0.0.1:$PA|" -e "s|127\.0\.0\.1:8082|127.0.0.1:$PB|" \
    -e "s|^\( *\)listen 8080;|\1listen 127.0.0.1:$PN;|" -e '/listen \[::\]:8080;/d' \
    -e "s|/var/log/nginx/|$N/logs/|g" "$SRC/etc/nginx/hybridmoe.conf" > "$N/hybridmoe.conf"
for want in "127.0.0.1:$PA " "127.0.0.1:$PB " "listen 127.0.0.1:$PN;" "$N/logs/hybridmoe.access.log"; do
    grep -qF "$want" "$N/hybridmoe.conf" || hm_fail "etc/nginx/hybridmoe.conf changed: no '$want'"
done
grep -qE 'listen +(\[::\]:)?[0-9]*80;|/var/log' "$N/hybridmoe.conf" && hm_fail "config still names port 80 or /var/log"
# workers of a root master run as nobody by default and must reach the temp dirs
user_line=""
[ "$(id -u)" = 0 ] && user_line="user root;"
cat > "$N/nginx.conf" << EOC
$user_line
worker_processes 1;
daemon off;
pid $N/nginx.pid;
error_log $N/logs/error.log warn;
events { worker_connections 256; }
http {
    client_body_temp_path $N/tmp/body;
    proxy_temp_path $N/tmp/proxy;
    fastcgi_temp_path $N/tmp/fastcgi;
    uwsgi_temp_path $N/tmp/uwsgi;
    scgi_temp_path $N/tmp/scgi;
    access_log $N/logs/access.log;
    include $N/hybridmoe.conf;
}
EOC
"$NGINX" -t -p "$N/" -c "$N/nginx.conf" -e "$N/logs/error.log" > "$TMP/nginx-t.log" 2>&1 ||
    hm_fail "nginx -t: $(cat "$TMP/nginx-t.log")"

# ---- two instances and nginx ----
# Instance a sleeps 40 ms after each engine step, so that a long generation keeps it draining
# for seconds after SIGTERM (phase 2).
hm_server a "$PA" --debug_step_delay_ms 40
PIDA=$HM_SERVER_PID
hm_server b "$PB"
PIDB=$HM_SERVER_PID
"$NGINX" -p "$N/" -c "$N/nginx.conf" -e "$N/logs/error.log" > "$TMP/nginx.log" 2>&1 &
NPID=$!
hm_track "$NPID"
hm_wait_http "http://127.0.0.1:$PA/v1/models" 120 "$PIDA"
hm_wait_http "http://127.0.0.1:$PB/v1/models" 120 "$PIDB"
hm_wait_http "http://127.0.0.1:$PN/v1/models" 20 "$NPID"

ALOG="$N/logs/hybridmoe.access.log"
URL="http://127.0.0.1:$PN/v1/completions"

# complete I: one non-streaming completion through nginx; fails the test unless 200 + choices.
complete() {
    local code
    code=$(curl -s -o "$TMP/resp.json" -w '%{http_code}' --max-time 60 "$URL" \
        -H 'Content-Type: application/json' \
        -d "{\"prompt\": \"Hello $1\", \"max_tokens\": 4, \"temperature\": 0}")
    [ "$code" = 200 ] || hm_fail "request $1: HTTP $code: $(cat "$TMP/resp.json")"
    grep -q '"choices"' "$TMP/resp.json" || hm_fail "request $1: no choices: $(cat "$TMP/resp.json")"
}

# stream I: one streaming completion; fails unless 200, several data events and [DONE].
stream() {
    local code n
    code=$(curl -sN -o "$TMP/stream.txt" -w '%{http_code}' --max-time 60 "$URL" \
        -H 'Content-Type: application/json' \
        -d "{\"prompt\": \"Stream $1\", \"max_tokens\": 6, \"temperature\": 0, \"stream\": true}")
    [ "$code" = 200 ] || hm_fail "stream $1: HTTP $code: $(cat "$TMP/stream.txt")"
    n=$(grep -c '^data: {' "$TMP/stream.txt")
    [ "$n" -ge 2 ] || hm_fail "stream $1: $n data events: $(cat "$TMP/stream.txt")"
    tail -n 5 "$TMP/stream.txt" | grep -qx 'data: \[DONE\]\r\?' ||
        hm_fail "stream $1: no final data: [DONE]: $(cat "$TMP/stream.txt")"
}

served_by() { grep -c "upstream=127.0.0.1:$1 " "$ALOG" || true; }

# nginx writes a log line when it finishes a request, which may be just after curl returns.
wait_log_lines() {
    local i
    for i in $(seq 1 50); do
        [ "$(grep -c . "$ALOG" 2> /dev/null || echo 0)" -ge "$1" ] && return 0
        sleep 0.1
    done
    hm_fail "access log has fewer than $1 lines: $(cat "$ALOG")"
}

# ---- completions and streams pass through; the load spreads over both instances ----
for i in $(seq 1 8); do complete "$i"; done
stream 1
stream 2
wait_log_lines 10
a=$(served_by "$PA")
b=$(served_by "$PB")
hm_log "before the stop: instance a served $a, instance b served $b"
[ "$a" -ge 2 ] && [ "$b" -ge 2 ] || hm_fail "load did not spread: a=$a b=$b ($(cat "$ALOG"))"

# ---- a rolling restart: instance a drains (SIGTERM) with a long stream in flight ----
# The stream goes to a directly; while a finishes it, a refuses new connections and answers
# requests on nginx's kept-alive connections with 503. nginx must retry those on b
# (proxy_next_upstream ... http_503 non_idempotent), so every client request succeeds.
# EOS is banned (logit_bias) so that the stream really lasts 200 steps.
eos=$("$BLD/hybridmoe" inspect "$HM_MODEL" 2> /dev/null |
    sed -n 's/.*eos_token_id *u32 *\([0-9][0-9]*\).*/\1/p' | head -n 1)
bias=""
[ -n "$eos" ] && bias=", \"logit_bias\": {\"$eos\": -100}"
curl -sN -o "$TMP/long.txt" --max-time 120 "http://127.0.0.1:$PA/v1/completions" \
    -H 'Content-Type: application/json' \
    -d "{\"prompt\": \"Long\", \"max_tokens\": 200, \"temperature\": 0, \"stream\": true$bias}" &
LONG=$!
hm_track "$LONG"
for i in $(seq 1 100); do
    [ "$(grep -c '^data: {' "$TMP/long.txt" 2> /dev/null || echo 0)" -ge 3 ] && break
    sleep 0.1
done
grep -q '^data: {' "$TMP/long.txt" || hm_fail "the long stream on instance a did not start"
kill -TERM "$PIDA"
sleep 0.3
kill -0 "$PIDA" 2> /dev/null || hm_fail "instance a did not wait for its in-flight stream"
# A draining instance must refuse new connections at once (closed listen socket). If it only
# stops accept()ing, the kernel still completes handshakes into the backlog: nginx's request
# then waits there until the process exits, and is retried only after up to drain_timeout.
if (exec 3<> "/dev/tcp/127.0.0.1/$PA") 2> /dev/null; then
    hm_fail "instance a, draining, still completes TCP handshakes on its port"
fi
before=$(grep -c . "$ALOG")
for i in $(seq 1 6); do complete "drain-$i"; done
wait_log_lines $((before + 6))
drain_log=$(sed -n "$((before + 1)),\$p" "$ALOG")
ok=$(printf '%s\n' "$drain_log" | grep -c '" 200 ' || true)
[ "$ok" -eq 6 ] || hm_fail "while a drained: $ok of 6 requests answered 200: $drain_log"
if kill -0 "$PIDA" 2> /dev/null; then
    hm_log "while a drained: 6 of 6 requests succeeded (retried after a 503 from a:" \
        "$(printf '%s\n' "$drain_log" | grep -c 'ustatus=503, 200' || true))"
else
    hm_log "note: a finished draining before the last request (slow host); the check still held"
fi
hm_wait_exit "$PIDA" 60
hm_log "instance a stopped (exit $HM_EXIT_STATUS)"
[ "$HM_EXIT_STATUS" = 0 ] || hm_fail "instance a: exit $HM_EXIT_STATUS after SIGTERM"
wait "$LONG"
tail -n 3 "$TMP/long.txt" | grep -qx 'data: \[DONE\]\r\?' ||
    hm_fail "the in-flight stream did not finish during the drain: $(tail -n 3 "$TMP/long.txt")"
grep -q '"error"' "$TMP/long.txt" && hm_fail "the in-flight stream got an error: $(grep error "$TMP/long.txt")"

# ---- instance a is gone: every request sent now must still succeed ----
(exec 3<>"/dev/tcp/127.0.0.1/$PA") 2> /dev/null && hm_fail "instance a still accepts connections"
before=$(grep -c . "$ALOG")
for i in $(seq 1 6); do complete "after-$i"; done
stream after-1
stream after-2
wait_log_lines $((before + 8))
after=$(sed -n "$((before + 1)),\$p" "$ALOG")
total=$(printf '%s\n' "$after" | grep -c . || true)
ok=$(printf '%s\n' "$after" | grep -c '" 200 ' || true)
[ "$total" -eq 8 ] && [ "$ok" -eq 8 ] ||
    hm_fail "after the stop: $ok of $total (want 8 of 8) requests answered 200: $after"
hm_log "after the stop: 8 of 8 requests succeeded; retried from a to b:" \
    "$(printf '%s\n' "$after" | grep -c "127.0.0.1:$PA, 127.0.0.1:$PB" || true)"
echo "PASS: nginx upstream"
