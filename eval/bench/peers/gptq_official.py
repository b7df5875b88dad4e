#!/usr/bin/env python3
"""Peer timing: IST-DASLab/gptq's `GPTQ.add_batch` and `GPTQ.fasterquant`
(gptq.py) with its min-max `Quantizer` (quant.py), step by step as the
official code runs them, on the CPU, for one linear layer.

Written from a reading of the official code (not copied). What it does:
  add_batch(inp):  tmp = 1 (one batch); inp = inp.t()  ([cols, N]);
                   H *= nsamples / (nsamples + tmp); nsamples += tmp;
                   inp = sqrt(2 / nsamples) * inp.float(); H += inp @ inp.t()
  fasterquant(blocksize=128, percdamp=.01, groupsize, actorder=False):
                   W = weight.float(); tick; find_params(W) (per channel);
                   dead = diag(H) == 0 -> H[dead, dead] = 1, W[:, dead] = 0;
                   damp = percdamp * mean(diag(H)); H += damp * I;
                   Hinv = cholesky(cholesky_inverse(cholesky(H)), upper=True);
                   per block of `blocksize` columns: per column i, find_params
                   on W[:, i:i+groupsize] at a group start, q = quantize(w),
                   err1 = (w - q) / d, W1[:, i:] -= err1 x Hinv1[i, i:];
                   then W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:].
The quantizer: xmin = min(min(x), 0), xmax = max(max(x), 0) per row,
(-1, +1) for an all-zero row, scale = (xmax - xmin) / maxq,
zero = round(-xmin / scale); quantize(x) = scale * (clamp(round(x / scale)
+ zero, 0, maxq) - zero).

Input: float32 little-endian files written by eval/bench/quant.ts:
  DIR/x.bin  [calib_rows, cols] calibration rows (one window, GPTQ's tmp = 1)
  DIR/w.bin  [rows, cols] weights
Output: one JSON line: {"threads", "hessianSeconds", "fasterquantSeconds",
"hessianCpuSeconds", "fasterquantCpuSeconds", "error", "torch"}.
fasterquantSeconds is timed like the official `tick` (from before
find_params to the end of the sweep); hessianSeconds is the add_batch call;
the *CpuSeconds are this process's CPU time (every thread) over the same
spans.

--hessian-only: add_batch alone (the output has no fasterquant fields and
no error; w.bin is read but not used).

Threads: the caller sets OMP_NUM_THREADS / OPENBLAS_NUM_THREADS before this
process starts (OpenBLAS reads them at load); --threads also goes to
torch.set_num_threads.

Run: python3 eval/bench/peers/gptq_official.py DIR --rows 4096 --cols 4096 \
       --calib-rows 4096 --bits 3 --group 128 --threads 1
"""

import argparse
import json
import math
import time

import numpy as np
import torch


def quantize(x, scale, zero, maxq):
    q = torch.clamp(torch.round(x / scale) + zero, 0, maxq)
    return scale * (q - zero)


class Quantizer:
    """quant.py's Quantizer, per channel, asymmetric or symmetric, no MSE search."""

    def __init__(self, bits, sym=False):
        self.maxq = torch.tensor(2**bits - 1)
        self.sym = sym
        self.scale = torch.zeros(1)
        self.zero = torch.zeros(1)

    def find_params(self, x):
        tmp = torch.zeros(x.shape[0])
        xmin = torch.minimum(x.min(1)[0], tmp)
        xmax = torch.maximum(x.max(1)[0], tmp)
        if self.sym:
            xmax = torch.maximum(torch.abs(xmin), xmax)
            tmp = xmin < 0
            if torch.any(tmp):
                xmin[tmp] = -xmax[tmp]
        tmp = (xmin == 0) & (xmax == 0)
        xmin[tmp] = -1
        xmax[tmp] = +1
        self.scale = (xmax - xmin) / self.maxq
        if self.sym:
            self.zero = torch.full_like(self.scale, (self.maxq + 1) / 2)
        else:
            self.zero = torch.round(-xmin / self.scale)
        self.scale = self.scale.reshape(-1, 1)
        self.zero = self.zero.reshape(-1, 1)

    def ready(self):
        return torch.all(self.scale != 0)


class GPTQ:
    def __init__(self, weight):
        self.weight = weight
        self.rows, self.columns = weight.shape
        self.H = torch.zeros((self.columns, self.columns))
        self.nsamples = 0

    def add_batch(self, inp):
        if len(inp.shape) == 2:
            inp = inp.unsqueeze(0)
        tmp = inp.shape[0]
        if len(inp.shape) == 3:
            inp = inp.reshape((-1, inp.shape[-1]))
        inp = inp.t()
        self.H *= self.nsamples / (self.nsamples + tmp)
        self.nsamples += tmp
        inp = math.sqrt(2 / self.nsamples) * inp.float()
        self.H += inp.matmul(inp.t())

    def fasterquant(self, blocksize=128, percdamp=0.01, groupsize=-1):
        W = self.weight.clone().float()
        tick = time.perf_counter()
        cpu = time.process_time()
        if not self.quantizer.ready():
            self.quantizer.find_params(W)

        H = self.H
        del self.H
        dead = torch.diag(H) == 0
        H[dead, dead] = 1
        W[:, dead] = 0

        Losses = torch.zeros_like(W)
        Q = torch.zeros_like(W)

        damp = percdamp * torch.mean(torch.diag(H))
        diag = torch.arange(self.columns)
        H[diag, diag] += damp
        H = torch.linalg.cholesky(H)
        H = torch.cholesky_inverse(H)
        H = torch.linalg.cholesky(H, upper=True)
        Hinv = H

        for i1 in range(0, self.columns, blocksize):
            i2 = min(i1 + blocksize, self.columns)
            count = i2 - i1
            W1 = W[:, i1:i2].clone()
            Q1 = torch.zeros_like(W1)
            Err1 = torch.zeros_like(W1)
            Losses1 = torch.zeros_like(W1)
            Hinv1 = Hinv[i1:i2, i1:i2]
            for i in range(count):
                w = W1[:, i]
                d = Hinv1[i, i]
                if groupsize != -1 and (i1 + i) % groupsize == 0:
                    self.quantizer.find_params(W[:, (i1 + i):(i1 + i + groupsize)])
                q = quantize(
                    w.unsqueeze(1), self.quantizer.scale, self.quantizer.zero, self.quantizer.maxq
                ).flatten()
                Q1[:, i] = q
                Losses1[:, i] = (w - q) ** 2 / d**2
                err1 = (w - q) / d
                W1[:, i:] -= err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
                Err1[:, i] = err1
            Q[:, i1:i2] = Q1
            Losses[:, i1:i2] = Losses1 / 2
            W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
        seconds = time.perf_counter() - tick
        cpu = time.process_time() - cpu
        return Q, torch.sum(Losses).item(), seconds, cpu


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir")
    ap.add_argument("--rows", type=int, required=True)
    ap.add_argument("--cols", type=int, required=True)
    ap.add_argument("--calib-rows", type=int, required=True)
    ap.add_argument("--bits", type=int, default=3)
    ap.add_argument("--group", type=int, default=128, help="-1: one group per row")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--hessian-only", action="store_true", help="time add_batch alone")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    x = np.fromfile(a.dir + "/x.bin", dtype=np.float32).reshape(a.calib_rows, a.cols)
    w = np.fromfile(a.dir + "/w.bin", dtype=np.float32).reshape(a.rows, a.cols)
    g = GPTQ(torch.from_numpy(w))
    g.quantizer = Quantizer(a.bits)
    t, c = time.perf_counter(), time.process_time()
    g.add_batch(torch.from_numpy(x))
    hessian, hessian_cpu = time.perf_counter() - t, time.process_time() - c
    if a.hessian_only:
        print(json.dumps({
            "threads": a.threads,
            "hessianSeconds": hessian,
            "hessianCpuSeconds": hessian_cpu,
            "torch": torch.__version__,
        }))
        return
    _, error, seconds, cpu = g.fasterquant(groupsize=a.group)
    print(json.dumps({
        "threads": a.threads,
        "hessianSeconds": hessian,
        "fasterquantSeconds": seconds,
        "hessianCpuSeconds": hessian_cpu,
        "fasterquantCpuSeconds": cpu,
        "error": error,
        "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
