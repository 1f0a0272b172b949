//! A teacher network compiled into its student (`teacher:` in the train
//! block), in the f64 interpreter: the spliced student's loss equals the
//! unspliced student's fed the teacher's inference-form logits (evaluated
//! on their own), its gradient agrees with central differences, and the
//! teacher contributes no parameter, no gradient and nothing but its
//! logits to the student's gradient.

mod support;

use nnc_compiler::autodiff::training_graph;
use nnc_compiler::interp::evaluate;
use nnc_compiler::ir::{GradOptions, Module, Network};
use nnc_compiler::ops::{LeafOp, Op, Tensor};
use nnc_compiler::{check_source, SourceFile};
use std::collections::HashMap;
use support::*;

const TEACHER: &str = "
network Teacher {
    input  x: f32[batch, 4];
    label  y: class[batch] of 3;
    h = dense(x, 5, activation: relu);
    n = batch_norm(h);
    logits = dense(dropout(n, 0.5), 3);
    output probs = softmax(logits);
    loss   cross_entropy(logits, y);
}

network Student {
    input  x: f32[batch, 4];
    input  teacher: f32[batch, 3];
    label  y: class[batch] of 3;
    h = dense(x, 6, activation: tanh);
    logits = dense(h, 3);
    output probs = softmax(logits);
    loss   distill(logits, teacher, y, temperature: 2.5, alpha: 0.7);
}
";

/// The model with the student's train block naming the teacher or not.
fn module(with_teacher: bool) -> Module {
    let train = if with_teacher {
        "train Student { teacher: Teacher(\"teacher.safetensors\"); }"
    } else {
        "train Student { epochs: 1; }"
    };
    let src = SourceFile::new("teacher.nn", format!("{TEACHER}\n{train}\n"));
    check_source(&src).unwrap_or_else(|e| panic!("{}", src.render(&e.diagnostics, false)))
}

fn network<'a>(m: &'a Module, name: &str) -> &'a Network {
    m.networks.iter().find(|n| n.name == name).unwrap()
}

/// Random values for every leaf the spliced student reads: data, its
/// parameters, and the teacher's parameters and running statistics under
/// the student's frozen names (`Teacher.h.weight`; the student has an
/// `h.weight` of its own).
fn bindings(m: &Module, rng: &mut Rng) -> HashMap<String, Tensor> {
    let mut b = HashMap::new();
    b.insert("x".into(), tensor(&[7, 4], Domain::Uniform(-2.0, 2.0), rng));
    b.insert("y".into(), tensor(&[7], Domain::Classes(3), rng));
    for p in &network(m, "Student").params {
        let dims = p.shape.resolve(1);
        b.insert(
            p.name.clone(),
            tensor(&dims, Domain::Uniform(-1.0, 1.0), rng),
        );
    }
    let teacher = network(m, "Teacher");
    for p in &teacher.params {
        let dims = p.shape.resolve(1);
        let v = tensor(&dims, Domain::Uniform(-1.0, 1.0), rng);
        b.insert(format!("Teacher.{}", p.name), v);
    }
    for s in &teacher.states {
        let dims = s.shape.resolve(1);
        // Running variances must be positive; means may be anything.
        let v = tensor(&dims, Domain::Uniform(0.5, 2.0), rng);
        b.insert(format!("Teacher.{}", s.name), v);
    }
    b
}

/// The teacher's inference-form logits on the student's bindings `b`,
/// evaluated on their own under the teacher's own names.
fn teacher_logits(m: &Module, b: &HashMap<String, Tensor>) -> Tensor {
    let t = network(m, "Teacher").for_inference().unwrap();
    let mut own: HashMap<String, Tensor> = HashMap::new();
    own.insert("x".into(), b["x"].clone());
    own.insert("y".into(), b["y"].clone());
    for (k, v) in b {
        if let Some(name) = k.strip_prefix("Teacher.") {
            own.insert(name.into(), v.clone());
        }
    }
    let logits = t.loss_decl.scores.unwrap();
    evaluate(&t.graph, &own).unwrap().get(logits).clone()
}

/// The objective and every parameter gradient of `net`'s training graph.
fn objective_and_grads(net: &Network, b: &HashMap<String, Tensor>) -> (f64, Vec<Tensor>) {
    let tg = training_graph(net, &GradOptions::default()).unwrap();
    let v = evaluate(&tg.graph, b).unwrap();
    let grads = tg
        .params
        .iter()
        .map(|(_, _, g)| v.get(*g).clone())
        .collect();
    (v.scalar(tg.objective), grads)
}

#[test]
fn the_teacher_is_spliced_in_as_frozen_leaves() {
    let m = module(true);
    let s = network(&m, "Student");
    let teacher = network(&m, "Teacher");
    // Every teacher parameter and running statistic, nothing else.
    let mut want: Vec<String> = teacher.params.iter().map(|p| p.name.clone()).collect();
    want.extend(teacher.states.iter().map(|s| s.name.clone()));
    let mut got: Vec<String> = s.frozen.iter().map(|f| f.tensor.clone()).collect();
    want.sort();
    got.sort();
    assert_eq!(got, want);
    for f in &s.frozen {
        assert_eq!(f.name, format!("Teacher.{}", f.tensor));
        assert!(
            matches!(&s.graph.node(f.node).op, Op::Leaf(LeafOp::Frozen { name, .. }) if *name == f.name)
        );
    }
    // The student's own parameters only; no input `teacher`; no state and
    // no modal op (the teacher runs in its inference form).
    let params: Vec<&str> = s.params.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        params,
        ["h.weight", "h.bias", "logits.weight", "logits.bias"]
    );
    assert!(s.inputs.iter().all(|i| i.name != "teacher"));
    assert!(s.states.is_empty() && !s.is_modal());
    let tg = training_graph(s, &GradOptions::default()).unwrap();
    assert_eq!(tg.params.len(), 4);
    assert!(tg.params.iter().all(|(n, _, _)| !n.starts_with("Teacher.")));
}

#[test]
fn spliced_loss_and_gradient_equal_the_student_fed_the_teachers_logits() {
    let (with, without) = (module(true), module(false));
    let mut rng = Rng(7);
    for _ in 0..3 {
        let mut b = bindings(&with, &mut rng);
        let (loss, grads) = objective_and_grads(network(&with, "Student"), &b);
        b.insert("teacher".into(), teacher_logits(&with, &b));
        let (want, want_grads) = objective_and_grads(network(&without, "Student"), &b);
        assert!(
            (loss - want).abs() <= 1e-12 * want.abs(),
            "{loss} vs {want}"
        );
        for (g, w) in grads.iter().zip(&want_grads) {
            assert!(rel_err(g, w) < 1e-12, "{g} vs {w}");
        }
    }
}

fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    let scale = b.iter().fold(1e-12f64, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b.iter())
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

#[test]
fn spliced_gradient_agrees_with_central_differences() {
    let m = module(true);
    let s = network(&m, "Student");
    let mut rng = Rng(11);
    let b = bindings(&m, &mut rng);
    let (_, grads) = objective_and_grads(s, &b);
    let h = 1e-6;
    for (p, g) in s.params.iter().zip(&grads) {
        for k in 0..g.len().min(6) {
            let mut plus = b.clone();
            let mut minus = b.clone();
            plus.get_mut(&p.name).unwrap().as_slice_mut().unwrap()[k] += h;
            minus.get_mut(&p.name).unwrap().as_slice_mut().unwrap()[k] -= h;
            let fd =
                (objective_and_grads(s, &plus).0 - objective_and_grads(s, &minus).0) / (2.0 * h);
            let an = g.as_slice().unwrap()[k];
            assert!(
                (fd - an).abs() <= 1e-6 * an.abs().max(1e-2),
                "d/d {}[{k}]: {an} vs central difference {fd}",
                p.name
            );
        }
    }
}

#[test]
fn the_teacher_gets_no_gradient_and_acts_only_through_its_logits() {
    let m = module(true);
    let s = network(&m, "Student");
    let tg = training_graph(s, &GradOptions::default()).unwrap();
    // The only gradients are the student's parameters'.
    let frozen: Vec<_> = s.frozen.iter().map(|f| f.node).collect();
    assert!(tg.params.iter().all(|(_, n, _)| !frozen.contains(n)));
    assert!(tg.inputs.is_empty());
    // The teacher's weights do reach the student's gradient (through its
    // logits: the test above shows it is only through them).
    let mut rng = Rng(5);
    let b = bindings(&m, &mut rng);
    let (_, g1) = objective_and_grads(s, &b);
    let mut other = b.clone();
    for (k, v) in other.iter_mut() {
        if k.starts_with("Teacher.logits") {
            v.mapv_inplace(|x| x * 2.0);
        }
    }
    let (_, g2) = objective_and_grads(s, &other);
    assert!(g1.iter().zip(&g2).any(|(a, c)| rel_err(a, c) > 1e-9));
}
