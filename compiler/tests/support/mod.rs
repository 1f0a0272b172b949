//! Shared test support: a seeded generator, graph builders and the
//! finite-difference gradient check against the f64 interpreter.
#![allow(dead_code)]

use ndarray::IxDyn;
use nnc_compiler::autodiff::gradients;
use nnc_compiler::graph::{DType, Dim, Graph, NodeId, Shape, TensorType};
use nnc_compiler::interp::evaluate;
use nnc_compiler::ops::{LeafOp, Op, ReduceKind, ReduceOp, Tensor};
use nnc_compiler::Span;
use proptest::test_runner::Config as ProptestConfig;
use std::collections::HashMap;

pub mod cli;

/// Every model with a `.nn` file in the repository (the examples', the
/// compiler's test models and the end-to-end tests'), as absolute paths in
/// a fixed order: the listing the whole-pipeline checks walk.
pub fn all_models() -> Vec<String> {
    let mut out = Vec::new();
    for dir in ["../examples/models", "tests/models", "../tests/models"] {
        let full = format!("{}/{dir}", env!("CARGO_MANIFEST_DIR"));
        let mut files: Vec<String> = std::fs::read_dir(&full)
            .unwrap_or_else(|e| panic!("{full}: {e}"))
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".nn"))
            .map(|n| format!("{full}/{n}"))
            .collect();
        files.sort();
        out.extend(files);
    }
    out
}

/// The bar every gradient rule must clear (relative error of [`gradcheck`]).
pub const TOLERANCE: f64 = 1e-6;

/// The proptest configuration of the gradient checks: 48 cases, no
/// persisted failures.
pub fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// The batch size every test binds `batch` to.
pub const BATCH: usize = 3;

/// The workspace's seeded test generator.
pub use nnc_test_support::Rng;

/// How the values of one input are drawn.
#[derive(Clone, Copy, Debug)]
pub enum Domain {
    /// Uniform in [lo, hi).
    Uniform(f64, f64),
    /// Uniform magnitude in [lo, hi) with a random sign: keeps values away
    /// from kinks at 0 (relu, abs) and poles (division).
    AwayFromZero(f64, f64),
    /// A shuffled ladder of distinct values 0.1 apart plus small noise:
    /// no two values within a finite-difference step (max's ties).
    Distinct,
    /// Class indices in 0..n.
    Classes(usize),
}

/// Inputs of a normalization (layer norm, batch norm) with epsilon `eps`.
/// A group of nearly equal values has a standard deviation near 0, where
/// the normalization bends within a few multiples of sqrt(eps); with a tiny
/// eps a central difference of step 1e-5 is then off by about
/// (step / std)^2, and the check would fail on conditioning, not on the
/// gradient (layer norm over [3, 3, 2] with seed 1623550184931659216 gave
/// 1.1e-6, batch norm over [2, 3] with seed 14009695661461165636 1.2e-6).
/// So a tiny eps gets distinct values (at least 0.1 apart); a larger one
/// keeps uniform values, which also probes the groups that eps dominates.
pub fn normalized_domain(eps: f64) -> Domain {
    if eps < 1e-3 {
        Domain::Distinct
    } else {
        Domain::Uniform(-2.0, 2.0)
    }
}

pub fn tensor(shape: &[usize], domain: Domain, rng: &mut Rng) -> Tensor {
    let n: usize = shape.iter().product();
    let mut v: Vec<f64> = match domain {
        Domain::Uniform(lo, hi) => (0..n).map(|_| rng.range(lo, hi)).collect(),
        Domain::AwayFromZero(lo, hi) => (0..n)
            .map(|_| {
                let m = rng.range(lo, hi);
                if rng.unit() < 0.5 {
                    -m
                } else {
                    m
                }
            })
            .collect(),
        Domain::Distinct => (0..n)
            .map(|i| i as f64 * 0.1 - n as f64 * 0.05 + rng.range(0.0, 0.01))
            .collect(),
        Domain::Classes(c) => (0..n).map(|_| rng.below(c) as f64).collect(),
    };
    if matches!(domain, Domain::Distinct) {
        for i in (1..n).rev() {
            v.swap(i, rng.below(i + 1));
        }
    }
    Tensor::from_shape_vec(IxDyn(shape), v).expect("shape and length agree")
}

pub fn concrete(shape: &Shape) -> Vec<usize> {
    shape.resolve(BATCH)
}

/// A graph under construction with the values bound to its leaves.
#[derive(Default)]
pub struct Builder {
    pub graph: Graph,
    pub bindings: HashMap<String, Tensor>,
    /// Leaves to differentiate with respect to.
    pub wrt: Vec<(String, NodeId)>,
}

impl Builder {
    /// An f32 input with random values, differentiated.
    pub fn input(&mut self, name: &str, shape: Shape, domain: Domain, rng: &mut Rng) -> NodeId {
        let value = tensor(&concrete(&shape), domain, rng);
        let id = self
            .graph
            .add(
                Op::Leaf(LeafOp::Input {
                    name: name.into(),
                    shape,
                }),
                &[],
                Span::default(),
            )
            .expect("leaf");
        self.bindings.insert(name.into(), value);
        self.wrt.push((name.into(), id));
        id
    }

    /// Class labels with random values (never differentiated).
    pub fn labels(&mut self, name: &str, shape: Shape, classes: usize, rng: &mut Rng) -> NodeId {
        let value = tensor(&concrete(&shape), Domain::Classes(classes), rng);
        let id = self
            .graph
            .add(
                Op::Leaf(LeafOp::Label {
                    name: name.into(),
                    shape,
                    classes,
                }),
                &[],
                Span::default(),
            )
            .expect("leaf");
        self.bindings.insert(name.into(), value);
        id
    }

    pub fn op(&mut self, op: Op, operands: &[NodeId]) -> NodeId {
        self.graph
            .add(op.clone(), operands, Span::default())
            .unwrap_or_else(|e| panic!("{op}: {}", e.message))
    }

    /// Turns any f32 node into a scalar objective: sum(out ⊙ r) with random
    /// weights r, so every output element contributes differently.
    pub fn objective(&mut self, out: NodeId, rng: &mut Rng) -> NodeId {
        let ty = self.graph.ty(out).clone();
        assert_eq!(ty.dtype, DType::F32);
        if ty.shape.rank() == 0 {
            return out;
        }
        let value = tensor(&concrete(&ty.shape), Domain::Uniform(-1.0, 1.0), rng);
        let r = self
            .graph
            .add(
                Op::Leaf(LeafOp::Input {
                    name: "__weights".into(),
                    shape: ty.shape.clone(),
                }),
                &[],
                Span::default(),
            )
            .expect("leaf");
        self.bindings.insert("__weights".into(), value);
        let prod = self.op(Op::Binary(nnc_compiler::ops::BinaryOp::Mul), &[out, r]);
        self.op(
            Op::Reduce(ReduceOp {
                kind: ReduceKind::Sum,
                axes: vec![],
                keepdims: false,
            }),
            &[prod],
        )
    }
}

/// Largest error of the symbolic gradient against central differences, over
/// every differentiated leaf, relative to the larger gradient magnitude of
/// that leaf (floored at 1e-3 so that all-zero gradients compare absolutely).
/// At most `max_coords` coordinates per leaf are probed (a random subset).
pub fn gradcheck(b: &Builder, objective: NodeId, max_coords: usize, rng: &mut Rng) -> f64 {
    let forward = b.graph.clone();
    let mut graph = b.graph.clone();
    let wrt: Vec<NodeId> = b.wrt.iter().map(|w| w.1).collect();
    let grads = gradients(&mut graph, objective, &wrt).expect("differentiable");
    graph.verify().expect("training graph is well-formed");
    let values = evaluate(&graph, &b.bindings).expect("evaluates");
    let f = |bindings: &HashMap<String, Tensor>| {
        evaluate(&forward, bindings)
            .expect("evaluates")
            .scalar(objective)
    };
    let h = 1e-5;
    let mut worst: f64 = 0.0;
    for ((name, _), &g) in b.wrt.iter().zip(&grads) {
        let analytic = values.get(g).clone();
        let base = &b.bindings[name];
        assert_eq!(
            analytic.shape(),
            base.shape(),
            "gradient of `{name}` has the leaf's shape"
        );
        let n = base.len();
        let coords: Vec<usize> = if n <= max_coords {
            (0..n).collect()
        } else {
            (0..max_coords).map(|_| rng.below(n)).collect()
        };
        let mut bindings = b.bindings.clone();
        let mut err: f64 = 0.0;
        let mut scale: f64 = 1e-3;
        for &i in &coords {
            let orig = base.as_slice().expect("standard layout")[i];
            let set = |bindings: &mut HashMap<String, Tensor>, v: f64| {
                bindings.get_mut(name).unwrap().as_slice_mut().unwrap()[i] = v;
            };
            set(&mut bindings, orig + h);
            let fp = f(&bindings);
            set(&mut bindings, orig - h);
            let fm = f(&bindings);
            set(&mut bindings, orig);
            let numeric = (fp - fm) / (2.0 * h);
            let a = analytic.as_slice().expect("standard layout")[i];
            err = err.max((a - numeric).abs());
            scale = scale.max(a.abs()).max(numeric.abs());
        }
        worst = worst.max(err / scale);
    }
    worst
}

pub fn shape(dims: &[usize]) -> Shape {
    Shape::fixed(dims)
}

/// `dims` with the first dimension made the symbolic batch.
pub fn batched(dims: &[usize]) -> Shape {
    let mut s = Shape::fixed(dims);
    if let Some(first) = s.0.first_mut() {
        *first = Dim::Batch;
    }
    s
}

pub fn f32_type(s: Shape) -> TensorType {
    TensorType::f32(s)
}
