//! The generated training code against the f64 reference interpreter: for
//! every example and test model, on random inputs, `train_step`'s loss and
//! gradients, `loss` and `predict` equal the interpreter's within 1e-4
//! (relative, per tensor) in f32.

use nnc::compiler::autodiff::{training_graph, GradOptions};
use nnc::compiler::interp::evaluate;
use nnc::compiler::lower::InputKind;
use nnc::compiler::ops::Tensor;
use nnc::compiler::{check_source, SourceFile};
use nnc::runtime::{Batch, Model};
use std::collections::HashMap;

mod support;
use support::{rel_err, Rng};

mod mnist_mlp {
    nnc::include_model!("mnist_mlp");
}
mod every_op {
    nnc::include_model!("every_op");
}
mod mnist_mlp_o0 {
    nnc::include_model!("mnist_mlp_o0");
}
mod every_op_o0 {
    nnc::include_model!("every_op_o0");
}
mod conv_net {
    nnc::include_model!("conv_net");
}
mod conv_net_o0 {
    nnc::include_model!("conv_net_o0");
}
mod transformer {
    nnc::include_model!("transformer");
}
mod transformer_o0 {
    nnc::include_model!("transformer_o0");
}
mod seq_ops {
    nnc::include_model!("seq_ops");
}
mod seq_ops_o0 {
    nnc::include_model!("seq_ops_o0");
}
mod qat_mlp {
    nnc::include_model!("qat_mlp");
}
mod qat_mlp_o0 {
    nnc::include_model!("qat_mlp_o0");
}

// The same models generated for the second target, `NaiveProducts`
// (plain-loop matrix products instead of the runtime's GEMM).
mod mnist_mlp_naive {
    nnc::include_model!("mnist_mlp_naive");
}
mod every_op_naive {
    nnc::include_model!("every_op_naive");
}
mod transformer_naive {
    nnc::include_model!("transformer_naive");
}
mod seq_ops_naive {
    nnc::include_model!("seq_ops_naive");
}
mod lenet_naive {
    nnc::include_model!("lenet_naive");
}

/// Runs the generated model and the interpreter on the same random batch
/// and parameters; returns (what, relative error) for every compared value.
fn compare<M: Model>(model: &mut M, path: &str, batch: usize, seed: u64) -> Vec<(String, f64)> {
    let full = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
    let src = SourceFile::new(path, std::fs::read_to_string(full).unwrap());
    let module = check_source(&src).unwrap();
    let net = &module.networks[0];
    let cfg = module.train_config(&net.name);
    let tg = training_graph(
        net,
        &GradOptions {
            regularization: cfg.regularization,
            inputs: vec![],
        },
    )
    .unwrap();

    let mut rng = Rng(seed);
    let mut bindings: HashMap<String, Tensor> = HashMap::new();
    let mut features: Vec<Vec<f32>> = Vec::new();
    let mut labels: Vec<Vec<u32>> = Vec::new();
    for i in &net.inputs {
        let dims = i.ty.shape.resolve(batch);
        let n: usize = dims.iter().product();
        let tensor = |v: Vec<f64>| Tensor::from_shape_vec(dims.clone(), v).unwrap();
        match (i.kind, i.ty.dtype) {
            // Token ids: whole numbers in range, fed with the features.
            (InputKind::Features, nnc::compiler::graph::DType::Class { classes }) => {
                let v: Vec<f32> = (0..n)
                    .map(|_| (rng.next_u64() % classes as u64) as f32)
                    .collect();
                bindings.insert(
                    i.name.clone(),
                    tensor(v.iter().map(|&x| f64::from(x)).collect()),
                );
                features.push(v);
            }
            (InputKind::Features, _) => {
                let v: Vec<f32> = (0..n).map(|_| rng.unit_f32() * 2.0 - 1.0).collect();
                bindings.insert(
                    i.name.clone(),
                    tensor(v.iter().map(|&x| f64::from(x)).collect()),
                );
                features.push(v);
            }
            (InputKind::Labels, _) => {
                let classes = model
                    .spec()
                    .inputs
                    .iter()
                    .find_map(|s| match s.kind {
                        nnc::runtime::InputKind::Labels { classes } if s.name == i.name => {
                            Some(classes)
                        }
                        _ => None,
                    })
                    .unwrap();
                let v: Vec<u32> = (0..n)
                    .map(|_| (rng.next_u64() % u64::from(classes)) as u32)
                    .collect();
                bindings.insert(
                    i.name.clone(),
                    tensor(v.iter().map(|&x| f64::from(x)).collect()),
                );
                labels.push(v);
            }
        }
    }
    // The generated model initialised its own parameters; the interpreter
    // gets the same values.
    for p in model.spec().params.iter() {
        let v: Vec<f64> = model.params()[p.range()]
            .iter()
            .map(|&x| f64::from(x))
            .collect();
        bindings.insert(
            p.name.to_string(),
            Tensor::from_shape_vec(p.shape.to_vec(), v).unwrap(),
        );
    }
    let values = evaluate(&tg.graph, &bindings).unwrap();

    let fs: Vec<&[f32]> = features.iter().map(|v| v.as_slice()).collect();
    let ls: Vec<&[u32]> = labels.iter().map(|v| v.as_slice()).collect();
    let b = Batch {
        inputs: &fs,
        labels: &ls,
    };
    let mut out = Vec::new();
    let loss = model.train_step(&b).unwrap();
    let want = values.get(tg.loss);
    out.push(("train_step loss".to_string(), rel_err(&[loss], want)));
    for (p, (name, _, g)) in model.spec().params.iter().zip(&tg.params) {
        assert_eq!(p.name, name.as_str());
        out.push((
            format!("d/d {name}"),
            rel_err(&model.grads()[p.range()], values.get(*g)),
        ));
    }
    let loss_only = model.loss(&b).unwrap();
    out.push(("loss".to_string(), rel_err(&[loss_only], want)));
    let mut outputs: Vec<Vec<f32>> = net
        .outputs
        .iter()
        .map(|o| vec![0.0; tg.graph.ty(o.node).shape.numel(batch)])
        .collect();
    // predict reads only the inputs its outputs (or the loss's prediction)
    // depend on.
    let read: Vec<&[f32]> = model
        .spec()
        .inputs
        .iter()
        .filter(|i| i.kind.is_fed_as_feature())
        .zip(&fs)
        .filter(|(i, _)| i.predict)
        .map(|(_, x)| *x)
        .collect();
    let mut slots: Vec<&mut [f32]> = outputs.iter_mut().map(|v| v.as_mut_slice()).collect();
    assert_eq!(model.predict(&read, &mut slots).unwrap(), batch);
    for (o, got) in net.outputs.iter().zip(&outputs) {
        out.push((
            format!("predict {}", o.name),
            rel_err(got, values.get(o.node)),
        ));
    }
    // The loss's prediction, with labels and without.
    if let Some(s) = tg.scores {
        let mut scores = vec![0.0f32; model.spec().loss.scores * batch];
        model.loss_with_scores(&b, &mut scores).unwrap();
        out.push((
            "loss_with_scores".to_string(),
            rel_err(&scores, values.get(s)),
        ));
        scores.fill(0.0);
        model.predict_scores(&read, &mut scores).unwrap();
        out.push((
            "predict_scores".to_string(),
            rel_err(&scores, values.get(s)),
        ));
    }
    out
}

fn assert_close(errors: Vec<(String, f64)>) {
    for (what, err) in &errors {
        assert!(*err < 1e-4, "{what}: relative error {err:e}");
    }
}

#[test]
fn mnist_mlp_generated_code_equals_the_interpreter() {
    let mut model = mnist_mlp::MnistMlp::new(16);
    let errors = compare(&mut model, "examples/models/mnist_mlp.nn", 16, 1);
    // The loss, 6 gradients, the loss again, the output, both scores.
    assert_eq!(errors.len(), 1 + 6 + 1 + 1 + 2);
    assert_close(errors);
    // A smaller batch than the workspace was built for.
    assert_close(compare(&mut model, "examples/models/mnist_mlp.nn", 3, 2));
    let mut o0 = mnist_mlp_o0::MnistMlp::new(16);
    assert_close(compare(&mut o0, "examples/models/mnist_mlp.nn", 16, 1));
}

#[test]
fn every_op_generated_code_equals_the_interpreter() {
    let mut model = every_op::EveryOp::new(7);
    let mut o0 = every_op_o0::EveryOp::new(7);
    let path = "compiler/tests/models/every_op.nn";
    for (batch, seed) in [(7, 3), (1, 4), (4, 5)] {
        assert_close(compare(&mut model, path, batch, seed));
        assert_close(compare(&mut o0, path, batch, seed));
    }
}

#[test]
fn conv_net_generated_code_equals_the_interpreter() {
    let mut model = conv_net::ConvNet::new(6);
    let mut o0 = conv_net_o0::ConvNet::new(6);
    let path = "compiler/tests/models/conv_net.nn";
    for (batch, seed) in [(6, 1), (1, 2), (3, 3)] {
        assert_close(compare(&mut model, path, batch, seed));
        assert_close(compare(&mut o0, path, batch, seed));
    }
}

/// The second code-generation target computes what the interpreter does
/// too: the seam carries a whole model, and the runtime's GEMM (blocking,
/// packing, SIMD kernels, epilogues) agrees with products by definition.
#[test]
fn the_naive_products_target_equals_the_interpreter() {
    let mut mlp = mnist_mlp_naive::MnistMlp::new(16);
    assert_close(compare(&mut mlp, "examples/models/mnist_mlp.nn", 16, 1));
    let mut ops = every_op_naive::EveryOp::new(7);
    for (batch, seed) in [(7, 3), (1, 4)] {
        assert_close(compare(
            &mut ops,
            "compiler/tests/models/every_op.nn",
            batch,
            seed,
        ));
    }
    let mut tf = transformer_naive::Transformer::new(4);
    assert_close(compare(&mut tf, "examples/models/transformer.nn", 4, 1));
    let mut seq = seq_ops_naive::SeqOps::new(5);
    assert_close(compare(&mut seq, "compiler/tests/models/seq_ops.nn", 5, 1));
    // Fused convolutions: the target's own conv2d, then the epilogue.
    let mut lenet = lenet_naive::LeNet::new(3);
    assert_close(compare(&mut lenet, "examples/models/lenet.nn", 3, 1));
}

#[test]
fn generated_code_rejects_bad_batches_without_panicking() {
    let mut model = mnist_mlp::MnistMlp::new(4);
    let image = vec![0.0f32; 784 * 5];
    let digit = [0u32; 5];
    assert_eq!(
        model.train_step(&image, &digit).unwrap_err().to_string(),
        "batch of 5 samples exceeds the model's maximum batch 4"
    );
    assert_eq!(
        model
            .train_step(&image[..784 * 2], &digit[..3])
            .unwrap_err()
            .to_string(),
        "`digit`: expected 2 values, found 3"
    );
    assert_eq!(
        model
            .train_step(&image[..784 * 2 - 1], &digit[..2])
            .unwrap_err()
            .to_string(),
        "`image`: expected 784 values, found 1567"
    );
    assert_eq!(
        model
            .train_step(&image[..784], &[10])
            .unwrap_err()
            .to_string(),
        "`digit`[0] = 10 is not a class in 0..10"
    );
    let mut probs = vec![0.0f32; 3];
    assert_eq!(
        model
            .predict(&image[..784], &mut probs)
            .unwrap_err()
            .to_string(),
        "`probs`: expected 10 values, found 3"
    );
}

#[test]
fn transformer_generated_code_equals_the_interpreter() {
    let mut model = transformer::Transformer::new(4);
    let mut o0 = transformer_o0::Transformer::new(4);
    let path = "examples/models/transformer.nn";
    for (batch, seed) in [(4, 1), (1, 2)] {
        let errors = compare(&mut model, path, batch, seed);
        // The loss, 38 parameter gradients, the loss again, the logits and
        // the loss's prediction (the logits) with and without labels.
        assert_eq!(errors.len(), 1 + 38 + 1 + 1 + 2);
        assert_close(errors);
        assert_close(compare(&mut o0, path, batch, seed));
    }
}

#[test]
fn seq_ops_generated_code_equals_the_interpreter() {
    let mut model = seq_ops::SeqOps::new(5);
    let mut o0 = seq_ops_o0::SeqOps::new(5);
    let path = "compiler/tests/models/seq_ops.nn";
    for (batch, seed) in [(5, 1), (1, 2), (3, 3)] {
        assert_close(compare(&mut model, path, batch, seed));
        assert_close(compare(&mut o0, path, batch, seed));
    }
}

/// Quantization-aware training: fake_quant's forward (dynamic and fixed
/// scales) and its straight-through gradient, clamped activations included,
/// in train_step, loss and predict.
#[test]
fn qat_mlp_generated_code_equals_the_interpreter() {
    let mut model = qat_mlp::QatMlp::new(16);
    let mut o0 = qat_mlp_o0::QatMlp::new(16);
    let path = "tests/models/qat_mlp.nn";
    for (batch, seed) in [(16, 1), (1, 2), (9, 3)] {
        let errors = compare(&mut model, path, batch, seed);
        // The loss, 3 gradients, the loss again, the output, both scores.
        assert_eq!(errors.len(), 1 + 3 + 1 + 1 + 2);
        assert_close(errors);
        assert_close(compare(&mut o0, path, batch, seed));
    }
}

/// A token id out of range (or not a whole number) is an error before any
/// kernel runs, in training and in predict, never a panic or a read of
/// another row.
#[test]
fn token_ids_out_of_range_are_rejected() {
    use nnc::runtime::StepError;
    let mut model = transformer::Transformer::new(2);
    let mut tokens = vec![1.0f32; 32];
    let labels = vec![0u32; 32];
    let mut logits = vec![0.0f32; 320];
    for (bad, shown) in [(10.0, "10"), (-1.0, "-1"), (2.5, "2.5"), (f32::NAN, "NaN")] {
        tokens[17] = bad;
        let want = StepError::Token {
            name: std::borrow::Cow::Borrowed("tokens"),
            index: 17,
            value: shown.to_string(),
            classes: 10,
        };
        assert_eq!(model.train_step(&tokens, &labels).unwrap_err(), want);
        assert_eq!(model.loss(&tokens, &labels).unwrap_err(), want);
        assert_eq!(model.predict(&tokens, &mut logits).unwrap_err(), want);
    }
    assert_eq!(
        StepError::Token {
            name: std::borrow::Cow::Borrowed("tokens"),
            index: 17,
            value: "10".into(),
            classes: 10
        }
        .to_string(),
        "`tokens`[17] = 10 is not a token id in 0..10"
    );
    tokens[17] = 9.0;
    assert!(model.train_step(&tokens, &labels).is_ok());
}
