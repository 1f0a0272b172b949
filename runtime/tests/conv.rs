//! The convolution and pooling kernels (implicit GEMM, im2col + GEMM,
//! col2im, pooling loops) against naive direct loops, on random shapes,
//! strides, paddings, dilations and groups.

use nnc_runtime::conv::{self, Conv2d, Pool2d};
use proptest::prelude::*;

use nnc_test_support::{assert_close, Rng};

/// Within 1e-4 of the naive loops, relative to the largest magnitude (at
/// least 1).
#[track_caller]
fn close(got: &[f32], want: &[f64], what: &str) {
    assert_close(what, got, want, 1e-4, 1.0);
}

/// Input position of output `o` and kernel tap `k`, if inside `0..n`.
fn at(o: usize, k: usize, s: usize, p: usize, d: usize, n: usize) -> Option<usize> {
    let i = (o * s + k * d) as isize - p as isize;
    (0..n as isize).contains(&i).then_some(i as usize)
}

fn check_conv(g: Conv2d, b: usize, seed: u64) {
    let mut rng = Rng(seed);
    let (oh, ow) = g.out_hw();
    let x = rng.uniform_f32(b * g.c * g.h * g.w, -1.0, 1.0);
    let w = rng.uniform_f32(g.o * g.c / g.groups * g.kh * g.kw, -1.0, 1.0);
    let dy = rng.uniform_f32(b * g.o * oh * ow, -1.0, 1.0);
    let (y_want, dx_want, dw_want) = conv::reference::conv2d(&g, b, &x, &w, &dy);
    // Scratch and outputs start full of garbage: kernels must not read them.
    let mut scratch = vec![f32::NAN; g.scratch_len()];
    let mut y = vec![f32::NAN; y_want.len()];
    conv::conv2d(&g, b, &mut y, &x, &w, &mut scratch);
    close(&y, &y_want, &format!("conv2d {g:?} batch {b}"));
    let mut dx = vec![f32::NAN; x.len()];
    conv::conv2d_grad_input(&g, b, &mut dx, &dy, &w, &mut scratch);
    close(&dx, &dx_want, &format!("conv2d grad input {g:?} batch {b}"));
    let mut dw = vec![f32::NAN; w.len()];
    conv::conv2d_grad_weight(&g, b, &mut dw, &x, &dy, &mut scratch);
    close(
        &dw,
        &dw_want,
        &format!("conv2d grad weight {g:?} batch {b}"),
    );
    // The column-matrix path, which stride-1 layers skip on AVX2 CPUs.
    scratch.fill(f32::NAN);
    y.fill(f32::NAN);
    conv::columns::conv2d(&g, b, &mut y, &x, &w, &mut scratch, &|_, _| {});
    close(&y, &y_want, &format!("im2col conv2d {g:?} batch {b}"));
    dx.fill(f32::NAN);
    conv::columns::conv2d_grad_input(&g, b, &mut dx, &dy, &w, &mut scratch);
    close(&dx, &dx_want, &format!("col2im grad input {g:?} batch {b}"));
    dw.fill(f32::NAN);
    conv::columns::conv2d_grad_weight(&g, b, &mut dw, &x, &dy, &mut scratch);
    close(
        &dw,
        &dw_want,
        &format!("im2col grad weight {g:?} batch {b}"),
    );
}

/// Naive pooling forward and backward (first maximum of each window).
fn naive_pool(p: &Pool2d, b: usize, x: &[f32], dy: &[f32], max: bool) -> (Vec<f64>, Vec<f64>) {
    let (oh, ow) = p.out_hw();
    let mut y = vec![0.0; b * p.c * oh * ow];
    let mut dx = vec![0.0; x.len()];
    let area = (p.kernel[0] * p.kernel[1]) as f64;
    for pl in 0..b * p.c {
        for oy in 0..oh {
            for ox in 0..ow {
                let yi = (pl * oh + oy) * ow + ox;
                let mut best: Option<(usize, f64)> = None;
                let mut sum = 0.0;
                let mut taps = Vec::new();
                for ki in 0..p.kernel[0] {
                    let Some(iy) = at(oy, ki, p.stride[0], p.padding[0], 1, p.h) else {
                        continue;
                    };
                    for kj in 0..p.kernel[1] {
                        let Some(ix) = at(ox, kj, p.stride[1], p.padding[1], 1, p.w) else {
                            continue;
                        };
                        let xi = (pl * p.h + iy) * p.w + ix;
                        let v = f64::from(x[xi]);
                        sum += v;
                        taps.push(xi);
                        if best.is_none_or(|(_, m)| v > m) {
                            best = Some((xi, v));
                        }
                    }
                }
                if max {
                    let (i, v) = best.expect("every window has an input");
                    y[yi] = v;
                    dx[i] += f64::from(dy[yi]);
                } else {
                    y[yi] = sum / area;
                    for i in taps {
                        dx[i] += f64::from(dy[yi]) / area;
                    }
                }
            }
        }
    }
    (y, dx)
}

fn check_pool(p: Pool2d, b: usize, seed: u64) {
    let mut rng = Rng(seed);
    let (oh, ow) = p.out_hw();
    let mut x = rng.uniform_f32(b * p.c * p.h * p.w, -1.0, 1.0);
    // Some exact ties, so "first maximum" is exercised.
    for i in (0..x.len()).step_by(3) {
        x[i] = 0.5;
    }
    let dy = rng.uniform_f32(b * p.c * oh * ow, -1.0, 1.0);
    for max in [true, false] {
        let (y_want, dx_want) = naive_pool(&p, b, &x, &dy, max);
        let mut y = vec![f32::NAN; y_want.len()];
        let mut dx = vec![f32::NAN; x.len()];
        if max {
            conv::max_pool2d(&p, b, &mut y, &x);
            conv::max_pool2d_grad(&p, b, &mut dx, &x, &dy);
        } else {
            conv::avg_pool2d(&p, b, &mut y, &x);
            conv::avg_pool2d_grad(&p, b, &mut dx, &dy);
        }
        let what = if max { "max_pool2d" } else { "avg_pool2d" };
        close(&y, &y_want, &format!("{what} {p:?}"));
        close(&dx, &dx_want, &format!("{what} grad {p:?}"));
    }
}

fn conv_geometry() -> impl Strategy<Value = (Conv2d, usize)> {
    (
        (1usize..4, 1usize..4, 1usize..3), // groups, channels/group in, out
        (1usize..9, 1usize..9, 1usize..4, 1usize..4), // h, w, kh, kw
        (
            1usize..4,
            1usize..4,
            0usize..3,
            0usize..3,
            1usize..3,
            1usize..3,
        ),
        0usize..4,
    )
        .prop_filter_map(
            "the dilated kernel must fit the padded input",
            |((groups, cg, og), (h, w, kh, kw), (sh, sw, ph, pw, dh, dw), b)| {
                let g = Conv2d {
                    c: groups * cg,
                    h,
                    w,
                    o: groups * og,
                    kh,
                    kw,
                    stride: [sh, sw],
                    padding: [ph, pw],
                    dilation: [dh, dw],
                    groups,
                };
                let (oh, ow) = g.out_hw();
                (oh > 0 && ow > 0).then_some((g, b))
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn conv2d_kernels_equal_direct_loops((g, b) in conv_geometry(), seed in any::<u64>()) {
        check_conv(g, b, seed);
    }

    #[test]
    fn pooling_kernels_equal_direct_loops(
        c in 1usize..4, h in 1usize..9, w in 1usize..9, kh in 1usize..4, kw in 1usize..4,
        sh in 1usize..4, sw in 1usize..4, ph in 0usize..2, pw in 0usize..2, b in 0usize..3,
        seed in any::<u64>(),
    ) {
        let p = Pool2d { c, h, w, kernel: [kh, kw], stride: [sh, sw],
            padding: [ph.min(kh / 2), pw.min(kw / 2)] };
        let (oh, ow) = p.out_hw();
        prop_assume!(oh > 0 && ow > 0);
        check_pool(p, b, seed);
    }

    /// The 2×2, stride-2 window has its own loops (eight windows at a time
    /// with AVX2, so widths up to 40 reach both the vector and the scalar
    /// tail); odd sizes leave a last row or column outside every window,
    /// whose gradient must be zero.
    #[test]
    fn halving_pool_equals_direct_loops(
        c in 1usize..4, h in 2usize..12, w in 2usize..40, b in 0usize..3, seed in any::<u64>(),
    ) {
        check_pool(Pool2d { c, h, w, kernel: [2, 2], stride: [2, 2], padding: [0, 0] }, b, seed);
    }
}

/// Larger layers than the property test draws, including the LeNet shapes
/// and a pointwise (1×1) convolution, which skips im2col.
#[test]
fn lenet_and_pointwise_layers() {
    let lenet1 = Conv2d {
        c: 1,
        h: 28,
        w: 28,
        o: 6,
        kh: 5,
        kw: 5,
        stride: [1, 1],
        padding: [2, 2],
        dilation: [1, 1],
        groups: 1,
    };
    check_conv(lenet1, 3, 1);
    check_conv(
        Conv2d {
            c: 6,
            h: 14,
            w: 14,
            o: 16,
            padding: [0, 0],
            ..lenet1
        },
        2,
        2,
    );
    let pw = Conv2d {
        c: 8,
        h: 5,
        w: 7,
        o: 12,
        kh: 1,
        kw: 1,
        stride: [1, 1],
        padding: [0, 0],
        dilation: [1, 1],
        groups: 4,
    };
    assert_eq!(pw.scratch_len(), 0);
    check_conv(pw, 3, 3);
    check_pool(
        Pool2d {
            c: 6,
            h: 28,
            w: 28,
            kernel: [2, 2],
            stride: [2, 2],
            padding: [0, 0],
        },
        2,
        4,
    );
}

#[test]
fn io_scratch_splits_disjoint_regions() {
    let mut ws: Vec<f32> = (0..20).map(|i| i as f32).collect();
    let ([a, b], out, scratch) = conv::io_scratch(&mut ws, (12, 3), (2, 4), [(0, 2), (16, 4)]);
    assert_eq!(a, [0.0, 1.0]);
    assert_eq!(b, [16.0, 17.0, 18.0, 19.0]);
    assert_eq!(out, [12.0, 13.0, 14.0]);
    assert_eq!(scratch, [2.0, 3.0, 4.0, 5.0]);
    let ([m], out, scratch) = conv::io_scratch(&mut ws, (0, 2), (10, 4), [(4, 6)]);
    assert_eq!(m[0], 4.0);
    assert_eq!((out.len(), scratch[0]), (2, 10.0));
}

/// Inside generated `predict` ([`nnc_runtime::kernels::parallel_gemm`])
/// the forward convolution and pooling cut the batch over the pool's
/// threads, each part with its own scratch: the outputs are the same bits
/// on 1, 2 and 3 threads (37 samples: parts of unequal length), the fused
/// epilogue sees each sample's place in the whole batch, and the result
/// matches the naive loops. Layers: LeNet's two (implicit GEMM on AVX2), a
/// strided one and a grouped one (column matrix).
#[test]
fn forward_kernels_split_over_threads_give_the_same_bits() {
    let lenet1 = Conv2d {
        c: 1,
        h: 28,
        w: 28,
        o: 6,
        kh: 5,
        kw: 5,
        stride: [1, 1],
        padding: [2, 2],
        dilation: [1, 1],
        groups: 1,
    };
    let layers = [
        lenet1,
        Conv2d {
            c: 6,
            h: 14,
            w: 14,
            o: 16,
            padding: [0, 0],
            ..lenet1
        },
        Conv2d {
            c: 4,
            h: 30,
            w: 30,
            o: 32,
            kh: 3,
            kw: 3,
            stride: [2, 2],
            padding: [1, 1],
            dilation: [1, 1],
            groups: 2,
        },
    ];
    let b = 37;
    let pool = |n: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .unwrap()
    };
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for (l, g) in layers.iter().enumerate() {
        let mut rng = Rng(10 + l as u64);
        let (oh, ow) = g.out_hw();
        let x = rng.uniform_f32(b * g.c * g.h * g.w, -1.0, 1.0);
        let w = rng.uniform_f32(g.o * g.c / g.groups * g.kh * g.kw, -1.0, 1.0);
        let dy = vec![0.0; b * g.o * oh * ow];
        let (y_want, _, _) = conv::reference::conv2d(g, b, &x, &w, &dy);
        // The epilogue adds each element's index in the batch's output.
        let y_want: Vec<f64> = y_want
            .iter()
            .enumerate()
            .map(|(i, v)| v + i as f64 * 1e-4)
            .collect();
        let run = |threads: usize| {
            let mut scratch = vec![f32::NAN; g.scratch_len()];
            let mut y = vec![f32::NAN; y_want.len()];
            pool(threads).install(|| {
                let _parallel = nnc_runtime::kernels::parallel_gemm();
                conv::conv2d_then(g, b, &mut y, &x, &w, &mut scratch, |i0, sample| {
                    for (j, v) in sample.iter_mut().enumerate() {
                        *v += (i0 + j) as f32 * 1e-4;
                    }
                });
            });
            y
        };
        let one = run(1);
        close(&one, &y_want, &format!("split conv2d {g:?}"));
        for threads in [2, 3] {
            assert_eq!(
                bits(&one),
                bits(&run(threads)),
                "{g:?} on {threads} threads"
            );
        }
    }
    let p = Pool2d {
        c: 6,
        h: 28,
        w: 28,
        kernel: [2, 2],
        stride: [2, 2],
        padding: [0, 0],
    };
    let padded = Pool2d {
        kernel: [3, 3],
        padding: [1, 1],
        ..p
    };
    for p in [p, padded] {
        let mut rng = Rng(20);
        let (oh, ow) = p.out_hw();
        let x = rng.uniform_f32(b * p.c * p.h * p.w, -1.0, 1.0);
        let dy = vec![0.0; b * p.c * oh * ow];
        for max in [true, false] {
            let run = |threads: usize| {
                let mut y = vec![f32::NAN; b * p.c * oh * ow];
                pool(threads).install(|| {
                    let _parallel = nnc_runtime::kernels::parallel_gemm();
                    if max {
                        conv::max_pool2d(&p, b, &mut y, &x);
                    } else {
                        conv::avg_pool2d(&p, b, &mut y, &x);
                    }
                });
                y
            };
            let one = run(1);
            let (y_want, _) = naive_pool(&p, b, &x, &dy, max);
            close(&one, &y_want, &format!("split pooling {p:?} (max: {max})"));
            for threads in [2, 3] {
                assert_eq!(
                    bits(&one),
                    bits(&run(threads)),
                    "{p:?} on {threads} threads"
                );
            }
        }
    }
}
