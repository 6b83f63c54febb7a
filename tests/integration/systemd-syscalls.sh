#!/bin/bash
# systemd-syscalls.sh - the real server, traced with strace through startup, a streaming and a
# plain completion, /metrics and a SIGTERM drain, stays inside the sandbox of
# systemd/hybridmoe.service: every system call is allowed by its SystemCallFilter= lines (or
# is on the short list below of calls whose EPERM is harmless), no memory is mapped writable
# and executable (MemoryDenyWriteExecute=), sockets are AF_UNIX/AF_INET/AF_INET6 only
# (RestrictAddressFamilies=), and nothing under /proc but the process's own files is opened
# (ProcSubset=pid). This checks the unit without systemd running as PID 1.
set -u
. "$(dirname "$0")/deploy-lib.sh"

command -v strace > /dev/null || hm_skip "strace not installed"
command -v systemd-analyze > /dev/null || hm_skip "systemd-analyze not installed"
command -v curl > /dev/null || hm_skip "curl not installed"
[ -x "$BLD/hybridmoe-server" ] || hm_skip "no $BLD/hybridmoe-server"
[ -f "$HM_MODEL" ] || hm_skip "no $HM_MODEL"
# a sanitizer runtime makes system calls of its own (and LeakSanitizer refuses to run traced);
# gcc links it as a shared library, clang statically (so look for its symbols too)
if ldd "$BLD/hybridmoe-server" 2> /dev/null | grep -qE 'lib(asan|ubsan|tsan)' ||
    grep -qaE '__(asan|tsan|ubsan|msan)_[a-z_]+' "$BLD/hybridmoe-server"; then
    hm_skip "sanitizer build: its runtime's system calls are not the server's"
fi
# strace needs ptrace, which containers may forbid
strace -f -qq -o /dev/null true 2> /dev/null || hm_skip "strace cannot trace here"

# Calls that the filter denies with EPERM (SystemCallErrorNumber=) and whose failure is
# harmless: OpenBLAS's mbind(MPOL_PREFERRED) on its buffers ignores the result.
TOLERATED="mbind"

UNIT="$SRC/systemd/hybridmoe.service.in"
# ---- the allowed set, from the unit's own SystemCallFilter= lines ----
systemd-analyze syscall-filter --no-pager > "$TMP/groups.txt" 2>&1 || hm_fail "systemd-analyze syscall-filter"
expand() { # GROUP-OR-CALL...: prints the calls, nested groups expanded
    awk -v want="$*" '
        BEGIN { n = split(want, w, " "); for (i = 1; i <= n; i++) todo[w[i]] = 1 }
        /^@/ { g = $1; next }
        /^ +#/ || /^$/ { next }
        { members[g] = members[g] " " $1 }
        END {
            do {
                changed = 0
                for (x in todo) if (x ~ /^@/ && !(x in done)) {
                    done[x] = 1; changed = 1
                    m = split(members[x], y, " "); for (i = 1; i <= m; i++) todo[y[i]] = 1
                }
            } while (changed)
            for (x in todo) if (x !~ /^@/) print x
        }' "$TMP/groups.txt" | sort -u
}
allow=$(sed -n 's/^SystemCallFilter=\([^~].*\)$/\1/p' "$UNIT" | tr '\n' ' ')
deny=$(sed -n 's/^SystemCallFilter=~\(.*\)$/\1/p' "$UNIT" | tr '\n' ' ')
[ -n "$allow" ] || hm_fail "no SystemCallFilter= allow list in the unit"
expand $allow > "$TMP/allow.txt"
expand $deny > "$TMP/deny.txt"
comm -23 "$TMP/allow.txt" "$TMP/deny.txt" > "$TMP/allowed.txt"
hm_log "filter: $allow minus $deny: $(wc -l < "$TMP/allowed.txt") calls"

# ---- one server life under strace ----
port=$(hm_free_port 3) || hm_fail "no free port"
strace -f -qq -o "$TMP/trace.txt" "$BLD/hybridmoe-server" --model "$HM_MODEL" --host 127.0.0.1 \
    --port "$port" > "$TMP/server.log" 2>&1 &
spid=$!
hm_track "$spid"
hm_wait_http "http://127.0.0.1:$port/health" 120 "$spid"
# the traced server, so that the exit trap can end it even if strace is gone
for i in $(seq 1 50); do
    server=$(pgrep -P "$spid" | head -n 1)
    [ -n "$server" ] && break
    sleep 0.1
done
[ -n "$server" ] || hm_fail "no server process under strace $spid"
hm_track "$server"
curl -sf --max-time 60 "http://127.0.0.1:$port/v1/completions" -H 'Content-Type: application/json' \
    -d '{"prompt": "Hello", "max_tokens": 4}' > /dev/null || hm_fail "completion failed"
curl -sfN --max-time 60 "http://127.0.0.1:$port/v1/completions" -H 'Content-Type: application/json' \
    -d '{"prompt": "Hello", "max_tokens": 4, "stream": true}' > /dev/null || hm_fail "stream failed"
curl -sf --max-time 10 "http://127.0.0.1:$port/metrics" > /dev/null || hm_fail "/metrics failed"
# signal the server itself (strace would just detach); strace exits with its status
kill -TERM "$server"
hm_wait_exit "$spid" 60
[ "$HM_EXIT_STATUS" = 0 ] || hm_fail "server under strace: exit $HM_EXIT_STATUS"

# The first exec is strace starting the server; count from there.
sed -n '/execve(.*hybridmoe-server/,$p' "$TMP/trace.txt" | tail -n +2 > "$TMP/after-exec.txt"
sed -n 's/^[0-9]* *\(<\.\.\. \)\{0,1\}\([a-z_0-9]*\)[( ].*/\2/p' "$TMP/after-exec.txt" |
    sort -u > "$TMP/used.txt"
[ -s "$TMP/used.txt" ] || hm_fail "no system calls parsed from the trace"
bad=""
for c in $(comm -23 "$TMP/used.txt" "$TMP/allowed.txt"); do
    case " $TOLERATED " in *" $c "*) hm_log "tolerated (EPERM under the unit): $c" ;; *) bad="$bad $c" ;; esac
done
[ -z "$bad" ] || hm_fail "system calls outside the unit's SystemCallFilter:$bad"
hm_log "$(wc -l < "$TMP/used.txt") distinct system calls, all allowed"

# MemoryDenyWriteExecute: no W+X mapping, no mprotect that adds PROT_EXEC
grep -E 'PROT_WRITE\|PROT_EXEC|PROT_EXEC\|PROT_WRITE|mprotect\(.*PROT_EXEC|pkey_mprotect' \
    "$TMP/after-exec.txt" && hm_fail "writable+executable memory (MemoryDenyWriteExecute=yes)"
# RestrictAddressFamilies
grep -E '(^| )socket\(' "$TMP/after-exec.txt" | grep -vE 'socket\(AF_(UNIX|INET|INET6),' &&
    hm_fail "socket family outside RestrictAddressFamilies="
# ProcSubset=pid: only /proc/self, /proc/thread-self and /proc/<pid>
grep -oE 'open(at)?\([^"]*"/proc/[^"]*"' "$TMP/after-exec.txt" |
    grep -vE '"/proc/(self|thread-self|[0-9]+)(/|")' && hm_fail "/proc access outside ProcSubset=pid"
echo "PASS: the server stays inside the unit's sandbox"
