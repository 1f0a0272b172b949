//! Quantization-aware training and distillation in the f64 interpreter:
//! `fake_quant`'s forward against hand-computed values and an independent
//! nearest-grid-point search, its straight-through gradient by a dedicated
//! test, and `distill`'s value against its closed form, its gradient against
//! central differences, and its teacher's (absent) gradient.

mod support;

use nnc_compiler::autodiff::{gradients, training_graph};
use nnc_compiler::interp::evaluate;
use nnc_compiler::ir::GradOptions;
use nnc_compiler::ops::{Op, QuantOp, Tensor};
use nnc_compiler::{check_source, SourceFile};
use std::collections::HashMap;
use support::*;

fn fake_quant(bits: u8, scale: Option<f64>) -> Op {
    Op::Quant(QuantOp::FakeQuant {
        bits,
        scale: scale.map(f64::to_bits),
    })
}

/// `fake_quant` of the values `x` (a vector), by the interpreter.
fn forward(x: &[f64], bits: u8, scale: Option<f64>) -> Vec<f64> {
    let mut b = Builder::default();
    let n = b.input(
        "x",
        shape(&[x.len()]),
        Domain::Uniform(0.0, 1.0),
        &mut Rng(1),
    );
    b.bindings.insert(
        "x".into(),
        Tensor::from_shape_vec(vec![x.len()], x.to_vec()).unwrap(),
    );
    let y = b.op(fake_quant(bits, scale), &[n]);
    evaluate(&b.graph, &b.bindings)
        .unwrap()
        .get(y)
        .iter()
        .copied()
        .collect()
}

/// Values worked out by hand, on grids where every quotient is exact: ties
/// go to the even integer, the clamp is asymmetric (`[-4, 3]` for 3 bits),
/// and the dynamic scale maps the largest magnitude to `qmax`.
#[test]
fn fake_quant_matches_hand_computed_values() {
    // Scale 0.5, 3 bits: x / s = 0.5, 1.5, 2.5, -0.5, -3.5, 10, -10, 2.8.
    let x = [0.25, 0.75, 1.25, -0.25, -1.75, 5.0, -5.0, 1.4];
    let want = [0.0, 1.0, 1.0, -0.0, -2.0, 1.5, -2.0, 1.5];
    assert_eq!(forward(&x, 3, Some(0.5)), want);
    // Dynamic, 3 bits: s = max|x| / 3 = 1.
    let x = [3.0, -0.5, 1.5, -3.0, 0.25, 2.5];
    assert_eq!(forward(&x, 3, None), [3.0, -0.0, 2.0, -3.0, 0.0, 2.0]);
    // Dynamic, 8 bits: s = 2.54 / 127 = 0.02; 2.54 itself is kept.
    let got = forward(&[2.54, -1.0, 0.031], 8, None);
    for (g, w) in got.iter().zip([2.54, -1.0, 0.04]) {
        assert!((g - w).abs() < 1e-12, "{got:?}");
    }
    // A tensor of zeros stays zeros (scale 1, no division by 0).
    assert_eq!(forward(&[0.0, 0.0], 8, None), [0.0, 0.0]);
}

/// The nearest point of the grid `{k·s : qmin ≤ k ≤ qmax}`, ties to the
/// even `k`, found by searching every `k`: independent of the op's
/// `round(x / s)` formula.
fn nearest_grid_point(x: f64, s: f64, bits: u8) -> f64 {
    let half = 1i64 << (bits - 1);
    let mut best = (f64::INFINITY, 0i64);
    for k in -half..half {
        let d = (x - k as f64 * s).abs();
        if d < best.0 - 1e-12 || ((d - best.0).abs() <= 1e-12 && k % 2 == 0) {
            best = (d, k);
        }
    }
    best.1 as f64 * s
}

#[test]
fn fake_quant_is_the_nearest_grid_point_on_random_tensors() {
    let mut rng = Rng(23);
    for bits in [2u8, 4, 7, 8] {
        for scale in [None, Some(0.05), Some(0.3)] {
            let x: Vec<f64> = (0..200).map(|_| rng.range(-3.0, 3.0)).collect();
            let s = scale.unwrap_or_else(|| {
                let amax = x.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                amax / ((1 << (bits - 1)) - 1) as f64
            });
            let got = forward(&x, bits, scale);
            for (i, (&g, &v)) in got.iter().zip(&x).enumerate() {
                let want = nearest_grid_point(v, s, bits);
                assert!(
                    (g - want).abs() <= 1e-12,
                    "bits {bits}, scale {scale:?}: x[{i}] = {v} -> {g}, want {want}"
                );
            }
        }
    }
}

/// The straight-through estimator, checked directly: not against finite
/// differences, because the forward function is a staircase whose true
/// derivative is zero almost everywhere (shown below), while the estimator
/// passes the gradient through unchanged wherever the clamp does not cut
/// (`qmin − ½ ≤ x / s < qmax + ½`) and blocks it where it does.
#[test]
fn fake_quant_gradient_is_the_straight_through_estimator() {
    for (bits, scale) in [(8u8, None), (8, Some(0.01)), (4, Some(0.2)), (2, Some(0.5))] {
        let mut rng = Rng(u64::from(bits) + 100);
        let mut b = Builder::default();
        let x = b.input("x", shape(&[6, 7]), Domain::Uniform(-2.0, 2.0), &mut rng);
        let y = b.op(fake_quant(bits, scale), &[x]);
        let obj = b.objective(y, &mut rng);
        let mut g = b.graph.clone();
        let dx = gradients(&mut g, obj, &[x]).unwrap()[0];
        let values = evaluate(&g, &b.bindings).unwrap();
        let (xv, r) = (&b.bindings["x"], &b.bindings["__weights"]);
        let (qmin, qmax) = (
            -f64::from(1u32 << (bits - 1)),
            f64::from((1u32 << (bits - 1)) - 1),
        );
        let (mut passed, mut blocked) = (0, 0);
        for ((&d, &v), &w) in values.get(dx).iter().zip(xv).zip(r) {
            let inside = scale.is_none_or(|s| (qmin - 0.5..qmax + 0.5).contains(&(v / s)));
            let want = if inside { w } else { 0.0 };
            assert_eq!(d, want, "bits {bits}, scale {scale:?}, x = {v}");
            if inside {
                passed += 1;
            } else {
                blocked += 1;
            }
        }
        // Every case but the dynamic one (nothing is ever cut there) cuts
        // some of these values and keeps others.
        assert!(
            passed > 0 && (scale.is_none() || blocked > 0),
            "{bits} {scale:?}"
        );
        // The true derivative is zero between the steps: a central
        // difference at a point off the steps measures 0, not the 1 the
        // estimator passes.
        let fixed = forward(&[0.1 - 1e-6, 0.1 + 1e-6], 8, Some(0.5));
        assert_eq!(fixed[1] - fixed[0], 0.0);
    }
}

/// Lowers a model and evaluates its training graph on `bindings`; the
/// objective's value and the values of the whole graph.
fn run(text: &str, wrt: &[&str], bindings: &HashMap<String, Tensor>) -> (f64, Vec<Tensor>) {
    let src = SourceFile::new("distill.nn", text.to_string());
    let module =
        check_source(&src).unwrap_or_else(|e| panic!("{}", src.render(&e.diagnostics, false)));
    let net = &module.networks[0];
    let opts = GradOptions {
        regularization: Default::default(),
        inputs: wrt.iter().map(|s| s.to_string()).collect(),
    };
    let tg = training_graph(net, &opts).unwrap();
    let v = evaluate(&tg.graph, bindings).unwrap();
    let grads = tg
        .inputs
        .iter()
        .map(|(_, _, g)| v.get(*g).clone())
        .collect();
    (v.scalar(tg.objective), grads)
}

const DISTILL: &str = "
network D {
    input student: f32[batch, 5];
    input teacher: f32[batch, 5];
    label y: class[batch] of 5;
    loss distill(student, teacher, y, temperature: 3, alpha: 0.6);
}";

fn distill_bindings(rng: &mut Rng) -> HashMap<String, Tensor> {
    let mut b = HashMap::new();
    b.insert(
        "student".into(),
        tensor(&[4, 5], Domain::Uniform(-3.0, 3.0), rng),
    );
    b.insert(
        "teacher".into(),
        tensor(&[4, 5], Domain::Uniform(-3.0, 3.0), rng),
    );
    b.insert("y".into(), tensor(&[4], Domain::Classes(5), rng));
    b
}

fn softmax(row: &[f64]) -> Vec<f64> {
    let m = row.iter().cloned().fold(f64::MIN, f64::max);
    let e: Vec<f64> = row.iter().map(|v| (v - m).exp()).collect();
    let z: f64 = e.iter().sum();
    e.iter().map(|v| v / z).collect()
}

#[test]
fn distill_equals_its_closed_form() {
    let mut rng = Rng(31);
    let b = distill_bindings(&mut rng);
    let (loss, _) = run(DISTILL, &[], &b);
    let (t, a) = (3.0f64, 0.6f64);
    let (s, te, y) = (&b["student"], &b["teacher"], &b["y"]);
    let mut kl = 0.0;
    let mut ce = 0.0;
    for i in 0..4 {
        let srow: Vec<f64> = (0..5).map(|j| s[[i, j]]).collect();
        let trow: Vec<f64> = (0..5).map(|j| te[[i, j]]).collect();
        let ps = softmax(&srow.iter().map(|v| v / t).collect::<Vec<_>>());
        let pt = softmax(&trow.iter().map(|v| v / t).collect::<Vec<_>>());
        kl += (0..5).map(|j| pt[j] * (pt[j] / ps[j]).ln()).sum::<f64>();
        ce -= softmax(&srow)[y[i] as usize].ln();
    }
    let want = a * t * t * kl / 4.0 + (1.0 - a) * ce / 4.0;
    assert!((loss - want).abs() < 1e-12 * want.abs(), "{loss} vs {want}");
    // The soft term is a divergence: zero when the student agrees.
    let mut same = b.clone();
    same.insert("student".into(), b["teacher"].clone());
    let only_hard = "network D {
        input student: f32[batch, 5];
        label y: class[batch] of 5;
        loss cross_entropy(student, y) * 0.4;
    }";
    let (l1, _) = run(DISTILL, &[], &same);
    let (l2, _) = run(only_hard, &[], &same);
    assert!((l1 - l2).abs() < 1e-12, "{l1} vs {l2}");
}

#[test]
fn distill_gradient_matches_finite_differences_and_skips_the_teacher() {
    let mut rng = Rng(37);
    let b = distill_bindings(&mut rng);
    let (_, grads) = run(DISTILL, &["student", "teacher"], &b);
    assert!(grads[1].iter().all(|&g| g == 0.0), "the teacher is trained");
    let h = 1e-5;
    let (mut err, mut scale) = (0.0f64, 1e-3f64);
    for i in 0..20 {
        let mut p = b.clone();
        let at = |p: &mut HashMap<String, Tensor>, v: f64| {
            p.get_mut("student").unwrap().as_slice_mut().unwrap()[i] = v;
            run(DISTILL, &[], p).0
        };
        let orig = b["student"].as_slice().unwrap()[i];
        let numeric = (at(&mut p, orig + h) - at(&mut p, orig - h)) / (2.0 * h);
        let a = grads[0].as_slice().unwrap()[i];
        err = err.max((a - numeric).abs());
        scale = scale.max(a.abs());
    }
    assert!(err / scale < 1e-6, "relative error {:e}", err / scale);
}
