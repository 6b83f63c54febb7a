#!/usr/bin/python3
"""Writes the golden fixtures under tests/golden/ from the reference implementation.

    /usr/bin/python3 tools/reference/make_golden.py [--out tests/golden] \
        [--default models/default.gguf]

For each tiny model (random weights, deterministic per seed) it writes the model
(tests/golden/<model>.gguf) and one JSON fixture per request (tests/golden/<case>.json):

  model, prompt, max_tokens, n_gen, overrides {complexity, window, max_experts,
  router_threshold} (null = unset), c_req, window, n_planned, tokens (prompt +
  greedy continuation), generated, c (c_t per token), features (e, s, y, l per token,
  for diagnosis), logit_positions + logits (one row of V per listed position),
  k / experts per token per MoE layer, mean_experts, attn_positions, kv_elems,
  kv_elems_baseline, and the decision margins (how far each discrete decision is from
  flipping: routing, window floor, greedy argmax).

Tokenizer fixtures (tokenizer-*.json): text -> ids for a model's tokenizer.
tests/check_golden.c compares the C engine with all of them (make check, no Python).
"""

import argparse
import json
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bpe  # noqa: E402
import hybridmoe_ref as ref  # noqa: E402

TOP = os.path.abspath(os.path.join(HERE, "..", ".."))
DATA = "/work/shared/data/tinyshakespeare.txt"

TOK_TEXTS = [
    "First Citizen:\nBefore we proceed any further, hear me speak.",
    "All:\nSpeak, speak.\n\n",
    "You are all resolved rather to die than to famish?",
    "I'll tell thee what: they've said we're 'poor' -- don't!",
    "  leading spaces,   runs of   spaces\tand tabs\n\n\n  end  ",
    "Numbers 12345 and 3.14159, (brackets [nested {deep}]) \"quotes\"",
    "caf\u00e9 na\u00efve \u00fcber \u0394\u03b5\u03bb\u03c4\u03b1 \u65e5\u672c\u8a9e \U0001F600!",
    "",
    " ",
    "\n",
    "ROMEO:\nBut, soft! what light through yonder window breaks?",
]


def tiny_tokenizer():
    text = open(DATA, "rb").read().decode("utf-8")[:60000]
    toks, tt, merges = bpe.train(text, 40)
    V = len(toks)
    return bpe.Tokenizer(toks, tt, merges, bos=V - 2, eos=V - 1, add_bos=False)


def tiny_models(V):
    full = ref.HParams(
        n_vocab=V, context_length=96, embedding_length=32, block_count=5, layer_pattern="GLMLM",
        leading_dense_block_count=1, feed_forward_length=48, head_count=4, head_count_kv=2,
        key_length=8, rms_eps=1e-5, rope_freq_base=10000.0, q_lora_rank=12, kv_lora_rank=16,
        qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=6, expert_count=4,
        expert_used_count=3, expert_shared_count=1, expert_feed_forward_length=16,
        expert_weights_norm=True, expert_weights_scale=1.25, router_k_min=1,
        router_threshold=0.6, router_threshold_gain=0.4, window_min=6, window_max=40,
        window_complexity_gain=24, window_long_context_start=40, window_long_context_step=10,
        window_long_context_penalty=1, phrase_span=3, max_phrases=5, max_sentences=3,
        max_sentence_length=7, cross_dim=16, complexity_window=12)
    full_feat = dict(xscale=True, ctrl=True, qk_norm=True, sandwich=True, adapt=True,
                     tied=False)
    bare = ref.HParams(
        n_vocab=V, context_length=96, embedding_length=24, block_count=3, layer_pattern="LMG",
        head_count=3, head_count_kv=3, key_length=0, rms_eps=1e-6, rope_freq_base=500.0,
        kv_lora_rank=10, qk_nope_head_dim=6, qk_rope_head_dim=6, v_head_dim=8,
        expert_count=5, expert_used_count=2, expert_shared_count=0,
        expert_feed_forward_length=12, router_threshold=0.55, router_threshold_gain=0.3,
        window_min=4, window_max=64, window_complexity_gain=20, window_long_context_start=48,
        window_long_context_step=0, window_long_context_penalty=5,
        complexity_weights=[0.5, 0.3, 0.2], complexity_window=16)
    bare_feat = dict(xscale=False, ctrl=False, qk_norm=False, sandwich=False, adapt=False,
                     tied=True)
    win = ref.HParams(
        n_vocab=V, context_length=160, embedding_length=32, block_count=4, layer_pattern="LLGL",
        head_count=4, head_count_kv=1, key_length=8, rope_freq_base=10000.0, expert_count=6,
        expert_used_count=3, expert_shared_count=2, expert_feed_forward_length=8,
        expert_weights_norm=False, expert_weights_scale=2.0, router_k_min=2,
        router_threshold=0.5, router_threshold_gain=0.8, window_min=4, window_max=24,
        window_complexity_gain=16, window_long_context_start=64, window_long_context_step=16,
        window_long_context_penalty=1, phrase_span=5, max_phrases=3, max_sentences=2,
        max_sentence_length=6, cross_dim=8, complexity_window=16)
    win_feat = dict(xscale=True, ctrl=True, qk_norm=True, sandwich=False, adapt=True,
                    tied=True)
    return [("tiny-full", full, full_feat, 11, 0), ("tiny-bare", bare, bare_feat, 22, 0),
            ("tiny-window", win, win_feat, 34, 1)]


def margins(model, r, ctl):
    """Smallest distances of the discrete decisions from their thresholds."""
    hp = model.hp
    K = hp.expert_used_count
    kmin = hp.router_k_min
    if ctl.get("max_experts"):
        K = ctl["max_experts"]
        kmin = min(kmin, K)
    out = {}
    # window floor
    if ctl.get("window") is None and ctl.get("complexity") is None:
        v = r["c_req"] * hp.window_complexity_gain
        out["window_floor"] = abs(v - round(v))
    # greedy
    lg = r["logits"]
    gm = []
    for t in range(len(r["tokens"]) - len(r["generated"]) - 1, len(r["tokens"]) - 1):
        s = np.sort(lg[t])[::-1]
        gm.append(float(s[0] - s[1]))
    out["greedy_gap"] = min(gm) if gm else None
    # routing: recompute probabilities at each MoE layer from a traced forward
    return out


def routing_margins(model, ids, c, w, ctl):
    """Runs the forward pass, capturing router probabilities, and returns the smallest
    |cumsum - tau| over the candidate k and the smallest gap between consecutive
    sorted probabilities among the first k+1."""
    hp = model.hp
    cap = []
    orig = model.moe

    def hook(l, x, cc, ctl_):
        logits = x @ model.w("blk.%d.ffn_gate_inp.weight" % l).t()
        cap.append((torch.softmax(logits, -1)[0].detach(), cc[0].detach()))
        return orig(l, x, cc, ctl_)
    model.moe = hook
    try:
        with torch.no_grad():
            model.forward(torch.tensor([ids]), c=c.unsqueeze(0), wins=torch.tensor([w]), ctl=ctl)
    finally:
        del model.moe
    K = hp.expert_used_count
    kmin = hp.router_k_min
    if ctl.get("max_experts"):
        K = ctl["max_experts"]
        kmin = min(kmin, K)
    cm, gm = 1.0, 1.0
    for prob, cc in cap:
        ps, _ = torch.sort(prob, dim=-1, descending=True, stable=True)
        if ctl.get("router_threshold") is not None:
            tau = torch.full_like(cc, float(ctl["router_threshold"]))
        else:
            tau = torch.clamp(torch.tensor(hp.router_threshold, dtype=torch.float32) +
                              torch.tensor(hp.router_threshold_gain, dtype=torch.float32) *
                              (cc - torch.tensor(0.5, dtype=torch.float32)), 0.0, 1.0)
        cum = torch.zeros_like(cc)
        for j in range(K):
            cum = cum + ps[:, j]
            if j + 1 >= kmin and j + 1 < K:
                d = (cum - tau).abs()
                d = torch.where(tau >= 1.0, torch.ones_like(d), d)
                cm = min(cm, float(d.min()))
        for j in range(min(K, ps.shape[1] - 1)):
            gm = min(gm, float((ps[:, j] - ps[:, j + 1]).min()))
    return cm, gm


def fmt_floats(a):
    return [float("%.8g" % x) for x in np.asarray(a, dtype=np.float64).ravel()]


def write_case(outdir, case, model_name, model, feat, prompt, max_tokens, n_gen, ctl,
               logit_positions=None, note=""):
    r = model.run(prompt, max_tokens=max_tokens, n_gen=n_gen, ctl=ctl)
    hp = model.hp
    n = len(r["tokens"])
    if logit_positions is None:
        logit_positions = list(range(n))
    c = model.complexity_exact(r["tokens"], ctl)
    emb = model.w("token_embd.weight")[torch.tensor(r["tokens"])].detach().numpy()
    feats = ref.estimator_features_exact(hp, r["tokens"], emb, model.info)
    cm, gm = routing_margins(model, r["tokens"], c, r["w"], ctl)
    mg = margins(model, r, ctl)
    mg["routing_cumsum_vs_tau"] = cm
    mg["routing_prob_gap"] = gm
    n_moe = len(r["k"])
    k = [[int(r["k"][j][t]) for j in range(n_moe)] for t in range(n)]
    experts = [[[int(e) for e in r["idx"][j][t][:r["k"][j][t]]] for j in range(n_moe)]
               for t in range(n)]
    sk = sum(sum(x) for x in k)
    attn = 0
    for t in range(n):
        for T in hp.layer_pattern:
            attn += min(r["w"], t + 1) if T == "L" else t + 1
    ke, kb = ref.kv_elems(hp, feat, r["N"], r["w"])
    fx = {
        "model": model_name + ".gguf",
        "note": note,
        "prompt": list(map(int, prompt)),
        "max_tokens": max_tokens,
        "n_gen": n_gen,
        "overrides": {x: ctl.get(x) for x in ("complexity", "window", "max_experts",
                                              "router_threshold")},
        "c_req": r["c_req"],
        "window": r["w"],
        "n_planned": r["N"],
        "tokens": list(map(int, r["tokens"])),
        "generated": list(map(int, r["generated"])),
        "c": fmt_floats(r["c"]),
        "features": [fmt_floats(f) for f in feats],
        "n_vocab": hp.n_vocab,
        "n_moe": n_moe,
        "k_max": hp.expert_used_count,
        "k": k,
        "experts": experts,
        "mean_experts": sk / (n * n_moe) if n_moe else 0.0,
        "attn_positions": attn,
        "kv_elems": ke,
        "kv_elems_baseline": kb,
        "logit_positions": logit_positions,
        "logits": [fmt_floats(r["logits"][t]) for t in logit_positions],
        "margins": mg,
    }
    path = os.path.join(outdir, case + ".json")
    with open(path, "w") as f:
        json.dump(fx, f, separators=(",", ":"))
        f.write("\n")
    print("%-28s n=%3d c_req=%.6f w=%3d k_mean=%.3f margins %s" % (
        case, n, r["c_req"], r["w"], fx["mean_experts"],
        {a: (None if b is None else float("%.3g" % b)) for a, b in mg.items()}))
    return fx


def tokenizer_fixture(outdir, name, model_rel, tok):
    cases = []
    for t in TOK_TEXTS:
        ids = tok.encode(t, add_bos=False)
        assert tok.decode(ids) == t.encode("utf-8")
        cases.append({"text": t, "ids": ids})
    # a longer text from the validation part of the corpus
    raw = open(DATA, "rb").read().decode("utf-8")
    cut = len(raw) * 9 // 10
    t = raw[cut + 1000:cut + 1600]
    cases.append({"text": t, "ids": tok.encode(t, add_bos=False)})
    with open(os.path.join(outdir, "tokenizer-%s.json" % name), "w") as f:
        json.dump({"model": model_rel, "cases": cases}, f, ensure_ascii=True)
        f.write("\n")
    print("tokenizer-%s.json: %d cases" % (name, len(cases)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(TOP, "tests", "golden"))
    ap.add_argument("--default", default=os.path.join(TOP, "models", "default.gguf"))
    a = ap.parse_args()
    torch.set_num_threads(1)
    os.makedirs(a.out, exist_ok=True)
    tok = tiny_tokenizer()
    V = len(tok.tokens)
    raw = open(DATA, "rb").read().decode("utf-8")
    cut = len(raw) * 9 // 10
    texts = {
        "short": "First Citizen:\nBefore we proceed (any further), hear me speak.",
        "punct": "KING: [aside] O, 'tis {most} (sweet (and [deep]))! Is't so? Ay; \"so\".",
        "long": raw[cut + 2000:cut + 2600],
    }
    models = {}
    for name, hp, feat, seed, dtype in tiny_models(V):
        m = ref.HybridMoE(hp, feat, [tok.token_bytes(i) for i in range(V)])
        ref.init_weights(m, seed, golden=True)
        path = os.path.join(a.out, name + ".gguf")
        ref.save(path, m, tok, name=name, dtype=dtype)
        m2, _, _ = ref.load(path)           # use the stored (possibly f16) weights
        models[name] = (m2, feat)
        print("%s: %d params, %d bytes" % (name, m2.n_params(), os.path.getsize(path)))

    def ids_of(key, n=None, bos=False):
        ids = tok.encode(texts[key], add_bos=False)
        if bos:
            ids = [tok.bos] + ids
        return ids[:n] if n else ids

    m, f = models["tiny-full"]
    p = ids_of("short", bos=True)
    write_case(a.out, "full-plain", "tiny-full", m, f, p, 20, 16, {},
               note="every optional tensor; policy window; greedy 16")
    write_case(a.out, "full-complexity-maxexp", "tiny-full", m, f, p, 10, 8,
               {"complexity": 0.9, "max_experts": 2}, note="complexity 0.9, max_experts 2")
    write_case(a.out, "full-thresh-window", "tiny-full", m, f, ids_of("punct"), 12, 8,
               {"router_threshold": 0.3, "window": 5}, note="router_threshold 0.3, window 5")
    write_case(a.out, "full-topk", "tiny-full", m, f, ids_of("punct"), 4, 4,
               {"router_threshold": 1.0}, note="router_threshold 1: fixed top-K")
    m, f = models["tiny-bare"]
    write_case(a.out, "bare-plain", "tiny-bare", m, f, ids_of("short"), 16, 16, {},
               note="no optional tensor; fallback complexity weights; tied output")
    write_case(a.out, "bare-complexity-window", "tiny-bare", m, f, ids_of("punct"), 8, 8,
               {"complexity": 0.1, "window": 3, "max_experts": 1},
               note="complexity 0.1, window 3, max_experts 1")
    m, f = models["tiny-window"]
    lp = ids_of("long", 120)
    pos = sorted(set(list(range(0, len(lp) + 16, 7)) + list(range(len(lp) - 4, len(lp) + 16))))
    write_case(a.out, "window-long", "tiny-window", m, f, lp, 24, 16, {}, logit_positions=pos,
               note="small windows, long prompt: L ring and long-context penalty")
    write_case(a.out, "window-forced", "tiny-window", m, f, lp, 30, 12,
               {"window": 7, "router_threshold": 0.5}, logit_positions=pos[:-4],
               note="window 7, router_threshold 0.5")
    write_case(a.out, "window-c1", "tiny-window", m, f, lp[:90], 8, 6, {"complexity": 1.0},
               logit_positions=[0, 1, 2, 40, 80] + list(range(85, 96)),
               note="complexity 1")
    tokenizer_fixture(a.out, "tiny", "tiny-full.gguf", tok)
    # the trained model's tokenizer (models/default.gguf), if present
    if os.path.exists(a.default):
        dm, dmeta, dtok = ref.load(a.default)
        tokenizer_fixture(a.out, "default", "../../models/default.gguf", dtok)
        raw_p = "ROMEO:\nBut, soft! what light through yonder window breaks?\n"
        pids = dtok.encode(raw_p)
        write_case(a.out, "default-plain", "../../models/default", dm,
                   ref.features_from_tensors([n for n, _ in dm.specs]), pids, 16, 12, {},
                   logit_positions=list(range(0, len(pids) + 12, 3)),
                   note="the trained default model")


if __name__ == "__main__":
    main()
