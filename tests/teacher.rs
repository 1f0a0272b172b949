//! A student with its teacher compiled in (`tests/teacher/distill_pair.nn`):
//! the generated code loads the teacher's weights file, and a few training
//! steps of it (`train_step`, then plain SGD on the parameters) agree with
//! the f64 interpreter binding the same file's tensors; `loss`,
//! `loss_with_scores`, `predict` and `predict_scores` too.

use nnc::compiler::autodiff::{training_graph, GradOptions};
use nnc::compiler::interp::evaluate;
use nnc::compiler::ops::Tensor;
use nnc::compiler::{check_source, SourceFile};
use nnc::runtime::{Batch, Model};
use std::collections::HashMap;

mod support;
use support::{rel_err, Rng};

mod distill_pair {
    nnc::include_model!("distill_pair");
}
use distill_pair::Student;

const PATH: &str = "tests/teacher/distill_pair.nn";

fn tensor(shape: &[usize], v: &[f32]) -> Tensor {
    Tensor::from_shape_vec(shape.to_vec(), v.iter().map(|&x| f64::from(x)).collect()).unwrap()
}

#[test]
fn the_teacher_path_is_the_weights_file_beside_the_model() {
    let want = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/teacher/distill_pair.safetensors");
    assert_eq!(std::path::Path::new(Student::TEACHER_PATH), want);
    let w = Student::teacher_weights().unwrap();
    let len: usize = distill_pair::STUDENT_TEACHER
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum();
    assert_eq!(w.len(), len);
}

#[test]
fn training_a_student_with_its_teacher_equals_the_interpreter() {
    let full = format!("{}/{PATH}", env!("CARGO_MANIFEST_DIR"));
    let src = SourceFile::new(PATH, std::fs::read_to_string(full).unwrap());
    let module = check_source(&src).unwrap();
    let net = module.network("Student").unwrap();
    let tg = training_graph(net, &GradOptions::default()).unwrap();

    // The teacher's tensors, read from the file independently of the
    // generated loader, under the student's names for them.
    let (tensors, _) = nnc::runtime::checkpoint::load_tensors(Student::TEACHER_PATH).unwrap();
    let mut bindings: HashMap<String, Tensor> = HashMap::new();
    for f in &net.frozen {
        let t = tensors.iter().find(|t| t.name == f.tensor).unwrap();
        bindings.insert(f.name.clone(), tensor(&t.shape, &t.data));
    }
    let batch = 8;
    let mut rng = Rng(3);
    let x: Vec<f32> = (0..batch * 4).map(|_| rng.unit_f32() * 4.0 - 2.0).collect();
    let y: Vec<u32> = (0..batch).map(|_| (rng.next_u64() % 3) as u32).collect();
    bindings.insert("x".into(), tensor(&[batch, 4], &x));
    bindings.insert(
        "y".into(),
        Tensor::from_shape_vec(vec![batch], y.iter().map(|&v| f64::from(v)).collect()).unwrap(),
    );
    let b = Batch {
        inputs: &[&x],
        labels: &[&y],
    };
    let mut model = Student::new(batch);
    let lr = 0.1f32;
    for step in 0..3 {
        for p in model.spec().params.iter() {
            bindings.insert(
                p.name.to_string(),
                tensor(&p.shape, &model.params()[p.range()]),
            );
        }
        let values = evaluate(&tg.graph, &bindings).unwrap();
        let want = values.get(tg.loss);
        let loss = Model::train_step(&mut model, &b).unwrap();
        assert!(
            rel_err(&[loss], want) < 1e-4,
            "step {step}: loss {loss} vs {want}"
        );
        for (p, (name, _, g)) in model.spec().params.iter().zip(&tg.params) {
            let err = rel_err(&model.grads()[p.range()], values.get(*g));
            assert!(
                err < 1e-4,
                "step {step}: d/d {name}: relative error {err:e}"
            );
        }
        assert!(rel_err(&[Model::loss(&mut model, &b).unwrap()], want) < 1e-4);
        let s = tg.scores.unwrap();
        let mut scores = vec![0.0f32; 3 * batch];
        Model::loss_with_scores(&mut model, &b, &mut scores).unwrap();
        assert!(rel_err(&scores, values.get(s)) < 1e-4);
        scores.fill(0.0);
        Model::predict_scores(&mut model, &[&x], &mut scores).unwrap();
        assert!(rel_err(&scores, values.get(s)) < 1e-4);
        let mut probs = vec![0.0f32; 3 * batch];
        Model::predict(&mut model, &[&x], &mut [&mut probs]).unwrap();
        assert!(rel_err(&probs, values.get(net.outputs[0].node)) < 1e-4);
        // Plain SGD on the student's parameters only.
        let grads = model.grads().to_vec();
        for (p, g) in model.params_mut().iter_mut().zip(&grads) {
            *p -= lr * g;
        }
    }
}
