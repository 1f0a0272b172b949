//! The `nnc` binary end to end: `check` on a good model, a bad model and a
//! missing file; `graph --dot`, forward and training.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root (the compiler crate's parent).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the compiler crate lives in the workspace")
        .to_path_buf()
}

fn mnist() -> PathBuf {
    root().join("examples/models/mnist_mlp.nn")
}

/// Runs `nnc` with colour off.
fn nnc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nnc"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("nnc runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A fresh directory under the system temp dir for this test.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nnc-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn check_prints_every_param_with_shape_and_count() {
    let path = mnist();
    let out = nnc(&["check", path.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(stderr(&out), "");
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "network MnistMlp");
    assert_eq!(lines[1], "  input  image            f32[batch, 784]");
    assert_eq!(lines[2], "  label  digit            class[batch] of 10");
    assert_eq!(lines[3], "  params:");
    // name, shape, count: one line per parameter in declaration order.
    let params: Vec<Vec<&str>> = lines[4..10]
        .iter()
        .map(|l| {
            let (name, rest) = l.trim().split_once(' ').expect("name and rest");
            let (shape, count) = rest.trim().rsplit_once(' ').expect("shape and count");
            vec![name, shape.trim(), count]
        })
        .collect();
    assert_eq!(
        params,
        vec![
            vec!["h1.weight", "f32[784, 128]", "100,352"],
            vec!["h1.bias", "f32[128]", "128"],
            vec!["h2.weight", "f32[128, 128]", "16,384"],
            vec!["h2.bias", "f32[128]", "128"],
            vec!["logits.weight", "f32[128, 10]", "1,280"],
            vec!["logits.bias", "f32[10]", "10"],
        ]
    );
    assert_eq!(lines[10], "  total params: 118,282");
    // Forward FLOPs for one sample: the matmuls 2·784·128 + 2·128·128 +
    // 2·128·10 = 236,032; bias adds 128 + 128 + 10; relus 128 + 128;
    // softmax 4·10; cross-entropy 5·10. The backward count depends on the
    // gradient rules, so only its presence is checked.
    let flops = lines[11];
    assert!(
        flops.starts_with("  FLOPs per sample: forward 236,644, backward "),
        "{flops}"
    );
    let backward: u64 = flops["  FLOPs per sample: forward 236,644, backward ".len()..]
        .replace(',', "")
        .parse()
        .expect("a count");
    // At least the weight gradients: one matmul per weight, as large as the forward one.
    assert!(
        backward >= 2 * (784 * 128 + 128 * 128 + 128 * 10),
        "{flops}"
    );
    let graph = lines[12]
        .strip_prefix("  graph: 18 forward nodes, ")
        .and_then(|r| r.strip_suffix(" training nodes"))
        .unwrap_or_else(|| panic!("{}", lines[12]));
    assert!(graph.parse::<usize>().expect("a count") > 18);
    // 118,282 parameters: 473.1 KB each for parameters and gradients, twice
    // that for Adam's two moments.
    assert!(
        lines[13].starts_with("  memory per training step at batch 128: 3.8 MB (parameters 473.1 KB, gradients 473.1 KB, optimizer state 946.3 KB, activations at most "),
        "{}",
        lines[13]
    );
    assert_eq!(lines.len(), 14);
}

#[test]
fn check_of_a_bad_file_fails_with_location_message_and_underline() {
    let dir = temp_dir("bad");
    let bad = dir.join("bad.nn");
    std::fs::write(
        &bad,
        "network N {
    input image: f32[batch, 784];
    param w: f32[128, 10];
    y = image @ w;
    loss mean(y);
}
",
    )
    .expect("write bad.nn");
    let out = nnc(&["check", bad.to_str().expect("utf-8 path")]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert_eq!(stdout(&out), "");
    assert!(
        err.starts_with(
            "error[shape]: matmul of f32[batch, 784] and f32[128, 10]: inner dimensions 784 \
             and 128 differ\n"
        ),
        "{err}"
    );
    assert!(err.contains("bad.nn:4:9\n"), "{err}");
    assert!(err.contains("4 │     y = image @ w;\n"), "{err}");
    assert!(
        err.contains(&format!("  │{}{}\n", " ".repeat(9), "^".repeat(9))),
        "{err}"
    );
    assert!(
        err.ends_with(&format!(
            "error: could not compile `{}` due to 1 previous error\n",
            bad.display()
        )),
        "{err}"
    );
    assert!(!err.contains('\u{1b}'), "NO_COLOR turns colour off");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_counts_several_errors() {
    let dir = temp_dir("several");
    let bad = dir.join("two.nn");
    std::fs::write(
        &bad,
        "network N {\n    y = relu(q);\n    loss mean(r);\n}\n",
    )
    .expect("write two.nn");
    let out = nnc(&["check", bad.to_str().expect("utf-8 path")]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("two.nn:2:14"), "{err}");
    assert!(err.contains("two.nn:3:15"), "{err}");
    assert!(err.contains("due to 2 previous errors\n"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_of_a_missing_file_fails_clearly() {
    let dir = temp_dir("missing");
    let missing = dir.join("nope.nn");
    let out = nnc(&["check", missing.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stdout(&out), "");
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!("error: cannot read {}: ", missing.display())),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn graph_dot_shows_the_forward_graph_with_its_params() {
    let path = mnist();
    let out = nnc(&["graph", path.to_str().expect("utf-8 path"), "--dot"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let dot = stdout(&out);
    assert!(dot.starts_with("digraph \"MnistMlp\" {\n"), "{dot}");
    assert!(dot.ends_with("}\n"));
    for p in [
        "h1.weight",
        "h1.bias",
        "h2.weight",
        "h2.bias",
        "logits.weight",
        "logits.bias",
    ] {
        assert!(
            dot.contains(&format!("label=\"{p} = param {p}\\n")),
            "no param node {p} in:\n{dot}"
        );
    }
    assert!(dot.contains("label=\"h1.weight = param h1.weight\\nf32[784, 128]\""));
    assert!(dot.contains("label=\"image = input image\\nf32[batch, 784]\""));
    assert!(!dot.contains("grad "), "no gradients without --train");
    // Every edge names nodes that exist.
    let nodes = dot
        .lines()
        .filter(|l| l.contains(" [label=\"") && !l.contains("->"))
        .count();
    assert_eq!(nodes, 18, "the forward graph has 18 nodes");
}

#[test]
fn graph_dot_train_adds_gradient_nodes() {
    let path = mnist();
    let out = nnc(&[
        "graph",
        path.to_str().expect("utf-8 path"),
        "--dot",
        "--train",
    ]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let dot = stdout(&out);
    assert!(dot.starts_with("digraph \"MnistMlp\" {\n"), "{dot}");
    for p in [
        "h1.weight",
        "h1.bias",
        "h2.weight",
        "h2.bias",
        "logits.weight",
        "logits.bias",
    ] {
        assert!(
            dot.contains(&format!("label=\"grad {p} = ")),
            "no gradient of {p} in:\n{dot}"
        );
    }
    assert!(dot.contains("label=\"grad h1.weight = matmul\\nf32[784, 128]\""));
}

#[test]
fn graph_writes_to_a_file_and_names_a_network() {
    let dir = temp_dir("graph-out");
    let file = dir.join("g.dot");
    let path = mnist();
    let out = nnc(&[
        "graph",
        path.to_str().expect("utf-8 path"),
        "--dot",
        "--network",
        "MnistMlp",
        "-o",
        file.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "");
    let dot = std::fs::read_to_string(&file).expect("the dot file");
    assert!(dot.starts_with("digraph \"MnistMlp\" {\n"));

    let out = nnc(&[
        "graph",
        path.to_str().expect("utf-8 path"),
        "--network",
        "Nope",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        format!("error: no network named `Nope` in {}\n", path.display())
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// ------------------------------------------------------ docs/language.md

/// The fenced code blocks of `docs/language.md`: (info string, body).
fn doc_blocks() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join("docs/language.md")).expect("the reference");
    let mut blocks = Vec::new();
    let mut open: Option<(String, String)> = None;
    for line in text.lines() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => open = Some((info.to_string(), String::new())),
            (Some(_), Some("")) => blocks.extend(open.take()),
            (Some((_, body)), _) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "an unclosed code block");
    blocks
}

#[test]
fn docs_examples_compile() {
    let blocks = doc_blocks();
    let valid: Vec<&String> = blocks
        .iter()
        .filter(|(info, _)| info == "nn")
        .map(|(_, b)| b)
        .collect();
    assert_eq!(valid.len(), 10, "complete examples in the reference");
    for body in valid {
        let source = nnc_compiler::SourceFile::new("language.md", body.as_str());
        if let Err(e) = nnc_compiler::check_source(&source) {
            panic!("{}\n{body}", source.render(&e.diagnostics, false));
        }
    }
}

#[test]
fn docs_show_the_real_output_of_nnc_check() {
    let blocks = doc_blocks();
    let at = blocks
        .iter()
        .position(|(info, _)| info == "nn,fails")
        .expect("a failing example");
    let (bad, (info, shown)) = (&blocks[at].1, &blocks[at + 1]);
    assert_eq!(info, "text", "the output follows the failing example");
    let dir = temp_dir("docs");
    std::fs::write(dir.join("bad.nn"), bad).expect("write bad.nn");
    let out = Command::new(env!("CARGO_BIN_EXE_nnc"))
        .args(["check", "bad.nn"])
        .current_dir(&dir)
        .env("NO_COLOR", "1")
        .output()
        .expect("nnc runs");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), *shown);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn docs_list_every_function() {
    let text = std::fs::read_to_string(root().join("docs/language.md")).expect("the reference");
    for f in nnc_compiler::ops::functions() {
        let name = f.name;
        assert!(
            text.contains(&format!("\n| `{name}` |")),
            "`{name}` has no row in docs/language.md"
        );
    }
    // A layer has a row of its own or is named as another's alias.
    for l in nnc_compiler::lower::layers() {
        let name = l.name;
        assert!(
            text.contains(&format!("\n| `{name}` ")) || text.contains(&format!("(also `{name}`)")),
            "layer `{name}` has no row in docs/language.md"
        );
    }
}
