//! The int8 convolution against a direct integer convolution (exact), and
//! against the f32 convolution of the dequantized operands (semantics:
//! padding is the real 0).

use super::super::conv::conv2d_with;
use super::*;
use crate::gemm::Parallelism;
use nnc_spec::Conv2d;

/// `(c, h, w, o, kh, kw, stride, padding, dilation, groups)`.
type Geo = (
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    [usize; 2],
    [usize; 2],
    [usize; 2],
    usize,
);

const GEOMETRIES: &[Geo] = &[
    // LeNet's first layer.
    (1, 28, 28, 6, 5, 5, [1, 1], [0, 0], [1, 1], 1),
    // Strided and padded.
    (3, 9, 7, 8, 3, 3, [2, 2], [1, 1], [1, 1], 1),
    // Dilated, grouped, padding wider than the dilated reach.
    (4, 8, 8, 6, 3, 3, [1, 1], [2, 2], [2, 2], 2),
    // Pointwise, grouped (the patch matrix is a transpose).
    (6, 5, 5, 6, 1, 1, [1, 1], [0, 0], [1, 1], 3),
    // More than one 16-channel panel, anisotropic everything.
    (2, 6, 6, 20, 2, 3, [2, 1], [0, 1], [1, 2], 1),
];

fn geometry(&(c, h, w, o, kh, kw, stride, padding, dilation, groups): &Geo) -> Conv2d {
    Conv2d {
        c,
        h,
        w,
        o,
        kh,
        kw,
        stride,
        padding,
        dilation,
        groups,
    }
}

/// The exact accumulators, `[b, O, OH, OW]`, by direct convolution: taps in
/// the padding hold the zero point and contribute nothing.
fn reference(g: &Conv2d, b: usize, x: &[u8], zp: u8, q: &QuantWeights) -> Vec<i64> {
    let (oh, ow) = g.out_hw();
    let (cg, og) = (g.cg(), g.og());
    let mut y = vec![0i64; b * g.o * oh * ow];
    let tap = |o: usize, s: usize, k: usize, p: usize, d: usize, n: usize| {
        (o * s + k * d).checked_sub(p).filter(|&i| i < n)
    };
    for n in 0..b {
        for o in 0..g.o {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut s = 0i64;
                    for ci in 0..cg {
                        let c = o / og * cg + ci;
                        for ki in 0..g.kh {
                            let Some(iy) =
                                tap(oy, g.stride[0], ki, g.padding[0], g.dilation[0], g.h)
                            else {
                                continue;
                            };
                            for kj in 0..g.kw {
                                let Some(ix) =
                                    tap(ox, g.stride[1], kj, g.padding[1], g.dilation[1], g.w)
                                else {
                                    continue;
                                };
                                let xv = i64::from(x[((n * g.c + c) * g.h + iy) * g.w + ix])
                                    - i64::from(zp);
                                let wv = q.get((ci * g.kh + ki) * g.kw + kj, o);
                                s += xv * i64::from(wv);
                            }
                        }
                    }
                    y[((n * g.o + o) * oh + oy) * ow + ox] = s;
                }
            }
        }
    }
    y
}

#[test]
fn conv_accumulators_are_exact_and_outputs_match_f32() {
    let mut rng = Rng::new(20);
    for geo in GEOMETRIES {
        let g = geometry(geo);
        let b = 2;
        let (oh, ow) = g.out_hw();
        let x = bytes(&mut rng, b * g.c * g.h * g.w);
        let xq = ActQuant::new(0.02, rng.below(256) as u8).unwrap();
        let wf: Vec<f32> = (0..g.o * g.k())
            .map(|_| rng.uniform_f32(-0.5, 0.5))
            .collect();
        let q = QuantWeights::conv(&wf, g.o).unwrap();
        let w = PackedConv::new(&g, &q).unwrap();
        let bias: Vec<f32> = (0..g.o).map(|_| rng.uniform_f32(-1.0, 1.0)).collect();
        let want = reference(&g, b, &x, xq.zero_point(), &q);
        let len = b * g.o * oh * ow;
        let mut scratch = vec![0xEEu8; conv_scratch_len(&g)];
        let ep = Epilogue {
            bias: Some(&bias),
            relu: false,
        };
        for isa in Isa::all() {
            let label = format!("{isa:?} {g:?}");
            let par = Parallelism::Sequential;
            let mut yi = vec![0i32; len];
            conv2d_with(
                isa,
                par,
                &g,
                b,
                &x,
                xq,
                &w,
                Output::I32(&mut yi),
                Channels::First,
                &mut scratch,
            )
            .unwrap();
            for (i, (&got, &want)) in yi.iter().zip(&want).enumerate() {
                assert_eq!(i64::from(got), want, "{label}: element {i}");
            }
            let mut yf = vec![0.0f32; len];
            conv2d_with(
                isa,
                par,
                &g,
                b,
                &x,
                xq,
                &w,
                Output::F32(&mut yf, ep),
                Channels::First,
                &mut scratch,
            )
            .unwrap();
            let plane = oh * ow;
            for (i, &got) in yf.iter().enumerate() {
                let o = i / plane % g.o;
                let (y, mag) = reference_f32(want[i], xq.scale(), q.scales()[o], bias[o], false);
                let err = (f64::from(got) - y).abs();
                assert!(
                    err <= f32_tolerance(mag),
                    "{label}: element {i}: {got} vs {y}"
                );
            }
            let next = ActQuant::from_min_max(-2.0, 2.0).unwrap();
            let mut yu = vec![0u8; len];
            conv2d_with(
                isa,
                par,
                &g,
                b,
                &x,
                xq,
                &w,
                Output::U8(&mut yu, ep, next),
                Channels::First,
                &mut scratch,
            )
            .unwrap();
            let requant: Vec<u8> = yf.iter().map(|&v| next.quantize(v)).collect();
            assert_eq!(yu, requant, "{label}");
        }
        // Semantics: the f32 convolution of the dequantized operands.
        let xd: Vec<f32> = x.iter().map(|&v| xq.dequantize(v)).collect();
        let wd = q.dequantize();
        let mut yref = vec![0.0f32; len];
        let mut fscratch = vec![0.0f32; g.scratch_len()];
        crate::conv::conv2d(&g, b, &mut yref, &xd, &wd, &mut fscratch);
        let mut yf = vec![0.0f32; len];
        let out = Output::F32(&mut yf, Epilogue::default());
        conv2d(
            Parallelism::Sequential,
            &g,
            b,
            &x,
            xq,
            &w,
            out,
            &mut scratch,
        )
        .unwrap();
        for (i, (&a, &r)) in yf.iter().zip(&yref).enumerate() {
            assert!(
                (a - r).abs() <= 1e-4 * (1.0 + r.abs()),
                "{g:?}: element {i}: {a} vs {r}"
            );
        }
    }
}

/// `[b, C, H, W]` to `[b, H, W, C]`.
pub(super) fn to_last<T: Copy>(x: &[T], b: usize, c: usize, hw: usize) -> Vec<T> {
    let mut y = x.to_vec();
    for n in 0..b {
        for ci in 0..c {
            for p in 0..hw {
                y[(n * hw + p) * c + ci] = x[(n * c + ci) * hw + p];
            }
        }
    }
    y
}

/// Channels-last inputs and outputs, every combination: the same exact
/// accumulators and requantized bytes as the channels-first convolution,
/// transposed.
#[test]
fn channels_last_conv_is_the_transposed_conv() {
    let mut rng = Rng::new(22);
    let mut geometries = GEOMETRIES.to_vec();
    // LeNet's second layer (a 30-byte kernel row), and kernel rows of 17
    // and 16 bytes (the 16-byte moves' edges), with more channels than a
    // panel.
    geometries.push((6, 14, 14, 16, 5, 5, [1, 1], [0, 0], [1, 1], 1));
    geometries.push((17, 6, 5, 20, 3, 1, [1, 1], [1, 0], [1, 1], 1));
    geometries.push((8, 7, 7, 6, 2, 2, [2, 1], [1, 1], [1, 1], 2));
    for geo in &geometries {
        let g = geometry(geo);
        let b = 3;
        let (oh, ow) = g.out_hw();
        let x = bytes(&mut rng, b * g.c * g.h * g.w);
        let xq = ActQuant::new(0.03, rng.below(256) as u8).unwrap();
        let wf: Vec<f32> = (0..g.o * g.k())
            .map(|_| rng.uniform_f32(-0.5, 0.5))
            .collect();
        let q = QuantWeights::conv(&wf, g.o).unwrap();
        let want = reference(&g, b, &x, xq.zero_point(), &q);
        let bias: Vec<f32> = (0..g.o).map(|_| rng.uniform_f32(-1.0, 1.0)).collect();
        let ep = Epilogue {
            bias: Some(&bias),
            relu: true,
        };
        let next = ActQuant::from_min_max(-1.0, 3.0).unwrap();
        let len = b * g.o * oh * ow;
        let mut scratch = vec![0xEEu8; conv_scratch_len(&g)];
        let mut want_u8 = vec![0u8; len];
        let first = PackedConv::new(&g, &q).unwrap();
        conv2d(
            Parallelism::Sequential,
            &g,
            b,
            &x,
            xq,
            &first,
            Output::U8(&mut want_u8, ep, next),
            &mut scratch,
        )
        .unwrap();
        let x_last = to_last(&x, b, g.c, g.h * g.w);
        for isa in Isa::all() {
            for (input, out_layout) in [
                (Channels::First, Channels::Last),
                (Channels::Last, Channels::First),
                (Channels::Last, Channels::Last),
            ] {
                let label = format!("{isa:?} {input:?} -> {out_layout:?} {g:?}");
                let w = PackedConv::for_input(&g, &q, input).unwrap();
                assert_eq!(w.input(), input);
                let xin = if input == Channels::Last { &x_last } else { &x };
                let fix = |y: Vec<i64>| match out_layout {
                    Channels::Last => to_last(&y, b, g.o, oh * ow),
                    Channels::First => y,
                };
                let par = Parallelism::Sequential;
                let mut yi = vec![0i32; len];
                let out = Output::I32(&mut yi);
                conv2d_with(isa, par, &g, b, xin, xq, &w, out, out_layout, &mut scratch).unwrap();
                let yi: Vec<i64> = yi.into_iter().map(i64::from).collect();
                assert_eq!(yi, fix(want.clone()), "{label}");
                let mut yu = vec![0u8; len];
                let out = Output::U8(&mut yu, ep, next);
                conv2d_with(isa, par, &g, b, xin, xq, &w, out, out_layout, &mut scratch).unwrap();
                let want_u8 = match out_layout {
                    Channels::Last => to_last(&want_u8, b, g.o, oh * ow),
                    Channels::First => want_u8.clone(),
                };
                assert_eq!(yu, want_u8, "{label}");
            }
        }
    }
}

/// Layers of one input channel run the direct kernel on the x86 families
/// (pixels in the lanes) and the GEMM on the portable one: exact
/// accumulators against the reference, and the same f32 and u8 bits as the
/// GEMM, in both output layouts; every lane shape (1–4 registers, 1 or 2
/// quads per kernel row) and groups of pixels cut by the row's end.
#[test]
fn direct_conv_is_exact_and_bit_identical_to_the_gemm() {
    let direct: &[Geo] = &[
        // LeNet's first layer: 4 pixels × 6 channels in 3 registers.
        (1, 28, 28, 6, 5, 5, [1, 1], [2, 2], [1, 1], 1),
        // 8 pixels × 3 channels, rows of 6 pixels (only a partial group).
        (1, 7, 9, 3, 3, 4, [1, 1], [1, 0], [1, 1], 1),
        // 1 pixel × 16 channels, 2 registers.
        (1, 5, 6, 16, 2, 2, [1, 1], [0, 1], [1, 1], 1),
        // 8 channels, kernel rows of 8 taps (2 full quads).
        (1, 9, 11, 8, 5, 8, [1, 1], [2, 3], [1, 1], 1),
        // 1 channel: 8 pixels per register, rows of 9 (a partial group).
        (1, 6, 13, 1, 3, 5, [1, 1], [0, 0], [1, 1], 1),
        // Pointwise.
        (1, 4, 4, 4, 1, 1, [1, 1], [0, 0], [1, 1], 1),
        // 2 pixels × 12 channels, kernel rows of 7 taps.
        (1, 10, 30, 12, 3, 7, [1, 1], [1, 3], [1, 1], 1),
        // 32 channels: 4 registers.
        (1, 8, 8, 32, 3, 3, [1, 1], [1, 1], [1, 1], 1),
        // 4 pixels × 2 channels, rows of 6 (a full and a partial group).
        (1, 6, 7, 2, 2, 6, [1, 1], [0, 2], [1, 1], 1),
    ];
    let gemm_only: &[Geo] = &[
        // 5 channels (5 registers), stride 2, kernel rows of 9, 2 channels.
        (1, 8, 8, 5, 3, 3, [1, 1], [1, 1], [1, 1], 1),
        (1, 8, 8, 6, 3, 3, [2, 2], [1, 1], [1, 1], 1),
        (1, 8, 12, 6, 3, 9, [1, 1], [1, 1], [1, 1], 1),
        (2, 8, 8, 6, 3, 3, [1, 1], [1, 1], [1, 1], 1),
    ];
    let mut rng = Rng::new(23);
    for geo in gemm_only {
        let g = geometry(geo);
        let q = QuantWeights::conv(&vec![0.25; g.o * g.k()], g.o).unwrap();
        assert!(!PackedConv::new(&g, &q).unwrap().is_direct(), "{g:?}");
    }
    for geo in direct {
        let g = geometry(geo);
        let b = 3;
        let (oh, ow) = g.out_hw();
        let len = b * g.o * oh * ow;
        let x = bytes(&mut rng, b * g.h * g.w);
        let xq = ActQuant::new(0.02, rng.below(256) as u8).unwrap();
        let wf: Vec<f32> = (0..g.o * g.k())
            .map(|_| rng.uniform_f32(-0.5, 0.5))
            .collect();
        let q = QuantWeights::conv(&wf, g.o).unwrap();
        let bias: Vec<f32> = (0..g.o).map(|_| rng.uniform_f32(-1.0, 1.0)).collect();
        let next = ActQuant::from_min_max(-1.0, 3.0).unwrap();
        let want = reference(&g, b, &x, xq.zero_point(), &q);
        let mut scratch = vec![0xEEu8; conv_scratch_len(&g)];
        // Without ReLU the epilogue's clamp at the bottom of the byte range
        // and its negative reals are compared too.
        for (relu, input) in [true, false]
            .into_iter()
            .flat_map(|r| [(r, Channels::First), (r, Channels::Last)])
        {
            let ep = Epilogue {
                bias: Some(&bias),
                relu,
            };
            let w = PackedConv::for_input(&g, &q, input).unwrap();
            assert!(w.is_direct(), "{g:?}");
            for out_layout in [Channels::First, Channels::Last] {
                let fix = |y: Vec<i64>| match out_layout {
                    Channels::Last => to_last(&y, b, g.o, oh * ow),
                    Channels::First => y,
                };
                let want = fix(want.clone());
                let par = Parallelism::Sequential;
                let mut run = |isa, out: Output<'_>| {
                    conv2d_with(isa, par, &g, b, &x, xq, &w, out, out_layout, &mut scratch).unwrap()
                };
                let (mut gemm_f, mut gemm_u) = (vec![0.0f32; len], vec![0u8; len]);
                run(Isa::Portable, Output::F32(&mut gemm_f, ep));
                run(Isa::Portable, Output::U8(&mut gemm_u, ep, next));
                for isa in Isa::all() {
                    let label = format!("{isa:?} {input:?} -> {out_layout:?} relu {relu} {g:?}");
                    let mut yi = vec![0i32; len];
                    run(isa, Output::I32(&mut yi));
                    let yi: Vec<i64> = yi.into_iter().map(i64::from).collect();
                    assert_eq!(yi, want, "{label}");
                    let mut yf = vec![0.0f32; len];
                    run(isa, Output::F32(&mut yf, ep));
                    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&yf), bits(&gemm_f), "{label}");
                    let mut yu = vec![0u8; len];
                    run(isa, Output::U8(&mut yu, ep, next));
                    assert_eq!(yu, gemm_u, "{label}");
                }
            }
        }
    }
}

/// Splitting a convolution's products over threads changes no bit.
#[test]
fn conv_thread_count_does_not_change_bits() {
    let mut rng = Rng::new(21);
    let g = geometry(&(8, 40, 40, 40, 3, 3, [1, 1], [1, 1], [1, 1], 1));
    let x = bytes(&mut rng, g.c * g.h * g.w);
    let xq = ActQuant::new(0.05, 7).unwrap();
    let wf: Vec<f32> = (0..g.o * g.k())
        .map(|_| rng.uniform_f32(-1.0, 1.0))
        .collect();
    let w = PackedConv::from_f32(&g, &wf).unwrap();
    let mut scratch = vec![0u8; conv_scratch_len(&g)];
    let len = g.o * 40 * 40;
    let run = |par, scratch: &mut [u8]| {
        let mut y = vec![0.0f32; len];
        let out = Output::F32(
            &mut y,
            Epilogue {
                bias: None,
                relu: true,
            },
        );
        conv2d(par, &g, 1, &x, xq, &w, out, scratch).unwrap();
        y.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    };
    let seq = run(Parallelism::Sequential, &mut scratch);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap();
    pool.install(|| assert_eq!(run(Parallelism::Rayon(0), &mut scratch), seq));
    // The implicit GEMM of the channels-last input (its rows split too).
    let q = QuantWeights::conv(&wf, g.o).unwrap();
    let w = PackedConv::for_input(&g, &q, Channels::Last).unwrap();
    assert!(w.is_implicit());
    let x_last = to_last(&x, 1, g.c, g.h * g.w);
    let mut run_last = |par| {
        let mut y = vec![0.0f32; len];
        let ep = Epilogue {
            bias: None,
            relu: true,
        };
        let out = Output::F32(&mut y, ep);
        let first = Channels::First;
        conv2d_layout(par, &g, 1, &x_last, xq, &w, out, first, &mut scratch).unwrap();
        y.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    };
    assert_eq!(run_last(Parallelism::Sequential), seq);
    pool.install(|| assert_eq!(run_last(Parallelism::Rayon(0)), seq));
}

#[test]
fn conv_rejects_mismatched_operands() {
    let g = geometry(&GEOMETRIES[1]);
    let (oh, ow) = g.out_hw();
    let wf = vec![0.1f32; g.o * g.k()];
    let w = PackedConv::from_f32(&g, &wf).unwrap();
    let xq = ActQuant::new(0.1, 0).unwrap();
    let x = vec![0u8; g.c * g.h * g.w];
    let mut y = vec![0i32; g.o * oh * ow];
    let mut scratch = vec![0u8; conv_scratch_len(&g)];
    let seq = Parallelism::Sequential;
    let r = conv2d(
        seq,
        &g,
        1,
        &x[1..],
        xq,
        &w,
        Output::I32(&mut y),
        &mut scratch,
    );
    assert!(matches!(r, Err(QuantError::Length { .. })), "{r:?}");
    let r = conv2d(
        seq,
        &g,
        1,
        &x,
        xq,
        &w,
        Output::I32(&mut y[1..]),
        &mut scratch,
    );
    assert!(matches!(r, Err(QuantError::Length { .. })), "{r:?}");
    let r = conv2d(
        seq,
        &g,
        1,
        &x,
        xq,
        &w,
        Output::I32(&mut y),
        &mut scratch[1..],
    );
    assert!(matches!(r, Err(QuantError::Operand { .. })), "{r:?}");
    let other = Conv2d {
        stride: [1, 1],
        ..g
    };
    let r = conv2d(
        seq,
        &other,
        1,
        &x,
        xq,
        &w,
        Output::I32(&mut y),
        &mut scratch,
    );
    assert!(matches!(r, Err(QuantError::Geometry(_))), "{r:?}");
    let dense = QuantWeights::dense(&wf, g.k(), g.o).unwrap();
    assert!(matches!(
        PackedConv::new(&g, &dense),
        Err(QuantError::Geometry(_))
    ));
    let bad = Conv2d { groups: 2, ..g };
    assert!(matches!(
        PackedConv::from_f32(&bad, &wf),
        Err(QuantError::Geometry(_))
    ));
    let bias = [0.0f32; 3];
    let mut yf = vec![0.0f32; g.o * oh * ow];
    let ep = Epilogue {
        bias: Some(&bias),
        relu: false,
    };
    let r = conv2d(
        seq,
        &g,
        1,
        &x,
        xq,
        &w,
        Output::F32(&mut yf, ep),
        &mut scratch,
    );
    assert!(
        matches!(r, Err(QuantError::Length { what: "bias", .. })),
        "{r:?}"
    );
    // A batch of 0 is a no-op.
    conv2d(seq, &g, 0, &[], xq, &w, Output::I32(&mut []), &mut scratch).unwrap();
}

/// Channels-last inputs of one group read their patch rows in place (the
/// implicit GEMM: kernel rows padded to whole quads by zero weights, over
/// bytes of the next pixels): on random shapes (kernel rows of 1–45 bytes,
/// multiples of 4 or not; strides, padding, dilation down the height;
/// 1–40 channels, so short panels and several; tiles cut at every height),
/// exact accumulators against the reference and the same f32 and u8 bits
/// as the patch-matrix GEMM of the channels-first input, in both output
/// layouts, for every family and split over threads.
#[test]
fn implicit_conv_is_exact_on_random_shapes() {
    let mut rng = Rng::new(34);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap();
    for case in 0..60 {
        // The first case is LeNet's second layer.
        let geo: Geo = if case == 0 {
            (6, 14, 14, 16, 5, 5, [1, 1], [0, 0], [1, 1], 1)
        } else {
            let mut pick = |n: u64| rng.below(n) as usize;
            let (kh, kw) = (1 + pick(5), 1 + pick(5));
            let (sh, sw, dh) = (1 + pick(2), 1 + pick(2), 1 + pick(2));
            let (ph, pw) = (pick(3), pick(3));
            let (c, o) = (1 + pick(9), 1 + pick(40));
            let h = (kh - 1) * dh + 1 + pick(8);
            let w = kw + pick(9);
            (c, h, w, o, kh, kw, [sh, sw], [ph, pw], [dh, 1], 1)
        };
        let g = geometry(&geo);
        let b = 2;
        let (oh, ow) = g.out_hw();
        let len = b * g.o * oh * ow;
        let x = bytes(&mut rng, b * g.c * g.h * g.w);
        let xq = ActQuant::new(0.02, rng.below(256) as u8).unwrap();
        let wf: Vec<f32> = (0..g.o * g.k())
            .map(|_| rng.uniform_f32(-0.5, 0.5))
            .collect();
        let q = QuantWeights::conv(&wf, g.o).unwrap();
        let bias: Vec<f32> = (0..g.o).map(|_| rng.uniform_f32(-1.0, 1.0)).collect();
        let next = ActQuant::from_min_max(-1.0, 3.0).unwrap();
        let want = reference(&g, b, &x, xq.zero_point(), &q);
        let x_last = to_last(&x, b, g.c, g.h * g.w);
        let mut scratch = vec![0xEEu8; conv_scratch_len(&g)];
        let first = PackedConv::new(&g, &q).unwrap();
        let last = PackedConv::for_input(&g, &q, Channels::Last).unwrap();
        assert!(last.is_implicit() && !first.is_implicit(), "{g:?}");
        for relu in [true, false] {
            let ep = Epilogue {
                bias: Some(&bias),
                relu,
            };
            for out_layout in [Channels::First, Channels::Last] {
                let fix = |y: Vec<i64>| match out_layout {
                    Channels::Last => to_last(&y, b, g.o, oh * ow),
                    Channels::First => y,
                };
                let want = fix(want.clone());
                let seq = Parallelism::Sequential;
                let mut run = |isa, par, implicit: bool, out: Output<'_>| {
                    let (w, xin) = if implicit {
                        (&last, &x_last)
                    } else {
                        (&first, &x)
                    };
                    conv2d_with(isa, par, &g, b, xin, xq, w, out, out_layout, &mut scratch).unwrap()
                };
                let (mut gemm_f, mut gemm_u) = (vec![0.0f32; len], vec![0u8; len]);
                run(Isa::Portable, seq, false, Output::F32(&mut gemm_f, ep));
                run(Isa::Portable, seq, false, Output::U8(&mut gemm_u, ep, next));
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                for isa in Isa::all() {
                    let label = format!("{isa:?} -> {out_layout:?} relu {relu} {g:?}");
                    let mut yi = vec![0i32; len];
                    run(isa, seq, true, Output::I32(&mut yi));
                    let yi: Vec<i64> = yi.into_iter().map(i64::from).collect();
                    assert_eq!(yi, want, "{label}");
                    let mut yf = vec![0.0f32; len];
                    run(isa, seq, true, Output::F32(&mut yf, ep));
                    assert_eq!(bits(&yf), bits(&gemm_f), "{label}");
                    let mut yu = vec![0u8; len];
                    pool.install(|| {
                        run(
                            isa,
                            Parallelism::Rayon(0),
                            true,
                            Output::U8(&mut yu, ep, next),
                        )
                    });
                    assert_eq!(yu, gemm_u, "{label} (threads)");
                }
            }
        }
    }
}
