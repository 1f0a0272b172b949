//! Expressions: pest's flat `prefix* primary (infix prefix* primary)*`
//! sequence folded into the AST by operator precedence, iteratively.
//!
//! Nothing here recurses on the length of an operator chain: `x + x + …`
//! with 100,000 terms and `- - - … x` are folded with explicit stacks, so
//! building takes time and stack linear in the text. Each node's *depth*
//! is tracked as the walks over the AST see it: prefix operators, brackets,
//! calls, lists and right operands nest; the left operand of an infix
//! operator does not (a left-leaning chain is walked along its spine by
//! lowering and freed by `Expr`'s `Drop` without recursion). Depth is
//! bounded by [`MAX_DEPTH`], an error at the operator or bracket that
//! exceeds it, so no input can exhaust the stack of a later walk.

use super::ast::{Arg, BinOp, Expr, ExprKind};
use super::{ident, next, span, Rule};
use crate::diagnostic::{Diagnostic, ErrorKind, Span};
use pest::iterators::Pair;

/// How deep an expression may nest: prefix `-`, brackets, calls, lists
/// and right operands each add one level (the left operand of an infix
/// operator adds none, so chains like `a + b + c + …` are unbounded).
pub const MAX_DEPTH: usize = super::MAX_NESTING;

/// An expression with its nesting depth.
struct Built {
    expr: Expr,
    depth: usize,
}

impl Built {
    /// `expr` at `depth`, or the error at `at` when that is too deep.
    fn new(expr: Expr, depth: usize, at: Span) -> Result<Built, Diagnostic> {
        if depth > MAX_DEPTH {
            return Err(Diagnostic::new(
                ErrorKind::Syntax,
                at,
                format!("expression nested more than {MAX_DEPTH} deep"),
            )
            .with_label("too deep")
            .with_help(
                "prefix `-`, brackets, calls and right operands each nest one level; \
                 bind parts of the expression to names (`h = ...;`)",
            ));
        }
        Ok(Built { expr, depth })
    }
}

/// Binding strength of an infix operator, loosest first: `|>`, `+ -`,
/// `* /`, `@` (unary minus binds tighter than all of them).
fn precedence(rule: Rule) -> Option<u8> {
    Some(match rule {
        Rule::pipe => 1,
        Rule::add | Rule::sub => 2,
        Rule::mul | Rule::div => 3,
        Rule::matmul => 4,
        _ => return None,
    })
}

/// Builds an expression from its `expr` pair.
pub(super) fn expr(p: Pair<'_, Rule>) -> Result<Expr, Diagnostic> {
    build(p).map(|b| b.expr)
}

fn build(p: Pair<'_, Rule>) -> Result<Built, Diagnostic> {
    let sp = span(&p);
    let mut operands: Vec<Built> = Vec::new();
    let mut operators: Vec<(Rule, Span)> = Vec::new();
    let mut negs: Vec<Span> = Vec::new();
    for q in p.into_inner() {
        let rule = q.as_rule();
        if rule == Rule::neg {
            negs.push(span(&q));
        } else if let Some(prec) = precedence(rule) {
            // Left-associative: fold everything at least as tight first.
            while operators
                .last()
                .is_some_and(|&(top, _)| precedence(top) >= Some(prec))
            {
                reduce(&mut operands, &mut operators, sp)?;
            }
            operators.push((rule, span(&q)));
        } else {
            let mut b = primary(q)?;
            // The innermost `-` applies first.
            for &at in negs.iter().rev() {
                let expr = Expr {
                    span: at.to(b.expr.span),
                    kind: ExprKind::Neg(Box::new(b.expr)),
                };
                b = Built::new(expr, b.depth + 1, at)?;
            }
            negs.clear();
            operands.push(b);
        }
    }
    while !operators.is_empty() {
        reduce(&mut operands, &mut operators, sp)?;
    }
    match (operands.pop(), operands.is_empty()) {
        (Some(b), true) => Ok(b),
        _ => Err(malformed(sp)),
    }
}

fn malformed(sp: Span) -> Diagnostic {
    Diagnostic::new(ErrorKind::Internal, sp, "malformed expression")
}

/// Applies the innermost pending operator to the two operands on top.
fn reduce(
    operands: &mut Vec<Built>,
    operators: &mut Vec<(Rule, Span)>,
    sp: Span,
) -> Result<(), Diagnostic> {
    let ((rule, at), Some(rhs), Some(lhs)) = (
        operators.pop().ok_or_else(|| malformed(sp))?,
        operands.pop(),
        operands.pop(),
    ) else {
        return Err(malformed(sp));
    };
    let depth = lhs.depth.max(rhs.depth + 1);
    let span = lhs.expr.span.to(rhs.expr.span);
    let (lhs, rhs) = (Box::new(lhs.expr), Box::new(rhs.expr));
    let op = match rule {
        Rule::pipe => None,
        Rule::add => Some(BinOp::Add),
        Rule::sub => Some(BinOp::Sub),
        Rule::mul => Some(BinOp::Mul),
        Rule::div => Some(BinOp::Div),
        _ => Some(BinOp::Matmul),
    };
    let kind = match op {
        None => ExprKind::Pipe { lhs, rhs },
        Some(op) => ExprKind::Binary { op, lhs, rhs },
    };
    operands.push(Built::new(Expr { kind, span }, depth, at)?);
    Ok(())
}

/// A bracketed, called or listed sub-expression nests one level deeper
/// than the deepest thing inside it.
fn primary(p: Pair<'_, Rule>) -> Result<Built, Diagnostic> {
    let sp = span(&p);
    let (kind, depth) = match p.as_rule() {
        Rule::expr => {
            let inner = build(p)?;
            let depth = inner.depth + 1;
            return Built::new(inner.expr, depth, sp);
        }
        Rule::number => {
            let text = p.as_str();
            let value = text.parse::<f64>().map_err(|_| {
                Diagnostic::new(ErrorKind::Syntax, sp, format!("`{text}` is not a number"))
            })?;
            let is_int = !text.contains(['.', 'e', 'E']);
            // Integers are counts, sizes and seeds (`u64`); every other
            // number is an `f32` at run time, so a larger one is no value
            // nnc can use anywhere.
            if is_int && text.parse::<u64>().is_err() {
                return Err(Diagnostic::new(
                    ErrorKind::Syntax,
                    sp,
                    format!("integer `{text}` is too large"),
                )
                .with_label(format!("larger than {}, the largest integer", u64::MAX)));
            }
            if !(value as f32).is_finite() {
                return Err(Diagnostic::new(
                    ErrorKind::Syntax,
                    sp,
                    format!("number `{text}` is too large"),
                )
                .with_label("larger than about 3.4e38, the largest f32"));
            }
            let kind = ExprKind::Number {
                value,
                is_int,
                text: text.to_string(),
            };
            (kind, 0)
        }
        Rule::boolean => (ExprKind::Bool(p.as_str() == "true"), 0),
        Rule::string => {
            let raw = p.as_str();
            let inner = &raw[1..raw.len() - 1];
            // The grammar admits only `\"` and `\\` after a backslash.
            let mut text = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                text.push(if c == '\\' {
                    chars.next().unwrap_or(c)
                } else {
                    c
                });
            }
            (ExprKind::Str(text), 0)
        }
        Rule::name => (ExprKind::Name(ident(next(&mut p.into_inner(), sp)?)), 0),
        Rule::list => {
            let mut items = Vec::new();
            let mut depth = 0;
            for q in p.into_inner() {
                let b = build(q)?;
                depth = depth.max(b.depth);
                items.push(b.expr);
            }
            (ExprKind::List(items), depth + 1)
        }
        Rule::call => {
            let mut it = p.into_inner();
            let func = ident(next(&mut it, sp)?);
            let mut args = Vec::new();
            let mut depth = 0;
            for a in it {
                let mut parts: Vec<Pair<'_, Rule>> = a.into_inner().collect();
                let value =
                    build(parts.pop().ok_or_else(|| {
                        Diagnostic::new(ErrorKind::Internal, sp, "empty argument")
                    })?)?;
                depth = depth.max(value.depth);
                args.push(Arg {
                    name: parts.pop().map(ident),
                    value: value.expr,
                });
            }
            (ExprKind::Call { func, args }, depth + 1)
        }
        _ => {
            return Err(Diagnostic::new(
                ErrorKind::Internal,
                sp,
                "unexpected expression",
            ))
        }
    };
    Built::new(Expr { kind, span: sp }, depth, sp)
}
