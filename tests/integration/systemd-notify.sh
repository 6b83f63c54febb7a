#!/bin/bash
# systemd-notify.sh - the sd_notify protocol of the real hybridmoe-server, as systemd would see
# it under Type=notify and WatchdogSec=: READY=1 once it serves, WATCHDOG=1 pings while it runs,
# STOPPING=1 after SIGTERM, then exit 0; and exit 78 (RestartPreventExitStatus) with no READY=1
# for an unusable model. tests/check_notify --listen plays systemd's notify socket.
set -u
. "$(dirname "$0")/deploy-lib.sh"

LISTEN="$BLD/tests/check_notify"
[ -x "$LISTEN" ] || hm_skip "no $LISTEN"
[ -x "$BLD/hybridmoe-server" ] || hm_skip "no $BLD/hybridmoe-server"
command -v curl > /dev/null || hm_skip "curl not installed"

# run_case NAME NOTIFY_SOCKET: one full server life; the datagrams end up in $TMP/NAME.notify.
run_case() {
    local name=$1 sock=$2 port lpid spid st out ready wd stop
    out="$TMP/$name.notify"
    "$LISTEN" --listen "$sock" 120 > "$out" 2> "$TMP/$name-listen.log" &
    lpid=$!
    hm_track "$lpid"
    hm_wait_grep '^LISTENING$' "$out" 10

    port=$(hm_free_port 1) || hm_fail "no free port"
    # a 2 s watchdog: the server pings every half of it; we count pings, not time them.
    NOTIFY_SOCKET=$sock WATCHDOG_USEC=2000000 hm_server "$name" "$port"
    spid=$HM_SERVER_PID

    hm_wait_grep '(^| )READY=1( |$)' "$out" 120
    # READY=1 promises a server that answers: no retry loop here.
    curl -sf -o /dev/null --max-time 10 "http://127.0.0.1:$port/v1/models" ||
        hm_fail "$name: READY=1 sent but /v1/models does not answer"
    # Two pings after READY=1 (the watchdog only runs once the service is up).
    for i in $(seq 1 100); do
        [ "$(sed -n '/READY=1/,$p' "$out" | grep -cE '(^| )WATCHDOG=1( |$)')" -ge 2 ] && break
        sleep 0.1
    done
    [ "$(sed -n '/READY=1/,$p' "$out" | grep -cE '(^| )WATCHDOG=1( |$)')" -ge 2 ] ||
        hm_fail "$name: fewer than 2 WATCHDOG=1 in 10 s with WATCHDOG_USEC=2000000"
    # STATUS= for systemctl status: what it serves, sent with READY=1 or after it
    sed -n '/READY=1/,$p' "$out" | grep -qE "(^| )STATUS=serving '[^']+': [0-9]+ running" ||
        hm_fail "$name: no STATUS=serving ... after READY=1: $(cat "$out")"

    kill -TERM "$spid"
    hm_wait_grep '(^| )STOPPING=1( |$)' "$out" 30
    hm_wait_exit "$spid" 60
    st=$HM_EXIT_STATUS
    [ "$st" = 0 ] || hm_fail "$name: exit status $st after SIGTERM, expected 0"
    kill -TERM "$lpid" 2> /dev/null
    wait "$lpid" 2> /dev/null

    # Order: READY=1 once, pings after it, STOPPING=1 once and last of the three.
    ready=$(grep -nE '(^| )READY=1( |$)' "$out" | cut -d: -f1)
    stop=$(grep -nE '(^| )STOPPING=1( |$)' "$out" | cut -d: -f1)
    wd=$(grep -nE '(^| )WATCHDOG=1( |$)' "$out" | cut -d: -f1 | tail -n 1)
    [ "$(echo "$ready" | wc -l)" = 1 ] || hm_fail "$name: READY=1 sent more than once: $(cat "$out")"
    [ "$(echo "$stop" | wc -l)" = 1 ] || hm_fail "$name: STOPPING=1 sent more than once: $(cat "$out")"
    [ "$ready" -lt "$stop" ] || hm_fail "$name: STOPPING=1 before READY=1: $(cat "$out")"
    [ "$ready" -lt "$wd" ] || hm_fail "$name: no WATCHDOG=1 after READY=1: $(cat "$out")"
    # a ping may race with the SIGTERM handler, but READY=1 must never follow STOPPING=1
    sed -n "$((stop + 1)),\$p" "$out" | grep -qE '(^| )READY=1( |$)' &&
        hm_fail "$name: READY=1 after STOPPING=1"
    sed -n "$stop,\$p" "$out" | grep -qE '(^| )STATUS=draining: ' ||
        hm_fail "$name: no STATUS=draining with STOPPING=1: $(cat "$out")"
    hm_log "$name: $(grep -c . "$out") datagrams: READY=1 line $ready, STOPPING=1 line $stop, ok"
}

# A filesystem socket, as systemd uses (/run/systemd/notify), and an abstract one ("@...").
run_case path "$TMP/notify.sock"
run_case abstract "@hm-notify-test-$$"

# An unusable model is a configuration error: exit 78 so that Restart=on-failure with
# RestartPreventExitStatus=78 does not restart it, and no READY=1.
"$LISTEN" --listen "@hm-notify-bad-$$" 60 > "$TMP/bad.notify" 2> /dev/null &
lpid=$!
hm_track "$lpid"
hm_wait_grep '^LISTENING$' "$TMP/bad.notify" 10
echo "not a model" > "$TMP/bad.gguf"
port=$(hm_free_port 2) || hm_fail "no free port"
NOTIFY_SOCKET="@hm-notify-bad-$$" "$BLD/hybridmoe-server" --model "$TMP/bad.gguf" \
    --host 127.0.0.1 --port "$port" > "$TMP/bad.log" 2>&1 &
spid=$!
hm_track "$spid"
hm_wait_exit "$spid" 60
st=$HM_EXIT_STATUS
[ "$st" = 78 ] || hm_fail "bad model: exit status $st, expected 78 (EX_CONFIG)"
sleep 0.3
grep -qE '(^| )READY=1( |$)' "$TMP/bad.notify" && hm_fail "bad model: READY=1 was sent"
hm_log "bad model: exit 78, no READY=1"
echo "PASS: sd_notify protocol"
