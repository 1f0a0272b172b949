//! Compiles the MNIST classifiers into OUT_DIR; `main.rs` includes them.
//! The MLP and LeNet also get their int8 inference plan (`int8_plan`,
//! `quantize_int8`; `src/bin/int8.rs` measures them).

use nnc_compiler::codegen::{Options, Quantize};

fn main() {
    let int8 = Options {
        quantize: Some(Quantize::Int8),
        ..Options::default()
    };
    for (model, opts) in [
        ("../models/mnist_mlp.nn", &int8),
        ("../models/lenet.nn", &int8),
        ("../models/mnist_bn_dropout.nn", &Options::default()),
        ("../models/mnist_pipeline.nn", &Options::default()),
        ("../models/mnist_split.nn", &Options::default()),
        ("../models/mnist_pipeline4.nn", &Options::default()),
        ("../models/large/wide_pipeline.nn", &Options::default()),
        ("../models/large/wide_pipeline4.nn", &Options::default()),
    ] {
        if let Err(e) = nnc_compiler::build::compile_with(model, opts) {
            panic!("{e}");
        }
    }
}
