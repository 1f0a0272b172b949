//! Compiles the MNIST classifiers into OUT_DIR; `main.rs` includes them.

fn main() {
    for model in [
        "../models/mnist_mlp.nn",
        "../models/lenet.nn",
        "../models/mnist_bn_dropout.nn",
        "../models/mnist_pipeline.nn",
    ] {
        if let Err(e) = nnc_compiler::build::compile(model) {
            panic!("{e}");
        }
    }
}
