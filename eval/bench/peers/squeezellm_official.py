#!/usr/bin/env python3
"""Peer check: the official SqueezeLLM Dense-and-Sparse pipeline, step by step,
on a llama2.c checkpoint (stories260K), evaluated like squeezebench.

What it re-implements (written from a reading of the official code, not copied):
  1. Fisher (kssteven418/SqueezeLLM-gradients run.py): for each calibration
     window, loss = the model's mean next-token cross-entropy of the window
     (labels = inputs), backward, and the squared gradient of every linear
     weight is summed over windows (batch size 1).  Here in float32 (sums in
     float64); the official code runs the model in bfloat16.
  2. Outlier config (SqueezeAILab/SqueezeLLM quantization/generate_outlier_config.py):
     per linear module, q1/q3 = np.quantile(w, .25/.75) of the original weights,
     T = max(|q1 - r*IQR|, |q3 + r*IQR|); one range r for the whole model.
     The official README asks the user to tune r by hand to reach a target
     outlier percentage; here r is found by bisection (largest r whose
     percentage, counted as generate_outlier_config.py counts it, reaches the
     target).  --outlier-range gives r directly.
  3. Sensitive values (squeezellm/outliers.py, by sensitivity; runs FIRST):
     per module, k = int(numel * s / 100), thr = k-th largest Fisher value,
     the weights with F > thr move to the sparse part and are zeroed in the
     dense matrix.  Then outliers (by threshold): |w| >= T on the already
     zeroed matrix move to the sparse part and are zeroed.
  4. k-means (quantization/nuq.py): per output row, scikit-learn
     KMeans(n_clusters=2^bits, random_state=SEED, n_init="auto", max_iter=50)
     on the (zeroed) row with sample_weight = F_row * (w_row != 0) (all ones if
     that sums to 0).  The official code uses random_state=0 for every row;
     --seed changes it.  The official code pins scikit-learn 1.3.1 (k-means++
     weighted by sample_weight, new in 1.3); a warning is printed for < 1.3.
  5. Packing (squeezellm/quant.py QuantLinearLUT.pack2): dense code = the
     k-means label (a removed zero gets the label of the centroid nearest 0),
     LUT = the centroids (float32); the sparse part stores, at every removed
     position with a non-zero original value, the ORIGINAL value minus the
     centroid nearest 0 ("zero mapping"), so dense + sparse = original there.
  6. Perplexity as squeezebench (GPTQ protocol): the whole TinyStories
     validation head, BOS + one sentencepiece encode, cut into non-overlapping
     512-token windows (tail dropped); ppl = exp(sum(mean CE * 512) / (n * 512)).
     Calibration windows: the TinyStories train sample, BOS + one encode,
     GPTQ's get_wikitext2 rule (random.seed(seed); i = randint(0, N - L - 1)).

Run (Debian python3-torch, python3-sentencepiece, scikit-learn >= 1.3):
  python3 eval/bench/peers/squeezellm_official.py \
      --model ../shared/data/stories260K/stories260K.bin --data-dir ../shared/data \
      --bits 3 --sensitive 0.05 --outliers 0.40 --seed 0
  --fp32-only: only the unquantized perplexity (should equal squeezebench's).
  --sensitive 0 --outliers 0: dense-only.
  --dump DIR: write per-module arrays (.npz) for comparison with squeezebench.
  --fisher-file F: use a float32 Fisher file (layer-major, wq wk wv wo w1 w2 w3)
  instead of computing it (squeezellm_seeds.ts --fisher-out writes one).
  --compare DIR: per module, compare with squeezebench's parts written by
  `deno run -A eval/bench/peers/squeezellm_seeds.ts --dump DIR` (same bits,
  sensitive, outliers): sparse sets, k-means sample weights, centroids (the
  implementations draw different k-means++ inits, so: scikit-learn's Lloyd vs
  squeezebench's Lloyd from the same scikit-learn init; a first --compare run
  writes the inits, `squeezellm_seeds.ts --lloyd-init DIR` then runs
  squeezebench's Lloyd from them, a second --compare run compares), sparse
  values (original minus the dense
  code's centroid, which must be the centroid nearest 0), and the
  Fisher-weighted error of both.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # as nuq.py; also keeps the run lean

import argparse
import random
import struct
import sys
import time

import numpy as np
import torch

NAMES = ["wq", "wk", "wv", "wo", "w1", "w2", "w3"]  # llama2.c order (q k v o gate down up)


# ----------------------------------------------------------------------------- model


def load_llama2c(path):
    """llama2.c checkpoint: legacy (7 int32 header) or version 1 (magic 0x616b3432)."""
    with open(path, "rb") as f:
        raw = f.read()
    magic = struct.unpack_from("<I", raw, 0)[0]
    if magic == 0x616B3432:
        version = struct.unpack_from("<i", raw, 4)[0]
        if version != 1:
            raise SystemExit(f"{path}: only version 1 (fp32) llama2.c exports are supported")
        dim, hid, nl, nh, nkv, vocab, seq = struct.unpack_from("<7i", raw, 8)
        shared = raw[36] == 1
        off = 256
    else:
        dim, hid, nl, nh, nkv, vocab, seq = struct.unpack_from("<7i", raw, 0)
        shared = vocab > 0
        vocab = abs(vocab)
        off = 28
    hs = dim // nh
    kv = nkv * hs
    data = np.frombuffer(raw, dtype="<f4", offset=off)
    pos = 0

    def take(*shape):
        nonlocal pos
        n = int(np.prod(shape))
        a = data[pos : pos + n].reshape(shape).copy()
        pos += n
        return torch.from_numpy(a)

    cfg = dict(dim=dim, hidden=hid, n_layers=nl, n_heads=nh, n_kv=nkv, vocab=vocab, seq=seq)
    w = {}
    if magic == 0x616B3432:  # version 1: norms first
        w["attn_norm"] = take(nl, dim)
        w["ffn_norm"] = take(nl, dim)
        w["final_norm"] = take(dim)
        w["emb"] = take(vocab, dim)
        w["wq"], w["wk"], w["wv"], w["wo"] = take(nl, dim, dim), take(nl, kv, dim), take(nl, kv, dim), take(nl, dim, dim)
        w["w1"], w["w2"], w["w3"] = take(nl, hid, dim), take(nl, dim, hid), take(nl, hid, dim)
    else:
        w["emb"] = take(vocab, dim)
        w["attn_norm"] = take(nl, dim)
        w["wq"], w["wk"], w["wv"], w["wo"] = take(nl, dim, dim), take(nl, kv, dim), take(nl, kv, dim), take(nl, dim, dim)
        w["ffn_norm"] = take(nl, dim)
        w["w1"], w["w2"], w["w3"] = take(nl, hid, dim), take(nl, dim, hid), take(nl, hid, dim)
        w["final_norm"] = take(dim)
        pos += seq * hs  # freq_cis_real, freq_cis_imag (recomputed below)
    w["cls"] = w["emb"] if shared else take(vocab, dim)
    return cfg, w


def rope_tables(cfg, T):
    """llama2.c: freq_i = 1 / 10000^(2i/hs) in float32, angle = pos * freq_i."""
    hs = cfg["dim"] // cfg["n_heads"]
    i = np.arange(hs // 2, dtype=np.float32)
    freq = (np.float32(1) / np.power(np.float32(10000), (2 * i / hs).astype(np.float32))).astype(np.float32)
    ang = (np.arange(T, dtype=np.float32)[:, None] * freq[None, :]).astype(np.float32)
    return torch.from_numpy(np.cos(ang.astype(np.float64)).astype(np.float32)), torch.from_numpy(
        np.sin(ang.astype(np.float64)).astype(np.float32)
    )


def forward(cfg, w, lin, tokens):
    """Logits [B, T, vocab] of tokens [B, T]; `lin[l][name]` are the linear weights [out, in]."""
    B, T = tokens.shape
    dim, nh, nkv = cfg["dim"], cfg["n_heads"], cfg["n_kv"]
    hs = dim // nh
    cos, sin = rope_tables(cfg, T)
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]

    def rms(x, g):
        return g * (x * torch.rsqrt((x * x).mean(-1, keepdim=True) + 1e-5))

    def rope(x):  # x [B, T, H, hs]; rotate adjacent pairs (2i, 2i+1)
        a, b = x[..., 0::2], x[..., 1::2]
        return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2)

    x = w["emb"][tokens]
    mask = torch.full((T, T), float("-inf")).triu(1)
    for l in range(cfg["n_layers"]):
        L = lin[l]
        h = rms(x, w["attn_norm"][l])
        q = rope((h @ L["wq"].T).view(B, T, nh, hs))
        k = rope((h @ L["wk"].T).view(B, T, nkv, hs))
        v = (h @ L["wv"].T).view(B, T, nkv, hs)
        rep = nh // nkv
        k = k.repeat_interleave(rep, dim=2)
        v = v.repeat_interleave(rep, dim=2)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        att = (q @ k.transpose(-1, -2)) / np.sqrt(hs) + mask
        o = (att.softmax(-1) @ v).transpose(1, 2).reshape(B, T, dim)
        x = x + o @ L["wo"].T
        h = rms(x, w["ffn_norm"][l])
        g = h @ L["w1"].T
        x = x + (torch.nn.functional.silu(g) * (h @ L["w3"].T)) @ L["w2"].T
    return rms(x, w["final_norm"]) @ w["cls"].T


def linears(w, cfg):
    return [{n: w[n][l] for n in NAMES} for l in range(cfg["n_layers"])]


# ------------------------------------------------------------------------------ data


def encode_with_bos(sp, path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return np.array([1] + sp.encode(text), dtype=np.int64)


def calibration_windows(stream, nsamples, seqlen, seed):
    """GPTQ get_wikitext2's trainloader rule on one token stream."""
    random.seed(seed)
    out = []
    for _ in range(nsamples):
        i = random.randint(0, len(stream) - seqlen - 1)
        out.append(stream[i : i + seqlen])
    return np.stack(out)


@torch.no_grad()
def perplexity(cfg, w, lin, tokens, seqlen, batch=4, limit=None):
    n = len(tokens) // seqlen
    if limit:
        n = min(n, limit)
    win = torch.from_numpy(tokens[: n * seqlen].reshape(n, seqlen))
    nll = 0.0
    for s in range(0, n, batch):
        t = win[s : s + batch]
        logits = forward(cfg, w, lin, t)[:, :-1].double()
        ce = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), t[:, 1:].reshape(-1), reduction="none"
        ).view(t.shape[0], -1)
        nll += float((ce.mean(1) * seqlen).sum())  # GPTQ: window loss * seqlen
    return float(np.exp(nll / (n * seqlen))), n


def fisher(cfg, w, windows):
    """F = sum over windows of (d mean-CE / dW)^2 for every linear weight."""
    lin = [{n: w[n][l].clone().requires_grad_(True) for n in NAMES} for l in range(cfg["n_layers"])]
    F = [{n: torch.zeros(lin[l][n].shape, dtype=torch.float64) for n in NAMES} for l in range(cfg["n_layers"])]
    losses = []
    for x in windows:
        t = torch.from_numpy(x[None, :])
        logits = forward(cfg, w, lin, t)[:, :-1]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), t[:, 1:].reshape(-1))
        grads = torch.autograd.grad(loss, [lin[l][n] for l in range(cfg["n_layers"]) for n in NAMES])
        for i, g in enumerate(grads):
            F[i // len(NAMES)][NAMES[i % len(NAMES)]] += g.double() ** 2
        losses.append(float(loss))
    return [{n: F[l][n].float() for n in NAMES} for l in range(cfg["n_layers"])], float(np.mean(losses))


def read_fisher_file(path, cfg, w):
    a = np.fromfile(path, dtype="<f4")
    out, o = [], 0
    for l in range(cfg["n_layers"]):
        d = {}
        for n in NAMES:
            shape = tuple(w[n][l].shape)
            m = shape[0] * shape[1]
            d[n] = torch.from_numpy(a[o : o + m].reshape(shape).copy())
            o += m
        out.append(d)
    if o != len(a):
        raise SystemExit(f"{path}: {len(a)} floats, expected {o}")
    return out


# ----------------------------------------------------------------- official pipeline


def outlier_threshold(wnp, r):
    """generate_outlier_config.py's per-module bound for range r."""
    q1 = np.quantile(wnp, 0.25)
    q3 = np.quantile(wnp, 0.75)
    iqr = q3 - q1
    return max(abs(q1 - r * iqr), abs(q3 + r * iqr))


def outlier_pct(mods, r):
    """Outlier percentage as generate_outlier_config.py counts it (strict < -T or > T)."""
    tot = cnt = 0
    for m in mods:
        T = outlier_threshold(m, r)
        cnt += int((m < -T).sum() + (m > T).sum())
        tot += m.size
    return 100.0 * cnt / tot


def find_range(mods, target):
    """Largest r (bisection) with outlier_pct(r) >= target: the hand-tuning step, automated."""
    lo, hi = 0.0, 1.0
    if outlier_pct(mods, 0.0) < target:
        raise SystemExit(f"even r = 0 gives fewer than {target}% outliers")
    while outlier_pct(mods, hi) >= target:
        lo, hi = hi, hi * 2
    for _ in range(200):
        mid = (lo + hi) / 2
        if mid <= lo or mid >= hi:
            break
        if outlier_pct(mods, mid) >= target:
            lo = mid
        else:
            hi = mid
    return lo


def remove_sensitive(W, G, pct):
    """outliers.py by sensitivity: F > k-th largest F (k = int(numel*pct/100)); zeroes them."""
    k = int(W.numel() * pct / 100)
    if k == 0:
        return W.clone(), torch.zeros_like(W, dtype=torch.bool)
    thr = G.reshape(-1).topk(k).values[-1]
    t = G > thr
    return W * ~t, t


def remove_by_threshold(W, T):
    t = (W >= T) | (W <= -T)
    return W * ~t, t


def kmeans_row(x, sw, k, seed):
    from sklearn.cluster import KMeans

    if sw.sum() == 0:
        sw = np.ones_like(sw)
    km = KMeans(n_clusters=k, random_state=seed, n_init="auto", max_iter=50)
    km.fit(x.reshape(-1, 1), sample_weight=sw)
    return km.cluster_centers_.reshape(-1), km.labels_.astype(np.int64), int(km.n_iter_)


def quantize_module(W, G, bits, seed, sens_pct, T):
    """Steps 3-5 for one module: returns the evaluated weight and per-module facts."""
    Wd, sens = (W.clone(), torch.zeros_like(W, dtype=torch.bool))
    if sens_pct > 0:
        Wd, sens = remove_sensitive(W, G, sens_pct)
    outl = torch.zeros_like(sens)
    if T is not None:
        Wd, outl = remove_by_threshold(Wd, T)
    removed = sens | outl
    wnp, gnp = Wd.numpy().astype(np.float32), G.numpy().astype(np.float32)
    rows, cols = wnp.shape
    k = 2**bits
    lut = np.zeros((rows, k), dtype=np.float32)
    labels = np.zeros((rows, cols), dtype=np.int64)
    sweights = np.zeros((rows, cols), dtype=np.float32)
    iters = 0
    for i in range(rows):
        sw = gnp[i] * (wnp[i] != 0)
        sweights[i] = sw
        c, lab, it = kmeans_row(wnp[i], sw, k, seed)
        lut[i], labels[i] = c, lab
        iters += it
    dense = np.take_along_axis(lut, labels, axis=1)  # dequantized dense part
    # Sparse part: original minus the centroid nearest 0, at removed non-zero positions.
    zero_map = lut[np.arange(rows), np.abs(lut).argmin(1)]
    orig = W.numpy()
    sp_mask = removed.numpy() & (orig != 0)
    sparse = np.where(sp_mask, orig - zero_map[:, None], 0).astype(np.float32)
    Wq = (dense + sparse).astype(np.float32)
    keep = ~removed.numpy()
    facts = dict(
        n_sens=int(sens.sum()),
        n_out=int(outl.sum()),
        inertia=float((sweights * (wnp - dense) ** 2)[keep].sum()),
        err=float(((orig - Wq) ** 2).sum()),
        iters=iters / rows,
        removed=removed.numpy(),
        lut=lut,
        labels=labels,
        sample_weight=sweights,
        sparse=sparse,
        Wq=Wq,
    )
    return torch.from_numpy(Wq), facts


def compare_module(d, l, n, W, G, f, bits, seed):
    """One line comparing the official parts `f` with squeezebench's dump in `d`."""
    from sklearn.cluster import KMeans

    rows, cols = W.shape
    base = os.path.join(d, f"l{l}_{n}")
    lut = np.fromfile(base + ".lut.f32", "<f4").reshape(rows, -1)
    codes = np.fromfile(base + ".codes.u8", np.uint8).reshape(rows, cols).astype(np.int64)
    sp = np.fromfile(base + ".sparse.f32", "<f4").reshape(rows, cols)
    rem_sb = np.fromfile(base + ".removed.u8", np.uint8).reshape(rows, cols).astype(bool)
    wq = np.fromfile(base + ".wq.f32", "<f4").reshape(rows, cols)
    orig, g = W.numpy(), G.numpy()
    rem = f["removed"] & (orig != 0)  # official to_sparse() keeps non-zeros only
    same_sets = np.array_equal(rem, rem_sb)
    sw_sb = g * ((orig * ~rem_sb) != 0)  # squeezebench: F * (W_d != 0)
    same_sw = np.array_equal(sw_sb.astype(np.float32), f["sample_weight"])
    # Centroids: the two implementations draw different k-means++ inits, so the
    # centroids are compared from the SAME init: scikit-learn's k-means++ init of
    # each row is written to <dir>/l{l}_{n}.init.f64; squeezellm_seeds.ts
    # --lloyd-init <dir> runs squeezebench's Lloyd from it (<dir>/l{l}_{n}.lloyd.f64).
    init_path, lloyd_path = base + ".init.f64", base + ".lloyd.f64"
    k = 2**bits
    if not os.path.exists(init_path):
        from sklearn.cluster import kmeans_plusplus

        inits = np.zeros((rows, k))
        for i in range(rows):
            sw = f["sample_weight"][i]
            sw = sw if sw.sum() > 0 else np.ones_like(sw)
            c, _ = kmeans_plusplus((orig[i] * ~rem_sb[i]).reshape(-1, 1), k, sample_weight=sw,
                                   random_state=seed)
            inits[i] = c.ravel()
        inits.astype("<f8").tofile(init_path)
    cent = "centroids: no squeezebench Lloyd file (run squeezellm_seeds.ts --lloyd-init)"
    if os.path.exists(lloyd_path):
        inits = np.fromfile(init_path, "<f8").reshape(rows, k)
        sb_c = np.fromfile(lloyd_path, "<f8").reshape(rows, k)
        rel = np.zeros(rows)
        for i in range(rows):
            sw = f["sample_weight"][i]
            sw = sw if sw.sum() > 0 else np.ones_like(sw)
            km = KMeans(n_clusters=k, init=inits[i].reshape(-1, 1), n_init=1, max_iter=50)
            km.fit((orig[i] * ~rem_sb[i]).reshape(-1, 1), sample_weight=sw)
            c = np.sort(km.cluster_centers_.ravel())
            rel[i] = np.abs(c - np.sort(sb_c[i])).max() / np.abs(c).max()
        cent = (f"same-init centroids: {int((rel < 1e-5).sum())}/{rows} rows within 1e-5 "
                f"(max rel. diff {rel.max():.1e})")
    # Sparse values: original - dense decode there; the decode must be the centroid nearest 0.
    dec = np.take_along_axis(lut, codes, axis=1)
    zero_map = lut[np.arange(rows), np.abs(lut).argmin(1)][:, None] * np.ones((1, cols), np.float32)
    zm_ok = bool(np.all(dec[rem_sb] == zero_map[rem_sb]))
    res_err = float(np.abs(sp - (orig - dec))[rem_sb].max()) if rem_sb.any() else 0.0
    keep = ~f["removed"]
    e_off = float((g * (f["Wq"] - orig) ** 2)[keep].sum())
    e_sb = float((g * (wq - orig) ** 2)[keep].sum())
    return (f"{l:5d} {n:6s} sets {'=' if same_sets else 'DIFF'} ({int(rem_sb.sum()):3d})  "
            f"sample-weights {'=' if same_sw else 'DIFF'}  {cent}  "
            f"decode@sparse=zero-centroid {zm_ok}  |sparse-(W-decode)| {res_err:.1e}  "
            f"F-wtd err off {e_off:.4e} sb {e_sb:.4e}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="../shared/data/stories260K/stories260K.bin")
    ap.add_argument("--tokenizer", default=None, help="sentencepiece .model (default: tok512.model beside the model)")
    ap.add_argument("--data-dir", default="../shared/data")
    ap.add_argument("--bits", type=int, default=3)
    ap.add_argument("--sensitive", type=float, default=0.05, help="%% sensitive values (per module)")
    ap.add_argument("--outliers", type=float, default=0.40, help="%% outliers: the global range r is searched")
    ap.add_argument("--outlier-range", type=float, default=None, help="range r directly")
    ap.add_argument("--seed", type=int, default=0, help="KMeans random_state (official: 0)")
    ap.add_argument("--calib-seed", type=int, default=0)
    ap.add_argument("--fisher-samples", type=int, default=100)
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--fisher-file", default=None)
    ap.add_argument("--limit", type=int, default=None, help="evaluate only the first N windows")
    ap.add_argument("--fp32-only", action="store_true")
    ap.add_argument("--dump", default=None, help="folder for per-module .npz arrays")
    ap.add_argument("--quiet", action="store_true", help="no per-module lines")
    ap.add_argument("--compare", default=None, help="squeezebench dump folder (squeezellm_seeds.ts --dump)")
    ap.add_argument("--no-ppl", action="store_true", help="skip the perplexity (e.g. with --compare)")
    a = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    import sentencepiece as spm
    import sklearn

    if tuple(int(v) for v in sklearn.__version__.split(".")[:2]) < (1, 3):
        print(f"warning: scikit-learn {sklearn.__version__} < 1.3: k-means++ ignores sample_weight "
              "(the official code pins 1.3.1)", file=sys.stderr)

    cfg, w = load_llama2c(a.model)
    tok = a.tokenizer or os.path.join(os.path.dirname(a.model), "tok512.model")
    sp = spm.SentencePieceProcessor(model_file=tok)
    evals = encode_with_bos(sp, os.path.join(a.data_dir, "tinystories/tinystories-valid-head.txt"))
    base = linears(w, cfg)
    t0 = time.time()
    if a.fp32_only:
        ppl, n = perplexity(cfg, w, base, evals, a.seqlen, limit=a.limit)
        print(f"fp32 tinystories ppl {ppl:.6f} over {n} windows of {a.seqlen} ({len(evals)} tokens)")
        return

    if a.fisher_file:
        G = read_fisher_file(a.fisher_file, cfg, w)
        print(f"fisher: read {a.fisher_file}")
    else:
        train = encode_with_bos(sp, os.path.join(a.data_dir, "tinystories/tinystories-train-sample.txt"))
        wins = calibration_windows(train, a.fisher_samples, a.seqlen, a.calib_seed)
        G, mean_loss = fisher(cfg, w, wins)
        print(f"fisher: {len(wins)} windows of {a.seqlen} (train stream {len(train)} tokens), "
              f"mean loss {mean_loss:.6f}, {time.time() - t0:.1f} s")

    r = a.outlier_range
    if r is None and a.outliers > 0:
        mods = [w[n][l].numpy() for l in range(cfg["n_layers"]) for n in NAMES]
        r = find_range(mods, a.outliers)
        print(f"outlier range r = {r:.6g} gives {outlier_pct(mods, r):.4f}% outliers")

    lin, tot_s, tot_o, tot_n = [], 0, 0, 0
    if a.dump:
        os.makedirs(a.dump, exist_ok=True)
    print("layer module  sens  outl  T          kmeans-inertia  |W-Wq|^2   iters")
    for l in range(cfg["n_layers"]):
        d = {}
        for n in NAMES:
            W = w[n][l]
            T = outlier_threshold(W.numpy(), r) if r is not None else None
            d[n], f = quantize_module(W, G[l][n], a.bits, a.seed, a.sensitive, T)
            tot_s, tot_o, tot_n = tot_s + f["n_sens"], tot_o + f["n_out"], tot_n + W.numel()
            if not a.quiet:
                ts = f"{T:.6g}" if T is not None else "-"
                print(f"{l:5d} {n:6s} {f['n_sens']:5d} {f['n_out']:5d}  {ts:10s} {f['inertia']:.6e}  "
                      f"{f['err']:.4e} {f['iters']:.2f}")
            if a.compare:
                print(compare_module(a.compare, l, n, W, G[l][n], f, a.bits, a.seed))
            if a.dump:
                np.savez(os.path.join(a.dump, f"l{l}_{n}.npz"), **{k: v for k, v in f.items() if isinstance(v, np.ndarray)})
        lin.append(d)
    print(f"sparse: {tot_s} sensitive + {tot_o} outliers = {100 * (tot_s + tot_o) / tot_n:.4f}% of {tot_n} weights")
    if a.no_ppl:
        return
    ppl, n = perplexity(cfg, w, lin, evals, a.seqlen, limit=a.limit)
    print(f"official-{a.bits}bit seed {a.seed} sensitive {a.sensitive} outliers {a.outliers} "
          f"(r={r}) tinystories ppl {ppl:.6f} over {n} windows ({time.time() - t0:.1f} s)")


if __name__ == "__main__":
    main()
