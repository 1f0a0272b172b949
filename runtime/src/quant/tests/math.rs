//! The number formats: rounding, activation parameters and calibration,
//! per-channel weight quantization, and their error bounds.

use super::*;
use proptest::prelude::{prop_assert, prop_assert_eq, proptest, Just, ProptestConfig, Strategy};

/// Slack on the `scale / 2` bounds for f32 rounding: quantization
/// multiplies by a rounded reciprocal (|error| ≤ ~2^-22 steps for values
/// within 256 steps), dequantization rounds once more.
const STEP_SLACK: f32 = 1e-4;

#[test]
fn round_even_is_round_ties_even() {
    let mut rng = Rng::new(1);
    let ties = (-600..600).map(|i| i as f32 * 0.5);
    let near = (-300..300).flat_map(|i| {
        // The neighbours of the tie (all these are positive or negative
        // away from zero, so ±1 on the bits moves in and out).
        let t = i as f32 + 0.5;
        [
            f32::from_bits(t.to_bits() - 1),
            f32::from_bits(t.to_bits() + 1),
        ]
    });
    let random = (0..20_000).map(|_| rng.uniform_f32(-4_194_304.0, 4_194_304.0));
    for x in ties.chain(near).chain(random).chain([0.0, -0.0, 4194304.0]) {
        // Equal as numbers (the sign of a zero result may differ, which
        // the zero point added next erases).
        assert_eq!(scheme::round_even(x), x.round_ties_even(), "{x}");
    }
}

#[test]
fn quantize_rounds_half_to_even_and_saturates() {
    let q = ActQuant::new(0.5, 10).unwrap();
    // x / scale = 2.5 → 2, 3.5 → 4 (half to even), then + 10.
    assert_eq!(q.quantize(1.25), 12);
    assert_eq!(q.quantize(1.75), 14);
    assert_eq!(q.quantize(-1.25), 8);
    assert_eq!(q.quantize(0.0), 10);
    assert_eq!(q.quantize(-0.0), 10);
    assert_eq!(q.quantize(1e30), 255);
    assert_eq!(q.quantize(-1e30), 0);
    assert_eq!(q.quantize(f32::INFINITY), 255);
    assert_eq!(q.quantize(f32::NEG_INFINITY), 0);
    assert_eq!(q.quantize(f32::NAN), 0);
    assert_eq!(q.dequantize(10), 0.0);
    assert_eq!(q.dequantize(255), 122.5);
    assert_eq!(q.dequantize(0), -5.0);
}

#[test]
fn act_quant_validates_its_scale() {
    for bad in [
        0.0,
        -1.0,
        f32::NAN,
        f32::INFINITY,
        1e-40,
        f32::MIN_POSITIVE / 2.0,
    ] {
        assert!(
            matches!(ActQuant::new(bad, 0), Err(QuantError::BadScale(_))),
            "{bad}"
        );
    }
    assert!(ActQuant::new(f32::MIN_POSITIVE, 3).is_ok());
    for (lo, hi) in [
        (f32::NAN, 1.0),
        (0.0, f32::INFINITY),
        (f32::NEG_INFINITY, 0.0),
    ] {
        assert!(matches!(
            ActQuant::from_min_max(lo, hi),
            Err(QuantError::NotFinite { .. })
        ));
    }
}

#[test]
fn calibration_ranges_include_zero() {
    let q = ActQuant::from_min_max(0.0, 0.0).unwrap();
    assert_eq!((q.scale(), q.zero_point()), (1.0, 0));
    // Post-ReLU: all of [0, 255] for the positive range.
    let q = ActQuant::from_min_max(0.5, 2.55).unwrap();
    assert_eq!(q.zero_point(), 0);
    assert!((q.scale() - 0.01).abs() < 1e-8);
    assert_eq!(q.quantize(2.55), 255);
    // Only negative values: zero at the top.
    let q = ActQuant::from_min_max(-3.0, -1.0).unwrap();
    assert_eq!(q.zero_point(), 255);
    // The whole f32 range does not overflow.
    let q = ActQuant::from_min_max(f32::MIN, f32::MAX).unwrap();
    assert!(q.scale().is_finite() && (127..=128).contains(&q.zero_point()));
    assert_eq!(q.dequantize(q.quantize(0.0)), 0.0);
    // Tiny ranges keep a normal scale.
    let q = ActQuant::from_min_max(0.0, 1e-42).unwrap();
    assert!(q.scale().is_normal() && q.inv_scale().is_finite());
}

#[test]
fn min_max_observes_merges_and_ignores_nan() {
    let mut s = MinMax::new();
    assert_eq!(s.act_quant().unwrap(), ActQuant::new(1.0, 0).unwrap());
    let xs: Vec<f32> = (0..37).map(|i| (i as f32 - 20.0) * 0.25).collect();
    s.observe(&xs);
    s.observe(&[f32::NAN]);
    assert_eq!((s.min(), s.max()), (-5.0, 4.0));
    let mut t = MinMax::default();
    t.observe(&[7.5, f32::NAN, -1.0]);
    s.merge(&t);
    assert_eq!((s.min(), s.max()), (-5.0, 7.5));
    let q = s.act_quant().unwrap();
    assert_eq!(q, ActQuant::from_min_max(-5.0, 7.5).unwrap());
    s.observe(&[f32::INFINITY]);
    assert!(s.act_quant().is_err());
}

#[test]
fn bulk_quantization_matches_the_scalar_formula() {
    let mut rng = Rng::new(2);
    let q = ActQuant::from_min_max(-1.3, 2.9).unwrap();
    // Lengths around the 8- and 32-lane vector widths, plus specials.
    for len in [0, 1, 7, 8, 9, 31, 32, 33, 1000] {
        let mut x: Vec<f32> = (0..len).map(|_| rng.uniform_f32(-2.0, 4.0)).collect();
        if len > 8 {
            x[..5].copy_from_slice(&[f32::NAN, f32::INFINITY, -f32::INFINITY, 0.0, -0.0]);
        }
        let mut out = vec![0u8; len];
        quantize_u8(q, &x, &mut out);
        let want: Vec<u8> = x.iter().map(|&v| q.quantize(v)).collect();
        assert_eq!(out, want, "len {len}");
        let mut back = vec![0.0; len];
        dequantize_u8(q, &out, &mut back);
        let want: Vec<f32> = out.iter().map(|&b| q.dequantize(b)).collect();
        assert_eq!(back, want);
    }
    // Exact halves (x / scale = k + 1/2) round to even, and both clamps.
    let q = ActQuant::new(0.5, 10).unwrap();
    let x: Vec<f32> = (-600..600).map(|k| k as f32 / 4.0).collect();
    let mut out = vec![0u8; x.len()];
    quantize_u8(q, &x, &mut out);
    let want: Vec<u8> = x.iter().map(|&v| q.quantize(v)).collect();
    assert_eq!(out, want);
    assert_eq!(q.quantize(0.75), 12, "1.5 rounds to 2");
    assert_eq!(q.quantize(1.25), 12, "2.5 rounds to 2");
}

#[test]
#[should_panic(expected = "quantize_u8")]
fn bulk_quantization_checks_lengths() {
    quantize_u8(ActQuant::new(1.0, 0).unwrap(), &[1.0; 3], &mut [0; 2]);
}

#[test]
fn dense_weights_quantize_per_output_column() {
    // Exact binary fractions: column 0 has scale 1/8, column 1 1/64,
    // column 2 is zero (scale 1).
    let w = [
        7.875, 0.984375, 0.0, -3.9375, -0.984375, 0.0, 0.125, 0.3125, 0.0,
    ];
    let q = QuantWeights::dense(&w, 3, 3).unwrap();
    assert_eq!(q.layout(), WeightLayout::InOut);
    assert_eq!((q.depth(), q.channels()), (3, 3));
    assert_eq!(q.scales(), &[0.125, 0.015625, 1.0]);
    // -31.5 rounds half to even.
    assert_eq!(q.values(), &[63, 63, 0, -32, -63, 0, 1, 20, 0]);
    assert_eq!(q.get(1, 0), -32);
    assert_eq!(q.dequantize()[3], -4.0);
}

#[test]
fn conv_weights_quantize_per_output_channel() {
    // Two output channels of four taps: [O, C, KH, KW] = [2, 1, 2, 2].
    let w = [1.0, -2.0, 0.5, 0.25, 0.0, 0.0, 0.03, -0.063];
    let q = QuantWeights::conv(&w, 2).unwrap();
    assert_eq!(q.layout(), WeightLayout::OutIn);
    assert_eq!((q.depth(), q.channels()), (4, 2));
    assert_eq!(q.values()[1], -63);
    assert_eq!(q.values()[7], -63);
    assert_eq!(q.get(3, 1), -63);
    assert!((q.scales()[1] - 0.001).abs() < 1e-9);
    assert!(matches!(
        QuantWeights::conv(&w, 3),
        Err(QuantError::NotMultiple { .. })
    ));
    assert!(matches!(
        QuantWeights::conv(&[1.0, f32::NAN], 1),
        Err(QuantError::NotFinite { .. })
    ));
    assert!(matches!(
        QuantWeights::dense(&w, 3, 3),
        Err(QuantError::Length { .. })
    ));
}

#[test]
fn stored_weights_must_be_seven_bit() {
    let ok = QuantWeights::from_parts(vec![63, -63, 0, 5], vec![0.5, 2.0], WeightLayout::InOut);
    assert!(ok.is_ok());
    for bad in [64i8, -64, 127, -127, -128] {
        let r = QuantWeights::from_parts(vec![0, bad], vec![1.0], WeightLayout::OutIn);
        assert_eq!(
            r,
            Err(QuantError::WeightOutOfRange {
                index: 1,
                value: bad
            })
        );
    }
    for scale in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        let r = QuantWeights::from_parts(vec![1, 2], vec![1.0, scale], WeightLayout::InOut);
        assert!(matches!(
            r,
            Err(QuantError::BadWeightScale { channel: 1, .. })
        ));
    }
    let r = QuantWeights::from_parts(vec![1, 2, 3], vec![1.0, 1.0], WeightLayout::InOut);
    assert!(matches!(r, Err(QuantError::NotMultiple { .. })));
    let (values, scales) = ok.unwrap().into_parts();
    assert_eq!((values.len(), scales.len()), (4, 2));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    /// Every value of the calibration range (widened to 0) comes back
    /// within half a step, and 0 comes back exactly.
    #[test]
    fn activation_round_trip_within_half_a_step(
        lo in -1e3f32..1e3,
        width in 1e-3f32..2e3,
        ts in proptest::collection::vec(0.0f32..=1.0, 1..64),
    ) {
        let hi = lo + width;
        let q = ActQuant::from_min_max(lo, hi).unwrap();
        prop_assert_eq!(q.dequantize(q.quantize(0.0)), 0.0);
        let (a, b) = (lo.min(0.0), hi.max(0.0));
        for t in ts.into_iter().chain([0.0, 1.0]) {
            let x = (a + t * (b - a)).clamp(a, b);
            let err = (q.dequantize(q.quantize(x)) - x).abs();
            prop_assert!(
                err <= q.scale() * (0.5 + STEP_SLACK),
                "x {} in [{}, {}]: error {} > scale {} / 2", x, a, b, err, q.scale()
            );
        }
    }

    /// Every weight comes back within half its channel's step, values stay
    /// 7-bit, and each channel's largest magnitude uses the full range.
    #[test]
    fn weight_round_trip_within_half_a_step(
        (k, n, w) in (1usize..20, 1usize..12).prop_flat_map(|(k, n)| {
            (Just(k), Just(n), proptest::collection::vec(-50.0f32..50.0, k * n))
        }),
    ) {
        for q in [QuantWeights::dense(&w, k, n).unwrap(), QuantWeights::conv(&w, n).unwrap()] {
            let deq = q.dequantize();
            let channel = |i: usize| match q.layout() {
                WeightLayout::InOut => i % n,
                WeightLayout::OutIn => i / k,
            };
            for (i, (&x, &d)) in w.iter().zip(&deq).enumerate() {
                let s = q.scales()[channel(i)];
                prop_assert!((d - x).abs() <= s * (0.5 + STEP_SLACK), "{} vs {}, scale {}", x, d, s);
                prop_assert!(q.values()[i].unsigned_abs() <= 63);
            }
            for c in 0..n {
                let top = (0..k).map(|p| q.get(p, c).unsigned_abs()).max().unwrap();
                let nonzero = (0..w.len()).any(|i| channel(i) == c && w[i] != 0.0);
                prop_assert!(top == 63 || !nonzero);
            }
        }
    }
}
