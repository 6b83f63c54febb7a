#!/bin/sh
# cmd-generate.sh - `hybridmoe generate` and `hybridmoe perplexity` on the tiny model:
# determinism, --logits-out, agreement between batch sizes, exit statuses.
set -u
b=${HM_BUILDDIR:-.}
hm="$b/hybridmoe"
model="$b/models/tiny.gguf"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
ck() { # ck DESCRIPTION: the previous command's status was expected
    if [ "$1" != "$2" ]; then
        echo "FAIL: $3 (status $1, expected $2)"
        fail=1
    else
        echo "ok: $3"
    fi
}
[ -x "$hm" ] && [ -s "$model" ] || { echo "SKIP: $hm or $model missing"; exit 77; }

"$hm" generate -m "$model" -p "Hello (world)" -n 12 --temp 0 >"$tmp/g1" 2>/dev/null
ck $? 0 "greedy generation"
"$hm" generate -m "$model" -p "Hello (world)" -n 12 --temp 0 -t 1 >"$tmp/g2" 2>/dev/null
cmp -s "$tmp/g1" "$tmp/g2"; ck $? 0 "greedy output independent of threads"
"$hm" generate -m "$model" -p "Hi" -n 20 --seed 42 --top-k 50 >"$tmp/s1" 2>/dev/null
"$hm" generate -m "$model" -p "Hi" -n 20 --seed 42 --top-k 50 >"$tmp/s2" 2>/dev/null
cmp -s "$tmp/s1" "$tmp/s2"; ck $? 0 "same seed, same text"

# BOS(if any) + 5 prompt bytes + 7 generated = one line per position; %.9g floats
"$hm" generate -m "$model" -p "Hello" -n 7 --temp 0 --logits-out "$tmp/l.jsonl" \
    --stats >/dev/null 2>"$tmp/stats"
ck $? 0 "--logits-out"
n=$(grep -c '^{"pos": [0-9]*, "token": [0-9]*, "logits": \[' "$tmp/l.jsonl")
[ "$n" -ge 12 ] && [ "$n" -le 13 ]; ck $? 0 "--logits-out: $n lines"
grep -q '^window ' "$tmp/stats"; ck $? 0 "--stats prints the window"
grep -q '^KV bytes ' "$tmp/stats"; ck $? 0 "--stats prints KV bytes"

printf 'The committee met on Tuesday; after a long debate (past midnight) it agreed.\n' \
    >"$tmp/text"
p1=$("$hm" perplexity -m "$model" -f "$tmp/text" --ctx 16 --batch 1 | grep '^perplexity')
ck $? 0 "perplexity batch 1"
p3=$("$hm" perplexity -m "$model" -f "$tmp/text" --ctx 16 --batch 3 | grep '^perplexity')
[ -n "$p1" ] && [ "$p1" = "$p3" ]; ck $? 0 "perplexity independent of batching ($p1)"

"$hm" generate -p x >/dev/null 2>&1; ck $? 2 "missing model is a usage error"
"$hm" generate -m "$model" -p x --temp 5 >/dev/null 2>&1; ck $? 2 "--temp 5 rejected"
"$hm" generate -m "$model" -p x --bogus >/dev/null 2>&1; ck $? 2 "unknown option"
"$hm" generate -m "$model" -p x --complexity 2 >/dev/null 2>&1; ck $? 2 "--complexity 2"
"$hm" generate -m "$tmp/none.gguf" -p x >/dev/null 2>&1; ck $? 1 "missing model file"
"$hm" perplexity -m "$model" -f "$tmp/none.txt" >/dev/null 2>&1; ck $? 1 "missing text"
"$hm" perplexity -m "$model" -f "$tmp/text" --ctx 1 >/dev/null 2>&1; ck $? 2 "--ctx 1"
"$hm" generate --help | grep -q 'logits-out'; ck $? 0 "generate --help"
"$hm" perplexity --help | grep -q -- '--batch'; ck $? 0 "perplexity --help"
exit $fail
