//! The `mnist` binary's flags at their edges: no validation, absurd thread
//! counts, a batch larger than the data (issue 22's findings).

use std::process::Command;

/// Runs `mnist` with `args` (quietly, one step unless told otherwise) and
/// returns its stdout, failing the test if it fails.
fn mnist(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_mnist"))
        .arg("--quiet")
        .args(args)
        .output()
        .expect("cannot start mnist");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "mnist {args:?} failed:\n{stdout}{stderr}"
    );
    stdout
}

/// The `N` before `what` in `text` ("9000 training").
fn number_before(text: &str, what: &str) -> u64 {
    let at = text
        .find(what)
        .unwrap_or_else(|| panic!("no `{what}` in {text}"));
    let digits: String = text[..at]
        .trim_end()
        .chars()
        .rev()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.chars().rev().collect::<String>().parse().unwrap()
}

#[test]
fn validation_zero_means_no_validation() {
    let out = mnist(&["--validation", "0", "--max-steps", "1"]);
    assert_eq!(number_before(&out, " validation"), 0, "{out}");
    assert_eq!(number_before(&out, " training"), 8_000, "{out}");
}

#[test]
fn an_absurd_thread_count_is_capped_and_runs() {
    let out = mnist(&["--threads", "100000", "--max-steps", "1"]);
    assert!(out.contains("(1 steps, "), "{out}");
}

#[test]
fn samples_count_what_was_trained_when_the_batch_exceeds_the_data() {
    // 7,200 training digits (10% of 8,000 held out) in one batch of "100,000".
    let out = mnist(&["--batch", "100000", "--epochs", "1"]);
    let train = number_before(&out, " training");
    assert_eq!(train, 7_200, "{out}");
    assert_eq!(number_before(&out, " samples)"), train, "{out}");
    assert!(
        out.contains("trained 1 epochs (1 steps, 7200 samples)"),
        "{out}"
    );
}
