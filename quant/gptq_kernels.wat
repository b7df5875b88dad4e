;; WebAssembly SIMD (f32x4) kernels of GPTQ's fast solver (quant/gptq_fast.ts):
;; the matrix product behind the Hessian X'X and fasterquant's lazy block
;; updates (`gemm_4x8`), and the transpose that gathers one group of
;; columns of every row from the sweep's transposed W (`transpose_f32`). It works in the linear memory of model/wasm/kernels.wat's solver
;; instance (imported), next to that module's `gptq_block`, which writes
;; −Err1 in the packed layout read here.
;;
;; Build: `deno run -A quant/gptq_kernels_build.ts` writes `_gptq_kernels_wasm.ts`;
;; gptq_kernels_build_test.ts checks that the committed bytes are what this
;; source compiles to.
;;
;; Why this shape. x86-64 has 16 xmm registers (V8 keeps one as scratch): a
;; tile of 4 rows × 8 columns holds 8 accumulators, 2 B vectors and one A
;; vector; larger tiles spill (4 × 12 ran at half the speed). Deno runs V8
;; without its trap handler, so every memory access is bounds-checked by an
;; explicit compare and loads are dear (a 6 × 8 tile broadcasting A with
;; six `load32_splat` per k ran 15% slower than 4 × 8). Per k this tile
;; loads one v128 of A (4 rows) and two of B (8 columns) and, instead of
;; broadcasting each A value (4 shuffles), multiplies B by A rotated one
;; lane at a time (3 shuffles): accumulator c_m lane l sums
;; A[r0 + (l + m) mod 4, k] · B[k, j0 + l] (j0 + 4 + l for the second B
;; vector), and the flush puts the lanes back in their rows. Measured
;; alone, about 5% faster than broadcasting, about 80% of this machine's
;; f32x4 FMA peak; unrolling k by 2 gained nothing.
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

  ;; [x0[0], x1[1], x2[2], x3[3]]: lane l of x_l.
  (func $diagonal (param $x0 v128) (param $x1 v128) (param $x2 v128) (param $x3 v128) (result v128)
    (v128.bitselect (local.get $x3)
      (v128.bitselect (local.get $x2)
        (v128.bitselect (local.get $x1) (local.get $x0) (v128.const i32x4 0 -1 0 0))
        (v128.const i32x4 0 0 -1 0))
      (v128.const i32x4 0 0 0 -1)))

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
                  ;; flush: row m of the tile, lane l, is in c_{(m − l) mod 4} lane l
                  (v128.store (local.get $c) (f32x4.add (v128.load (local.get $c))
                    (call $diagonal (local.get $c00) (local.get $c30) (local.get $c20) (local.get $c10))))
                  (v128.store offset=16 (local.get $c) (f32x4.add (v128.load offset=16 (local.get $c))
                    (call $diagonal (local.get $c01) (local.get $c31) (local.get $c21) (local.get $c11))))
                  (local.set $t (i32.add (local.get $c) (local.get $ldc)))
                  (v128.store (local.get $t) (f32x4.add (v128.load (local.get $t))
                    (call $diagonal (local.get $c10) (local.get $c00) (local.get $c30) (local.get $c20))))
                  (v128.store offset=16 (local.get $t) (f32x4.add (v128.load offset=16 (local.get $t))
                    (call $diagonal (local.get $c11) (local.get $c01) (local.get $c31) (local.get $c21))))
                  (local.set $t (i32.add (local.get $t) (local.get $ldc)))
                  (v128.store (local.get $t) (f32x4.add (v128.load (local.get $t))
                    (call $diagonal (local.get $c20) (local.get $c10) (local.get $c00) (local.get $c30))))
                  (v128.store offset=16 (local.get $t) (f32x4.add (v128.load offset=16 (local.get $t))
                    (call $diagonal (local.get $c21) (local.get $c11) (local.get $c01) (local.get $c31))))
                  (local.set $t (i32.add (local.get $t) (local.get $ldc)))
                  (v128.store (local.get $t) (f32x4.add (v128.load (local.get $t))
                    (call $diagonal (local.get $c30) (local.get $c20) (local.get $c10) (local.get $c00))))
                  (v128.store offset=16 (local.get $t) (f32x4.add (v128.load offset=16 (local.get $t))
                    (call $diagonal (local.get $c31) (local.get $c21) (local.get $c11) (local.get $c01))))
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
)
