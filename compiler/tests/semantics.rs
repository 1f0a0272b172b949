//! Forward semantics of the ops in the f64 interpreter, against closed forms
//! and naive reference implementations written independently here.

mod support;

use nnc_compiler::graph::{Dim, Shape};
use nnc_compiler::interp::evaluate;
use nnc_compiler::ops::softmax::SoftmaxKind;
use nnc_compiler::ops::{
    BinaryOp, LeafOp, LossOp, Matmul, Op, ReduceKind, ReduceOp, SoftmaxOp, UnaryOp,
};
use support::*;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * (1.0 + a.abs().max(b.abs()))
}

#[test]
fn matmul_equals_naive_triple_loop() {
    for (lead, m, k, n) in [(0, 3, 4, 5), (2, 2, 3, 1), (0, 1, 1, 1)] {
        let mut rng = Rng(3 + m as u64);
        let mut b = Builder::default();
        let mut da = vec![m, k];
        if lead > 0 {
            da.insert(0, lead);
        }
        let x = b.input("a", shape(&da), Domain::Uniform(-1.0, 1.0), &mut rng);
        let w = b.input("w", shape(&[k, n]), Domain::Uniform(-1.0, 1.0), &mut rng);
        let y = b.op(Op::Matmul(Matmul), &[x, w]);
        let v = evaluate(&b.graph, &b.bindings).unwrap();
        let (a, w) = (&b.bindings["a"], &b.bindings["w"]);
        let a = a.as_slice().unwrap();
        let w = w.as_slice().unwrap();
        let out = v.get(y).as_slice().unwrap().to_vec();
        for l in 0..lead.max(1) {
            for i in 0..m {
                for j in 0..n {
                    let naive: f64 = (0..k)
                        .map(|p| a[l * m * k + i * k + p] * w[p * n + j])
                        .sum();
                    assert!(close(out[l * m * n + i * n + j], naive));
                }
            }
        }
    }
}

#[test]
fn softmax_is_normalised_and_stable() {
    let mut b = Builder::default();
    let mut rng = Rng(1);
    let x = b.input(
        "x",
        batched(&[BATCH, 3, 4]),
        Domain::Uniform(-2.0, 2.0),
        &mut rng,
    );
    // Huge logits must not overflow.
    b.bindings.get_mut("x").unwrap().as_slice_mut().unwrap()[0] = 1000.0;
    let s = b.op(
        Op::Softmax(SoftmaxOp {
            kind: SoftmaxKind::Softmax,
            axis: 1,
        }),
        &[x],
    );
    let ls = b.op(
        Op::Softmax(SoftmaxOp {
            kind: SoftmaxKind::LogSoftmax,
            axis: 1,
        }),
        &[x],
    );
    let v = evaluate(&b.graph, &b.bindings).unwrap();
    let xv = &b.bindings["x"];
    let (sv, lsv) = (v.get(s), v.get(ls));
    for i in 0..BATCH {
        for k in 0..4 {
            let col: Vec<f64> = (0..3).map(|j| xv[[i, j, k]]).collect();
            let m = col.iter().cloned().fold(f64::MIN, f64::max);
            let z: f64 = col.iter().map(|c| (c - m).exp()).sum();
            let total: f64 = (0..3).map(|j| sv[[i, j, k]]).sum();
            assert!(close(total, 1.0));
            for j in 0..3 {
                let want = (col[j] - m).exp() / z;
                assert!(close(sv[[i, j, k]], want));
                assert!(close(lsv[[i, j, k]], (col[j] - m) - z.ln()));
            }
        }
    }
    assert!(sv.iter().all(|v| v.is_finite()) && lsv.iter().all(|v| v.is_finite()));
}

#[test]
fn losses_have_their_closed_forms() {
    // Zero logits: cross-entropy is ln(C) whatever the labels; BCE is ln 2.
    let mut b = Builder::default();
    let mut rng = Rng(2);
    let logits = b.input(
        "logits",
        batched(&[BATCH, 7]),
        Domain::Uniform(0.0, 0.0),
        &mut rng,
    );
    let labels = b.labels("labels", batched(&[BATCH]), 7, &mut rng);
    let t = b.input(
        "t",
        batched(&[BATCH, 7]),
        Domain::Uniform(0.0, 1.0),
        &mut rng,
    );
    let ce = b.op(Op::Loss(LossOp::CrossEntropy), &[logits, labels]);
    let bce = b.op(Op::Loss(LossOp::BinaryCrossEntropy), &[logits, t]);
    let v = evaluate(&b.graph, &b.bindings).unwrap();
    assert!(close(v.scalar(ce), 7f64.ln()));
    assert!(close(v.scalar(bce), 2f64.ln()));

    // A confident right answer costs about exp(-margin); stable at margin 800.
    let mut b = Builder::default();
    let logits = b.input(
        "logits",
        shape(&[1, 2]),
        Domain::Uniform(0.0, 0.0),
        &mut rng,
    );
    let labels = b.labels("labels", shape(&[1]), 2, &mut rng);
    b.bindings
        .get_mut("logits")
        .unwrap()
        .as_slice_mut()
        .unwrap()[0] = 800.0;
    b.bindings
        .get_mut("labels")
        .unwrap()
        .as_slice_mut()
        .unwrap()[0] = 1.0;
    let ce = b.op(Op::Loss(LossOp::CrossEntropy), &[logits, labels]);
    let v = evaluate(&b.graph, &b.bindings).unwrap();
    assert!(
        close(v.scalar(ce), 800.0),
        "wrong class by 800: {}",
        v.scalar(ce)
    );
}

#[test]
fn unary_functions_have_their_closed_forms() {
    let mut b = Builder::default();
    let mut rng = Rng(4);
    let x = b.input("x", shape(&[6]), Domain::Uniform(0.0, 0.0), &mut rng);
    let xs = [1.0, -1.0, 0.0, 800.0, -800.0, 2.0];
    b.bindings
        .get_mut("x")
        .unwrap()
        .as_slice_mut()
        .unwrap()
        .copy_from_slice(&xs);
    let ops = [
        UnaryOp::Gelu,
        UnaryOp::Sigmoid,
        UnaryOp::Tanh,
        UnaryOp::LeakyRelu(0.1),
        UnaryOp::Relu,
        UnaryOp::Abs,
    ];
    let nodes: Vec<_> = ops.iter().map(|&op| b.op(Op::Unary(op), &[x])).collect();
    let v = evaluate(&b.graph, &b.bindings).unwrap();
    let get = |i: usize| v.get(nodes[i]).as_slice().unwrap().to_vec();
    // gelu(1) = Φ(1), gelu(-1) = -Φ(-1) = -(1 - Φ(1)).
    let phi1 = 0.841_344_746_068_542_9;
    assert!(close(get(0)[0], phi1));
    assert!(close(get(0)[1], -(1.0 - phi1)));
    assert_eq!(get(0)[2], 0.0);
    let s = get(1);
    assert!(close(s[0], 1.0 / (1.0 + (-1f64).exp())));
    assert_eq!((s[3], s[4]), (1.0, 0.0), "sigmoid saturates without NaN");
    assert!(close(get(2)[5], 2f64.tanh()));
    assert_eq!(get(3)[..3], [1.0, -0.1, 0.0]);
    assert_eq!(get(4)[..3], [1.0, 0.0, 0.0]);
    assert_eq!(get(5)[..2], [1.0, 1.0]);
}

#[test]
fn reductions_equal_naive_loops() {
    let mut b = Builder::default();
    let mut rng = Rng(5);
    let x = b.input(
        "x",
        batched(&[BATCH, 4]),
        Domain::Uniform(-3.0, 3.0),
        &mut rng,
    );
    let red = |kind, axes: Vec<usize>, keepdims| {
        Op::Reduce(ReduceOp {
            kind,
            axes,
            keepdims,
        })
    };
    let s = b.op(red(ReduceKind::Sum, vec![1], false), &[x]);
    let m = b.op(red(ReduceKind::Mean, vec![], false), &[x]);
    let mx = b.op(red(ReduceKind::Max, vec![0], true), &[x]);
    let v = evaluate(&b.graph, &b.bindings).unwrap();
    let xv = &b.bindings["x"];
    assert_eq!(v.get(mx).shape(), &[1, 4]);
    let mut all = 0.0;
    for i in 0..BATCH {
        let row: f64 = (0..4).map(|j| xv[[i, j]]).sum();
        assert!(close(v.get(s)[[i]], row));
        all += row;
    }
    assert!(close(v.scalar(m), all / (BATCH * 4) as f64));
    for j in 0..4 {
        let col = (0..BATCH).map(|i| xv[[i, j]]).fold(f64::MIN, f64::max);
        assert_eq!(v.get(mx)[[0, j]], col);
    }
}

/// A constant scaled by the batch size: what mean's gradient uses.
#[test]
fn batch_scaled_constants_follow_the_bound_batch() {
    let mut b = Builder::default();
    let mut rng = Rng(6);
    let x = b.input(
        "x",
        batched(&[BATCH, 2]),
        Domain::Uniform(-1.0, 1.0),
        &mut rng,
    );
    let c = b.op(
        Op::Leaf(LeafOp::Constant {
            value: 2.0,
            batch_pow: -1,
        }),
        &[],
    );
    let y = b.op(Op::Binary(BinaryOp::Mul), &[x, c]);
    let v = evaluate(&b.graph, &b.bindings).unwrap();
    assert_eq!(v.batch, BATCH);
    assert!(close(v.scalar(c), 2.0 / BATCH as f64));
    assert!(close(
        v.get(y)[[1, 1]],
        b.bindings["x"][[1, 1]] * 2.0 / BATCH as f64
    ));
    let _ = Shape(vec![Dim::Batch]);
}

#[test]
fn interpreter_rejects_bad_bindings() {
    let mut b = Builder::default();
    let mut rng = Rng(8);
    let x = b.input(
        "x",
        batched(&[BATCH, 2]),
        Domain::Uniform(-1.0, 1.0),
        &mut rng,
    );
    let labels = b.labels("y", batched(&[BATCH]), 2, &mut rng);
    let logits = b.op(Op::Binary(BinaryOp::Add), &[x, x]);
    b.op(Op::Loss(LossOp::CrossEntropy), &[logits, labels]);
    let mut bad = b.bindings.clone();
    bad.get_mut("y").unwrap().as_slice_mut().unwrap()[0] = 2.0;
    let e = evaluate(&b.graph, &bad).unwrap_err();
    assert_eq!(e.to_string(), "`y`: label 2 is not a class index in 0..2");
    let mut bad = b.bindings.clone();
    bad.insert(
        "y".into(),
        tensor(&[BATCH + 1], Domain::Classes(2), &mut rng),
    );
    let e = evaluate(&b.graph, &bad).unwrap_err();
    assert_eq!(
        e.to_string(),
        "`y` implies batch size 4, but an earlier value implies 3"
    );
    let mut bad = b.bindings.clone();
    bad.remove("x");
    assert_eq!(
        evaluate(&b.graph, &bad).unwrap_err().to_string(),
        "no value bound for `x`"
    );
}
