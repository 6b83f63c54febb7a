# rel-lib.sh - sourced by the reliability tests tests/integration/rel-*.sh.
#
# Starts hybridmoe-server on a free loopback port with the tiny model, talks to it with
# curl, and kills every process it started when the test exits (trap). Each test is
# bounded by a watchdog (rel_watchdog SECONDS). Short versions run under make check;
# HM_LONG_TESTS=1 selects the long ones (minutes). Exit 77 = skipped (automake).
set -u
: "${HM_BUILDDIR:=$(cd "$(dirname "$0")/../.." && pwd)}"
: "${HM_SRCDIR:=$(cd "$(dirname "$0")/../.." && pwd)}"
REL_SERVER=${HM_SERVER:-$HM_BUILDDIR/hybridmoe-server}
REL_MODEL=${HM_MODEL:-$HM_BUILDDIR/models/tiny.gguf}
REL_LONG=${HM_LONG_TESTS:-0}
REL_NAME=$(basename "$0" .sh)
REL_TMP=$(mktemp -d "${TMPDIR:-/tmp}/hm-$REL_NAME.XXXXXX")
REL_PIDS=()          # every background process we started (servers, clients, watchdog)
REL_FAILS=0
SRV_PID=
PORT=
URL=
export OPENBLAS_NUM_THREADS=1
# sanitizer builds: a server that exits normally reports leaks and errors into its log,
# which rel_done turns into a failure (SIGKILLed servers report nothing)

# Kills PID and all its descendants (found through /proc; the parent first, so that a
# subshell cannot act on the death of its child, e.g. the watchdog's sleep).
rel_kill_tree() {
    local c kids
    kids=$(cat /proc/"$1"/task/*/children 2>/dev/null)
    kill -9 "$1" 2>/dev/null
    for c in $kids; do
        rel_kill_tree "$c"
    done
}

rel_cleanup() {
    local p
    trap '' INT TERM HUP # finish cleaning up whatever arrives now
    for p in "${REL_PIDS[@]}" $(jobs -p); do
        rel_kill_tree "$p"
    done
    wait 2>/dev/null
    rm -rf "$REL_TMP"
}
trap rel_cleanup EXIT
trap 'echo "$REL_NAME: interrupted"; exit 1' INT TERM HUP

rel_log() { echo "$REL_NAME: $*"; }
rel_skip() { echo "SKIP: $REL_NAME: $*"; exit 77; }
rel_fail() { echo "FAIL: $REL_NAME: $*"; REL_FAILS=$((REL_FAILS + 1)); }
rel_check() { # rel_check DESCRIPTION COMMAND... : fails (and goes on) unless COMMAND succeeds
    local what=$1
    shift
    if "$@"; then echo "ok: $what"; else rel_fail "$what"; fi
}
rel_done() {
    local f
    for f in "$REL_TMP"/server*.log; do
        [ -f "$f" ] || continue
        if grep -q 'ERROR: AddressSanitizer\|ERROR: LeakSanitizer\|runtime error:' "$f"; then
            rel_fail "sanitizer report in $(basename "$f"):"
            grep -A 30 -m 1 'ERROR: AddressSanitizer\|ERROR: LeakSanitizer\|runtime error:' "$f"
        fi
    done
    if [ "$REL_FAILS" -gt 0 ]; then
        echo "$REL_NAME: $REL_FAILS check(s) failed; server logs:"
        tail -n 30 "$REL_TMP"/server*.log 2>/dev/null
        exit 1
    fi
    rel_log "all checks passed"
    exit 0
}

# Kills this test (and so, through the trap, everything it started) after N seconds.
rel_watchdog() {
    local me=$$
    ( sleep "$1"; echo "FAIL: $REL_NAME: watchdog: still running after $1 s" >&2
      kill -TERM "$me" ) &
    REL_PIDS+=($!)
    disown $! # no "Killed" job notice when the cleanup ends it
}

rel_need() {
    [ -x "$REL_SERVER" ] || rel_skip "no server binary $REL_SERVER"
    [ -f "$REL_MODEL" ] || rel_skip "no model $REL_MODEL"
    command -v curl >/dev/null || rel_skip "curl not installed"
}

# rel_start [server flags...]: starts a server (port 0, loopback) and waits until /health
# says ok. Sets SRV_PID, PORT, URL, SRV_LOG. Returns 1 if it did not become ready.
REL_NSERVERS=0
rel_start() {
    REL_NSERVERS=$((REL_NSERVERS + 1))
    SRV_LOG=$REL_TMP/server$REL_NSERVERS.log
    "$REL_SERVER" --model "$REL_MODEL" --host 127.0.0.1 --port 0 "$@" >"$SRV_LOG" 2>&1 &
    SRV_PID=$!
    REL_PIDS+=("$SRV_PID")
    rel_wait_ready 60
}

# Waits (up to N s) for the log line with the port and then for /health 200.
rel_wait_ready() {
    local i deadline=$((SECONDS + $1))
    PORT=
    while [ $SECONDS -lt $deadline ]; do
        if [ -z "$PORT" ]; then
            PORT=$(sed -n 's|.*listening on \(http://\)\{0,1\}127\.0\.0\.1:\([0-9][0-9]*\).*|\2|p' \
                   "$SRV_LOG" | head -n 1)
        fi
        if [ -n "$PORT" ]; then
            URL=http://127.0.0.1:$PORT
            [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$URL/health")" = 200 ] &&
                return 0
        fi
        kill -0 "$SRV_PID" 2>/dev/null || { rel_log "server exited early"; cat "$SRV_LOG"; return 1; }
        sleep 0.05
    done
    rel_log "server not ready after $1 s"
    return 1
}

# rel_stop_server [SIGNAL]: signals the server and waits for it; SRV_RC = its exit status
# (128+N for a signal). Not in $(...): the server must be this shell's child.
SRV_RC=
rel_stop_server() {
    kill -"${1:-TERM}" "$SRV_PID" 2>/dev/null
    wait "$SRV_PID" 2>/dev/null
    SRV_RC=$?
}

# rel_req OUTFILE [curl args...]: one request; prints the status code (000 = no response).
# OUTFILE gets the body, OUTFILE.h the headers.
rel_req() {
    local out=$1
    shift
    curl -s -o "$out" -D "$out.h" -w '%{http_code}' --max-time 30 "$@"
}

# rel_post_json OUTFILE PATH JSON: POST with Content-Type application/json.
rel_post_json() {
    rel_req "$1" -H 'Content-Type: application/json' --data-binary "$3" "$URL$2"
}

# rel_metric NAME: the value of an unlabelled metric from /metrics ("" if absent).
rel_metric() {
    curl -s --max-time 5 "$URL/metrics" | awk -v n="$1" '$1 == n { print $2; exit }'
}

# rel_check_rss WHAT BEFORE_KIB AFTER_KIB LIMIT_KIB: growth below the limit. Skipped in
# sanitizer builds (ASan's quarantine holds freed memory; LeakSanitizer checks leaks at exit).
REL_SANITIZED=0
grep -q '__asan_init\|__ubsan_handle' "$REL_SERVER" 2>/dev/null && REL_SANITIZED=1
rel_check_rss() {
    if [ "$REL_SANITIZED" = 1 ]; then
        echo "skipped (sanitizer build): $1 ($2 -> $3 KiB)"
        return 0
    fi
    rel_check "$1" test $(($3 - $2)) -lt "$4"
}

# rel_rss_kb PID: resident set size in KiB.
rel_rss_kb() {
    awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null
}

# rel_is_error_body FILE [CODE]: an OpenAI error object, with this code when given.
rel_is_error_body() {
    local f=$1 code=${2:-}
    grep -q '^{"error":{"message":"[^"]' "$f" || return 1
    grep -q '"type":"[a-z_]*"' "$f" || return 1
    [ -z "$code" ] || grep -q "\"code\":\"$code\"" "$f"
}

# rel_is_completion FILE: a well-formed non-streaming completion or chat completion.
rel_is_completion() {
    local f=$1
    grep -q '^{"id":"\(cmpl\|chatcmpl\)-' "$f" || return 1
    grep -q '"choices":\[{' "$f" || return 1
    grep -q '"finish_reason":"\(stop\|length\)"' "$f" || return 1
    grep -q '"usage":{"prompt_tokens":[0-9]*,"completion_tokens":[0-9]*' "$f" || return 1
    [ "$(tail -c 2 "$f")" = "}}" ] || [ "$(tail -c 1 "$f")" = "}" ]
}

# rel_is_stream FILE: a complete SSE stream: data: lines of JSON, ending with [DONE].
rel_is_stream() {
    local f=$1
    grep -q '^data: {"id":"' "$f" || return 1
    [ "$(grep -c '^data: \[DONE\]$' "$f")" = 1 ] || return 1
    [ "$(grep -v '^data: ' "$f" | grep -v '^: ' | grep -vc '^$')" = 0 ]
}
