#!/bin/bash
# deploy-install.sh - `make install` / `make uninstall` from the build tree with DESTDIR and
# overridden prefix, sysconfdir and systemdsystemunitdir: every file lands where it should, the
# units name the overridden paths, an existing (edited) config is never overwritten or removed,
# and uninstall leaves nothing else behind. Then an install without DESTDIR into a temp prefix
# is started with its installed config and model.
set -u
. "$(dirname "$0")/deploy-lib.sh"

[ -f "$BLD/Makefile" ] || hm_skip "no $BLD/Makefile"
[ -x "$BLD/hybridmoe-server" ] || hm_skip "no $BLD/hybridmoe-server"
command -v curl > /dev/null || hm_skip "curl not installed"
# a make run of our own, not a job of the make check that runs us
unset MAKEFLAGS MFLAGS MAKELEVEL MAKEOVERRIDES
MAKE=${MAKE:-make}

D="$TMP/dest"
VARS="prefix=/opt/hm sysconfdir=/etc/opt/hm systemdsystemunitdir=/opt/hm/lib/systemd/system"
run_make() { # TARGET LOGNAME [VARS...]
    local target=$1 log=$2
    shift 2
    "$MAKE" -s -C "$BLD" "$target" "$@" > "$TMP/$log.log" 2>&1 ||
        hm_fail "make $target $*: $(tail -n 20 "$TMP/$log.log")"
}

# ---- install into DESTDIR with overridden paths ----
# shellcheck disable=SC2086
run_make install install1 DESTDIR="$D" $VARS
for f in opt/hm/bin/hybridmoe-server opt/hm/bin/hybridmoe opt/hm/share/hybridmoe/default.gguf \
    opt/hm/lib/systemd/system/hybridmoe.service opt/hm/lib/systemd/system/hybridmoe@.service \
    opt/hm/share/doc/hybridmoe/deployment.md opt/hm/share/doc/hybridmoe/examples/nginx/hybridmoe.conf; do
    [ -f "$D/$f" ] || hm_fail "make install did not install /$f ($(cd "$D" && find . -type f))"
done
# the default model: the trained one when the source tree has it, else the tiny one
if [ -f "$SRC/models/default.gguf" ]; then want="$SRC/models/default.gguf"; else want="$BLD/models/tiny.gguf"; fi
cmp -s "$want" "$D/opt/hm/share/hybridmoe/default.gguf" || hm_fail "default.gguf is not $want"

U="$D/opt/hm/lib/systemd/system"
grep -qx 'ExecStart=/opt/hm/bin/hybridmoe-server --config /etc/opt/hm/hybridmoe/hybridmoe.conf' \
    "$U/hybridmoe.service" || hm_fail "hybridmoe.service: $(grep ExecStart "$U/hybridmoe.service")"
grep -qx 'ExecStart=/opt/hm/bin/hybridmoe-server --config /etc/opt/hm/hybridmoe/%i.conf --port %i' \
    "$U/hybridmoe@.service" || hm_fail "hybridmoe@.service: $(grep ExecStart "$U/hybridmoe@.service")"
grep -n '@[a-z]*@' "$U"/*.service && hm_fail "unsubstituted placeholders in the units"
grep -rlF "$D" "$U" && hm_fail "DESTDIR leaked into the units"

CONF="$D/etc/opt/hm/hybridmoe/hybridmoe.conf"
if [ -f "$SRC/etc/hybridmoe.conf" ]; then
    [ -f "$CONF" ] || hm_fail "make install did not install the config file"
    grep -rlF "$D" "$CONF" && hm_fail "DESTDIR leaked into the config file"
    # an operator's edit survives a reinstall and an uninstall
    echo "# edited by the operator" >> "$CONF"
    run_make install install2 DESTDIR="$D" $VARS
    grep -qx '# edited by the operator' "$CONF" || hm_fail "make install overwrote an edited config"
    run_make uninstall uninstall1 DESTDIR="$D" $VARS
    left=$(cd "$D" && find . -type f | sort)
    [ "$left" = "./etc/opt/hm/hybridmoe/hybridmoe.conf" ] ||
        hm_fail "after uninstall, expected only the edited config, found: $left"
    grep -qx '# edited by the operator' "$CONF" || hm_fail "make uninstall changed the edited config"
    # an untouched config is ours and goes with the rest
    rm -f "$CONF"
    run_make install install3 DESTDIR="$D" $VARS
    [ -f "$CONF" ] || hm_fail "make install did not install the config file again"
else
    hm_log "no etc/hybridmoe.conf in the source tree yet: config checks skipped"
fi
run_make uninstall uninstall2 DESTDIR="$D" $VARS
left=$(cd "$D" && find . -type f | sort)
[ -z "$left" ] || hm_fail "make uninstall left: $left"
hm_log "DESTDIR install/uninstall: ok"

# ---- a real install into a temp prefix, started from its installed config ----
P="$TMP/prefix"
run_make install install4 prefix="$P" systemdsystemunitdir="$P/lib/systemd/system"
port=$(hm_free_port 5) || hm_fail "no free port"
args=(--model "$P/share/hybridmoe/default.gguf" --host 127.0.0.1 --port "$port")
[ -f "$P/etc/hybridmoe/hybridmoe.conf" ] && args=(--config "$P/etc/hybridmoe/hybridmoe.conf" "${args[@]}")
"$P/bin/hybridmoe-server" "${args[@]}" > "$TMP/installed.log" 2>&1 &
pid=$!
hm_track "$pid"
hm_wait_http "http://127.0.0.1:$port/v1/models" 120 "$pid"
kill -TERM "$pid"
hm_wait_exit "$pid" 60
[ "$HM_EXIT_STATUS" = 0 ] || hm_fail "installed server: exit $HM_EXIT_STATUS after SIGTERM"
run_make uninstall uninstall3 prefix="$P" systemdsystemunitdir="$P/lib/systemd/system"
left=$(cd "$P" && find . -type f | sort)
[ -z "$left" ] || hm_fail "make uninstall (prefix) left: $left"
hm_log "prefix install, start, uninstall: ok"
echo "PASS: make install / uninstall"
