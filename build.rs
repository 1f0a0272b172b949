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
    // The second code-generation target (plain-loop matrix products), for
    // the models whose products cover every GEMM path: shared and batched
    // right operands, folded transposes, matmul epilogues; and LeNet, whose
    // fused convolutions go through the target's own conv2d kernel and the
    // default whole-output epilogue.
    let naive = nnc_compiler::codegen::Options {
        target: std::sync::Arc::new(nnc_compiler::codegen::target::NaiveProducts),
        ..Default::default()
    };
    const NAIVE: &[&str] = &["mnist_mlp", "every_op", "transformer", "seq_ops", "lenet"];
    // Generated with `input_gradient` (the explain option, #26): every
    // example and end-to-end model with a float input, and the transformer
    // (token ids only: attributed through its embeddings).
    let explain = nnc_compiler::codegen::Options {
        explain: true,
        ..Default::default()
    };
    const EXPLAIN: &[&str] = &[
        "lenet",
        "mnist_mlp",
        "mnist_bn_dropout",
        "binary",
        "regression",
        "two_inputs",
        "torch_mlp",
        "transformer",
    ];
    // Generated with the int8 inference plan (`--quantize int8`, #23): the
    // example models it covers; tests/int8.rs runs them.
    let int8 = nnc_compiler::codegen::Options {
        quantize: Some(nnc_compiler::codegen::Quantize::Int8),
        ..Default::default()
    };
    const INT8: &[&str] = &["lenet", "mnist_mlp"];
    let out_dir =
        std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    // Every model, included under `#![deny(warnings)]` by tests/warnings.rs:
    // generated code must compile warning-free in a user's crate.
    let mut all = String::new();
    for dir in [
        "examples/models",
        "compiler/tests/models",
        "tests/models",
        "compiler/tests/diagnostics/ok",
    ] {
        println!("cargo:rerun-if-changed={dir}");
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "nn"))
            .collect();
        files.sort();
        for path in files {
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("model");
            if dir.ends_with("/ok") {
                // Models that check cleanly, written for the diagnostics
                // suite: compiled only for the warnings test, under their own
                // names.
                let code = nnc_compiler::build::compile_to_string(Path::new(&path), &opts)
                    .unwrap_or_else(|e| panic!("{}", chain(&e)));
                let file = format!("ok_{stem}.rs");
                nnc_compiler::build::write_if_changed(&out_dir.join(&file), &code)
                    .unwrap_or_else(|e| panic!("{}", chain(&e)));
                all.push_str(&format!(
                    "pub mod ok_{stem} {{ include!(concat!(env!(\"OUT_DIR\"), \"/{file}\")); }}\n"
                ));
                continue;
            }
            if let Err(e) = nnc_compiler::build::compile_with(Path::new(&path), &opts) {
                panic!("{}", chain(&e));
            }
            all.push_str(&format!(
                "pub mod {stem} {{ include!(concat!(env!(\"OUT_DIR\"), \"/{stem}.rs\")); }}\n"
            ));
            all.push_str(&format!("pub mod {stem}_o0 {{ include!(concat!(env!(\"OUT_DIR\"), \"/{stem}_o0.rs\")); }}\n"));
            // The unoptimised variant, for the -O0 == -O2 equivalence tests.
            let code = nnc_compiler::build::compile_to_string(Path::new(&path), &o0)
                .unwrap_or_else(|e| panic!("{}", chain(&e)));
            nnc_compiler::build::write_if_changed(&out_dir.join(format!("{stem}_o0.rs")), &code)
                .unwrap_or_else(|e| panic!("{}", chain(&e)));
            if EXPLAIN.contains(&stem) {
                let code = nnc_compiler::build::compile_to_string(Path::new(&path), &explain)
                    .unwrap_or_else(|e| panic!("{}", chain(&e)));
                let file = format!("{stem}_explain.rs");
                nnc_compiler::build::write_if_changed(&out_dir.join(&file), &code)
                    .unwrap_or_else(|e| panic!("{}", chain(&e)));
                all.push_str(&format!(
                    "pub mod {stem}_explain {{ include!(concat!(env!(\"OUT_DIR\"), \"/{file}\")); }}\n"
                ));
            }
            if INT8.contains(&stem) {
                let code = nnc_compiler::build::compile_to_string(Path::new(&path), &int8)
                    .unwrap_or_else(|e| panic!("{}", chain(&e)));
                let file = format!("{stem}_int8.rs");
                nnc_compiler::build::write_if_changed(&out_dir.join(&file), &code)
                    .unwrap_or_else(|e| panic!("{}", chain(&e)));
                all.push_str(&format!(
                    "pub mod {stem}_int8 {{ include!(concat!(env!(\"OUT_DIR\"), \"/{file}\")); }}\n"
                ));
            }
            if NAIVE.contains(&stem) {
                let code = nnc_compiler::build::compile_to_string(Path::new(&path), &naive)
                    .unwrap_or_else(|e| panic!("{}", chain(&e)));
                let file = format!("{stem}_naive.rs");
                nnc_compiler::build::write_if_changed(&out_dir.join(&file), &code)
                    .unwrap_or_else(|e| panic!("{}", chain(&e)));
                all.push_str(&format!(
                    "pub mod {stem}_naive {{ include!(concat!(env!(\"OUT_DIR\"), \"/{file}\")); }}\n"
                ));
            }
        }
    }
    // A student with its teacher compiled in, apart from `tests/models`: the
    // interpreter tests that walk those directories bind no teacher weights.
    let pair = Path::new("tests/teacher/distill_pair.nn");
    println!("cargo:rerun-if-changed={}", pair.display());
    if let Err(e) = nnc_compiler::build::compile_with(pair, &opts) {
        panic!("{}", chain(&e));
    }
    all.push_str(
        "pub mod distill_pair { include!(concat!(env!(\"OUT_DIR\"), \"/distill_pair.rs\")); }\n",
    );
    nnc_compiler::build::write_if_changed(&out_dir.join("all_models.rs"), &all)
        .unwrap_or_else(|e| panic!("{}", chain(&e)));
}

/// An error and its causes, each once: "cannot write X: No space left".
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    text
}
