//! Batch norm and dropout end to end: the generated code against the f64
//! interpreter in training mode (same dropout masks, batch statistics) and
//! in inference mode (running statistics, no dropout); running statistics
//! after several steps against naive f64 loops; checkpoints that restore
//! them; the dropout hash shared by the runtime and the interpreter; and
//! data-parallel shards that draw the whole batch's dropout mask.

use nnc::compiler::autodiff::{training_graph, GradOptions, TrainingGraph};
use nnc::compiler::interp::evaluate_at;
use nnc::compiler::lower::{InputKind, Network};
use nnc::compiler::ops::{StepKey as IKey, Tensor};
use nnc::compiler::{check_source, SourceFile};
use nnc::runtime::data::{Column, Dataset};
use nnc::runtime::parallel::{StepRunner, Strategy};
use nnc::runtime::{fit, Batch, FitOptions, Model, StepKey, TrainData};
use std::collections::HashMap;

mod support;
use support::{assert_close_grads, rel_err, Rng};

mod norm_net {
    nnc::include_model!("norm_net");
}
mod norm_net_o0 {
    nnc::include_model!("norm_net_o0");
}
mod stats_net {
    nnc::include_model!("stats_net");
}
mod dropout_mlp {
    nnc::include_model!("dropout_mlp");
}

fn network(path: &str) -> Network {
    let full = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
    let src = SourceFile::new(path, std::fs::read_to_string(full).unwrap());
    let module = check_source(&src).unwrap();
    module.networks[0].clone()
}

fn graph(net: &Network) -> TrainingGraph {
    training_graph(net, &GradOptions::default()).unwrap()
}

/// A random batch: features in [-1, 1), labels in range; with the
/// interpreter's bindings for them and for the model's parameters and state.
struct Data {
    features: Vec<Vec<f32>>,
    labels: Vec<Vec<u32>>,
    bindings: HashMap<String, Tensor>,
}

fn data<M: Model>(model: &M, net: &Network, batch: usize, seed: u64) -> Data {
    let mut rng = Rng(seed);
    let mut d = Data {
        features: Vec::new(),
        labels: Vec::new(),
        bindings: HashMap::new(),
    };
    for i in &net.inputs {
        let dims = i.ty.shape.resolve(batch);
        let n: usize = dims.iter().product();
        let tensor = |v: Vec<f64>| Tensor::from_shape_vec(dims.clone(), v).unwrap();
        match i.kind {
            InputKind::Features => {
                let v: Vec<f32> = (0..n).map(|_| rng.unit_f32() * 2.0 - 1.0).collect();
                d.bindings.insert(
                    i.name.clone(),
                    tensor(v.iter().map(|&x| f64::from(x)).collect()),
                );
                d.features.push(v);
            }
            InputKind::Labels => {
                let v: Vec<u32> = (0..n).map(|_| (rng.next_u64() % 3) as u32).collect();
                d.bindings.insert(
                    i.name.clone(),
                    tensor(v.iter().map(|&x| f64::from(x)).collect()),
                );
                d.labels.push(v);
            }
        }
    }
    for p in model.spec().params.iter() {
        let v = model.params()[p.range()].iter().map(|&x| f64::from(x));
        d.bindings.insert(
            p.name.to_string(),
            Tensor::from_shape_vec(p.shape.to_vec(), v.collect()).unwrap(),
        );
    }
    for s in model.state_spec() {
        let v = model.state()[s.tensor.range()]
            .iter()
            .map(|&x| f64::from(x));
        d.bindings.insert(
            s.tensor.name.to_string(),
            Tensor::from_shape_vec(s.tensor.shape.to_vec(), v.collect()).unwrap(),
        );
    }
    d
}

/// Training and inference of a generated modal model against the
/// interpreter on one random batch: (what, relative error) per value.
fn compare<M: Model>(model: &mut M, path: &str, batch: usize, seed: u64) -> Vec<(String, f64)> {
    let net = network(path);
    // Running statistics away from their initial 0 and 1, so inference
    // really reads them.
    let mut rng = Rng(seed ^ 0xabc);
    for v in model.state_mut() {
        *v = 0.5 + rng.unit_f32();
    }
    let d = data(model, &net, batch, seed);
    let fs: Vec<&[f32]> = d.features.iter().map(|v| v.as_slice()).collect();
    let ls: Vec<&[u32]> = d.labels.iter().map(|v| v.as_slice()).collect();
    let b = Batch {
        inputs: &fs,
        labels: &ls,
    };
    let mut out = Vec::new();

    // Training mode, as step 3 of seed 11, rows starting at global sample 40.
    let key = StepKey {
        seed: 11,
        step: 3,
        offset: 40,
    };
    let ikey = IKey {
        seed: 11,
        step: 3,
        offset: 40,
    };
    let tg = graph(&net);
    let values = evaluate_at(&tg.graph, &d.bindings, ikey).unwrap();
    let n = model.spec().param_count;
    let mut ws = vec![0.0; model.workspace_len(batch)];
    let mut grads = vec![0.0; n];
    let mut stats = vec![0.0; model.state().len()];
    let loss = model
        .train_step_at(&mut ws, batch, &mut grads, &mut stats, &b, key)
        .unwrap();
    out.push((
        "train loss".to_string(),
        rel_err(&[loss], values.get(tg.loss)),
    ));
    for (p, (name, _, g)) in model.spec().params.iter().zip(&tg.params) {
        assert_eq!(p.name, name.as_str());
        out.push((
            format!("d/d {name}"),
            rel_err(&grads[p.range()], values.get(*g)),
        ));
    }
    for (s, (name, node)) in model.state_spec().iter().zip(&tg.state_updates) {
        assert_eq!(s.tensor.name, name.as_str());
        out.push((
            format!("batch statistic {name}"),
            rel_err(&stats[s.tensor.range()], values.get(*node)),
        ));
    }

    // Inference mode: `loss` and `predict` against the inference graph.
    let itg = graph(&net.for_inference().unwrap());
    assert!(itg.state_updates.is_empty());
    let ivalues = evaluate_at(&itg.graph, &d.bindings, IKey::default()).unwrap();
    let iloss = model.loss(&b).unwrap();
    out.push((
        "inference loss".to_string(),
        rel_err(&[iloss], ivalues.get(itg.loss)),
    ));
    let mut probs = vec![0.0; itg.graph.ty(itg.outputs[0].1).shape.numel(batch)];
    model.predict(&fs, &mut [&mut probs]).unwrap();
    out.push((
        "predict".to_string(),
        rel_err(&probs, ivalues.get(itg.outputs[0].1)),
    ));
    // The two modes differ: dropout and batch statistics matter.
    assert!(
        (f64::from(iloss) - values.scalar(tg.loss)).abs() > 1e-4,
        "training and inference losses agree: the modes are not distinguished"
    );
    out
}

fn assert_close(errors: Vec<(String, f64)>) {
    for (what, err) in &errors {
        assert!(*err < 1e-4, "{what}: relative error {err:e}");
    }
}

#[test]
fn norm_net_equals_the_interpreter_in_both_modes() {
    let path = "compiler/tests/models/norm_net.nn";
    let mut model = norm_net::NormNet::new(8);
    let mut o0 = norm_net_o0::NormNet::new(8);
    for (batch, seed) in [(8, 1), (3, 2), (5, 3)] {
        let errors = compare(&mut model, path, batch, seed);
        // Loss; 9 parameters (conv weight, bn weight and bias, dense weight
        // and bias, bn weight and bias, dense weight and bias); 4 batch
        // statistics; inference loss and predict.
        assert_eq!(errors.len(), 1 + 9 + 4 + 2);
        assert_close(errors);
        assert_close(compare(&mut o0, path, batch, seed));
    }
}

#[test]
fn dropout_masks_depend_on_the_step_and_the_global_sample() {
    let mut model = dropout_mlp::DropoutMlp::new(8);
    let net = network("compiler/tests/models/dropout_mlp.nn");
    let d = data(&model, &net, 8, 9);
    let b = Batch {
        inputs: &[&d.features[0]],
        labels: &[&d.labels[0]],
    };
    let mut ws = vec![0.0; model.workspace_len(8)];
    let n = model.spec().param_count;
    let mut run = |key: StepKey| {
        let mut g = vec![0.0; n];
        let l = model
            .train_step_at(&mut ws, 8, &mut g, &mut [], &b, key)
            .unwrap();
        (l, g)
    };
    let base = run(StepKey::default());
    assert_eq!(base, run(StepKey::default()), "not deterministic");
    for other in [
        StepKey {
            step: 1,
            ..StepKey::default()
        },
        StepKey {
            seed: 1,
            ..StepKey::default()
        },
        StepKey {
            offset: 8,
            ..StepKey::default()
        },
    ] {
        assert_ne!(base.0, run(other).0, "{other:?} draws the same mask");
    }
    // Inference is deterministic and mask-free: predict twice, same answer,
    // and the loss is not the training loss.
    let inf = Model::loss(&mut model, &b).unwrap();
    assert_eq!(inf, Model::loss(&mut model, &b).unwrap());
    assert_ne!(inf, base.0);
}

#[test]
fn the_runtime_and_the_interpreter_share_the_dropout_hash() {
    use nnc::compiler::ops::norm as c;
    use nnc::runtime::norm as r;
    let mut rng = Rng(3);
    for _ in 0..1000 {
        let (seed, step, salt, index) = (
            rng.next_u64(),
            rng.next_u64() % 1000,
            rng.next_u64(),
            rng.next_u64(),
        );
        let kc = c::dropout_key(seed, step, salt);
        assert_eq!(kc, r::dropout_key(seed, step, salt));
        let t = c::dropout_threshold(0.37);
        assert_eq!(t, r::dropout_threshold(0.37));
        assert_eq!(c::dropout_keep(kc, index, t), r::dropout_keep(kc, index, t));
    }
}

/// Batches of `StatsNet` (x: [batch, 3]) for `fit` and for naive loops.
fn stats_data(n: usize) -> Dataset {
    let mut rng = Rng(21);
    let x: Vec<f32> = (0..n * 3)
        .map(|i| rng.unit_f32() * (1.0 + (i % 3) as f32) + (i % 3) as f32)
        .collect();
    let y: Vec<u32> = (0..n as u32).map(|i| i % 2).collect();
    Dataset::new(vec![
        Column::f32("x", &[3], x),
        Column::classes("y", &[], y, 2),
    ])
    .unwrap()
}

/// PyTorch's running update in f64: mean and unbiased variance per batch.
fn naive_running(batches: &[&[f32]], momentum: f64) -> (Vec<f64>, Vec<f64>) {
    let (mut mean, mut var) = (vec![0.0; 3], vec![1.0; 3]);
    for x in batches {
        let n = x.len() / 3;
        for c in 0..3 {
            let col: Vec<f64> = (0..n).map(|i| f64::from(x[i * 3 + c])).collect();
            let m = col.iter().sum::<f64>() / n as f64;
            let v = col.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n - 1) as f64;
            mean[c] = (1.0 - momentum) * mean[c] + momentum * m;
            var[c] = (1.0 - momentum) * var[c] + momentum * v;
        }
    }
    (mean, var)
}

#[test]
fn running_statistics_follow_naive_f64_loops() {
    let data = stats_data(40);
    let x = data.f32_values("x").unwrap();
    let y = data.class_values("y").unwrap();
    // Direct training steps on batches of 4, 5, 6, 7 and 8 rows.
    let mut model = stats_net::StatsNet::new(8);
    let mut batches: Vec<&[f32]> = Vec::new();
    let mut at = 0;
    for rows in 4..9 {
        let xs = &x[at * 3..(at + rows) * 3];
        model.train_step(xs, &y[at..at + rows]).unwrap();
        batches.push(xs);
        at += rows;
    }
    let (mean, var) = naive_running(&batches, 0.25);
    let state = model.state();
    let spec = model.state_spec();
    assert_eq!(spec[0].tensor.name, "h.running_mean");
    assert_eq!(spec[1].tensor.name, "h.running_var");
    for c in 0..3 {
        assert!((f64::from(state[c]) - mean[c]).abs() < 1e-5, "mean {c}");
        assert!((f64::from(state[3 + c]) - var[c]).abs() < 1e-5, "var {c}");
    }
    // Training moved them away from their initial 0 and 1.
    assert!(state[..3].iter().all(|&m| m.abs() > 0.1));
}

#[test]
fn fit_updates_the_running_statistics_and_checkpoints_restore_them() {
    let data = stats_data(24);
    let dir = std::env::temp_dir().join(format!("nnc-norm-ckpt-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut model = stats_net::StatsNet::new(4);
    let opts = FitOptions {
        checkpoint_dir: Some(dir.clone()),
        ..FitOptions::quiet()
    };
    fit(&mut model, &TrainData::new(&data), &opts).unwrap();
    let trained = model.state().to_vec();
    assert_ne!(
        trained,
        nnc::runtime::model::initial_state(model.state_spec())
    );

    // The checkpoint holds the state under its own names.
    let (tensors, _) =
        nnc::runtime::checkpoint::load_tensors(dir.join("last.safetensors")).unwrap();
    let mean = tensors
        .iter()
        .find(|t| t.name == "h.running_mean")
        .expect("running mean saved");
    assert_eq!(mean.data, trained[..3]);

    // Resuming a finished run restores parameters and state, bit for bit.
    let mut fresh = stats_net::StatsNet::new(4);
    assert_ne!(fresh.state(), &trained[..]);
    let resume = FitOptions {
        resume: Some(dir.join("last.safetensors")),
        ..FitOptions::quiet()
    };
    fit(&mut fresh, &TrainData::new(&data), &resume).unwrap();
    assert_eq!(fresh.state(), &trained[..]);
    assert_eq!(fresh.params(), model.params());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Four shards give the whole batch's dropout masks: the same loss and
/// gradient as one shard (to float rounding), not a different draw.
#[test]
fn sharded_dropout_draws_the_whole_batchs_mask() {
    let model = dropout_mlp::DropoutMlp::new(128);
    let net = network("compiler/tests/models/dropout_mlp.nn");
    let d = data(&model, &net, 103, 4);
    let batch = Batch {
        inputs: &[&d.features[0]],
        labels: &[&d.labels[0]],
    };
    let key = StepKey {
        seed: 2,
        step: 17,
        offset: 0,
    };
    let mut whole =
        StepRunner::new(&model, 128, Strategy::Data { shards: Some(1) }).expect("buffers");
    let mut sharded =
        StepRunner::new(&model, 128, Strategy::Data { shards: Some(4) }).expect("buffers");
    let l1 = whole.step_at(&model, &batch, key).unwrap();
    let l4 = sharded.step_at(&model, &batch, key).unwrap();
    assert_close_grads((l1, whole.grads()), (l4, sharded.grads()));
    // And another step draws another mask.
    let l_next = whole
        .step_at(&model, &batch, StepKey { step: 18, ..key })
        .unwrap();
    assert_ne!(l1, l_next);
}
