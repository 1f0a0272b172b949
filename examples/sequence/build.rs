//! Compiles the transformer into OUT_DIR; `main.rs` includes it.

fn main() {
    if let Err(e) = nnc_compiler::build::compile("../models/transformer.nn") {
        panic!("{e}");
    }
}
