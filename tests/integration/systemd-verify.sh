#!/bin/bash
# systemd-verify.sh - the shipped units pass `systemd-analyze verify`, keep their hardening score,
# and every option has a comment of its own saying why (tests for systemd/*.service.in).
set -u
. "$(dirname "$0")/deploy-lib.sh"

command -v systemd-analyze > /dev/null || hm_skip "systemd-analyze not installed"
[ -x "$BLD/hybridmoe-server" ] || hm_skip "no $BLD/hybridmoe-server"

# Generated like `make` does, but ExecStart must name an existing binary for verify.
hm_subst_unit "$SRC/systemd/hybridmoe.service.in" "$TMP/hybridmoe.service" "$BLD" /etc
hm_subst_unit "$SRC/systemd/hybridmoe@.service.in" "$TMP/hybridmoe@.service" "$BLD" /etc
# A template is verified through one of its instances.
cp "$TMP/hybridmoe@.service" "$TMP/hybridmoe@8081.service"

for u in hybridmoe.service hybridmoe@8081.service; do
    # verify exits 0 also for some warnings (unknown keys, bad values): any output fails too
    out=$(cd "$TMP" && SYSTEMD_LOG_LEVEL=notice systemd-analyze verify "./$u" 2>&1)
    rc=$?
    [ $rc -eq 0 ] || hm_fail "systemd-analyze verify $u: exit $rc: $out"
    [ -z "$out" ] || hm_fail "systemd-analyze verify $u printed: $out"
    hm_log "verify $u: ok"
done

# The hardening score must not regress (0 = best, 10 = worst). --offline needs systemd >= 250.
for u in hybridmoe.service hybridmoe@8081.service; do
    out=$(cd "$TMP" && systemd-analyze security --offline=yes --no-pager "./$u" 2>&1)
    score=$(printf '%s\n' "$out" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
    [ -n "$score" ] || { hm_log "systemd-analyze security --offline unsupported: $out"; continue; }
    hm_log "security $u: exposure $score"
    awk -v s="$score" 'BEGIN { exit !(s <= 1.5) }' || hm_fail "$u exposure $score > 1.5: $out"
done

# Options the deployment issue requires, with the values it requires.
for want in 'Type=notify' 'Restart=on-failure' 'RestartPreventExitStatus=78' 'WatchdogSec=30' \
    'DynamicUser=yes' 'ProtectSystem=strict' 'ProtectHome=yes' 'PrivateTmp=yes' \
    'PrivateDevices=yes' 'NoNewPrivileges=yes' 'RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6' \
    'SystemCallFilter=@system-service' 'MemoryDenyWriteExecute=yes' 'LimitNOFILE=4096' \
    'CapabilityBoundingSet=' 'TimeoutStopSec=45'; do
    for u in hybridmoe.service hybridmoe@.service; do
        grep -qxF "$want" "$TMP/$u" || hm_fail "$u lacks the line '$want'"
    done
done
grep -q '^ExecStart=.* --config /etc/hybridmoe/hybridmoe.conf$' "$TMP/hybridmoe.service" ||
    hm_fail "hybridmoe.service: ExecStart without --config"
grep -q '^ExecStart=.* --config /etc/hybridmoe/%i.conf --port %i$' "$TMP/hybridmoe@.service" ||
    hm_fail "hybridmoe@.service: ExecStart without per-instance config and port"

# TimeoutStopSec must exceed the drain timeout the server uses by default (from its --help).
drain=$("$BLD/hybridmoe-server" --help 2>&1 | grep -E -- "--drain[-_]timeout" | sed -n 's/.*default: "\([0-9][0-9]*\)".*/\1/p' | head -n 1)
if [ -n "$drain" ]; then
    hm_log "default drain_timeout: ${drain}s"
    [ "$drain" -lt 45 ] || hm_fail "TimeoutStopSec=45 does not exceed drain_timeout $drain"
fi

# LimitNOFILE must leave room above max_connections (model, log, notify socket, epoll, pipes).
maxc=$("$BLD/hybridmoe-server" --help 2>&1 | grep -E -- "--max[-_]connections" |
    sed -n 's/.*default: "\([0-9][0-9]*\)".*/\1/p' | head -n 1)
nofile=$(sed -n 's/^LimitNOFILE=\([0-9]*\)$/\1/p' "$TMP/hybridmoe.service")
if [ -n "$maxc" ]; then
    [ "$nofile" -ge $((maxc + 64)) ] || hm_fail "LimitNOFILE=$nofile too close to max_connections $maxc"
fi

# Every Key=value line has a comment line right above it that says why (several lines of a
# block may explain one option; two options never share one comment).
for u in hybridmoe.service.in hybridmoe@.service.in; do
    awk -v f="$u" '
        /^#/ { commented = 1; next }
        /^[A-Za-z]+=/ { if (!commented) { print f ":" FNR ": no comment above: " $0; bad = 1 }
                        commented = 0; next }
        /^\[[A-Za-z]+\]$/ || /^$/ { commented = 0; next }
        { print f ":" FNR ": unexpected line: " $0; bad = 1 }
        END { exit bad }' "$SRC/systemd/$u" || hm_fail "$u: options without a comment"
done
echo "PASS: systemd units verified"
