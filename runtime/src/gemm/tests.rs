//! The GEMM against an f64 oracle on random shapes, transposes, strides
//! and block boundaries, for every kernel family this CPU runs; the indexed
//! product; and no allocation after warm-up (a counting allocator).

use super::indexed::indexed_generic;
use super::*;
use crate::rng::Rng;
use std::sync::atomic::{AtomicU32, Ordering};

/// The oracle: textbook triple loop in f64 over explicit index formulas.
#[allow(clippy::too_many_arguments)]
fn naive(
    m: usize,
    n: usize,
    k: usize,
    alpha: f64,
    a: &MatRef<'_>,
    b: &MatRef<'_>,
    beta: f64,
    c: &[f32],
    ldc: usize,
) -> Vec<f64> {
    let at = |i: usize, p: usize| match a.trans {
        Trans::No => a.data[i * a.ld + p],
        Trans::Yes => a.data[p * a.ld + i],
    } as f64;
    let bt = |p: usize, j: usize| match b.trans {
        Trans::No => b.data[p * b.ld + j],
        Trans::Yes => b.data[j * b.ld + p],
    } as f64;
    let mut out = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0;
            for p in 0..k {
                s += at(i, p) * bt(p, j);
            }
            let old = if beta == 0.0 {
                0.0
            } else {
                beta * c[i * ldc + j] as f64
            };
            out[i * n + j] = alpha * s + old;
        }
    }
    out
}

fn random(rng: &mut Rng, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.uniform_f32(-1.0, 1.0)).collect()
}

/// Compares a product's C (`want.len() / n` rows of stride `ldc`)
/// with the f64 oracle `want` (dense, `n` columns): every element
/// within `tol * (1 + |want|)` (NaN never is), and the columns past `n`
/// bit-identical to `c0`, C before the product. `label` names the case.
fn close_to_naive(
    label: &str,
    c: &[f32],
    c0: &[f32],
    want: &[f64],
    (n, ldc): (usize, usize),
    tol: f64,
) -> Result<(), String> {
    for (i, w_row) in want.chunks_exact(n).enumerate() {
        for j in 0..ldc {
            let got = c[i * ldc + j];
            if j >= n {
                if got.to_bits() != c0[i * ldc + j].to_bits() {
                    return Err(format!("{label}: C[{i},{j}] past n written"));
                }
                continue;
            }
            let w = w_row[j];
            let err = (f64::from(got) - w).abs();
            if err.is_nan() || err > tol * (1.0 + w.abs()) {
                return Err(format!("{label}: C[{i},{j}] = {got}, want {w}"));
            }
        }
    }
    Ok(())
}

/// [`close_to_naive`] as an assertion.
#[track_caller]
fn assert_close_to_naive(
    label: &str,
    c: &[f32],
    c0: &[f32],
    want: &[f64],
    shape: (usize, usize),
    tol: f64,
) {
    if let Err(e) = close_to_naive(label, c, c0, want, shape, tol) {
        panic!("{e}");
    }
}

#[test]
fn matches_naive_on_random_shapes_transposes_and_strides() {
    let mut rng = Rng::new(7);
    for case in 0..120 {
        let m = 1 + rng.below(40) as usize;
        let n = 1 + rng.below(40) as usize;
        let k = 1 + rng.below(70) as usize;
        let ta = if rng.below(2) == 0 {
            Trans::No
        } else {
            Trans::Yes
        };
        let tb = if rng.below(2) == 0 {
            Trans::No
        } else {
            Trans::Yes
        };
        let pad = rng.below(3) as usize;
        let (ar, ac) = if ta == Trans::No { (m, k) } else { (k, m) };
        let (br, bc) = if tb == Trans::No { (k, n) } else { (n, k) };
        let (lda, ldb, ldc) = (ac + pad, bc + pad, n + pad);
        let av = random(&mut rng, ar * lda);
        let bv = random(&mut rng, br * ldb);
        let c0 = random(&mut rng, m * ldc);
        let alpha = [1.0, 0.5, -2.0][case % 3];
        let beta = [0.0, 1.0, 0.25][(case / 3) % 3];
        let a = MatRef {
            data: &av,
            ld: lda,
            trans: ta,
        };
        let b = MatRef {
            data: &bv,
            ld: ldb,
            trans: tb,
        };
        let want = naive(m, n, k, alpha as f64, &a, &b, beta as f64, &c0, ldc);
        let par = if case % 4 == 0 {
            Parallelism::Rayon(2)
        } else {
            Parallelism::Sequential
        };
        let mut cv = c0.clone();
        sgemm(par, m, n, k, alpha, a, b, beta, &mut cv, ldc).unwrap();
        assert_close_to_naive(
            &format!("case {case} ({m}x{k}x{n} {ta:?} {tb:?})"),
            &cv,
            &c0,
            &want,
            (n, ldc),
            1e-5 * (k as f64).sqrt(),
        );
    }
}

#[test]
fn padding_outside_c_is_untouched() {
    let a = [1.0, 2.0, 3.0, 4.0];
    let b = [1.0, 0.0, 0.0, 1.0];
    let mut c = [9.0; 6]; // 2x2 with ldc 3
    sgemm(
        Parallelism::Sequential,
        2,
        2,
        2,
        1.0,
        MatRef::new(&a, 2),
        MatRef::new(&b, 2),
        0.0,
        &mut c,
        3,
    )
    .unwrap();
    assert_eq!(c, [1.0, 2.0, 9.0, 3.0, 4.0, 9.0]);
}

#[test]
fn beta_zero_ignores_nan_in_c() {
    let a = [1.0, 2.0];
    let b = [3.0, 4.0];
    let mut c = [f32::NAN; 4];
    matmul(2, 1, 2, &a, &b, &mut c).unwrap();
    assert_eq!(c, [3.0, 4.0, 6.0, 8.0]);
}

#[test]
fn k_zero_scales_c() {
    let mut c = [2.0, 4.0];
    sgemm(
        Parallelism::Sequential,
        1,
        2,
        0,
        1.0,
        MatRef::new(&[], 0),
        MatRef::new(&[], 2),
        0.5,
        &mut c,
        2,
    )
    .unwrap();
    assert_eq!(c, [1.0, 2.0]);
}

#[test]
fn short_slices_are_errors_not_panics() {
    let a = [0.0; 5];
    let b = [0.0; 6];
    let mut c = [0.0; 4];
    let err = matmul(2, 3, 2, &a, &b, &mut c).unwrap_err();
    assert!(
        matches!(err, GemmError::TooShort { operand: "A", .. }),
        "{err}"
    );
    let err = sgemm(
        Parallelism::Sequential,
        2,
        2,
        3,
        1.0,
        MatRef::new(&[0.0; 6], 2),
        MatRef::new(&b, 2),
        0.0,
        &mut c,
        2,
    )
    .unwrap_err();
    assert!(
        matches!(err, GemmError::LeadingDim { operand: "A", .. }),
        "{err}"
    );
    let err = matmul(2, 3, 2, &[0.0; 6], &b, &mut [0.0; 3]).unwrap_err();
    assert!(
        matches!(err, GemmError::TooShort { operand: "C", .. }),
        "{err}"
    );
}

/// Products of a few rows read B in place (and a single untransposed row
/// of A too) and run one row's tiles side by side; every row must still
/// come out bit-identical to the same row inside a tall product, which
/// packs both operands. Training shards and `predict` at batch 1 rely on
/// a row's result not depending on how many rows share the product.
#[test]
fn few_row_products_are_bit_identical_to_rows_of_tall_ones() {
    let mut rng = Rng::new(21);
    let tall = 20;
    for isa in kernels() {
        for &(k, n) in &[
            (1, 1),
            (5, 10),
            (37, 16),
            (700, 64),
            (1100, 70),
            (784, 128),
            (90, 200),
        ] {
            for ta in [Trans::No, Trans::Yes] {
                for (alpha, beta) in [(1.0, 0.0), (0.5, 1.0)] {
                    let (ar, ac) = if ta == Trans::No {
                        (tall, k)
                    } else {
                        (k, tall)
                    };
                    let av = random(&mut rng, ar * ac);
                    let bv = random(&mut rng, k * n);
                    let c0 = random(&mut rng, tall * n);
                    let a = MatRef {
                        data: &av,
                        ld: ac,
                        trans: ta,
                    };
                    let b = MatRef::new(&bv, n);
                    let mut want = c0.clone();
                    let seq = Parallelism::Sequential;
                    sgemm_with(isa, seq, tall, n, k, alpha, a, b, beta, &mut want, n, None)
                        .unwrap();
                    for m in 1..=7 {
                        for i0 in [0, tall - m, 3] {
                            // Rows i0..i0 + m of A, stored as the tall A is.
                            let (sub, ld): (Vec<f32>, usize) = match ta {
                                Trans::No => (av[i0 * k..(i0 + m) * k].to_vec(), k),
                                Trans::Yes => (
                                    (0..k)
                                        .flat_map(|p| av[p * tall + i0..][..m].to_vec())
                                        .collect(),
                                    m,
                                ),
                            };
                            let a = MatRef {
                                data: &sub,
                                ld,
                                trans: ta,
                            };
                            let mut got = c0[i0 * n..(i0 + m) * n].to_vec();
                            sgemm_with(isa, seq, m, n, k, alpha, a, b, beta, &mut got, n, None)
                                .unwrap();
                            let same = got
                                .iter()
                                .zip(&want[i0 * n..(i0 + m) * n])
                                .all(|(x, y)| x.to_bits() == y.to_bits());
                            assert!(
                                same,
                                "{isa:?} rows {i0}..{} of {tall}x{k}x{n} {ta:?} alpha {alpha} beta {beta}",
                                i0 + m
                            );
                        }
                    }
                }
            }
        }
    }
}

/// Every kernel family this CPU can run.
fn kernels() -> Vec<Isa> {
    let mut v = vec![Isa::Generic];
    if Isa::detect() != Isa::Generic {
        v.push(Isa::detect());
    }
    v
}

/// Runs one product with every kernel against the oracle; C starts as
/// NaN when `beta == 0` (which must not be read) and the padding of C
/// past column `n` must come back bit-identical.
#[allow(clippy::too_many_arguments)]
fn check_product(
    rng: &mut Rng,
    par: Parallelism,
    (m, n, k): (usize, usize, usize),
    (ta, tb): (Trans, Trans),
    pad: usize,
    alpha: f32,
    beta: f32,
) -> Result<(), String> {
    let (ar, ac) = if ta == Trans::No { (m, k) } else { (k, m) };
    let (br, bc) = if tb == Trans::No { (k, n) } else { (n, k) };
    let (lda, ldb, ldc) = (ac + pad, bc + pad, n + pad);
    let av = random(rng, ar * lda);
    let bv = random(rng, br * ldb);
    let c0 = if beta == 0.0 {
        vec![f32::NAN; m * ldc]
    } else {
        random(rng, m * ldc)
    };
    let a = MatRef {
        data: &av,
        ld: lda,
        trans: ta,
    };
    let b = MatRef {
        data: &bv,
        ld: ldb,
        trans: tb,
    };
    let want = naive(m, n, k, alpha as f64, &a, &b, beta as f64, &c0, ldc);
    for isa in kernels() {
        let mut cv = c0.clone();
        sgemm_with(isa, par, m, n, k, alpha, a, b, beta, &mut cv, ldc, None)
            .map_err(|e| e.to_string())?;
        // The same product with an epilogue that must see every element
        // of C exactly once, with the caller's row and column numbers.
        let visits: Vec<AtomicU32> = (0..m * n).map(|_| AtomicU32::new(0)).collect();
        let ep = |row: usize, col0: usize, seg: &mut [f32]| {
            for (j, x) in seg.iter_mut().enumerate() {
                visits[row * n + col0 + j].fetch_add(1, Ordering::Relaxed);
                *x = *x * 2.0 + row as f32 - 0.5 * (col0 + j) as f32;
            }
        };
        let mut ce = c0.clone();
        sgemm_with(
            isa,
            par,
            m,
            n,
            k,
            alpha,
            a,
            b,
            beta,
            &mut ce,
            ldc,
            Some(&ep),
        )
        .map_err(|e| e.to_string())?;
        for i in 0..m {
            for j in 0..n {
                let seen = visits[i * n + j].load(Ordering::Relaxed);
                if seen != 1 {
                    return Err(format!("{isa:?}: epilogue saw ({i},{j}) {seen} times"));
                }
                let want = cv[i * ldc + j] * 2.0 + i as f32 - 0.5 * j as f32;
                let got = ce[i * ldc + j];
                if got.to_bits() != want.to_bits() && !(got.is_nan() && want.is_nan()) {
                    return Err(format!(
                        "{isa:?}: epilogue result ({i},{j}) {got} vs {want}"
                    ));
                }
            }
        }
        close_to_naive(
            &format!(
                "{isa:?} {m}x{k}x{n} {ta:?} {tb:?} pad {pad} alpha {alpha} beta {beta} {par:?}"
            ),
            &cv,
            &c0,
            &want,
            (n, ldc),
            1e-5 * (k as f64).sqrt(),
        )?;
    }
    Ok(())
}

fn trans(t: bool) -> Trans {
    if t {
        Trans::Yes
    } else {
        Trans::No
    }
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config::with_cases(256))]

    /// Random small shapes (every edge-tile combination of both kernels),
    /// all four transpose combinations, leading-dimension padding,
    /// alpha/beta including beta = 0 over a NaN-filled C.
    #[test]
    fn random_small_products_match_naive(
        m in 1usize..80,
        n in 1usize..80,
        k in 1usize..80,
        ta: bool,
        tb: bool,
        pad in 0usize..3,
        alpha in proptest::sample::select(vec![1.0f32, -0.5, 3.0]),
        beta in proptest::sample::select(vec![0.0f32, 1.0, -0.75]),
        seed: u64,
    ) {
        let mut rng = Rng::new(seed);
        let r = check_product(
            &mut rng,
            Parallelism::Sequential,
            (m, n, k),
            (trans(ta), trans(tb)),
            pad,
            alpha,
            beta,
        );
        proptest::prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }
}

#[test]
fn products_crossing_every_block_boundary_match_naive() {
    let mut rng = Rng::new(11);
    // (m, n, k): m > MC, k > KC, n >= PACK_A_MIN_N (packed A) and below
    // (A read in place), n > NC, and shapes split over rayon along n and
    // along m.
    let shapes = [
        (150, 520, 600),
        (151, 97, 515),
        (13, 4200, 5),
        (5, 3, 1000),
        (300, 40, 200),
    ];
    for (s, &shape) in shapes.iter().enumerate() {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            for par in [Parallelism::Sequential, Parallelism::Rayon(0)] {
                let (alpha, beta) = [(1.0, 0.0), (0.5, 1.0), (-1.0, 0.25)][s % 3];
                let pad = s % 2;
                check_product(
                    &mut rng,
                    par,
                    shape,
                    (trans(ta), trans(tb)),
                    pad,
                    alpha,
                    beta,
                )
                .unwrap();
            }
        }
    }
}

/// However a product is cut into parts — by rows, by columns when A is read
/// in place, one part per thread or several ([`Parallelism::Shared`]) —
/// every element of C, and what the epilogue makes of it, comes out the
/// same bits as on the calling thread alone, and the epilogue sees each
/// element once.
#[test]
fn split_products_give_the_sequential_bits() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .expect("pool");
    let mut rng = Rng::new(5);
    // (m, n, k, A transposed): W1's shard forward (A in place, cut by
    // columns) and weight gradient (A transposed, cut by rows), a narrow
    // product cut by rows, a small one cut by columns.
    for (m, n, k, ta) in [
        (64, 128, 784, false),
        (784, 128, 64, true),
        (640, 10, 2100, false),
        (300, 40, 200, false),
    ] {
        let (a, b) = (random(&mut rng, m * k), random(&mut rng, k * n));
        let a = if ta {
            MatRef::transposed(&a, m)
        } else {
            MatRef::new(&a, k)
        };
        let b = MatRef::new(&b, n);
        let run = |par: Parallelism| {
            let mut c = vec![f32::NAN; m * n];
            // Adds the element's index: an element handed over twice, or
            // never, shows.
            let ep = |row: usize, col: usize, seg: &mut [f32]| {
                for (j, x) in seg.iter_mut().enumerate() {
                    *x += (row * n + col + j) as f32;
                }
            };
            pool.install(|| sgemm_then(par, m, n, k, 1.0, a, b, 0.0, &mut c, n, &ep))
                .expect("product");
            c.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        };
        let one = run(Parallelism::Sequential);
        for par in [
            Parallelism::Rayon(0),
            Parallelism::Rayon(2),
            Parallelism::Shared,
        ] {
            assert!(
                one == run(par),
                "{m}x{n}x{k} (A transposed: {ta}) under {par:?}"
            );
        }
    }
}

/// Counts heap allocations per thread, so that tests running
/// concurrently in this binary do not disturb each other's counts.
pub(crate) mod counting {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static COUNT: Cell<usize> = const { Cell::new(0) };
    }

    struct Counting;

    fn bump() {
        // `try_with`: the count has no destructor, but be safe anyway
        // during thread teardown.
        let _ = COUNT.try_with(|c| c.set(c.get() + 1));
    }

    // SAFETY: forwards to `System`, only adding a thread-local count.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            bump();
            // SAFETY: forwarded contract.
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: forwarded contract.
            unsafe { System.dealloc(ptr, layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            bump();
            // SAFETY: forwarded contract.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    #[global_allocator]
    static GLOBAL: Counting = Counting;

    /// Allocations made so far by the calling thread.
    pub(crate) fn allocations() -> usize {
        COUNT.with(Cell::get)
    }
}

/// The indexed product (implicit im2col) on random row tables, with and
/// without per-block depth ranges: the AVX2 kernel (where the CPU has it)
/// and the plain loops against f64 sums; C beyond `n` columns untouched,
/// NaN in C ignored when `beta == 0`.
#[test]
fn indexed_product_matches_naive() {
    let mut rng = Rng::new(11);
    for case in 0..300 {
        let m = 1 + rng.below(14) as usize;
        let k = 1 + rng.below(40) as usize;
        let n = 1 + rng.below(50) as usize;
        let blocks = n.div_ceil(INDEXED_BLOCK);
        let a_rows: Vec<usize> = (0..m).map(|_| rng.below(30) as usize).collect();
        let b_rows: Vec<usize> = (0..k).map(|_| rng.below(30) as usize).collect();
        let b_block = INDEXED_BLOCK + rng.below(20) as usize;
        let a = random(&mut rng, 30 + k);
        let b = random(&mut rng, (blocks - 1) * b_block + 30 + INDEXED_BLOCK);
        // Every other case, each block its own depth range (some empty,
        // some past `k`, which `depth_of` clips).
        let ranges: Vec<(usize, usize)> = (0..blocks)
            .map(|_| {
                let lo = rng.below(k as u64 + 2) as usize;
                (lo, lo + rng.below(k as u64 + 2) as usize)
            })
            .collect();
        let by_block = |j0: usize| {
            let (lo, hi) = ranges[j0 / INDEXED_BLOCK];
            lo..hi
        };
        let depth: Option<&dyn Fn(usize) -> std::ops::Range<usize>> =
            if case % 2 == 1 { Some(&by_block) } else { None };
        let x = Indexed {
            a: &a,
            a_rows: &a_rows,
            b: &b,
            b_rows: &b_rows,
            b_block,
            depth,
        };
        let ldc = n + rng.below(3) as usize;
        let beta = [0.0, 1.0, 0.5][case % 3];
        let c0: Vec<f32> = random(&mut rng, m * ldc)
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                if beta == 0.0 && i % 7 == 0 {
                    f32::NAN
                } else {
                    v
                }
            })
            .collect();
        let mut want = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut sum = 0f64;
                let (lo, hi) = match depth {
                    Some(_) => ranges[j / INDEXED_BLOCK],
                    None => (0, k),
                };
                for p in lo.min(k)..hi.min(k) {
                    let bv = b[(j / INDEXED_BLOCK) * b_block + b_rows[p] + j % INDEXED_BLOCK];
                    sum += f64::from(a[a_rows[i] + p]) * f64::from(bv);
                }
                if beta != 0.0 {
                    sum += f64::from(beta) * f64::from(c0[i * ldc + j]);
                }
                want[i * n + j] = sum;
            }
        }
        let generic = |c: &mut [f32]| indexed_generic(n, &x, beta, c, ldc);
        let dispatched = |c: &mut [f32]| indexed(n, &x, beta, c, ldc);
        for (name, run) in [
            ("generic", &generic as &dyn Fn(&mut [f32])),
            ("dispatched", &dispatched),
        ] {
            let mut c = c0.clone();
            run(&mut c);
            assert_close_to_naive(
                &format!("{name} case {case} ({m}x{k}x{n})"),
                &c,
                &c0,
                &want,
                (n, ldc),
                1e-4,
            );
        }
    }
}

#[test]
fn repeated_calls_do_not_allocate() {
    let mut rng = Rng::new(3);
    let (m, n, k) = (150, 600, 300);
    let a = random(&mut rng, m * k);
    let b = random(&mut rng, k * n);
    let mut c = vec![0.0; m * n];
    // The shapes of one training step of a dense layer, every kernel.
    let mut step = |isa| {
        for (ta, tb) in [(false, false), (true, false), (false, true)] {
            let (lda, ldb) = (if ta { m } else { k }, if tb { k } else { n });
            let a = MatRef {
                data: &a,
                ld: lda,
                trans: trans(ta),
            };
            let b = MatRef {
                data: &b,
                ld: ldb,
                trans: trans(tb),
            };
            for (mm, nn) in [(m, n), (m, 100), (7, 9)] {
                sgemm_with(
                    isa,
                    Parallelism::Sequential,
                    mm,
                    nn,
                    k,
                    1.0,
                    a,
                    b,
                    0.0,
                    &mut c,
                    n,
                    None,
                )
                .unwrap();
            }
        }
    };
    for isa in kernels() {
        step(isa);
        let before = counting::allocations();
        step(isa);
        step(isa);
        let n = counting::allocations() - before;
        assert_eq!(n, 0, "{isa:?}: {n} allocations after warm-up");
    }
    // A thread that first meets a small product does not allocate for a
    // larger one: which worker gets which part of a product varies.
    std::thread::spawn(move || {
        let mut c = vec![0.0; m * n];
        let mut product = |mm: usize, nn: usize, isa| {
            let (a, b) = (MatRef::new(&a, k), MatRef::new(&b, n));
            let par = Parallelism::Sequential;
            sgemm_with(isa, par, mm, nn, k, 1.0, a, b, 0.0, &mut c, n, None).unwrap();
        };
        for isa in kernels() {
            product(7, 9, isa);
            let before = counting::allocations();
            product(m, n, isa);
            let n = counting::allocations() - before;
            assert_eq!(n, 0, "{isa:?}: {n} allocations for a larger product");
        }
    })
    .join()
    .unwrap();
    // The counter does count.
    let before = counting::allocations();
    drop(std::hint::black_box(vec![1u8; 3]));
    assert_eq!(counting::allocations() - before, 1);
}
