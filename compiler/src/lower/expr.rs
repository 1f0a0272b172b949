//! Expressions: literals, names, operators, pipes and calls, each lowered
//! to the node computing it, and op nodes added with their shape rule's
//! errors turned into diagnostics.

use super::args::{self, suggest, ArgSrc};
use super::{layers, Lowerer, Reported, L, MAX_ELEMENTS};
use crate::diagnostic::{Diagnostic, ErrorKind, Span};
use crate::graph::NodeId;
use crate::ops::{self, Args as OpArgs, BinaryOp, LeafOp, Matmul, Op, OpError, UnaryOp};
use crate::syntax::ast::{self, BinOp, Expr, ExprKind};

impl Lowerer {
    /// Adds an op node, turning a shape-rule failure into a diagnostic that
    /// points at `span` and labels each operand with its type.
    /// Results are held to the same size limit as declared tensors, so that
    /// broadcasting or a product of large tensors cannot overflow a count.
    pub(super) fn add_op(&mut self, op: Op, operands: &[(NodeId, Span)], span: Span) -> L<NodeId> {
        let ids: Vec<NodeId> = operands.iter().map(|o| o.0).collect();
        match self.graph.add(op, &ids, span) {
            Ok(id) => {
                let ty = self.graph.ty(id);
                if ty.shape.fixed_numel().is_none_or(|n| n > MAX_ELEMENTS) {
                    let d = Diagnostic::new(
                        ErrorKind::Invalid,
                        span,
                        format!("the result {ty} has too many elements"),
                    )
                    .with_label("more than 2^40 elements");
                    return Err(self.report(d));
                }
                Ok(id)
            }
            Err(e) => Err(self.op_error(e, operands, span)),
        }
    }

    pub(super) fn op_error(
        &mut self,
        e: OpError,
        operands: &[(NodeId, Span)],
        span: Span,
    ) -> Reported {
        let (primary, label) = match (e.kind, e.operand.and_then(|i| operands.get(i))) {
            (ErrorKind::TypeMismatch, Some(&(id, sp))) => {
                (sp, format!("this is {}", self.graph.ty(id)))
            }
            _ => (span, String::new()),
        };
        let mut d = Diagnostic::new(e.kind, primary, e.message).with_label(label);
        if primary == span && operands.len() > 1 {
            for &(id, sp) in operands {
                d = d.with_note(sp, format!("this is {}", self.graph.ty(id)));
            }
        }
        if let Some(h) = e.help {
            d = d.with_help(h);
        }
        self.report(d)
    }

    /// Lowers an expression to the node computing it.
    ///
    /// A chain `a + b + c + …` nests on its left as deep as it is long, so
    /// it is walked along that spine with a loop: recursion here is only
    /// into right operands, prefix `-`, brackets and arguments, which the
    /// parser bounds (`syntax::MAX_NESTING`).
    pub(super) fn expr(&mut self, e: &Expr) -> L<NodeId> {
        let mut spine = Vec::new();
        let mut bottom = e;
        while let ExprKind::Binary { lhs, .. } | ExprKind::Pipe { lhs, .. } = &bottom.kind {
            spine.push(bottom);
            bottom = lhs;
        }
        let mut acc = self.operand(bottom);
        for link in spine.into_iter().rev() {
            acc = self.infix(link, acc);
        }
        acc
    }

    /// One step up a chain: `link` is a binary operator or pipe whose left
    /// operand lowered to `lhs`.
    fn infix(&mut self, link: &Expr, lhs_node: L<NodeId>) -> L<NodeId> {
        match &link.kind {
            ExprKind::Binary { op, lhs, rhs } => {
                // The right side is lowered even when the left failed, so
                // both report their errors.
                let b = self.expr(rhs);
                let (a, b) = (lhs_node?, b?);
                let op = match op {
                    BinOp::Add => Op::Binary(BinaryOp::Add),
                    BinOp::Sub => Op::Binary(BinaryOp::Sub),
                    BinOp::Mul => Op::Binary(BinaryOp::Mul),
                    BinOp::Div => Op::Binary(BinaryOp::Div),
                    BinOp::Matmul => Op::Matmul(Matmul),
                };
                self.add_op(op, &[(a, lhs.span), (b, rhs.span)], link.span)
            }
            ExprKind::Pipe { lhs, rhs } => {
                let x = lhs_node?;
                let first = ArgSrc::Lowered(x, lhs.span);
                match &rhs.kind {
                    ExprKind::Name(f) => self.call(f, Some(first), &[], link.span),
                    ExprKind::Call { func, args } => self.call(func, Some(first), args, link.span),
                    _ => Err(self.report(
                        Diagnostic::new(
                            ErrorKind::Syntax,
                            rhs.span,
                            format!(
                                "the right side of `|>` must be a function name or call, found {}",
                                args::found(rhs)
                            ),
                        )
                        .with_label("not a function"),
                    )),
                }
            }
            _ => self.operand(link),
        }
    }

    /// Lowers an expression that is not an infix chain.
    fn operand(&mut self, e: &Expr) -> L<NodeId> {
        match &e.kind {
            ExprKind::Number { value, .. } => self.leaf(LeafOp::scalar(*value), e.span),
            ExprKind::Neg(inner) => {
                if let Some((v, _)) = args::literal(e) {
                    return self.leaf(LeafOp::scalar(v), e.span);
                }
                let x = self.expr(inner)?;
                // Name the operator as written, not the op it lowers to.
                if let Err(err) = ops::expect_f32(self.graph.ty(x), 0, "unary `-`") {
                    return Err(self.op_error(err, &[(x, inner.span)], e.span));
                }
                self.add_op(Op::Unary(UnaryOp::Neg), &[(x, inner.span)], e.span)
            }
            ExprKind::Name(n) => self.lookup(n),
            ExprKind::Bool(_) | ExprKind::List(_) | ExprKind::Str(_) => Err(self.report(
                Diagnostic::new(
                    ErrorKind::TypeMismatch,
                    e.span,
                    format!("expected a tensor, found {}", args::found(e)),
                )
                .with_label("not a tensor"),
            )),
            ExprKind::Call { func, args } => self.call(func, None, args, e.span),
            ExprKind::Binary { .. } | ExprKind::Pipe { .. } => self.expr(e),
        }
    }

    /// Lowers a call: a layer first, then the ops' surface functions.
    pub(super) fn call(
        &mut self,
        func: &ast::Ident,
        first: Option<ArgSrc<'_>>,
        args: &[ast::Arg],
        span: Span,
    ) -> L<NodeId> {
        if let Some(r) = self.layer(func, first, args, span) {
            return r;
        }
        let Some(f) = ops::functions().find(|f| f.name == func.name) else {
            let names = ops::functions()
                .map(|f| f.name)
                .chain(layers::layers().map(|l| l.name));
            let mut d = Diagnostic::new(
                ErrorKind::UnknownName,
                func.span,
                format!("unknown function `{}`", func.name),
            )
            .with_label("no such function");
            if let Some(s) = suggest(&func.name, names) {
                d = d.with_help(format!("did you mean `{s}`?"));
            }
            return Err(self.report(d));
        };
        let (values, spans) = self.args(f.name, span, f.params, first, args)?;
        let op_args = OpArgs { values };
        let (op, operands) = match (f.build)(&op_args) {
            Ok(b) => b,
            Err(e) => return Err(self.op_error(e, &[], span)),
        };
        // Label each operand with the span of the argument it came from.
        let operand_spans: Vec<(NodeId, Span)> = operands
            .iter()
            .map(|&id| {
                let sp = op_args
                    .values
                    .iter()
                    .zip(&spans)
                    .find(|(v, _)| matches!(v, Some(ops::ArgValue::Tensor(t, _)) if *t == id))
                    .and_then(|(_, s)| *s)
                    .unwrap_or(span);
                (id, sp)
            })
            .collect();
        self.add_op(op, &operand_spans, span)
    }
}
