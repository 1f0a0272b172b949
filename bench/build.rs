//! Compiles the benchmark workloads into OUT_DIR; `workloads.rs` includes them.

fn main() {
    for model in [
        "../examples/models/mnist_mlp.nn",
        "models/mlp_wide.nn",
        "models/mlp_wide_512.nn",
        "models/mlp_wide_1024.nn",
        "models/mlp_wide_4096.nn",
        "../examples/models/lenet.nn",
        "../examples/models/transformer.nn",
        "models/transformer_large.nn",
    ] {
        if let Err(e) = nnc_compiler::build::compile(model) {
            panic!("{e}");
        }
    }
}
