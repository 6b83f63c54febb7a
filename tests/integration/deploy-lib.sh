# shellcheck shell=bash disable=SC2034
# deploy-lib.sh - shell helpers for the deployment tests (sourced, not run).
#
# Sets SRC, BLD (from HM_SRCDIR / HM_BUILDDIR, else from this script's location and the current
# directory) and TMP (a private temp dir removed at exit), and tracks background processes so that
# every one is killed at exit, whatever happens. Exit 77 means "skipped" to automake.

SRC=${HM_SRCDIR:-$(cd "$(dirname "$0")/../.." && pwd)}
BLD=${HM_BUILDDIR:-$(pwd)}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/hm-deploy.XXXXXX")
HM_PIDS=""

hm_cleanup() {
    local p
    for p in $HM_PIDS; do
        kill -TERM "$p" 2>/dev/null || true
    done
    sleep 0.2
    for p in $HM_PIDS; do
        kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    rm -rf "$TMP"
}
trap hm_cleanup EXIT
trap 'exit 1' INT TERM HUP

hm_log() { echo "# $*"; }
hm_fail() {
    echo "FAIL: $*" >&2
    for f in "$TMP"/*.log; do
        [ -f "$f" ] || continue
        echo "---- $f (last 30 lines)" >&2
        tail -n 30 "$f" >&2
    done
    exit 1
}
hm_skip() { echo "SKIP: $*"; exit 77; }

# Remembers a background pid for the exit trap.
hm_track() { HM_PIDS="$HM_PIDS $1"; }

# Prints a TCP port on 127.0.0.1 that nobody listens on, from a range that depends on $$.
# The range 20000-31999 stays below Linux's ephemeral ports (32768-60999), so an outgoing
# connection of another test cannot be holding the port we pick.
hm_free_port() {
    local p=$((20000 + ($$ * 7 + ${1:-0} * 101) % 11800)) i
    for i in $(seq 1 200); do
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
        p=$((p + 1))
    done
    return 1
}

# The model the tests serve: the build's tiny model.
HM_MODEL="$BLD/models/tiny.gguf"

# hm_server NAME PORT [ARGS...]: starts hybridmoe-server on 127.0.0.1:PORT in the background,
# output in $TMP/NAME.log; sets HM_SERVER_PID. Skips the test if there is no server or model.
hm_server() {
    local name=$1 port=$2
    shift 2
    [ -x "$BLD/hybridmoe-server" ] || hm_skip "no $BLD/hybridmoe-server"
    [ -f "$HM_MODEL" ] || hm_skip "no $HM_MODEL (make builds it)"
    "$BLD/hybridmoe-server" --model "$HM_MODEL" --host 127.0.0.1 --port "$port" "$@" \
        > "$TMP/$name.log" 2>&1 &
    HM_SERVER_PID=$!
    hm_track "$HM_SERVER_PID"
}

# hm_wait_http URL SECONDS [PID]: waits until URL answers 200 (fails early if PID exits).
hm_wait_http() {
    local url=$1 limit=$2 pid=${3:-} i
    for i in $(seq 1 $((limit * 10))); do
        if curl -sf -o /dev/null --max-time 2 "$url"; then
            return 0
        fi
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
            hm_fail "process $pid exited while waiting for $url"
        fi
        sleep 0.1
    done
    hm_fail "$url not answering after ${limit}s"
}

# hm_wait_exit PID SECONDS: waits for a background child to exit; sets HM_EXIT_STATUS.
# (Not for use in $(...): a subshell cannot wait for its parent's children.)
hm_wait_exit() {
    local pid=$1 limit=$2 i
    for i in $(seq 1 $((limit * 10))); do
        if ! kill -0 "$pid" 2>/dev/null; then
            wait "$pid"
            HM_EXIT_STATUS=$?
            return 0
        fi
        sleep 0.1
    done
    hm_fail "process $pid still running after ${limit}s"
}

# hm_wait_grep PATTERN FILE SECONDS: waits until FILE has a line matching PATTERN (grep -E).
hm_wait_grep() {
    local pat=$1 file=$2 limit=$3 i
    for i in $(seq 1 $((limit * 10))); do
        if grep -qE "$pat" "$file" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    hm_fail "no line matching '$pat' in $file after ${limit}s"
}

# Substitutes the unit placeholders like systemd/deploy.am does, with chosen paths.
hm_subst_unit() { # IN OUT BINDIR SYSCONFDIR
    sed -e "s|@bindir@|$3|g" -e "s|@sysconfdir@|$4|g" -e "s|@pkgdatadir@|/usr/share/hybridmoe|g" \
        -e "s|@docdir@|/usr/share/doc/hybridmoe|g" -e "s|@localstatedir@|/var|g" "$1" > "$2"
}
