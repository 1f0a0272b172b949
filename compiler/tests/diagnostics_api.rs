//! What the fixture suite (`diagnostics.rs`, a model and its rendered errors
//! per case) cannot express: the render format itself — location, source
//! line, underline, hint, the one-line `locate` form, colour — and that the
//! example model shipped in `examples/` checks cleanly.

use nnc_compiler::{check_source, SourceFile};

#[test]
fn rendered_error_has_location_source_line_and_underline() {
    let text = "network N {
    input image: f32[batch, 784];
    param w: f32[128, 10];
    y = image @ w;
    loss mean(y);
}";
    let source = SourceFile::new("file.nn", text);
    let diags = check_source(&source)
        .expect_err("a shape error")
        .diagnostics;
    let out = source.render(&diags, false);
    assert!(
        out.starts_with(
            "error[shape]: matmul of f32[batch, 784] and f32[128, 10]: inner dimensions 784 \
             and 128 differ\n"
        ),
        "{out}"
    );
    assert!(out.contains("┌─ file.nn:4:9\n"), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    let at = lines
        .iter()
        .position(|l| *l == "4 │     y = image @ w;")
        .unwrap_or_else(|| panic!("no source line in:\n{out}"));
    // `image @ w` is columns 9..18 of the source line.
    assert_eq!(
        lines[at + 1],
        format!("  │{}{}", " ".repeat(9), "^".repeat(9))
    );
    assert!(out.contains("this is f32[batch, 784]"), "{out}");
    assert!(out.contains("this is f32[128, 10]"), "{out}");
    assert!(
        !out.contains('\u{1b}'),
        "no colour codes when colour is off"
    );
    assert_eq!(
        source.locate(&diags[0]),
        "file.nn:4:9: matmul of f32[batch, 784] and f32[128, 10]: inner dimensions 784 and \
         128 differ"
    );
}

#[test]
fn rendered_error_shows_the_hint() {
    let text = "network N {
    input image: f32[batch, 4];
    y = relu(imgae);
    loss mean(y);
}";
    let source = SourceFile::new("file.nn", text);
    let diags = check_source(&source)
        .expect_err("an unknown name")
        .diagnostics;
    let out = source.render(&diags, false);
    assert!(
        out.contains("error[unknown-name]: unknown name `imgae`\n"),
        "{out}"
    );
    assert!(out.contains("┌─ file.nn:3:14\n"), "{out}");
    assert!(out.contains("3 │     y = relu(imgae);\n"), "{out}");
    assert!(
        out.contains(&format!(
            "  │{}^^^^^ not defined before this use\n",
            " ".repeat(14)
        )),
        "{out}"
    );
    assert!(out.contains("= help: did you mean `image`?"), "{out}");
}

#[test]
fn rendered_colour_uses_ansi_codes() {
    let source = SourceFile::new("file.nn", "network N { loss mean(q); }");
    let diags = check_source(&source).expect_err("unknown name").diagnostics;
    assert!(source.render(&diags, true).contains('\u{1b}'));
}

#[test]
fn the_example_model_compiles() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/models/mnist_mlp.nn"
    );
    let text = std::fs::read_to_string(path).expect("the example model");
    let source = SourceFile::new("mnist_mlp.nn", text);
    if let Err(e) = check_source(&source) {
        panic!("{}", source.render(&e.diagnostics, false));
    }
}

#[test]
fn whole_number_settings_are_read_exactly() {
    // 2^53 + 1 and 2^64 - 1 are no f64: read as numbers, they rounded (and
    // the largest was refused, its message printing a rounded value).
    for seed in [9_007_199_254_740_993u64, u64::MAX] {
        let text = format!(
            "network N {{ input x: f32[batch, 4]; loss mean(x); }}
             train N {{ seed: {seed}; epochs: {seed}; early_stop: {seed}; }}"
        );
        let module = check_source(&SourceFile::new("seed.nn", text)).expect("valid");
        let cfg = module.train_config("N");
        assert_eq!(cfg.spec.seed, seed);
        assert_eq!(cfg.spec.epochs, seed);
        assert_eq!(cfg.spec.early_stop, Some(seed));
    }
}

#[test]
fn a_byte_order_mark_is_no_token_and_moves_no_column() {
    let text = "\u{feff}network N { input x: f32[batch, 4]; loss mean(y); }";
    let source = SourceFile::new("bom.nn", text);
    let diags = check_source(&source).expect_err("unknown name").diagnostics;
    assert_eq!(diags.len(), 1);
    assert_eq!(
        source.locate(&diags[0]).split(": ").next(),
        Some("bom.nn:1:47")
    );
}

#[test]
fn augment_settings_reach_the_train_spec() {
    use nnc_compiler::ir::AugmentSpec;
    let cases = [
        (
            "image(shift: 2, rotate: 12.5, flip: true, cutout: 8, noise: 0.05)",
            AugmentSpec {
                shift: 2,
                rotate: 12.5,
                flip: true,
                cutout: 8,
                noise: 0.05,
            },
        ),
        (
            "image(flip: true)",
            AugmentSpec {
                flip: true,
                ..AugmentSpec::NONE
            },
        ),
        (
            "tabular(noise: 0.1)",
            AugmentSpec {
                noise: 0.1,
                ..AugmentSpec::NONE
            },
        ),
    ];
    for (value, want) in cases {
        let text = format!(
            "network N {{ input x: f32[batch, 4]; loss mean(x); }}
             train N {{ augment: {value}; }}"
        );
        let module = check_source(&SourceFile::new("augment.nn", text)).expect("valid");
        assert_eq!(module.train_config("N").spec.augment, want, "{value}");
    }
    let text = "network N { input x: f32[batch, 4]; loss mean(x); } train N { epochs: 1; }";
    let module = check_source(&SourceFile::new("plain.nn", text)).expect("valid");
    assert!(module.train_config("N").spec.augment.is_none());
}
