//! The attribution methods on a model whose gradient is known in closed
//! form: scores `[Σ w·x², Σ x]` of one input of four values (or, with
//! ReLU kinks, `[Σ w·relu(x − ½), Σ x]`).

use super::*;
use crate::model::tests::empty_spec;
use crate::model::{Batch, InputSpec, LossKind, LossSpec, ModelSpec};
use std::borrow::Cow;
use std::sync::OnceLock;

const W: [f32; 4] = [1.0, -2.0, 0.5, 3.0];

fn spec() -> &'static ModelSpec {
    static SPEC: OnceLock<ModelSpec> = OnceLock::new();
    SPEC.get_or_init(|| ModelSpec {
        inputs: Cow::Owned(vec![InputSpec {
            name: Cow::Borrowed("x"),
            per_sample: 4,
            kind: InputKind::Features,
            predict: true,
        }]),
        loss: LossSpec {
            kind: LossKind::Other,
            scores: 2,
        },
        ..empty_spec()
    })
}

/// Scores `[Σ w·x², Σ x]` (`[Σ w·relu(x − ½), Σ x]` when `relu`), batch
/// of up to 3.
struct Quadratic {
    relu: bool,
}

impl Model for Quadratic {
    fn spec(&self) -> &'static ModelSpec {
        spec()
    }
    fn max_batch(&self) -> usize {
        3
    }
    fn params(&self) -> &[f32] {
        &[]
    }
    fn params_mut(&mut self) -> &mut [f32] {
        &mut []
    }
    fn grads(&self) -> &[f32] {
        &[]
    }
    fn train_step(&mut self, _: &Batch<'_>) -> Result<f32, StepError> {
        unreachable!()
    }
    fn workspace_len(&self, _: usize) -> usize {
        0
    }
    fn train_step_in(
        &self,
        _: &mut [f32],
        _: usize,
        _: &mut [f32],
        _: &Batch<'_>,
    ) -> Result<f32, StepError> {
        unreachable!()
    }
    fn loss(&mut self, _: &Batch<'_>) -> Result<f32, StepError> {
        unreachable!()
    }
    fn loss_with_scores(&mut self, _: &Batch<'_>, _: &mut [f32]) -> Result<f32, StepError> {
        unreachable!()
    }
    fn predict_scores(&mut self, _: &[&[f32]], _: &mut [f32]) -> Result<usize, StepError> {
        unreachable!()
    }
    fn predict(&mut self, _: &[&[f32]], _: &mut [&mut [f32]]) -> Result<usize, StepError> {
        unreachable!()
    }
    fn gradient_inputs(&self) -> &'static [&'static str] {
        &["x"]
    }
    fn input_gradient(
        &mut self,
        inputs: &[&[f32]],
        cotangent: &[f32],
        grads: &mut [&mut [f32]],
        scores: &mut [f32],
    ) -> Result<usize, StepError> {
        let b = inputs[0].len() / 4;
        assert!(b <= 3, "the explainer batches within max_batch");
        for r in 0..b {
            let x = &inputs[0][r * 4..r * 4 + 4];
            let c = &cotangent[r * 2..r * 2 + 2];
            scores[r * 2 + 1] = x.iter().sum();
            if self.relu {
                scores[r * 2] = x.iter().zip(W).map(|(x, w)| w * (x - 0.5).max(0.0)).sum();
                for i in 0..4 {
                    let on = if x[i] > 0.5 { 1.0 } else { 0.0 };
                    grads[0][r * 4 + i] = c[0] * W[i] * on + c[1];
                }
            } else {
                scores[r * 2] = x.iter().zip(W).map(|(x, w)| w * x * x).sum();
                for i in 0..4 {
                    grads[0][r * 4 + i] = c[0] * 2.0 * W[i] * x[i] + c[1];
                }
            }
        }
        Ok(b)
    }
}

const X: [f32; 4] = [1.0, 2.0, -1.0, 0.5];

fn explain(method: Method, target: Target) -> Attribution {
    let mut model = Quadratic { relu: false };
    let mut e = Explainer::new(&mut model).unwrap();
    e.explain(&[&X], &method, target).unwrap()
}

#[test]
fn saliency_and_gradient_times_input_are_the_closed_forms() {
    // Predicted: score 0 = 1 - 8 + 0.5 + 0.75 = -5.75 < score 1 = 2.5.
    let s = explain(Method::Saliency, Target::Predicted);
    assert_eq!(s.class, 1);
    assert_eq!(s.values, vec![vec![1.0; 4]]);
    let g = explain(Method::GradientXInput, Target::Class(0));
    assert_eq!(g.class, 0);
    let want: Vec<f32> = (0..4).map(|i| X[i] * 2.0 * W[i] * X[i]).collect();
    assert_eq!(g.values, vec![want]);
}

#[test]
fn integrated_gradients_are_complete_and_exact_on_a_quadratic() {
    // The path gradient is linear in α: the midpoint rule is exact, and
    // IG of w·x² from 0 is w·x² itself, whatever the step count (7 steps:
    // two full batches of 3 and one of 1).
    let a = explain(
        Method::IntegratedGradients {
            steps: 7,
            baseline: Baseline::Zeros,
        },
        Target::Class(0),
    );
    for i in 0..4 {
        assert!((a.values[0][i] - W[i] * X[i] * X[i]).abs() < 1e-5);
    }
    assert!(a.delta.abs() < 1e-5, "{}", a.delta);
    let b = explain(
        Method::IntegratedGradients {
            steps: 5,
            baseline: Baseline::Constant(1.0),
        },
        Target::Class(0),
    );
    assert!((b.total() - f64::from(b.score - b.baseline_score)).abs() < 1e-5);
    assert!((b.baseline_score - 2.5).abs() < 1e-6);
}

#[test]
fn every_rule_is_exact_on_a_quadratic_and_the_adaptive_one_at_relu_kinks() {
    // IG of w·relu(x − ½) from 0 is w·relu(x − ½): along α·X the gradient
    // of value i steps from 0 to w at α = ½/Xᵢ (¼ and ½ here).
    let ig = |relu: bool, rule: Quadrature, steps: usize| {
        let mut model = Quadratic { relu };
        let mut e = Explainer::new(&mut model).unwrap().with_quadrature(rule);
        let method = Method::IntegratedGradients {
            steps,
            baseline: Baseline::Zeros,
        };
        e.explain(&[&X], &method, Target::Class(0)).unwrap()
    };
    let worst = |a: &Attribution, want: &dyn Fn(usize) -> f32| {
        (0..4)
            .map(|i| (a.values[0][i] - want(i)).abs())
            .fold(0.0f32, f32::max)
    };
    let square = |i: usize| W[i] * X[i] * X[i];
    let kinked = |i: usize| W[i] * (X[i] - 0.5).max(0.0);
    for rule in Quadrature::ALL {
        for steps in [4, 5, 7, 9] {
            let a = ig(false, rule, steps);
            assert!(
                worst(&a, &square) < 1e-5,
                "{rule:?} {steps}: {:?}",
                a.values
            );
        }
    }
    // 0 and 1 first, then midpoints where the gradient changes (½, then
    // ¼ and ¾, ...): no segment holds two kinks, and each segment's kink is
    // found from the scores. The midpoint rule misses by up to a step's
    // share of each jump.
    for steps in [4, 6, 8, 16] {
        let a = ig(true, Quadrature::Adaptive, steps);
        assert!(worst(&a, &kinked) < 1e-5, "{steps}: {:?}", a.values);
        assert!(a.delta.abs() < 1e-5, "{}", a.delta);
    }
    let m = ig(true, Quadrature::Midpoint, 7);
    assert!(worst(&m, &kinked) > 1e-2, "{:?}", m.values);
}

#[test]
fn smoothgrad_is_seeded_and_near_the_gradient() {
    let m = |seed| Method::SmoothGrad {
        samples: 200,
        noise: 0.1,
        seed,
    };
    let a = explain(m(1), Target::Class(0));
    assert_eq!(a, explain(m(1), Target::Class(0)));
    assert_ne!(a, explain(m(2), Target::Class(0)));
    // The gradient is linear in x: the noise averages out.
    for i in 0..4 {
        let exact = 2.0 * W[i] * X[i];
        assert!((a.values[0][i] - exact).abs() < 0.1 * exact.abs().max(1.0));
    }
}

#[test]
fn mistakes_are_errors() {
    let mut model = Quadratic { relu: false };
    let mut e = Explainer::new(&mut model).unwrap();
    assert!(matches!(
        e.explain(&[&X], &Method::Saliency, Target::Class(2)),
        Err(ExplainError::Class {
            class: 2,
            classes: 2
        })
    ));
    assert!(matches!(
        e.explain(&[&X[..3]], &Method::Saliency, Target::Predicted),
        Err(ExplainError::Length {
            expected: 4,
            found: 3,
            ..
        })
    ));
    let zero = Method::IntegratedGradients {
        steps: 0,
        baseline: Baseline::Zeros,
    };
    assert!(matches!(
        e.explain(&[&X], &zero, Target::Predicted),
        Err(ExplainError::Count { what: "steps" })
    ));
}

#[test]
fn spearman_is_one_for_monotone_minus_one_for_reversed() {
    let a = [0.1, 0.5, 0.2, 0.9];
    let b = [1.0, 7.0, 3.0, 8.0];
    assert!((spearman(&a, &b) - 1.0).abs() < 1e-12);
    let c = [4.0, 1.0, 3.0, 0.0];
    assert!((spearman(&a, &c) + 1.0).abs() < 1e-12);
    // Ties share a rank.
    assert!(spearman(&[1.0, 1.0, 2.0], &[1.0, 1.0, 2.0]) > 0.999);
}

#[test]
fn every_method_name_round_trips() {
    for name in ["saliency", "gradxinput", "ig", "smoothgrad"] {
        assert_eq!(Method::from_name(name).unwrap().name(), name);
    }
    assert!(Method::from_name("lime").is_none());
}
