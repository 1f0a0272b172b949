//! The augmentations against reference implementations written from their
//! definitions (zero padding and cropping, mirrored indices, the bilinear
//! weights' closed form), and the seeding of [`Augmenter`].

use std::borrow::Cow;

use super::*;
use crate::data::{Binding, Column, Dataset};
use crate::model::InputSpec;

fn random_image(g: Image, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..g.len()).map(|_| rng.uniform_f32(-1.0, 1.0)).collect()
}

fn bits(xs: &[f32]) -> Vec<u32> {
    xs.iter().map(|x| x.to_bits()).collect()
}

/// Pads every plane with `pad` zeros on each side, then crops the original
/// size with its top-left corner at `(pad + dy, pad + dx)`.
fn pad_and_crop(src: &[f32], g: Image, pad: usize, dy: i64, dx: i64) -> Vec<f32> {
    let (ph, pw) = (g.height + 2 * pad, g.width + 2 * pad);
    let mut out = Vec::with_capacity(g.len());
    for plane in src.chunks_exact(g.plane()) {
        let mut padded = vec![0.0f32; ph * pw];
        for y in 0..g.height {
            for x in 0..g.width {
                padded[(y + pad) * pw + x + pad] = plane[y * g.width + x];
            }
        }
        let (top, left) = ((pad as i64 + dy) as usize, (pad as i64 + dx) as usize);
        for y in 0..g.height {
            out.extend_from_slice(&padded[(top + y) * pw + left..(top + y) * pw + left + g.width]);
        }
    }
    out
}

#[test]
fn a_shift_equals_cropping_the_zero_padded_image() {
    let g = Image {
        channels: 2,
        height: 5,
        width: 7,
    };
    let src = random_image(g, 1);
    let pad = 8;
    let mut img = vec![f32::NAN; g.len()];
    for dy in -8..=8 {
        for dx in -8..=8 {
            shift(&src, &mut img, g, dy, dx);
            assert_eq!(
                bits(&img),
                bits(&pad_and_crop(&src, g, pad, dy, dx)),
                "shift ({dy}, {dx})"
            );
        }
    }
    shift(&src, &mut img, g, 0, 0);
    assert_eq!(bits(&img), bits(&src));
}

#[test]
fn a_flip_mirrors_every_row_and_twice_is_the_identity() {
    let g = Image {
        channels: 3,
        height: 4,
        width: 5,
    };
    let src = random_image(g, 2);
    let mut img = src.clone();
    flip_horizontal(&mut img, g);
    for c in 0..3 {
        for y in 0..4 {
            for x in 0..5 {
                let at = |x: usize| c * 20 + y * 5 + x;
                assert_eq!(img[at(x)].to_bits(), src[at(4 - x)].to_bits());
            }
        }
    }
    flip_horizontal(&mut img, g);
    assert_eq!(bits(&img), bits(&src));
}

#[test]
fn rotation_by_zero_copies_and_by_quarter_turns_permutes_a_square() {
    for side in [4, 5] {
        let g = Image {
            channels: 2,
            height: side,
            width: side,
        };
        let src = random_image(g, side as u64);
        let mut img = vec![f32::NAN; g.len()];
        rotate(&src, &mut img, g, 0.0);
        assert_eq!(bits(&img), bits(&src), "0° on {side}×{side}");
        // img(y, x) = src(y', x') for each quarter turn (cos and sin are
        // not exactly 0 and ±1 in floating point: equal to rounding).
        let n = side - 1;
        type Source = fn(usize, usize, usize) -> (usize, usize);
        let turns: [(f64, Source); 3] = [
            (90.0, |n, y, x| (n - x, y)),
            (-90.0, |n, y, x| (x, n - y)),
            (180.0, |n, y, x| (n - y, n - x)),
        ];
        for (degrees, source) in turns {
            rotate(&src, &mut img, g, degrees);
            for c in 0..2 {
                for y in 0..side {
                    for x in 0..side {
                        let (sy, sx) = source(n, y, x);
                        let (got, want) = (
                            img[c * side * side + y * side + x],
                            src[c * side * side + sy * side + sx],
                        );
                        assert!(
                            (got - want).abs() <= 1e-6,
                            "{degrees}° on {side}×{side} at ({c}, {y}, {x}): {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}

/// Where `rotate` samples the source for output pixel `(y, x)`, from its
/// definition.
fn source_point(g: Image, degrees: f64, y: usize, x: usize) -> (f64, f64) {
    let t = degrees.to_radians();
    let (cy, cx) = ((g.height as f64 - 1.0) / 2.0, (g.width as f64 - 1.0) / 2.0);
    let (ry, rx) = (y as f64 - cy, x as f64 - cx);
    (
        cy + t.cos() * ry - t.sin() * rx,
        cx + t.sin() * ry + t.cos() * rx,
    )
}

#[test]
fn rotation_interpolates_with_the_bilinear_weights() {
    let g = Image {
        channels: 1,
        height: 9,
        width: 9,
    };
    // An impulse at the centre: each output pixel is the tent weight
    // (1 − |Δy|)₊ (1 − |Δx|)₊ of its source point's distance to it.
    let mut impulse = vec![0.0f32; g.len()];
    impulse[4 * 9 + 4] = 1.0;
    let mut img = vec![f32::NAN; g.len()];
    for degrees in [7.0, -23.5, 45.0] {
        rotate(&impulse, &mut img, g, degrees);
        for y in 0..9 {
            for x in 0..9 {
                let (sy, sx) = source_point(g, degrees, y, x);
                let want = (1.0 - (sy - 4.0).abs()).max(0.0) * (1.0 - (sx - 4.0).abs()).max(0.0);
                let got = f64::from(img[y * 9 + x]);
                assert!(
                    (got - want).abs() <= 1e-6,
                    "{degrees}° at ({y}, {x}): {got} vs {want}"
                );
            }
        }
    }
    // Bilinear interpolation reproduces an affine image exactly wherever
    // the source point lies inside it.
    let f = |y: f64, x: f64| 0.5 + 0.25 * y - 0.125 * x;
    let ramp: Vec<f32> = (0..81)
        .map(|i| f((i / 9) as f64, (i % 9) as f64) as f32)
        .collect();
    rotate(&ramp, &mut img, g, 17.0);
    let mut inside = 0;
    for y in 0..9 {
        for x in 0..9 {
            let (sy, sx) = source_point(g, 17.0, y, x);
            if (0.0..=8.0).contains(&sy) && (0.0..=8.0).contains(&sx) {
                inside += 1;
                let got = f64::from(img[y * 9 + x]);
                assert!((got - f(sy, sx)).abs() <= 1e-6, "({y}, {x})");
            }
        }
    }
    assert!(inside > 40, "{inside}");
}

#[test]
fn cutout_zeroes_the_square_clipped_to_the_image() {
    let g = Image {
        channels: 2,
        height: 6,
        width: 7,
    };
    let src = random_image(g, 3);
    for (cy, cx, side) in [(3, 3, 2), (0, 0, 3), (5, 6, 4), (2, 5, 1), (3, 3, 20)] {
        let mut img = src.clone();
        cutout(&mut img, g, cy, cx, side);
        let (top, left) = (cy as i64 - side as i64 / 2, cx as i64 - side as i64 / 2);
        for c in 0..2 {
            for y in 0..6i64 {
                for x in 0..7i64 {
                    let i = c * 42 + (y * 7 + x) as usize;
                    let cut = (top..top + side as i64).contains(&y)
                        && (left..left + side as i64).contains(&x);
                    let want = if cut { 0.0 } else { src[i] };
                    assert_eq!(
                        img[i].to_bits(),
                        want.to_bits(),
                        "{cy} {cx} {side}: {c} {y} {x}"
                    );
                }
            }
        }
    }
}

#[test]
fn noise_has_mean_zero_and_the_asked_deviation() {
    let mut v = vec![1.0f32; 20_001];
    add_noise(&mut v, &mut Rng::new(4), 0.5);
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| f64::from(x) - 1.0).sum::<f64>() / n;
    let var = v
        .iter()
        .map(|&x| (f64::from(x) - 1.0 - mean).powi(2))
        .sum::<f64>()
        / (n - 1.0);
    // Standard errors: 0.5/√n ≈ 0.0035 for the mean, ≈ 0.0025 for σ.
    assert!(mean.abs() < 0.015, "{mean}");
    assert!((var.sqrt() - 0.5).abs() < 0.015, "{}", var.sqrt());
    // The odd last value got noise too.
    assert_ne!(v[20_000], 1.0);
}

fn input(name: &'static str, per_sample: usize, kind: InputKind) -> InputSpec {
    InputSpec {
        name: Cow::Borrowed(name),
        per_sample,
        kind,
        predict: !matches!(kind, InputKind::Labels { .. }),
    }
}

/// A model taking a 1×4×4 image `x`, three tokens `t` and a label `y`.
fn image_model() -> &'static ModelSpec {
    Box::leak(Box::new(ModelSpec {
        inputs: Cow::Owned(vec![
            input("x", 16, InputKind::Features),
            input("t", 3, InputKind::Tokens { classes: 5 }),
            input("y", 1, InputKind::Labels { classes: 2 }),
        ]),
        ..crate::model::tests::empty_spec()
    }))
}

/// Six samples; samples 1 and 4 are identical.
fn image_data() -> Dataset {
    let mut rng = Rng::new(5);
    let mut x: Vec<f32> = (0..6 * 16).map(|_| rng.uniform_f32(0.0, 1.0)).collect();
    let one = x[16..32].to_vec();
    x[64..80].copy_from_slice(&one);
    Dataset::new(vec![
        Column::f32("x", &[1, 4, 4], x),
        Column::classes("t", &[3], (0..18).map(|i| i % 5).collect(), 5),
        Column::classes("y", &[], vec![0, 1, 0, 1, 0, 1], 2),
    ])
    .unwrap()
}

const ALL: AugmentSpec = AugmentSpec {
    shift: 1,
    rotate: 10.0,
    flip: true,
    cutout: 2,
    noise: 0.1,
};

/// The images and tokens of `indices` after augmentation.
fn augmented(spec: AugmentSpec, indices: &[usize], seed: u64, epoch: u64) -> (Vec<f32>, Vec<f32>) {
    let (model, data) = (image_model(), image_data());
    let binding = Binding::for_training(model, &data, "training set").unwrap();
    let mut batcher = Batcher::new(binding, 6);
    let mut a = Augmenter::new(spec, model, &batcher, &data).unwrap();
    batcher.gather(&data, indices).unwrap();
    a.apply(&mut batcher, indices, seed, epoch);
    (batcher.features(0).to_vec(), batcher.features(1).to_vec())
}

#[test]
fn a_sample_is_augmented_by_its_seed_epoch_and_index_alone() {
    let (x, t) = augmented(ALL, &[4, 1, 3, 0], 9, 2);
    let (plain, tokens) = augmented(AugmentSpec::NONE, &[4, 1, 3, 0], 9, 2);
    assert_ne!(bits(&x), bits(&plain));
    assert_eq!(bits(&t), bits(&tokens), "token ids are never changed");
    // Same seed, same batch.
    assert_eq!(bits(&x), bits(&augmented(ALL, &[4, 1, 3, 0], 9, 2).0));
    // A sample's augmentation does not depend on its batch or position.
    let (alone, _) = augmented(ALL, &[3], 9, 2);
    assert_eq!(bits(&alone), bits(&x[32..48]));
    // Samples 1 and 4 hold the same image but draw differently.
    assert_eq!(bits(&plain[..16]), bits(&plain[16..32]));
    assert_ne!(bits(&x[..16]), bits(&x[16..32]));
    // Another epoch or seed draws anew.
    assert_ne!(bits(&x), bits(&augmented(ALL, &[4, 1, 3, 0], 9, 3).0));
    assert_ne!(bits(&x), bits(&augmented(ALL, &[4, 1, 3, 0], 10, 2).0));
}

#[test]
fn augmentation_follows_the_reference_transforms_in_order() {
    // Replays sample 2's draws by hand: flip, rotate, shift, cutout, noise.
    let data = image_data();
    let src = data.f32_values("x").unwrap()[32..48].to_vec();
    let g = Image {
        channels: 1,
        height: 4,
        width: 4,
    };
    let mut rng = sample_rng(11, 0, 2);
    let mut img = src;
    if rng.below(2) == 1 {
        flip_horizontal(&mut img, g);
    }
    let degrees = rng.uniform_f64(-10.0, 10.0);
    let mut out = vec![0.0; 16];
    rotate(&img, &mut out, g, degrees);
    let (dy, dx) = (rng.below(3) as i64 - 1, rng.below(3) as i64 - 1);
    shift(&out, &mut img, g, dy, dx);
    let (cy, cx) = (rng.below(4) as usize, rng.below(4) as usize);
    cutout(&mut img, g, cy, cx, 2);
    add_noise(&mut img, &mut rng, 0.1);
    assert_eq!(bits(&augmented(ALL, &[2], 11, 0).0), bits(&img));
}

#[test]
fn image_augmentation_needs_an_image_and_tabular_noise_does_not() {
    let model: &'static ModelSpec = Box::leak(Box::new(ModelSpec {
        inputs: Cow::Owned(vec![
            input("x", 3, InputKind::Features),
            input("y", 1, InputKind::Labels { classes: 2 }),
        ]),
        ..crate::model::tests::empty_spec()
    }));
    let data = Dataset::new(vec![
        Column::f32("x", &[3], vec![0.0; 6]),
        Column::classes("y", &[], vec![0, 1], 2),
    ])
    .unwrap();
    let binding = Binding::for_training(model, &data, "training set").unwrap();
    let mut batcher = Batcher::new(binding, 2);
    let e = Augmenter::new(ALL, model, &batcher, &data)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`augment: image(...)` needs an image input"),
        "{e}"
    );
    assert!(e.contains("x"), "{e}");
    let noise = AugmentSpec {
        noise: 0.5,
        ..AugmentSpec::NONE
    };
    let mut a = Augmenter::new(noise, model, &batcher, &data).unwrap();
    batcher.gather(&data, &[0, 1]).unwrap();
    a.apply(&mut batcher, &[0, 1], 1, 0);
    assert!(batcher.features(0).iter().all(|v| *v != 0.0));
}

/// Noise reaches what the model predicts from, never what its loss
/// compares with: a regression target (or a distillation teacher's logits
/// fed as data) is a real-valued input that `predict` does not read.
#[test]
fn noise_never_reaches_a_target_only_the_loss_reads() {
    let model: &'static ModelSpec = Box::leak(Box::new(ModelSpec {
        inputs: Cow::Owned(vec![
            input("x", 3, InputKind::Features),
            InputSpec {
                predict: false,
                ..input("target", 1, InputKind::Features)
            },
        ]),
        ..crate::model::tests::empty_spec()
    }));
    let data = Dataset::new(vec![
        Column::f32("x", &[3], vec![0.0; 6]),
        Column::f32("target", &[1], vec![2.0, 3.0]),
    ])
    .unwrap();
    let binding = Binding::for_training(model, &data, "training set").unwrap();
    let mut batcher = Batcher::new(binding, 2);
    let noise = AugmentSpec {
        noise: 0.5,
        ..AugmentSpec::NONE
    };
    let mut a = Augmenter::new(noise, model, &batcher, &data).unwrap();
    batcher.gather(&data, &[0, 1]).unwrap();
    a.apply(&mut batcher, &[0, 1], 1, 0);
    assert!(batcher.features(0).iter().all(|v| *v != 0.0), "x is noised");
    assert_eq!(batcher.features(1), &[2.0, 3.0], "the target is not");
}
