#!/bin/bash
# systemd-boot-check.sh - runs the installed units under a real systemd and checks what the
# unit files promise. Needs root and Debian's package mirror (debootstrap); takes about two
# minutes (one more the first time). Not part of `make check`: it boots an OS.
#
#   tools/systemd-boot-check.sh BUILDDIR [ROOT]
#
# BUILDDIR is a configured and built tree (default prefix /usr/local). ROOT (default
# /var/tmp/hm-systemd-root) receives a minimal Debian 12 made by debootstrap once and reused;
# `make install DESTDIR=ROOT` puts hybridmoe into it. systemd 252 then boots in ROOT as PID 1 of
# new PID, mount and network namespaces (its own loopback, so ports of the host do not
# matter), and the checks talk to it through nsenter:
#   1. `systemctl start hybridmoe` returns once the server sent READY=1 (Type=notify); /health
#      and a completion answer; `systemctl status` shows the server's STATUS= line;
#   2. the watchdog (WatchdogSec=30) does not fire on a healthy server: same PID after 35 s;
#   3. `systemctl stop` with requests in flight: every one completes, exit 0, Result=success;
#   4. a crash (SIGSEGV) is restarted; a bad configuration (exit 78) is not;
#   5. the template: hybridmoe@8081 serves on port 8081 with /etc-style 8081.conf.
# Where the machine forbids user namespaces (some sandboxes do; Debian 12 itself allows them),
# a drop-in sets PrivateUsers=no and the script says so. The BPF-based options
# (IPAddressDeny, SocketBindDeny) need the unified cgroup hierarchy; on a host without it
# systemd ignores them and the script reports that too.
set -euo pipefail
[ $# -ge 1 ] || { sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2; }
bld=$(cd "$1" && pwd)
root=${2:-/var/tmp/hm-systemd-root}
[ "$(id -u)" = 0 ] || { echo "systemd-boot-check: needs root" >&2; exit 2; }
[ -x "$bld/hybridmoe-server" ] || { echo "systemd-boot-check: build $bld first" >&2; exit 2; }

fails=0
ok() { echo "ok: $*"; }
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }

if [ ! -x "$root/lib/systemd/systemd" ]; then
    command -v debootstrap >/dev/null ||
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    echo "== debootstrap bookworm into $root"
    rm -rf "$root"
    debootstrap --variant=minbase \
        --include=systemd,systemd-sysv,dbus,curl,libmicrohttpd12,libjansson4,libuv1,libopenblas0-pthread \
        bookworm "$root" http://deb.debian.org/debian >"$root.debootstrap.log" 2>&1 ||
        { tail -20 "$root.debootstrap.log"; exit 1; }
fi
echo "== make install DESTDIR=$root"
make -C "$bld" -s install DESTDIR="$root" >/dev/null
rm -rf "$root/etc/systemd/system/hybridmoe.service.d" "$root/etc/systemd/system/hybridmoe@.service.d"
rm -f "$root/usr/local/etc/hybridmoe/8081.conf"
cp "$root/usr/local/etc/hybridmoe/hybridmoe.conf" "$root/usr/local/etc/hybridmoe/8081.conf"
echo hm-systemd-check >"$root/etc/hostname"
[ -s "$root/etc/machine-id" ] || chroot "$root" systemd-machine-id-setup >/dev/null
# nothing a container has no use for
for u in getty@tty1.service console-getty.service systemd-udevd.service \
         systemd-udev-trigger.service systemd-logind.service systemd-timesyncd.service \
         apt-daily.timer apt-daily-upgrade.timer e2scrub_reap.service; do
    ln -sf /dev/null "$root/etc/systemd/system/$u"
done

# Boot. ROOT is bind-mounted on itself so that it is a mount point (systemd's per-service
# mount namespaces need one).
unshare -fpmn --propagation private sh -c "
    mount --bind '$root' '$root' && mount -t proc proc '$root/proc' &&
    mount --rbind /sys '$root/sys' && mount --rbind /dev '$root/dev' &&
    mount -t tmpfs tmpfs '$root/run' && mount -t tmpfs tmpfs '$root/tmp' &&
    cd '$root' && exec chroot . env container=other /lib/systemd/systemd --system" \
    >"$root.boot.log" 2>&1 &
boot=$!
pid1=
cleanup() {
    # PID 1 of the namespace going away takes every process of it along
    [ -n "$pid1" ] && kill -9 "$pid1" 2>/dev/null
    kill -9 "$boot" 2>/dev/null
    wait "$boot" 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 100); do
    pid1=$(pgrep -P "$boot" -f 'systemd --system' || true)
    [ -n "$pid1" ] && break
    sleep 0.1
done
[ -n "$pid1" ] || { echo "systemd did not start"; cat "$root.boot.log"; exit 1; }
in_os() { nsenter -t "$pid1" -m -p -n chroot "$root" "$@"; }
in_net() { nsenter -t "$pid1" -n "$@"; }    # host binaries on the booted OS's network
in_net ip link set lo up
state=
for _ in $(seq 300); do
    state=$(in_os systemctl is-system-running 2>/dev/null || true)
    case $state in running|degraded) break ;; esac
    sleep 0.1
done
echo "== systemd $(in_os systemctl --version | head -1 | cut -d' ' -f2) is PID 1 ($state)"
if ! in_os systemd-run --wait -q -p PrivateUsers=yes /bin/true 2>/dev/null; then
    echo "note: this machine forbids user namespaces to the booted OS: PrivateUsers=no here"
    for d in hybridmoe.service.d hybridmoe@.service.d; do
        mkdir -p "$root/etc/systemd/system/$d"
        printf '[Service]\nPrivateUsers=no\n' >"$root/etc/systemd/system/$d/no-userns.conf"
    done
    in_os systemctl daemon-reload
fi
prop() { in_os systemctl show -p "$2" --value "$1"; }
http() { in_net curl -s -o /dev/null -w '%{http_code}' "$@" || true; }
J='Content-Type: application/json'

# 1. start, READY=1, serve
if in_os systemctl start hybridmoe; then
    ok "systemctl start returned: $(prop hybridmoe ActiveState) (Type=$(prop hybridmoe Type))"
else
    bad "hybridmoe did not start"; in_os journalctl -u hybridmoe --no-pager | tail -20
fi
[ "$(http http://127.0.0.1:8080/health)" = 200 ] && ok "/health 200" || bad "/health"
sleep 1.5 # the status line follows the server's state within a second
case "$(prop hybridmoe StatusText)" in
serving*) ok "systemctl status shows: $(prop hybridmoe StatusText)" ;;
*) bad "StatusText: '$(prop hybridmoe StatusText)'" ;;
esac
[ "$(http -H "$J" -d '{"prompt":"ROMEO:","max_tokens":8}' http://127.0.0.1:8080/v1/completions)" = 200 ] &&
    ok "a completion" || bad "completion"

# 2. the watchdog keeps quiet while the server pings it
pid=$(prop hybridmoe MainPID)
sleep 35
[ "$(prop hybridmoe MainPID)" = "$pid" ] && [ "$(prop hybridmoe NRestarts)" = 0 ] &&
    ok "watchdog: same process after 35 s (WatchdogSec=$(prop hybridmoe WatchdogUSec))" ||
    bad "watchdog: restarted"

# 3. stop drains the requests in flight
codes=$(mktemp)
clients=()
for _ in 1 2 3 4 5 6; do
    http -H "$J" -d '{"prompt":"ROMEO:","max_tokens":250,"ignore_eos":true,"n":2}' \
        http://127.0.0.1:8080/v1/completions >>"$codes" &
    clients+=($!)
done
sleep 0.1
in_os systemctl stop hybridmoe
wait "${clients[@]}" || true
n200=$(grep -o 200 "$codes" | wc -l)
rm -f "$codes"
inflight=$(in_os journalctl -u hybridmoe --no-pager | sed -n 's/.*draining: \([0-9]*\) generation.*/\1/p' | tail -1)
[ "${inflight:-0}" -gt 0 ] && [ "$n200" = 6 ] &&
    ok "stop: $inflight requests in flight when it came, all 6 completed (200)" ||
    bad "stop: ${inflight:-0} in flight, $n200 of 6 completed"
[ "$(prop hybridmoe Result)" = success ] && [ "$(prop hybridmoe ExecMainStatus)" = 0 ] &&
    ok "stop: exit 0, Result=success" || bad "stop: $(prop hybridmoe Result) $(prop hybridmoe ExecMainStatus)"

# 4. a crash is restarted, a bad configuration is not
in_os systemctl start hybridmoe
in_os systemctl kill -s SEGV --kill-whom=main hybridmoe
for _ in $(seq 100); do
    [ "$(prop hybridmoe NRestarts)" = 1 ] && [ "$(prop hybridmoe ActiveState)" = active ] && break
    sleep 0.1
done
[ "$(prop hybridmoe NRestarts)" = 1 ] && [ "$(http http://127.0.0.1:8080/health)" = 200 ] &&
    ok "SIGSEGV: restarted, serving again" || bad "SIGSEGV: not restarted"
in_os systemctl start hybridmoe@8082 2>/dev/null || true  # no 8082.conf: exit 78
sleep 3
[ "$(prop hybridmoe@8082 ExecMainStatus)" = 78 ] && [ "$(prop hybridmoe@8082 NRestarts)" = 0 ] &&
    ok "bad configuration: exit 78, not restarted" ||
    bad "bad configuration: status $(prop hybridmoe@8082 ExecMainStatus), restarts $(prop hybridmoe@8082 NRestarts)"

# 5. the template
in_os systemctl start hybridmoe@8081 && [ "$(http http://127.0.0.1:8081/health)" = 200 ] &&
    ok "hybridmoe@8081 serves on port 8081" || bad "hybridmoe@8081"
in_os systemctl stop hybridmoe@8081 hybridmoe

# the BPF filters: enforced only with the unified cgroup hierarchy
if [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]; then
    echo "note: unified cgroup hierarchy: IPAddressDeny and SocketBindDeny are in force"
else
    echo "note: no unified cgroup hierarchy here: systemd cannot apply IPAddressDeny/SocketBindDeny"
fi
[ $fails = 0 ] && echo "systemd-boot-check: all checks passed" ||
    echo "systemd-boot-check: $fails check(s) failed"
[ $fails = 0 ]
