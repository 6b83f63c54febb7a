#!/bin/sh
# Installs the Debian 12 packages hybridmoe needs to build, test and run.
# Idempotent and non-interactive; does nothing when everything is present.
set -eu
PKGS="build-essential autoconf automake libtool pkg-config git curl ca-certificates \
libmicrohttpd-dev libjansson-dev libuv1-dev libopenblas-dev check"
# extra packages for the test suite (integration and deployment tests)
if [ "${1:-}" = "--test" ]; then
    PKGS="$PKGS nginx-light systemd clang libclang-rt-14-dev valgrind wrk strace jq"
    # Node.js for the official openai client test: the machine may ship its own (newer) node
    # and npm outside dpkg, which Debian's npm package would conflict with.
    if ! command -v npm >/dev/null 2>&1; then
        PKGS="$PKGS nodejs npm"
    fi
fi
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "install-deps: missing packages:$missing (run as root or: sudo apt-get install$missing)" >&2
        exit 1
    fi
    echo "install-deps: installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # nginx must not start on port 80 during install: tests start their own
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt-get install -y -qq --no-install-recommends $missing
fi
