//! The explanation graph (`input_gradient`, issue #26) against central
//! differences of the f64 interpreter: for every example model and every
//! compiler test model with a float input, the gradient of
//! Σ scores · cotangent with respect to each float input the prediction
//! reads, and the optimised graph (`driver::explain_graph` at -O2) equal to
//! the unoptimised one. Models whose prediction reads only token ids (the
//! transformer) are checked through their embeddings: the gradient with
//! respect to the gathered vectors `e_<input>`, against central differences
//! on those vectors.

mod support;

use nnc_compiler::autodiff::{input_gradient_graph, COTANGENT};
use nnc_compiler::codegen::Options;
use nnc_compiler::driver::explain_graph;
use nnc_compiler::interp::evaluate;
use nnc_compiler::ir::{Network, TrainingGraph};
use nnc_compiler::ops::Tensor;
use nnc_compiler::{check_source, graph::DType, SourceFile};
use std::collections::HashMap;
use support::*;

/// Random inputs, labels, parameters, state (at its initial values) and a
/// random cotangent for the explanation graph of `net`.
fn bindings(net: &Network, tg: &TrainingGraph, rng: &mut Rng) -> HashMap<String, Tensor> {
    let mut b = HashMap::new();
    for i in &net.inputs {
        let dims = concrete(&i.ty.shape);
        let v = match i.ty.dtype {
            DType::Class { classes } => tensor(&dims, Domain::Classes(classes), rng),
            _ => tensor(&dims, Domain::Uniform(-1.0, 1.0), rng),
        };
        b.insert(i.name.clone(), v);
    }
    for p in &net.params {
        let dims = p.shape.resolve(1);
        let bound = (3.0 / dims[0] as f64).sqrt();
        b.insert(
            p.name.clone(),
            tensor(&dims, Domain::Uniform(-bound, bound), rng),
        );
    }
    for st in &net.states {
        let dims = st.shape.resolve(1);
        b.insert(st.name.clone(), Tensor::from_elem(dims, st.init));
    }
    // A token input attributed through its embeddings: the explanation
    // graph reads the gathered vectors as the float input `e_<name>`.
    for (name, node, _) in &tg.inputs {
        if tg.embedded.iter().any(|e| e.0 == *name) {
            let dims = concrete(&tg.graph.ty(*node).shape);
            b.insert(
                key(tg, name),
                tensor(&dims, Domain::Uniform(-1.0, 1.0), rng),
            );
        }
    }
    let scores = tg.outputs[0].1;
    let dims = concrete(&tg.graph.ty(scores).shape);
    b.insert(
        COTANGENT.to_string(),
        tensor(&dims, Domain::Uniform(-1.0, 1.0), rng),
    );
    b
}

/// The name the explanation graph binds the attributed input `name` by:
/// itself, or `e_<name>` for a token input attributed through its
/// embeddings.
fn key(tg: &TrainingGraph, name: &str) -> String {
    if tg.embedded.iter().any(|e| e.0 == name) {
        format!("e_{name}")
    } else {
        name.to_string()
    }
}

/// The worst relative error of each input gradient against central
/// differences, on `coords` random coordinates.
fn check(net: &Network, seed: u64, coords: usize) -> Vec<(String, f64)> {
    let inference;
    let net = if net.is_modal() {
        inference = net.for_inference().unwrap();
        &inference
    } else {
        net
    };
    let tg = input_gradient_graph(net).expect("explainable");
    tg.graph.verify().expect("well-formed explanation graph");
    let mut rng = Rng(seed);
    let bind = bindings(net, &tg, &mut rng);
    let values = evaluate(&tg.graph, &bind).expect("evaluates");
    let objective = |b: &HashMap<String, Tensor>| {
        evaluate(&tg.graph, b)
            .expect("evaluates")
            .scalar(tg.objective)
    };
    let h = 1e-5;
    let mut out = Vec::new();
    for (input, _, grad) in &tg.inputs {
        let name = &key(&tg, input);
        let analytic = values.get(*grad).clone();
        let n = analytic.len();
        assert_eq!(n, bind[name].len(), "{name}: one gradient per input value");
        let mut b = bind.clone();
        let (mut err, mut scale) = (0.0f64, 1e-3f64);
        for _ in 0..coords.min(n) {
            let i = rng.below(n);
            let orig = bind[name].as_slice().unwrap()[i];
            let mut at = |v: f64| {
                b.get_mut(name).unwrap().as_slice_mut().unwrap()[i] = v;
                objective(&b)
            };
            let numeric = (at(orig + h) - at(orig - h)) / (2.0 * h);
            at(orig);
            let a = analytic.as_slice().unwrap()[i];
            err = err.max((a - numeric).abs());
            scale = scale.max(a.abs()).max(numeric.abs());
        }
        out.push((input.clone(), err / scale));
    }
    out
}

/// Whether the graph quantizes anything on the way to its scores.
fn straight_through(g: &nnc_compiler::graph::Graph) -> bool {
    g.ids()
        .any(|id| matches!(g.node(id).op, nnc_compiler::ops::Op::Quant(_)))
}

fn load(path: &str) -> nnc_compiler::Module {
    let full = if std::path::Path::new(path).is_absolute() {
        path.to_string()
    } else {
        format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))
    };
    let src = SourceFile::new(path, std::fs::read_to_string(full).unwrap());
    check_source(&src).unwrap_or_else(|e| panic!("{}", src.render(&e.diagnostics, false)))
}

#[test]
fn input_gradients_equal_central_differences_for_every_model() {
    let mut checked = 0;
    let mut transformer = false;
    let mut skipped = Vec::new();
    for path in all_models() {
        let module = load(&path);
        for net in &module.networks {
            let target = if net.is_modal() {
                net.for_inference().unwrap()
            } else {
                net.clone()
            };
            match input_gradient_graph(&target) {
                Err(d) => {
                    // Only token inputs, or no prediction: a diagnostic
                    // naming why, at the network.
                    assert!(
                        d.message.contains("reads no float input")
                            || d.message.contains("compares no prediction"),
                        "{path}: {}",
                        d.message
                    );
                    skipped.push(format!("{path} ({}): {}", net.name, d.message));
                }
                Ok(_) if straight_through(&target.graph) => {
                    // fake_quant's gradient is the straight-through estimate
                    // by design, not the derivative of its step function that
                    // differences measure (gradcheck.rs checks the rule).
                    skipped.push(format!("{path} ({}): fake_quant", net.name));
                }
                Ok(tg) => {
                    if path.contains("transformer.nn") {
                        assert_eq!(tg.inputs.len(), 1);
                        assert_eq!(tg.embedded.len(), 1, "tokens through the embeddings");
                        assert_eq!(tg.embedded[0].0, "tokens");
                        transformer = true;
                    }
                    if path.contains("every_layer.nn") || path.contains("seq_ops.nn") {
                        // A float input too: the entry point is as it was.
                        assert!(tg.embedded.is_empty(), "{path}");
                    }
                    for (input, err) in check(net, 17, 12) {
                        assert!(err < 1e-5, "{path}: d scores / d {input}: {err:e}");
                        eprintln!("{path}: d scores / d {input}: {err:.1e}");
                    }
                    checked += 1;
                }
            }
        }
    }
    eprintln!("skipped: {skipped:#?}");
    assert!(checked >= 9, "only {checked} models explained");
    // The transformer reads token ids only: it is explained through its
    // embeddings.
    assert!(transformer, "the transformer is explained");
}

#[test]
fn the_optimised_explanation_graph_equals_the_unoptimised_one() {
    for path in [
        "../examples/models/lenet.nn",
        "../examples/models/mnist_bn_dropout.nn",
        "tests/models/conv_net.nn",
        "tests/models/seq_ops.nn",
        "../examples/models/transformer.nn",
    ] {
        let module = load(path);
        let net = &module.networks[0];
        let target = if net.is_modal() {
            net.for_inference().unwrap()
        } else {
            net.clone()
        };
        let plain = input_gradient_graph(&target).unwrap();
        let optimised = explain_graph(net, &Options::default()).unwrap();
        let mut rng = Rng(3);
        let bind = bindings(&target, &plain, &mut rng);
        let a = evaluate(&plain.graph, &bind).unwrap();
        let b = evaluate(&optimised.graph, &bind).unwrap();
        for (x, y) in plain.inputs.iter().zip(&optimised.inputs) {
            let (u, v) = (a.get(x.2), b.get(y.2));
            let worst = u
                .iter()
                .zip(v.iter())
                .map(|(p, q)| (p - q).abs() / p.abs().max(1e-3))
                .fold(0.0, f64::max);
            assert!(worst < 1e-9, "{path}: {} differs by {worst:e}", x.0);
        }
    }
}

#[test]
fn a_network_named_input_cotangent_is_refused() {
    let src = SourceFile::new(
        "c.nn",
        "network N { input cotangent: f32[batch, 3]; label y: class[batch] of 2; \
         logits = dense(cotangent, 2); loss cross_entropy(logits, y); }",
    );
    let module = check_source(&src).unwrap();
    let e = input_gradient_graph(&module.networks[0]).unwrap_err();
    assert!(e.message.contains("collides"), "{}", e.message);
}
