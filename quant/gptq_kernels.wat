;; WebAssembly SIMD (f32x4) kernels of GPTQ's fast solver (quant/gptq_fast.ts):
;; the matrix product behind the Hessian X'X and fasterquant's lazy block
;; updates (`gemm_4x8`), and the transpose that gathers one group of
;; columns of every row from the sweep's transposed W (`transpose_f32`);
;; and the steps of quant/linalg.ts's fp32 Hinv (`upperCholeskyOfInverseF32`)
;; around model/wasm/kernels.wat's `gemm_f32`: the Cholesky's panel
;; (`chol_panel_f32`), the triangular inverse's diagonal block
;; (`trinv_rows_f32`) and its block rows (`gemm_tri_f32`), and the packing
;; of a matrix product's operand
;; (`pack_t_f32`). It works in the linear memory of model/wasm/kernels.wat's
;; solver instance (imported), next to that module's `gptq_block`, which
;; writes −Err1 in the packed layout read here.
;;
;; Build: `deno run -A quant/gptq_kernels_build.ts` writes `_gptq_kernels_wasm.ts`;
;; gptq_kernels_build_test.ts checks that the committed bytes are what this
;; source compiles to.
;;
;; Why this shape. x86-64 has 16 xmm registers (V8 keeps one as scratch): a
;; tile of 4 rows × 8 columns holds 8 accumulators, 2 B vectors and one A
;; vector; larger tiles spill (4 × 12 ran at half the speed, also with its
;; third B vector loaded at each use: V8 does not fold a load into the
;; multiply-add). Deno runs V8 without its trap handler, so every memory
;; access is bounds-checked by an explicit compare and branch (V8's code:
;; `lea; cmp; jae` before each load), and loads are dear: a 4 × 8 tile
;; broadcasting A with four `load32_splat` per k ran at 16.6 GMAC per CPU
;; second against this tile's 23.0 (24.7 with the checks switched off, by
;; V8's test-only --no-wasm-bounds-checks). Per k this tile loads one v128
;; of A (4 rows) and two of B (8 columns) and, instead of broadcasting each
;; A value, multiplies B by A rotated one lane at a time (3 shuffles):
;; accumulator c_m lane l sums A[r0 + (l + m) mod 4, k] · B[k, j0 + l]
;; (j0 + 4 + l for the second B vector), and the flush puts the lanes back
;; in their rows. Alone (A, B and C in cache) that is 90% of this machine's
;; f32x4 FMA peak (25.5 GMAC per CPU second; on its AMD cores the shuffles
;; share a pipe with the multiply-adds), about 85% inside the Hessian.
;; Unrolling k by 2 gained nothing; A stored pre-rotated (four loads, no
;; shuffles) ran 9% slower, and half of each (two loads, two shuffles) no
;; faster. The flush is 16 in-place blends (`i8x16.shuffle`s that keep each
;; lane: V8's `vpblendw`), written out: V8 inlined only the first of eight
;; calls of a helper function and spilled every accumulator around the
;; others, which cost about 6% of the Hessian's time.
;;
;; Floating point: each multiply-add is one `f32x4.relaxed_madd` (fused,
;; one rounding, where the host has FMA, as V8 does on x86-64 with FMA3 and
;; on arm64; else rounded twice), k in increasing order per output from a
;; zero accumulator; every $kflush values of k the accumulator is added to
;; C and restarted from zero. With $kflush = 256 this is the order, and so
;; the bits, of model/wasm/kernels.wat's `gemm_f32` (`fused` 1) called once
;; per 256 values of k.
(module
  (import "env" "memory" (memory 1))

  ;; gemm_4x8: C[r, j] += Σ_{k<K} A[r, k] · B[k, j] for r < R, j < J, in f32.
  ;;   A packed in panels of 8 rows: A[r, k] at $pa + (r >> 3)·$s8 + (r & 7)·4 + k·32
  ;;       ($s8 = K·32 for panels [R/8, K, 8]; A may be B itself: the Hessian X'X)
  ;;   B packed in panels of 8 columns: B[k, j] at $pb + ((j >> 3)·K + k)·32 + (j & 7)·4
  ;;   C[r, j] at $pc + r·$ldc + j·4 (row-major, $ldc bytes per row)
  ;; R a multiple of 4; J and $jblk multiples of 8; K, $kflush ≥ 1. Loop
  ;; order: blocks of $jblk columns (their B panels stay in L2) → 4-row
  ;; tiles (their A panel stays in L1) → 8-column tiles → k.
  ;;   $upper 0: every tile;
  ;;   $upper 1: only tiles with j0 + 8 > r0 + $doff, i.e. those that hold an
  ;;       entry on or right of the diagonal when C[r, j] is entry
  ;;       (r + $doff, j) of a symmetric matrix (entries left of the diagonal
  ;;       in such a tile are written too).
  (func (export "gemm_4x8")
    (param $pa i32) (param $s8 i32) (param $pb i32) (param $K i32) (param $kflush i32)
    (param $pc i32) (param $ldc i32) (param $R i32) (param $J i32) (param $jblk i32)
    (param $upper i32) (param $doff i32)
    (local $jb i32) (local $je i32) (local $r0 i32) (local $j0 i32) (local $t i32) (local $kb i32)
    (local $a i32) (local $b i32) (local $bend i32) (local $bstop i32) (local $c i32)
    (local $s v128) (local $b0 v128) (local $b1 v128)
    (local $c00 v128) (local $c01 v128) (local $c10 v128) (local $c11 v128)
    (local $c20 v128) (local $c21 v128) (local $c30 v128) (local $c31 v128)
    (local $p0 v128) (local $p1 v128) (local $p2 v128) (local $p3 v128)
    (if (i32.eqz (local.get $K)) (then (return)))
    (local.set $kb (i32.shl (local.get $K) (i32.const 5))) ;; bytes per panel
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
            ;; upper: no tile of this column block reaches the diagonal once t ≥ je
            (br_if $done_r (i32.and (local.get $upper) (i32.ge_s (local.get $t) (local.get $je))))
            (local.set $j0 (local.get $jb))
            (if (i32.and (local.get $upper) (i32.gt_s (i32.and (local.get $t) (i32.const -8)) (local.get $j0)))
              (then (local.set $j0 (i32.and (local.get $t) (i32.const -8)))))
            (block $done_j
              (loop $jl
                (br_if $done_j (i32.ge_u (local.get $j0) (local.get $je)))
                (local.set $a
                  (i32.add
                    (i32.add (local.get $pa) (i32.mul (i32.shr_u (local.get $r0) (i32.const 3)) (local.get $s8)))
                    (i32.shl (i32.and (local.get $r0) (i32.const 7)) (i32.const 2))))
                (local.set $b (i32.add (local.get $pb) (i32.mul (i32.shr_u (local.get $j0) (i32.const 3)) (local.get $kb))))
                (local.set $bend (i32.add (local.get $b) (local.get $kb)))
                (local.set $c
                  (i32.add (local.get $pc)
                    (i32.add (i32.mul (local.get $r0) (local.get $ldc)) (i32.shl (local.get $j0) (i32.const 2)))))
                (loop $chunks
                  (local.set $bstop (i32.add (local.get $b) (i32.shl (local.get $kflush) (i32.const 5))))
                  (if (i32.gt_u (local.get $bstop) (local.get $bend)) (then (local.set $bstop (local.get $bend))))
                  (local.set $c00 (v128.const i32x4 0 0 0 0))
                  (local.set $c01 (v128.const i32x4 0 0 0 0))
                  (local.set $c10 (v128.const i32x4 0 0 0 0))
                  (local.set $c11 (v128.const i32x4 0 0 0 0))
                  (local.set $c20 (v128.const i32x4 0 0 0 0))
                  (local.set $c21 (v128.const i32x4 0 0 0 0))
                  (local.set $c30 (v128.const i32x4 0 0 0 0))
                  (local.set $c31 (v128.const i32x4 0 0 0 0))
                  (loop $kl
                    (local.set $b0 (v128.load (local.get $b)))
                    (local.set $b1 (v128.load offset=16 (local.get $b)))
                    (local.set $s (v128.load (local.get $a))) ;; A[r0 .. r0+3, k]
                    (local.set $c00 (f32x4.relaxed_madd (local.get $s) (local.get $b0) (local.get $c00)))
                    (local.set $c01 (f32x4.relaxed_madd (local.get $s) (local.get $b1) (local.get $c01)))
                    (local.set $s (i8x16.shuffle 4 5 6 7 8 9 10 11 12 13 14 15 0 1 2 3 (local.get $s) (local.get $s)))
                    (local.set $c10 (f32x4.relaxed_madd (local.get $s) (local.get $b0) (local.get $c10)))
                    (local.set $c11 (f32x4.relaxed_madd (local.get $s) (local.get $b1) (local.get $c11)))
                    (local.set $s (i8x16.shuffle 4 5 6 7 8 9 10 11 12 13 14 15 0 1 2 3 (local.get $s) (local.get $s)))
                    (local.set $c20 (f32x4.relaxed_madd (local.get $s) (local.get $b0) (local.get $c20)))
                    (local.set $c21 (f32x4.relaxed_madd (local.get $s) (local.get $b1) (local.get $c21)))
                    (local.set $s (i8x16.shuffle 4 5 6 7 8 9 10 11 12 13 14 15 0 1 2 3 (local.get $s) (local.get $s)))
                    (local.set $c30 (f32x4.relaxed_madd (local.get $s) (local.get $b0) (local.get $c30)))
                    (local.set $c31 (f32x4.relaxed_madd (local.get $s) (local.get $b1) (local.get $c31)))
                    (local.set $a (i32.add (local.get $a) (i32.const 32)))
                    (local.set $b (i32.add (local.get $b) (i32.const 32)))
                    (br_if $kl (i32.lt_u (local.get $b) (local.get $bstop))))
                  ;; flush: row m of the tile, lane l, is in c_(m − l) mod 4 lane l. Two rounds of
                  ;; blends (each lane stays in place) put the rows together: P_m takes the even
                  ;; lanes of c_m and the odd lanes of c_(m − 1) (so P_m lane l is row m's for
                  ;; l < 2 and row (m + 2)'s for l ≥ 2); row m = lanes 0, 1 of P_m and 2, 3 of
                  ;; P_(m + 2). Then C's row r0 + m += row m, for each half of the 8 columns.
                  (local.set $p0 (i8x16.shuffle 0 1 2 3 20 21 22 23 8 9 10 11 28 29 30 31 (local.get $c00) (local.get $c30)))
                  (local.set $p1 (i8x16.shuffle 0 1 2 3 20 21 22 23 8 9 10 11 28 29 30 31 (local.get $c10) (local.get $c00)))
                  (local.set $p2 (i8x16.shuffle 0 1 2 3 20 21 22 23 8 9 10 11 28 29 30 31 (local.get $c20) (local.get $c10)))
                  (local.set $p3 (i8x16.shuffle 0 1 2 3 20 21 22 23 8 9 10 11 28 29 30 31 (local.get $c30) (local.get $c20)))
                  (v128.store (local.get $c) (f32x4.add (v128.load (local.get $c))
                    (i8x16.shuffle 0 1 2 3 4 5 6 7 24 25 26 27 28 29 30 31 (local.get $p0) (local.get $p2))))
                  (local.set $t (i32.add (local.get $c) (local.get $ldc)))
                  (v128.store (local.get $t) (f32x4.add (v128.load (local.get $t))
                    (i8x16.shuffle 0 1 2 3 4 5 6 7 24 25 26 27 28 29 30 31 (local.get $p1) (local.get $p3))))
                  (local.set $t (i32.add (local.get $t) (local.get $ldc)))
                  (v128.store (local.get $t) (f32x4.add (v128.load (local.get $t))
                    (i8x16.shuffle 0 1 2 3 4 5 6 7 24 25 26 27 28 29 30 31 (local.get $p2) (local.get $p0))))
                  (local.set $t (i32.add (local.get $t) (local.get $ldc)))
                  (v128.store (local.get $t) (f32x4.add (v128.load (local.get $t))
                    (i8x16.shuffle 0 1 2 3 4 5 6 7 24 25 26 27 28 29 30 31 (local.get $p3) (local.get $p1))))
                  (local.set $p0 (i8x16.shuffle 0 1 2 3 20 21 22 23 8 9 10 11 28 29 30 31 (local.get $c01) (local.get $c31)))
                  (local.set $p1 (i8x16.shuffle 0 1 2 3 20 21 22 23 8 9 10 11 28 29 30 31 (local.get $c11) (local.get $c01)))
                  (local.set $p2 (i8x16.shuffle 0 1 2 3 20 21 22 23 8 9 10 11 28 29 30 31 (local.get $c21) (local.get $c11)))
                  (local.set $p3 (i8x16.shuffle 0 1 2 3 20 21 22 23 8 9 10 11 28 29 30 31 (local.get $c31) (local.get $c21)))
                  (v128.store offset=16 (local.get $c) (f32x4.add (v128.load offset=16 (local.get $c))
                    (i8x16.shuffle 0 1 2 3 4 5 6 7 24 25 26 27 28 29 30 31 (local.get $p0) (local.get $p2))))
                  (local.set $t (i32.add (local.get $c) (local.get $ldc)))
                  (v128.store offset=16 (local.get $t) (f32x4.add (v128.load offset=16 (local.get $t))
                    (i8x16.shuffle 0 1 2 3 4 5 6 7 24 25 26 27 28 29 30 31 (local.get $p1) (local.get $p3))))
                  (local.set $t (i32.add (local.get $t) (local.get $ldc)))
                  (v128.store offset=16 (local.get $t) (f32x4.add (v128.load offset=16 (local.get $t))
                    (i8x16.shuffle 0 1 2 3 4 5 6 7 24 25 26 27 28 29 30 31 (local.get $p2) (local.get $p0))))
                  (local.set $t (i32.add (local.get $t) (local.get $ldc)))
                  (v128.store offset=16 (local.get $t) (f32x4.add (v128.load offset=16 (local.get $t))
                    (i8x16.shuffle 0 1 2 3 4 5 6 7 24 25 26 27 28 29 30 31 (local.get $p3) (local.get $p1))))
                  (br_if $chunks (i32.lt_u (local.get $b) (local.get $bend))))
                (local.set $j0 (i32.add (local.get $j0) (i32.const 8)))
                (br $jl)))
            (local.set $r0 (i32.add (local.get $r0) (i32.const 4)))
            (br $rl)))
        (local.set $jb (local.get $je))
        (br $jbl))))
  ;; transpose_f32: D[c, r] = S[r, c] for r < $rows, c < $cols (both multiples
  ;; of 4), S[r, c] at $ps + r·$lds + c·4, D[c, r] at $pd + c·$ldd + r·4 (in
  ;; bytes; multiples of 16 keep the accesses aligned): 4 × 4 blocks through
  ;; registers, 256 columns of S at a time (the 256 rows of D they land in
  ;; stay in cache while 4-row strips of S go by).
  (func (export "transpose_f32")
    (param $ps i32) (param $lds i32) (param $pd i32) (param $ldd i32) (param $rows i32) (param $cols i32)
    (local $cb i32) (local $ce i32) (local $r i32) (local $c i32) (local $s i32) (local $d i32)
    (local $x0 v128) (local $x1 v128) (local $x2 v128) (local $x3 v128)
    (local $t0 v128) (local $t1 v128) (local $t2 v128) (local $t3 v128)
    (local.set $cb (i32.const 0))
    (block $done_cb
      (loop $cbl
        (br_if $done_cb (i32.ge_u (local.get $cb) (local.get $cols)))
        (local.set $ce (i32.add (local.get $cb) (i32.const 256)))
        (if (i32.gt_u (local.get $ce) (local.get $cols)) (then (local.set $ce (local.get $cols))))
        (local.set $r (i32.const 0))
        (block $done_r
          (loop $rl
            (br_if $done_r (i32.ge_u (local.get $r) (local.get $rows)))
            (local.set $c (local.get $cb))
            (loop $cl
              (local.set $s
                (i32.add (local.get $ps)
                  (i32.add (i32.mul (local.get $r) (local.get $lds)) (i32.shl (local.get $c) (i32.const 2)))))
              (local.set $x0 (v128.load (local.get $s)))
              (local.set $s (i32.add (local.get $s) (local.get $lds)))
              (local.set $x1 (v128.load (local.get $s)))
              (local.set $s (i32.add (local.get $s) (local.get $lds)))
              (local.set $x2 (v128.load (local.get $s)))
              (local.set $s (i32.add (local.get $s) (local.get $lds)))
              (local.set $x3 (v128.load (local.get $s)))
              ;; t0 = [x0₀ x1₀ x0₁ x1₁], t1 = [x2₀ x3₀ x2₁ x3₁], t2 = [x0₂ x1₂ x0₃ x1₃], t3 = [x2₂ x3₂ x2₃ x3₃]
              (local.set $t0 (i8x16.shuffle 0 1 2 3 16 17 18 19 4 5 6 7 20 21 22 23 (local.get $x0) (local.get $x1)))
              (local.set $t1 (i8x16.shuffle 0 1 2 3 16 17 18 19 4 5 6 7 20 21 22 23 (local.get $x2) (local.get $x3)))
              (local.set $t2 (i8x16.shuffle 8 9 10 11 24 25 26 27 12 13 14 15 28 29 30 31 (local.get $x0) (local.get $x1)))
              (local.set $t3 (i8x16.shuffle 8 9 10 11 24 25 26 27 12 13 14 15 28 29 30 31 (local.get $x2) (local.get $x3)))
              (local.set $d
                (i32.add (local.get $pd)
                  (i32.add (i32.mul (local.get $c) (local.get $ldd)) (i32.shl (local.get $r) (i32.const 2)))))
              (v128.store (local.get $d) (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23 (local.get $t0) (local.get $t1)))
              (local.set $d (i32.add (local.get $d) (local.get $ldd)))
              (v128.store (local.get $d) (i8x16.shuffle 8 9 10 11 12 13 14 15 24 25 26 27 28 29 30 31 (local.get $t0) (local.get $t1)))
              (local.set $d (i32.add (local.get $d) (local.get $ldd)))
              (v128.store (local.get $d) (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23 (local.get $t2) (local.get $t3)))
              (local.set $d (i32.add (local.get $d) (local.get $ldd)))
              (v128.store (local.get $d) (i8x16.shuffle 8 9 10 11 12 13 14 15 24 25 26 27 28 29 30 31 (local.get $t2) (local.get $t3)))
              (local.set $c (i32.add (local.get $c) (i32.const 4)))
              (br_if $cl (i32.lt_u (local.get $c) (local.get $ce))))
            (local.set $r (i32.add (local.get $r) (i32.const 4)))
            (br $rl)))
        (local.set $cb (local.get $ce))
        (br $cbl))))

  ;; ---------------------------------------------------------------------------
  ;; The fp32 Hinv's steps (quant/linalg.ts `upperCholeskyOfInverseF32`). They
  ;; store float32 and compute in float64 exactly as that file's TypeScript
  ;; did (a JavaScript number is a double): every product of two floats is
  ;; exact in float64, each sum or quotient is rounded to float64 and every
  ;; store to float32 (round to nearest even, as a Float32Array's), one
  ;; element's operations in the same order; so the bits are the same on
  ;; every engine (no fused multiply-add: with exact products it would
  ;; change nothing anyway). Lanes are independent elements.

  ;; [lo(x), lo(y)]: the low halves (two floats each) of two f32x4 demotions.
  (func $join (param $x v128) (param $y v128) (result v128)
    (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23 (local.get $x) (local.get $y)))

  ;; chol_panel_f32: the panel of a blocked Cholesky, transposed and in place.
  ;;   PT [bw, m] at $pt, $ldt bytes per row: PT[j, c] is entry (c, j) of the
  ;;       panel, the trailing update already applied; becomes L's panel
  ;;   D [bw, bw] f64 at $pd, row-major: the block's diagonal factor L_d
  ;; For every column c: PT[j, c] = (PT[j, c] − Σ_{t<j} PT[t, c] · D[j, t]) / D[j, j]
  ;; for j = 0 … bw − 1, the sum in float64 from PT[j, c], t increasing (the
  ;; row-by-row forward substitution L[i, j] = (A[i, j] − Σ L[i, t] L[j, t]) / L[j, j]).
  ;; m a multiple of 8: 8 columns at a time (four f64x2 sums; their 8 floats
  ;; of every row of PT stay in L1).
  (func (export "chol_panel_f32")
    (param $pt i32) (param $ldt i32) (param $pd i32) (param $bw i32) (param $m i32)
    (local $c i32) (local $cend i32) (local $pj i32) (local $q i32) (local $dq i32) (local $j i32)
    (local $v v128) (local $d v128) (local $s0 v128) (local $s1 v128) (local $s2 v128) (local $s3 v128)
    (local.set $cend (i32.add (local.get $pt) (i32.shl (local.get $m) (i32.const 2))))
    (local.set $c (local.get $pt)) ;; &PT[0, c]
    (block $done_c
      (loop $cl
        (br_if $done_c (i32.ge_u (local.get $c) (local.get $cend)))
        (local.set $j (i32.const 0))
        (local.set $pj (local.get $c)) ;; &PT[j, c]
        (block $done_j
          (loop $jl
            (br_if $done_j (i32.ge_u (local.get $j) (local.get $bw)))
            (local.set $v (v128.load (local.get $pj)))
            (local.set $s0 (f64x2.promote_low_f32x4 (local.get $v)))
            (local.set $s1 (f64x2.promote_low_f32x4
              (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $v) (local.get $v))))
            (local.set $v (v128.load offset=16 (local.get $pj)))
            (local.set $s2 (f64x2.promote_low_f32x4 (local.get $v)))
            (local.set $s3 (f64x2.promote_low_f32x4
              (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $v) (local.get $v))))
            (local.set $q (local.get $c))
            (local.set $dq (i32.add (local.get $pd) (i32.shl (i32.mul (local.get $j) (local.get $bw)) (i32.const 3))))
            (block $done_t
              (loop $tl
                (br_if $done_t (i32.ge_u (local.get $q) (local.get $pj)))
                (local.set $d (v128.load64_splat (local.get $dq))) ;; D[j, t]
                (local.set $v (v128.load (local.get $q))) ;; PT[t, c .. c+3]
                (local.set $s0 (f64x2.sub (local.get $s0)
                  (f64x2.mul (f64x2.promote_low_f32x4 (local.get $v)) (local.get $d))))
                (local.set $s1 (f64x2.sub (local.get $s1)
                  (f64x2.mul (f64x2.promote_low_f32x4
                    (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $v) (local.get $v)))
                    (local.get $d))))
                (local.set $v (v128.load offset=16 (local.get $q)))
                (local.set $s2 (f64x2.sub (local.get $s2)
                  (f64x2.mul (f64x2.promote_low_f32x4 (local.get $v)) (local.get $d))))
                (local.set $s3 (f64x2.sub (local.get $s3)
                  (f64x2.mul (f64x2.promote_low_f32x4
                    (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $v) (local.get $v)))
                    (local.get $d))))
                (local.set $q (i32.add (local.get $q) (local.get $ldt)))
                (local.set $dq (i32.add (local.get $dq) (i32.const 8)))
                (br $tl)))
            (local.set $d (v128.load64_splat (local.get $dq))) ;; D[j, j]
            (v128.store (local.get $pj) (call $join
              (f32x4.demote_f64x2_zero (f64x2.div (local.get $s0) (local.get $d)))
              (f32x4.demote_f64x2_zero (f64x2.div (local.get $s1) (local.get $d)))))
            (v128.store offset=16 (local.get $pj) (call $join
              (f32x4.demote_f64x2_zero (f64x2.div (local.get $s2) (local.get $d)))
              (f32x4.demote_f64x2_zero (f64x2.div (local.get $s3) (local.get $d)))))
            (local.set $pj (i32.add (local.get $pj) (local.get $ldt)))
            (local.set $j (i32.add (local.get $j) (i32.const 1)))
            (br $jl)))
        (local.set $c (i32.add (local.get $c) (i32.const 32)))
        (br $cl))))

  ;; x rounded to float32 and back, lane by lane (a store to a Float32Array and its reload).
  (func $round32 (param $x v128) (result v128)
    (f64x2.promote_low_f32x4 (f32x4.demote_f64x2_zero (local.get $x))))

  ;; trinv_rows_f32: rows ib … ib + w − 1 of X = L⁻¹ by forward substitution,
  ;; in place, each row finished before the next:
  ;;   X[i, j] at $px + i·$rs + (j >> 3)·$cs + (j & 7)·4: 8-column chunks, $rs
  ;;       bytes from a row to the next, $cs from a chunk to the next ($rs = row
  ;;       bytes, $cs = 32: row-major; $rs = 32, $cs = rows·32: panels of 8
  ;;       columns). Rows < ib done; X[i, j] for j < ib holds −Σ_{k<ib} L[i, k] X[k, j],
  ;;       every other entry of these rows is 0
  ;;   D [w, w] f64 at $pd, row-major: L's diagonal block, D[r, c] = L[ib + r, ib + c]
  ;; Row i = ib + r: for t = ib … i − 1 with l = D[r, t − ib] ≠ 0,
  ;; X[i, j] = f32(X[i, j] − l · X[t, j]) for j ≤ t; then X[i, i] = f32(X[i, i] + 1)
  ;; and X[i, j] = f32(X[i, j] / D[r, r]) for j ≤ i. Eight columns at a time,
  ;; held in registers through the t loop (rounded to float32 after each step);
  ;; lanes right of t (or of i) hold 0 and stay 0, as X[t, j] = 0 for j > t.
  ;; Writes the 8-column chunks of row i up to column ⌈(i + 1)/8⌉·8.
  (func (export "trinv_rows_f32")
    (param $px i32) (param $rs i32) (param $cs i32) (param $pd i32) (param $ib i32) (param $w i32)
    (local $r i32) (local $i i32) (local $prow i32) (local $dr i32) (local $j0 i32)
    (local $p i32) (local $q i32) (local $dq i32) (local $t0 i32) (local $l f64) (local $a i32)
    (local $v v128) (local $d v128) (local $s0 v128) (local $s1 v128) (local $s2 v128) (local $s3 v128)
    (local.set $r (i32.const 0))
    (block $done_r
      (loop $rl
        (br_if $done_r (i32.ge_u (local.get $r) (local.get $w)))
        (local.set $i (i32.add (local.get $ib) (local.get $r)))
        (local.set $prow (i32.add (local.get $px) (i32.mul (local.get $i) (local.get $rs))))
        (local.set $dr (i32.add (local.get $pd) (i32.shl (i32.mul (local.get $r) (local.get $w)) (i32.const 3))))
        (local.set $j0 (i32.const 0))
        (local.set $p (local.get $prow)) ;; &X[i, j0]
        (block $done_j
          (loop $jl
            (br_if $done_j (i32.gt_u (local.get $j0) (local.get $i)))
            (local.set $v (v128.load (local.get $p)))
            (local.set $s0 (f64x2.promote_low_f32x4 (local.get $v)))
            (local.set $s1 (f64x2.promote_low_f32x4
              (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $v) (local.get $v))))
            (local.set $v (v128.load offset=16 (local.get $p)))
            (local.set $s2 (f64x2.promote_low_f32x4 (local.get $v)))
            (local.set $s3 (f64x2.promote_low_f32x4
              (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $v) (local.get $v))))
            ;; t from max(ib, j0) to i − 1: q = &X[t, j0] runs up to p
            (local.set $t0 (local.get $ib))
            (if (i32.gt_u (local.get $j0) (local.get $t0)) (then (local.set $t0 (local.get $j0))))
            (local.set $q (i32.sub (local.get $p)
              (i32.mul (i32.sub (local.get $i) (local.get $t0)) (local.get $rs))))
            (local.set $dq (i32.add (local.get $dr) (i32.shl (i32.sub (local.get $t0) (local.get $ib)) (i32.const 3))))
            (block $done_t
              (loop $tl
                (br_if $done_t (i32.ge_u (local.get $q) (local.get $p)))
                (local.set $l (f64.load (local.get $dq))) ;; L[i, t]
                (if (f64.ne (local.get $l) (f64.const 0))
                  (then
                    (local.set $d (f64x2.splat (local.get $l)))
                    (local.set $v (v128.load (local.get $q))) ;; X[t, j0 .. j0+3]
                    (local.set $s0 (call $round32 (f64x2.sub (local.get $s0)
                      (f64x2.mul (local.get $d) (f64x2.promote_low_f32x4 (local.get $v))))))
                    (local.set $s1 (call $round32 (f64x2.sub (local.get $s1)
                      (f64x2.mul (local.get $d) (f64x2.promote_low_f32x4
                        (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $v) (local.get $v)))))))
                    (local.set $v (v128.load offset=16 (local.get $q)))
                    (local.set $s2 (call $round32 (f64x2.sub (local.get $s2)
                      (f64x2.mul (local.get $d) (f64x2.promote_low_f32x4 (local.get $v))))))
                    (local.set $s3 (call $round32 (f64x2.sub (local.get $s3)
                      (f64x2.mul (local.get $d) (f64x2.promote_low_f32x4
                        (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $v) (local.get $v)))))))))
                (local.set $q (i32.add (local.get $q) (local.get $rs)))
                (local.set $dq (i32.add (local.get $dq) (i32.const 8)))
                (br $tl)))
            (v128.store (local.get $p) (call $join
              (f32x4.demote_f64x2_zero (local.get $s0)) (f32x4.demote_f64x2_zero (local.get $s1))))
            (v128.store offset=16 (local.get $p) (call $join
              (f32x4.demote_f64x2_zero (local.get $s2)) (f32x4.demote_f64x2_zero (local.get $s3))))
            (local.set $p (i32.add (local.get $p) (local.get $cs)))
            (local.set $j0 (i32.add (local.get $j0) (i32.const 8)))
            (br $jl)))
        ;; X[i, i] += 1
        (local.set $a (i32.add (local.get $prow)
          (i32.add (i32.mul (i32.shr_u (local.get $i) (i32.const 3)) (local.get $cs))
            (i32.shl (i32.and (local.get $i) (i32.const 7)) (i32.const 2)))))
        (f32.store (local.get $a)
          (f32.demote_f64 (f64.add (f64.promote_f32 (f32.load (local.get $a))) (f64.const 1))))
        ;; X[i, j] /= L[i, i] for j ≤ i (zeros beyond stay 0)
        (local.set $d (v128.load64_splat (i32.add (local.get $dr) (i32.shl (local.get $r) (i32.const 3)))))
        (local.set $j0 (i32.const 0))
        (local.set $p (local.get $prow))
        (block $done_div
          (loop $dl
            (br_if $done_div (i32.gt_u (local.get $j0) (local.get $i)))
            (local.set $v (v128.load (local.get $p)))
            (v128.store (local.get $p) (call $join
              (f32x4.demote_f64x2_zero (f64x2.div (f64x2.promote_low_f32x4 (local.get $v)) (local.get $d)))
              (f32x4.demote_f64x2_zero (f64x2.div (f64x2.promote_low_f32x4
                (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $v) (local.get $v)))
                (local.get $d)))))
            (local.set $v (v128.load offset=16 (local.get $p)))
            (v128.store offset=16 (local.get $p) (call $join
              (f32x4.demote_f64x2_zero (f64x2.div (f64x2.promote_low_f32x4 (local.get $v)) (local.get $d)))
              (f32x4.demote_f64x2_zero (f64x2.div (f64x2.promote_low_f32x4
                (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $v) (local.get $v)))
                (local.get $d)))))
            (local.set $p (i32.add (local.get $p) (local.get $cs)))
            (local.set $j0 (i32.add (local.get $j0) (i32.const 8)))
            (br $dl)))
        (local.set $r (i32.add (local.get $r) (i32.const 1)))
        (br $rl))))

  ;; gemm_tri_f32: the off-diagonal block rows of a triangular inverse held in
  ;; panels of 8 columns, C[r, j] = Σ_{k<K} A[r, k] · B[k, j] for r < R, j < J
  ;; with B lower triangular (B[k, j] = 0 for k < j), in f32:
  ;;   A in panels of 8 rows: A[r, k] at $pa + (r >> 3)·$sa + (r & 7)·4 + k·32
  ;;   B[k, j] at $pb + (j >> 3)·$sp + k·32 + (j & 7)·4 (panels of 8 columns, $sp bytes apart)
  ;;   C[r, j] at $pc + (j >> 3)·$sp + r·32 + (j & 7)·4 (rows of the same panels)
  ;; Per output, one chain of `f32x4.relaxed_madd` (fused where the host has
  ;; FMA) in increasing k from k = 8·(j >> 3) (the products before j are 0
  ;; and would leave a zero accumulator +0), starting from C[r, j], then
  ;; + 0: with C zeroed this is the order, and so the bits, of
  ;; model/wasm/kernels.wat `gemm_f32` (mode 3, fused) adding its sum to a
  ;; zeroed C. k goes in chunks of $kc (each output's running sum parked in
  ;; C between them, exactly), so that A's chunk stays in L2 and B's in L1
  ;; while 4-row tiles of every panel go by. R a multiple of 4, J of 8.
  (func (export "gemm_tri_f32")
    (param $pa i32) (param $sa i32) (param $pb i32) (param $sp i32) (param $pc i32)
    (param $R i32) (param $J i32) (param $K i32) (param $kc i32)
    (local $kb i32) (local $ke i32) (local $p i32) (local $k0 i32) (local $r0 i32)
    (local $a i32) (local $b i32) (local $bend i32) (local $c i32) (local $last i32)
    (local $s v128) (local $av v128) (local $b0 v128) (local $b1 v128)
    (local $c00 v128) (local $c01 v128) (local $c10 v128) (local $c11 v128)
    (local $c20 v128) (local $c21 v128) (local $c30 v128) (local $c31 v128)
    (local.set $kb (i32.const 0))
    (block $done_kb
      (loop $kbl
        (br_if $done_kb (i32.ge_u (local.get $kb) (local.get $K)))
        (local.set $ke (i32.add (local.get $kb) (local.get $kc)))
        (if (i32.gt_u (local.get $ke) (local.get $K)) (then (local.set $ke (local.get $K))))
        (local.set $last (i32.eq (local.get $ke) (local.get $K)))
        (local.set $p (i32.const 0))
        (block $done_p
          (loop $pl
            (br_if $done_p (i32.ge_u (i32.shl (local.get $p) (i32.const 3)) (local.get $J)))
            (local.set $k0 (i32.shl (local.get $p) (i32.const 3)))
            (if (i32.lt_u (local.get $k0) (local.get $kb)) (then (local.set $k0 (local.get $kb))))
            (if (i32.lt_u (local.get $k0) (local.get $ke))
              (then
                (local.set $b (i32.add (i32.add (local.get $pb) (i32.mul (local.get $p) (local.get $sp)))
                  (i32.shl (local.get $k0) (i32.const 5))))
                (local.set $bend (i32.add (i32.add (local.get $pb) (i32.mul (local.get $p) (local.get $sp)))
                  (i32.shl (local.get $ke) (i32.const 5))))
                (local.set $r0 (i32.const 0))
                (block $done_r
                  (loop $rl
                    (br_if $done_r (i32.ge_u (local.get $r0) (local.get $R)))
                    (local.set $c (i32.add (i32.add (local.get $pc) (i32.mul (local.get $p) (local.get $sp)))
                      (i32.shl (local.get $r0) (i32.const 5))))
                    (local.set $c00 (v128.load (local.get $c)))
                    (local.set $c01 (v128.load offset=16 (local.get $c)))
                    (local.set $c10 (v128.load offset=32 (local.get $c)))
                    (local.set $c11 (v128.load offset=48 (local.get $c)))
                    (local.set $c20 (v128.load offset=64 (local.get $c)))
                    (local.set $c21 (v128.load offset=80 (local.get $c)))
                    (local.set $c30 (v128.load offset=96 (local.get $c)))
                    (local.set $c31 (v128.load offset=112 (local.get $c)))
                    (local.set $a
                      (i32.add
                        (i32.add (local.get $pa) (i32.mul (i32.shr_u (local.get $r0) (i32.const 3)) (local.get $sa)))
                        (i32.add (i32.shl (i32.and (local.get $r0) (i32.const 7)) (i32.const 2))
                          (i32.shl (local.get $k0) (i32.const 5)))))
                    (loop $kl
                      (local.set $b0 (v128.load (local.get $b)))
                      (local.set $b1 (v128.load offset=16 (local.get $b)))
                      (local.set $av (v128.load (local.get $a))) ;; A[r0 .. r0+3, k]
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
                      (local.set $a (i32.add (local.get $a) (i32.const 32)))
                      (local.set $b (i32.add (local.get $b) (i32.const 32)))
                      (br_if $kl (i32.lt_u (local.get $b) (local.get $bend))))
                    (if (local.get $last)
                      (then ;; + 0: a −0 sum becomes +0, as 0 + sum
                        (local.set $s (v128.const i32x4 0 0 0 0))
                        (local.set $c00 (f32x4.add (local.get $c00) (local.get $s)))
                        (local.set $c01 (f32x4.add (local.get $c01) (local.get $s)))
                        (local.set $c10 (f32x4.add (local.get $c10) (local.get $s)))
                        (local.set $c11 (f32x4.add (local.get $c11) (local.get $s)))
                        (local.set $c20 (f32x4.add (local.get $c20) (local.get $s)))
                        (local.set $c21 (f32x4.add (local.get $c21) (local.get $s)))
                        (local.set $c30 (f32x4.add (local.get $c30) (local.get $s)))
                        (local.set $c31 (f32x4.add (local.get $c31) (local.get $s)))))
                    (v128.store (local.get $c) (local.get $c00))
                    (v128.store offset=16 (local.get $c) (local.get $c01))
                    (v128.store offset=32 (local.get $c) (local.get $c10))
                    (v128.store offset=48 (local.get $c) (local.get $c11))
                    (v128.store offset=64 (local.get $c) (local.get $c20))
                    (v128.store offset=80 (local.get $c) (local.get $c21))
                    (v128.store offset=96 (local.get $c) (local.get $c30))
                    (v128.store offset=112 (local.get $c) (local.get $c31))
                    (local.set $b (i32.add (i32.add (local.get $pb) (i32.mul (local.get $p) (local.get $sp)))
                      (i32.shl (local.get $k0) (i32.const 5))))
                    (local.set $r0 (i32.add (local.get $r0) (i32.const 4)))
                    (br $rl)))))
            (local.set $p (i32.add (local.get $p) (i32.const 1)))
            (br $pl)))
        (local.set $kb (local.get $ke))
        (br $kbl))))

  ;; pack_t_f32: B[k, j] = ±S[j, k] for j < J, k < K, B in the packed layout of
  ;; gemm_4x8's and model/wasm/kernels.wat gemm_f32's B (panels of 8 columns):
  ;;   S[j, k] at $ps + j·$lds + k·4 (row-major)
  ;;   B[k, j] at $pd + ((j >> 3)·K + k)·32 + (j & 7)·4
  ;; negated when $neg is 1 (the sign bit flipped, as JavaScript's unary minus).
  ;; J a multiple of 8, K a multiple of 4: 8 × 4 blocks through registers.
  (func (export "pack_t_f32")
    (param $ps i32) (param $lds i32) (param $pd i32) (param $J i32) (param $K i32) (param $neg i32)
    (local $j i32) (local $k i32) (local $s i32) (local $d i32) (local $sign v128)
    (local $x0 v128) (local $x1 v128) (local $x2 v128) (local $x3 v128)
    (local $x4 v128) (local $x5 v128) (local $x6 v128) (local $x7 v128)
    (local $t0 v128) (local $t1 v128) (local $t2 v128) (local $t3 v128)
    (local $u0 v128) (local $u1 v128) (local $u2 v128) (local $u3 v128)
    (local.set $sign (i32x4.splat (i32.shl (local.get $neg) (i32.const 31))))
    (local.set $d (local.get $pd))
    (local.set $j (i32.const 0))
    (block $done_j
      (loop $jl
        (br_if $done_j (i32.ge_u (local.get $j) (local.get $J)))
        (local.set $k (i32.const 0))
        (block $done_k
          (loop $kl
            (br_if $done_k (i32.ge_u (local.get $k) (local.get $K)))
            (local.set $s (i32.add (i32.add (local.get $ps) (i32.mul (local.get $j) (local.get $lds)))
              (i32.shl (local.get $k) (i32.const 2))))
            (local.set $x0 (v128.load (local.get $s)))
            (local.set $s (i32.add (local.get $s) (local.get $lds)))
            (local.set $x1 (v128.load (local.get $s)))
            (local.set $s (i32.add (local.get $s) (local.get $lds)))
            (local.set $x2 (v128.load (local.get $s)))
            (local.set $s (i32.add (local.get $s) (local.get $lds)))
            (local.set $x3 (v128.load (local.get $s)))
            (local.set $s (i32.add (local.get $s) (local.get $lds)))
            (local.set $x4 (v128.load (local.get $s)))
            (local.set $s (i32.add (local.get $s) (local.get $lds)))
            (local.set $x5 (v128.load (local.get $s)))
            (local.set $s (i32.add (local.get $s) (local.get $lds)))
            (local.set $x6 (v128.load (local.get $s)))
            (local.set $s (i32.add (local.get $s) (local.get $lds)))
            (local.set $x7 (v128.load (local.get $s)))
            ;; 4 × 4 transposes as in transpose_f32: rows j .. j+3 (x0..x3), j+4 .. j+7 (x4..x7)
            (local.set $t0 (i8x16.shuffle 0 1 2 3 16 17 18 19 4 5 6 7 20 21 22 23 (local.get $x0) (local.get $x1)))
            (local.set $t1 (i8x16.shuffle 0 1 2 3 16 17 18 19 4 5 6 7 20 21 22 23 (local.get $x2) (local.get $x3)))
            (local.set $t2 (i8x16.shuffle 8 9 10 11 24 25 26 27 12 13 14 15 28 29 30 31 (local.get $x0) (local.get $x1)))
            (local.set $t3 (i8x16.shuffle 8 9 10 11 24 25 26 27 12 13 14 15 28 29 30 31 (local.get $x2) (local.get $x3)))
            (local.set $u0 (i8x16.shuffle 0 1 2 3 16 17 18 19 4 5 6 7 20 21 22 23 (local.get $x4) (local.get $x5)))
            (local.set $u1 (i8x16.shuffle 0 1 2 3 16 17 18 19 4 5 6 7 20 21 22 23 (local.get $x6) (local.get $x7)))
            (local.set $u2 (i8x16.shuffle 8 9 10 11 24 25 26 27 12 13 14 15 28 29 30 31 (local.get $x4) (local.get $x5)))
            (local.set $u3 (i8x16.shuffle 8 9 10 11 24 25 26 27 12 13 14 15 28 29 30 31 (local.get $x6) (local.get $x7)))
            (v128.store (local.get $d) (v128.xor (local.get $sign)
              (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23 (local.get $t0) (local.get $t1))))
            (v128.store offset=16 (local.get $d) (v128.xor (local.get $sign)
              (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23 (local.get $u0) (local.get $u1))))
            (v128.store offset=32 (local.get $d) (v128.xor (local.get $sign)
              (i8x16.shuffle 8 9 10 11 12 13 14 15 24 25 26 27 28 29 30 31 (local.get $t0) (local.get $t1))))
            (v128.store offset=48 (local.get $d) (v128.xor (local.get $sign)
              (i8x16.shuffle 8 9 10 11 12 13 14 15 24 25 26 27 28 29 30 31 (local.get $u0) (local.get $u1))))
            (v128.store offset=64 (local.get $d) (v128.xor (local.get $sign)
              (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23 (local.get $t2) (local.get $t3))))
            (v128.store offset=80 (local.get $d) (v128.xor (local.get $sign)
              (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23 (local.get $u2) (local.get $u3))))
            (v128.store offset=96 (local.get $d) (v128.xor (local.get $sign)
              (i8x16.shuffle 8 9 10 11 12 13 14 15 24 25 26 27 28 29 30 31 (local.get $t2) (local.get $t3))))
            (v128.store offset=112 (local.get $d) (v128.xor (local.get $sign)
              (i8x16.shuffle 8 9 10 11 12 13 14 15 24 25 26 27 28 29 30 31 (local.get $u2) (local.get $u3))))
            (local.set $d (i32.add (local.get $d) (i32.const 128)))
            (local.set $k (i32.add (local.get $k) (i32.const 4)))
            (br $kl)))
        (local.set $j (i32.add (local.get $j) (i32.const 8)))
        (br $jl))))
)
