//! Golden files of the generated code of every example and test model
//! (insta snapshots under `tests/snapshots/`). Generation is deterministic,
//! so any change in codegen shows up here for review.

fn generated(stem: &str) -> String {
    let path = format!("{}/{stem}.rs", env!("OUT_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn mnist_mlp() {
    insta::assert_snapshot!("mnist_mlp", generated("mnist_mlp"));
}

#[test]
fn lenet() {
    insta::assert_snapshot!("lenet", generated("lenet"));
}

#[test]
fn transformer() {
    insta::assert_snapshot!("transformer", generated("transformer"));
}

#[test]
fn every_op() {
    insta::assert_snapshot!("every_op", generated("every_op"));
}

#[test]
fn mnist_bn_dropout() {
    insta::assert_snapshot!("mnist_bn_dropout", generated("mnist_bn_dropout"));
}

/// Generating twice gives the same text (no hash-map order leaks in).
#[test]
fn generation_is_deterministic() {
    let path = format!(
        "{}/examples/models/mnist_mlp.nn",
        env!("CARGO_MANIFEST_DIR")
    );
    let opts = nnc::compiler::codegen::Options::default();
    let a = nnc::build::compile_to_string(std::path::Path::new(&path), &opts).unwrap();
    let b = nnc::build::compile_to_string(std::path::Path::new(&path), &opts).unwrap();
    assert_eq!(a, b);
}
