#!/bin/bash
# rel-startup.sh - broken model files and bad configuration at startup: the server
# must exit non-zero (78, EX_CONFIG) with one clear message naming the file, option or
# problem, and never crash (no signal, no sanitizer report) or start serving.
# Models: missing, a directory, empty, garbage, truncated at several points, bad magic,
# GGUF v1, huge counts, a foreign architecture, a hyperparameter that does not match the
# tensors. Config: unknown option, bad values, out-of-range numbers, an unreadable or
# missing config file, an option with no value, step_tokens below max_running.
. "$(dirname "$0")/rel-lib.sh"
rel_need
rel_watchdog 170
T=$REL_TMP
M=$REL_MODEL
size=$(stat -c %s "$M")
seeds=$HM_SRCDIR/tests/fuzz/corpus/fuzz_gguf

: >"$T/empty.gguf"
head -c 4096 /dev/urandom >"$T/garbage.gguf"
head -c 24 "$M" >"$T/trunc-header.gguf"
head -c 2000 "$M" >"$T/trunc-metadata.gguf"
head -c $((size / 2)) "$M" >"$T/trunc-half.gguf"
head -c $((size - 1)) "$M" >"$T/trunc-last-byte.gguf"
mkdir "$T/dir.gguf"
# patch BYTES (printf format) at OFFSET of a copy of the model
patched() { cp "$M" "$T/$1"; printf "$3" | dd of="$T/$1" bs=1 seek="$2" conv=notrunc status=none; }
patched bad-magic.gguf 0 'GGUX'
patched version1.gguf 4 '\x01\x00\x00\x00'
patched huge-tensor-count.gguf 8 '\xff\xff\xff\xff\xff\xff\xff\x0f'
# the first "hybridmoe" in the file is the value of general.architecture
off=$(grep -obUa 'hybridmoe' "$M" | head -n 1 | cut -d: -f1)
patched foreign-arch.gguf "$off" 'llamamoex'
# embedding_length: key text, then u32 type, then the u32 value (64 -> 48)
off=$(grep -obUa 'hybridmoe.embedding_length' "$M" | head -n 1 | cut -d: -f1)
patched shape-mismatch.gguf $((off + 26 + 4)) '\x30\x00\x00\x00'

cases=(
"missing-file|--model|$T/no-such.gguf"
"directory|--model|$T/dir.gguf"
"empty|--model|$T/empty.gguf"
"garbage|--model|$T/garbage.gguf"
"truncated-header|--model|$T/trunc-header.gguf"
"truncated-metadata|--model|$T/trunc-metadata.gguf"
"truncated-half|--model|$T/trunc-half.gguf"
"truncated-last-byte|--model|$T/trunc-last-byte.gguf"
"bad-magic|--model|$T/bad-magic.gguf"
"gguf-v1|--model|$T/version1.gguf"
"huge-tensor-count|--model|$T/huge-tensor-count.gguf"
"foreign-architecture|--model|$T/foreign-arch.gguf"
"shape-mismatch|--model|$T/shape-mismatch.gguf"
)
for f in "$seeds"/bad-* "$seeds"/trunc-*; do
    [ -f "$f" ] && cases+=("seed-$(basename "$f" .gguf)|--model|$f")
done

printf 'port 8080\nno_such_option 1\n' >"$T/unknown.conf"
printf 'port 70000\n' >"$T/range.conf"
printf 'kv_budget lots\n' >"$T/value.conf"
printf 'max_running\n' >"$T/novalue.conf"
printf 'log_level loud\n' >"$T/loglevel.conf"
head -c 8192 /dev/zero | tr '\0' x >"$T/longline.conf"
printf '\x00\xff\xfe port 1\n' >"$T/binary.conf"
cases+=(
"config-unknown-option|--model|$M|--config|$T/unknown.conf"
"config-port-range|--model|$M|--config|$T/range.conf"
"config-bad-size|--model|$M|--config|$T/value.conf"
"config-no-value|--model|$M|--config|$T/novalue.conf"
"config-bad-log-level|--model|$M|--config|$T/loglevel.conf"
"config-long-line|--model|$M|--config|$T/longline.conf"
"config-binary|--model|$M|--config|$T/binary.conf"
"config-missing-file|--model|$M|--config|$T/none.conf"
"config-directory|--model|$M|--config|$T"
"flag-unknown|--model|$M|--frobnicate|1"
"flag-bad-number|--model|$M|--max-running|many"
"flag-negative|--model|$M|--queue-size|-1"
"flag-overflow|--model|$M|--port|99999999999999999999"
"flag-missing-value|--model|$M|--port"
"flag-zero-running|--model|$M|--max-running|0"
"flag-step-below-running|--model|$M|--max-running|16|--step-tokens|8"
"flag-bad-host|--model|$M|--host|not-an-address"
"flag-bad-host-eq|--model|$M|--host=localhost"
"flag-empty-model|--model|"
)

for c in "${cases[@]}"; do
    IFS='|' read -r -a f <<<"$c"
    name=${f[0]}
    args=("${f[@]:1}")
    t0=$(date +%s%3N)
    timeout 30 "$REL_SERVER" --host 127.0.0.1 --port 0 "${args[@]}" >"$T/$name.out" 2>&1
    rc=$?
    t1=$(date +%s%3N)
    msg=$(grep -v ' info: ' "$T/$name.out" | head -n 2 | tr '\n' ' ' | cut -c1-200)
    if [ $rc = 124 ]; then
        rel_fail "$name: still running after 30 s (started serving?)"
    elif [ $rc -ge 128 ]; then
        rel_fail "$name: killed by signal $((rc - 128)): $(tail -n 5 "$T/$name.out")"
    elif grep -q 'Sanitizer\|runtime error' "$T/$name.out"; then
        rel_fail "$name: sanitizer report: $(grep -m 3 'Sanitizer\|runtime error' "$T/$name.out")"
    elif [ $rc = 0 ]; then
        rel_fail "$name: exit 0"
    elif [ -z "$msg" ]; then
        rel_fail "$name: exit $rc without a message"
    elif grep -q 'ready: listening' "$T/$name.out"; then
        rel_fail "$name: became ready"
    elif [ $rc != 78 ]; then
        # docs/config.md: a bad option or model exits 78 (EX_CONFIG), whatever finds it
        rel_fail "$name: exit $rc, expected 78 (EX_CONFIG): $msg"
    else
        echo "ok: $name -> exit $rc in $((t1 - t0)) ms: $msg"
    fi
done
rel_done
