//! Property tests of the front end on hostile input: nothing panics, every
//! diagnostic points inside the text, no malformed input is blamed on nnc
//! itself (`ErrorKind::Internal`), and whatever compiles also differentiates
//! into a training graph that verifies.
//!
//! Inputs: (a) random bytes, (b) random token soup, (c) random mutations of
//! the valid models `examples/models/mnist_mlp.nn` and `compiler/tests/models/*.nn`.

use nnc_compiler::autodiff::training_graph;
use nnc_compiler::ir::GradOptions;
use nnc_compiler::{check_source, report, ErrorKind, SourceFile};
use proptest::prelude::*;
use proptest::test_runner::Config;
use std::path::Path;
use std::sync::LazyLock;

/// `cases` per property, or `NNC_FUZZ_CASES` when set (for longer runs).
fn config(cases: u32) -> Config {
    let cases = std::env::var("NNC_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    Config {
        cases,
        // Found failures become explicit tests in diagnostics.rs instead of
        // files in the source tree.
        failure_persistence: None,
        ..Config::default()
    }
}

/// The valid models the mutations start from: the example, and every `.nn`
/// under `compiler/tests/models/` (the directory may not exist).
static SEEDS: LazyLock<Vec<(String, String)>> = LazyLock::new(|| {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut paths = vec![root.join("../examples/models/mnist_mlp.nn")];
    if let Ok(dir) = std::fs::read_dir(root.join("tests/models")) {
        let mut more: Vec<_> = dir
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "nn"))
            .collect();
        more.sort();
        paths.extend(more);
    }
    paths
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
            (p.display().to_string(), text)
        })
        .collect()
});

/// Fragments that mean something to the grammar or to lowering.
const TOKENS: &[&str] = &[
    "network",
    "train",
    "input",
    "label",
    "param",
    "output",
    "loss",
    "class",
    "of",
    "f32",
    "batch",
    "full",
    "N",
    "x",
    "y",
    "h1",
    "digit",
    "image",
    "logits",
    "dense",
    "relu",
    "softmax",
    "mse",
    "l1",
    "cross_entropy",
    "one_hot",
    "reshape",
    "transpose",
    "broadcast",
    "sum",
    "mean",
    "max",
    "flatten",
    "pow",
    "adam",
    "sgd",
    "cosine",
    "step",
    "he_normal",
    "normal",
    "uniform",
    "lr",
    "units",
    "axis",
    "activation",
    "init",
    "bias",
    "optimizer",
    "epochs",
    "schedule",
    "warmup",
    "true",
    "false",
    "0",
    "1",
    "2",
    "10",
    "784",
    "-1",
    "1.5",
    "1e-3",
    "1e999",
    "99999999999999999999999",
    "1099511627776",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ";",
    ",",
    ":",
    "=",
    "+",
    "-",
    "*",
    "/",
    "@",
    "|>",
    ".",
    " ",
    "\n",
    "\t",
    "//",
    "é",
    "→",
    "\u{0}",
    "_",
    "$",
];

/// Runs the whole front end on `text` and checks the invariants.
fn check(text: &str) -> Result<(), TestCaseError> {
    let source = SourceFile::new("fuzz.nn", text);
    match check_source(&source) {
        Err(e) => {
            prop_assert!(!e.diagnostics.is_empty());
            for d in &e.diagnostics {
                let spans = std::iter::once(d.span).chain(d.notes.iter().map(|n| n.0));
                for s in spans {
                    prop_assert!(
                        s.start <= s.end && s.end <= text.len(),
                        "span {:?} outside a text of {} bytes: {}",
                        s,
                        text.len(),
                        d.message
                    );
                    prop_assert!(
                        text.is_char_boundary(s.start) && text.is_char_boundary(s.end),
                        "span {:?} splits a character: {}",
                        s,
                        d.message
                    );
                }
                prop_assert_ne!(d.kind, ErrorKind::Internal, "{}", source.locate(d));
                prop_assert!(!d.message.is_empty());
            }
            let rendered = source.render(&e.diagnostics, false);
            prop_assert!(rendered.contains("fuzz.nn:"), "{}", rendered);
        }
        Ok(module) => {
            for net in &module.networks {
                prop_assert_eq!(net.graph.verify(), Ok(()));
                let cfg = module.train_config(&net.name);
                let opts = GradOptions {
                    regularization: cfg.regularization,
                    inputs: Vec::new(),
                };
                let tg = match training_graph(net, &opts) {
                    Ok(tg) => tg,
                    Err(d) => {
                        return Err(TestCaseError::fail(format!(
                            "network `{}` compiles but does not differentiate: {}",
                            net.name,
                            source.locate(&d)
                        )))
                    }
                };
                prop_assert_eq!(tg.graph.verify(), Ok(()));
                prop_assert_eq!(tg.params.len(), net.params.len());
                // What `nnc check` prints.
                let summary = report::summary(net, &tg);
                let head = format!("network {}\n", net.name);
                prop_assert!(summary.starts_with(&head), "{}", summary);
            }
        }
    }
    Ok(())
}

/// One edit of a text.
#[derive(Clone, Debug)]
enum Mutation {
    DeleteChar(usize),
    InsertToken(usize, usize),
    ReplaceChar(usize, usize),
    DuplicateChar(usize),
    DeleteTokens(usize, usize),
    DuplicateTokens(usize, usize),
    ReplaceToken(usize, usize),
    SwapLines(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let n = TOKENS.len();
    let at = any::<usize>();
    prop_oneof![
        at.prop_map(Mutation::DeleteChar),
        (at, 0..n).prop_map(|(i, t)| Mutation::InsertToken(i, t)),
        (at, 0..n).prop_map(|(i, t)| Mutation::ReplaceChar(i, t)),
        at.prop_map(Mutation::DuplicateChar),
        (at, 1..6usize).prop_map(|(i, k)| Mutation::DeleteTokens(i, k)),
        (at, 1..6usize).prop_map(|(i, k)| Mutation::DuplicateTokens(i, k)),
        (at, 0..n).prop_map(|(i, t)| Mutation::ReplaceToken(i, t)),
        (at, at).prop_map(|(i, j)| Mutation::SwapLines(i, j)),
    ]
}

/// Splits text into token-ish pieces: runs of name characters, runs of
/// whitespace, and single other characters. Concatenated they give the text back.
fn tokens(text: &str) -> Vec<&str> {
    let class = |c: char| {
        if c.is_alphanumeric() || c == '_' || c == '.' {
            0
        } else if c.is_whitespace() {
            1
        } else {
            2
        }
    };
    let mut out = Vec::new();
    let mut start = 0;
    let mut prev: Option<u8> = None;
    for (i, c) in text.char_indices() {
        let k = class(c);
        if i > start && (prev != Some(k) || k == 2) {
            out.push(&text[start..i]);
            start = i;
        }
        prev = Some(k);
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

fn apply(text: &str, m: &Mutation) -> String {
    let chars: Vec<char> = text.chars().collect();
    let toks = tokens(text);
    let pick = |i: usize, len: usize| if len == 0 { 0 } else { i % len };
    let join_chars = |v: Vec<char>| v.into_iter().collect::<String>();
    match *m {
        Mutation::DeleteChar(i) => {
            let mut v = chars;
            if !v.is_empty() {
                let i = pick(i, v.len());
                v.remove(i);
            }
            join_chars(v)
        }
        Mutation::InsertToken(i, t) => {
            let at = pick(i, toks.len() + 1);
            let mut v = toks.clone();
            v.insert(at, TOKENS[t]);
            v.concat()
        }
        Mutation::ReplaceChar(i, t) => {
            let i = pick(i, chars.len());
            let mut out: String = chars.iter().take(i).collect();
            out.push_str(TOKENS[t]);
            out.extend(chars.iter().skip(i + 1));
            out
        }
        Mutation::DuplicateChar(i) => {
            let mut v = chars;
            if !v.is_empty() {
                let i = pick(i, v.len());
                v.insert(i, v[i]);
            }
            join_chars(v)
        }
        Mutation::DeleteTokens(i, k) => {
            let mut v = toks.clone();
            if !v.is_empty() {
                let i = pick(i, v.len());
                v.drain(i..(i + k).min(v.len()));
            }
            v.concat()
        }
        Mutation::DuplicateTokens(i, k) => {
            let mut v = toks.clone();
            if !v.is_empty() {
                let i = pick(i, v.len());
                let slice: Vec<&str> = v[i..(i + k).min(v.len())].to_vec();
                for (j, s) in slice.into_iter().enumerate() {
                    v.insert(i + j, s);
                }
            }
            v.concat()
        }
        Mutation::ReplaceToken(i, t) => {
            // Replace a name-like token only, which keeps most of the
            // structure and so reaches lowering more often.
            let mut v = toks.clone();
            let names: Vec<usize> = (0..v.len())
                .filter(|&j| v[j].starts_with(|c: char| c.is_alphanumeric() || c == '_'))
                .collect();
            if !names.is_empty() {
                v[names[pick(i, names.len())]] = TOKENS[t];
            }
            v.concat()
        }
        Mutation::SwapLines(i, j) => {
            let mut lines: Vec<&str> = text.split('\n').collect();
            let n = lines.len();
            lines.swap(pick(i, n), pick(j, n));
            lines.join("\n")
        }
    }
}

#[test]
fn the_seeds_are_valid_and_tokens_round_trip() {
    assert!(!SEEDS.is_empty());
    for (name, text) in SEEDS.iter() {
        assert_eq!(tokens(text).concat(), *text, "{name}");
        if let Err(e) = check(text) {
            panic!("{name}: {e}");
        }
        check_source(&SourceFile::new(name.as_str(), text.as_str()))
            .unwrap_or_else(|e| panic!("{name} does not compile: {e}"));
    }
    assert_eq!(
        tokens("h1 = dense(x, 1e-3);"),
        ["h1", " ", "=", " ", "dense", "(", "x", ",", " ", "1e", "-", "3", ")", ";"]
    );
}

proptest! {
    #![proptest_config(config(300))]

    /// (a) Arbitrary bytes, read as lossy UTF-8.
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        check(&String::from_utf8_lossy(&bytes))?;
    }

    /// Arbitrary bytes behind a valid prefix, so that lowering sees them too.
    #[test]
    fn random_bytes_inside_a_network_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let text = format!(
            "network N {{\n    input x: f32[batch, 4];\n    y = {}\n    loss mean(x);\n}}",
            String::from_utf8_lossy(&bytes)
        );
        check(&text)?;
    }

    /// Token soup: random sequences of the language's own words and symbols.
    #[test]
    fn token_soup_never_panics(toks in proptest::collection::vec(0..TOKENS.len(), 0..80)) {
        let text: String = toks.iter().map(|&t| TOKENS[t]).collect::<Vec<_>>().join(" ");
        check(&text)?;
    }
}

proptest! {
    #![proptest_config(config(600))]

    /// (b, c) One to three mutations of a valid model.
    #[test]
    fn mutated_models_never_panic(
        seed in any::<usize>(),
        edits in proptest::collection::vec(mutation(), 1..4),
    ) {
        let (_, base) = &SEEDS[seed % SEEDS.len()];
        let mut text = base.clone();
        for m in &edits {
            text = apply(&text, m);
        }
        check(&text)?;
    }
}
