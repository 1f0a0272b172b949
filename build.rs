//! Compiles every example model, every compiler test model and every
//! end-to-end test model (`tests/models`) into OUT_DIR,
//! so that the end-to-end tests include the generated code and check it
//! against the reference interpreter.

use std::path::Path;

fn main() {
    let opts = nnc_compiler::codegen::Options::default();
    let o0 = nnc_compiler::codegen::Options {
        opt_level: nnc_compiler::ir::OptLevel::O0,
        ..Default::default()
    };
    let out_dir =
        std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    for dir in ["examples/models", "compiler/tests/models", "tests/models"] {
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
            // The unoptimised variant, for the -O0 == -O2 equivalence tests.
            let code = nnc_compiler::build::compile_to_string(Path::new(&path), &o0)
                .unwrap_or_else(|e| panic!("{e}"));
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("model");
            nnc_compiler::build::write_if_changed(&out_dir.join(format!("{stem}_o0.rs")), &code)
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
}
