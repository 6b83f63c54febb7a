#!/usr/bin/python3
"""Evaluation for docs/model-card.md: validation loss, cost, and sweeps of the router
threshold and of forced windows, with the reference implementation on exported GGUF
files. Writes <out>/eval.json, <out>/sweep-*.dat and (with gnuplot) <out>/sweep.png.

    /usr/bin/python3 tools/train/eval.py --out tools/train/out \
        --adaptive tools/train/out/adaptive-final.gguf \
        --baseline tools/train/out/baseline-final.gguf

Validation protocol (the same as train.py): the last 10 % of tinyshakespeare.txt,
tokenised on its own, cut into non-overlapping chunks of n_ctx (256) tokens; each chunk
is its own request (prompt = the chunk, max_tokens = 0, so N = 256); every position
but the last predicts the next token.
"""

import argparse
import json
import os
import subprocess
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reference"))
sys.path.insert(0, HERE)

import hybridmoe_ref as ref  # noqa: E402
import train  # noqa: E402


def attn_positions(hp, T, w):
    """Mean attention positions visited per token per layer for a sequence of T."""
    s = 0
    for t in range(T):
        for L in hp.layer_pattern:
            s += min(w, t + 1) if L == "L" else t + 1
    return s / (T * hp.block_count)


def run_eval(model, va, T, n_chunks, ctl, tok):
    nat, bpb, st = train.evaluate(model, va, T, n_chunks=n_chunks, ctl=ctl, tok=tok)
    return nat, bpb, st


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(HERE, "out"))
    ap.add_argument("--adaptive", default=None)
    ap.add_argument("--baseline", default=None)
    ap.add_argument("--chunks", type=int, default=48, help="validation chunks for sweeps")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    va = np.load(os.path.join(a.out, "val_ids.npy"))
    res = {}
    ma, _, tok = ref.load(a.adaptive or os.path.join(a.out, "adaptive-final.gguf"))
    hp = ma.hp
    T = hp.context_length
    nat, bpb, st = run_eval(ma, va, T, None, {}, tok)
    res["adaptive"] = {"nats": nat, "bpb": bpb, **st, "params": ma.n_params()}
    print("adaptive full val: %.4f nats/token %.4f bits/byte k %.3f w %.1f" %
          (nat, bpb, st["mean_k"], st["mean_w"]), flush=True)
    if a.baseline or os.path.exists(os.path.join(a.out, "baseline-final.gguf")):
        mb, _, _ = ref.load(a.baseline or os.path.join(a.out, "baseline-final.gguf"))
        nat, bpb, st = run_eval(mb, va, T, None, {}, tok)
        res["baseline"] = {"nats": nat, "bpb": bpb, **st, "params": mb.n_params()}
        print("baseline full val: %.4f nats/token %.4f bits/byte k %.3f" %
              (nat, bpb, st["mean_k"]), flush=True)
    # cost at the policy's window
    w_mean = res["adaptive"]["mean_w"]
    w_int = int(round(w_mean))
    res["cost"] = {
        "K": hp.expert_used_count,
        "mean_experts_adaptive": res["adaptive"]["mean_k"],
        "attn_positions_adaptive": attn_positions(hp, T, w_int),
        "attn_positions_full": (T + 1) / 2.0,
        "kv": [],
    }
    c_req = float(np.mean([0.5]))
    for N in (64, 128, 192, 256):
        for creq in (0.2, 0.5, 0.8):
            w = ref.window_policy(hp, creq, N)
            e, b = ref.kv_elems(hp, ma.feat, N, w)
            res["cost"]["kv"].append({"N": N, "c_req": creq, "w": w, "kv_bytes": 4 * e,
                                      "kv_bytes_allG": 4 * b})
    del c_req
    # sweeps (subset of chunks)
    sw_t = []
    for tau in (0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0):
        nat, bpb, st = run_eval(ma, va, T, a.chunks, {"router_threshold": tau}, tok)
        sw_t.append({"tau": tau, "nats": nat, "bpb": bpb, "mean_k": st["mean_k"]})
        print("tau %.2f: %.4f nats k %.3f" % (tau, nat, st["mean_k"]), flush=True)
    nat, bpb, st = run_eval(ma, va, T, a.chunks, {}, tok)
    pol = {"nats": nat, "bpb": bpb, "mean_k": st["mean_k"], "mean_w": st["mean_w"],
           "attn": attn_positions(hp, T, int(round(st["mean_w"])))}
    print("policy (subset): %.4f nats k %.3f w %.1f" % (nat, st["mean_k"], st["mean_w"]),
          flush=True)
    sw_w = []
    for w in (4, 8, 16, 32, 64, 128, 256):
        nat, bpb, st = run_eval(ma, va, T, a.chunks, {"window": w}, tok)
        sw_w.append({"window": w, "nats": nat, "bpb": bpb, "attn": attn_positions(hp, T, w)})
        print("window %d: %.4f nats attn %.1f" % (w, nat, sw_w[-1]["attn"]), flush=True)
    res["sweep_threshold"] = sw_t
    res["sweep_window"] = sw_w
    res["policy_subset"] = pol
    res["sweep_chunks"] = a.chunks
    with open(os.path.join(a.out, "eval.json"), "w") as f:
        json.dump(res, f, indent=1)
    with open(os.path.join(a.out, "sweep-threshold.dat"), "w") as f:
        f.write("# tau mean_experts nats\n")
        for r in sw_t:
            f.write("%g %.4f %.5f\n" % (r["tau"], r["mean_k"], r["nats"]))
    with open(os.path.join(a.out, "sweep-window.dat"), "w") as f:
        f.write("# window attn_positions_per_token nats\n")
        for r in sw_w:
            f.write("%d %.2f %.5f\n" % (r["window"], r["attn"], r["nats"]))
    with open(os.path.join(a.out, "sweep-policy.dat"), "w") as f:
        f.write("%.4f %.2f %.5f\n" % (pol["mean_k"], pol["attn"], pol["nats"]))
    gp = """set terminal pngcairo size 1100,450 font ",10"
set output "%(o)s/sweep.png"
set multiplot layout 1,2 title "HybridMoE-shakespeare: quality vs cost \
(validation, %(n)d chunks of 256 tokens)"
set xlabel "mean routed experts per token per MoE layer"
set ylabel "validation loss (nats/token)"
set grid
plot "%(o)s/sweep-threshold.dat" u 2:3 w lp pt 7 title "forced router threshold tau", \\
     "" u 2:3:(sprintf("%%.1f",$1)) w labels offset 1.5,0.6 notitle, \\
     "%(o)s/sweep-policy.dat" u 1:3 w p pt 9 ps 2 title "adaptive policy"
set xlabel "attention positions visited per token per layer"
set logscale x 2
plot "%(o)s/sweep-window.dat" u 2:3 w lp pt 7 title "forced window w", \\
     "" u 2:3:(sprintf("%%d",$1)) w labels offset 0,0.8 notitle, \\
     "%(o)s/sweep-policy.dat" u 2:3 w p pt 9 ps 2 title "adaptive policy"
unset multiplot
""" % {"o": a.out, "n": a.chunks}
    with open(os.path.join(a.out, "sweep.gp"), "w") as f:
        f.write(gp)
    try:
        subprocess.run(["gnuplot", os.path.join(a.out, "sweep.gp")], check=True)
        print("wrote %s/sweep.png" % a.out)
    except Exception as ex:  # noqa: BLE001
        print("gnuplot failed: %s" % ex)
    print(json.dumps(res["cost"], indent=1))


if __name__ == "__main__":
    main()
