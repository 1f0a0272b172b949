//! The compile-error suite as data, in the manner of rustc's UI tests: every
//! `NAME.nn` under `tests/diagnostics/` is checked, and its diagnostics,
//! rendered as `nnc check` prints them (no colour, trailing whitespace
//! trimmed, the file named by its path relative to that directory), must equal
//! `NAME.stderr` beside it. The render pins each error's kind
//! (`error[shape]`), `file:line:col`, message, label, help and notes, the
//! extent of its span (`^^^`), where each note starts, and the count and order
//! of the errors. Models under `ok/` must check cleanly and have no `.stderr`.
//! Anything else — a `.stderr` without its `.nn`, a missing `.stderr`, any
//! other file but the root's `README.md` — fails the suite.
//!
//! To accept the current output, run
//!
//! ```text
//! NNC_BLESS=1 cargo test -p nnc-compiler --test diagnostics
//! ```
//!
//! which writes every mismatching or missing `.stderr`; review the diff before
//! committing it. What a render cannot show is asserted in [`STRUCTURAL`],
//! keyed by case. The render format itself is tested in `diagnostics_api.rs`.

use nnc_compiler::{check_source, CompileError, SourceFile};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Checks of a case's errors that its render does not pin: `Err` says what
/// did not hold.
type Structural = fn(&CompileError) -> Result<(), String>;

/// A case name (its path without `.nn`) and what else must hold of it.
const STRUCTURAL: &[(&str, Structural)] = &[
    // A caret at the end of a line does not tell an empty span from one over
    // the newline: the error must be an insertion point.
    (
        "syntax/missing_semicolon_points_just_after_the_previous_token",
        |e| match e.diagnostics[0].span {
            span if span.start == span.end => Ok(()),
            span => Err(format!("{span:?} is not an insertion point")),
        },
    ),
    // The one-line summary a `CompileError` displays as.
    (
        "multiple/independent_errors_are_all_reported_in_source_order",
        |e| match e.to_string() {
            s if s == "unknown name `q` (and 6 more errors)" => Ok(()),
            s => Err(format!("displays as `{s}`")),
        },
    ),
];

#[test]
fn every_fixture_renders_as_expected() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/diagnostics");
    let bless = std::env::var_os("NNC_BLESS").is_some_and(|v| !v.is_empty() && v != "0");
    let mut files = Vec::new();
    walk(&root, &mut files);
    let mut failures = Vec::new();
    let mut cases = 0;
    for path in &files {
        let rel = relative(&root, path);
        let is_case = rel.ends_with(".nn");
        let is_expectation = rel.ends_with(".stderr") && path.with_extension("nn").is_file();
        if is_case {
            cases += 1;
            if let Err(why) = check_case(path, &rel, bless) {
                failures.push(why);
            }
        } else if !is_expectation && rel != "README.md" {
            failures.push(format!(
                "{rel}: not a case (`.nn`) or its expectation (`.stderr`)"
            ));
        }
    }
    for (name, _) in STRUCTURAL {
        if !root.join(format!("{name}.nn")).is_file() {
            failures.push(format!("{name}: a structural check names no case"));
        }
    }
    assert!(cases > 0, "no cases under {}", root.display());
    assert!(
        failures.is_empty(),
        "{} of {cases} diagnostics fixtures failed (NNC_BLESS=1 rewrites the .stderr files):\n\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Checks one case; `Err` says what is wrong, with a diff where there is one.
fn check_case(path: &Path, rel: &str, bless: bool) -> Result<(), String> {
    let name = rel.strip_suffix(".nn").expect("a case");
    let text = std::fs::read_to_string(path).map_err(|e| format!("{rel}: {e}"))?;
    let source = SourceFile::new(rel, text);
    let result = check_source(&source);
    let expected_path = path.with_extension("stderr");
    let expected = std::fs::read_to_string(&expected_path).ok();
    if name.starts_with("ok/") {
        return match (result, expected) {
            (_, Some(_)) => Err(format!("{name}.stderr: models under ok/ have none")),
            (Ok(_), None) => Ok(()),
            (Err(e), None) => Err(format!(
                "{rel} must check cleanly:\n{}",
                render(&source, &e)
            )),
        };
    }
    let Err(error) = result else {
        return Err(format!("{rel} checked cleanly; move it under ok/"));
    };
    for (_, structural) in STRUCTURAL.iter().filter(|(n, _)| *n == name) {
        structural(&error).map_err(|why| format!("{rel}: {why}"))?;
    }
    let actual = render(&source, &error);
    match expected {
        Some(expected) if expected == actual => Ok(()),
        _ if bless => std::fs::write(&expected_path, &actual).map_err(|e| format!("{rel}: {e}")),
        None => Err(format!("{name}.stderr is missing; it would be:\n{actual}")),
        Some(expected) => Err(format!(
            "{rel}: (-expected +actual)\n{}",
            diff(&expected, &actual)
        )),
    }
}

/// The render without trailing whitespace (codespan leaves spaces on some
/// lines and a blank line at the end, which editors strip): a diff of
/// invisible characters helps no one.
fn render(source: &SourceFile, error: &CompileError) -> String {
    let rendered = source.render(&error.diagnostics, false);
    let lines: Vec<&str> = rendered.trim_end().lines().map(str::trim_end).collect();
    lines.join("\n") + "\n"
}

/// Every file under `dir`, sorted, so failures come in a stable order.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            walk(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// `path` relative to `root`, `/`-separated on every platform: the name the
/// render shows, so the expectations do not depend on where the repo lives.
fn relative(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).expect("under the root");
    let parts: Vec<_> = rel.iter().map(|p| p.to_string_lossy()).collect();
    parts.join("/")
}

/// A line diff (longest common subsequence): ` ` kept, `-` expected only,
/// `+` actual only.
fn diff(expected: &str, actual: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
    // lcs[i][j]: the longest common subsequence of a[i..] and b[j..].
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            let _ = writeln!(out, "  {}", a[i]);
            (i, j) = (i + 1, j + 1);
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            let _ = writeln!(out, "- {}", a[i]);
            i += 1;
        } else {
            let _ = writeln!(out, "+ {}", b[j]);
            j += 1;
        }
    }
    if expected.ends_with('\n') != actual.ends_with('\n') {
        out.push_str("(the two differ in their final newline)\n");
    }
    out
}
