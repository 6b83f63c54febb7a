#!/bin/bash
# make-seeds.sh - regenerates the GGUF seed corpus tests/fuzz/corpus/fuzz_gguf/ with the
# hybridmoe tool of a build directory: small valid models of several shapes and types,
# truncations at every section and a few single-field corruptions.
#
#   tests/fuzz/make-seeds.sh BUILDDIR      (BUILDDIR holds the built ./hybridmoe)
#
# The other corpora (tokenizer, utf8, config, request) are small hand-written files,
# committed as they are.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bld=${1:?usage: make-seeds.sh BUILDDIR}
hm="$bld/hybridmoe"
out="$here/corpus/fuzz_gguf"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$out"

small=(--set embedding_length=8 --set feed_forward_length=8 --set attention.head_count=2
       --set attention.head_count_kv=1 --set attention.key_length=4 --set mla.q_lora_rank=4
       --set mla.kv_lora_rank=4 --set mla.qk_nope_head_dim=2 --set mla.qk_rope_head_dim=2
       --set mla.v_head_dim=2 --set expert_feed_forward_length=4 --set multiscale.cross_dim=4
       --set expert_count=2 --set expert_used_count=1 --set context_length=64 --vocab 258)
mk() { "$hm" mkmodel --preset tiny -q "${small[@]}" -o "$@"; }

mk "$out/valid-glm-f16.gguf" --pattern GLM --type f16
mk "$out/valid-g-f32-tied-bare.gguf" --pattern G --no-xscale --no-ctrl --tied --no-qk-norm \
    --no-sandwich --no-adapt-gain
mk "$out/valid-mm-q8_0-untied.gguf" --pattern MM --set embedding_length=32 --type q8_0 \
    --no-q-lora --no-shared-experts --untied
mk "$out/valid-lg-bf16-dense.gguf" --pattern LG --type bf16 --set leading_dense_block_count=2
printf 'the cat sat on the mat. the dog sat on the log.\n%.0s' {1..20} > "$tmp/text"
"$hm" mkmodel --preset tiny -q "${small[@]/258/300}" --pattern L --tokenizer-train "$tmp/text" \
    -o "$out/valid-l-bpe.gguf" || echo "make-seeds: skipping the trained-vocabulary seed" >&2

# truncations of the smallest model: header, inside the metadata, inside the tensor
# infos, inside the data, one byte short
src="$out/valid-g-f32-tied-bare.gguf"
size=$(stat -c %s "$src")
for n in 4 8 24 100 1000 3000 6000 $((size / 2)) $((size - 1)); do
    head -c "$n" "$src" > "$out/trunc-$n.gguf"
done
# corruptions: magic, version 1, version 4, huge tensor count, huge kv count
cp "$src" "$tmp/x"
patch_at() { # file offset hexbytes
    cp "$src" "$2"
    printf "$3" | dd of="$2" bs=1 seek="$1" conv=notrunc status=none
}
patch_at 0 "$out/bad-magic.gguf" 'GGUG'
patch_at 4 "$out/bad-version1.gguf" '\x01\x00\x00\x00'
patch_at 4 "$out/bad-version4.gguf" '\x04\x00\x00\x00'
patch_at 8 "$out/bad-ntensors.gguf" '\xff\xff\xff\xff\xff\xff\xff\x7f'
patch_at 16 "$out/bad-nkv.gguf" '\x00\x00\x00\x00\x01\x00\x00\x00'
ls -la "$out"
