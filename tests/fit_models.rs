//! Every kind of model the language expresses trains through one `fit`,
//! on data made here: a regression reaches the noise floor, a binary
//! classifier and a two-input network learn, and their metrics are those
//! of their loss. Weights save and load bit for bit (batch-norm state
//! included), and weights written by PyTorch predict what PyTorch did.

use nnc::runtime::checkpoint::{load_weights, LoadOptions};
use nnc::runtime::data::{Column, Dataset};
use nnc::runtime::train::split_validation;
use nnc::runtime::{evaluate, fit, predict, FitOptions, Metrics, Model, TrainData};

mod support;
use support::Rng;

mod regression {
    nnc::include_model!("regression");
}
mod binary {
    nnc::include_model!("binary");
}
mod two_inputs {
    nnc::include_model!("two_inputs");
}
mod torch_mlp {
    nnc::include_model!("torch_mlp");
}
mod mnist_bn_dropout {
    nnc::include_model!("mnist_bn_dropout");
}

/// A standard normal draw (Box–Muller on the test's own generator).
fn normal(rng: &mut Rng) -> f32 {
    let u = rng.unit_f32().max(1e-7);
    let v = rng.unit_f32();
    (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
}

const NOISE_STD: f32 = 0.1;

/// `y = sin(2·x0) + x1² − 0.5·x2 + noise`, noise N(0, 0.1²), x uniform in [-1, 1)³.
fn regression_data(n: usize, seed: u64) -> Dataset {
    let mut rng = Rng(seed);
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let v: Vec<f32> = (0..3).map(|_| 2.0 * rng.unit_f32() - 1.0).collect();
        y.push((2.0 * v[0]).sin() + v[1] * v[1] - 0.5 * v[2] + NOISE_STD * normal(&mut rng));
        x.extend(v);
    }
    Dataset::new(vec![Column::f32("x", &[3], x), Column::f32("y", &[1], y)]).unwrap()
}

#[test]
fn a_regression_reaches_the_noise_floor() {
    let all = regression_data(4000, 1);
    let (train, val) = split_validation(&all, 0.25, 2).unwrap();
    let mut model = regression::Regression::default();
    let h = fit(
        &mut model,
        &TrainData::new(&train).with_validation(&val),
        &FitOptions::quiet(),
    )
    .unwrap();
    let last = h.epochs.last().unwrap().val.clone().unwrap();
    let Metrics::Regression { mae, rmse, r2 } = last.metrics else {
        panic!("a regression's metrics: {last:?}")
    };
    let noise = f64::from(NOISE_STD * NOISE_STD);
    // mse's loss is the mean squared error: the metric and the loss agree.
    assert!(
        (rmse * rmse - last.loss).abs() < 1e-6 * last.loss.max(1.0),
        "{rmse} vs {}",
        last.loss
    );
    assert!(
        rmse * rmse < 1.2 * noise,
        "validation MSE {} is not within 20% of the noise variance {noise}",
        rmse * rmse
    );
    assert!(
        r2 > 0.95 && mae < 2.0 * f64::from(NOISE_STD),
        "r2 {r2}, mae {mae}"
    );
    // Prediction needs only the input the output reads: no `y` column.
    let x_only = Dataset::new(vec![val.column("x").unwrap().clone()]).unwrap();
    let preds = predict(&mut model, &x_only).unwrap();
    assert_eq!(
        (preds.len(), preds[0].name.as_str(), preds[0].width),
        (1, "pred", 1)
    );
    assert_eq!(preds[0].values.len(), val.len());
    let nnc::runtime::data::Values::F32(y) = val.column("y").unwrap().values() else {
        unreachable!()
    };
    let mse: f64 = preds[0]
        .values
        .iter()
        .zip(y)
        .map(|(&p, &t)| f64::from(p - t).powi(2))
        .sum::<f64>()
        / y.len() as f64;
    assert!(
        (mse - rmse * rmse).abs() < 1e-5,
        "predict's MSE {mse} vs evaluate's {}",
        rmse * rmse
    );
}

/// Points in [-1.5, 1.5)², labelled 1 inside the unit circle.
fn circle_data(n: usize, seed: u64) -> Dataset {
    let mut rng = Rng(seed);
    let (mut x, mut t) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let (a, b) = (3.0 * rng.unit_f32() - 1.5, 3.0 * rng.unit_f32() - 1.5);
        x.extend([a, b]);
        t.push(if a * a + b * b < 1.0 { 1.0 } else { 0.0 });
    }
    Dataset::new(vec![
        Column::f32("x", &[2], x),
        Column::f32("inside", &[1], t),
    ])
    .unwrap()
}

#[test]
fn a_binary_classifier_learns_with_precision_recall_and_f1() {
    let train = circle_data(3000, 3);
    let val = circle_data(1000, 4);
    let mut model = binary::Binary::default();
    fit(
        &mut model,
        &TrainData::new(&train).with_validation(&val),
        &FitOptions::quiet(),
    )
    .unwrap();
    let e = evaluate(&mut model, &val).unwrap();
    let Metrics::Binary {
        accuracy,
        precision,
        recall,
        f1,
    } = e.metrics
    else {
        panic!("binary metrics: {e:?}")
    };
    assert!(accuracy > 0.95 && f1 > 0.93, "{e:?}");
    assert!((f1 - 2.0 * precision * recall / (precision + recall)).abs() < 1e-12);
}

/// Class `argmax(a[..3] + b)`: both inputs are needed to get it right.
fn two_input_data(n: usize, seed: u64) -> Dataset {
    let mut rng = Rng(seed);
    let (mut a, mut b, mut y) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        let va: Vec<f32> = (0..4).map(|_| normal(&mut rng)).collect();
        let vb: Vec<f32> = (0..3).map(|_| normal(&mut rng)).collect();
        let s: Vec<f32> = (0..3).map(|i| va[i] + vb[i]).collect();
        let c = (0..3).fold(0, |m, i| if s[i] > s[m] { i } else { m });
        a.extend(va);
        b.extend(vb);
        y.push(c as u32);
    }
    Dataset::new(vec![
        Column::f32("b", &[3], b),
        Column::classes("y", &[], y, 3),
        Column::f32("a", &[4], a),
    ])
    .unwrap()
}

#[test]
fn a_two_input_network_without_outputs_trains_and_reports_accuracy() {
    let train = two_input_data(3000, 5);
    let val = two_input_data(1000, 6);
    let mut model = two_inputs::TwoInputs::default();
    let h = fit(
        &mut model,
        &TrainData::new(&train).with_validation(&val),
        &FitOptions::quiet(),
    )
    .unwrap();
    let e = evaluate(&mut model, &val).unwrap();
    let acc = e
        .accuracy()
        .expect("a classification loss has accuracy, output or not");
    assert!(acc > 0.9, "{e:?}");
    assert_eq!(
        h.epochs.last().unwrap().val.as_ref().unwrap().accuracy(),
        Some(acc)
    );
    let Metrics::Classification { confusion, .. } = &e.metrics else {
        unreachable!()
    };
    let c = confusion
        .as_ref()
        .expect("evaluate gives the confusion matrix");
    let correct: u64 = (0..3).map(|i| c.get(i, i)).sum();
    assert_eq!(correct as f64 / 1000.0, acc);
}

#[test]
fn weights_and_batch_norm_state_save_and_load_bit_for_bit() {
    let mut rng = Rng(7);
    let n = 256;
    let x: Vec<f32> = (0..n * 784).map(|_| rng.unit_f32()).collect();
    let y: Vec<u32> = (0..n).map(|_| rng.below(10) as u32).collect();
    let data = Dataset::new(vec![
        Column::f32("image", &[784], x),
        Column::classes("digit", &[], y, 10),
    ])
    .unwrap();
    let mut model = mnist_bn_dropout::MnistBnDropout::default();
    let opts = FitOptions {
        epochs: Some(1),
        ..FitOptions::quiet()
    };
    fit(&mut model, &TrainData::new(&data), &opts).unwrap();
    assert!(
        model.state().iter().any(|&s| s != 0.0 && s != 1.0),
        "the running statistics moved"
    );
    let dir = std::env::temp_dir().join(format!("nnc-weights-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bn.safetensors");
    model.save(&path).unwrap();
    let mut other = mnist_bn_dropout::MnistBnDropout::default();
    other.load(&path).unwrap();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(other.params()), bits(model.params()));
    assert_eq!(bits(other.state()), bits(model.state()));
    assert_eq!(
        predict(&mut other, &data).unwrap(),
        predict(&mut model, &data).unwrap()
    );
    // The file is plain safetensors: the free function reads it the same.
    let mut third = mnist_bn_dropout::MnistBnDropout::default();
    load_weights(&mut third, &path, &LoadOptions::default()).unwrap();
    assert_eq!(bits(third.state()), bits(model.state()));
    // Another model's weights are refused, naming the tensor.
    let mut wrong = two_inputs::TwoInputs::default();
    let e = load_weights(&mut wrong, &path, &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("the file has tensor `h1.1.bias` [256], which model `TwoInputs` does not have"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `name v v v ...` lines of the fixture's expected.txt.
fn expected(name: &str) -> Vec<f32> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/pytorch_mlp/expected.txt"
    ))
    .unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no `{name}` line"));
    line.split_whitespace()
        .skip(1)
        .map(|v| v.parse::<f64>().unwrap() as f32)
        .collect()
}

#[test]
fn weights_written_by_pytorch_predict_what_pytorch_did() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/pytorch_mlp/weights.safetensors"
    );
    let mut model = torch_mlp::TorchMlp::default();
    // PyTorch's Linear keeps [out, in]; without the option that is an error
    // that says what to do.
    let e = load_weights(&mut model, path, &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("tensor `h.weight` is [8, 4] in the file, the model's is [4, 8]")
            && e.contains("transpose_linear"),
        "{e}"
    );
    let opts = LoadOptions {
        transpose_linear: true,
        ..LoadOptions::default()
    };
    load_weights(&mut model, path, &opts).unwrap();
    let x = expected("inputs");
    let want = expected("logits");
    let data = Dataset::new(vec![Column::f32("x", &[4], x)]).unwrap();
    let got = predict(&mut model, &data).unwrap();
    assert_eq!(got[0].name, "logits");
    for (g, w) in got[0].values.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-5, "{g} vs PyTorch's {w}");
    }
    assert_eq!(got[0].values.len(), want.len());
}

#[test]
fn every_kind_trains_bit_identically_on_one_and_two_threads() {
    use nnc::runtime::parallel::Strategy;
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let opts = |threads| FitOptions {
        epochs: Some(2),
        threads: Some(threads),
        // Two shards of every batch of 32, on however many threads.
        parallel: Strategy::Data { shards: Some(2) },
        ..FitOptions::quiet()
    };
    let data = regression_data(200, 9);
    let run = |threads| {
        let mut m = regression::Regression::default();
        let h = fit(&mut m, &TrainData::new(&data), &opts(threads)).unwrap();
        (
            bits(m.params()),
            h.epochs.last().unwrap().train_loss.to_bits(),
        )
    };
    assert_eq!(run(1), run(2), "regression");
    let data = two_input_data(200, 10);
    let run = |threads| {
        let mut m = two_inputs::TwoInputs::default();
        let h = fit(&mut m, &TrainData::new(&data), &opts(threads)).unwrap();
        (
            bits(m.params()),
            h.epochs.last().unwrap().train_loss.to_bits(),
        )
    };
    assert_eq!(run(1), run(2), "two inputs");
    let data = circle_data(200, 11);
    let run = |threads| {
        let mut m = binary::Binary::default();
        fit(&mut m, &TrainData::new(&data), &opts(threads)).unwrap();
        bits(m.params())
    };
    assert_eq!(run(1), run(2), "binary");
}
