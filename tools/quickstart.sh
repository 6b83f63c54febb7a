#!/bin/sh
# README command 1: install what is needed, build, and start hybridmoe-server on
# 127.0.0.1:8080 with the embedded default model.
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
echo "quickstart: starting hybridmoe-server on http://127.0.0.1:${PORT:-8080} with $MODEL"
exec ./hybridmoe-server --model "$MODEL" --host 127.0.0.1 --port "${PORT:-8080}" "$@"
