//! Compiles the benchmark workloads into OUT_DIR; `main.rs` includes them.

fn main() {
    for model in [
        "../examples/models/mnist_mlp.nn",
        "models/mlp_wide.nn",
        "../examples/models/lenet.nn",
    ] {
        if let Err(e) = nnc_compiler::build::compile(model) {
            panic!("{e}");
        }
    }
}
