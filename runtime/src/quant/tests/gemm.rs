//! `qgemm` against the exact integer reference (i32 accumulators bit for
//! bit) on edge shapes, for every kernel family and thread count; the f32
//! and u8 epilogues against f64; saturation extremes; errors; allocation.

use super::super::gemm::qgemm_with;
use super::*;
use crate::gemm::Parallelism;

/// Sentinels for elements outside the product, which must survive.
const I32_PAD: i32 = i32::MIN + 7;
const F32_PAD: f32 = -1234.5;
const U8_PAD: u8 = 0xA5;

/// One random product: operands, parameters and destinations' strides.
struct Case {
    m: usize,
    lda: usize,
    ldc: usize,
    a: Vec<u8>,
    aq: ActQuant,
    q: QuantWeights,
    w: PackedWeights,
    bias: Vec<f32>,
}

impl Case {
    /// `m × k` activations (rows `k + pad_a` apart) and `[k, n]` weights.
    fn random(rng: &mut Rng, m: usize, k: usize, n: usize, pad_a: usize, pad_c: usize) -> Case {
        let lda = k + pad_a;
        let a = bytes(rng, m.saturating_sub(1) * lda + k);
        let zp = rng.below(256) as u8;
        let aq = ActQuant::new(rng.uniform_f32(1e-3, 0.05), zp).unwrap();
        let q = weights(rng, k, n);
        let w = PackedWeights::new(&q);
        let bias = (0..n).map(|_| rng.uniform_f32(-2.0, 2.0)).collect();
        Case {
            m,
            lda,
            ldc: n + pad_c,
            a,
            aq,
            q,
            w,
            bias,
        }
    }

    fn n(&self) -> usize {
        self.q.channels()
    }

    fn input(&self) -> QMatRef<'_> {
        QMatRef::new(&self.a, self.lda, self.aq)
    }

    fn c_len(&self) -> usize {
        self.m.saturating_sub(1) * self.ldc + self.n() + 3
    }

    fn reference(&self) -> Vec<i64> {
        reference_acc(self.m, &self.a, self.lda, self.aq.zero_point(), &self.q)
    }

    fn run_i32(&self, isa: Isa, par: Parallelism) -> Vec<i32> {
        let mut c = vec![I32_PAD; self.c_len()];
        let out = Output::I32(&mut c);
        qgemm_with(isa, par, self.m, self.input(), &self.w, out, self.ldc).unwrap();
        c
    }

    fn run_f32(&self, isa: Isa, par: Parallelism, ep: Epilogue<'_>) -> Vec<f32> {
        let mut c = vec![F32_PAD; self.c_len()];
        let out = Output::F32(&mut c, ep);
        qgemm_with(isa, par, self.m, self.input(), &self.w, out, self.ldc).unwrap();
        c
    }

    fn run_u8(&self, isa: Isa, par: Parallelism, ep: Epilogue<'_>, next: ActQuant) -> Vec<u8> {
        let mut c = vec![U8_PAD; self.c_len()];
        let out = Output::U8(&mut c, ep, next);
        qgemm_with(isa, par, self.m, self.input(), &self.w, out, self.ldc).unwrap();
        c
    }

    /// Calls `f(i, j, index)` for every element of the product and checks
    /// that every other element of `c` still holds `pad`.
    fn each<T: PartialEq + std::fmt::Debug>(
        &self,
        c: &[T],
        pad: T,
        mut f: impl FnMut(usize, usize, usize),
    ) {
        let n = self.n();
        for (idx, v) in c.iter().enumerate() {
            let (i, j) = (idx / self.ldc, idx % self.ldc);
            if i < self.m && j < n {
                f(i, j, idx);
            } else {
                assert_eq!(*v, pad, "element {idx} outside the product was written");
            }
        }
    }

    /// Checks the exact accumulators.
    fn check_i32(&self, c: &[i32], label: &str) {
        let want = self.reference();
        let n = self.n();
        self.each(c, I32_PAD, |i, j, idx| {
            assert_eq!(i64::from(c[idx]), want[i * n + j], "{label}: ({i}, {j})");
        });
    }

    /// Checks the f32 epilogue against f64 within [`f32_tolerance`].
    fn check_f32(&self, c: &[f32], ep: Epilogue<'_>, label: &str) {
        let want = self.reference();
        let n = self.n();
        self.each(c, F32_PAD, |i, j, idx| {
            let b = ep.bias.map_or(0.0, |b| b[j]);
            let (y, mag) = reference_f32(
                want[i * n + j],
                self.aq.scale(),
                self.q.scales()[j],
                b,
                ep.relu,
            );
            let err = (f64::from(c[idx]) - y).abs();
            assert!(
                err <= f32_tolerance(mag),
                "{label}: ({i}, {j}) = {} vs {y}: error {err} above {}",
                c[idx],
                f32_tolerance(mag)
            );
        });
    }
}

/// Every family on every small edge shape: tile remainders in m (MR = 4),
/// n (16-channel panels) and k (depth-quads), k = 1 and n = 1, padded
/// leading dimensions; I32 bit-exact, F32 within tolerance.
#[test]
fn accumulators_are_exact_on_edge_shapes() {
    let mut rng = Rng::new(10);
    for &m in &[1, 2, 3, 4, 5, 7, 8, 9, 13] {
        for &k in &[1, 2, 3, 4, 5, 7, 8, 63, 64, 65, 131] {
            for &n in &[1, 2, 15, 16, 17, 31, 33] {
                let pad = rng.below(3) as usize * 5;
                let case = Case::random(&mut rng, m, k, n, pad, 2);
                for isa in Isa::all() {
                    let label = format!("{isa:?} m {m} k {k} n {n}");
                    let seq = Parallelism::Sequential;
                    case.check_i32(&case.run_i32(isa, seq), &label);
                    let ep = Epilogue {
                        bias: Some(&case.bias),
                        relu: (m + k + n) % 2 == 0,
                    };
                    case.check_f32(&case.run_f32(isa, seq, ep), ep, &label);
                }
            }
        }
    }
}

/// Deep and wide products (many quads, many panels, several row blocks of
/// the cache blocking) and the MLP's layer shapes.
#[test]
fn large_products_are_exact() {
    let mut rng = Rng::new(11);
    for (m, k, n) in [
        (37, 2001, 45),
        (256, 784, 128),
        (3, 5000, 3),
        (700, 300, 10),
        (1, 784, 128),
    ] {
        let case = Case::random(&mut rng, m, k, n, 0, 0);
        for isa in Isa::all() {
            let label = format!("{isa:?} m {m} k {k} n {n}");
            case.check_i32(&case.run_i32(isa, Parallelism::Sequential), &label);
        }
    }
}

/// The result is the same bits for every thread count and both split
/// directions (rows for tall products, panels for wide ones), in every
/// output format.
#[test]
fn thread_count_does_not_change_bits() {
    let mut rng = Rng::new(12);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(4)
        .build()
        .unwrap();
    for (m, k, n) in [(301, 400, 100), (6, 3000, 600)] {
        let case = Case::random(&mut rng, m, k, n, 3, 1);
        let next = ActQuant::from_min_max(-1.0, 3.0).unwrap();
        let ep = Epilogue {
            bias: Some(&case.bias),
            relu: true,
        };
        for isa in Isa::all() {
            let seq = Parallelism::Sequential;
            let (i, f, u) = (
                case.run_i32(isa, seq),
                case.run_f32(isa, seq, ep),
                case.run_u8(isa, seq, ep, next),
            );
            case.check_i32(&i, "sequential");
            for threads in [0, 2, 3, 4] {
                let par = Parallelism::Rayon(threads);
                pool.install(|| {
                    assert_eq!(case.run_i32(isa, par), i, "{isa:?} {threads} threads");
                    let f2 = case.run_f32(isa, par, ep);
                    let same = f2.iter().zip(&f).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{isa:?} {threads} threads: f32 bits differ");
                    assert_eq!(
                        case.run_u8(isa, par, ep, next),
                        u,
                        "{isa:?} {threads} threads"
                    );
                });
            }
        }
    }
}

/// The f32 epilogue (scales, bias, ReLU) is within 2 f32 epsilons of the
/// f64 value, and every kernel family produces the same bits.
#[test]
fn f32_epilogue_matches_f64_and_families_agree() {
    let mut rng = Rng::new(13);
    for trial in 0..40 {
        let (m, k, n) = (
            1 + rng.below(40) as usize,
            1 + rng.below(900) as usize,
            1 + rng.below(70) as usize,
        );
        let (pad_a, pad_c) = (rng.below(4) as usize, rng.below(4) as usize);
        let case = Case::random(&mut rng, m, k, n, pad_a, pad_c);
        let ep = Epilogue {
            bias: (trial % 3 != 0).then_some(&case.bias[..]),
            relu: trial % 2 == 0,
        };
        let outs: Vec<Vec<f32>> = Isa::all()
            .into_iter()
            .map(|isa| case.run_f32(isa, Parallelism::Sequential, ep))
            .collect();
        case.check_f32(&outs[0], ep, &format!("trial {trial}"));
        for o in &outs[1..] {
            let same = o
                .iter()
                .zip(&outs[0])
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "trial {trial}: families disagree");
        }
    }
}

/// The u8 output is exactly `quantize_u8` of the f32 output, and within one
/// step of quantizing the f64 value (a rounding tie may fall either way).
#[test]
fn u8_epilogue_requantizes_the_f32_output() {
    let mut rng = Rng::new(14);
    for trial in 0..30 {
        let (m, k, n) = (
            1 + rng.below(30) as usize,
            1 + rng.below(500) as usize,
            1 + rng.below(50) as usize,
        );
        let pad_c = rng.below(3) as usize;
        let case = Case::random(&mut rng, m, k, n, 0, pad_c);
        let ep = Epilogue {
            bias: Some(&case.bias),
            relu: trial % 2 == 1,
        };
        let lo = rng.uniform_f32(-3.0, 0.0);
        let next = ActQuant::from_min_max(lo, lo + rng.uniform_f32(0.1, 6.0)).unwrap();
        let want = case.reference();
        for isa in Isa::all() {
            let f = case.run_f32(isa, Parallelism::Sequential, ep);
            let u = case.run_u8(isa, Parallelism::Sequential, ep, next);
            case.each(&u, U8_PAD, |i, j, idx| {
                assert_eq!(
                    u[idx],
                    next.quantize(f[idx]),
                    "{isa:?} trial {trial} ({i}, {j})"
                );
                let (y, _) = reference_f32(
                    want[i * n + j],
                    case.aq.scale(),
                    case.q.scales()[j],
                    case.bias[j],
                    ep.relu,
                );
                let exact = (y / f64::from(next.scale())).round() + f64::from(next.zero_point());
                let exact = exact.clamp(0.0, 255.0);
                assert!(
                    (f64::from(u[idx]) - exact).abs() <= 1.0,
                    "{isa:?} trial {trial} ({i}, {j})"
                );
            });
        }
    }
}

/// All-255 activations against weights all at the 7-bit extremes (every
/// `vpmaddubsw` pair at its largest, `±2 · 255 · 63`), with zero points at
/// both ends and in the middle, up to the deepest product an i32 holds.
#[test]
fn saturation_extremes_are_exact() {
    for k in [1, 2, 4, 5, 1000, 4099] {
        for wv in [63i8, -63] {
            for zp in [0u8, 128, 255] {
                let (m, n) = (5, 17);
                let q =
                    QuantWeights::from_parts(vec![wv; k * n], vec![0.5; n], WeightLayout::InOut)
                        .unwrap();
                let w = PackedWeights::new(&q);
                let a = vec![255u8; m * k];
                let aq = ActQuant::new(1.0, zp).unwrap();
                let want = k as i32 * (255 - i32::from(zp)) * i32::from(wv);
                for isa in Isa::all() {
                    let mut c = vec![0i32; m * n];
                    let input = QMatRef::new(&a, k, aq);
                    qgemm_with(
                        isa,
                        Parallelism::Sequential,
                        m,
                        input,
                        &w,
                        Output::I32(&mut c),
                        n,
                    )
                    .unwrap();
                    assert!(
                        c.iter().all(|&v| v == want),
                        "{isa:?} k {k} w {wv} zp {zp}: {:?} != {want}",
                        &c[..3]
                    );
                }
            }
        }
    }
    // Alternating signs and bytes: every pair mixes extremes.
    let k = 64;
    let values: Vec<i8> = (0..k).map(|i| if i % 2 == 0 { 63 } else { -63 }).collect();
    let q = QuantWeights::from_parts(values, vec![1.0], WeightLayout::InOut).unwrap();
    let w = PackedWeights::new(&q);
    let a: Vec<u8> = (0..k).map(|i| if i % 4 < 2 { 255 } else { 0 }).collect();
    for isa in Isa::all() {
        let mut c = [0i32];
        let input = QMatRef::new(&a, k, ActQuant::new(1.0, 0).unwrap());
        qgemm_with(
            isa,
            Parallelism::Sequential,
            1,
            input,
            &w,
            Output::I32(&mut c),
            1,
        )
        .unwrap();
        assert_eq!(c[0], 0, "{isa:?}");
    }
    // The deepest exact product, at both extremes of its accumulator.
    for (byte, zp, wv) in [(255u8, 0u8, 63i8), (0, 255, 63), (255, 0, -63)] {
        let k = MAX_DEPTH;
        let q = QuantWeights::from_parts(vec![wv; k], vec![1.0], WeightLayout::InOut).unwrap();
        let w = PackedWeights::new(&q);
        let a = vec![byte; k];
        let want = k as i64 * (i64::from(byte) - i64::from(zp)) * i64::from(wv);
        for isa in Isa::all() {
            let mut c = [0i32];
            let input = QMatRef::new(&a, k, ActQuant::new(1.0, zp).unwrap());
            qgemm_with(
                isa,
                Parallelism::Sequential,
                1,
                input,
                &w,
                Output::I32(&mut c),
                1,
            )
            .unwrap();
            assert_eq!(i64::from(c[0]), want, "{isa:?}");
        }
    }
    let q =
        QuantWeights::from_parts(vec![1; MAX_DEPTH + 1], vec![1.0], WeightLayout::InOut).unwrap();
    let a = vec![0u8; MAX_DEPTH + 1];
    let r = qgemm(
        Parallelism::Sequential,
        1,
        QMatRef::new(&a, MAX_DEPTH + 1, ActQuant::new(1.0, 0).unwrap()),
        &PackedWeights::new(&q),
        Output::I32(&mut [0]),
        1,
    );
    assert_eq!(r, Err(QuantError::TooDeep(MAX_DEPTH + 1)));
}

/// Degenerate shapes: no rows, and depth 0 (the output is the bias).
#[test]
fn empty_products() {
    let aq = ActQuant::new(0.1, 3).unwrap();
    let q = weights(&mut Rng::new(15), 5, 3);
    let w = PackedWeights::new(&q);
    let mut c = [7i32; 3];
    qgemm(
        Parallelism::Sequential,
        0,
        QMatRef::new(&[], 5, aq),
        &w,
        Output::I32(&mut c),
        3,
    )
    .unwrap();
    assert_eq!(c, [7; 3]);
    let q = QuantWeights::from_parts(vec![], vec![1.0, 2.0], WeightLayout::InOut).unwrap();
    let w = PackedWeights::new(&q);
    let bias = [1.5, -2.5];
    let mut c = [0.0f32; 4];
    let ep = Epilogue {
        bias: Some(&bias),
        relu: true,
    };
    qgemm(
        Parallelism::Sequential,
        2,
        QMatRef::new(&[], 0, aq),
        &w,
        Output::F32(&mut c, ep),
        2,
    )
    .unwrap();
    assert_eq!(c, [1.5, 0.0, 1.5, 0.0]);
}

/// Bad operands fail before anything is written.
#[test]
fn operand_errors_leave_the_output_alone() {
    let aq = ActQuant::new(0.1, 3).unwrap();
    let q = weights(&mut Rng::new(16), 8, 5);
    let w = PackedWeights::new(&q);
    let a = vec![1u8; 4 * 8];
    let seq = Parallelism::Sequential;
    let mut c = vec![9i32; 3 * 5];
    let cases: [(QMatRef<'_>, usize, usize); 4] = [
        (QMatRef::new(&a[..23], 8, aq), 5, 3), // A one byte short
        (QMatRef::new(&a, 7, aq), 5, 3),       // lda < k
        (QMatRef::new(&a, 8, aq), 4, 3),       // ldc < n
        (QMatRef::new(&a, 8, aq), 5, 4),       // C too short for 4 rows
    ];
    for (input, ldc, m) in cases {
        let r = qgemm(seq, m, input, &w, Output::I32(&mut c), ldc);
        assert!(matches!(r, Err(QuantError::Operand { .. })), "{r:?}");
    }
    let bias = [0.0; 4];
    let mut f = vec![9.0f32; 15];
    let ep = Epilogue {
        bias: Some(&bias),
        relu: false,
    };
    let r = qgemm(
        seq,
        3,
        QMatRef::new(&a, 8, aq),
        &w,
        Output::F32(&mut f, ep),
        5,
    );
    assert_eq!(
        r,
        Err(QuantError::Length {
            what: "bias",
            expected: 5,
            found: 4
        })
    );
    assert!(c.iter().all(|&v| v == 9) && f.iter().all(|&v| v == 9.0));
}

/// No call allocates: the product reads its operands in place and keeps its
/// accumulators on the stack (the convolution's scratch is the caller's).
#[test]
fn calls_do_not_allocate() {
    use crate::gemm::tests::counting::allocations;
    let mut rng = Rng::new(17);
    let case = Case::random(&mut rng, 64, 300, 40, 0, 0);
    let next = ActQuant::new(0.02, 100).unwrap();
    let mut ci = vec![0i32; 64 * 40];
    let mut cf = vec![0.0f32; 64 * 40];
    let mut cu = vec![0u8; 64 * 40];
    let ep = Epilogue {
        bias: Some(&case.bias),
        relu: true,
    };
    let mut run = |isa| {
        let seq = Parallelism::Sequential;
        qgemm_with(
            isa,
            seq,
            64,
            case.input(),
            &case.w,
            Output::I32(&mut ci),
            40,
        )
        .unwrap();
        qgemm_with(
            isa,
            seq,
            64,
            case.input(),
            &case.w,
            Output::F32(&mut cf, ep),
            40,
        )
        .unwrap();
        qgemm_with(
            isa,
            seq,
            64,
            case.input(),
            &case.w,
            Output::U8(&mut cu, ep, next),
            40,
        )
        .unwrap();
    };
    for isa in Isa::all() {
        let before = allocations();
        run(isa);
        assert_eq!(allocations() - before, 0, "{isa:?}");
    }
    let x: Vec<f32> = (0..1000).map(|i| i as f32 * 0.01).collect();
    let mut xq = vec![0u8; 1000];
    let before = allocations();
    quantize_u8(next, &x, &mut xq);
    dequantize_u8(next, &xq, &mut cf[..1000]);
    assert_eq!(allocations() - before, 0);
}
