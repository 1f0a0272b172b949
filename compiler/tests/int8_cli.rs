//! `nnc compile --quantize int8` (#23): the generated int8 plan and the
//! report of which steps run int8 and which stay f32, at their source
//! positions; a model with an op that has no int8 plan step is refused with
//! a diagnostic at that op and nothing is written. (The generated plan runs
//! in tests/int8.rs at the workspace root.)

use std::path::PathBuf;

mod support;
use support::cli::{nnc, stderr, with_model};

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
