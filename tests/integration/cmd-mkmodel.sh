#!/bin/sh
# cmd-mkmodel.sh - `hybridmoe` dispatcher, `mkmodel` and `inspect`: help, usage errors
# (exit 2), dry-run counts, overrides, determinism, and inspect on good and bad files.
set -u
b=${HM_BUILDDIR:-.}
hm="$b/hybridmoe"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
ck() { # ck STATUS EXPECTED DESCRIPTION
    if [ "$1" != "$2" ]; then
        echo "FAIL: $3 (status $1, expected $2)"
        fail=1
    else
        echo "ok: $3"
    fi
}
has() { # has FILE PATTERN DESCRIPTION
    if grep -q -- "$2" "$1"; then echo "ok: $3"; else echo "FAIL: $3"; cat "$1"; fail=1; fi
}
[ -x "$hm" ] || { echo "SKIP: $hm missing"; exit 77; }

"$hm" --help >"$tmp/o"; ck $? 0 "--help"
has "$tmp/o" "mkmodel" "--help lists mkmodel"
"$hm" help mkmodel >"$tmp/o"; ck $? 0 "help mkmodel"
has "$tmp/o" "--preset NAME" "help mkmodel shows options"
"$hm" inspect --help >"$tmp/o"; ck $? 0 "inspect --help"
"$hm" >/dev/null 2>&1; ck $? 2 "no command"
"$hm" nonsense >/dev/null 2>&1; ck $? 2 "unknown command"
"$hm" help nonsense >/dev/null 2>&1; ck $? 2 "help for an unknown command"
"$hm" mkmodel -o "$tmp/x.gguf" >/dev/null 2>&1; ck $? 2 "mkmodel without --preset"
"$hm" mkmodel --preset nope --dry-run >/dev/null 2>&1; ck $? 2 "unknown preset"
"$hm" mkmodel --preset tiny --bogus >/dev/null 2>&1; ck $? 2 "unknown option"
"$hm" mkmodel --preset tiny --seed x --dry-run >/dev/null 2>&1; ck $? 2 "bad seed"
"$hm" mkmodel --preset tiny --type q4 --dry-run >/dev/null 2>&1; ck $? 2 "bad type"
"$hm" mkmodel --preset tiny --set nokey=1 --dry-run >/dev/null 2>&1; ck $? 2 "unknown --set key"
"$hm" mkmodel --preset tiny --set window.min=x --dry-run >/dev/null 2>&1; ck $? 2 "bad --set value"
"$hm" mkmodel --preset tiny --set window.min=100 --dry-run >/dev/null 2>&1
ck $? 1 "override that breaks validation"
"$hm" inspect >/dev/null 2>&1; ck $? 2 "inspect without MODEL"

"$hm" mkmodel --preset small --dry-run >"$tmp/o"; ck $? 0 "dry run small"
has "$tmp/o" "^total: 6.99 B (6991914849)$" "small total"
has "$tmp/o" "^active: 2.02 B (2020616033)$" "small active"
"$hm" mkmodel --preset tiny --dry-run --pattern GGMM --set window.min=4 \
    --set hybridmoe.expert_weights_norm=false --no-xscale --untied >"$tmp/o"
ck $? 0 "dry run with overrides"
has "$tmp/o" "^block_count: 4$" "--pattern sets block_count"
has "$tmp/o" "^window.min: 4$" "--set"
has "$tmp/o" "^expert_weights_norm: false$" "--set with prefix"
if grep -q "xscale\|tied-output" "$tmp/o"; then echo "FAIL: features"; fail=1; fi
[ ! -e "$tmp/x.gguf" ]; ck $? 0 "dry run writes nothing"

"$hm" mkmodel --preset tiny --seed 7 -o "$tmp/a.gguf" 2>"$tmp/err"; ck $? 0 "write tiny"
has "$tmp/err" "100%" "progress on stderr"
"$hm" mkmodel --preset tiny --seed 7 -q -o "$tmp/b.gguf"; ck $? 0 "write tiny again"
cmp -s "$tmp/a.gguf" "$tmp/b.gguf"; ck $? 0 "same seed, same file"
"$hm" mkmodel --preset tiny --seed 8 --type q8_0 --no-q-lora --no-shared-experts -q \
    -o "$tmp/c.gguf"; ck $? 0 "write tiny q8_0 variant"
"$hm" inspect "$tmp/a.gguf" >"$tmp/o"; ck $? 0 "inspect"
has "$tmp/o" "tied-output=on" "inspect shows features"
has "$tmp/o" "blk.3.ffn_gate_exps.weight *f32 *4 x 32 x 64" "inspect shows a 3-D shape"
has "$tmp/o" "total: 304.10 K (304097)" "inspect total"
has "$tmp/o" "pattern GLMLGM" "inspect pattern"
"$hm" inspect --no-tensors "$tmp/c.gguf" >"$tmp/o"; ck $? 0 "inspect q8_0 variant"
has "$tmp/o" "q-lora=off" "q-lora off"
has "$tmp/o" "shared-experts=off" "shared experts off"
head -c 1000 "$tmp/a.gguf" >"$tmp/t.gguf"
"$hm" inspect "$tmp/t.gguf" >/dev/null 2>"$tmp/err"; ck $? 1 "inspect truncated file"
has "$tmp/err" "t.gguf" "error names the file"
"$hm" inspect "$tmp/missing.gguf" >/dev/null 2>&1; ck $? 1 "inspect missing file"
"$hm" mkmodel --preset tiny --vocab 300 --tokenizer-train "$0" -q -o "$tmp/tok.gguf"
ck $? 0 "mkmodel with a trained tokenizer"
"$hm" inspect --no-tensors "$tmp/tok.gguf" >"$tmp/o"; ck $? 0 "inspect trained-tokenizer model"
has "$tmp/o" "vocabulary 300" "vocabulary padded to --vocab"
has "$tmp/o" "tokenizer.ggml.merges" "merges written"
"$hm" mkmodel --preset tiny --tokenizer-train "$tmp/none.txt" -q -o "$tmp/n.gguf" 2>/dev/null
ck $? 1 "missing training file"
exit $fail
