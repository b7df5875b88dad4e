;; WebAssembly SIMD (f32x4) kernels of the CPU forward pass: the linear
;; layers (`matmul`), causal softmax attention (`attention`, and
;; `attention_hs8` for head size 8), RMSNorm (`rmsnorm`), the SwiGLU gate
;; (`swiglu`) and the log-sum-exp of the logits (`softmax_sums`, for
;; perplexity); and of GPTQ's solver (`gemm_f32`, `gptq_block`,
;; `gemm_f64`, at the end). Two polynomial exps: `attention` keeps Cephes'
;; expf inline (natural base, ln 2 split in two: ≈ 1 ulp whatever the score
;; gap; its cost is small next to the dot products of heads of 64 or 128),
;; while `attention_hs8`, `swiglu` and `softmax_sums`, where the exp is a
;; third of the work, share `$exp2_map` (base 2, a few operations fewer).
;;
;; Build: `deno run -A model/wasm/build.ts` (wat2wasm from the `wabt` npm
;; package) writes model/wasm/_kernels_wasm.ts; model/wasm/build_test.ts
;; checks that the committed bytes are exactly what this source compiles to.
;; The caller (model/wasm/kernels.ts) owns the memory layout: it copies the
;; operands in, calls a kernel, and copies the result out.
;;
;; The forward kernels (`matmul` … `softmax_sums`) accumulate in float32
;; (`rmsnorm` and `softmax_sums`' sums in float64) with plain (unfused)
;; multiply and add, so their results are bit-identical on every engine. GPTQ's solver kernels use relaxed SIMD's multiply-add
;; (`f32x4.relaxed_madd` in `gemm_f32` when asked, `f32x4.relaxed_nmadd` in
;; `gptq_block`, `f64x2.relaxed_madd` in `gemm_f64`): the engine may fuse it
;; (one rounding; V8 on x86-64 with FMA3 and on arm64 does) or not (two
;; roundings), so those results can differ between hosts in the last ulp,
;; and are fixed on any one host.
(module
  (memory (export "memory") 1)

  ;; [Σa, Σb, Σc, Σd] of four f32x4 vectors: lane j = (l0+l2)+(l1+l3) of vector j.
  (func $hsum4 (param $a v128) (param $b v128) (param $c v128) (param $d v128) (result v128)
    (local $ab v128) (local $cd v128)
    ;; ab = (a0+a2, b0+b2, a1+a3, b1+b3)
    (local.set $ab
      (f32x4.add
        (i8x16.shuffle 0 1 2 3 16 17 18 19 4 5 6 7 20 21 22 23 (local.get $a) (local.get $b))
        (i8x16.shuffle 8 9 10 11 24 25 26 27 12 13 14 15 28 29 30 31 (local.get $a) (local.get $b))))
    ;; cd = (c0+c2, d0+d2, c1+c3, d1+d3)
    (local.set $cd
      (f32x4.add
        (i8x16.shuffle 0 1 2 3 16 17 18 19 4 5 6 7 20 21 22 23 (local.get $c) (local.get $d))
        (i8x16.shuffle 8 9 10 11 24 25 26 27 12 13 14 15 28 29 30 31 (local.get $c) (local.get $d))))
    ;; (ab0, ab1, cd0, cd1) + (ab2, ab3, cd2, cd3)
    (f32x4.add
      (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23 (local.get $ab) (local.get $cd))
      (i8x16.shuffle 8 9 10 11 12 13 14 15 24 25 26 27 28 29 30 31 (local.get $ab) (local.get $cd))))

  ;; -------------------------------------------------------------------------
  ;; $exp2_map: dst[i] = 2^((src[i] − m) · c) lane-wise for the vectors from
  ;; $src up to $end (byte pointers; dst may be src); returns the lane-wise
  ;; sum of the results (vector i added in order).
  ;;
  ;; 2^x is Cephes' exp2f: k = round(x) (adding and subtracting 1.5·2²³
  ;; rounds to the nearest integer; the sum kf then holds k in its low
  ;; mantissa bits, so (bits(kf) + 127) << 23 is the float 2^k), r = x − k
  ;; ∈ [−½, ½] exactly, 2^r ≈ 1 + r·P(r) with P of degree 5 (Cephes'
  ;; coefficients, evaluated by Estrin's scheme: a shorter dependency chain
  ;; than Horner's). Relative error ≤ 2e−7 (≈ 1.7 ulp; Cephes' bound;
  ;; model/wasm/kernels_test.ts checks swiglu and softmax_sums against
  ;; float64). x is clamped above at 127.49 (the result stays finite,
  ;; ≤ 2.4e38); x < −126 gives exactly 0 (results below the smallest normal
  ;; float are flushed, so −∞ gives 0); NaN stays NaN. e^y is computed with
  ;; c = log2 e, which adds the rounding of (y − m) · c: a relative error of
  ;; |y − m| · 6e−8 more.
  ;;
  ;; One function with the loop inside, its constants in locals: V8 inlines
  ;; only callees of about a tenth of the caller's size, so a per-vector exp
  ;; would stay a call, and it rebuilds a v128.const at every use.
  (func $exp2_map (param $src i32) (param $dst i32) (param $end i32) (param $m v128) (param $c v128)
    (result v128)
    (local $x v128) (local $kf v128) (local $r v128) (local $r2 v128) (local $y v128) (local $sum v128)
    (local $hi v128) (local $lo v128) (local $round v128) (local $one v128) (local $bias v128)
    (local $p0 v128) (local $p1 v128) (local $p2 v128) (local $p3 v128) (local $p4 v128) (local $p5 v128)
    (local.set $hi (v128.const f32x4 127.49 127.49 127.49 127.49))
    (local.set $lo (v128.const f32x4 -126 -126 -126 -126))
    (local.set $round (v128.const f32x4 12582912 12582912 12582912 12582912)) ;; 1.5·2²³
    (local.set $one (v128.const f32x4 1 1 1 1))
    (local.set $bias (v128.const i32x4 127 127 127 127))
    (local.set $p0 (f32x4.splat (f32.const 1.535336188319500e-4)))
    (local.set $p1 (f32x4.splat (f32.const 1.339887440266574e-3)))
    (local.set $p2 (f32x4.splat (f32.const 9.618437357674640e-3)))
    (local.set $p3 (f32x4.splat (f32.const 5.550332471162809e-2)))
    (local.set $p4 (f32x4.splat (f32.const 2.402264791363012e-1)))
    (local.set $p5 (f32x4.splat (f32.const 6.931472028550421e-1)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $src) (local.get $end)))
        (local.set $x (f32x4.mul (f32x4.sub (v128.load (local.get $src)) (local.get $m)) (local.get $c)))
        (local.set $kf (f32x4.add (f32x4.pmin (local.get $x) (local.get $hi)) (local.get $round)))
        (local.set $r (f32x4.sub (local.get $x) (f32x4.sub (local.get $kf) (local.get $round))))
        (local.set $r2 (f32x4.mul (local.get $r) (local.get $r)))
        ;; P = ((p0·r + p1)·r² + (p2·r + p3))·r² + (p4·r + p5)
        (local.set $y
          (f32x4.add
            (f32x4.mul
              (f32x4.add
                (f32x4.mul (f32x4.add (f32x4.mul (local.get $r) (local.get $p0)) (local.get $p1)) (local.get $r2))
                (f32x4.add (f32x4.mul (local.get $r) (local.get $p2)) (local.get $p3)))
              (local.get $r2))
            (f32x4.add (f32x4.mul (local.get $r) (local.get $p4)) (local.get $p5))))
        ;; (1 + r·P) · 2^k, then 0 where x < −126
        (local.set $y
          (v128.andnot
            (f32x4.mul
              (f32x4.add (f32x4.mul (local.get $r) (local.get $y)) (local.get $one))
              (i32x4.shl (i32x4.add (local.get $kf) (local.get $bias)) (i32.const 23)))
            (f32x4.lt (local.get $x) (local.get $lo))))
        (v128.store (local.get $dst) (local.get $y))
        (local.set $sum (f32x4.add (local.get $sum) (local.get $y)))
        (local.set $src (i32.add (local.get $src) (i32.const 16)))
        (local.set $dst (i32.add (local.get $dst) (i32.const 16)))
        (br $next)))
    (local.get $sum))

  ;; swiglu: out[i] = silu(h1[i]) · h3[i] = h1[i] / (1 + e^−h1[i]) · h3[i] for
  ;; i < n, n a multiple of 4, f32: e = e^−h1 into the scratch $pe by
  ;; $exp2_map, then out = h1 / (1 + e) · h3 (out may be h1 or h3).
  (func (export "swiglu") (param $p1 i32) (param $p3 i32) (param $pe i32) (param $po i32) (param $n i32)
    (local $i i32) (local $end i32)
    (local.set $end (i32.shl (local.get $n) (i32.const 2)))
    (drop (call $exp2_map (local.get $p1) (local.get $pe) (i32.add (local.get $p1) (local.get $end))
      (v128.const i32x4 0 0 0 0)
      (v128.const f32x4 -1.44269504088896341 -1.44269504088896341 -1.44269504088896341 -1.44269504088896341)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
        (v128.store (i32.add (local.get $po) (local.get $i))
          (f32x4.mul
            (f32x4.div (v128.load (i32.add (local.get $p1) (local.get $i)))
              (f32x4.add (v128.const f32x4 1 1 1 1) (v128.load (i32.add (local.get $pe) (local.get $i)))))
            (v128.load (i32.add (local.get $p3) (local.get $i)))))
        (local.set $i (i32.add (local.get $i) (i32.const 16)))
        (br $next))))

  ;; softmax_sums: for each row t < T of x [T, np] (np a multiple of 4; pad
  ;; lanes hold −∞), m[t] = max_i x[t, i] (f32, at $pm) and
  ;; s[t] = Σ_i e^(x[t, i] − m[t]) (f64, at $ps): the terms in f32 by
  ;; $exp2_map into the scratch $pe [np], then summed in f64 in two f64x2
  ;; accumulators (lanes 0, 1 and lanes 2, 3 of each vector, in i order),
  ;; combined as (a0 + a1) + (b0 + b1). The caller takes log-sum-exp =
  ;; m + log s (model/wasm/kernels.ts). NaN in a row makes its sum NaN.
  (func (export "softmax_sums") (param $px i32) (param $T i32) (param $np i32) (param $pe i32) (param $pm i32) (param $ps i32)
    (local $t i32) (local $p i32) (local $end i32) (local $m v128) (local $e v128)
    (local $a v128) (local $b v128)
    (block $done_rows
      (loop $rows
        (br_if $done_rows (i32.ge_u (local.get $t) (local.get $T)))
        (local.set $end (i32.add (local.get $px) (i32.shl (local.get $np) (i32.const 2))))
        ;; m = max over the row, in every lane
        (local.set $m (v128.const f32x4 -inf -inf -inf -inf))
        (local.set $p (local.get $px))
        (block $done_max
          (loop $max
            (br_if $done_max (i32.ge_u (local.get $p) (local.get $end)))
            (local.set $m (f32x4.pmax (local.get $m) (v128.load (local.get $p))))
            (local.set $p (i32.add (local.get $p) (i32.const 16)))
            (br $max)))
        (local.set $m (f32x4.pmax (local.get $m)
          (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $m) (local.get $m))))
        (local.set $m (f32x4.pmax (local.get $m)
          (i8x16.shuffle 4 5 6 7 0 1 2 3 12 13 14 15 8 9 10 11 (local.get $m) (local.get $m))))
        (f32.store (i32.add (local.get $pm) (i32.shl (local.get $t) (i32.const 2))) (f32x4.extract_lane 0 (local.get $m)))
        ;; e = e^(x − m) = 2^((x − m) · log2 e), summed in f64
        (drop (call $exp2_map (local.get $px) (local.get $pe) (local.get $end) (local.get $m)
          (v128.const f32x4 1.44269504088896341 1.44269504088896341 1.44269504088896341 1.44269504088896341)))
        (local.set $a (v128.const f64x2 0 0))
        (local.set $b (v128.const f64x2 0 0))
        (local.set $p (local.get $pe))
        (local.set $end (i32.add (local.get $pe) (i32.shl (local.get $np) (i32.const 2))))
        (block $done_sum
          (loop $sum
            (br_if $done_sum (i32.ge_u (local.get $p) (local.get $end)))
            (local.set $e (v128.load (local.get $p)))
            (local.set $a (f64x2.add (local.get $a) (f64x2.promote_low_f32x4 (local.get $e))))
            (local.set $b (f64x2.add (local.get $b)
              (f64x2.promote_low_f32x4
                (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $e) (local.get $e)))))
            (local.set $p (i32.add (local.get $p) (i32.const 16)))
            (br $sum)))
        (f64.store (i32.add (local.get $ps) (i32.shl (local.get $t) (i32.const 3)))
          (f64.add
            (f64.add (f64x2.extract_lane 0 (local.get $a)) (f64x2.extract_lane 1 (local.get $a)))
            (f64.add (f64x2.extract_lane 0 (local.get $b)) (f64x2.extract_lane 1 (local.get $b)))))
        (local.set $px (i32.add (local.get $px) (i32.shl (local.get $np) (i32.const 2))))
        (local.set $t (i32.add (local.get $t) (i32.const 1)))
        (br $rows))))

  ;; rmsnorm: out[t, i] = w[i] · (x[t, i] · inv_t), inv_t = 1 / √(Σ_i x[t, i]² / dim + eps),
  ;; for T rows of width dim (a multiple of 4), in f64 as model/forward.ts's
  ;; rmsnormRef: the squares (exact in f64) summed in two f64x2 accumulators
  ;; (even and odd i, combined as (a0 + a1) + (b0 + b1)), each output
  ;; computed in f64 and rounded once to f32. Only the order of the sum
  ;; differs from rmsnormRef's. out may be x.
  (func (export "rmsnorm") (param $px i32) (param $pw i32) (param $po i32) (param $T i32) (param $dim i32) (param $eps f64)
    (local $row i32) (local $i i32) (local $t i32) (local $x v128) (local $a v128) (local $b v128) (local $inv v128)
    (local $lo v128) (local $hi v128)
    (local.set $row (i32.shl (local.get $dim) (i32.const 2)))
    (block $done_rows
      (loop $rows
        (br_if $done_rows (i32.ge_u (local.get $t) (local.get $T)))
        (local.set $a (v128.const f64x2 0 0))
        (local.set $b (v128.const f64x2 0 0))
        (local.set $i (i32.const 0))
        (loop $squares
          (local.set $x (v128.load (i32.add (local.get $px) (local.get $i))))
          (local.set $lo (f64x2.promote_low_f32x4 (local.get $x)))
          (local.set $hi (f64x2.promote_low_f32x4
            (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $x) (local.get $x))))
          (local.set $a (f64x2.add (local.get $a) (f64x2.mul (local.get $lo) (local.get $lo))))
          (local.set $b (f64x2.add (local.get $b) (f64x2.mul (local.get $hi) (local.get $hi))))
          (local.set $i (i32.add (local.get $i) (i32.const 16)))
          (br_if $squares (i32.lt_u (local.get $i) (local.get $row))))
        (local.set $inv (f64x2.splat
          (f64.div (f64.const 1)
            (f64.sqrt (f64.add
              (f64.div
                (f64.add
                  (f64.add (f64x2.extract_lane 0 (local.get $a)) (f64x2.extract_lane 1 (local.get $a)))
                  (f64.add (f64x2.extract_lane 0 (local.get $b)) (f64x2.extract_lane 1 (local.get $b))))
                (f64.convert_i32_u (local.get $dim)))
              (local.get $eps))))))
        (local.set $i (i32.const 0))
        (loop $scale
          (local.set $x (v128.load (i32.add (local.get $px) (local.get $i))))
          (local.set $a (v128.load (i32.add (local.get $pw) (local.get $i))))
          (local.set $lo
            (f32x4.demote_f64x2_zero
              (f64x2.mul (f64x2.promote_low_f32x4 (local.get $a))
                (f64x2.mul (f64x2.promote_low_f32x4 (local.get $x)) (local.get $inv)))))
          (local.set $hi
            (f32x4.demote_f64x2_zero
              (f64x2.mul
                (f64x2.promote_low_f32x4 (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $a) (local.get $a)))
                (f64x2.mul
                  (f64x2.promote_low_f32x4 (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $x) (local.get $x)))
                  (local.get $inv)))))
          (v128.store (i32.add (local.get $po) (local.get $i))
            (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23 (local.get $lo) (local.get $hi)))
          (local.set $i (i32.add (local.get $i) (i32.const 16)))
          (br_if $scale (i32.lt_u (local.get $i) (local.get $row))))
        (local.set $px (i32.add (local.get $px) (local.get $row)))
        (local.set $po (i32.add (local.get $po) (local.get $row)))
        (local.set $t (i32.add (local.get $t) (i32.const 1)))
        (br $rows))))

  ;; -------------------------------------------------------------------------
  ;; matmul: out[t, o] = Σ_i x[t, i] · W[o, i]   (x @ Wᵀ, PyTorch's nn.Linear)
  ;;
  ;; Memory layout (float32, row-major, byte pointers 16-byte aligned):
  ;;   x   at $px: [T, np]    rows zero-padded from n to np = ceil4(n) ≥ 4
  ;;   W   at $pw: [dp, np]   rows zero-padded to np; rows d..dp-1 all zero
  ;;   out at $po: [T, dp]    dp = ceil4(d); columns d..dp-1 are scratch
  ;;
  ;; Register tile: 2 rows of x × 4 rows of W = 8 f32x4 accumulators, each
  ;; the four lane-wise partial sums of one dot product (lane l sums the
  ;; i ≡ l mod 4 terms in i order). At the end of a row pair, the 4
  ;; accumulators of one x row are reduced as $hsum4 does into the vector
  ;; [out[t,o], …, out[t,o+3]] and stored as is. $hsum4 is written out in
  ;; place (temporaries $ab, $cd): V8 inlines only callees of about a tenth
  ;; of the caller's size, and the call per tile cost about 12 % at n = 64.
  ;;
  ;; Loop order: blocks of $ob rows of W (a multiple of 4; the caller sizes a
  ;; block to stay in the L2 cache) → blocks of $tb rows of x (sized to stay
  ;; in the L1 cache) → groups of 4 rows of W in the W block → pairs of x
  ;; rows in the x block. Each output's sum is the same whatever the blocks.
  ;; (Without W blocks, a W larger than L2 was read from memory again for
  ;; every block of x rows.)
  (func (export "matmul")
    (param $px i32) (param $pw i32) (param $po i32)
    (param $T i32) (param $np i32) (param $dp i32) (param $tb i32) (param $ob i32)
    (local $row i32) ;; bytes per row of x and W (np · 4)
    (local $orow i32) ;; bytes per row of out (dp · 4)
    (local $t0 i32) (local $t1 i32) (local $t i32) (local $o i32)
    (local $o0 i32) (local $o1 i32) ;; the W block: rows o0 .. o1 − 1
    (local $x0 i32) (local $x1 i32) ;; byte pointers of the two x rows
    (local $w0 i32) (local $w1 i32) (local $w2 i32) (local $w3 i32) ;; the four W rows
    (local $i i32) ;; byte offset along a row
    (local $q i32) ;; output pointer
    (local $vx0 v128) (local $vx1 v128) (local $vw v128) (local $ab v128) (local $cd v128)
    (local $a00 v128) (local $a01 v128) (local $a02 v128) (local $a03 v128)
    (local $a10 v128) (local $a11 v128) (local $a12 v128) (local $a13 v128)
    (local.set $row (i32.shl (local.get $np) (i32.const 2)))
    (local.set $orow (i32.shl (local.get $dp) (i32.const 2)))
    (block $done_wblocks
      (loop $wblocks
        (br_if $done_wblocks (i32.ge_u (local.get $o0) (local.get $dp)))
        ;; o1 = min(o0 + ob, dp)
        (local.set $o1 (i32.add (local.get $o0) (local.get $ob)))
        (if (i32.gt_u (local.get $o1) (local.get $dp)) (then (local.set $o1 (local.get $dp))))
        (local.set $t0 (i32.const 0))
        (block $done_blocks
          (loop $blocks
            (br_if $done_blocks (i32.ge_u (local.get $t0) (local.get $T)))
            ;; t1 = min(t0 + tb, T)
            (local.set $t1 (i32.add (local.get $t0) (local.get $tb)))
            (if (i32.gt_u (local.get $t1) (local.get $T)) (then (local.set $t1 (local.get $T))))
            (local.set $o (local.get $o0))
            (block $done_cols
              (loop $cols
                (br_if $done_cols (i32.ge_u (local.get $o) (local.get $o1)))
                (local.set $w0 (i32.add (local.get $pw) (i32.mul (local.get $o) (local.get $row))))
                (local.set $w1 (i32.add (local.get $w0) (local.get $row)))
                (local.set $w2 (i32.add (local.get $w1) (local.get $row)))
                (local.set $w3 (i32.add (local.get $w2) (local.get $row)))
                (local.set $t (local.get $t0))
                ;; pairs of x rows
                (block $done_pairs
                  (loop $pairs
                    (br_if $done_pairs (i32.gt_u (i32.add (local.get $t) (i32.const 2)) (local.get $t1)))
                    (local.set $x0 (i32.add (local.get $px) (i32.mul (local.get $t) (local.get $row))))
                    (local.set $x1 (i32.add (local.get $x0) (local.get $row)))
                    (local.set $a00 (v128.const i32x4 0 0 0 0))
                    (local.set $a01 (v128.const i32x4 0 0 0 0))
                    (local.set $a02 (v128.const i32x4 0 0 0 0))
                    (local.set $a03 (v128.const i32x4 0 0 0 0))
                    (local.set $a10 (v128.const i32x4 0 0 0 0))
                    (local.set $a11 (v128.const i32x4 0 0 0 0))
                    (local.set $a12 (v128.const i32x4 0 0 0 0))
                    (local.set $a13 (v128.const i32x4 0 0 0 0))
                    (local.set $i (i32.const 0))
                    (loop $dot
                      (local.set $vx0 (v128.load (i32.add (local.get $x0) (local.get $i))))
                      (local.set $vx1 (v128.load (i32.add (local.get $x1) (local.get $i))))
                      (local.set $vw (v128.load (i32.add (local.get $w0) (local.get $i))))
                      (local.set $a00 (f32x4.add (local.get $a00) (f32x4.mul (local.get $vx0) (local.get $vw))))
                      (local.set $a10 (f32x4.add (local.get $a10) (f32x4.mul (local.get $vx1) (local.get $vw))))
                      (local.set $vw (v128.load (i32.add (local.get $w1) (local.get $i))))
                      (local.set $a01 (f32x4.add (local.get $a01) (f32x4.mul (local.get $vx0) (local.get $vw))))
                      (local.set $a11 (f32x4.add (local.get $a11) (f32x4.mul (local.get $vx1) (local.get $vw))))
                      (local.set $vw (v128.load (i32.add (local.get $w2) (local.get $i))))
                      (local.set $a02 (f32x4.add (local.get $a02) (f32x4.mul (local.get $vx0) (local.get $vw))))
                      (local.set $a12 (f32x4.add (local.get $a12) (f32x4.mul (local.get $vx1) (local.get $vw))))
                      (local.set $vw (v128.load (i32.add (local.get $w3) (local.get $i))))
                      (local.set $a03 (f32x4.add (local.get $a03) (f32x4.mul (local.get $vx0) (local.get $vw))))
                      (local.set $a13 (f32x4.add (local.get $a13) (f32x4.mul (local.get $vx1) (local.get $vw))))
                      (local.set $i (i32.add (local.get $i) (i32.const 16)))
                      (br_if $dot (i32.lt_u (local.get $i) (local.get $row))))
                    ;; out[t, o..o+3] and out[t+1, o..o+3]
                    (local.set $q
                      (i32.add (local.get $po)
                        (i32.add (i32.mul (local.get $t) (local.get $orow)) (i32.shl (local.get $o) (i32.const 2)))))
                    (v128.store (local.get $q)
                      (f32x4.add
                        (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23
                          (local.tee $ab (f32x4.add
                            (i8x16.shuffle 0 1 2 3 16 17 18 19 4 5 6 7 20 21 22 23 (local.get $a00) (local.get $a01))
                            (i8x16.shuffle 8 9 10 11 24 25 26 27 12 13 14 15 28 29 30 31 (local.get $a00) (local.get $a01))))
                          (local.tee $cd (f32x4.add
                            (i8x16.shuffle 0 1 2 3 16 17 18 19 4 5 6 7 20 21 22 23 (local.get $a02) (local.get $a03))
                            (i8x16.shuffle 8 9 10 11 24 25 26 27 12 13 14 15 28 29 30 31 (local.get $a02) (local.get $a03)))))
                        (i8x16.shuffle 8 9 10 11 12 13 14 15 24 25 26 27 28 29 30 31 (local.get $ab) (local.get $cd))))
                    (v128.store (i32.add (local.get $q) (local.get $orow))
                      (f32x4.add
                        (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23
                          (local.tee $ab (f32x4.add
                            (i8x16.shuffle 0 1 2 3 16 17 18 19 4 5 6 7 20 21 22 23 (local.get $a10) (local.get $a11))
                            (i8x16.shuffle 8 9 10 11 24 25 26 27 12 13 14 15 28 29 30 31 (local.get $a10) (local.get $a11))))
                          (local.tee $cd (f32x4.add
                            (i8x16.shuffle 0 1 2 3 16 17 18 19 4 5 6 7 20 21 22 23 (local.get $a12) (local.get $a13))
                            (i8x16.shuffle 8 9 10 11 24 25 26 27 12 13 14 15 28 29 30 31 (local.get $a12) (local.get $a13)))))
                        (i8x16.shuffle 8 9 10 11 12 13 14 15 24 25 26 27 28 29 30 31 (local.get $ab) (local.get $cd))))
                    (local.set $t (i32.add (local.get $t) (i32.const 2)))
                    (br $pairs)))
                ;; one x row left in this block
                (if (i32.lt_u (local.get $t) (local.get $t1))
                  (then
                    (local.set $x0 (i32.add (local.get $px) (i32.mul (local.get $t) (local.get $row))))
                    (local.set $a00 (v128.const i32x4 0 0 0 0))
                    (local.set $a01 (v128.const i32x4 0 0 0 0))
                    (local.set $a02 (v128.const i32x4 0 0 0 0))
                    (local.set $a03 (v128.const i32x4 0 0 0 0))
                    (local.set $i (i32.const 0))
                    (loop $dot1
                      (local.set $vx0 (v128.load (i32.add (local.get $x0) (local.get $i))))
                      (local.set $a00 (f32x4.add (local.get $a00)
                        (f32x4.mul (local.get $vx0) (v128.load (i32.add (local.get $w0) (local.get $i))))))
                      (local.set $a01 (f32x4.add (local.get $a01)
                        (f32x4.mul (local.get $vx0) (v128.load (i32.add (local.get $w1) (local.get $i))))))
                      (local.set $a02 (f32x4.add (local.get $a02)
                        (f32x4.mul (local.get $vx0) (v128.load (i32.add (local.get $w2) (local.get $i))))))
                      (local.set $a03 (f32x4.add (local.get $a03)
                        (f32x4.mul (local.get $vx0) (v128.load (i32.add (local.get $w3) (local.get $i))))))
                      (local.set $i (i32.add (local.get $i) (i32.const 16)))
                      (br_if $dot1 (i32.lt_u (local.get $i) (local.get $row))))
                    (v128.store
                      (i32.add (local.get $po)
                        (i32.add (i32.mul (local.get $t) (local.get $orow)) (i32.shl (local.get $o) (i32.const 2))))
                      (f32x4.add
                        (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23
                          (local.tee $ab (f32x4.add
                            (i8x16.shuffle 0 1 2 3 16 17 18 19 4 5 6 7 20 21 22 23 (local.get $a00) (local.get $a01))
                            (i8x16.shuffle 8 9 10 11 24 25 26 27 12 13 14 15 28 29 30 31 (local.get $a00) (local.get $a01))))
                          (local.tee $cd (f32x4.add
                            (i8x16.shuffle 0 1 2 3 16 17 18 19 4 5 6 7 20 21 22 23 (local.get $a02) (local.get $a03))
                            (i8x16.shuffle 8 9 10 11 24 25 26 27 12 13 14 15 28 29 30 31 (local.get $a02) (local.get $a03)))))
                        (i8x16.shuffle 8 9 10 11 12 13 14 15 24 25 26 27 28 29 30 31 (local.get $ab) (local.get $cd))))))
                (local.set $o (i32.add (local.get $o) (i32.const 4)))
                (br $cols)))
            (local.set $t0 (local.get $t1))
            (br $blocks)))
        (local.set $o0 (local.get $o1))
        (br $wblocks))))

  ;; -------------------------------------------------------------------------
  ;; attention: causal softmax attention of every head over a prefill window
  ;; (positions 0..T−1), grouped-query heads sharing kv heads:
  ;;   att[t, h] = Σ_{u≤t} softmax_u(scale · q[t, h] · k[u, g]) · v[u, g],
  ;;   g = h / (nh / nkv)
  ;;
  ;; Memory layout (float32, row-major, byte pointers 16-byte aligned),
  ;; Tp = ceil4(T):
  ;;   q   at $pq:  [T, nh · hs]
  ;;   k   at $pk:  [T, nkv · hs]
  ;;   v   at $pv:  [Tp, nkv · hs]   rows T..Tp-1 all zero
  ;;   att at $po:  [T, nh · hs]
  ;;   kt  at $pkt: [⌈T/16⌉, hs, 16] scratch: one kv head's keys, 16 at a time
  ;;                                 transposed: kt[u >> 4, j, u & 15] = k[u, g·hs + j]
  ;;   vt  at $pvt: [hs/8, Tp, 8]    scratch: one kv head's values, 8 columns at a
  ;;                                 time (a last group of 4 columns: [Tp, 4])
  ;;   p   at $ps:  [Tp]             scratch: one query's scores/probabilities
  ;; hs must be a multiple of 4 (the output is written 4 lanes at a time).
  ;;
  ;; For each head h, the first of its group copies its kv head's keys and
  ;; values into kt and vt, laid out as the loops below read them: every
  ;; pass over the keys reads one contiguous run. (Read in place, rows of k
  ;; and v are nkv · hs · 4 bytes apart, at LLaMA-7B's widths 16 KiB, a
  ;; multiple of 4 KiB that maps every key of a pass to one L1 set.) Then
  ;; per query t:
  ;;   1. scores s[u] = scale · q[t]·k[u] for keys 0..t, in groups of 4 keys
  ;;      (lanes), 16 keys per pass over the head's hs columns;
  ;;   2. m = max over u ≤ t (only the last group holds keys u > t: masked);
  ;;   3. p[u] = exp(s[u] − m), lanes u > t zeroed, summed in 4 lanes and
  ;;      combined as (l0+l2)+(l1+l3);
  ;;   4. att[t] = (Σ_u p[u] · v[u]) / Σ p, 8 (then 4) columns a pass, 4 keys
  ;;      a step in 4 accumulators (key u ≡ k mod 4 → accumulator k) summed as
  ;;      (a0+a1)+(a2+a3). Keys up to the end of the last group are read: the
  ;;      zero rows of v past T and p = 0 past t make them add nothing.
  ;;
  ;; exp follows Cephes' expf: e^x = 2^k · e^r with k = round(x · log2 e),
  ;; r = x − k·ln 2 (ln 2 split in two parts for accuracy), e^r ≈ 1 + r +
  ;; r²·P(r) with P of degree 5 (evaluated by Estrin's scheme); error about
  ;; 1 ulp. x = s − m ≤ 0 is clamped below at −87.33654 so that 2^k stays a
  ;; normal float (exp(−87.3) ≈ 1e−38 stands for anything smaller). Its
  ;; constants live in locals set once: V8 would rebuild a splatted constant
  ;; at every use inside the loop.
  (func (export "attention")
    (param $pq i32) (param $pk i32) (param $pv i32) (param $po i32) (param $pkt i32) (param $ps i32)
    (param $T i32) (param $nh i32) (param $nkv i32) (param $hs i32) (param $scale f32) (param $pvt i32)
    (local $qB i32) ;; bytes per row of q and att (nh · hs · 4)
    (local $kvB i32) ;; bytes per row of k and v (nkv · hs · 4)
    (local $hsB i32) ;; bytes per head (hs · 4)
    (local $Tp i32)
    (local $blkB i32) ;; bytes per 16-key block of kt (hs · 64)
    (local $hs8 i32) ;; bytes of the head's columns in groups of 8 (hs rounded down to 8, · 4)
    (local $group i32) ;; query heads per kv head
    (local $h i32) (local $kcol i32) ;; head, byte offset of its kv head in a k/v row
    (local $t i32) (local $u i32) (local $j i32) (local $ng i32) (local $gi i32)
    (local $qrow i32) (local $p i32) (local $sp i32) (local $end i32)
    (local $s0 v128) (local $s1 v128) (local $s2 v128) (local $s3 v128) (local $qv v128)
    (local $s4 v128) (local $s5 v128) (local $s6 v128) (local $s7 v128)
    (local $m v128) (local $mask v128) (local $sum v128) (local $inv v128)
    (local $x v128) (local $kf v128) (local $k v128) (local $r v128) (local $r2 v128) (local $y v128) ;; exp temporaries
    (local $c_lo v128) (local $c_log2e v128) (local $c_ln2hi v128) (local $c_ln2lo v128)
    (local $c_p0 v128) (local $c_p1 v128) (local $c_p2 v128) (local $c_p3 v128)
    (local $c_p4 v128) (local $c_p5 v128) (local $c_one v128) (local $c_bias v128) (local $c_round v128)
    (local.set $c_lo (f32x4.splat (f32.const -87.33654)))
    (local.set $c_log2e (f32x4.splat (f32.const 1.44269504088896341)))
    (local.set $c_ln2hi (f32x4.splat (f32.const 0.693359375)))
    (local.set $c_ln2lo (f32x4.splat (f32.const -2.12194440e-4)))
    (local.set $c_p0 (f32x4.splat (f32.const 1.9875691500e-4)))
    (local.set $c_p1 (f32x4.splat (f32.const 1.3981999507e-3)))
    (local.set $c_p2 (f32x4.splat (f32.const 8.3334519073e-3)))
    (local.set $c_p3 (f32x4.splat (f32.const 4.1665795894e-2)))
    (local.set $c_p4 (f32x4.splat (f32.const 1.6666665459e-1)))
    (local.set $c_p5 (f32x4.splat (f32.const 5.0000001201e-1)))
    (local.set $c_one (f32x4.splat (f32.const 1)))
    (local.set $c_bias (i32x4.splat (i32.const 127)))
    (local.set $c_round (f32x4.splat (f32.const 12582912))) ;; 1.5·2²³
    (local.set $qB (i32.shl (i32.mul (local.get $nh) (local.get $hs)) (i32.const 2)))
    (local.set $kvB (i32.shl (i32.mul (local.get $nkv) (local.get $hs)) (i32.const 2)))
    (local.set $hsB (i32.shl (local.get $hs) (i32.const 2)))
    (local.set $Tp (i32.and (i32.add (local.get $T) (i32.const 3)) (i32.const -4)))
    (local.set $blkB (i32.shl (local.get $hs) (i32.const 6)))
    (local.set $hs8 (i32.and (local.get $hsB) (i32.const -32)))
    (local.set $group (i32.div_u (local.get $nh) (local.get $nkv)))
    (local.set $h (i32.const 0))
    (block $done_heads
      (loop $heads
        (br_if $done_heads (i32.ge_u (local.get $h) (local.get $nh)))
        (local.set $kcol (i32.mul (i32.div_u (local.get $h) (local.get $group)) (local.get $hsB)))
        ;; first query head of a kv head: kt[u >> 4, j, u & 15] = k[u, g·hs + j], zero for
        ;; T ≤ u < Tp; vt[j >> 3, u, j & 7] = v[u, g·hs + j] (the last 4 columns of an hs
        ;; ≡ 4 mod 8 as [Tp, 4]), v's zero rows from T copied too
        (if (i32.eqz (i32.rem_u (local.get $h) (local.get $group)))
          (then
            (local.set $u (i32.const 0))
            (loop $tr_u
              (local.set $sp (i32.add (i32.add (local.get $pk) (local.get $kcol)) (i32.mul (local.get $u) (local.get $kvB))))
              (local.set $p
                (i32.add (local.get $pkt)
                  (i32.add (i32.mul (i32.shr_u (local.get $u) (i32.const 4)) (local.get $blkB))
                    (i32.shl (i32.and (local.get $u) (i32.const 15)) (i32.const 2)))))
              (local.set $j (i32.const 0))
              (loop $tr_j
                (f32.store (local.get $p)
                  (select (f32.load (local.get $sp)) (f32.const 0) (i32.lt_u (local.get $u) (local.get $T))))
                (local.set $p (i32.add (local.get $p) (i32.const 64)))
                (local.set $sp (i32.add (local.get $sp) (i32.const 4)))
                (local.set $j (i32.add (local.get $j) (i32.const 1)))
                (br_if $tr_j (i32.lt_u (local.get $j) (local.get $hs))))
              (local.set $sp (i32.add (i32.add (local.get $pv) (local.get $kcol)) (i32.mul (local.get $u) (local.get $kvB))))
              (local.set $j (i32.const 0))
              (block $vt_done
                (loop $vt8
                  (br_if $vt_done (i32.ge_u (local.get $j) (local.get $hs8)))
                  (local.set $p
                    (i32.add (local.get $pvt)
                      (i32.add (i32.mul (local.get $j) (local.get $Tp)) (i32.shl (local.get $u) (i32.const 5)))))
                  (v128.store (local.get $p) (v128.load (i32.add (local.get $sp) (local.get $j))))
                  (v128.store offset=16 (local.get $p) (v128.load offset=16 (i32.add (local.get $sp) (local.get $j))))
                  (local.set $j (i32.add (local.get $j) (i32.const 32)))
                  (br $vt8)))
              (if (i32.lt_u (local.get $j) (local.get $hsB))
                (then
                  (v128.store
                    (i32.add (local.get $pvt)
                      (i32.add (i32.mul (local.get $j) (local.get $Tp)) (i32.shl (local.get $u) (i32.const 4))))
                    (v128.load (i32.add (local.get $sp) (local.get $j))))))
              (local.set $u (i32.add (local.get $u) (i32.const 1)))
              (br_if $tr_u (i32.lt_u (local.get $u) (local.get $Tp))))))
        (local.set $t (i32.const 0))
        (block $done_queries
          (loop $queries
            (br_if $done_queries (i32.ge_u (local.get $t) (local.get $T)))
            (local.set $qrow
              (i32.add (local.get $pq)
                (i32.add (i32.mul (local.get $t) (local.get $qB)) (i32.mul (local.get $h) (local.get $hsB)))))
            (local.set $ng (i32.shr_u (i32.add (local.get $t) (i32.const 4)) (i32.const 2)))
            ;; scores · scale → p[0 .. 4·ng), 16 keys a pass
            (local.set $gi (i32.const 0))
            (block $done_s16
              (loop $s16
                (br_if $done_s16 (i32.gt_u (i32.add (local.get $gi) (i32.const 4)) (local.get $ng)))
                (local.set $s0 (v128.const i32x4 0 0 0 0))
                (local.set $s1 (v128.const i32x4 0 0 0 0))
                (local.set $s2 (v128.const i32x4 0 0 0 0))
                (local.set $s3 (v128.const i32x4 0 0 0 0))
                (local.set $p (i32.add (local.get $pkt) (i32.mul (i32.shr_u (local.get $gi) (i32.const 2)) (local.get $blkB))))
                (local.set $sp (local.get $qrow))
                (local.set $end (i32.add (local.get $qrow) (local.get $hsB)))
                (loop $s16_j
                  (local.set $qv (v128.load32_splat (local.get $sp)))
                  (local.set $s0 (f32x4.add (local.get $s0) (f32x4.mul (local.get $qv) (v128.load (local.get $p)))))
                  (local.set $s1 (f32x4.add (local.get $s1) (f32x4.mul (local.get $qv) (v128.load offset=16 (local.get $p)))))
                  (local.set $s2 (f32x4.add (local.get $s2) (f32x4.mul (local.get $qv) (v128.load offset=32 (local.get $p)))))
                  (local.set $s3 (f32x4.add (local.get $s3) (f32x4.mul (local.get $qv) (v128.load offset=48 (local.get $p)))))
                  (local.set $p (i32.add (local.get $p) (i32.const 64)))
                  (local.set $sp (i32.add (local.get $sp) (i32.const 4)))
                  (br_if $s16_j (i32.lt_u (local.get $sp) (local.get $end))))
                (local.set $p (i32.add (local.get $ps) (i32.shl (local.get $gi) (i32.const 4))))
                (local.set $qv (f32x4.splat (local.get $scale)))
                (v128.store (local.get $p) (f32x4.mul (local.get $s0) (local.get $qv)))
                (v128.store offset=16 (local.get $p) (f32x4.mul (local.get $s1) (local.get $qv)))
                (v128.store offset=32 (local.get $p) (f32x4.mul (local.get $s2) (local.get $qv)))
                (v128.store offset=48 (local.get $p) (f32x4.mul (local.get $s3) (local.get $qv)))
                (local.set $gi (i32.add (local.get $gi) (i32.const 4)))
                (br $s16)))
            ;; remaining groups of 4 keys, one at a time
            (block $done_s4
              (loop $s4
                (br_if $done_s4 (i32.ge_u (local.get $gi) (local.get $ng)))
                (local.set $s0 (v128.const i32x4 0 0 0 0))
                (local.set $p
                  (i32.add (local.get $pkt)
                    (i32.add (i32.mul (i32.shr_u (local.get $gi) (i32.const 2)) (local.get $blkB))
                      (i32.shl (i32.and (local.get $gi) (i32.const 3)) (i32.const 4)))))
                (local.set $sp (local.get $qrow))
                (local.set $end (i32.add (local.get $qrow) (local.get $hsB)))
                (loop $s4_j
                  (local.set $s0
                    (f32x4.add (local.get $s0)
                      (f32x4.mul (v128.load32_splat (local.get $sp)) (v128.load (local.get $p)))))
                  (local.set $p (i32.add (local.get $p) (i32.const 64)))
                  (local.set $sp (i32.add (local.get $sp) (i32.const 4)))
                  (br_if $s4_j (i32.lt_u (local.get $sp) (local.get $end))))
                (v128.store (i32.add (local.get $ps) (i32.shl (local.get $gi) (i32.const 4)))
                  (f32x4.mul (local.get $s0) (f32x4.splat (local.get $scale))))
                (local.set $gi (i32.add (local.get $gi) (i32.const 1)))
                (br $s4)))
            ;; Only the last group (address $end) holds keys u > t: its lanes l ≤ t mod 4 are kept.
            (local.set $end (i32.add (local.get $ps) (i32.shl (i32.sub (local.get $ng) (i32.const 1)) (i32.const 4))))
            (local.set $mask
              (i32x4.le_s (v128.const i32x4 0 1 2 3) (i32x4.splat (i32.and (local.get $t) (i32.const 3)))))
            ;; m = max_{u ≤ t} p[u], in every lane
            (local.set $m (f32x4.splat (f32.const -inf)))
            (local.set $p (local.get $ps))
            (block $done_max
              (loop $max
                (br_if $done_max (i32.ge_u (local.get $p) (local.get $end)))
                (local.set $m (f32x4.pmax (local.get $m) (v128.load (local.get $p))))
                (local.set $p (i32.add (local.get $p) (i32.const 16)))
                (br $max)))
            (local.set $m
              (f32x4.pmax (local.get $m)
                (v128.bitselect (v128.load (local.get $end)) (f32x4.splat (f32.const -inf)) (local.get $mask))))
            (local.set $m (f32x4.pmax (local.get $m)
              (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $m) (local.get $m))))
            (local.set $m (f32x4.pmax (local.get $m)
              (i8x16.shuffle 4 5 6 7 0 1 2 3 12 13 14 15 8 9 10 11 (local.get $m) (local.get $m))))
            ;; p[u] = exp(p[u] − m) for u ≤ t, 0 beyond; sum in 4 lanes
            (local.set $sum (v128.const i32x4 0 0 0 0))
            (local.set $p (local.get $ps))
            (loop $exp
              ;; x = max(p − m, lo); k = round(x · log2 e) by adding and subtracting
              ;; 1.5·2²³ (kf = 1.5·2²³ + k holds k in its low mantissa bits, so
              ;; (bits(kf) + 127) << 23 is 2^k); r = x − k·ln 2
              (local.set $x
                (f32x4.pmax (f32x4.sub (v128.load (local.get $p)) (local.get $m)) (local.get $c_lo)))
              (local.set $kf (f32x4.add (f32x4.mul (local.get $x) (local.get $c_log2e)) (local.get $c_round)))
              (local.set $k (f32x4.sub (local.get $kf) (local.get $c_round)))
              (local.set $r
                (f32x4.sub
                  (f32x4.sub (local.get $x) (f32x4.mul (local.get $k) (local.get $c_ln2hi)))
                  (f32x4.mul (local.get $k) (local.get $c_ln2lo))))
              ;; y = P(r) by Estrin's scheme (a shorter dependency chain than Horner's):
              ;; P = (p0·r + p1)·r⁴ + ((p2·r + p3)·r² + (p4·r + p5)), then y = P·r² + r + 1
              (local.set $r2 (f32x4.mul (local.get $r) (local.get $r)))
              (local.set $y
                (f32x4.add
                  (f32x4.mul
                    (f32x4.add (f32x4.mul (local.get $c_p0) (local.get $r)) (local.get $c_p1))
                    (f32x4.mul (local.get $r2) (local.get $r2)))
                  (f32x4.add
                    (f32x4.mul
                      (f32x4.add (f32x4.mul (local.get $c_p2) (local.get $r)) (local.get $c_p3))
                      (local.get $r2))
                    (f32x4.add (f32x4.mul (local.get $c_p4) (local.get $r)) (local.get $c_p5)))))
              (local.set $y
                (f32x4.add
                  (f32x4.add (f32x4.mul (local.get $y) (local.get $r2)) (local.get $r))
                  (local.get $c_one)))
              ;; p = y · 2^k, lanes u > t zeroed
              (local.set $s0
                (v128.and
                  (select (v128.const i32x4 -1 -1 -1 -1) (local.get $mask)
                    (i32.lt_u (local.get $p) (local.get $end)))
                  (f32x4.mul (local.get $y)
                    (i32x4.shl (i32x4.add (local.get $kf) (local.get $c_bias)) (i32.const 23)))))
              (v128.store (local.get $p) (local.get $s0))
              (local.set $sum (f32x4.add (local.get $sum) (local.get $s0)))
              (local.set $p (i32.add (local.get $p) (i32.const 16)))
              (br_if $exp (i32.le_u (local.get $p) (local.get $end))))
            ;; inv = 1 / ((l0+l2) + (l1+l3)) of sum, in every lane
            (local.set $sum (f32x4.add (local.get $sum)
              (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $sum) (local.get $sum))))
            (local.set $sum (f32x4.add (local.get $sum)
              (i8x16.shuffle 4 5 6 7 0 1 2 3 12 13 14 15 8 9 10 11 (local.get $sum) (local.get $sum))))
            (local.set $inv (f32x4.div (f32x4.splat (f32.const 1)) (local.get $sum)))
            ;; att[t, h, j..j+7] = inv · Σ_u p[u] · v[u, g, j..j+7], 4 keys a step,
            ;; accumulator k (and k+4) summing keys u ≡ k mod 4
            (local.set $end (i32.add (local.get $ps) (i32.shl (local.get $ng) (i32.const 4))))
            (local.set $j (i32.const 0))
            (block $done_out8
              (loop $out8
                (br_if $done_out8 (i32.gt_u (i32.add (local.get $j) (i32.const 32)) (local.get $hsB)))
                (local.set $s0 (v128.const i32x4 0 0 0 0))
                (local.set $s1 (v128.const i32x4 0 0 0 0))
                (local.set $s2 (v128.const i32x4 0 0 0 0))
                (local.set $s3 (v128.const i32x4 0 0 0 0))
                (local.set $s4 (v128.const i32x4 0 0 0 0))
                (local.set $s5 (v128.const i32x4 0 0 0 0))
                (local.set $s6 (v128.const i32x4 0 0 0 0))
                (local.set $s7 (v128.const i32x4 0 0 0 0))
                (local.set $p (i32.add (local.get $pvt) (i32.mul (local.get $j) (local.get $Tp))))
                (local.set $sp (local.get $ps))
                (loop $out8_u
                  (local.set $qv (v128.load32_splat (local.get $sp)))
                  (local.set $s0 (f32x4.add (local.get $s0) (f32x4.mul (local.get $qv) (v128.load (local.get $p)))))
                  (local.set $s4 (f32x4.add (local.get $s4) (f32x4.mul (local.get $qv) (v128.load offset=16 (local.get $p)))))
                  (local.set $p (i32.add (local.get $p) (i32.const 32)))
                  (local.set $qv (v128.load32_splat offset=4 (local.get $sp)))
                  (local.set $s1 (f32x4.add (local.get $s1) (f32x4.mul (local.get $qv) (v128.load (local.get $p)))))
                  (local.set $s5 (f32x4.add (local.get $s5) (f32x4.mul (local.get $qv) (v128.load offset=16 (local.get $p)))))
                  (local.set $p (i32.add (local.get $p) (i32.const 32)))
                  (local.set $qv (v128.load32_splat offset=8 (local.get $sp)))
                  (local.set $s2 (f32x4.add (local.get $s2) (f32x4.mul (local.get $qv) (v128.load (local.get $p)))))
                  (local.set $s6 (f32x4.add (local.get $s6) (f32x4.mul (local.get $qv) (v128.load offset=16 (local.get $p)))))
                  (local.set $p (i32.add (local.get $p) (i32.const 32)))
                  (local.set $qv (v128.load32_splat offset=12 (local.get $sp)))
                  (local.set $s3 (f32x4.add (local.get $s3) (f32x4.mul (local.get $qv) (v128.load (local.get $p)))))
                  (local.set $s7 (f32x4.add (local.get $s7) (f32x4.mul (local.get $qv) (v128.load offset=16 (local.get $p)))))
                  (local.set $p (i32.add (local.get $p) (i32.const 32)))
                  (local.set $sp (i32.add (local.get $sp) (i32.const 16)))
                  (br_if $out8_u (i32.lt_u (local.get $sp) (local.get $end))))
                (local.set $p (i32.add (local.get $qrow) (i32.add (i32.sub (local.get $po) (local.get $pq)) (local.get $j))))
                (v128.store (local.get $p)
                  (f32x4.mul
                    (f32x4.add (f32x4.add (local.get $s0) (local.get $s1)) (f32x4.add (local.get $s2) (local.get $s3)))
                    (local.get $inv)))
                (v128.store offset=16 (local.get $p)
                  (f32x4.mul
                    (f32x4.add (f32x4.add (local.get $s4) (local.get $s5)) (f32x4.add (local.get $s6) (local.get $s7)))
                    (local.get $inv)))
                (local.set $j (i32.add (local.get $j) (i32.const 32)))
                (br $out8)))
            ;; att[t, h, j..j+3] likewise for a last group of 4 columns
            (if (i32.lt_u (local.get $j) (local.get $hsB))
              (then
                (local.set $s0 (v128.const i32x4 0 0 0 0))
                (local.set $s1 (v128.const i32x4 0 0 0 0))
                (local.set $s2 (v128.const i32x4 0 0 0 0))
                (local.set $s3 (v128.const i32x4 0 0 0 0))
                (local.set $p (i32.add (local.get $pvt) (i32.mul (local.get $j) (local.get $Tp))))
                (local.set $sp (local.get $ps))
                (loop $out4_u
                  (local.set $s0 (f32x4.add (local.get $s0)
                    (f32x4.mul (v128.load32_splat (local.get $sp)) (v128.load (local.get $p)))))
                  (local.set $p (i32.add (local.get $p) (i32.const 16)))
                  (local.set $s1 (f32x4.add (local.get $s1)
                    (f32x4.mul (v128.load32_splat offset=4 (local.get $sp)) (v128.load (local.get $p)))))
                  (local.set $p (i32.add (local.get $p) (i32.const 16)))
                  (local.set $s2 (f32x4.add (local.get $s2)
                    (f32x4.mul (v128.load32_splat offset=8 (local.get $sp)) (v128.load (local.get $p)))))
                  (local.set $p (i32.add (local.get $p) (i32.const 16)))
                  (local.set $s3 (f32x4.add (local.get $s3)
                    (f32x4.mul (v128.load32_splat offset=12 (local.get $sp)) (v128.load (local.get $p)))))
                  (local.set $p (i32.add (local.get $p) (i32.const 16)))
                  (local.set $sp (i32.add (local.get $sp) (i32.const 16)))
                  (br_if $out4_u (i32.lt_u (local.get $sp) (local.get $end))))
                (v128.store (i32.add (local.get $qrow) (i32.add (i32.sub (local.get $po) (local.get $pq)) (local.get $j)))
                  (f32x4.mul
                    (f32x4.add (f32x4.add (local.get $s0) (local.get $s1)) (f32x4.add (local.get $s2) (local.get $s3)))
                    (local.get $inv)))))
            (local.set $t (i32.add (local.get $t) (i32.const 1)))
            (br $queries)))
        (local.set $h (i32.add (local.get $h) (i32.const 1)))
        (br $heads))))

  ;; -------------------------------------------------------------------------
  ;; attention_hs8: the `attention` contract for head size 8 (stories260K's),
  ;; with each head's 8 query values in registers and K and V packed in
  ;; panels of 4 keys, so that one v128 holds 4 keys (lanes), no score is
  ;; splatted and every load has a constant offset:
  ;;   q   at $pq:  [T, nh · 8]
  ;;   kp  at $pkp: [nkv, Tp/4, 8, 4]   kp[g, i, j, l] = k[4i + l, g·8 + j], zero from T
  ;;   vp  at $pvp: [nkv, Tp/4, 8, 4]   likewise for v
  ;;   att at $po:  [T, nh · 8]
  ;;   p   at $ps:  [Tp]                scratch: one query's scores
  ;; $c = log2(e) / √8: scores are taken in base 2 (q · k · c), so that the
  ;; softmax's exp is a power of 2. Per head h and query t:
  ;;   1. s[u] = Σ_j (c · q[t, j]) · k[u, j] for the groups of 4 keys up to
  ;;      t, the 8 products summed as a tree ((0+1)+(2+3))+((4+5)+(6+7));
  ;;      lanes u > t of the last group set to −∞; m = lane-wise max;
  ;;   2. M = max of m's lanes; p[u] = 2^(s[u] − M) by $exp2_map (2^−∞ = 0),
  ;;      its lane-wise sum;
  ;;   3. a_j = Σ_u p[u] · v[u, j], lane l summing the keys u ≡ l mod 4 in
  ;;      u order; att[t, j] = ($hsum4 of a_j's lanes) / ($hsum4 of the sum's).
  (func (export "attention_hs8")
    (param $pq i32) (param $pkp i32) (param $pvp i32) (param $po i32) (param $ps i32)
    (param $T i32) (param $nh i32) (param $nkv i32) (param $c f32)
    (local $qB i32) (local $panels i32) (local $group i32) (local $h i32) (local $t i32)
    (local $kp i32) (local $vp i32) (local $qrow i32) (local $p i32) (local $k i32) (local $last i32)
    (local $q0 v128) (local $q1 v128) (local $q2 v128) (local $q3 v128)
    (local $q4 v128) (local $q5 v128) (local $q6 v128) (local $q7 v128)
    (local $s v128) (local $m v128) (local $mask v128) (local $e v128) (local $sum v128)
    (local $a0 v128) (local $a1 v128) (local $a2 v128) (local $a3 v128)
    (local $a4 v128) (local $a5 v128) (local $a6 v128) (local $a7 v128)
    (local.set $qB (i32.shl (local.get $nh) (i32.const 5)))
    ;; bytes of one kv head's panels: Tp/4 panels of 128 bytes
    (local.set $panels (i32.shl (i32.and (i32.add (local.get $T) (i32.const 3)) (i32.const -4)) (i32.const 5)))
    (local.set $group (i32.div_u (local.get $nh) (local.get $nkv)))
    (local.set $h (i32.const 0))
    (block $done_heads
      (loop $heads
        (br_if $done_heads (i32.ge_u (local.get $h) (local.get $nh)))
        (local.set $kp (i32.mul (i32.div_u (local.get $h) (local.get $group)) (local.get $panels)))
        (local.set $vp (i32.add (local.get $pvp) (local.get $kp)))
        (local.set $kp (i32.add (local.get $pkp) (local.get $kp)))
        (local.set $t (i32.const 0))
        (block $done_queries
          (loop $queries
            (br_if $done_queries (i32.ge_u (local.get $t) (local.get $T)))
            (local.set $qrow
              (i32.add (local.get $pq)
                (i32.add (i32.mul (local.get $t) (local.get $qB)) (i32.shl (local.get $h) (i32.const 5)))))
            (local.set $s (f32x4.splat (local.get $c)))
            (local.set $q0 (f32x4.mul (v128.load32_splat offset=0 (local.get $qrow)) (local.get $s)))
            (local.set $q1 (f32x4.mul (v128.load32_splat offset=4 (local.get $qrow)) (local.get $s)))
            (local.set $q2 (f32x4.mul (v128.load32_splat offset=8 (local.get $qrow)) (local.get $s)))
            (local.set $q3 (f32x4.mul (v128.load32_splat offset=12 (local.get $qrow)) (local.get $s)))
            (local.set $q4 (f32x4.mul (v128.load32_splat offset=16 (local.get $qrow)) (local.get $s)))
            (local.set $q5 (f32x4.mul (v128.load32_splat offset=20 (local.get $qrow)) (local.get $s)))
            (local.set $q6 (f32x4.mul (v128.load32_splat offset=24 (local.get $qrow)) (local.get $s)))
            (local.set $q7 (f32x4.mul (v128.load32_splat offset=28 (local.get $qrow)) (local.get $s)))
            ;; 1. scores of the key groups 0 .. t/4 (score bytes 0 .. $last, panel bytes 8× that)
            (local.set $last (i32.shl (i32.shr_u (local.get $t) (i32.const 2)) (i32.const 4)))
            (local.set $mask
              (i32x4.le_s (v128.const i32x4 0 1 2 3) (i32x4.splat (i32.and (local.get $t) (i32.const 3)))))
            (local.set $m (v128.const f32x4 -inf -inf -inf -inf))
            (local.set $k (i32.const 0))
            (local.set $p (local.get $kp))
            (loop $score
              (local.set $s
                (f32x4.add
                  (f32x4.add
                    (f32x4.add
                      (f32x4.mul (local.get $q0) (v128.load offset=0 (local.get $p)))
                      (f32x4.mul (local.get $q1) (v128.load offset=16 (local.get $p))))
                    (f32x4.add
                      (f32x4.mul (local.get $q2) (v128.load offset=32 (local.get $p)))
                      (f32x4.mul (local.get $q3) (v128.load offset=48 (local.get $p)))))
                  (f32x4.add
                    (f32x4.add
                      (f32x4.mul (local.get $q4) (v128.load offset=64 (local.get $p)))
                      (f32x4.mul (local.get $q5) (v128.load offset=80 (local.get $p))))
                    (f32x4.add
                      (f32x4.mul (local.get $q6) (v128.load offset=96 (local.get $p)))
                      (f32x4.mul (local.get $q7) (v128.load offset=112 (local.get $p)))))))
              (if (i32.eq (local.get $k) (local.get $last))
                (then (local.set $s (v128.bitselect (local.get $s) (v128.const f32x4 -inf -inf -inf -inf) (local.get $mask)))))
              (v128.store (i32.add (local.get $ps) (local.get $k)) (local.get $s))
              (local.set $m (f32x4.pmax (local.get $m) (local.get $s)))
              (local.set $p (i32.add (local.get $p) (i32.const 128)))
              (local.set $k (i32.add (local.get $k) (i32.const 16)))
              (br_if $score (i32.le_u (local.get $k) (local.get $last))))
            ;; 2. M in every lane; p = 2^(s − M) and its lane-wise sum
            (local.set $m (f32x4.pmax (local.get $m)
              (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $m) (local.get $m))))
            (local.set $m (f32x4.pmax (local.get $m)
              (i8x16.shuffle 4 5 6 7 0 1 2 3 12 13 14 15 8 9 10 11 (local.get $m) (local.get $m))))
            (local.set $sum
              (call $exp2_map (local.get $ps) (local.get $ps) (i32.add (local.get $ps) (i32.add (local.get $last) (i32.const 16)))
                (local.get $m) (v128.const f32x4 1 1 1 1)))
            ;; 3. a_j = Σ p · v[·, j]
            (local.set $a0 (v128.const i32x4 0 0 0 0))
            (local.set $a1 (v128.const i32x4 0 0 0 0))
            (local.set $a2 (v128.const i32x4 0 0 0 0))
            (local.set $a3 (v128.const i32x4 0 0 0 0))
            (local.set $a4 (v128.const i32x4 0 0 0 0))
            (local.set $a5 (v128.const i32x4 0 0 0 0))
            (local.set $a6 (v128.const i32x4 0 0 0 0))
            (local.set $a7 (v128.const i32x4 0 0 0 0))
            (local.set $k (local.get $ps))
            (local.set $last (i32.add (local.get $ps) (local.get $last)))
            (local.set $p (local.get $vp))
            (loop $weigh
              (local.set $e (v128.load (local.get $k)))
              (local.set $a0 (f32x4.add (local.get $a0) (f32x4.mul (local.get $e) (v128.load offset=0 (local.get $p)))))
              (local.set $a1 (f32x4.add (local.get $a1) (f32x4.mul (local.get $e) (v128.load offset=16 (local.get $p)))))
              (local.set $a2 (f32x4.add (local.get $a2) (f32x4.mul (local.get $e) (v128.load offset=32 (local.get $p)))))
              (local.set $a3 (f32x4.add (local.get $a3) (f32x4.mul (local.get $e) (v128.load offset=48 (local.get $p)))))
              (local.set $a4 (f32x4.add (local.get $a4) (f32x4.mul (local.get $e) (v128.load offset=64 (local.get $p)))))
              (local.set $a5 (f32x4.add (local.get $a5) (f32x4.mul (local.get $e) (v128.load offset=80 (local.get $p)))))
              (local.set $a6 (f32x4.add (local.get $a6) (f32x4.mul (local.get $e) (v128.load offset=96 (local.get $p)))))
              (local.set $a7 (f32x4.add (local.get $a7) (f32x4.mul (local.get $e) (v128.load offset=112 (local.get $p)))))
              (local.set $p (i32.add (local.get $p) (i32.const 128)))
              (local.set $k (i32.add (local.get $k) (i32.const 16)))
              (br_if $weigh (i32.le_u (local.get $k) (local.get $last))))
            ;; att[t, h, 0..7] = (Σ lanes of a_j) / (Σ lanes of sum)
            (local.set $sum (call $hsum4 (local.get $sum) (local.get $sum) (local.get $sum) (local.get $sum)))
            (local.set $p (i32.add (local.get $qrow) (i32.sub (local.get $po) (local.get $pq))))
            (v128.store offset=0 (local.get $p)
              (f32x4.div (call $hsum4 (local.get $a0) (local.get $a1) (local.get $a2) (local.get $a3)) (local.get $sum)))
            (v128.store offset=16 (local.get $p)
              (f32x4.div (call $hsum4 (local.get $a4) (local.get $a5) (local.get $a6) (local.get $a7)) (local.get $sum)))
            (local.set $t (i32.add (local.get $t) (i32.const 1)))
            (br $queries)))
        (local.set $h (i32.add (local.get $h) (i32.const 1)))
        (br $heads))))

  ;; -------------------------------------------------------------------------
  ;; GPTQ's solver (quant/gptq_fast.ts): the Hessian X'X, the lazy block
  ;; updates and the in-block sweep in f32x4, the blocked Cholesky and
  ;; triangular inverse in f64x2, their multiply-adds relaxed_madd (fused
  ;; where the host has FMA: see the top of this file).

  ;; gemm_f32: C[r, j] += Σ_{k<K} A[r, k] · B[k, j] for r < R, j < J, in f32,
  ;; k in increasing order per output (lane), 4 × 8 register tiles.
  ;;   A[r, k] at $pa + (r >> 3)·$s8 + (r & 7)·4 + k·$sak: four consecutive
  ;;       rows are four consecutive floats (one v128 load per 4-row tile and k);
  ;;       $s8 = 32 for a row-major [K, R] A (column-contiguous), K·32 for
  ;;       A in the packed layout of B (A = Bᵀ: the symmetric X'X)
  ;;   B packed in panels of 8 columns: B[k, j] at $pb + ((j >> 3)·K + k)·32 + (j & 7)·4
  ;;   C[r, j] at $pc + r·$ldc + j·4 (row-major, $ldc bytes per row)
  ;; A tile's four values A[r0 .. r0+3, k] are one v128 load, broadcast
  ;; lane by lane with i8x16.shuffle (fewer memory accesses than four
  ;; load32_splat: V8 checks every access's bounds here; about 1.3× faster,
  ;; the same bits).
  ;; R a multiple of 4, J and $jblk multiples of 8. Loop order: blocks of
  ;; $jblk columns (their B panels stay in L2) → 4-row tiles → 8-column
  ;; tiles. With t = r0 + $doff (the tile's row in C's triangle):
  ;;   $mode 0: every tile, k from 0 to K;
  ;;   $mode 1: only tiles with j0 + 8 > t (an upper triangle, diagonal tiles whole);
  ;;   $mode 2: only tiles with j0 ≤ t + 3 (a lower triangle, diagonal tiles whole);
  ;;   $mode 3: every tile, k from max(0, t) (A[r, k] = 0 for k < r + $doff).
  ;; $fused 1: each multiply-add is one relaxed_madd (fused where the host has
  ;; FMA: GPTQ's solver); 0: plain multiply and add, the same bits on every
  ;; engine (quant/abq_attention.ts).
  (func (export "gemm_f32")
    (param $pa i32) (param $s8 i32) (param $sak i32) (param $pb i32) (param $K i32)
    (param $pc i32) (param $ldc i32) (param $R i32) (param $J i32) (param $jblk i32)
    (param $mode i32) (param $doff i32) (param $fused i32)
    (local $jb i32) (local $je i32) (local $r0 i32) (local $j0 i32) (local $a i32) (local $ak i32)
    (local $k0 i32) (local $t i32)
    (local $b i32) (local $bend i32) (local $c i32) (local $kb i32)
    (local $s v128) (local $av v128) (local $b0 v128) (local $b1 v128)
    (local $c00 v128) (local $c01 v128) (local $c10 v128) (local $c11 v128)
    (local $c20 v128) (local $c21 v128) (local $c30 v128) (local $c31 v128)
    (if (i32.eqz (local.get $K)) (then (return)))
    (local.set $kb (i32.shl (local.get $K) (i32.const 5)))
    (local.set $jb (i32.const 0))
    (block $done_jb
      (loop $jbl
        (br_if $done_jb (i32.ge_u (local.get $jb) (local.get $J)))
        (local.set $je (i32.add (local.get $jb) (local.get $jblk)))
        (if (i32.gt_u (local.get $je) (local.get $J)) (then (local.set $je (local.get $J))))
        (local.set $r0 (i32.const 0))
        (block $done_r
          (loop $rl
            (br_if $done_r (i32.ge_u (local.get $r0) (local.get $R)))
            (local.set $t (i32.add (local.get $r0) (local.get $doff))) ;; the tile's row in C's triangle
            ;; mode 1: no tile of this column block has j0 + 8 > t once t ≥ je
            (br_if $done_r (i32.and (i32.eq (local.get $mode) (i32.const 1))
              (i32.ge_s (local.get $t) (local.get $je))))
            ;; mode 3: k from max(0, t); none left once t ≥ K
            (local.set $k0 (i32.const 0))
            (if (i32.eq (local.get $mode) (i32.const 3))
              (then
                (br_if $done_r (i32.ge_s (local.get $t) (local.get $K)))
                (if (i32.gt_s (local.get $t) (i32.const 0)) (then (local.set $k0 (local.get $t))))))
            (local.set $a
              (i32.add
                (i32.add (local.get $pa) (i32.mul (i32.shr_u (local.get $r0) (i32.const 3)) (local.get $s8)))
                (i32.add (i32.shl (i32.and (local.get $r0) (i32.const 7)) (i32.const 2))
                  (i32.mul (local.get $k0) (local.get $sak)))))
            (local.set $j0 (local.get $jb))
            (if (i32.and (i32.eq (local.get $mode) (i32.const 1))
                  (i32.gt_s (i32.and (local.get $t) (i32.const -8)) (local.get $j0)))
              (then (local.set $j0 (i32.and (local.get $t) (i32.const -8)))))
            (block $done_j
              (loop $jl
                (br_if $done_j (i32.ge_u (local.get $j0) (local.get $je)))
                ;; mode 2: tiles with j0 ≤ t + 3 only
                (br_if $done_j (i32.and (i32.eq (local.get $mode) (i32.const 2))
                  (i32.gt_s (local.get $j0) (i32.add (local.get $t) (i32.const 3)))))
                (local.set $b (i32.add (local.get $pb) (i32.mul (i32.shr_u (local.get $j0) (i32.const 3)) (local.get $kb))))
                (local.set $bend (i32.add (local.get $b) (local.get $kb)))
                (local.set $b (i32.add (local.get $b) (i32.shl (local.get $k0) (i32.const 5))))
                (local.set $c00 (v128.const i32x4 0 0 0 0))
                (local.set $c01 (v128.const i32x4 0 0 0 0))
                (local.set $c10 (v128.const i32x4 0 0 0 0))
                (local.set $c11 (v128.const i32x4 0 0 0 0))
                (local.set $c20 (v128.const i32x4 0 0 0 0))
                (local.set $c21 (v128.const i32x4 0 0 0 0))
                (local.set $c30 (v128.const i32x4 0 0 0 0))
                (local.set $c31 (v128.const i32x4 0 0 0 0))
                (local.set $ak (local.get $a))
                (if (local.get $fused)
                  (then
                    (loop $kl
                      (local.set $b0 (v128.load (local.get $b)))
                      (local.set $b1 (v128.load offset=16 (local.get $b)))
                      (local.set $av (v128.load (local.get $ak))) ;; A[r0 .. r0+3, k]
                      (local.set $s (i8x16.shuffle 0 1 2 3 0 1 2 3 0 1 2 3 0 1 2 3 (local.get $av) (local.get $av)))
                      (local.set $c00 (f32x4.relaxed_madd (local.get $s) (local.get $b0) (local.get $c00)))
                      (local.set $c01 (f32x4.relaxed_madd (local.get $s) (local.get $b1) (local.get $c01)))
                      (local.set $s (i8x16.shuffle 4 5 6 7 4 5 6 7 4 5 6 7 4 5 6 7 (local.get $av) (local.get $av)))
                      (local.set $c10 (f32x4.relaxed_madd (local.get $s) (local.get $b0) (local.get $c10)))
                      (local.set $c11 (f32x4.relaxed_madd (local.get $s) (local.get $b1) (local.get $c11)))
                      (local.set $s (i8x16.shuffle 8 9 10 11 8 9 10 11 8 9 10 11 8 9 10 11 (local.get $av) (local.get $av)))
                      (local.set $c20 (f32x4.relaxed_madd (local.get $s) (local.get $b0) (local.get $c20)))
                      (local.set $c21 (f32x4.relaxed_madd (local.get $s) (local.get $b1) (local.get $c21)))
                      (local.set $s (i8x16.shuffle 12 13 14 15 12 13 14 15 12 13 14 15 12 13 14 15 (local.get $av) (local.get $av)))
                      (local.set $c30 (f32x4.relaxed_madd (local.get $s) (local.get $b0) (local.get $c30)))
                      (local.set $c31 (f32x4.relaxed_madd (local.get $s) (local.get $b1) (local.get $c31)))
                      (local.set $ak (i32.add (local.get $ak) (local.get $sak)))
                      (local.set $b (i32.add (local.get $b) (i32.const 32)))
                      (br_if $kl (i32.lt_u (local.get $b) (local.get $bend)))))
                  (else
                    (loop $kp
                      (local.set $b0 (v128.load (local.get $b)))
                      (local.set $b1 (v128.load offset=16 (local.get $b)))
                      (local.set $av (v128.load (local.get $ak))) ;; A[r0 .. r0+3, k]
                      (local.set $s (i8x16.shuffle 0 1 2 3 0 1 2 3 0 1 2 3 0 1 2 3 (local.get $av) (local.get $av)))
                      (local.set $c00 (f32x4.add (local.get $c00) (f32x4.mul (local.get $s) (local.get $b0))))
                      (local.set $c01 (f32x4.add (local.get $c01) (f32x4.mul (local.get $s) (local.get $b1))))
                      (local.set $s (i8x16.shuffle 4 5 6 7 4 5 6 7 4 5 6 7 4 5 6 7 (local.get $av) (local.get $av)))
                      (local.set $c10 (f32x4.add (local.get $c10) (f32x4.mul (local.get $s) (local.get $b0))))
                      (local.set $c11 (f32x4.add (local.get $c11) (f32x4.mul (local.get $s) (local.get $b1))))
                      (local.set $s (i8x16.shuffle 8 9 10 11 8 9 10 11 8 9 10 11 8 9 10 11 (local.get $av) (local.get $av)))
                      (local.set $c20 (f32x4.add (local.get $c20) (f32x4.mul (local.get $s) (local.get $b0))))
                      (local.set $c21 (f32x4.add (local.get $c21) (f32x4.mul (local.get $s) (local.get $b1))))
                      (local.set $s (i8x16.shuffle 12 13 14 15 12 13 14 15 12 13 14 15 12 13 14 15 (local.get $av) (local.get $av)))
                      (local.set $c30 (f32x4.add (local.get $c30) (f32x4.mul (local.get $s) (local.get $b0))))
                      (local.set $c31 (f32x4.add (local.get $c31) (f32x4.mul (local.get $s) (local.get $b1))))
                      (local.set $ak (i32.add (local.get $ak) (local.get $sak)))
                      (local.set $b (i32.add (local.get $b) (i32.const 32)))
                      (br_if $kp (i32.lt_u (local.get $b) (local.get $bend))))))
                (local.set $c
                  (i32.add (local.get $pc)
                    (i32.add (i32.mul (local.get $r0) (local.get $ldc)) (i32.shl (local.get $j0) (i32.const 2)))))
                (v128.store (local.get $c) (f32x4.add (v128.load (local.get $c)) (local.get $c00)))
                (v128.store offset=16 (local.get $c) (f32x4.add (v128.load offset=16 (local.get $c)) (local.get $c01)))
                (local.set $c (i32.add (local.get $c) (local.get $ldc)))
                (v128.store (local.get $c) (f32x4.add (v128.load (local.get $c)) (local.get $c10)))
                (v128.store offset=16 (local.get $c) (f32x4.add (v128.load offset=16 (local.get $c)) (local.get $c11)))
                (local.set $c (i32.add (local.get $c) (local.get $ldc)))
                (v128.store (local.get $c) (f32x4.add (v128.load (local.get $c)) (local.get $c20)))
                (v128.store offset=16 (local.get $c) (f32x4.add (v128.load offset=16 (local.get $c)) (local.get $c21)))
                (local.set $c (i32.add (local.get $c) (local.get $ldc)))
                (v128.store (local.get $c) (f32x4.add (v128.load (local.get $c)) (local.get $c30)))
                (v128.store offset=16 (local.get $c) (f32x4.add (v128.load offset=16 (local.get $c)) (local.get $c31)))
                (local.set $j0 (i32.add (local.get $j0) (i32.const 8)))
                (br $jl)))
            (local.set $r0 (i32.add (local.get $r0) (i32.const 4)))
            (br $rl)))
        (local.set $jb (local.get $je))
        (br $jbl))))

  ;; gptq_block: GPTQ's in-block sweep (gptq.py `for i in range(count)`) on
  ;; R rows at once, in f32 like torch, columns transposed:
  ;;   W1 at $pw: W1[i, r] at $pw + i·$ldw + r·4 = weight (row r, column i1 + i),
  ;;       updated in place (W1[:, i:] −= err1 · Hinv1[i, i:])
  ;;   Hinv1 at $ph: [count, count] f32, row-major
  ;;   scale, zero at $ps, $pz: laid out as W1 (the grid of row r at column i)
  ;;   codes at $pq: laid out as W1 (written, as floats)
  ;;   −Err1 at $pe: in gemm_f32's packed B layout with K = count:
  ;;       −err1[r, i] at $pe + ((r >> 3)·count + i)·32 + (r & 7)·4 (written)
  ;;   $pt: scratch, 64 floats; $pl: two f64x2 (32 bytes) to which the
  ;;       losses (w − q)² / d² are added, lane by lane
  ;; R a multiple of 8. Rows go 64 at a time (their W1 stays in L1) through
  ;; every column: q = scale·(clamp(nearest(w / scale) + zero, 0, maxq) − zero),
  ;; err1 = (w − q) / d with d = Hinv1[i, i], then W1[j, r] −= err1[r] · Hinv1[i, j]
  ;; for j > i.
  (func (export "gptq_block")
    (param $pw i32) (param $ldw i32) (param $R i32) (param $count i32) (param $ph i32)
    (param $ps i32) (param $pz i32) (param $pq i32) (param $pe i32) (param $pt i32) (param $pl i32)
    (param $maxq f32)
    (local $rc i32) (local $rend i32) (local $i i32) (local $j i32) (local $r i32) (local $o i32)
    (local $p i32) (local $rowB i32) (local $endB i32)
    (local $w v128) (local $sc v128) (local $z v128) (local $cq v128) (local $diff v128) (local $e v128)
    (local $d v128) (local $d2 v128) (local $h v128) (local $vmax v128) (local $zero v128)
    (local $l0 v128) (local $l1 v128) (local $t v128)
    (local.set $vmax (f32x4.splat (local.get $maxq)))
    (local.set $zero (v128.const i32x4 0 0 0 0))
    (local.set $l0 (v128.load (local.get $pl)))
    (local.set $l1 (v128.load offset=16 (local.get $pl)))
    (local.set $rc (i32.const 0))
    (block $done_rc
      (loop $rcl
        (br_if $done_rc (i32.ge_u (local.get $rc) (local.get $R)))
        (local.set $rend (i32.add (local.get $rc) (i32.const 64)))
        (if (i32.gt_u (local.get $rend) (local.get $R)) (then (local.set $rend (local.get $R))))
        (local.set $rowB (i32.shl (local.get $rc) (i32.const 2)))
        (local.set $endB (i32.shl (local.get $rend) (i32.const 2)))
        (local.set $i (i32.const 0))
        (block $done_i
          (loop $il
            (br_if $done_i (i32.ge_u (local.get $i) (local.get $count)))
            (local.set $d
              (v128.load32_splat
                (i32.add (local.get $ph) (i32.shl (i32.mul (local.get $i) (i32.add (local.get $count) (i32.const 1))) (i32.const 2)))))
            (local.set $d2 (f32x4.mul (local.get $d) (local.get $d)))
            ;; quantize column i of rows rc..rend
            (local.set $r (local.get $rc))
            (loop $ql
              (local.set $o (i32.add (i32.mul (local.get $i) (local.get $ldw)) (i32.shl (local.get $r) (i32.const 2))))
              (local.set $w (v128.load (i32.add (local.get $pw) (local.get $o))))
              (local.set $sc (v128.load (i32.add (local.get $ps) (local.get $o))))
              (local.set $z (v128.load (i32.add (local.get $pz) (local.get $o))))
              (local.set $cq
                (f32x4.min
                  (f32x4.max
                    (f32x4.add (f32x4.nearest (f32x4.div (local.get $w) (local.get $sc))) (local.get $z))
                    (local.get $zero))
                  (local.get $vmax)))
              (v128.store (i32.add (local.get $pq) (local.get $o)) (local.get $cq))
              (local.set $diff
                (f32x4.sub (local.get $w)
                  (f32x4.mul (local.get $sc) (f32x4.sub (local.get $cq) (local.get $z)))))
              (local.set $e (f32x4.div (local.get $diff) (local.get $d)))
              (v128.store (i32.add (local.get $pt) (i32.shl (i32.sub (local.get $r) (local.get $rc)) (i32.const 2)))
                (local.get $e))
              (v128.store
                (i32.add (local.get $pe)
                  (i32.add
                    (i32.shl (i32.add (i32.mul (i32.shr_u (local.get $r) (i32.const 3)) (local.get $count)) (local.get $i))
                      (i32.const 5))
                    (i32.shl (i32.and (local.get $r) (i32.const 7)) (i32.const 2))))
                (f32x4.neg (local.get $e)))
              (local.set $t (f32x4.div (f32x4.mul (local.get $diff) (local.get $diff)) (local.get $d2)))
              (local.set $l0 (f64x2.add (local.get $l0) (f64x2.promote_low_f32x4 (local.get $t))))
              (local.set $l1 (f64x2.add (local.get $l1)
                (f64x2.promote_low_f32x4
                  (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $t) (local.get $t)))))
              (local.set $r (i32.add (local.get $r) (i32.const 4)))
              (br_if $ql (i32.lt_u (local.get $r) (local.get $rend))))
            ;; W1[j, rc..rend] −= err1 · Hinv1[i, j] for i < j < count
            (local.set $j (i32.add (local.get $i) (i32.const 1)))
            (block $done_j
              (loop $jl
                (br_if $done_j (i32.ge_u (local.get $j) (local.get $count)))
                (local.set $h
                  (v128.load32_splat
                    (i32.add (local.get $ph)
                      (i32.shl (i32.add (i32.mul (local.get $i) (local.get $count)) (local.get $j)) (i32.const 2)))))
                (local.set $p (i32.add (local.get $pw) (i32.mul (local.get $j) (local.get $ldw))))
                (local.set $o (local.get $rowB))
                (local.set $r (local.get $pt))
                (loop $ul
                  (v128.store (i32.add (local.get $p) (local.get $o))
                    (f32x4.relaxed_nmadd (v128.load (local.get $r)) (local.get $h)
                      (v128.load (i32.add (local.get $p) (local.get $o)))))
                  (local.set $r (i32.add (local.get $r) (i32.const 16)))
                  (local.set $o (i32.add (local.get $o) (i32.const 16)))
                  (br_if $ul (i32.lt_u (local.get $o) (local.get $endB))))
                (local.set $j (i32.add (local.get $j) (i32.const 1)))
                (br $jl)))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $il)))
        (local.set $rc (local.get $rend))
        (br $rcl)))
    (v128.store (local.get $pl) (local.get $l0))
    (v128.store offset=16 (local.get $pl) (local.get $l1)))

  ;; gemm_f64: C[r, j] −= Σ_k A[r, k] · B[k, j] for r < R, j < J, in f64,
  ;; k in increasing order per output (lane), 4 × 4 register tiles; all
  ;; row-major with byte strides: A[r, k] at $pa + r·$lda + k·8, B[k, j] at
  ;; $pb + k·$ldb + j·8, C[r, j] at $pc + r·$ldc + j·8. R, J and $jblk
  ;; multiples of 4.
  ;;   $mode 0: every tile, k from 0 to K;
  ;;   $mode 1: only tiles with j0 ≤ r0 + 3 + $doff (C's lower triangle when
  ;;            C[r, j] is entry (r + $doff, j) of a symmetric matrix; diagonal tiles whole);
  ;;   $mode 2: every tile, k from max(0, j0 + $doff) (B[k, j] = 0 for k < j + $doff:
  ;;            B lower triangular).
  ;; Loop order: blocks of $jblk columns (their strip of B stays in L2) →
  ;; 4-row tiles (a tile's rows of A stay in L1) → 4-column tiles.
  (func (export "gemm_f64")
    (param $pa i32) (param $lda i32) (param $pb i32) (param $ldb i32) (param $pc i32) (param $ldc i32)
    (param $R i32) (param $J i32) (param $K i32) (param $mode i32) (param $doff i32) (param $jblk i32)
    (local $jb i32) (local $je i32) (local $r0 i32) (local $j0 i32) (local $k0 i32)
    (local $a i32) (local $b i32) (local $c i32) (local $n i32) (local $l2 i32) (local $l3 i32)
    (local $s v128) (local $b0 v128) (local $b1 v128)
    (local $c00 v128) (local $c01 v128) (local $c10 v128) (local $c11 v128)
    (local $c20 v128) (local $c21 v128) (local $c30 v128) (local $c31 v128)
    (local.set $l2 (i32.shl (local.get $lda) (i32.const 1)))
    (local.set $l3 (i32.add (local.get $l2) (local.get $lda)))
    (local.set $jb (i32.const 0))
    (block $done_jb
      (loop $jbl
        (br_if $done_jb (i32.ge_u (local.get $jb) (local.get $J)))
        (local.set $je (i32.add (local.get $jb) (local.get $jblk)))
        (if (i32.gt_u (local.get $je) (local.get $J)) (then (local.set $je (local.get $J))))
        (local.set $r0 (i32.const 0))
        (if (i32.eq (local.get $mode) (i32.const 1))
          (then
            ;; first r0 (a multiple of 4) with r0 ≥ jb − 3 − doff
            (local.set $n (i32.sub (i32.sub (local.get $jb) (i32.const 3)) (local.get $doff)))
            (if (i32.gt_s (local.get $n) (i32.const 0))
              (then (local.set $r0 (i32.and (i32.add (local.get $n) (i32.const 3)) (i32.const -4)))))))
        (block $done_r
          (loop $rl
            (br_if $done_r (i32.ge_u (local.get $r0) (local.get $R)))
            (local.set $j0 (local.get $jb))
            (block $done_j
              (loop $jl
                (br_if $done_j (i32.ge_u (local.get $j0) (local.get $je)))
                (br_if $done_j
                  (i32.and (i32.eq (local.get $mode) (i32.const 1))
                    (i32.gt_s (local.get $j0)
                      (i32.add (i32.add (local.get $r0) (i32.const 3)) (local.get $doff)))))
                (local.set $k0 (i32.const 0))
                (if (i32.eq (local.get $mode) (i32.const 2))
                  (then
                    (if (i32.gt_s (i32.add (local.get $j0) (local.get $doff)) (i32.const 0))
                      (then (local.set $k0 (i32.add (local.get $j0) (local.get $doff)))))))
                (br_if $done_j (i32.ge_s (local.get $k0) (local.get $K)))
                (local.set $c00 (v128.const i32x4 0 0 0 0))
                (local.set $c01 (v128.const i32x4 0 0 0 0))
                (local.set $c10 (v128.const i32x4 0 0 0 0))
                (local.set $c11 (v128.const i32x4 0 0 0 0))
                (local.set $c20 (v128.const i32x4 0 0 0 0))
                (local.set $c21 (v128.const i32x4 0 0 0 0))
                (local.set $c30 (v128.const i32x4 0 0 0 0))
                (local.set $c31 (v128.const i32x4 0 0 0 0))
                (local.set $a
                  (i32.add (local.get $pa)
                    (i32.add (i32.mul (local.get $r0) (local.get $lda)) (i32.shl (local.get $k0) (i32.const 3)))))
                (local.set $b
                  (i32.add (local.get $pb)
                    (i32.add (i32.mul (local.get $k0) (local.get $ldb)) (i32.shl (local.get $j0) (i32.const 3)))))
                (local.set $n (i32.sub (local.get $K) (local.get $k0)))
                (loop $kl
                  (local.set $b0 (v128.load (local.get $b)))
                  (local.set $b1 (v128.load offset=16 (local.get $b)))
                  (local.set $s (v128.load64_splat (local.get $a)))
                  (local.set $c00 (f64x2.relaxed_madd (local.get $s) (local.get $b0) (local.get $c00)))
                  (local.set $c01 (f64x2.relaxed_madd (local.get $s) (local.get $b1) (local.get $c01)))
                  (local.set $s (v128.load64_splat (i32.add (local.get $a) (local.get $lda))))
                  (local.set $c10 (f64x2.relaxed_madd (local.get $s) (local.get $b0) (local.get $c10)))
                  (local.set $c11 (f64x2.relaxed_madd (local.get $s) (local.get $b1) (local.get $c11)))
                  (local.set $s (v128.load64_splat (i32.add (local.get $a) (local.get $l2))))
                  (local.set $c20 (f64x2.relaxed_madd (local.get $s) (local.get $b0) (local.get $c20)))
                  (local.set $c21 (f64x2.relaxed_madd (local.get $s) (local.get $b1) (local.get $c21)))
                  (local.set $s (v128.load64_splat (i32.add (local.get $a) (local.get $l3))))
                  (local.set $c30 (f64x2.relaxed_madd (local.get $s) (local.get $b0) (local.get $c30)))
                  (local.set $c31 (f64x2.relaxed_madd (local.get $s) (local.get $b1) (local.get $c31)))
                  (local.set $a (i32.add (local.get $a) (i32.const 8)))
                  (local.set $b (i32.add (local.get $b) (local.get $ldb)))
                  (local.set $n (i32.sub (local.get $n) (i32.const 1)))
                  (br_if $kl (local.get $n)))
                (local.set $c
                  (i32.add (local.get $pc)
                    (i32.add (i32.mul (local.get $r0) (local.get $ldc)) (i32.shl (local.get $j0) (i32.const 3)))))
                (v128.store (local.get $c) (f64x2.sub (v128.load (local.get $c)) (local.get $c00)))
                (v128.store offset=16 (local.get $c) (f64x2.sub (v128.load offset=16 (local.get $c)) (local.get $c01)))
                (local.set $c (i32.add (local.get $c) (local.get $ldc)))
                (v128.store (local.get $c) (f64x2.sub (v128.load (local.get $c)) (local.get $c10)))
                (v128.store offset=16 (local.get $c) (f64x2.sub (v128.load offset=16 (local.get $c)) (local.get $c11)))
                (local.set $c (i32.add (local.get $c) (local.get $ldc)))
                (v128.store (local.get $c) (f64x2.sub (v128.load (local.get $c)) (local.get $c20)))
                (v128.store offset=16 (local.get $c) (f64x2.sub (v128.load offset=16 (local.get $c)) (local.get $c21)))
                (local.set $c (i32.add (local.get $c) (local.get $ldc)))
                (v128.store (local.get $c) (f64x2.sub (v128.load (local.get $c)) (local.get $c30)))
                (v128.store offset=16 (local.get $c) (f64x2.sub (v128.load offset=16 (local.get $c)) (local.get $c31)))
                (local.set $j0 (i32.add (local.get $j0) (i32.const 4)))
                (br $jl)))
            (local.set $r0 (i32.add (local.get $r0) (i32.const 4)))
            (br $rl)))
        (local.set $jb (local.get $je))
        (br $jbl))))
)
