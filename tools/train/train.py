#!/usr/bin/python3
"""Trains a small HybridMoE on tinyshakespeare (CPU) and exports GGUF.

    /usr/bin/python3 tools/train/train.py --out tools/train/out --minutes 55
    /usr/bin/python3 tools/train/train.py --out tools/train/out --baseline --minutes 55

Data: /work/shared/data/tinyshakespeare.txt (or --data); the first 90 % of its bytes
train, the last 10 % validate. Tokenizer: byte-level BPE (GPT-2 pre-split) trained on
the training part (tools/reference/bpe.py), cached in <out>/tokenizer.json and shared
by the baseline run. Deterministic for a seed (the wall-clock budget only truncates
the run; the learning-rate schedule follows --steps).

Losses: next-token cross-entropy + lb_coef * load balancing (E * sum_e f_e P_e per MoE
layer) + ctrl_coef * MSE(c_t, difficulty_t) where difficulty_t = min(1, loss_t / ln V)
is the detached per-token loss at position t. The router gets gradients through the
renormalised probabilities of the selected experts.
"""

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reference"))

import bpe  # noqa: E402
import hybridmoe_ref as ref  # noqa: E402


def adaptive_hparams(V):
    return ref.HParams(
        n_vocab=V, context_length=256, embedding_length=192, block_count=6,
        layer_pattern="GLMLGL", head_count=4, head_count_kv=2, key_length=48,
        q_lora_rank=0, kv_lora_rank=64, qk_nope_head_dim=32, qk_rope_head_dim=16,
        v_head_dim=48, expert_count=6, expert_used_count=3, expert_shared_count=1,
        expert_feed_forward_length=128, router_k_min=1, router_threshold=0.6,
        router_threshold_gain=0.4, window_min=32, window_max=256,
        window_complexity_gain=192, window_long_context_start=192,
        window_long_context_step=32, window_long_context_penalty=16, phrase_span=4,
        max_phrases=64, max_sentences=16, max_sentence_length=64, cross_dim=64,
        complexity_window=64)


ADAPTIVE_FEAT = dict(xscale=True, ctrl=True, qk_norm=True, sandwich=False, adapt=True,
                     tied=True)


def baseline_hparams(V):
    hp = adaptive_hparams(V)
    hp.layer_pattern = "G" * hp.block_count
    hp.router_threshold = 1.0          # tau = 1: fixed top-K
    hp.router_threshold_gain = 0.0
    hp.router_k_min = hp.expert_used_count
    hp.kv_lora_rank = hp.qk_nope_head_dim = hp.qk_rope_head_dim = hp.v_head_dim = 0
    hp.cross_dim = 0
    return hp


BASELINE_FEAT = dict(xscale=False, ctrl=False, qk_norm=True, sandwich=False, adapt=False,
                     tied=True)


def get_tokenizer(out, train_text, vocab):
    path = os.path.join(out, "tokenizer.json")
    if os.path.exists(path):
        with open(path) as f:
            d = json.load(f)
    else:
        n_merges = vocab - 258
        t0 = time.time()

        def prog(i, n):
            if i % 50 == 0 or i == n:
                sys.stderr.write("\rbpe: merge %d/%d (%.0fs)" % (i, n, time.time() - t0))
        toks, tt, merges = bpe.train(train_text, n_merges, prog)
        sys.stderr.write("\n")
        d = {"tokens": toks, "token_type": tt, "merges": merges}
        with open(path + ".tmp", "w") as f:
            json.dump(d, f)
        os.replace(path + ".tmp", path)
    V = len(d["tokens"])
    return bpe.Tokenizer(d["tokens"], d["token_type"], d["merges"], bos=V - 2, eos=V - 1,
                         add_bos=False)


def get_ids(out, tok, name, text):
    path = os.path.join(out, name + ".npy")
    if os.path.exists(path):
        return np.load(path)
    ids = np.array(tok.encode(text, add_bos=False), dtype=np.int64)
    np.save(path, ids)
    return ids


def evaluate(model, val, T, n_chunks=None, ctl=None, tok=None):
    """Mean loss over non-overlapping chunks of T tokens of the validation stream;
    each chunk is its own sequence; every position but the chunk's last predicts the
    next token. Returns (nats/token, bits/byte, stats)."""
    model.eval()
    n = len(val) // T
    if n_chunks:
        n = min(n, n_chunks)
    tot, cnt, nbytes = 0.0, 0, 0
    ksum, kcnt, wsum = 0.0, 0, 0.0
    with torch.no_grad():
        for i in range(0, n, 8):
            x = torch.from_numpy(val[i * T:(i + min(8, n - i)) * T].reshape(-1, T))
            o = model(x, ctl=ctl)
            lp = torch.log_softmax(o["logits"][:, :-1], -1)
            nll = -lp.gather(-1, x[:, 1:, None])[..., 0]
            tot += float(nll.double().sum())
            cnt += nll.numel()
            if tok is not None:
                nbytes += sum(len(tok.token_bytes(int(t))) for t in x[:, 1:].reshape(-1))
            for k in o["k"]:
                ksum += float(k.double().sum())
                kcnt += k.numel()
            wsum += float(o["wins"].double().sum())
    model.train()
    nat = tot / max(cnt, 1)
    bpb = tot / math.log(2) / nbytes if nbytes else float("nan")
    return nat, bpb, {"mean_k": ksum / max(kcnt, 1), "mean_w": wsum / max(n, 1),
                      "tokens": cnt, "bytes": nbytes}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/work/shared/data/tinyshakespeare.txt")
    ap.add_argument("--out", default=os.path.join(HERE, "out"))
    ap.add_argument("--baseline", action="store_true")
    ap.add_argument("--vocab", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--minutes", type=float, default=55.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--export-every", type=int, default=200)
    ap.add_argument("--lb-coef", type=float, default=0.01)
    ap.add_argument("--ctrl-coef", type=float, default=0.1)
    ap.add_argument("--f16", action="store_true", help="export matrices as f16")
    ap.add_argument("--bench", type=int, default=0, help="run N steps, print time, exit")
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    os.makedirs(a.out, exist_ok=True)
    raw = open(a.data, "rb").read().decode("utf-8")
    cut = len(raw) * 9 // 10
    train_text, val_text = raw[:cut], raw[cut:]
    tok = get_tokenizer(a.out, train_text, a.vocab)
    V = len(tok.tokens)
    tr = get_ids(a.out, tok, "train_ids", train_text)
    va = get_ids(a.out, tok, "val_ids", val_text)
    with open(os.path.join(a.out, "val.txt"), "w") as f:
        f.write(val_text)
    name = "baseline" if a.baseline else "adaptive"
    hp = baseline_hparams(V) if a.baseline else adaptive_hparams(V)
    feat = BASELINE_FEAT if a.baseline else ADAPTIVE_FEAT
    model = ref.HybridMoE(hp, feat, [tok.token_bytes(i) for i in range(V)])
    ref.init_weights(model, a.seed)
    with torch.no_grad():
        for n, s in model.specs:
            if n.endswith("attn_output.weight") or n.endswith("down_exps.weight") or \
                    n.endswith("down_shexp.weight"):
                model.p[ref._key(n)].mul_(1.0 / math.sqrt(2 * hp.block_count))
    T = hp.context_length
    sys.stderr.write("%s: %d params, V=%d, train %d tokens, val %d tokens\n" %
                     (name, model.n_params(), V, len(tr), len(va)))
    decay = [p for n, p in model.p.items() if p.dim() >= 2]
    nodecay = [p for n, p in model.p.items() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": nodecay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95))
    rng = np.random.RandomState(a.seed)
    warm = 100

    def lr_at(s):
        if s < warm:
            return a.lr * (s + 1) / warm
        f = min(1.0, (s - warm) / max(1, a.steps - warm))
        return a.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * f)))

    log = open(os.path.join(a.out, name + ".log"), "a")
    t0 = time.time()
    lnV = math.log(V)
    ema = None
    step = 0

    def export(tag):
        path = os.path.join(a.out, "%s-%s.gguf" % (name, tag))
        ref.save(path + ".tmp", model, tok, name="hybridmoe-shakespeare-" + name,
                 dtype=1 if a.f16 else 0)
        os.replace(path + ".tmp", path)
        torch.save({"step": step, "model": model.state_dict(), "opt": opt.state_dict()},
                   os.path.join(a.out, name + ".pt"))
        return path

    for step in range(a.steps):
        el = time.time() - t0
        if el > a.minutes * 60:
            break
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        st = rng.randint(0, len(tr) - T - 1, size=a.batch)
        x = torch.from_numpy(np.stack([tr[s:s + T] for s in st]))
        y = torch.from_numpy(np.stack([tr[s + 1:s + T + 1] for s in st]))
        o = model(x)
        lp = torch.log_softmax(o["logits"], -1)
        nll = -lp.gather(-1, y[..., None])[..., 0]
        ce = nll.mean()
        loss = ce + a.lb_coef * o["lb"]
        if feat.get("ctrl"):
            target = torch.clamp(nll.detach() / lnV, 0, 1)
            closs = ((o["c"] - target) ** 2).mean()
            loss = loss + a.ctrl_coef * closs
        else:
            closs = torch.zeros(())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema = float(ce) if ema is None else 0.95 * ema + 0.05 * float(ce)
        mk = np.mean([float(k.float().mean()) for k in o["k"]]) if o["k"] else 0
        el = time.time() - t0
        msg = ("%s %5d/%d [%5.1f min] loss %.3f (ema %.3f) lb %.3f ctrl %.4f k %.2f w %.0f "
               "c %.2f" % (name, step + 1, a.steps, el / 60, float(ce), ema, float(o["lb"]),
                           float(closs), mk, float(o["wins"].float().mean()),
                           float(o["c"].mean())))
        sys.stderr.write("\r" + msg)
        if a.bench and step + 1 >= a.bench:
            sys.stderr.write("\n%.2f s/step\n" % (el / (step + 1)))
            return
        if (step + 1) % 25 == 0:
            log.write(msg + "\n")
            log.flush()
        if (step + 1) % a.export_every == 0:
            vl, vb, vs = evaluate(model, va, T, n_chunks=16)
            log.write("step %d val(16 chunks) %.4f nats/token\n" % (step + 1, vl))
            log.flush()
            p = export("latest")
            sys.stderr.write("\n[export %s val %.3f]\n" % (p, vl))
    steps_done = step + 1 if step < a.steps and time.time() - t0 <= a.minutes * 60 else step
    p = export("final")
    wall = time.time() - t0
    vl, vb, vs = evaluate(model, va, T, tok=tok)
    res = {"name": name, "params": model.n_params(), "steps": steps_done,
           "tokens_seen": steps_done * a.batch * T, "wall_min": wall / 60,
           "val_nats_per_token": vl, "val_bits_per_byte": vb, "val": vs, "gguf": p,
           "hparams": {f: getattr(hp, f) for f in hp.__dataclass_fields__}, "feat": feat,
           "args": vars(a)}
    with open(os.path.join(a.out, name + "-result.json"), "w") as f:
        json.dump(res, f, indent=1)
    sys.stderr.write("\n%s: done %d steps in %.1f min, val %.4f nats/token %.4f bits/byte\n"
                     % (name, steps_done, wall / 60, vl, vb))
    log.write(json.dumps(res) + "\n")


if __name__ == "__main__":
    main()
