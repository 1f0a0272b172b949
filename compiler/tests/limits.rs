//! The language's limits hold on every path, and input at or past them is
//! a clean error or a clean compile, never a crash: prefix chains, long
//! operator chains, long chains of fused elementwise bindings. Each case
//! runs the `nnc` binary in a child process, so a stack overflow fails the
//! test instead of killing the runner. Inputs are generated here.

use std::path::PathBuf;
use std::process::{Command, Output};

/// Writes `text` to a fresh file and runs `nnc ARGS FILE`.
fn nnc(name: &str, text: &str, args: &[&str]) -> Output {
    let dir = std::env::temp_dir().join(format!("nnc-limits-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path: PathBuf = dir.join(format!("{name}.nn"));
    std::fs::write(&path, text).expect("write model");
    let out = Command::new(env!("CARGO_BIN_EXE_nnc"))
        .args(args)
        .arg(&path)
        .env("NO_COLOR", "1")
        .output()
        .expect("nnc runs");
    let _ = std::fs::remove_file(&path);
    out
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A network around `body` (statements reading `x`, and `w`), whose loss
/// reads `h`.
fn model(body: &str) -> String {
    format!(
        "network N {{\n  input x: f32[batch, 4];\n  label y: class[batch] of 4;\n  param w: f32[4];\n{body}  loss cross_entropy(h * w, y);\n}}\n"
    )
}

/// Exit code 0: finished, no signal.
fn assert_ok(o: &Output, what: &str) {
    assert_eq!(o.status.code(), Some(0), "{what}: {}", stderr(o));
}

/// Exit code 1 with `message` among the errors: a diagnostic, no crash.
fn assert_error(o: &Output, message: &str, what: &str) {
    assert_eq!(o.status.code(), Some(1), "{what}: {}", stderr(o));
    assert!(stderr(o).contains(message), "{what}: {}", stderr(o));
}

#[test]
fn ten_thousand_prefix_minus_signs_are_an_error_at_the_129th() {
    let text = model(&format!("  h = {}x;\n", "-".repeat(10_000)));
    let o = nnc("neg", &text, &["check"]);
    assert_error(&o, "expression nested more than 128 deep", "10,000 `-`");
    // The span is the minus sign 129 from the operand (line 5, after `  h = `).
    let col = 7 + 10_000 - 129;
    assert!(
        stderr(&o).contains(&format!("neg.nn:5:{col}")),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_hundred_prefix_minus_signs_compile() {
    let text = model(&format!("  h = {}x;\n", "-".repeat(100)));
    assert_ok(&nnc("neg100", &text, &["compile", "-O2"]), "100 `-`");
}

#[test]
fn brackets_and_prefix_operators_share_the_depth_limit() {
    // 70 brackets, each with a `-` inside: 140 levels, under the bracket
    // limit of 128 alone.
    let h = format!("{}x{}", "-(".repeat(70), ")".repeat(70));
    let o = nnc("mixed", &model(&format!("  h = {h};\n")), &["check"]);
    assert_error(&o, "expression nested more than 128 deep", "-(-(…))");
}

#[test]
fn a_hundred_thousand_term_chain_checks() {
    // Left-leaning: walked along its spine, freed without recursion.
    let chain = format!("  h = x{};\n", " + x".repeat(100_000));
    assert_ok(&nnc("chain", &model(&chain), &["check"]), "x + x + …");
    let pipes = format!("  h = x{};\n", " |> relu".repeat(20_000));
    assert_ok(&nnc("pipes", &model(&pipes), &["check"]), "x |> relu |> …");
}

#[test]
fn right_operands_count_towards_the_depth() {
    // `x - (x - (x - …))` nests through brackets; `a * b` on the right of
    // `+` nests one level: 200 terms of `x + x * x` stay shallow.
    let h = format!("  h = x{};\n", " + x * x".repeat(200));
    assert_ok(&nnc("right", &model(&h), &["check"]), "x + x * x + …");
}

#[test]
fn a_chain_of_2500_relu_bindings_compiles_at_o2() {
    // The chain fuses into loops of at most MAX_FUSED_DEPTH levels, so the
    // generated expression stays shallow for syn, prettyplease and rustc.
    let mut body = String::from("  h0 = x;\n");
    for i in 1..=2_500 {
        body.push_str(&format!("  h{i} = relu(h{});\n", i - 1));
    }
    body.push_str("  h = h2500;\n");
    let o = nnc("relu", &model(&body), &["compile", "-O2"]);
    assert_ok(&o, "2,500 relus");
    let code = String::from_utf8_lossy(&o.stdout);
    // Each fused level is one block `{ let x = …; … }`; the deepest line's
    // indentation bounds the nesting.
    let deepest = code
        .lines()
        .map(|l| l.len() - l.trim_start().len())
        .max()
        .unwrap_or(0);
    assert!(deepest < 4 * 120, "indented {deepest} columns deep");
}

#[test]
fn check_states_the_memory_of_a_step_and_warns_past_the_machine() {
    // 10^12 parameters: 4.4 TB each for parameters and gradients, twice
    // that for Adam's moments.
    let text = "network Big {\n  input x: f32[batch, 1048576];\n  label y: class[batch] of 10;\n  h = dense(x, 1048576);\n  loss cross_entropy(dense(h, 10), y);\n}\n";
    let o = nnc("big", text, &["check"]);
    assert_ok(&o, "dense(x, 1048576)");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("memory per training step at batch 32: 22.0 TB (parameters 4.4 TB, gradients 4.4 TB, optimizer state 8.8 TB"),
        "{out}"
    );
    assert!(
        stderr(&o).contains("warning: a training step of `Big` needs 22.0 TB"),
        "{}",
        stderr(&o)
    );
    // Past any address space (activations at a billion samples): an error.
    let huge = format!("{text}train Big {{ optimizer: adam(lr: 0.001); batch: 1000000000; }}\n");
    let o = nnc("huge", &huge, &["check"]);
    assert_error(&o, "more than a 64-bit machine can address", "batch 10^9");
}
