#!/usr/bin/python3
"""Self-checks of the reference implementation (run by regen-golden.sh).

- GGUF round trip (metadata of every type, f32/f16 tensors, ne order);
- the vectorised estimator equals the straightforward float64 loops;
- the vectorised controller equals the scalar one within float32 rounding;
- an L layer with w >= t + 1 equals a G layer;
- MLA in the naive form equals the absorbed form (spec 5);
- the forward pass of a prefix equals the prefix of the forward pass (causality);
- the tokenizer round-trips bytes and splits as GPT-2 does on known cases.
"""

import math
import os
import sys
import tempfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bpe  # noqa: E402
import gguf  # noqa: E402
import hybridmoe_ref as ref  # noqa: E402


def check(cond, what):
    if not cond:
        raise SystemExit("selftest FAILED: " + what)
    print("ok  " + what)


def main():
    torch.set_num_threads(1)
    tmp = tempfile.mkdtemp()
    # GGUF round trip
    meta = {"a.u8": gguf.Typed(gguf.T_U8, 7), "a.i8": gguf.Typed(gguf.T_I8, -3),
            "a.u16": gguf.Typed(gguf.T_U16, 65535), "a.i16": gguf.Typed(gguf.T_I16, -300),
            "a.u32": gguf.Typed(gguf.T_U32, 4000000000), "a.i32": gguf.Typed(gguf.T_I32, -5),
            "a.f32": gguf.Typed(gguf.T_F32, 0.5), "a.bool": gguf.Typed(gguf.T_BOOL, True),
            "a.str": "h\u00e9llo", "a.u64": gguf.Typed(gguf.T_U64, 1 << 40),
            "a.i64": gguf.Typed(gguf.T_I64, -(1 << 40)), "a.f64": gguf.Typed(gguf.T_F64, 0.1),
            "a.arr": gguf.Typed(gguf.T_ARR, ["x", "yz"], gguf.T_STR),
            "a.arrf": gguf.Typed(gguf.T_ARR, [1.5, 2.5], gguf.T_F32),
            "a.nested": gguf.Typed(gguf.T_ARR, [[1, 2], [3]], gguf.T_ARR)}
    t = {"m": np.arange(12, dtype=np.float32).reshape(3, 4),
         "e": np.arange(24, dtype=np.float32).reshape(2, 3, 4), "v": np.ones(5, np.float32)}
    p = os.path.join(tmp, "x.gguf")
    gguf.write(p, meta, t, dtype=gguf.DT_F16)
    m2, t2 = gguf.read(p)
    check(m2["a.u32"] == 4000000000 and m2["a.i64"] == -(1 << 40) and m2["a.str"] == "h\u00e9llo"
          and m2["a.arr"] == ["x", "yz"] and m2["a.f64"] == 0.1 and m2["a.bool"] is True
          and [x.value for x in m2["a.nested"]] == [[1, 2], [3]], "gguf metadata round trip")
    check(all(np.array_equal(t[k], t2[k]) for k in t), "gguf tensors round trip (f16 exact)")
    raw = open(p, "rb").read()
    check(raw[:4] == b"GGUF", "gguf magic")

    # tokenizer
    cases = {"Hello world": ["Hello", " world"], "I'll  go\n\n x": ["I", "'ll", " ", " go", "\n\n",
                                                                   " x"],
             "a  ": ["a", "  "], "x 12ab": ["x", " 12", "ab"], "hi!!  ?": ["hi", "!!", " ", " ?"]}
    for s, want in cases.items():
        check(bpe.presplit(s) == want, "presplit %r -> %r" % (s, bpe.presplit(s)))
    text = open("/work/shared/data/tinyshakespeare.txt").read()[:30000]
    toks, tt, merges = bpe.train(text, 50)
    tok = bpe.Tokenizer(toks, tt, merges, bos=len(toks) - 2, eos=len(toks) - 1)
    s = "caf\u00e9 \U0001F600 it's (x)\n"
    check(tok.decode(tok.encode(s)) == s.encode(), "tokenizer round trip")

    V = len(toks)
    hp = ref.HParams(
        n_vocab=V, context_length=64, embedding_length=32, block_count=3, layer_pattern="GLM",
        head_count=4, head_count_kv=2, key_length=8, kv_lora_rank=12, qk_nope_head_dim=6,
        qk_rope_head_dim=4, v_head_dim=5, expert_count=4, expert_used_count=2,
        expert_feed_forward_length=8, phrase_span=3, max_phrases=3, max_sentences=2,
        max_sentence_length=5, cross_dim=8, complexity_window=10)
    feat = dict(xscale=True, ctrl=True, qk_norm=True, sandwich=True, adapt=True, tied=True)
    m = ref.HybridMoE(hp, feat, [tok.token_bytes(i) for i in range(V)])
    ref.init_weights(m, 5, golden=True)
    ids = tok.encode("First (Citizen): [we] {proceed} any further?\nHear me, speak. " * 2)[:60]
    x = torch.tensor([ids])
    with torch.no_grad():
        emb = m.w("token_embd.weight")[x]
        fv = ref.estimator_features(hp, x, emb, m.info)[0].numpy()
        fe = ref.estimator_features_exact(hp, ids, emb[0].numpy(), m.info)
        check(np.abs(fv - fe).max() <= 1e-6, "vectorised estimator == loops (%.2g)"
              % np.abs(fv - fe).max())
        cv = m.controller(torch.from_numpy(fe)).numpy()
        ce = m.controller_exact(fe)
        check(np.abs(cv - ce).max() <= 1e-6, "vectorised controller == scalar (%.2g)"
              % np.abs(cv - ce).max())
        o1 = m.forward(x, ctl={"window": 1000})
        hp.layer_pattern = "GGM"
        o2 = m.forward(x, ctl={"window": 1000})
        hp.layer_pattern = "GLM"
        check(torch.equal(o1["logits"], o2["logits"]), "L with w >= t+1 equals G")
        o3 = m.forward(x[:, :30], c=o1["c"][:, :30], wins=o1["wins"])
        d = (o3["logits"] - o1["logits"][:, :30]).abs().max().item()
        check(d < 1e-4, "causal: prefix forward == forward prefix (%.2g)" % d)
        # MLA absorbed form
        l = 2
        xn = torch.randn(1, 20, hp.d)
        cos, sin = ref.rope_tables(20, hp.qk_rope_head_dim, hp.rope_freq_base, "cpu")
        naive = m.attn_m(l, xn, cos, sin)
        p_ = "blk.%d." % l
        h, dn, dr, dv, r = 4, 6, 4, 5, 12
        q = (xn @ m.w(p_ + "attn_q.weight").t()).view(1, 20, h, dn + dr)
        qn, qr = q[..., :dn], ref.rope(q[..., dn:], cos, sin)
        kva = xn @ m.w(p_ + "attn_kv_a_mqa.weight").t()
        ckv = ref.rms(kva[..., :r], hp.rms_eps) * m.w(p_ + "attn_kv_a_norm.weight")
        kr = ref.rope(kva[..., r:].unsqueeze(2), cos, sin)[:, :, 0]
        Wb = m.w(p_ + "attn_kv_b.weight").view(h, dn + dv, r)
        WK, WV = Wb[:, :dn], Wb[:, dn:]
        qabs = torch.einsum("bthn,hnr->bthr", qn, WK)
        sc = (torch.einsum("bthr,bsr->bhts", qabs, ckv) +
              torch.einsum("bthd,bsd->bhts", qr, kr)) / math.sqrt(dn + dr)
        T = 20
        mask = torch.arange(T)[None, :] <= torch.arange(T)[:, None]
        a = torch.softmax(sc.masked_fill(~mask, float("-inf")), -1)
        lat = torch.einsum("bhts,bsr->bthr", a, ckv)
        o = torch.einsum("bthr,hvr->bthv", lat, WV).reshape(1, T, h * dv)
        absorbed = o @ m.w(p_ + "attn_output.weight").t()
        d = (absorbed - naive).abs().max().item()
        check(d < 1e-5, "MLA naive == absorbed (%.2g)" % d)
    # save / load round trip keeps the forward pass
    p = os.path.join(tmp, "m.gguf")
    ref.save(p, m, tok)
    m3, _, tok3 = ref.load(p)
    with torch.no_grad():
        check(torch.equal(m3.forward(x)["logits"], m.forward(x)["logits"]),
              "model save/load round trip")
    check(tok3.encode("Hear me") == tok.encode("Hear me"), "tokenizer save/load round trip")
    print("selftest: all passed")


if __name__ == "__main__":
    main()
