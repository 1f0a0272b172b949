//! The main job end to end: the compiled MNIST classifier trains on the
//! bundled digits through the runtime's `fit`, and resumes from its
//! checkpoint bit for bit.

use nnc::runtime::data::load_mnist;
use nnc::runtime::train::split_validation;
use nnc::runtime::{evaluate, fit, FitOptions, Model, TrainData};

mod mnist_mlp {
    nnc::include_model!("mnist_mlp");
}
use mnist_mlp::{MnistMlp, MNIST_MLP_SPEC};

fn data() -> (nnc::runtime::data::Dataset, nnc::runtime::data::Dataset) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist-10k");
    let mnist = load_mnist(dir).expect("bundled MNIST");
    (mnist.train, mnist.test)
}

#[test]
fn mnist_mlp_learns_the_bundled_digits() {
    let (train, test) = data();
    let mut model = MnistMlp::new(128);
    let before = evaluate(&mut model, &test).unwrap();
    let opts = FitOptions {
        epochs: Some(2),
        ..FitOptions::quiet()
    };
    let history = fit(&mut model, &TrainData::new(&train), &opts).unwrap();
    assert_eq!(history.epochs.len(), 2);
    assert!(history.epochs[1].train_loss < history.epochs[0].train_loss);
    let after = evaluate(&mut model, &test).unwrap();
    let acc = after.accuracy().unwrap();
    // An untrained network is at chance; two epochs of Adam reach ~90%.
    assert!(before.accuracy().unwrap() < 0.3, "untrained: {before:?}");
    assert!(acc > 0.88, "test accuracy after 2 epochs: {acc}");
    assert!(after.loss < before.loss / 3.0);
}

#[test]
fn mnist_mlp_resumes_bit_for_bit() {
    let (train, _) = data();
    let first_1024: Vec<usize> = (0..1024).collect();
    let train = train.subset(&first_1024).unwrap();
    let (train, val) = split_validation(&train, 0.25, MNIST_MLP_SPEC.train.seed).unwrap();
    let data = TrainData::new(&train).with_validation(&val);
    let dir = std::env::temp_dir().join(format!("nnc-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);

    let mut straight = MnistMlp::new(128);
    let opts = FitOptions {
        epochs: Some(2),
        ..FitOptions::quiet()
    };
    fit(&mut straight, &data, &opts).unwrap();

    let mut first = MnistMlp::new(128);
    let stop = FitOptions {
        epochs: Some(2),
        max_steps: Some(5),
        checkpoint_dir: Some(dir.clone()),
        ..FitOptions::quiet()
    };
    fit(&mut first, &data, &stop).unwrap();
    let mut resumed = MnistMlp::new(128);
    let go_on = FitOptions {
        epochs: Some(2),
        resume: Some(dir.join(nnc::runtime::train::LAST_CHECKPOINT)),
        ..FitOptions::quiet()
    };
    fit(&mut resumed, &data, &go_on).unwrap();
    let bits = |m: &MnistMlp| m.params().iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert!(
        bits(&resumed) == bits(&straight),
        "resumed run differs from the straight one"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
