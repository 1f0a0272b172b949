//! `nnc compile --quantize int8` (#23): the generated int8 plan and the
//! report of which steps run int8 and which stay f32, at their source
//! positions; a model with an op that has no int8 plan step is refused with
//! a diagnostic at that op and nothing is written. (The generated plan runs
//! in tests/int8.rs at the workspace root.) `--calibrate DATA` writes the
//! int8 weights from a trained model and a data file, and `nnc eval` /
//! `predict --int8` run them, end to end.

use std::path::PathBuf;

mod support;
use support::cli::{nnc, ok, pairs, stderr, temp_dir, text, with_model};

/// A fresh directory holding a copy of example model `name` as `m.nn`.
fn workdir(name: &str) -> PathBuf {
    with_model(name, name)
}

#[test]
fn lenet_plan_is_generated_and_reported_step_by_step() {
    let dir = workdir("lenet");
    let out = nnc(
        &dir,
        &["compile", "m.nn", "--quantize", "int8", "-o", "m.rs"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report = stderr(&out);
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(
        lines,
        [
            "int8 plan of `LeNet`:",
            "  m.nn:8:10: int8 conv2d c1.weight + c1.bias + relu",
            "  m.nn:9:10: int8 max_pool2d(kernel: 2, stride: 2, padding: 0) (on the bytes of its input)",
            "  m.nn:10:10: int8 conv2d c2.weight + c2.bias + relu",
            "  m.nn:11:10: int8 max_pool2d(kernel: 2, stride: 2, padding: 0) (on the bytes of its input)",
            "  m.nn:12:10: int8 dense h1.weight + h1.bias + relu",
            "  m.nn:13:10: int8 dense h2.weight + h2.bias + relu",
            "  m.nn:14:14: int8 dense logits.weight + logits.bias",
            "  m.nn:16:20: f32 softmax(axis: 1) (no int8 kernel: stays f32)",
        ],
        "{report}"
    );
    let code = std::fs::read_to_string(dir.join("m.rs")).expect("m.rs written");
    for want in [
        "pub fn int8_plan()",
        "pub fn quantize_int8(",
        "pub fn load_int8(",
        "quant::Step::Conv",
        "quant::Step::MaxPool",
        "quant::Step::Dense",
        "quant::Step::Softmax",
    ] {
        assert!(code.contains(want), "generated code lacks `{want}`");
    }
    // Without the flag: no plan, no report.
    let out = nnc(&dir, &["compile", "m.nn", "-o", "plain.rs"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
    let code = std::fs::read_to_string(dir.join("plain.rs")).expect("plain.rs written");
    assert!(!code.contains("int8_plan"));
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn an_op_without_an_int8_step_is_refused_at_the_op() {
    let dir = workdir("mnist_bn_dropout");
    let out = nnc(
        &dir,
        &["compile", "m.nn", "--quantize", "int8", "-o", "m.rs"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("int8 inference: `batch_norm_infer(eps: 0.00001)` has no int8 kernel")
            && err.contains("m.nn:9:14"),
        "{err}"
    );
    assert!(!dir.join("m.rs").exists(), "nothing is written on an error");
    std::fs::remove_dir_all(&dir).expect("clean up");
}

/// `pairs.csv` (see `support::cli::pairs`) and `probs.nn`, its classifier
/// with a softmax output (so the int8 plan ends in an f32 softmax).
fn probs_model(dir: &std::path::Path) {
    pairs(dir, 7, 30);
    std::fs::write(
        dir.join("probs.nn"),
        r#"network Pairs {
    input  x: f32[batch, 3];
    label  kind: class[batch] of 2;
    logits = dense(dense(x, 16, activation: relu), 2);
    output probs = softmax(logits);
    loss cross_entropy(logits, kind);
}

train Pairs {
    data: csv("pairs.csv", label: kind);
    validation: 0.2;
    optimizer: adam(lr: 1e-2);
    batch: 16;
    epochs: 30;
    seed: 3;
}
"#,
    )
    .unwrap();
}

/// The accuracy line of an `eval` report.
fn accuracy(report: &str) -> f64 {
    report
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("accuracy ")?
                .strip_suffix('%')?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no accuracy in:\n{report}"))
}

#[test]
fn calibrate_from_a_csv_then_eval_and_predict_in_int8() {
    let dir = temp_dir("calibrate");
    probs_model(&dir);
    ok(&nnc(&dir, &["train", "probs.nn", "--debug", "--quiet"]));
    let f32_eval = ok(&nnc(&dir, &["eval", "probs.nn", "--debug"]));
    let f32_acc = accuracy(&f32_eval);
    assert!(f32_acc > 90.0, "{f32_eval}");

    // Calibrate on 100 of the CSV's 300 rows (its label column skipped):
    // the code goes to -o, the int8 weights next to the f32 weights, the
    // report to standard error.
    let out = nnc(
        &dir,
        &[
            "compile",
            "probs.nn",
            "--quantize",
            "int8",
            "--calibrate",
            "pairs.csv",
            "--calibration-samples",
            "100",
            "--debug",
            "-o",
            "m.rs",
        ],
    );
    let (stdout, err) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{err}");
    assert!(
        err.contains(
            "Pairs: int8 weights calibrated on 100 of 300 samples of pairs.csv: \
             runs/Pairs/weights.int8.safetensors"
        ),
        "{err}"
    );
    assert!(err.contains("int8 dense"), "{err}");
    assert!(std::fs::read_to_string(dir.join("m.rs"))
        .unwrap()
        .contains("pub fn int8_plan()"));
    let int8_file = dir.join("runs/Pairs/weights.int8.safetensors");
    assert!(int8_file.is_file());

    // The same report as f32 (accuracy, confusion matrix with the class
    // names the f32 weights carried), without a loss.
    let int8_eval = ok(&nnc(&dir, &["eval", "probs.nn", "--debug", "--int8"]));
    assert!(
        int8_eval.starts_with("Pairs (int8) on pairs.csv (300 samples):"),
        "{int8_eval}"
    );
    let int8_acc = accuracy(&int8_eval);
    assert!(
        (int8_acc - f32_acc).abs() <= 2.0,
        "f32 {f32_acc} %, int8 {int8_acc} %:\n{int8_eval}"
    );
    assert!(
        int8_eval.contains("confusion matrix") && int8_eval.contains("big_a"),
        "{int8_eval}"
    );
    assert!(!int8_eval.contains("loss"), "{int8_eval}");

    // Predictions: the f32 file's header and classes, from the int8 plan's
    // logits (its softmax dropped, then applied once by the report).
    std::fs::write(dir.join("new.csv"), "a,b,noise\n0.9,0.1,0.5\n0.1,0.9,0.5\n").unwrap();
    ok(&nnc(
        &dir,
        &[
            "predict", "probs.nn", "--debug", "--int8", "--data", "new.csv", "-o", "pred.csv",
        ],
    ));
    let pred = std::fs::read_to_string(dir.join("pred.csv")).unwrap();
    let rows: Vec<&str> = pred.lines().collect();
    assert_eq!(rows[0], "class,p(big_a),p(big_b)", "{pred}");
    assert!(
        rows[1].starts_with("big_a,") && rows[2].starts_with("big_b,"),
        "{pred}"
    );
    let p: Vec<f64> = rows[1]
        .split(',')
        .skip(1)
        .map(|v| v.parse().unwrap())
        .collect();
    assert!((p[0] + p[1] - 1.0).abs() < 1e-3, "probabilities: {pred}");

    // Calibration data that does not fit: two feature columns for an input
    // of three (the file and what was expected are named), and a field that
    // is not a number (file:line:col).
    std::fs::write(dir.join("narrow.csv"), "a,b,kind\n0.1,0.2,big_a\n").unwrap();
    std::fs::write(
        dir.join("typo.csv"),
        "a,b,noise,kind\n0.1,0.2,0.3,big_a\n0.1,zz,0.3,big_b\n",
    )
    .unwrap();
    let calibrate = |data: &str| {
        nnc(
            &dir,
            &[
                "compile",
                "probs.nn",
                "--quantize",
                "int8",
                "--calibrate",
                data,
                "--int8-output",
                "bad.safetensors",
                "--debug",
                "-o",
                "m.rs",
            ],
        )
    };
    let out = calibrate("narrow.csv");
    let err = stderr(&out);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("calibration data narrow.csv does not fit model `Pairs`")
            && err.contains("takes 3 values per sample"),
        "{err}"
    );
    let out = calibrate("typo.csv");
    let err = stderr(&out);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("typo.csv:3:"), "{err}");
    assert!(!dir.join("bad.safetensors").exists(), "nothing written");

    // A file of the other kind is refused with the reason: f32 weights as
    // int8, int8 weights as f32.
    let out = nnc(
        &dir,
        &[
            "eval",
            "probs.nn",
            "--debug",
            "--int8",
            "--weights",
            "runs/Pairs/weights.safetensors",
        ],
    );
    let err = stderr(&out);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("not an int8 weights file"), "{err}");
    let out = nnc(
        &dir,
        &[
            "eval",
            "probs.nn",
            "--debug",
            "--weights",
            "runs/Pairs/weights.int8.safetensors",
        ],
    );
    let err = stderr(&out);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("is an int8 weights file: run it with --int8"),
        "{err}"
    );
    // Without a trained model's weights: said before anything is built.
    let out = nnc(
        &dir,
        &[
            "compile",
            "probs.nn",
            "--quantize",
            "int8",
            "--calibrate",
            "pairs.csv",
            "--weights",
            "missing.safetensors",
            "--debug",
            "-o",
            "m.rs",
        ],
    );
    let err = stderr(&out);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("missing.safetensors does not exist"), "{err}");
    // --calibrate needs --quantize.
    let out = nnc(&dir, &["compile", "probs.nn", "--calibrate", "pairs.csv"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    std::fs::remove_dir_all(&dir).expect("clean up");
}

/// The tensors of a safetensors file: its bytes after the header (whose
/// metadata the safetensors crate writes in no fixed order).
fn tensor_bytes(path: &std::path::Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    bytes[8 + n..].to_vec()
}

/// `--calibrate` reads the other two kinds of data too: the bundled MNIST
/// test digits as an IDX directory's training pair and as a shard from
/// `nnc data convert` are the same 2,000 samples, so the 300 spread over
/// them calibrate the MNIST MLP to the same int8 weights, byte for byte;
/// and the int8 model they make scores like the f32 one.
#[test]
fn calibrate_from_an_idx_directory_and_a_shard_alike() {
    let dir = with_model("calibrate-idx-shard", "mnist_mlp");
    let mnist = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/mnist-10k");
    let images = mnist.join("t10k-images-idx3-ubyte.gz");
    let labels = mnist.join("t10k-labels-idx1-ubyte.gz");
    std::fs::create_dir_all(dir.join("idx")).unwrap();
    std::fs::copy(&images, dir.join("idx/train-images-idx3-ubyte.gz")).unwrap();
    std::fs::copy(&labels, dir.join("idx/train-labels-idx1-ubyte.gz")).unwrap();
    let (i, l) = (images.to_str().unwrap(), labels.to_str().unwrap());
    ok(&nnc(
        &dir,
        &["data", "convert", i, l, "-o", "t10k.shard", "--debug"],
    ));
    // One epoch is enough for a model that scores well above chance.
    let train = [
        "train",
        "m.nn",
        "--debug",
        "--quiet",
        "--epochs",
        "1",
        "--validation",
        "0",
        "--data",
        "idx",
    ];
    ok(&nnc(&dir, &train));
    let calibrate = |data: &str, output: &str| {
        let out = nnc(
            &dir,
            &[
                "compile",
                "m.nn",
                "--quantize",
                "int8",
                "--calibrate",
                data,
                "--int8-output",
                output,
                "--debug",
                "-o",
                "m.rs",
            ],
        );
        let (stdout, err) = text(&out);
        assert_eq!(out.status.code(), Some(0), "{stdout}\n{err}");
        let want =
            format!("MnistMlp: int8 weights calibrated on 300 of 2000 samples of {data}: {output}");
        assert!(err.contains(&want), "{err}");
    };
    calibrate("idx", "idx.int8.safetensors");
    calibrate("t10k.shard", "shard.int8.safetensors");
    assert!(
        tensor_bytes(&dir.join("idx.int8.safetensors"))
            == tensor_bytes(&dir.join("shard.int8.safetensors")),
        "the IDX directory and the shard calibrate alike"
    );
    let eval = |extra: &[&str]| {
        let mut args = vec!["eval", "m.nn", "--debug", "--data", "t10k.shard"];
        args.extend_from_slice(extra);
        accuracy(&ok(&nnc(&dir, &args)))
    };
    let f32_acc = eval(&[]);
    let int8_acc = eval(&["--int8", "--weights", "idx.int8.safetensors"]);
    assert!(f32_acc > 80.0, "f32 {f32_acc} %");
    assert!(
        (int8_acc - f32_acc).abs() <= 1.0,
        "f32 {f32_acc} %, int8 {int8_acc} %"
    );
    std::fs::remove_dir_all(&dir).expect("clean up");
}
