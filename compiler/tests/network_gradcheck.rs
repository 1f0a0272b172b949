//! Whole-network gradient checks: the training graph of a real model (forward,
//! loss, regularisation and backward together) against central differences
//! of the f64 interpreter.

mod support;

use nnc_compiler::autodiff::{training_graph, GradOptions};
use nnc_compiler::interp::evaluate;
use nnc_compiler::ops::Tensor;
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

#[test]
fn mnist_mlp_gradients_match_finite_differences() {
    let errors = check_network("../examples/models/mnist_mlp.nn", &["image"], 24, 11);
    let names: Vec<&str> = errors.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "h1.weight",
            "h1.bias",
            "h2.weight",
            "h2.bias",
            "logits.weight",
            "logits.bias",
            "image"
        ]
    );
    for (name, err) in errors {
        assert!(err < 1e-6, "{name}: relative error {err:e}");
    }
}

#[test]
fn every_op_network_gradients_match_finite_differences() {
    let errors = check_network("tests/models/every_op.nn", &["x", "target"], 40, 5);
    let names: Vec<&str> = errors.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        names,
        ["w", "scale", "p", "k", "h.weight", "h.bias", "e.weight", "x", "target"]
    );
    for (name, err) in errors {
        assert!(err < 1e-6, "{name}: relative error {err:e}");
    }
}

#[test]
fn conv_net_gradients_match_finite_differences() {
    let errors = check_network("tests/models/conv_net.nn", &["image"], 30, 3);
    let names: Vec<&str> = errors.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "k2",
            "c1.weight",
            "c1.bias",
            "c3.weight",
            "logits.weight",
            "logits.bias",
            "logits.1.weight",
            "image"
        ]
    );
    for (name, err) in errors {
        assert!(err < 1e-6, "{name}: relative error {err:e}");
    }
}

#[test]
fn seq_ops_network_gradients_match_finite_differences() {
    let errors = check_network("tests/models/seq_ops.nn", &["x"], 24, 9);
    let names: Vec<&str> = errors.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        names,
        [
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
            "x"
        ]
    );
    for (name, err) in errors {
        assert!(err < 1e-6, "{name}: relative error {err:e}");
    }
}

/// The every-op model really does use every function of the language, so
/// that adding an op without adding it here fails loudly.
#[test]
fn every_op_model_covers_every_function() {
    // The sequence functions are exercised by seq_ops.nn.
    let text = ["every_op.nn", "seq_ops.nn"]
        .map(|f| {
            std::fs::read_to_string(format!("{}/tests/models/{f}", env!("CARGO_MANIFEST_DIR")))
                .unwrap()
        })
        .concat();
    let mut missing: Vec<&str> = nnc_compiler::ops::functions()
        .map(|f| f.name)
        .filter(|name| !text.contains(&format!("{name}(")))
        .collect();
    for sugar in ["dense", "mse", "l1"] {
        if !text.contains(&format!("{sugar}(")) {
            missing.push(sugar);
        }
    }
    for op in [" @ ", " + ", " - ", " * ", " / ", "|>", "(-"] {
        if !text.contains(op) {
            missing.push(op);
        }
    }
    assert!(missing.is_empty(), "not used in every_op.nn: {missing:?}");
}
