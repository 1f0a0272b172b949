//! The two ways generated code leaves codegen agree: `driver::generate`
//! (`nnc compile`), which formats each kernel and kernel call as it is
//! generated and splices the text in (`codegen::Emit`), writes exactly the
//! text of formatting `driver::generate_tokens`'s stream (what `network!`
//! expands to) whole; for every example and test model, at every `-O`
//! level, with `input_gradient` and with an int8 plan. And kernels that
//! are the same code are one function, which each call names.

mod support;

use nnc_compiler::codegen::{self, Options, Quantize};
use nnc_compiler::driver::{generate, generate_tokens};
use nnc_compiler::ir::OptLevel;
use nnc_compiler::{check_source, SourceFile};
use support::all_models;

#[test]
fn text_as_generated_equals_the_formatted_token_stream() {
    let variants = [
        Options::default(),
        Options {
            opt_level: OptLevel::O0,
            ..Options::default()
        },
        Options {
            opt_level: OptLevel::O1,
            ..Options::default()
        },
        Options {
            explain: true,
            ..Options::default()
        },
        Options {
            quantize: Some(Quantize::Int8),
            ..Options::default()
        },
    ];
    let mut compared = 0;
    for path in all_models() {
        let text = std::fs::read_to_string(&path).unwrap();
        let source = SourceFile::new(path.as_str(), text.as_str());
        let module = check_source(&source).unwrap_or_else(|e| panic!("{path}: {e:?}"));
        for opts in &variants {
            // Options a model does not support (no float input to explain,
            // nothing to quantize) fail the same way on both paths.
            let tokens = generate_tokens(&source, &module, opts);
            let text = generate(&source, &module, opts);
            match (tokens, text) {
                (Ok(tokens), Ok(text)) => {
                    let whole = codegen::format(&source, tokens).unwrap();
                    assert!(whole == text, "{path} with {opts:?}: the texts differ");
                    compared += 1;
                }
                (Err(a), Err(b)) => assert_eq!(a.diagnostics, b.diagnostics, "{path}"),
                (a, b) => panic!("{path} with {opts:?}: {:?} vs {:?}", a.err(), b.err()),
            }
        }
    }
    assert!(compared > 40, "only {compared} compared");
}

/// A stack of identical layers has one kernel function per distinct
/// kernel, named after its first node and commented with the others; the
/// calls of the later layers name it, each commented with its own node.
#[test]
fn identical_kernels_are_one_function() {
    let mut text = String::from(
        "network Stack {\n  input x: f32[batch, 8];\n  label y: class[batch] of 8;\n  h0 = x;\n",
    );
    for i in 1..=6 {
        text.push_str(&format!("  h{i} = relu(dense(h{}, 8));\n", i - 1));
    }
    text.push_str("  loss cross_entropy(h6, y);\n}\n");
    let source = SourceFile::new("stack.nn", text.as_str());
    let module = check_source(&source).unwrap();
    let code = generate(&source, &module, &Options::default()).unwrap();
    let relu_kernels: Vec<&str> = code
        .lines()
        .filter(|l| l.trim_start().starts_with("fn k") && l.contains("_relu("))
        .collect();
    // The first layer reads the input, the others a workspace buffer: one
    // shape of call, so one kernel for all six.
    assert_eq!(relu_kernels.len(), 1, "{relu_kernels:?}");
    let name = relu_kernels[0]
        .trim_start()
        .trim_start_matches("fn ")
        .split('(')
        .next()
        .unwrap();
    assert!(code.contains("; also the kernel of nodes "), "{code}");
    // Six forward layers in each of train_step, loss, predict_scores.
    let calls = code.matches(&format!("Self::{name}(")).count();
    assert!(calls >= 12, "{calls} calls of {name}");
    for i in 1..=6 {
        assert!(code.contains(&format!("`h{i}` = `relu`")), "h{i}");
    }
}

/// A parameter table long enough to be written a row at a time
/// (`ModelSpec` of a deep stack) is the text of formatting it whole, also
/// with a short runtime path (rows that would fit several to a line).
#[test]
fn a_long_parameter_table_written_by_row_equals_the_whole() {
    let mut text = String::from(
        "network Deep {\n  input x: f32[batch, 4];\n  label y: class[batch] of 4;\n  h0 = x;\n",
    );
    for i in 1..=70 {
        text.push_str(&format!("  h{i} = relu(dense(h{}, 4));\n", i - 1));
    }
    text.push_str("  loss cross_entropy(h70, y);\n}\n");
    let source = SourceFile::new("deep.nn", text.as_str());
    let module = check_source(&source).unwrap();
    for runtime in ["::nnc::runtime", "r"] {
        let opts = Options {
            runtime: runtime.to_string(),
            ..Options::default()
        };
        let tokens = generate_tokens(&source, &module, &opts).unwrap();
        let whole = codegen::format(&source, tokens).unwrap();
        let text = generate(&source, &module, &opts).unwrap();
        assert!(whole == text, "with runtime `{runtime}`: the texts differ");
        assert!(text.contains("name: ::std::borrow::Cow::Borrowed(\"h70.bias\")"));
    }
}
