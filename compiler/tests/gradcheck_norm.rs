//! The gradient rules of batch norm and dropout against central finite
//! differences in f64 (dropout with the fixed mask of one step key), and
//! the f64 semantics of the dropout mask.

mod support;

use nnc_compiler::ops::norm::NormOp;
use nnc_compiler::ops::{EvalCtx, Op, StepKey, Tensor};
use proptest::prelude::*;
use support::*;

proptest! {
    #![proptest_config(config())]

    /// Dropout in training mode (its gradient is the same op on the
    /// gradient: the same mask and scale) and in inference mode.
    #[test]
    fn dropout_with_a_fixed_mask(d in prop::collection::vec(1usize..5, 0..3), rate in 0usize..3, training in any::<bool>(), salt in any::<u64>(), seed in any::<u64>()) {
        let rate = [0.0, 0.3, 0.6][rate];
        let mut dims = vec![BATCH];
        dims.extend(d);
        let mut rng = Rng(seed);
        let mut b = Builder::default();
        let x = b.input("x", batched(&dims), Domain::Uniform(-2.0, 2.0), &mut rng);
        let op = NormOp::Dropout { rate: f64::to_bits(rate), salt, training };
        let y = b.op(Op::Norm(op), &[x]);
        let obj = b.objective(y, &mut rng);
        let err = gradcheck(&b, obj, 64, &mut rng);
        prop_assert!(err < TOLERANCE, "{op}: relative error {err:e}");
    }

    /// Training-mode batch norm over [N, C] and [N, C, H, W], batched or
    /// with a fixed leading dimension (inputs from [`normalized_domain`]).
    #[test]
    fn batch_norm_over_both_ranks(n in 2usize..5, c in 1usize..4, hw in prop::option::of((1usize..4, 1usize..4)), batch in any::<bool>(), eps in 0usize..2, seed in any::<u64>()) {
        let eps = [1e-5, 1e-2][eps];
        let mut dims = vec![n, c];
        if let Some((h, w)) = hw {
            dims.extend([h, w]);
        }
        let s = if batch { dims[0] = BATCH; batched(&dims) } else { shape(&dims) };
        let mut rng = Rng(seed);
        let mut b = Builder::default();
        let x = b.input("x", s, normalized_domain(eps), &mut rng);
        let y = b.op(Op::Norm(NormOp::BatchNorm { eps: f64::to_bits(eps) }), &[x]);
        let obj = b.objective(y, &mut rng);
        let err = gradcheck(&b, obj, 64, &mut rng);
        prop_assert!(err < TOLERANCE, "batch_norm on {dims:?}: relative error {err:e}");
    }

    /// Inference-mode batch norm with respect to its input; the running
    /// statistics are state, bound but not differentiated.
    #[test]
    fn batch_norm_inference(n in 1usize..4, c in 1usize..4, spatial in any::<bool>(), seed in any::<u64>()) {
        let mut dims = vec![n, c];
        if spatial {
            dims.extend([2, 3]);
        }
        let mut rng = Rng(seed);
        let mut b = Builder::default();
        let x = b.input("x", batched(&dims), Domain::Uniform(-2.0, 2.0), &mut rng);
        let mean = b.input("mean", shape(&[c]), Domain::Uniform(-1.0, 1.0), &mut rng);
        let var = b.input("var", shape(&[c]), Domain::Uniform(0.5, 2.0), &mut rng);
        b.wrt.truncate(1);
        let y = b.op(Op::Norm(NormOp::BatchNormInfer { eps: f64::to_bits(1e-5) }), &[x, mean, var]);
        let obj = b.objective(y, &mut rng);
        let err = gradcheck(&b, obj, 64, &mut rng);
        prop_assert!(err < TOLERANCE, "batch_norm_infer on {dims:?}: relative error {err:e}");
    }
}

fn eval(op: NormOp, x: &Tensor, key: StepKey) -> Tensor {
    let cx = EvalCtx {
        batch: x.shape()[0],
        key,
    };
    Op::Norm(op).eval(&[x], &cx).expect("evaluates")
}

#[test]
fn dropout_drops_about_rate_scales_the_rest_and_indexes_global_samples() {
    let x = Tensor::from_elem(vec![50, 20], 1.0);
    let op = NormOp::dropout(0.5, 3);
    let key = StepKey {
        seed: 4,
        step: 2,
        offset: 0,
    };
    let y = eval(op, &x, key);
    let kept = y.iter().filter(|&&v| v != 0.0).count();
    assert!((400..600).contains(&kept), "kept {kept} of 1000");
    assert!(y.iter().all(|&v| v == 0.0 || v == 2.0));
    // Rows 10.. evaluated as a shard starting at global sample 10 get the
    // whole batch's mask.
    let part = Tensor::from_elem(vec![40, 20], 1.0);
    let shard = eval(op, &part, StepKey { offset: 10, ..key });
    assert_eq!(shard.as_slice().unwrap(), &y.as_slice().unwrap()[200..]);
    // Another step, another mask; inference is the identity.
    assert_ne!(eval(op, &x, StepKey { step: 3, ..key }), y);
    let inference = op.inference().expect("dropout has an inference form");
    assert_eq!(eval(inference, &x, key), x);
}

#[test]
fn batch_norm_statistics_are_per_channel_and_unbiased() {
    // [N=2, C=2, S=2]: channel 0 holds 1, 2, 3, 6.
    let x = Tensor::from_shape_vec(
        vec![2, 2, 2, 1],
        vec![1.0, 2.0, 9.0, 9.0, 3.0, 6.0, 9.0, 9.0],
    )
    .unwrap();
    let key = StepKey::default();
    let mean = eval(NormOp::BatchStat { var: false }, &x, key);
    let var = eval(NormOp::BatchStat { var: true }, &x, key);
    assert_eq!(mean.as_slice().unwrap(), &[3.0, 9.0]);
    // (4 + 1 + 0 + 9) / 3
    assert!((var[[0]] - 14.0 / 3.0).abs() < 1e-12);
    assert_eq!(var[[1]], 0.0);
    let y = eval(
        NormOp::BatchNorm {
            eps: 0f64.to_bits(),
        },
        &x,
        key,
    );
    // Biased variance 14 / 4 in training normalisation.
    assert!((y[[1, 0, 1, 0]] - 3.0 / 3.5f64.sqrt()).abs() < 1e-12);
}
