//! Every graph pass preserves meaning: the interpreter gives the same loss,
//! objective, gradients and outputs before and after each pass, on the
//! example models and on randomly generated graphs.

mod support;

use nnc_compiler::autodiff::{gradients, training_graph};
use nnc_compiler::graph::{Graph, NodeId, Shape};
use nnc_compiler::interp::evaluate;
use nnc_compiler::ir::{GradOptions, InputKind, OptLevel, TrainingGraph};
use nnc_compiler::ops::{
    BinaryOp, LeafOp, LossOp, Matmul, Op, ReduceKind, ReduceOp, ShapeOp, Tensor, UnaryOp,
};
use nnc_compiler::passes::{pipeline, Cse, Dce, Fold, Pass, SoftmaxCe};
use nnc_compiler::{check_source, SourceFile, Span};
use proptest::prelude::*;
use std::collections::HashMap;
use support::*;

fn passes() -> Vec<Box<dyn Pass>> {
    vec![
        Box::new(Fold),
        Box::new(Cse),
        Box::new(Dce),
        Box::new(SoftmaxCe),
        Box::new(pipeline(OptLevel::O2, &[])),
    ]
}

/// The values of every root, in `roots()` order.
fn root_values(tg: &TrainingGraph, bindings: &HashMap<String, Tensor>) -> Vec<Tensor> {
    let v = evaluate(&tg.graph, bindings).expect("evaluates");
    tg.roots().iter().map(|&r| v.get(r).clone()).collect()
}

fn assert_same(before: &[Tensor], after: &[Tensor], what: &str) {
    assert_eq!(before.len(), after.len());
    for (i, (a, b)) in before.iter().zip(after).enumerate() {
        assert_eq!(a.shape(), b.shape(), "{what}: root {i} changed shape");
        let scale = a.iter().fold(1e-300f64, |m, v| m.max(v.abs()));
        let err = a
            .iter()
            .zip(b.iter())
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max)
            / scale;
        assert!(err <= 1e-12, "{what}: root {i} differs by {err:e}");
    }
}

fn check_all_passes(tg: &TrainingGraph, bindings: &HashMap<String, Tensor>, what: &str) -> usize {
    let before = root_values(tg, bindings);
    let mut smallest = tg.graph.len();
    for pass in passes() {
        let mut after = tg.clone();
        pass.run(&mut after).expect("pass runs");
        after.graph.verify().expect("well-formed after the pass");
        assert!(after.forward_len <= after.graph.len());
        assert!(
            after.graph.len() <= tg.graph.len(),
            "{} grew the graph",
            pass.name()
        );
        assert_same(
            &before,
            &root_values(&after, bindings),
            &format!("{what} / {}", pass.name()),
        );
        smallest = smallest.min(after.graph.len());
    }
    smallest
}

fn model(path: &str) -> (TrainingGraph, HashMap<String, Tensor>) {
    let full = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
    let src = SourceFile::new(path, std::fs::read_to_string(full).unwrap());
    let module = check_source(&src).unwrap();
    let net = &module.networks[0];
    let cfg = module.train_config(&net.name);
    let opts = GradOptions {
        regularization: cfg.regularization,
        inputs: vec![],
    };
    let tg = training_graph(net, &opts).unwrap();
    let mut rng = Rng(9);
    let mut b = HashMap::new();
    for i in &net.inputs {
        let dims = concrete(&i.ty.shape);
        let d = match (i.kind, i.ty.dtype) {
            (InputKind::Labels, nnc_compiler::graph::DType::Class { classes }) => {
                Domain::Classes(classes)
            }
            _ => Domain::Uniform(-1.0, 1.0),
        };
        b.insert(i.name.clone(), tensor(&dims, d, &mut rng));
    }
    for p in &net.params {
        b.insert(
            p.name.clone(),
            tensor(&p.shape.resolve(1), Domain::Uniform(-0.3, 0.3), &mut rng),
        );
    }
    (tg, b)
}

#[test]
fn passes_preserve_the_example_models() {
    for path in [
        "../examples/models/mnist_mlp.nn",
        "tests/models/every_op.nn",
    ] {
        let (tg, b) = model(path);
        let smallest = check_all_passes(&tg, &b, path);
        assert!(
            smallest < tg.graph.len(),
            "{path}: the passes found nothing to remove"
        );
    }
}

/// The MNIST training graph has duplicated work that CSE removes: both
/// the loss and its gradient need softmax-family values of the logits.
#[test]
fn o1_shrinks_the_mnist_training_graph() {
    let (tg, _) = model("../examples/models/mnist_mlp.nn");
    let mut after = tg.clone();
    pipeline(OptLevel::O1, &[]).run(&mut after).unwrap();
    assert!(after.graph.len() < tg.graph.len());
    let mut nothing = tg.clone();
    let disabled: Vec<String> = nnc_compiler::passes::PASS_NAMES
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert!(!pipeline(OptLevel::O2, &disabled).run(&mut nothing).unwrap());
    assert_eq!(nothing.graph.len(), tg.graph.len());
}

/// At -O2 the gradient of cross-entropy is one op: no one-hot, no
/// subtraction left, and the interpreter agrees with the unfused graph.
#[test]
fn softmax_ce_makes_the_loss_gradient_one_op() {
    let (tg, b) = model("../examples/models/mnist_mlp.nn");
    let mut after = tg.clone();
    pipeline(OptLevel::O2, &[]).run(&mut after).unwrap();
    let count = |g: &Graph, f: &dyn Fn(&Op) -> bool| g.ids().filter(|&i| f(&g.node(i).op)).count();
    let is_grad = |op: &Op| *op == Op::Loss(LossOp::CrossEntropyGrad);
    let is_one_hot = |op: &Op| matches!(op, Op::Loss(LossOp::OneHot { .. }));
    assert_eq!(count(&after.graph, &is_grad), 1);
    assert_eq!(count(&after.graph, &is_one_hot), 0);
    assert_eq!(count(&tg.graph, &is_one_hot), 1);
    assert_same(
        &root_values(&tg, &b),
        &root_values(&after, &b),
        "softmax-ce",
    );
    let mut off = tg.clone();
    pipeline(OptLevel::O2, &["softmax-ce".to_string()])
        .run(&mut off)
        .unwrap();
    assert_eq!(count(&off.graph, &is_grad), 0, "--disable-pass softmax-ce");
}

/// A random graph over `[batch, 4]` values: unary and binary ops, matmuls,
/// reductions broadcast back, transposes and reshapes, multiplications by 1
/// and additions of 0, and repeated subexpressions.
fn random_graph(choices: &[(u8, u8, u8)], seed: u64) -> (TrainingGraph, HashMap<String, Tensor>) {
    let mut rng = Rng(seed);
    let mut b = Builder::default();
    let x = b.input(
        "x",
        batched(&[BATCH, 4]),
        Domain::Uniform(-1.0, 1.0),
        &mut rng,
    );
    let w = b.input("w", shape(&[4, 4]), Domain::Uniform(-1.0, 1.0), &mut rng);
    let mut vals: Vec<NodeId> = vec![x];
    let s = Span::default();
    let g: &mut Graph = &mut b.graph;
    let add = |g: &mut Graph, op: Op, ops: &[NodeId]| g.add(op, ops, s).expect("valid op");
    let one = add(g, Op::Leaf(LeafOp::scalar(1.0)), &[]);
    let zero = add(g, Op::Leaf(LeafOp::scalar(0.0)), &[]);
    let bshape = Shape(vec![
        nnc_compiler::graph::Dim::Batch,
        nnc_compiler::graph::Dim::Fixed(4),
    ]);
    for &(kind, i, j) in choices {
        let a = vals[i as usize % vals.len()];
        let c = vals[j as usize % vals.len()];
        let v = match kind % 10 {
            0 => add(
                g,
                Op::Unary([UnaryOp::Tanh, UnaryOp::Sigmoid, UnaryOp::Neg][i as usize % 3]),
                &[a],
            ),
            1 => add(
                g,
                Op::Binary([BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul][j as usize % 3]),
                &[a, c],
            ),
            2 => add(g, Op::Matmul(Matmul), &[a, w]),
            3 => {
                let r = add(
                    g,
                    Op::Reduce(ReduceOp {
                        kind: ReduceKind::Sum,
                        axes: vec![1],
                        keepdims: true,
                    }),
                    &[a],
                );
                add(
                    g,
                    Op::Shape(ShapeOp::Broadcast { to: bshape.clone() }),
                    &[r],
                )
            }
            4 => {
                let t = add(g, Op::Shape(ShapeOp::Transpose { perm: vec![1, 0] }), &[a]);
                add(g, Op::Shape(ShapeOp::Transpose { perm: vec![1, 0] }), &[t])
            }
            5 => {
                let r = add(
                    g,
                    Op::Shape(ShapeOp::Reshape {
                        to: Shape(vec![
                            nnc_compiler::graph::Dim::Batch,
                            nnc_compiler::graph::Dim::Fixed(2),
                            nnc_compiler::graph::Dim::Fixed(2),
                        ]),
                    }),
                    &[a],
                );
                add(g, Op::Shape(ShapeOp::Reshape { to: bshape.clone() }), &[r])
            }
            6 => add(g, Op::Binary(BinaryOp::Mul), &[a, one]),
            7 => add(g, Op::Binary(BinaryOp::Add), &[zero, a]),
            // The same expression twice: CSE's work.
            8 => {
                let p = add(g, Op::Unary(UnaryOp::Tanh), &[a]);
                let q = add(g, Op::Unary(UnaryOp::Tanh), &[a]);
                add(g, Op::Binary(BinaryOp::Mul), &[p, q])
            }
            _ => {
                let k = add(g, Op::Binary(BinaryOp::Mul), &[one, one]);
                add(g, Op::Binary(BinaryOp::Mul), &[a, k])
            }
        };
        vals.push(v);
    }
    let last = *vals.last().unwrap();
    let obj = b.objective(last, &mut rng);
    let mut graph = b.graph.clone();
    let forward_len = graph.len();
    let grads = gradients(&mut graph, obj, &[x, w]).expect("differentiable");
    let tg = TrainingGraph {
        graph,
        forward_len,
        loss: obj,
        objective: obj,
        params: vec![("w".into(), w, grads[1])],
        inputs: vec![("x".into(), x, grads[0])],
        embedded: Vec::new(),
        outputs: vec![("last".into(), last)],
        scores: None,
        states: Vec::new(),
        state_updates: Vec::new(),
    };
    (tg, b.bindings)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn passes_preserve_random_graphs(choices in prop::collection::vec((any::<u8>(), any::<u8>(), any::<u8>()), 1..12), seed in any::<u64>()) {
        let (tg, b) = random_graph(&choices, seed);
        check_all_passes(&tg, &b, "random graph");
    }
}
