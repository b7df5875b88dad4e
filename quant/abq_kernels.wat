;; the causal softmax of a head's score rows with the head-averaged map, its
;; backward, the product of a causal map with a head's values (or keys),
;; an elementwise exp (ABQ's loss), the per-token activation quantizer of
;; quant/act_quant.ts with its straight-through backward (quant/abq_grad.ts),
;; and the integer W×A linear of quant/wa_int.ts (activation codes × weight
;; codes, summed exactly in i32).
;; The attention kernels work in place on the maps that `gemm_f32`
;; (model/wasm/kernels.wat) writes, in the same linear memory (imported).
;;
;; Build: `deno run -A quant/abq_kernels_build.ts` writes `_abq_kernels_wasm.ts`;
;; abq_attention_test.ts checks that the committed bytes are what this source
;; compiles to.
;;
;; Layout: a map row t holds the keys u ≤ t at $ps + (t·$ld + u)·4 ($ld a
;; multiple of 4, $ps 16-byte aligned); the averaged map is the causal
;; triangle, row t at t(t+1)/2, with at least 3 floats of slack after row
;; T − 1 (a row's last group of 4 lanes may run into the next row, adding 0).
;; Lanes u > t of a row's last group are masked; floats after it, up to
;; $ld, are set to 0. Sums run in 4 lanes, reduced in a fixed order: the
;; same bits on every engine.
(module
  (import "env" "memory" (memory 1))

  ;; causal_softmax: for t < $T, P[t, u] = softmax_u≤t($scale · S[t, u]) in
  ;; place, 0 for u > t; avg[t(t+1)/2 + u] += $inv · P[t, u].
  ;;
  ;; exp as model/wasm/kernels.wat's attention (Cephes' expf): e^x = 2^k · e^r,
  ;; k = round(x · log2 e), r = x − k·ln 2 (ln 2 in two parts), e^r ≈ 1 + r +
  ;; r²·P(r) with P of degree 5; x ≥ −87.33654 so that 2^k stays normal.
  (func (export "causal_softmax")
    (param $ps i32) (param $ld i32) (param $T i32) (param $scale f32) (param $pavg i32) (param $inv f32)
    (local $t i32) (local $row i32) (local $p i32) (local $end i32) (local $stop i32) (local $a i32)
    (local $mask v128) (local $m v128) (local $sum v128) (local $x v128) (local $e v128)
    (local $vscale v128) (local $vinv v128) (local $is v128)
    (local $kf v128) (local $k v128) (local $r v128) (local $r2 v128) (local $y v128)
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
    (local.set $vscale (f32x4.splat (local.get $scale)))
    (local.set $vinv (f32x4.splat (local.get $inv)))
    (local.set $t (i32.const 0))
    (block $done_rows
      (loop $rows
        (br_if $done_rows (i32.ge_u (local.get $t) (local.get $T)))
        (local.set $row (i32.add (local.get $ps) (i32.shl (i32.mul (local.get $t) (local.get $ld)) (i32.const 2))))
        ;; $end: the row's last group (keys 4·floor(t/4) .. +3), lanes l ≤ t mod 4 kept
        (local.set $end (i32.add (local.get $row) (i32.shl (i32.and (local.get $t) (i32.const -4)) (i32.const 2))))
        (local.set $mask
          (i32x4.le_s (v128.const i32x4 0 1 2 3) (i32x4.splat (i32.and (local.get $t) (i32.const 3)))))
        ;; scores · scale in place; m = their max, in every lane
        (local.set $m (f32x4.splat (f32.const -inf)))
        (local.set $p (local.get $row))
        (block $done_max
          (loop $max
            (br_if $done_max (i32.ge_u (local.get $p) (local.get $end)))
            (local.set $x (f32x4.mul (v128.load (local.get $p)) (local.get $vscale)))
            (v128.store (local.get $p) (local.get $x))
            (local.set $m (f32x4.pmax (local.get $m) (local.get $x)))
            (local.set $p (i32.add (local.get $p) (i32.const 16)))
            (br $max)))
        (local.set $x
          (v128.bitselect (f32x4.mul (v128.load (local.get $end)) (local.get $vscale))
            (f32x4.splat (f32.const -inf)) (local.get $mask)))
        (v128.store (local.get $end) (local.get $x))
        (local.set $m (f32x4.pmax (local.get $m) (local.get $x)))
        (local.set $m (f32x4.pmax (local.get $m)
          (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $m) (local.get $m))))
        (local.set $m (f32x4.pmax (local.get $m)
          (i8x16.shuffle 4 5 6 7 0 1 2 3 12 13 14 15 8 9 10 11 (local.get $m) (local.get $m))))
        ;; e = exp(x − m), lanes u > t zeroed; sum in 4 lanes
        (local.set $sum (v128.const i32x4 0 0 0 0))
        (local.set $p (local.get $row))
        (loop $exp
          (local.set $x
            (f32x4.pmax (f32x4.sub (v128.load (local.get $p)) (local.get $m)) (local.get $c_lo)))
          (local.set $kf (f32x4.add (f32x4.mul (local.get $x) (local.get $c_log2e)) (local.get $c_round)))
          (local.set $k (f32x4.sub (local.get $kf) (local.get $c_round)))
          (local.set $r
            (f32x4.sub
              (f32x4.sub (local.get $x) (f32x4.mul (local.get $k) (local.get $c_ln2hi)))
              (f32x4.mul (local.get $k) (local.get $c_ln2lo))))
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
          (local.set $e
            (v128.and
              (select (v128.const i32x4 -1 -1 -1 -1) (local.get $mask)
                (i32.lt_u (local.get $p) (local.get $end)))
              (f32x4.mul (local.get $y)
                (i32x4.shl (i32x4.add (local.get $kf) (local.get $c_bias)) (i32.const 23)))))
          (v128.store (local.get $p) (local.get $e))
          (local.set $sum (f32x4.add (local.get $sum) (local.get $e)))
          (local.set $p (i32.add (local.get $p) (i32.const 16)))
          (br_if $exp (i32.le_u (local.get $p) (local.get $end))))
        (local.set $sum (f32x4.add (local.get $sum)
          (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $sum) (local.get $sum))))
        (local.set $sum (f32x4.add (local.get $sum)
          (i8x16.shuffle 4 5 6 7 0 1 2 3 12 13 14 15 8 9 10 11 (local.get $sum) (local.get $sum))))
        (local.set $is (f32x4.div (local.get $c_one) (local.get $sum)))
        ;; P = e / sum; avg += inv · P
        (local.set $a (i32.add (local.get $pavg)
          (i32.shl (i32.shr_u (i32.mul (local.get $t) (i32.add (local.get $t) (i32.const 1))) (i32.const 1))
            (i32.const 2))))
        (local.set $p (local.get $row))
        (loop $norm
          (local.set $x (f32x4.mul (v128.load (local.get $p)) (local.get $is)))
          (v128.store (local.get $p) (local.get $x))
          (v128.store (local.get $a)
            (f32x4.add (v128.load (local.get $a)) (f32x4.mul (local.get $x) (local.get $vinv))))
          (local.set $a (i32.add (local.get $a) (i32.const 16)))
          (local.set $p (i32.add (local.get $p) (i32.const 16)))
          (br_if $norm (i32.le_u (local.get $p) (local.get $end))))
        ;; zeros after the last group
        (local.set $stop (i32.add (local.get $row) (i32.shl (local.get $ld) (i32.const 2))))
        (block $done_zero
          (loop $zero
            (br_if $done_zero (i32.ge_u (local.get $p) (local.get $stop)))
            (v128.store (local.get $p) (v128.const i32x4 0 0 0 0))
            (local.set $p (i32.add (local.get $p) (i32.const 16)))
            (br $zero)))
        (local.set $t (i32.add (local.get $t) (i32.const 1)))
        (br $rows))))

  ;; causal_softmax_backward: for t < $T, with dP[t, u] at $pd (in place) and
  ;; P[t, u] at $pp (same layout):
  ;;   dp_u = dP[t, u] + $inv · dAvg[t(t+1)/2 + u];  D = Σ_u P[t, u] · dp_u
  ;;   dS[t, u] = $scale · P[t, u] · (dp_u − D)   (0 for u > t, where P is 0)
  ;; and zeros after the row's last group, up to $ld.
  (func (export "causal_softmax_backward")
    (param $pp i32) (param $pd i32) (param $ld i32) (param $T i32) (param $scale f32)
    (param $pdavg i32) (param $inv f32)
    (local $t i32) (local $off i32) (local $i i32) (local $last i32) (local $stop i32) (local $a i32)
    (local $D v128) (local $dp v128) (local $vscale v128) (local $vinv v128)
    (local.set $vscale (f32x4.splat (local.get $scale)))
    (local.set $vinv (f32x4.splat (local.get $inv)))
    (local.set $t (i32.const 0))
    (block $done_rows
      (loop $rows
        (br_if $done_rows (i32.ge_u (local.get $t) (local.get $T)))
        (local.set $off (i32.shl (i32.mul (local.get $t) (local.get $ld)) (i32.const 2)))
        (local.set $last (i32.add (local.get $off) (i32.shl (i32.and (local.get $t) (i32.const -4)) (i32.const 2))))
        (local.set $a (i32.add (local.get $pdavg)
          (i32.shl (i32.shr_u (i32.mul (local.get $t) (i32.add (local.get $t) (i32.const 1))) (i32.const 1))
            (i32.const 2))))
        ;; dp in place; D in 4 lanes
        (local.set $D (v128.const i32x4 0 0 0 0))
        (local.set $i (local.get $off))
        (loop $dots
          (local.set $dp
            (f32x4.add (v128.load (i32.add (local.get $pd) (local.get $i)))
              (f32x4.mul (v128.load (local.get $a)) (local.get $vinv))))
          (v128.store (i32.add (local.get $pd) (local.get $i)) (local.get $dp))
          (local.set $D (f32x4.add (local.get $D)
            (f32x4.mul (v128.load (i32.add (local.get $pp) (local.get $i))) (local.get $dp))))
          (local.set $a (i32.add (local.get $a) (i32.const 16)))
          (local.set $i (i32.add (local.get $i) (i32.const 16)))
          (br_if $dots (i32.le_u (local.get $i) (local.get $last))))
        (local.set $D (f32x4.add (local.get $D)
          (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $D) (local.get $D))))
        (local.set $D (f32x4.add (local.get $D)
          (i8x16.shuffle 4 5 6 7 0 1 2 3 12 13 14 15 8 9 10 11 (local.get $D) (local.get $D))))
        (local.set $i (local.get $off))
        (loop $ds
          (v128.store (i32.add (local.get $pd) (local.get $i))
            (f32x4.mul
              (f32x4.mul (v128.load (i32.add (local.get $pp) (local.get $i)))
                (f32x4.sub (v128.load (i32.add (local.get $pd) (local.get $i))) (local.get $D)))
              (local.get $vscale)))
          (local.set $i (i32.add (local.get $i) (i32.const 16)))
          (br_if $ds (i32.le_u (local.get $i) (local.get $last))))
        (local.set $stop (i32.add (local.get $off) (i32.shl (local.get $ld) (i32.const 2))))
        (block $done_zero
          (loop $zero
            (br_if $done_zero (i32.ge_u (local.get $i) (local.get $stop)))
            (v128.store (i32.add (local.get $pd) (local.get $i)) (v128.const i32x4 0 0 0 0))
            (local.set $i (i32.add (local.get $i) (i32.const 16)))
            (br $zero)))
        (local.set $t (i32.add (local.get $t) (i32.const 1)))
        (br $rows))))

  ;; causal_pv: O[t, j] = Σ_{u ≤ t} M[t, u] · V[u, j] for t < $T, j < $w: a
  ;; causal map M (P, or dS) times a head's values V (or keys K), reading only
  ;; the map's entries on and below the diagonal. M[t, u] at $pm + (t·$ld + u)·4,
  ;; V [T, $w] row-major at $pv, O [T, $w] at $po, $w a multiple of 8. Two
  ;; chains of sums per output lane, even u and odd u, each in increasing u,
  ;; added at the end (the same bits on every engine).
  (func (export "causal_pv")
    (param $pm i32) (param $ld i32) (param $pv i32) (param $po i32) (param $T i32) (param $w i32)
    (local $t i32) (local $j i32) (local $m i32) (local $mend i32) (local $v i32) (local $row i32)
    (local $row2 i32) (local $p v128) (local $a0 v128) (local $a1 v128) (local $b0 v128) (local $b1 v128)
    (local.set $row (i32.shl (local.get $w) (i32.const 2))) ;; bytes per row of V and O
    (local.set $row2 (i32.shl (local.get $w) (i32.const 3)))
    (local.set $t (i32.const 0))
    (block $done_rows
      (loop $rows
        (br_if $done_rows (i32.ge_u (local.get $t) (local.get $T)))
        (local.set $j (i32.const 0))
        (loop $cols
          (local.set $a0 (v128.const i32x4 0 0 0 0))
          (local.set $a1 (v128.const i32x4 0 0 0 0))
          (local.set $b0 (v128.const i32x4 0 0 0 0))
          (local.set $b1 (v128.const i32x4 0 0 0 0))
          (local.set $m (i32.add (local.get $pm) (i32.shl (i32.mul (local.get $t) (local.get $ld)) (i32.const 2))))
          ;; $mend: the entry u = t; pairs (u, u + 1) while u + 1 ≤ t
          (local.set $mend (i32.add (local.get $m) (i32.shl (local.get $t) (i32.const 2))))
          (local.set $v (i32.add (local.get $pv) (i32.shl (local.get $j) (i32.const 2))))
          (block $done_pairs
            (loop $pairs
              (br_if $done_pairs (i32.ge_u (local.get $m) (local.get $mend)))
              (local.set $p (v128.load32_splat (local.get $m)))
              (local.set $a0 (f32x4.add (local.get $a0) (f32x4.mul (local.get $p) (v128.load (local.get $v)))))
              (local.set $a1
                (f32x4.add (local.get $a1) (f32x4.mul (local.get $p) (v128.load offset=16 (local.get $v)))))
              (local.set $p (v128.load32_splat offset=4 (local.get $m)))
              (local.set $b0
                (f32x4.add (local.get $b0)
                  (f32x4.mul (local.get $p) (v128.load (i32.add (local.get $v) (local.get $row))))))
              (local.set $b1
                (f32x4.add (local.get $b1)
                  (f32x4.mul (local.get $p) (v128.load offset=16 (i32.add (local.get $v) (local.get $row))))))
              (local.set $m (i32.add (local.get $m) (i32.const 8)))
              (local.set $v (i32.add (local.get $v) (local.get $row2)))
              (br $pairs)))
          ;; the last key when t is even
          (if (i32.eq (local.get $m) (local.get $mend))
            (then
              (local.set $p (v128.load32_splat (local.get $m)))
              (local.set $a0 (f32x4.add (local.get $a0) (f32x4.mul (local.get $p) (v128.load (local.get $v)))))
              (local.set $a1
                (f32x4.add (local.get $a1) (f32x4.mul (local.get $p) (v128.load offset=16 (local.get $v)))))))
          (local.set $v
            (i32.add (local.get $po)
              (i32.shl (i32.add (i32.mul (local.get $t) (local.get $w)) (local.get $j)) (i32.const 2))))
          (v128.store (local.get $v) (f32x4.add (local.get $a0) (local.get $b0)))
          (v128.store offset=16 (local.get $v) (f32x4.add (local.get $a1) (local.get $b1)))
          (local.set $j (i32.add (local.get $j) (i32.const 8)))
          (br_if $cols (i32.lt_u (local.get $j) (local.get $w))))
        (local.set $t (i32.add (local.get $t) (i32.const 1)))
        (br $rows))))

  ;; exp_f32: out[i] = e^x[i] for i < $n, x at $px, out at $po (may be $px;
  ;; 16-byte aligned; the last group of 4 reads and writes up to 3 floats past
  ;; $n); x is clamped to [−87.33654, 88.37626] (e^x stays finite and normal). The polynomial is causal_softmax's, repeated here: V8 does not
  ;; inline a helper function, and a call per 4 lanes made the softmax about
  ;; 1.5× slower.
  (func (export "exp_f32") (param $px i32) (param $po i32) (param $n i32)
    (local $i i32) (local $end i32)
    (local $x v128) (local $kf v128) (local $k v128) (local $r v128) (local $r2 v128) (local $y v128)
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
    (local.set $i (i32.const 0))
    (local.set $end (i32.shl (local.get $n) (i32.const 2)))
    (block $done
      (loop $each
        (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
        (local.set $x
          (f32x4.pmin (f32x4.pmax (v128.load (i32.add (local.get $px) (local.get $i))) (local.get $c_lo))
            (f32x4.splat (f32.const 88.37626))))
        (local.set $kf (f32x4.add (f32x4.mul (local.get $x) (local.get $c_log2e)) (local.get $c_round)))
        (local.set $k (f32x4.sub (local.get $kf) (local.get $c_round)))
        (local.set $r
          (f32x4.sub
            (f32x4.sub (local.get $x) (f32x4.mul (local.get $k) (local.get $c_ln2hi)))
            (f32x4.mul (local.get $k) (local.get $c_ln2lo))))
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
        (v128.store (i32.add (local.get $po) (local.get $i))
          (f32x4.mul (local.get $y)
            (i32x4.shl (i32x4.add (local.get $kf) (local.get $c_bias)) (i32.const 23))))
        (local.set $i (i32.add (local.get $i) (i32.const 16)))
        (br $each))))

  ;; ---------------------------------------------------------------------------
  ;; The per-token activation quantizer (quant/act_quant.ts), bit for bit: every
  ;; step is one f32 operation, as the TypeScript rounds each step to f32, and
  ;; f32.nearest rounds halves to even (torch.round).

  ;; $token_params: scale and zero of the $n floats at $p (act_quant.ts
  ;; `tokenParams`): scale = clamp((max − min) / maxq, 1e-5, 1e4), zero =
  ;; nearest(clamp(−min / scale, −1e4, 1e4)).
  (func $token_params (param $p i32) (param $n i32) (param $maxq f32) (result f32 f32)
    (local $i i32) (local $end i32) (local $mn f32) (local $mx f32) (local $v f32) (local $s f32)
    (local $z f32)
    (local.set $mn (f32.load (local.get $p)))
    (local.set $mx (local.get $mn))
    (local.set $i (i32.const 4))
    (local.set $end (i32.shl (local.get $n) (i32.const 2)))
    (block $done
      (loop $each
        (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
        (local.set $v (f32.load (i32.add (local.get $p) (local.get $i))))
        (if (f32.lt (local.get $v) (local.get $mn)) (then (local.set $mn (local.get $v))))
        (if (f32.gt (local.get $v) (local.get $mx)) (then (local.set $mx (local.get $v))))
        (local.set $i (i32.add (local.get $i) (i32.const 4)))
        (br $each)))
    (local.set $s (f32.div (f32.sub (local.get $mx) (local.get $mn)) (local.get $maxq)))
    (if (f32.lt (local.get $s) (f32.const 0x1.4f8b58p-17)) (then (local.set $s (f32.const 0x1.4f8b58p-17)))) ;; fround(1e-5)
    (if (f32.gt (local.get $s) (f32.const 10000)) (then (local.set $s (f32.const 10000))))
    (local.set $z (f32.div (f32.neg (local.get $mn)) (local.get $s)))
    (if (f32.lt (local.get $z) (f32.const -10000)) (then (local.set $z (f32.const -10000))))
    (if (f32.gt (local.get $z) (f32.const 10000)) (then (local.set $z (f32.const 10000))))
    (local.get $s)
    (f32.nearest (local.get $z)))

  ;; fake_quant_rows: out = x̂ for $rows vectors of $width floats at $px (act_quant.ts
  ;; `fakeQuantRows`): x̂ = (clamp(nearest(x / scale) + zero, 0, maxq) − zero) · scale.
  ;; $po may be $px.
  (func (export "fake_quant_rows")
    (param $px i32) (param $po i32) (param $rows i32) (param $width i32) (param $maxq f32)
    (local $r i32) (local $x i32) (local $o i32) (local $end i32) (local $end4 i32)
    (local $s f32) (local $z f32) (local $q f32)
    (local $vs v128) (local $vz v128) (local $vq v128) (local $vmax v128)
    (local.set $vmax (f32x4.splat (local.get $maxq)))
    (local.set $r (i32.const 0))
    (block $done_rows
      (loop $rows_l
        (br_if $done_rows (i32.ge_u (local.get $r) (local.get $rows)))
        (local.set $x
          (i32.add (local.get $px) (i32.shl (i32.mul (local.get $r) (local.get $width)) (i32.const 2))))
        (local.set $o
          (i32.add (local.get $po) (i32.shl (i32.mul (local.get $r) (local.get $width)) (i32.const 2))))
        (call $token_params (local.get $x) (local.get $width) (local.get $maxq))
        (local.set $z)
        (local.set $s)
        (local.set $vs (f32x4.splat (local.get $s)))
        (local.set $vz (f32x4.splat (local.get $z)))
        (local.set $end (i32.add (local.get $x) (i32.shl (local.get $width) (i32.const 2))))
        (local.set $end4 (i32.add (local.get $x) (i32.shl (i32.and (local.get $width) (i32.const -4)) (i32.const 2))))
        (block $done4
          (loop $each4
            (br_if $done4 (i32.ge_u (local.get $x) (local.get $end4)))
            (local.set $vq
              (f32x4.add (f32x4.nearest (f32x4.div (v128.load align=4 (local.get $x)) (local.get $vs)))
                (local.get $vz)))
            (local.set $vq (f32x4.min (f32x4.max (local.get $vq) (v128.const i32x4 0 0 0 0)) (local.get $vmax)))
            (v128.store align=4 (local.get $o)
              (f32x4.mul (f32x4.sub (local.get $vq) (local.get $vz)) (local.get $vs)))
            (local.set $x (i32.add (local.get $x) (i32.const 16)))
            (local.set $o (i32.add (local.get $o) (i32.const 16)))
            (br $each4)))
        (block $done1
          (loop $each1
            (br_if $done1 (i32.ge_u (local.get $x) (local.get $end)))
            (local.set $q
              (f32.add (f32.nearest (f32.div (f32.load (local.get $x)) (local.get $s))) (local.get $z)))
            (local.set $q (f32.min (f32.max (local.get $q) (f32.const 0)) (local.get $maxq)))
            (f32.store (local.get $o) (f32.mul (f32.sub (local.get $q) (local.get $z)) (local.get $s)))
            (local.set $x (i32.add (local.get $x) (i32.const 4)))
            (local.set $o (i32.add (local.get $o) (i32.const 4)))
            (br $each1)))
        (local.set $r (i32.add (local.get $r) (i32.const 1)))
        (br $rows_l))))

  ;; fake_quant_grad_rows: for $rows vectors of $width floats, x at $px (before
  ;; quantization) and g at $pg (dL/dx̂ in, dL/dx out), quant/abq_grad.ts
  ;; `fakeQuantGrad` in the same f64 and f32 steps:
  ;;   dS = Σ_i g_i·((q_i − zero) − [inside]·x_i/scale)   (f64, in i order)
  ;;   g_i ← [inside]·g_i;  then, unless scale was clamped,
  ;;   g[argmax] += dS / maxq;  g[argmin] −= dS / maxq     (first max, first min)
  (func (export "fake_quant_grad_rows")
    (param $pg i32) (param $px i32) (param $rows i32) (param $width i32) (param $maxq f32)
    (local $r i32) (local $x i32) (local $g i32) (local $i i32) (local $end i32)
    (local $imax i32) (local $imin i32) (local $s f32) (local $z f32) (local $q f32) (local $v f32)
    (local $raw f64) (local $dS f64) (local $gi f64) (local $in i32)
    (local.set $r (i32.const 0))
    (block $done_rows
      (loop $rows_l
        (br_if $done_rows (i32.ge_u (local.get $r) (local.get $rows)))
        (local.set $x
          (i32.add (local.get $px) (i32.shl (i32.mul (local.get $r) (local.get $width)) (i32.const 2))))
        (local.set $g
          (i32.add (local.get $pg) (i32.shl (i32.mul (local.get $r) (local.get $width)) (i32.const 2))))
        (call $token_params (local.get $x) (local.get $width) (local.get $maxq))
        (local.set $z)
        (local.set $s)
        (local.set $end (i32.shl (local.get $width) (i32.const 2)))
        ;; first max and first min (byte offsets)
        (local.set $imax (i32.const 0))
        (local.set $imin (i32.const 0))
        (local.set $i (i32.const 4))
        (block $done_arg
          (loop $arg
            (br_if $done_arg (i32.ge_u (local.get $i) (local.get $end)))
            (local.set $v (f32.load (i32.add (local.get $x) (local.get $i))))
            (if (f32.gt (local.get $v) (f32.load (i32.add (local.get $x) (local.get $imax))))
              (then (local.set $imax (local.get $i))))
            (if (f32.lt (local.get $v) (f32.load (i32.add (local.get $x) (local.get $imin))))
              (then (local.set $imin (local.get $i))))
            (local.set $i (i32.add (local.get $i) (i32.const 4)))
            (br $arg)))
        (local.set $raw
          (f64.div
            (f64.promote_f32
              (f32.sub (f32.load (i32.add (local.get $x) (local.get $imax)))
                (f32.load (i32.add (local.get $x) (local.get $imin)))))
            (f64.promote_f32 (local.get $maxq))))
        (local.set $dS (f64.const 0))
        (local.set $i (i32.const 0))
        (block $done_each
          (loop $each
            (br_if $done_each (i32.ge_u (local.get $i) (local.get $end)))
            (local.set $v (f32.load (i32.add (local.get $x) (local.get $i))))
            (local.set $gi (f64.promote_f32 (f32.load (i32.add (local.get $g) (local.get $i)))))
            (local.set $q (f32.add (f32.nearest (f32.div (local.get $v) (local.get $s))) (local.get $z)))
            (local.set $in
              (i32.and (f32.ge (local.get $q) (f32.const 0)) (f32.le (local.get $q) (local.get $maxq))))
            (local.set $q (f32.min (f32.max (local.get $q) (f32.const 0)) (local.get $maxq)))
            (local.set $dS
              (f64.add (local.get $dS)
                (f64.mul (local.get $gi)
                  (f64.sub (f64.promote_f32 (f32.sub (local.get $q) (local.get $z)))
                    (select
                      (f64.div (f64.promote_f32 (local.get $v)) (f64.promote_f32 (local.get $s)))
                      (f64.const 0) (local.get $in))))))
            (if (i32.eqz (local.get $in))
              (then (f32.store (i32.add (local.get $g) (local.get $i)) (f32.const 0))))
            (local.set $i (i32.add (local.get $i) (i32.const 4)))
            (br $each)))
        (if (i32.and (f64.ge (local.get $raw) (f64.const 1e-5)) (f64.le (local.get $raw) (f64.const 1e4)))
          (then
            (local.set $dS (f64.div (local.get $dS) (f64.promote_f32 (local.get $maxq))))
            (f32.store (i32.add (local.get $g) (local.get $imax))
              (f32.demote_f64
                (f64.add (f64.promote_f32 (f32.load (i32.add (local.get $g) (local.get $imax))))
                  (local.get $dS))))
            (f32.store (i32.add (local.get $g) (local.get $imin))
              (f32.demote_f64
                (f64.sub (f64.promote_f32 (f32.load (i32.add (local.get $g) (local.get $imin))))
                  (local.get $dS))))))
        (local.set $r (i32.add (local.get $r) (i32.const 1)))
        (br $rows_l))))

  ;; ---------------------------------------------------------------------------
  ;; The W×A linear as integer hardware computes it (quant/wa_int.ts): the
  ;; activation codes of the grid above as integers, times the weight's
  ;; integer codes, summed exactly, scaled once.

  ;; wa_quant_rows: for $rows vectors of $width floats at $px, the codes of the
  ;; grid above minus the zero, q − zero = clamp(nearest(x / scale) + zero, 0,
  ;; maxq) − zero (exact integers in f32), as i16 at $pq + 2·(r·$stride + pos[i])
  ;; (pos: i32 [$width] at $ppos, each < $stride; $stride a multiple of 8, $pq
  ;; 16-byte aligned); the other slots of the row are 0. Row r's scale goes to
  ;; $ps + 4r. Four values at a time, each lane the scalar steps.
  (func (export "wa_quant_rows")
    (param $px i32) (param $pq i32) (param $ps i32) (param $ppos i32) (param $rows i32)
    (param $width i32) (param $stride i32) (param $maxq f32)
    (local $r i32) (local $x i32) (local $q i32) (local $i i32) (local $end i32) (local $end4 i32)
    (local $p i32) (local $s f32) (local $z f32) (local $v f32)
    (local $vs v128) (local $vz v128) (local $vq v128) (local $vp v128) (local $vmax v128)
    (local.set $vmax (f32x4.splat (local.get $maxq)))
    (local.set $end4 (i32.shl (i32.and (local.get $width) (i32.const -4)) (i32.const 2)))
    (local.set $r (i32.const 0))
    (block $done_rows
      (loop $rows_l
        (br_if $done_rows (i32.ge_u (local.get $r) (local.get $rows)))
        (local.set $x
          (i32.add (local.get $px) (i32.shl (i32.mul (local.get $r) (local.get $width)) (i32.const 2))))
        (local.set $q
          (i32.add (local.get $pq) (i32.shl (i32.mul (local.get $r) (local.get $stride)) (i32.const 1))))
        (call $token_params (local.get $x) (local.get $width) (local.get $maxq))
        (local.set $z)
        (local.set $s)
        (f32.store (i32.add (local.get $ps) (i32.shl (local.get $r) (i32.const 2))) (local.get $s))
        (local.set $vs (f32x4.splat (local.get $s)))
        (local.set $vz (f32x4.splat (local.get $z)))
        ;; zero the row's slots, 8 per store
        (local.set $i (local.get $q))
        (local.set $end (i32.add (local.get $q) (i32.shl (local.get $stride) (i32.const 1))))
        (block $done_zero
          (loop $zero
            (br_if $done_zero (i32.ge_u (local.get $i) (local.get $end)))
            (v128.store (local.get $i) (v128.const i32x4 0 0 0 0))
            (local.set $i (i32.add (local.get $i) (i32.const 16)))
            (br $zero)))
        ;; $i: byte offset of value i in the row and of pos[i]
        (local.set $i (i32.const 0))
        (block $done4
          (loop $each4
            (br_if $done4 (i32.ge_u (local.get $i) (local.get $end4)))
            (local.set $vq
              (f32x4.add
                (f32x4.nearest
                  (f32x4.div (v128.load align=4 (i32.add (local.get $x) (local.get $i))) (local.get $vs)))
                (local.get $vz)))
            (local.set $vq
              (i32x4.trunc_sat_f32x4_s
                (f32x4.sub
                  (f32x4.min (f32x4.max (local.get $vq) (v128.const i32x4 0 0 0 0)) (local.get $vmax))
                  (local.get $vz))))
            (local.set $vp (v128.load align=4 (i32.add (local.get $ppos) (local.get $i))))
            (i32.store16 (i32.add (local.get $q) (i32.shl (i32x4.extract_lane 0 (local.get $vp)) (i32.const 1)))
              (i32x4.extract_lane 0 (local.get $vq)))
            (i32.store16 (i32.add (local.get $q) (i32.shl (i32x4.extract_lane 1 (local.get $vp)) (i32.const 1)))
              (i32x4.extract_lane 1 (local.get $vq)))
            (i32.store16 (i32.add (local.get $q) (i32.shl (i32x4.extract_lane 2 (local.get $vp)) (i32.const 1)))
              (i32x4.extract_lane 2 (local.get $vq)))
            (i32.store16 (i32.add (local.get $q) (i32.shl (i32x4.extract_lane 3 (local.get $vp)) (i32.const 1)))
              (i32x4.extract_lane 3 (local.get $vq)))
            (local.set $i (i32.add (local.get $i) (i32.const 16)))
            (br $each4)))
        (local.set $end (i32.shl (local.get $width) (i32.const 2)))
        (block $done1
          (loop $each1
            (br_if $done1 (i32.ge_u (local.get $i) (local.get $end)))
            (local.set $v
              (f32.add
                (f32.nearest (f32.div (f32.load (i32.add (local.get $x) (local.get $i))) (local.get $s)))
                (local.get $z)))
            (local.set $v
              (f32.sub (f32.min (f32.max (local.get $v) (f32.const 0)) (local.get $maxq)) (local.get $z)))
            (i32.store16
              (i32.add (local.get $q)
                (i32.shl (i32.load (i32.add (local.get $ppos) (local.get $i))) (i32.const 1)))
              (i32.trunc_f32_s (local.get $v)))
            (local.set $i (i32.add (local.get $i) (i32.const 4)))
            (br $each1)))
        (local.set $r (i32.add (local.get $r) (i32.const 1)))
        (br $rows_l))))

  ;; $dot_i16: Σ a[k]·b[k] over $n i16 values ($n a multiple of 8) at $pa and
  ;; $pb, in wrapping i32 arithmetic (exact whenever the sum fits an i32).
  (func $dot_i16 (param $pa i32) (param $pb i32) (param $n i32) (result i32)
    (local $acc v128) (local $end i32)
    (local.set $acc (v128.const i32x4 0 0 0 0))
    (local.set $end (i32.add (local.get $pa) (i32.shl (local.get $n) (i32.const 1))))
    (block $done
      (loop $each
        (br_if $done (i32.ge_u (local.get $pa) (local.get $end)))
        (local.set $acc
          (i32x4.add (local.get $acc)
            (i32x4.dot_i16x8_s (v128.load (local.get $pa)) (v128.load (local.get $pb)))))
        (local.set $pa (i32.add (local.get $pa) (i32.const 16)))
        (local.set $pb (i32.add (local.get $pb) (i32.const 16)))
        (br $each)))
    (i32.add
      (i32.add (i32x4.extract_lane 0 (local.get $acc)) (i32x4.extract_lane 1 (local.get $acc)))
      (i32.add (i32x4.extract_lane 2 (local.get $acc)) (i32x4.extract_lane 3 (local.get $acc)))))

  ;; $dot4_i16: the four sums Σ x[k]·w_j[k] (j = 0..3, row w_j at $pw + j·$ld
  ;; bytes) over $n i16 values ($n a multiple of 8) at $px, as one i32x4,
  ;; wrapping: each x load serves four rows.
  (func $dot4_i16 (param $px i32) (param $pw i32) (param $ld i32) (param $n i32) (result v128)
    (local $a0 v128) (local $a1 v128) (local $a2 v128) (local $a3 v128) (local $xv v128)
    (local $end i32) (local $ab v128) (local $cd v128)
    (local.set $end (i32.add (local.get $px) (i32.shl (local.get $n) (i32.const 1))))
    (block $done
      (loop $each
        (br_if $done (i32.ge_u (local.get $px) (local.get $end)))
        (local.set $xv (v128.load (local.get $px)))
        (local.set $a0 (i32x4.add (local.get $a0) (i32x4.dot_i16x8_s (local.get $xv) (v128.load (local.get $pw)))))
        (local.set $a1
          (i32x4.add (local.get $a1)
            (i32x4.dot_i16x8_s (local.get $xv) (v128.load (i32.add (local.get $pw) (local.get $ld))))))
        (local.set $a2
          (i32x4.add (local.get $a2)
            (i32x4.dot_i16x8_s (local.get $xv)
              (v128.load (i32.add (local.get $pw) (i32.shl (local.get $ld) (i32.const 1)))))))
        (local.set $a3
          (i32x4.add (local.get $a3)
            (i32x4.dot_i16x8_s (local.get $xv)
              (v128.load (i32.add (local.get $pw) (i32.mul (local.get $ld) (i32.const 3)))))))
        (local.set $px (i32.add (local.get $px) (i32.const 16)))
        (local.set $pw (i32.add (local.get $pw) (i32.const 16)))
        (br $each)))
    ;; (a0+a2, b0+b2, a1+a3, b1+b3) and the same of c, d; then the halves added
    (local.set $ab
      (i32x4.add
        (i8x16.shuffle 0 1 2 3 16 17 18 19 4 5 6 7 20 21 22 23 (local.get $a0) (local.get $a1))
        (i8x16.shuffle 8 9 10 11 24 25 26 27 12 13 14 15 28 29 30 31 (local.get $a0) (local.get $a1))))
    (local.set $cd
      (i32x4.add
        (i8x16.shuffle 0 1 2 3 16 17 18 19 4 5 6 7 20 21 22 23 (local.get $a2) (local.get $a3))
        (i8x16.shuffle 8 9 10 11 24 25 26 27 12 13 14 15 28 29 30 31 (local.get $a2) (local.get $a3))))
    (i32x4.add
      (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23 (local.get $ab) (local.get $cd))
      (i8x16.shuffle 8 9 10 11 12 13 14 15 24 25 26 27 28 29 30 31 (local.get $ab) (local.get $cd))))

  ;; wa_int_linear: y [T, rows] (f32 at $py) from activation codes X [T, K] (i16
  ;; at $px, K = $ng·$gs, as wa_quant_rows writes them), their scales sx [T] (f32
  ;; at $psx), weight codes W [rows, K] (i16 q_w − z_w at $pw, the same slots)
  ;; and weight scales sw [rows, $ng] (f32 at $psw):
  ;;   acc_g = Σ_{k in group g} X[t, k]·W[r, k]                (wrapping i32)
  ;;   y[t, r] = Σ_g f32(f32(sw[r, g]·sx[t]) · f32(acc_g))     (f32, g in order)
  ;; Four rows at a time (their epilogues in four lanes), then the rest one by one.
  (func (export "wa_int_linear")
    (param $px i32) (param $psx i32) (param $pw i32) (param $psw i32) (param $py i32)
    (param $T i32) (param $rows i32) (param $ng i32) (param $gs i32)
    (local $t i32) (local $r i32) (local $g i32) (local $xrow i32) (local $wrow i32) (local $K2 i32)
    (local $gs2 i32) (local $rows4 i32) (local $sw i32) (local $ng4 i32)
    (local $sx f32) (local $y f32) (local $vsx v128) (local $vy v128) (local $term v128)
    (local.set $gs2 (i32.shl (local.get $gs) (i32.const 1)))
    (local.set $K2 (i32.mul (local.get $ng) (local.get $gs2)))
    (local.set $ng4 (i32.shl (local.get $ng) (i32.const 2)))
    (local.set $rows4 (i32.and (local.get $rows) (i32.const -4)))
    (local.set $t (i32.const 0))
    (block $done_t
      (loop $each_t
        (br_if $done_t (i32.ge_u (local.get $t) (local.get $T)))
        (local.set $xrow (i32.add (local.get $px) (i32.mul (local.get $t) (local.get $K2))))
        (local.set $sx (f32.load (i32.add (local.get $psx) (i32.shl (local.get $t) (i32.const 2)))))
        (local.set $vsx (f32x4.splat (local.get $sx)))
        (local.set $r (i32.const 0))
        (block $done_r4
          (loop $each_r4
            (br_if $done_r4 (i32.ge_u (local.get $r) (local.get $rows4)))
            (local.set $wrow (i32.add (local.get $pw) (i32.mul (local.get $r) (local.get $K2))))
            (local.set $g (i32.const 0))
            (block $done_g4
              (loop $each_g4
                (br_if $done_g4 (i32.ge_u (local.get $g) (local.get $ng)))
                ;; sw[r + j, g] for j = 0..3
                (local.set $sw
                  (i32.add (local.get $psw)
                    (i32.shl (i32.add (i32.mul (local.get $r) (local.get $ng)) (local.get $g)) (i32.const 2))))
                (local.set $term
                  (f32x4.mul
                    (f32x4.mul
                      (f32x4.replace_lane 3
                        (f32x4.replace_lane 2
                          (f32x4.replace_lane 1
                            (f32x4.splat (f32.load (local.get $sw)))
                            (f32.load (i32.add (local.get $sw) (local.get $ng4))))
                          (f32.load (i32.add (local.get $sw) (i32.shl (local.get $ng4) (i32.const 1)))))
                        (f32.load (i32.add (local.get $sw) (i32.mul (local.get $ng4) (i32.const 3)))))
                      (local.get $vsx))
                    (f32x4.convert_i32x4_s
                      (call $dot4_i16
                        (i32.add (local.get $xrow) (i32.mul (local.get $g) (local.get $gs2)))
                        (i32.add (local.get $wrow) (i32.mul (local.get $g) (local.get $gs2)))
                        (local.get $K2) (local.get $gs)))))
                (local.set $vy
                  (if (result v128) (local.get $g)
                    (then (f32x4.add (local.get $vy) (local.get $term)))
                    (else (local.get $term))))
                (local.set $g (i32.add (local.get $g) (i32.const 1)))
                (br $each_g4)))
            (v128.store align=4
              (i32.add (local.get $py) (i32.shl (i32.add (i32.mul (local.get $t) (local.get $rows)) (local.get $r)) (i32.const 2)))
              (local.get $vy))
            (local.set $r (i32.add (local.get $r) (i32.const 4)))
            (br $each_r4)))
        (block $done_r
          (loop $each_r
            (br_if $done_r (i32.ge_u (local.get $r) (local.get $rows)))
            (local.set $wrow (i32.add (local.get $pw) (i32.mul (local.get $r) (local.get $K2))))
            (local.set $g (i32.const 0))
            (block $done_g
              (loop $each_g
                (br_if $done_g (i32.ge_u (local.get $g) (local.get $ng)))
                (local.set $sx
                  (f32.mul
                    (f32.mul
                      (f32.load
                        (i32.add (local.get $psw)
                          (i32.shl (i32.add (i32.mul (local.get $r) (local.get $ng)) (local.get $g)) (i32.const 2))))
                      (f32x4.extract_lane 0 (local.get $vsx)))
                    (f32.convert_i32_s
                      (call $dot_i16
                        (i32.add (local.get $xrow) (i32.mul (local.get $g) (local.get $gs2)))
                        (i32.add (local.get $wrow) (i32.mul (local.get $g) (local.get $gs2)))
                        (local.get $gs)))))
                (local.set $y
                  (if (result f32) (local.get $g)
                    (then (f32.add (local.get $y) (local.get $sx)))
                    (else (local.get $sx))))
                (local.set $g (i32.add (local.get $g) (i32.const 1)))
                (br $each_g)))
            (f32.store
              (i32.add (local.get $py) (i32.shl (i32.add (i32.mul (local.get $t) (local.get $rows)) (local.get $r)) (i32.const 2)))
              (local.get $y))
            (local.set $r (i32.add (local.get $r) (i32.const 1)))
            (br $each_r)))
        (local.set $t (i32.add (local.get $t) (i32.const 1)))
        (br $each_t))))
)
