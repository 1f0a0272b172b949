//! The data settings of a `train` block: `data:`, `validation:`, `test:`.
//!
//! ```text
//! data: csv("penguins.csv", label: species, x: "1..5");
//! data: idx("mnist/");
//! validation: 0.1;                 // a held-out fraction, or a file:
//! validation: csv("val.csv");
//! test: csv("test.csv");
//! ```
//!
//! Paths are strings, relative to the `.nn` file. In `csv(...)`, `label:`
//! names the column of the labels or targets (a bare name, a string or a
//! 0-based index), `delimiter:` and `header:` describe the file, and any
//! other named argument maps CSV columns to the input of that name: a
//! column name, an index, a range `"0..30"` or names `"a,b,c"`.

use super::expected;
use crate::diagnostic::{Diagnostic, ErrorKind, Span};
use crate::ir::{DataFormat, DataSource, TeacherSource, Validation};
use crate::syntax::ast::{Expr, ExprKind};

/// The data a `data:` or `test:` value names, or `None` after pushing why.
pub(super) fn source(e: &Expr, key: &str, errors: &mut Vec<Diagnostic>) -> Option<DataSource> {
    let ExprKind::Call { func, args } = &e.kind else {
        errors.push(expected(
            e,
            key,
            "a data file such as `csv(\"iris.csv\", label: species)` or `idx(\"mnist/\")`",
        ));
        return None;
    };
    let bad = |span: Span, message: String, label: &str| {
        Diagnostic::new(ErrorKind::BadArgument, span, message).with_label(label.to_string())
    };
    let mut positional = args.iter().filter(|a| a.name.is_none());
    let (path, path_span) = match positional.next().map(|a| &a.value) {
        Some(Expr {
            kind: ExprKind::Str(p),
            span,
        }) if !p.is_empty() => (p.clone(), *span),
        Some(other) => {
            errors.push(bad(
                other.span,
                format!(
                    "the path of `{}` must be a non-empty string, found {}",
                    func.name,
                    super::found(other)
                ),
                "expected a path such as \"data.csv\"",
            ));
            return None;
        }
        None => {
            errors.push(bad(
                e.span,
                format!(
                    "`{}` needs the path of its data, e.g. `{}(\"data.csv\")`",
                    func.name, func.name
                ),
                "no path",
            ));
            return None;
        }
    };
    if let Some(extra) = positional.next() {
        errors.push(bad(
            extra.value.span,
            format!(
                "`{}` takes one path; name the other arguments (`label: species`)",
                func.name
            ),
            "unexpected argument",
        ));
        return None;
    }
    let named = args
        .iter()
        .filter_map(|a| a.name.as_ref().map(|n| (n, &a.value)));
    let format = match func.name.as_str() {
        "idx" => {
            if let Some((n, _)) = named.into_iter().next() {
                errors.push(bad(
                    n.span,
                    format!("`idx` takes no `{}`: only a directory", n.name),
                    "unknown argument",
                ));
                return None;
            }
            DataFormat::Idx
        }
        "csv" => {
            let (mut label, mut delimiter, mut header, mut columns) =
                (None, None, None, Vec::new());
            for (n, v) in named {
                match n.name.as_str() {
                    "label" => label = Some(selection(v, "label", errors)?),
                    "delimiter" => match &v.kind {
                        ExprKind::Str(d) if d.chars().count() == 1 && d.is_ascii() => {
                            delimiter = d.chars().next()
                        }
                        _ => {
                            errors.push(expected(
                                v,
                                "delimiter",
                                "one ASCII character such as \";\"",
                            ));
                            return None;
                        }
                    },
                    "header" => match v.kind {
                        ExprKind::Bool(b) => header = Some(b),
                        _ => {
                            errors.push(expected(v, "header", "`true` or `false`"));
                            return None;
                        }
                    },
                    input => {
                        let sel = selection(v, input, errors)?;
                        columns.push((input.to_string(), sel, n.span.to(v.span)));
                    }
                }
            }
            DataFormat::Csv {
                label,
                delimiter,
                header,
                columns,
            }
        }
        other => {
            let mut d = bad(
                func.span,
                format!("unknown data format `{other}`; expected one of: csv, idx"),
                "unknown data format",
            );
            if let Some(s) = super::suggest(other, ["csv", "idx"]) {
                d = d.with_help(format!("did you mean `{s}`?"));
            }
            errors.push(d);
            return None;
        }
    };
    Some(DataSource {
        path,
        format,
        span: e.span,
        path_span,
    })
}

/// A column selection: a bare name, a string, or a 0-based index.
fn selection(v: &Expr, key: &str, errors: &mut Vec<Diagnostic>) -> Option<String> {
    match &v.kind {
        ExprKind::Name(n) => Some(n.name.clone()),
        ExprKind::Str(s) if !s.is_empty() => Some(s.clone()),
        ExprKind::Number {
            value,
            is_int: true,
            ..
        } if *value < 1e15 => Some((*value as u64).to_string()),
        _ => {
            errors.push(expected(
                v,
                key,
                "a column: a name, a string such as \"0..30\" or \"a,b\", or an index",
            ));
            None
        }
    }
}

/// What a `validation:` value says: a fraction in [0, 1) or a data file.
pub(super) fn validation(e: &Expr, errors: &mut Vec<Diagnostic>) -> Option<Validation> {
    if let Some((v, _)) = super::literal(e) {
        if (0.0..1.0).contains(&v) {
            return Some(Validation::Fraction(v));
        }
        errors.push(expected(
            e,
            "validation",
            "a fraction in [0, 1) or a data file",
        ));
        return None;
    }
    source(e, "validation", errors).map(Validation::Data)
}

/// The teacher a `teacher:` value names (`lenet("lenet.safetensors")`: a
/// network of this file and its weights file), or `None` after pushing why.
/// Whether the network exists is checked when it is spliced in.
pub(super) fn teacher(e: &Expr, errors: &mut Vec<Diagnostic>) -> Option<TeacherSource> {
    let what = "a network and its weights file, such as `lenet(\"lenet.safetensors\")`";
    let ExprKind::Call { func, args } = &e.kind else {
        errors.push(expected(e, "teacher", what));
        return None;
    };
    match args.as_slice() {
        [arg] if arg.name.is_none() => match &arg.value {
            Expr {
                kind: ExprKind::Str(p),
                span,
            } if !p.is_empty() => Some(TeacherSource {
                network: func.name.clone(),
                name_span: func.span,
                path: p.clone(),
                path_span: *span,
                span: e.span,
            }),
            other => {
                errors.push(
                    Diagnostic::new(
                        ErrorKind::BadArgument,
                        other.span,
                        format!(
                            "the weights file of teacher `{}` must be a non-empty string, found {}",
                            func.name,
                            super::found(other)
                        ),
                    )
                    .with_label("expected a path such as \"teacher.safetensors\""),
                );
                None
            }
        },
        _ => {
            errors.push(expected(e, "teacher", what));
            None
        }
    }
}
