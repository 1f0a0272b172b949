//! Compiles the MNIST classifier into OUT_DIR; `main.rs` includes it.

fn main() {
    if let Err(e) = nnc_compiler::build::compile("../models/mnist_mlp.nn") {
        panic!("{e}");
    }
}
