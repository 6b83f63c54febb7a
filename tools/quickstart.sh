#!/bin/sh
# README command 1: install what is needed, build, and start hybridmoe-server on
# 127.0.0.1:8080 (PORT overrides) with the embedded default model.
#
# The server runs in the background (log: hybridmoe-server.log, pid: hybridmoe-server.pid in
# the source tree); the script returns once it answers, so the README's next line, a curl,
# works at once. Running it again restarts the server. Stop it with
#   kill "$(cat hybridmoe-server.pid)"
# `tools/quickstart.sh --foreground [server options]` runs it in the foreground instead.
set -eu
cd "$(dirname "$0")/.."
tools/install-deps.sh
tools/build.sh
# the trained model when the source tree has one, else the generated tiny model
if [ -f models/default.gguf ]; then
    MODEL=models/default.gguf
else
    MODEL=models/tiny.gguf
fi
PORT=${PORT:-8080}
URL="http://127.0.0.1:$PORT"
if [ "${1:-}" = "--foreground" ]; then
    shift
    echo "quickstart: starting hybridmoe-server on $URL with $MODEL"
    exec ./hybridmoe-server --model "$MODEL" --host 127.0.0.1 --port "$PORT" "$@"
fi
# stop the server a previous run started
if [ -f hybridmoe-server.pid ]; then
    old=$(cat hybridmoe-server.pid)
    if kill -0 "$old" 2>/dev/null; then
        kill "$old" 2>/dev/null || true
        i=0
        while kill -0 "$old" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    fi
    rm -f hybridmoe-server.pid
fi
setsid nohup ./hybridmoe-server --model "$MODEL" --host 127.0.0.1 --port "$PORT" "$@" \
    > hybridmoe-server.log 2>&1 < /dev/null &
echo $! > hybridmoe-server.pid
i=0
until curl -sf -o /dev/null "$URL/health"; do
    if ! kill -0 "$(cat hybridmoe-server.pid)" 2>/dev/null || [ $i -ge 600 ]; then
        echo "quickstart: the server did not start; its log (hybridmoe-server.log):" >&2
        tail -20 hybridmoe-server.log >&2
        exit 1
    fi
    sleep 0.1
    i=$((i + 1))
done
echo "quickstart: hybridmoe-server is serving $MODEL on $URL (pid $(cat hybridmoe-server.pid)," \
    "log hybridmoe-server.log); stop it with: kill \$(cat hybridmoe-server.pid)"
