//! Whole-network gradient checks: the training graph of a real model (forward,
//! loss, regularisation and backward together) against central differences
//! of the f64 interpreter.

mod support;

use nnc_compiler::autodiff::training_graph;
use nnc_compiler::interp::evaluate;
use nnc_compiler::ir::GradOptions;
use nnc_compiler::lower::layers;
use nnc_compiler::ops::Tensor;
use nnc_compiler::syntax::ast;
use nnc_compiler::{check_source, graph::DType, SourceFile};
use std::collections::HashMap;
use support::*;

fn load(path: &str) -> nnc_compiler::Module {
    let full = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&full).expect("model file");
    let src = SourceFile::new(path, text);
    check_source(&src).unwrap_or_else(|e| panic!("{}", src.render(&e.diagnostics, false)))
}

/// Checks every parameter gradient (and the requested input gradients) of a
/// network on random data; returns the worst relative error per tensor.
fn check_network(path: &str, inputs_wrt: &[&str], coords: usize, seed: u64) -> Vec<(String, f64)> {
    let module = load(path);
    let net = &module.networks[0];
    let cfg = module.train_config(&net.name);
    let opts = GradOptions {
        regularization: cfg.regularization,
        inputs: inputs_wrt.iter().map(|s| s.to_string()).collect(),
    };
    let tg = training_graph(net, &opts).expect("differentiable");
    tg.graph.verify().expect("well-formed training graph");
    let mut rng = Rng(seed);
    let mut bindings: HashMap<String, Tensor> = HashMap::new();
    for i in &net.inputs {
        let dims = concrete(&i.ty.shape);
        let v = match (i.kind, i.ty.dtype) {
            (_, DType::Class { classes }) => tensor(&dims, Domain::Classes(classes), &mut rng),
            _ => tensor(&dims, Domain::Uniform(-1.0, 1.0), &mut rng),
        };
        bindings.insert(i.name.clone(), v);
    }
    for p in &net.params {
        let dims = p.shape.resolve(1);
        let bound = (3.0 / dims[0] as f64).sqrt();
        bindings.insert(
            p.name.clone(),
            tensor(&dims, Domain::Uniform(-bound, bound), &mut rng),
        );
    }
    // Running statistics at their initial values (the training form does
    // not read them, but they are leaves of the graph).
    for st in &net.states {
        let dims = st.shape.resolve(1);
        bindings.insert(st.name.clone(), Tensor::from_elem(dims, st.init));
    }
    let values = evaluate(&tg.graph, &bindings).expect("evaluates");
    let objective = |b: &HashMap<String, Tensor>| {
        evaluate(&tg.graph, b)
            .expect("evaluates")
            .scalar(tg.objective)
    };
    let h = 1e-5;
    let mut out = Vec::new();
    let targets = tg
        .params
        .iter()
        .chain(&tg.inputs)
        .map(|(name, _, grad)| (name.clone(), *grad));
    for (name, grad) in targets {
        let analytic = values.get(grad).clone();
        let n = analytic.len();
        let mut b = bindings.clone();
        let (mut err, mut scale) = (0.0f64, 1e-3f64);
        for _ in 0..coords.min(n) {
            let i = rng.below(n);
            let orig = bindings[&name].as_slice().unwrap()[i];
            let mut at = |v: f64| {
                b.get_mut(&name).unwrap().as_slice_mut().unwrap()[i] = v;
                objective(&b)
            };
            let numeric = (at(orig + h) - at(orig - h)) / (2.0 * h);
            at(orig);
            let a = analytic.as_slice().unwrap()[i];
            err = err.max((a - numeric).abs());
            scale = scale.max(a.abs()).max(numeric.abs());
        }
        out.push((name, err / scale));
    }
    out
}

/// A model whose whole-network gradients are checked.
struct Case {
    /// Relative to the compiler crate.
    path: &'static str,
    /// Inputs differentiated as well as the parameters.
    inputs: &'static [&'static str],
    /// Coordinates sampled per tensor.
    coords: usize,
    seed: u64,
    /// The tensors whose gradients are checked, in order.
    tensors: &'static [&'static str],
}

/// Every model whose gradients are checked. The models that must cover
/// every function and every layer are among them (see
/// [`the_checked_models_use_every_function_and_layer`]), so a new op or
/// layer is gradient-checked as soon as it is added to one.
const MODELS: &[Case] = &[
    Case {
        path: "../examples/models/mnist_mlp.nn",
        inputs: &["image"],
        coords: 24,
        seed: 11,
        tensors: &[
            "h1.weight",
            "h1.bias",
            "h2.weight",
            "h2.bias",
            "logits.weight",
            "logits.bias",
            "image",
        ],
    },
    Case {
        path: "tests/models/every_op.nn",
        inputs: &["x", "target"],
        coords: 40,
        seed: 5,
        tensors: &[
            "w", "scale", "p", "k", "h.weight", "h.bias", "e.weight", "x", "target",
        ],
    },
    Case {
        path: "tests/models/conv_net.nn",
        inputs: &["image"],
        coords: 30,
        seed: 3,
        tensors: &[
            "k2",
            "c1.weight",
            "c1.bias",
            "c3.weight",
            "logits.weight",
            "logits.bias",
            "logits.1.weight",
            "image",
        ],
    },
    Case {
        path: "tests/models/seq_ops.nn",
        inputs: &["x"],
        coords: 24,
        seed: 9,
        tensors: &[
            "table",
            "e.weight",
            "c.gamma",
            "c.beta",
            "a.query.weight",
            "a.query.bias",
            "a.key.weight",
            "a.key.bias",
            "a.value.weight",
            "a.value.bias",
            "a.output.weight",
            "a.output.bias",
            "logits.weight",
            "logits.bias",
            "x",
        ],
    },
    Case {
        path: "tests/models/every_layer.nn",
        inputs: &["image", "target"],
        coords: 30,
        seed: 7,
        tensors: &[
            "c.weight",
            "c.bias",
            "c.1.weight",
            "c.1.bias",
            "h.weight",
            "h.bias",
            "e.weight",
            "a.gamma",
            "a.beta",
            "a.1.query.weight",
            "a.1.query.bias",
            "a.1.key.weight",
            "a.1.key.bias",
            "a.1.value.weight",
            "a.1.value.bias",
            "a.1.output.weight",
            "a.1.output.bias",
            "y.weight",
            "y.bias",
            "image",
            "target",
        ],
    },
];

fn check(case: &Case) {
    let errors = check_network(case.path, case.inputs, case.coords, case.seed);
    let names: Vec<&str> = errors.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(names, case.tensors, "{}", case.path);
    for (name, err) in errors {
        assert!(err < 1e-6, "{}: {name}: relative error {err:e}", case.path);
    }
}

fn case(path: &str) -> &'static Case {
    MODELS
        .iter()
        .find(|c| c.path.ends_with(path))
        .expect("a listed model")
}

#[test]
fn mnist_mlp_gradients_match_finite_differences() {
    check(case("mnist_mlp.nn"));
}

#[test]
fn every_op_network_gradients_match_finite_differences() {
    check(case("every_op.nn"));
}

#[test]
fn conv_net_gradients_match_finite_differences() {
    check(case("conv_net.nn"));
}

#[test]
fn seq_ops_network_gradients_match_finite_differences() {
    check(case("seq_ops.nn"));
}

#[test]
fn every_layer_network_gradients_match_finite_differences() {
    check(case("every_layer.nn"));
}

/// Every call of a parsed model: its name, whether its first argument is
/// piped in, and its written arguments.
fn calls<'a>(e: &'a ast::Expr, piped: bool, out: &mut Vec<(&'a str, bool, &'a [ast::Arg])>) {
    match &e.kind {
        ast::ExprKind::Call { func, args } => {
            out.push((func.name.as_str(), piped, args));
            for a in args {
                calls(&a.value, false, out);
            }
        }
        ast::ExprKind::Pipe { lhs, rhs } => {
            calls(lhs, false, out);
            match &rhs.kind {
                ast::ExprKind::Name(f) => out.push((f.name.as_str(), true, &[])),
                _ => calls(rhs, true, out),
            }
        }
        ast::ExprKind::Binary { lhs, rhs, .. } => {
            calls(lhs, false, out);
            calls(rhs, false, out);
        }
        ast::ExprKind::Neg(x) => calls(x, false, out),
        ast::ExprKind::List(items) => items.iter().for_each(|i| calls(i, false, out)),
        _ => {}
    }
}

/// The gradient-checked models together call every function of the op
/// table and every layer of the layer table (`conv2d` in both its forms),
/// and write every operator: adding an op or a layer without adding it to
/// one of them fails here, and once added, it is gradient-checked.
#[test]
fn the_checked_models_use_every_function_and_layer() {
    let texts: Vec<String> = MODELS
        .iter()
        .map(|c| {
            std::fs::read_to_string(format!("{}/{}", env!("CARGO_MANIFEST_DIR"), c.path)).unwrap()
        })
        .collect();
    let files: Vec<ast::File> = texts
        .iter()
        .map(|t| nnc_compiler::syntax::parse(t).expect("parses"))
        .collect();
    let mut used: Vec<(&str, bool, &[ast::Arg])> = Vec::new();
    for stmt in files
        .iter()
        .flat_map(|f| &f.networks)
        .flat_map(|n| &n.stmts)
    {
        match &stmt.kind {
            ast::StmtKind::Let { value, .. } | ast::StmtKind::Loss { value } => {
                calls(value, false, &mut used)
            }
            ast::StmtKind::Output { value: Some(v), .. } => calls(v, false, &mut used),
            _ => {}
        }
    }
    let layer_of = |(name, piped, args): &(&str, bool, &[ast::Arg])| {
        layers().find(|l| l.name == *name && (l.applies)(*piped, args))
    };
    let mut missing: Vec<String> = Vec::new();
    for f in nnc_compiler::ops::functions() {
        if !used.iter().any(|c| c.0 == f.name && layer_of(c).is_none()) {
            missing.push(format!("function {}", f.name));
        }
    }
    for l in layers() {
        if !used
            .iter()
            .any(|c| layer_of(c).is_some_and(|u| u.name == l.name))
        {
            missing.push(format!("layer {}", l.name));
        }
    }
    for op in [" @ ", " + ", " - ", " * ", " / ", "|>", "(-"] {
        if !texts.iter().any(|t| t.contains(op)) {
            missing.push(format!("operator {op}"));
        }
    }
    assert!(
        missing.is_empty(),
        "not used in a gradient-checked model (MODELS): {missing:?}"
    );
}
