//! The stage order of `compiler/src`, enforced: data flows one way, so a
//! module may import only modules earlier in the pipeline.
//!
//! ```text
//! diagnostic < syntax < graph < ir < ops < lower < autodiff < passes
//!            < codegen < driver < report, build < cli < main
//! ```
//!
//! The one allowed cycle is `graph` ↔ `ops` (a node stores its `Op`, an op
//! states its rules over graph types). `interp`, the reference interpreter,
//! may use `graph`, `ir` and `ops` only, and nothing in `src` uses it (it is
//! the oracle the stages are tested against). The crate root `lib.rs` only
//! declares and re-exports.
//!
//! Every file is read as text and mapped to its top-level module; an import
//! is any `crate::x` path (doc links included: a link is a dependency too),
//! each item of a `use crate::{x, y::z}` group, and any `super::` path that
//! climbs out of its own top-level module.
//!
//! Two more rules hold the shape of the code: the stages (`syntax`,
//! `lower`, `autodiff`, `passes`, `codegen`) share only IR types and never
//! import one another (the driver runs them), and no source file is longer
//! than [`MAX_LINES`].

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Pipeline position of each top-level module; a module may import only
/// modules of a strictly smaller rank.
const ORDER: &[(&str, u32)] = &[
    ("diagnostic", 0),
    ("syntax", 1),
    ("graph", 2),
    ("ir", 3),
    ("ops", 4),
    ("lower", 5),
    ("autodiff", 6),
    ("passes", 7),
    ("codegen", 8),
    ("driver", 9),
    ("report", 10),
    ("build", 10),
    ("cli", 11),
    ("main", 12),
];

/// Imports allowed against the order (importer, imported).
const ALLOWED: &[(&str, &str)] = &[("graph", "ops")];

/// What the interpreter may use.
const INTERP_USES: &[&str] = &["graph", "ir", "ops"];

/// The stages. They hand each other IR values through the driver and never
/// call one another, so each may import only the shared modules below them
/// (`diagnostic`, `graph`, `ir`, `ops`), not another stage, except:
const STAGES: &[&str] = &["syntax", "lower", "autodiff", "passes", "codegen"];

/// Stage-to-stage imports that are not calls (importer, imported, why).
const STAGE_USES: &[(&str, &str, &str)] = &[("lower", "syntax", "the AST it consumes")];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file: `lower/layers/mod.rs` → `[lower, layers]`,
/// `codegen/stats.rs` → `[codegen, stats]`, `lib.rs` → `[]`.
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|l| l == "mod" || l == "lib") {
        parts.pop();
    }
    parts
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The identifier at the start of `s`.
fn ident(s: &str) -> &str {
    let end = s.find(|c: char| !is_ident_char(c)).unwrap_or(s.len());
    &s[..end]
}

/// The top-level names a file's `crate::` paths start with, with the line
/// each is on.
fn crate_imports(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (at, _) in text.match_indices("crate::") {
        if text[..at].ends_with(|c: char| is_ident_char(c) || c == '$') {
            continue; // `nnc_crate::`, `$crate::`
        }
        let line = text[..at].matches('\n').count() + 1;
        let rest = &text[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `use crate::{a, b::c, d::{e, f}}`: the first segment of each
            // top-level item of the group.
            for item in top_level_items(group) {
                out.push((line, ident(item.trim()).to_string()));
            }
        } else {
            out.push((line, ident(rest).to_string()));
        }
    }
    out
}

/// The top-level comma-separated items of a brace group's body (up to its
/// closing brace).
fn top_level_items(group: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                items.push(&group[start..i]);
                return items;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&group[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items
}

/// The top-level modules a file reaches through `super::` chains that
/// climb to the crate root, with the line each is on.
fn super_imports(text: &str, module: &[String]) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (at, _) in text.match_indices("super::") {
        if text[..at].ends_with(|c: char| is_ident_char(c) || c == ':') {
            continue; // counted from the first `super::` of a chain
        }
        let mut rest = &text[at..];
        let mut depth = 0;
        while let Some(r) = rest.strip_prefix("super::") {
            depth += 1;
            rest = r;
        }
        if depth > module.len() {
            continue; // not a path this file could mean
        }
        let base = &module[..module.len() - depth];
        let name = match base.first() {
            Some(top) => top.clone(),
            None => ident(rest).to_string(),
        };
        let line = text[..at].matches('\n').count() + 1;
        out.push((line, name));
    }
    out
}

fn rank(module: &str) -> Option<u32> {
    ORDER.iter().find(|(m, _)| *m == module).map(|(_, r)| *r)
}

/// Every import of a file, as (file shown, line, importer, imported).
fn imports() -> Vec<(String, usize, String, String)> {
    let root = src();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut out = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&root).expect("under src");
        let path = module_path(rel);
        let Some(me) = path.first().cloned() else {
            continue; // lib.rs declares the modules and re-exports
        };
        let text = std::fs::read_to_string(file).expect("readable source");
        let mut found = crate_imports(&text);
        found.extend(super_imports(&text, &path));
        let shown = format!("compiler/src/{}", rel.display());
        for (line, used) in found {
            if used != me && !used.is_empty() {
                out.push((shown.clone(), line, me.clone(), used));
            }
        }
    }
    out
}

/// Every import against the stage order, as `file:line: message`.
fn violations() -> Vec<String> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let modules: BTreeSet<String> = files
        .iter()
        .filter_map(|f| module_path(f.strip_prefix(src()).ok()?).first().cloned())
        .collect();
    let mut out: Vec<String> = modules
        .iter()
        .filter(|m| rank(m).is_none() && *m != "interp")
        .map(|m| {
            format!("compiler/src/{m}: module `{m}` has no place in ORDER (tests/layering.rs)")
        })
        .collect();
    for (file, line, me, used) in imports() {
        let at = format!("{file}:{line}");
        if !modules.contains(&used) {
            out.push(format!(
                "{at}: `crate::{used}` goes through the crate root; name the module that defines it"
            ));
        } else if used == "interp" {
            out.push(format!(
                "{at}: `{me}` imports `interp`, the test oracle, which no stage may use"
            ));
        } else if me == "interp" {
            if !INTERP_USES.contains(&used.as_str()) {
                out.push(format!(
                    "{at}: `interp` imports `{used}`; it may use only {INTERP_USES:?}"
                ));
            }
        } else if !ALLOWED.contains(&(me.as_str(), used.as_str())) {
            match (rank(&me), rank(&used)) {
                (Some(a), Some(b)) if b < a => {}
                _ => out.push(format!(
                    "{at}: `{me}` imports `{used}`, which does not come before it in the pipeline"
                )),
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Every import of one stage by another, as `file:line: message`.
fn stage_calls() -> Vec<String> {
    let mut out: Vec<String> = imports()
        .into_iter()
        .filter(|(_, _, me, used)| {
            STAGES.contains(&me.as_str())
                && STAGES.contains(&used.as_str())
                && !STAGE_USES.iter().any(|(a, b, _)| a == me && b == used)
        })
        .map(|(file, line, me, used)| {
            format!("{file}:{line}: stage `{me}` imports stage `{used}`; the driver runs the stages, they share only IR types")
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

#[test]
fn stages_share_types_but_do_not_call_each_other() {
    let v = stage_calls();
    assert!(
        v.is_empty(),
        "{} imports of one stage by another:\n{}",
        v.len(),
        v.join("\n")
    );
}

#[test]
fn every_module_imports_only_earlier_stages() {
    let v = violations();
    assert!(
        v.is_empty(),
        "{} imports against the stage order:\n{}",
        v.len(),
        v.join("\n")
    );
}

/// The scanner itself: groups, nested groups, `super::` chains, and the
/// paths it must not count.
#[test]
fn the_scanner_finds_every_form_of_import() {
    let text = "use crate::{graph::Graph, ops::{Op, LeafOp}, diagnostic};\n\
                use crate::lower::Network;\n\
                let x = $crate::ignored; nnc_crate::ignored;\n\
                /// [`crate::passes::Pass`]\n";
    let found: Vec<String> = crate_imports(text).into_iter().map(|(_, m)| m).collect();
    assert_eq!(found, ["graph", "ops", "diagnostic", "lower", "passes"]);
    let module = ["codegen".to_string(), "layout".to_string()];
    let text = "use super::fuse::Fusion;\nuse super::super::passes::Pass;\n";
    let found: Vec<(usize, String)> = super_imports(text, &module);
    assert_eq!(
        found,
        [(1, "codegen".to_string()), (2, "passes".to_string())]
    );
    let top = ["ops".to_string()];
    assert_eq!(
        super_imports("use super::lower::Network;", &top),
        [(1, "lower".to_string())]
    );
}

/// Files one can hold in mind: no source file under `compiler/src` is
/// longer than this; one that grows past it is split along its jobs.
const MAX_LINES: usize = 700;

#[test]
fn no_source_file_is_too_long() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let n = std::fs::read_to_string(f).ok()?.lines().count();
            (n > MAX_LINES).then(|| format!("{} ({n} lines)", f.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "over {MAX_LINES} lines, split along their jobs: {long:?}"
    );
}
