//! Every op's gradient rule against central finite differences in f64, on
//! random shapes and values. The unary ops checked are derived from the
//! function table and the gradient rules (a new unary function needs no
//! edit here); ops that central differences cannot check are listed with
//! the reason. Every function and layer is also checked inside a whole
//! network (`network_gradcheck.rs`).

mod support;

use nnc_compiler::autodiff::gradients;
use nnc_compiler::diagnostic::Span;
use nnc_compiler::graph::{Dim, Graph, Shape};
use nnc_compiler::ops::softmax::SoftmaxKind;
use nnc_compiler::ops::{
    self, ArgKind, ArgValue, Args, BinaryOp, ConvOp, ConvParams, LeafOp, LossOp, Matmul, Op,
    PoolParams, ReduceKind, ReduceOp, SeqOp, ShapeOp, SoftmaxOp, UnaryOp,
};
use proptest::prelude::*;
use support::*;

/// Random shapes of rank 1 to 3 with small dimensions.
fn dims() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..5, 1..4)
}

/// Where a unary op is checked, and why there: the functions defined only
/// for positive numbers on positive numbers, those with a kink or a jump
/// at 0 (non-differentiable there, so central differences straddling it
/// are wrong) away from 0, everything else on [-2.5, 2.5].
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

/// Values a function's number parameters take in the checks: each required
/// one every value of `REQUIRED` (exponents above 1, negative and between
/// 0 and 1), each optional one its default (omitted) and every value of
/// `OPTIONAL`.
const REQUIRED: &[f64] = &[2.0, -1.5, 0.5];
const OPTIONAL: &[f64] = &[0.3];

/// Unary ops whose gradient rule refuses (no second derivative), so they
/// are not checked against central differences, with the reason. A test
/// holds this list to what the ops say (`UnaryOp::has_gradient`).
const NO_GRADIENT: &[(UnaryOp, &str)] = &[(
    UnaryOp::GeluGrad,
    "gelu's derivative: gelu's second derivative is not supported, and its rule says so \
     (gelu_has_no_second_derivative_and_says_so)",
)];

/// Every unary op of the function table, once per sample of its number
/// parameters (see [`REQUIRED`]): each function of one tensor and numbers
/// that builds an elementwise unary op.
fn unary_functions() -> Vec<UnaryOp> {
    let mut g = Graph::new();
    let input = LeafOp::Input {
        name: "x".into(),
        shape: shape(&[3]),
    };
    let x = g.add(Op::Leaf(input), &[], Span::default()).unwrap();
    let xv = ArgValue::Tensor(x, g.ty(x).clone());
    let mut out: Vec<UnaryOp> = Vec::new();
    for f in ops::functions() {
        let numbers = f.params[1..].iter().all(|p| p.kind == ArgKind::Float);
        if f.params[0].kind != ArgKind::Tensor || !numbers {
            continue;
        }
        // Every combination of sample values, one parameter at a time.
        let mut calls: Vec<Vec<Option<ArgValue>>> = vec![vec![Some(xv.clone())]];
        for p in &f.params[1..] {
            let samples: Vec<Option<f64>> = if p.required {
                REQUIRED.iter().map(|&v| Some(v)).collect()
            } else {
                std::iter::once(None)
                    .chain(OPTIONAL.iter().map(|&v| Some(v)))
                    .collect()
            };
            calls = calls
                .into_iter()
                .flat_map(|c| {
                    samples.iter().map(move |v| {
                        let mut c = c.clone();
                        c.push(v.map(ArgValue::Float));
                        c
                    })
                })
                .collect();
        }
        for values in calls {
            if let Ok((Op::Unary(op), _)) = (f.build)(&Args { values }) {
                if !out.contains(&op) {
                    out.push(op);
                }
            }
        }
    }
    out
}

/// The unary ops to check: those of the function table and those their
/// gradient rules build (relu's step, abs's sign, pow's lower power, ...),
/// minus [`NO_GRADIENT`]. A new unary function is checked without
/// touching this file.
fn unary_ops() -> Vec<UnaryOp> {
    let mut ops = unary_functions();
    for op in ops.clone() {
        let mut b = Builder::default();
        let x = b.input("x", shape(&[3]), unary_domain(op), &mut Rng(1));
        let y = b.op(Op::Unary(op), &[x]);
        let sum = ReduceOp {
            kind: ReduceKind::Sum,
            axes: vec![],
            keepdims: false,
        };
        let obj = b.op(Op::Reduce(sum), &[y]);
        let mut g = b.graph.clone();
        let before = g.len();
        gradients(&mut g, obj, &[x]).unwrap();
        for id in g.ids().filter(|id| id.index() >= before) {
            if let Op::Unary(u) = g.node(id).op {
                if !ops.contains(&u) {
                    ops.push(u);
                }
            }
        }
    }
    ops.retain(|op| !NO_GRADIENT.iter().any(|(n, _)| n == op));
    ops
}

/// The derivation finds every op the hand-kept list used to spell out, and
/// the list of exceptions agrees with the ops.
#[test]
fn every_unary_op_of_the_table_and_its_gradient_is_checked() {
    let ops = unary_ops();
    let names: Vec<String> = ops.iter().map(|o| o.to_string()).collect();
    for must in [
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
        UnaryOp::LeakyStep(0.3),
        UnaryOp::Sign,
    ] {
        assert!(ops.contains(&must), "{must} missing from {names:?}");
    }
    for op in &ops {
        assert!(
            op.has_gradient(),
            "{op} has no gradient rule: list it in NO_GRADIENT with the reason"
        );
    }
    for (op, why) in NO_GRADIENT {
        assert!(
            !op.has_gradient(),
            "{op} has a gradient rule now ({why}): take it off NO_GRADIENT"
        );
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn unary_ops_match_finite_differences(d in dims(), batch in any::<bool>(), op in prop::sample::select(unary_ops()), seed in any::<u64>()) {
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

/// One output extent of a convolution or pooling, if the window fits.
fn out_len(n: usize, k: usize, s: usize, p: usize, d: usize) -> Option<usize> {
    let eff = d * (k - 1) + 1;
    (n + 2 * p >= eff).then(|| (n + 2 * p - eff) / s + 1)
}

/// Random convolution configurations: groups, channels, sizes, kernel,
/// stride, padding and dilation, per axis.
#[derive(Clone, Debug)]
struct ConvCase {
    groups: usize,
    cg: usize,
    og: usize,
    hw: [usize; 2],
    k: [usize; 2],
    p: ConvParams,
    batch: bool,
}

fn conv_case() -> impl Strategy<Value = ConvCase> {
    (
        (1usize..3, 1usize..3, 1usize..3),
        (1usize..6, 1usize..6, 1usize..4, 1usize..4),
        (
            1usize..3,
            1usize..3,
            0usize..2,
            0usize..2,
            1usize..3,
            1usize..3,
        ),
        any::<bool>(),
    )
        .prop_filter_map(
            "the kernel must fit",
            |((groups, cg, og), (h, w, kh, kw), (sh, sw, ph, pw, dh, dw), batch)| {
                out_len(h, kh, sh, ph, dh)?;
                out_len(w, kw, sw, pw, dw)?;
                Some(ConvCase {
                    groups,
                    cg,
                    og,
                    hw: [h, w],
                    k: [kh, kw],
                    p: ConvParams {
                        stride: [sh, sw],
                        padding: [ph, pw],
                        dilation: [dh, dw],
                        groups,
                    },
                    batch,
                })
            },
        )
}

proptest! {
    #![proptest_config(config())]

    /// conv2d with respect to its input and weights, and the two gradient
    /// ops with respect to both of their operands (their own rules build
    /// the other convolution ops).
    #[test]
    fn conv2d_and_its_gradient_ops(case in conv_case(), which in 0usize..3, seed in any::<u64>()) {
        let ConvCase { groups, cg, og, hw, k, p, batch } = case.clone();
        let (c, o) = (groups * cg, groups * og);
        let oh = out_len(hw[0], k[0], p.stride[0], p.padding[0], p.dilation[0]).unwrap();
        let ow = out_len(hw[1], k[1], p.stride[1], p.padding[1], p.dilation[1]).unwrap();
        let image = |ch: usize, h: usize, w: usize| if batch { batched(&[BATCH, ch, h, w]) } else { shape(&[2, ch, h, w]) };
        let mut rng = Rng(seed);
        let mut b = Builder::default();
        let y = match which {
            0 => {
                let x = b.input("x", image(c, hw[0], hw[1]), Domain::Uniform(-1.0, 1.0), &mut rng);
                let w = b.input("w", shape(&[o, cg, k[0], k[1]]), Domain::Uniform(-1.0, 1.0), &mut rng);
                b.op(Op::Conv(ConvOp::Conv2d(p)), &[x, w])
            }
            1 => {
                let dy = b.input("dy", image(o, oh, ow), Domain::Uniform(-1.0, 1.0), &mut rng);
                let w = b.input("w", shape(&[o, cg, k[0], k[1]]), Domain::Uniform(-1.0, 1.0), &mut rng);
                b.op(Op::Conv(ConvOp::Conv2dGradInput { p, input: hw }), &[dy, w])
            }
            _ => {
                let x = b.input("x", image(c, hw[0], hw[1]), Domain::Uniform(-1.0, 1.0), &mut rng);
                let dy = b.input("dy", image(o, oh, ow), Domain::Uniform(-1.0, 1.0), &mut rng);
                b.op(Op::Conv(ConvOp::Conv2dGradWeight { p, kernel: k }), &[x, dy])
            }
        };
        let obj = b.objective(y, &mut rng);
        let err = gradcheck(&b, obj, 64, &mut rng);
        prop_assert!(err < TOLERANCE, "op {which} of {case:?}: relative error {err:e}");
    }

    /// Max pooling (distinct values: no ties within a finite-difference
    /// step), average pooling, average pooling's gradient op, and
    /// global_avg_pool (a mean over the spatial axes).
    #[test]
    fn pooling_ops(c in 1usize..3, h in 1usize..6, w in 1usize..6, kh in 1usize..4, kw in 1usize..4,
                   sh in 1usize..3, sw in 1usize..3, ph in 0usize..2, pw in 0usize..2, batch in any::<bool>(),
                   seed in any::<u64>()) {
        let p = PoolParams { kernel: [kh, kw], stride: [sh, sw], padding: [ph.min(kh / 2), pw.min(kw / 2)] };
        let oh = out_len(h, kh, sh, p.padding[0], 1);
        let ow = out_len(w, kw, sw, p.padding[1], 1);
        prop_assume!(oh.is_some() && ow.is_some());
        let (oh, ow) = (oh.unwrap(), ow.unwrap());
        let image = |h: usize, w: usize| if batch { batched(&[BATCH, c, h, w]) } else { shape(&[2, c, h, w]) };
        let mut rng = Rng(seed);
        // One graph per op: each objective binds its own random weights.
        for which in 0..4 {
            let mut b = Builder::default();
            let x = b.input("x", image(h, w), Domain::Distinct, &mut rng);
            let y = match which {
                0 => b.op(Op::Conv(ConvOp::MaxPool2d(p)), &[x]),
                1 => b.op(Op::Conv(ConvOp::AvgPool2d(p)), &[x]),
                2 => {
                    let dy = b.input("dy", image(oh, ow), Domain::Uniform(-1.0, 1.0), &mut rng);
                    b.op(Op::Conv(ConvOp::AvgPool2dGrad { p, input: [h, w] }), &[dy])
                }
                _ => b.op(Op::Reduce(ReduceOp { kind: ReduceKind::Mean, axes: vec![2, 3], keepdims: false }), &[x]),
            };
            let obj = b.objective(y, &mut rng);
            let err = gradcheck(&b, obj, 64, &mut rng);
            prop_assert!(err < TOLERANCE, "pooling op {which} {p:?} over {c}x{h}x{w}: relative error {err:e}");
        }
    }
}

/// Max pooling routes its gradient to the first maximum of each window.
#[test]
fn max_pool_gradient_goes_to_the_first_maximum() {
    let p = PoolParams {
        kernel: [2, 2],
        stride: [2, 2],
        padding: [0, 0],
    };
    use nnc_compiler::ops::Tensor;
    let x = Tensor::from_shape_vec(vec![1, 1, 2, 2], vec![1.0, 3.0, 3.0, 2.0]).unwrap();
    let dy = Tensor::from_shape_vec(vec![1, 1, 1, 1], vec![5.0]).unwrap();
    let dx = Op::Conv(ConvOp::MaxPool2dGrad(p))
        .eval(&[&x, &dy], &nnc_compiler::ops::EvalCtx::new(1))
        .unwrap();
    assert_eq!(dx.iter().copied().collect::<Vec<_>>(), [0.0, 5.0, 0.0, 0.0]);
}

#[test]
fn max_pool_has_no_second_derivative_and_says_so() {
    let mut rng = Rng(1);
    let mut b = Builder::default();
    let p = PoolParams {
        kernel: [2, 2],
        stride: [1, 1],
        padding: [0, 0],
    };
    let x = b.input("x", shape(&[1, 1, 3, 3]), Domain::Distinct, &mut rng);
    let dy = b.input("dy", shape(&[1, 1, 2, 2]), Domain::Distinct, &mut rng);
    let y = b.op(Op::Conv(ConvOp::MaxPool2dGrad(p)), &[x, dy]);
    let obj = b.objective(y, &mut rng);
    let mut g = b.graph.clone();
    let err = gradients(&mut g, obj, &[dy]).unwrap_err();
    assert_eq!(
        err.message,
        "cannot differentiate: the second derivative of max_pool2d is not supported"
    );
}

#[test]
fn gelu_has_no_second_derivative_and_says_so() {
    let mut rng = Rng(1);
    let mut b = Builder::default();
    let x = b.input("x", shape(&[3]), Domain::Uniform(-1.0, 1.0), &mut rng);
    let y = b.op(Op::Unary(UnaryOp::GeluGrad), &[x]);
    let obj = b.objective(y, &mut rng);
    let mut g = b.graph.clone();
    let err = gradients(&mut g, obj, &[x]).unwrap_err();
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

proptest! {
    #![proptest_config(config())]

    /// layer_norm over the last axis (its rule builds the fused
    /// layer_norm_grad op, whose values are what is checked here), with a
    /// tiny and a large epsilon (inputs from [`normalized_domain`]).
    #[test]
    fn layer_norm(d in prop::collection::vec(1usize..5, 1..4), big_eps in any::<bool>(), seed in any::<u64>()) {
        let eps = if big_eps { 0.5 } else { 1e-5 };
        let mut rng = Rng(seed);
        let mut b = Builder::default();
        let mut dims = vec![BATCH];
        dims.extend(&d);
        let x = b.input("x", batched(&dims), normalized_domain(eps), &mut rng);
        let y = b.op(Op::Seq(SeqOp::LayerNorm { eps }), &[x]);
        let obj = b.objective(y, &mut rng);
        let err = gradcheck(&b, obj, 64, &mut rng);
        prop_assert!(err < TOLERANCE, "layer_norm over {dims:?}: relative error {err:e}");
    }

    /// The embedding lookup with respect to its table (a scatter-add; ids
    /// repeat often with few rows), and the scatter-add op with respect to
    /// its gradient operand (a lookup).
    #[test]
    fn embedding_and_its_gradient_op(vocab in 1usize..5, dim in 1usize..4, len in 1usize..5, seed in any::<u64>()) {
        let mut rng = Rng(seed);
        let mut b = Builder::default();
        let table = b.input("table", shape(&[vocab, dim]), Domain::Uniform(-1.0, 1.0), &mut rng);
        let ids = b.labels("ids", batched(&[BATCH, len]), vocab, &mut rng);
        let y = b.op(Op::Seq(SeqOp::Embedding), &[table, ids]);
        let obj = b.objective(y, &mut rng);
        let err = gradcheck(&b, obj, 64, &mut rng);
        prop_assert!(err < TOLERANCE, "embedding: relative error {err:e}");

        let mut b = Builder::default();
        let ids = b.labels("ids", batched(&[BATCH, len]), vocab, &mut rng);
        let g = b.input("g", batched(&[BATCH, len, dim]), Domain::Uniform(-1.0, 1.0), &mut rng);
        let y = b.op(Op::Seq(SeqOp::EmbeddingGrad { vocab }), &[ids, g]);
        let obj = b.objective(y, &mut rng);
        let err = gradcheck(&b, obj, 64, &mut rng);
        prop_assert!(err < TOLERANCE, "embedding_grad: relative error {err:e}");
    }

    /// concat of two or three tensors along any axis (its rule slices),
    /// slice (its rule pads) and pad (its rule slices).
    #[test]
    fn concat_slice_and_pad(d in prop::collection::vec(1usize..4, 2..4), axis_seed in any::<usize>(),
                            extents in prop::collection::vec(1usize..4, 2..4), start in 0usize..3, seed in any::<u64>()) {
        let mut rng = Rng(seed);
        let mut dims = vec![BATCH];
        dims.extend(&d);
        let axis = 1 + axis_seed % d.len();
        let mut b = Builder::default();
        let parts: Vec<_> = extents.iter().enumerate().map(|(i, &n)| {
            let mut di = dims.clone();
            di[axis] = n;
            b.input(&format!("x{i}"), batched(&di), Domain::Uniform(-1.0, 1.0), &mut rng)
        }).collect();
        let cat = b.op(Op::Seq(SeqOp::Concat { axis, n: parts.len() }), &parts);
        let total: usize = extents.iter().sum();
        let start = start.min(total - 1);
        let end = total.min(start + 2);
        let sl = b.op(Op::Seq(SeqOp::Slice { axis, start, end }), &[cat]);
        let padded = b.op(Op::Seq(SeqOp::Pad { axis, start: 1, total: end - start + 2 }), &[sl]);
        let obj = b.objective(padded, &mut rng);
        let err = gradcheck(&b, obj, 64, &mut rng);
        prop_assert!(err < TOLERANCE, "concat {extents:?} along {axis} of {dims:?}, slice {start}..{end}, pad: relative error {err:e}");
    }

    /// The causal mask feeding a softmax (masked entries get no gradient)
    /// and the mask's gradient op.
    #[test]
    fn causal_mask(m in 1usize..5, n in 1usize..5, heads in 1usize..3, grad_op in any::<bool>(), seed in any::<u64>()) {
        let mut rng = Rng(seed);
        let mut b = Builder::default();
        let x = b.input("x", batched(&[BATCH, heads, m, n]), Domain::Uniform(-2.0, 2.0), &mut rng);
        let op = if grad_op { SeqOp::CausalMaskGrad } else { SeqOp::CausalMask };
        let y = b.op(Op::Seq(op), &[x]);
        let y = b.op(Op::Softmax(SoftmaxOp { kind: SoftmaxKind::Softmax, axis: 3 }), &[y]);
        let obj = b.objective(y, &mut rng);
        let err = gradcheck(&b, obj, 64, &mut rng);
        prop_assert!(err < TOLERANCE, "{op} over {m}x{n}: relative error {err:e}");
    }
}

/// The mask really hides the future: masked scores get zero weight.
#[test]
fn causal_mask_gives_future_positions_zero_weight() {
    use nnc_compiler::ops::{EvalCtx, Tensor};
    let x = Tensor::from_shape_vec(vec![1, 3, 3], (0..9).map(f64::from).collect()).unwrap();
    let cx = EvalCtx::new(1);
    let masked = Op::Seq(SeqOp::CausalMask).eval(&[&x], &cx).unwrap();
    let p = Op::Softmax(SoftmaxOp {
        kind: SoftmaxKind::Softmax,
        axis: 2,
    })
    .eval(&[&masked], &cx)
    .unwrap();
    let p: Vec<f64> = p.iter().copied().collect();
    assert_eq!(p[0], 1.0);
    assert_eq!((p[1], p[2], p[5]), (0.0, 0.0, 0.0));
    assert!((p[3] + p[4] - 1.0).abs() < 1e-12 && p[4] > p[3]);
}

#[test]
fn layer_norm_has_no_second_derivative_and_says_so() {
    let mut rng = Rng(1);
    let mut b = Builder::default();
    let x = b.input("x", shape(&[2, 3]), Domain::Uniform(-1.0, 1.0), &mut rng);
    let g = b.input("g", shape(&[2, 3]), Domain::Uniform(-1.0, 1.0), &mut rng);
    let y = b.op(Op::Seq(SeqOp::LayerNormGrad { eps: 1e-5 }), &[x, g]);
    let obj = b.objective(y, &mut rng);
    let mut graph = b.graph.clone();
    let err = gradients(&mut graph, obj, &[x]).unwrap_err();
    assert_eq!(
        err.message,
        "cannot differentiate: the second derivative of layer_norm is not supported"
    );
}
