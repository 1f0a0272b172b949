//! Every op's gradient rule against central finite differences in f64, on
//! random shapes and values; and the whole-network checks.

mod support;

use nnc_compiler::graph::{Dim, Shape};
use nnc_compiler::ops::softmax::SoftmaxKind;
use nnc_compiler::ops::{
    BinaryOp, LossOp, Matmul, Op, ReduceKind, ReduceOp, ShapeOp, SoftmaxOp, UnaryOp,
};
use proptest::prelude::*;
use support::*;

/// The bar every gradient rule must clear.
const TOLERANCE: f64 = 1e-6;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Random shapes of rank 1 to 3 with small dimensions.
fn dims() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..5, 1..4)
}

fn unary_domain(op: UnaryOp) -> Domain {
    match op {
        UnaryOp::Log | UnaryOp::Sqrt | UnaryOp::Pow(_) => Domain::Uniform(0.5, 2.5),
        UnaryOp::Relu
        | UnaryOp::LeakyRelu(_)
        | UnaryOp::Abs
        | UnaryOp::Step
        | UnaryOp::LeakyStep(_)
        | UnaryOp::Sign => Domain::AwayFromZero(0.05, 2.0),
        _ => Domain::Uniform(-2.5, 2.5),
    }
}

fn unary_ops() -> Vec<UnaryOp> {
    vec![
        UnaryOp::Neg,
        UnaryOp::Exp,
        UnaryOp::Log,
        UnaryOp::Sqrt,
        UnaryOp::Abs,
        UnaryOp::Pow(2.0),
        UnaryOp::Pow(-1.5),
        UnaryOp::Pow(0.5),
        UnaryOp::Relu,
        UnaryOp::LeakyRelu(0.01),
        UnaryOp::LeakyRelu(0.3),
        UnaryOp::Sigmoid,
        UnaryOp::Tanh,
        UnaryOp::Gelu,
        UnaryOp::Step,
        UnaryOp::LeakyStep(0.2),
        UnaryOp::Sign,
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn unary_ops_match_finite_differences(d in dims(), batch in any::<bool>(), which in 0usize..17, seed in any::<u64>()) {
        let op = unary_ops()[which];
        let mut rng = Rng(seed);
        let mut b = Builder::default();
        let s = if batch { batched(&d) } else { shape(&d) };
        let x = b.input("x", s, unary_domain(op), &mut rng);
        let y = b.op(Op::Unary(op), &[x]);
        let obj = b.objective(y, &mut rng);
        let err = gradcheck(&b, obj, 64, &mut rng);
        prop_assert!(err < TOLERANCE, "{op}: relative error {err:e}");
    }

    #[test]
    fn binary_ops_with_broadcasting(d in dims(), mask in prop::collection::vec(any::<bool>(), 3), drop in 0usize..3, swap in any::<bool>(), which in 0usize..5, seed in any::<u64>()) {
        let op = [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div, BinaryOp::Equal][which];
        let mut rng = Rng(seed);
        // The second operand: some leading dims dropped, some set to 1.
        let small: Vec<usize> = d.iter().enumerate().skip(drop.min(d.len() - 1))
            .map(|(i, &n)| if mask[i % 3] { 1 } else { n }).collect();
        let (da, db) = if swap { (small, d.clone()) } else { (d.clone(), small) };
        let mut b = Builder::default();
        let x = b.input("a", shape(&da), Domain::Uniform(-2.0, 2.0), &mut rng);
        let den = if op == BinaryOp::Div { Domain::AwayFromZero(0.5, 2.0) } else { Domain::Uniform(-2.0, 2.0) };
        let y = b.input("b", shape(&db), den, &mut rng);
        let z = b.op(Op::Binary(op), &[x, y]);
        let obj = b.objective(z, &mut rng);
        let err = gradcheck(&b, obj, 64, &mut rng);
        prop_assert!(err < TOLERANCE, "{op} {da:?} {db:?}: relative error {err:e}");
    }

    #[test]
    fn binary_ops_with_batch_broadcast(n in 1usize..5, which in 0usize..4, seed in any::<u64>()) {
        let op = [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div][which];
        let mut rng = Rng(seed);
        let mut b = Builder::default();
        let x = b.input("x", batched(&[1, n]), Domain::Uniform(-2.0, 2.0), &mut rng);
        let y = b.input("bias", shape(&[n]), Domain::AwayFromZero(0.5, 2.0), &mut rng);
        let z = b.op(Op::Binary(op), &[x, y]);
        let obj = b.objective(z, &mut rng);
        let err = gradcheck(&b, obj, 64, &mut rng);
        prop_assert!(err < TOLERANCE, "{op}: relative error {err:e}");
    }

    #[test]
    fn matmul_plain_batched_and_shared(m in 1usize..5, k in 1usize..5, n in 1usize..5, lead in 0usize..3, shared in any::<bool>(), seed in any::<u64>()) {
        let mut rng = Rng(seed);
        let mut b = Builder::default();
        let mut da = vec![m, k];
        let mut db = vec![k, n];
        if lead > 0 {
            da.insert(0, lead + 1);
            if !shared {
                db.insert(0, lead + 1);
            }
        }
        let x = b.input("a", shape(&da), Domain::Uniform(-1.0, 1.0), &mut rng);
        let w = b.input("b", shape(&db), Domain::Uniform(-1.0, 1.0), &mut rng);
        let y = b.op(Op::Matmul(Matmul), &[x, w]);
        let obj = b.objective(y, &mut rng);
        let err = gradcheck(&b, obj, 64, &mut rng);
        prop_assert!(err < TOLERANCE, "matmul {da:?} @ {db:?}: relative error {err:e}");
    }

    #[test]
    fn reductions(d in dims(), axes_mask in prop::collection::vec(any::<bool>(), 3), keepdims in any::<bool>(), which in 0usize..3, batch in any::<bool>(), seed in any::<u64>()) {
        let kind = [ReduceKind::Sum, ReduceKind::Mean, ReduceKind::Max][which];
        let mut rng = Rng(seed);
        let axes: Vec<usize> = (0..d.len()).filter(|&i| axes_mask[i]).collect();
        let mut b = Builder::default();
        let s = if batch { batched(&d) } else { shape(&d) };
        let x = b.input("x", s, Domain::Distinct, &mut rng);
        let y = b.op(Op::Reduce(ReduceOp { kind, axes: axes.clone(), keepdims }), &[x]);
        let obj = b.objective(y, &mut rng);
        let err = gradcheck(&b, obj, 64, &mut rng);
        prop_assert!(err < TOLERANCE, "{kind:?} over {axes:?} of {d:?}: relative error {err:e}");
    }

    #[test]
    fn softmax_and_log_softmax(d in dims(), axis in 0usize..3, log in any::<bool>(), seed in any::<u64>()) {
        let kind = if log { SoftmaxKind::LogSoftmax } else { SoftmaxKind::Softmax };
        let axis = axis % d.len();
        let mut rng = Rng(seed);
        let mut b = Builder::default();
        let x = b.input("x", batched(&d), Domain::Uniform(-3.0, 3.0), &mut rng);
        let y = b.op(Op::Softmax(SoftmaxOp { kind, axis }), &[x]);
        let obj = b.objective(y, &mut rng);
        let err = gradcheck(&b, obj, 64, &mut rng);
        prop_assert!(err < TOLERANCE, "{kind:?} axis {axis} of {d:?}: relative error {err:e}");
    }

    #[test]
    fn reshape_transpose_broadcast_sum_to(d in prop::collection::vec(1usize..4, 2..4), perm_seed in any::<u64>(), seed in any::<u64>()) {
        let mut rng = Rng(seed);
        let total: usize = d.iter().product();
        // Reshape to [batch, rest] and back through a transpose.
        let mut b = Builder::default();
        let x = b.input("x", batched(&d), Domain::Uniform(-1.0, 1.0), &mut rng);
        let rest: usize = d[1..].iter().product();
        let flat = b.op(Op::Shape(ShapeOp::Reshape { to: Shape(vec![Dim::Batch, Dim::Fixed(rest)]) }), &[x]);
        let mut perm: Vec<usize> = (0..d.len()).collect();
        let mut prng = Rng(perm_seed);
        for i in (1..perm.len()).rev() {
            perm.swap(i, prng.below(i + 1));
        }
        let t = b.op(Op::Shape(ShapeOp::Transpose { perm: perm.clone() }), &[x]);
        let ones = vec![1usize; d.len()];
        let small = b.input("s", shape(&ones), Domain::Uniform(-1.0, 1.0), &mut rng);
        let tshape = b.graph.ty(t).shape.clone();
        let bc = b.op(Op::Shape(ShapeOp::Broadcast { to: tshape }), &[small]);
        let prod = b.op(Op::Binary(BinaryOp::Mul), &[t, bc]);
        let st = b.op(Op::Shape(ShapeOp::SumTo { to: Shape::fixed(&[1, 1]) }), &[flat]);
        let s1 = b.objective(prod, &mut rng);
        let s2 = b.op(Op::Reduce(ReduceOp { kind: ReduceKind::Sum, axes: vec![], keepdims: false }), &[st]);
        let obj = b.op(Op::Binary(BinaryOp::Add), &[s1, s2]);
        let err = gradcheck(&b, obj, 64, &mut rng);
        prop_assert!(err < TOLERANCE, "shape ops on {d:?} perm {perm:?} ({total} elements): relative error {err:e}");
    }

    #[test]
    fn cross_entropy_and_binary_cross_entropy(c in 1usize..6, extra in 0usize..3, seed in any::<u64>()) {
        let mut rng = Rng(seed);
        let mut b = Builder::default();
        let mut ld = vec![BATCH];
        if extra > 0 {
            ld.push(extra + 1);
        }
        let mut logit_dims = ld.clone();
        logit_dims.push(c);
        let logits = b.input("logits", batched(&logit_dims), Domain::Uniform(-3.0, 3.0), &mut rng);
        let labels = b.labels("labels", batched(&ld), c, &mut rng);
        let ce = b.op(Op::Loss(LossOp::CrossEntropy), &[logits, labels]);
        let z = b.input("z", batched(&logit_dims), Domain::Uniform(-3.0, 3.0), &mut rng);
        let t = b.input("t", batched(&logit_dims), Domain::Uniform(0.0, 1.0), &mut rng);
        let bce = b.op(Op::Loss(LossOp::BinaryCrossEntropy), &[z, t]);
        let oh = b.op(Op::Loss(LossOp::OneHot { classes: c }), &[labels]);
        let w = b.op(Op::Binary(BinaryOp::Mul), &[oh, logits]);
        let s = b.objective(w, &mut rng);
        // The fused gradient op (built by the softmax-ce pass) has its own
        // rule, for the logits and the scale.
        let scale = b.input("scale", shape(&[]), Domain::Uniform(0.5, 2.0), &mut rng);
        let ceg = b.op(Op::Loss(LossOp::CrossEntropyGrad), &[logits, labels, scale]);
        let s2 = b.objective(ceg, &mut rng);
        let sum = b.op(Op::Binary(BinaryOp::Add), &[ce, bce]);
        let sum = b.op(Op::Binary(BinaryOp::Add), &[sum, s2]);
        let obj = b.op(Op::Binary(BinaryOp::Add), &[sum, s]);
        let err = gradcheck(&b, obj, 64, &mut rng);
        prop_assert!(err < TOLERANCE, "losses with {c} classes over {logit_dims:?}: relative error {err:e}");
    }
}

#[test]
fn gelu_has_no_second_derivative_and_says_so() {
    let mut rng = Rng(1);
    let mut b = Builder::default();
    let x = b.input("x", shape(&[3]), Domain::Uniform(-1.0, 1.0), &mut rng);
    let y = b.op(Op::Unary(UnaryOp::GeluGrad), &[x]);
    let obj = b.objective(y, &mut rng);
    let mut g = b.graph.clone();
    let err = nnc_compiler::autodiff::gradients(&mut g, obj, &[x]).unwrap_err();
    assert_eq!(
        err.message,
        "cannot differentiate: the second derivative of gelu is not supported"
    );
}

/// Fan-out: a node used twice gets the sum of both contributions.
#[test]
fn fan_out_sums_gradients() {
    let mut rng = Rng(7);
    let mut b = Builder::default();
    let x = b.input("x", shape(&[2, 3]), Domain::Uniform(-1.0, 1.0), &mut rng);
    let t = b.op(Op::Unary(UnaryOp::Tanh), &[x]);
    let p = b.op(Op::Binary(BinaryOp::Mul), &[t, x]);
    let q = b.op(Op::Binary(BinaryOp::Add), &[p, t]);
    let obj = b.objective(q, &mut rng);
    assert!(gradcheck(&b, obj, 64, &mut rng) < TOLERANCE);
}
