//! Compiles every example model and every compiler test model into OUT_DIR,
//! so that the end-to-end tests include the generated code and check it
//! against the reference interpreter.

use std::path::Path;

fn main() {
    let opts = nnc_compiler::codegen::Options::default();
    for dir in ["examples/models", "compiler/tests/models"] {
        println!("cargo:rerun-if-changed={dir}");
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "nn"))
            .collect();
        files.sort();
        for path in files {
            if let Err(e) = nnc_compiler::build::compile_with(Path::new(&path), &opts) {
                panic!("{e}");
            }
        }
    }
}
