//! Text → AST. The grammar is `grammar.pest`; this module turns pest's pairs
//! into the typed [`ast`] with spans, and pest's errors into diagnostics that
//! say what was expected and what was found.

pub mod ast;
mod expr;

use crate::diagnostic::{Diagnostic, ErrorKind, Span};
use ast::*;
use expr::expr;
use pest::error::{Error as PestError, InputLocation};
use pest::iterators::Pair;
use pest::Parser;

#[derive(pest_derive::Parser)]
#[grammar = "syntax/grammar.pest"]
struct NncParser;

/// Brackets nested deeper than this are rejected before parsing, so that no
/// input can exhaust the stack of the recursive-descent parser. The same
/// bound holds for the nesting of an expression's tree
/// (`MAX_DEPTH` in `syntax/expr.rs`), which every recursive walk of the AST relies on.
pub const MAX_NESTING: usize = 128;

/// Parses a whole file.
pub fn parse(text: &str) -> Result<File, Diagnostic> {
    check_nesting(text)?;
    // Record the literal tokens tried at the failure point, for "expected ..." messages.
    pest::set_error_detail(true);
    let mut pairs = NncParser::parse(Rule::file, text).map_err(|e| syntax_error(text, e))?;
    let mut file = File::default();
    let Some(root) = pairs.next() else {
        return Ok(file);
    };
    for item in root.into_inner() {
        match item.as_rule() {
            Rule::network => file.networks.push(network(item)?),
            Rule::train => file.trains.push(train(item)?),
            _ => {}
        }
    }
    Ok(file)
}

fn check_nesting(text: &str) -> Result<(), Diagnostic> {
    let mut depth = 0usize;
    let mut in_comment = false;
    let mut prev = '\0';
    for (i, c) in text.char_indices() {
        if in_comment {
            in_comment = c != '\n';
        } else if c == '/' && prev == '/' {
            in_comment = true;
        } else if matches!(c, '(' | '[' | '{') {
            depth += 1;
            if depth > MAX_NESTING {
                return Err(Diagnostic::new(
                    ErrorKind::Syntax,
                    Span::new(i, i + 1),
                    format!("brackets nested more than {MAX_NESTING} deep"),
                )
                .with_label("too deep"));
            }
        } else if matches!(c, ')' | ']' | '}') {
            depth = depth.saturating_sub(1);
        }
        prev = c;
    }
    Ok(())
}

fn span(p: &Pair<'_, Rule>) -> Span {
    let s = p.as_span();
    Span::new(s.start(), s.end())
}

fn ident(p: Pair<'_, Rule>) -> Ident {
    Ident {
        name: p.as_str().to_string(),
        span: span(&p),
    }
}

fn network(p: Pair<'_, Rule>) -> Result<NetworkDef, Diagnostic> {
    let sp = span(&p);
    let mut inner = p.into_inner().skip(1); // kw_network
    let name = ident(next(&mut inner, sp)?);
    let mut stmts = Vec::new();
    for s in inner {
        stmts.push(stmt(s)?);
    }
    Ok(NetworkDef {
        name,
        stmts,
        span: sp,
    })
}

fn next<'a>(
    it: &mut impl Iterator<Item = Pair<'a, Rule>>,
    sp: Span,
) -> Result<Pair<'a, Rule>, Diagnostic> {
    it.next()
        .ok_or_else(|| Diagnostic::new(ErrorKind::Internal, sp, "malformed parse tree"))
}

/// The dimensions and class count of `class[dims] of N` (the keyword
/// `class` included in `it`).
type ClassType = (Vec<DimExpr>, (u64, Span));

fn class_type(it: pest::iterators::Pairs<'_, Rule>, sp: Span) -> Result<ClassType, Diagnostic> {
    let mut dims = Vec::new();
    let mut classes = None;
    for q in it {
        match q.as_rule() {
            Rule::dims => dims = dim_list(q)?,
            Rule::integer => classes = Some((int(&q)?, span(&q))),
            _ => {}
        }
    }
    let classes =
        classes.ok_or_else(|| Diagnostic::new(ErrorKind::Internal, sp, "no class count"))?;
    Ok((dims, classes))
}

fn stmt(p: Pair<'_, Rule>) -> Result<Stmt, Diagnostic> {
    let sp = span(&p);
    let rule = p.as_rule();
    let mut it = p.into_inner();
    if rule != Rule::binding && rule != Rule::loss_decl {
        next(&mut it, sp)?; // the keyword
    }
    let kind = match rule {
        Rule::input_decl => {
            let name = ident(next(&mut it, sp)?);
            let ty = next(&mut it, sp)?;
            if ty.as_rule() == Rule::class_type {
                let (dims, classes) = class_type(ty.into_inner(), sp)?;
                StmtKind::Tokens {
                    name,
                    dims,
                    classes,
                }
            } else {
                StmtKind::Input {
                    name,
                    ty: tensor_type(ty)?,
                }
            }
        }
        Rule::label_decl => {
            let name = ident(next(&mut it, sp)?);
            let (dims, classes) = class_type(it, sp)?;
            StmtKind::Label {
                name,
                dims,
                classes,
            }
        }
        Rule::param_decl => StmtKind::Param {
            name: ident(next(&mut it, sp)?),
            ty: tensor_type(next(&mut it, sp)?)?,
            init: it.next().map(expr).transpose()?,
        },
        Rule::output_decl => StmtKind::Output {
            name: ident(next(&mut it, sp)?),
            value: it.next().map(expr).transpose()?,
        },
        Rule::loss_decl => {
            next(&mut it, sp)?; // kw_loss
            StmtKind::Loss {
                value: expr(next(&mut it, sp)?)?,
            }
        }
        Rule::binding => StmtKind::Let {
            name: ident(next(&mut it, sp)?),
            value: expr(next(&mut it, sp)?)?,
        },
        _ => {
            return Err(Diagnostic::new(
                ErrorKind::Internal,
                sp,
                "unexpected statement",
            ))
        }
    };
    Ok(Stmt { kind, span: sp })
}

fn int(p: &Pair<'_, Rule>) -> Result<u64, Diagnostic> {
    p.as_str().parse::<u64>().map_err(|_| {
        Diagnostic::new(
            ErrorKind::Syntax,
            span(p),
            format!("integer `{}` is too large", p.as_str()),
        )
        .with_label("too large")
    })
}

fn tensor_type(p: Pair<'_, Rule>) -> Result<TypeExpr, Diagnostic> {
    let sp = span(&p);
    let mut it = p.into_inner();
    let dtype = ident(next(&mut it, sp)?);
    let dims = match it.next() {
        Some(d) => dim_list(d)?,
        None => Vec::new(),
    };
    Ok(TypeExpr {
        dtype,
        dims,
        span: sp,
    })
}

fn dim_list(p: Pair<'_, Rule>) -> Result<Vec<DimExpr>, Diagnostic> {
    p.into_inner()
        .map(|d| {
            let sp = span(&d);
            let inner = next(&mut d.into_inner(), sp)?;
            Ok(match inner.as_rule() {
                Rule::integer => DimExpr::Fixed(int(&inner)?, sp),
                _ => DimExpr::Named(ident(inner)),
            })
        })
        .collect()
}

fn train(p: Pair<'_, Rule>) -> Result<TrainDef, Diagnostic> {
    let sp = span(&p);
    let mut it = p.into_inner().skip(1); // kw_train
    let name = ident(next(&mut it, sp)?);
    let settings = it
        .map(|s| {
            let ssp = span(&s);
            let mut parts = s.into_inner();
            Ok(Setting {
                key: ident(next(&mut parts, ssp)?),
                value: expr(next(&mut parts, ssp)?)?,
                span: ssp,
            })
        })
        .collect::<Result<_, Diagnostic>>()?;
    Ok(TrainDef {
        name,
        settings,
        span: sp,
    })
}

// ------------------------------------------------------------------ errors

fn describe(rule: Rule) -> Option<&'static str> {
    Some(match rule {
        Rule::EOI => "end of input",
        Rule::network | Rule::kw_network => "`network`",
        Rule::train | Rule::kw_train => "`train`",
        Rule::kw_input | Rule::input_decl => "`input`",
        Rule::kw_label | Rule::label_decl => "`label`",
        Rule::kw_param | Rule::param_decl => "`param`",
        Rule::kw_output | Rule::output_decl => "`output`",
        Rule::kw_loss | Rule::loss_decl => "`loss`",
        Rule::kw_class => "`class`",
        Rule::kw_of => "`of`",
        Rule::binding => "a binding `name = ...;`",
        Rule::ident | Rule::name => "a name",
        Rule::integer => "an integer",
        Rule::number => "a number",
        Rule::boolean => "`true` or `false`",
        Rule::string => "a string",
        Rule::expr | Rule::call | Rule::list => "an expression",
        Rule::dtype | Rule::tensor_type | Rule::class_type => "a type like `f32[batch, 784]`",
        Rule::dims | Rule::dim => "a dimension",
        Rule::setting => "a setting `key: value;`",
        Rule::arg => "an argument",
        Rule::arg_name => "an argument name",
        Rule::pipe => "`|>`",
        Rule::add => "`+`",
        Rule::sub => "`-`",
        Rule::mul => "`*`",
        Rule::div => "`/`",
        Rule::matmul => "`@`",
        Rule::neg => "`-`",
        _ => return None,
    })
}

/// Words the grammar reserves; they cannot name anything.
const KEYWORDS: &[&str] = &[
    "network", "train", "input", "label", "param", "output", "loss", "class", "of",
];

/// A keyword where a name was expected (`input loss: ...`, `y = loss + 1;`).
/// pest would report the failed look-ahead after the keyword ("expected
/// `_`"); say what is wrong instead. A keyword followed by a name or `{` is
/// left alone: it more likely starts a statement or block after a missing `}`.
fn keyword_as_name(text: &str, rule_pos: usize, e: &PestError<Rule>) -> Option<Diagnostic> {
    let pest::error::ErrorVariant::ParsingError { positives, .. } = &e.variant else {
        return None;
    };
    if !positives
        .iter()
        .any(|r| matches!(r, Rule::ident | Rule::name))
    {
        return None;
    }
    let rest = text.get(rule_pos..)?;
    let start = rule_pos + (rest.len() - rest.trim_start().len());
    let word: String = text
        .get(start..)?
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    if !KEYWORDS.contains(&word.as_str()) {
        return None;
    }
    let after = text.get(start + word.len()..)?.trim_start();
    if after.starts_with(|c: char| c.is_alphanumeric() || c == '_' || c == '{') {
        return None;
    }
    Some(
        Diagnostic::new(
            ErrorKind::Syntax,
            Span::new(start, start + word.len()),
            format!("expected a name, found the keyword `{word}`"),
        )
        .with_label("a keyword cannot be used as a name")
        .with_help(format!(
            "rename it; the keywords are {}",
            KEYWORDS
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    )
}

fn syntax_error(text: &str, e: PestError<Rule>) -> Diagnostic {
    let rule_pos = match e.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((s, _)) => s,
    };
    if let Some(d) = keyword_as_name(text, rule_pos, &e) {
        return d;
    }
    let mut expected: Vec<String> = Vec::new();
    let mut push = |s: String| {
        if !expected.contains(&s) {
            expected.push(s);
        }
    };
    // pest reports the furthest failed *rule*; the furthest failed *token*
    // (a missing `;`) is further still and is what a reader wants to see.
    let attempts = e.parse_attempts();
    let pos = attempts
        .as_ref()
        .map_or(rule_pos, |a| a.max_position.max(rule_pos));
    if let Some(attempts) = &attempts {
        if attempts.max_position >= rule_pos {
            for t in attempts.expected_tokens() {
                // Whitespace, comments, ranges, built-in rules and the number
                // syntax's `.` and `E` are noise; keep punctuation and keywords.
                let token = t.to_string();
                let noise = token.trim().is_empty()
                    || token == "//"
                    || token == "BUILTIN_RULE"
                    || token.contains("..")
                    || token == "."
                    || token.eq_ignore_ascii_case("e");
                if !noise {
                    push(format!("`{token}`"));
                }
            }
        }
    }
    if pos == rule_pos {
        if let pest::error::ErrorVariant::ParsingError { positives, .. } = &e.variant {
            for &r in positives {
                if let Some(d) = describe(r) {
                    push(d.to_string());
                }
            }
        }
    }
    // Point at the next token, unless it is on a later line and what is
    // missing is a `;` or the rest of the file: then just after the previous
    // token, where the missing one belongs (as rustc does). A stray token on
    // a later line is pointed at itself.
    let next = pos
        + text
            .get(pos..)
            .map_or(0, |r| r.len() - r.trim_start().len());
    let (found, len) = found_at(text, next);
    let prev_end = text.get(..pos).map_or(pos, |t| t.trim_end().len());
    let missing_before = len == 0 || expected.iter().any(|s| s == "`;`");
    let span = if missing_before
        && text
            .get(prev_end..next)
            .is_some_and(|gap| gap.contains('\n'))
    {
        Span::new(prev_end, prev_end)
    } else {
        Span::new(next, (next + len).min(text.len()))
    };
    let expected = condense(expected);
    if expected.is_empty() {
        return Diagnostic::new(ErrorKind::Syntax, span, format!("unexpected {found}"))
            .with_label("unexpected here");
    }
    Diagnostic::new(
        ErrorKind::Syntax,
        span,
        format!("expected {expected}, found {found}"),
    )
    .with_label(format!("expected {expected}"))
}

/// Folds the raw list of expected tokens into what a reader wants: "an
/// operator" for the operator set, "an expression" for everything that can
/// start one. Returns "" when nothing was expected.
fn condense(mut expected: Vec<String>) -> String {
    const OPERATORS: &[&str] = &["`*`", "`+`", "`-`", "`/`", "`@`", "`|>`"];
    const STARTERS: &[&str] = &[
        "`(`",
        "`-`",
        "`[`",
        "`_`",
        "`true`",
        "`false`",
        "a number",
        "a name",
        "`true` or `false`",
        "an expression",
    ];
    let has = |e: &Vec<String>, x: &str| e.iter().any(|s| s == x);
    if has(&expected, "an expression") || has(&expected, "a number") {
        expected.retain(|s| !STARTERS.contains(&s.as_str()));
        expected.push("an expression".to_string());
    }
    if OPERATORS.iter().filter(|o| has(&expected, o)).count() >= 3 {
        expected.retain(|s| !OPERATORS.contains(&s.as_str()));
        expected.push("an operator".to_string());
    }
    if has(&expected, "a name") {
        expected.retain(|s| s != "`_`");
    }
    if has(&expected, "a type like `f32[batch, 784]`") {
        expected.retain(|s| s != "`f32`");
    }
    match expected.len() {
        0 => String::new(),
        1 => expected.remove(0),
        _ => {
            let last = expected.pop().unwrap_or_default();
            format!("{} or {last}", expected.join(", "))
        }
    }
}

/// Describes the token at `pos`: a word, a number, a symbol, or end of input.
fn found_at(text: &str, pos: usize) -> (String, usize) {
    let rest = text.get(pos..).unwrap_or("");
    let Some(c) = rest.chars().next() else {
        return ("end of input".to_string(), 0);
    };
    let word: String = if c.is_alphanumeric() || c == '_' {
        rest.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '.')
            .collect()
    } else {
        let two: String = rest.chars().take(2).collect();
        if two == "|>" {
            two
        } else {
            c.to_string()
        }
    };
    (format!("`{}`", word.escape_debug()), word.len())
}
