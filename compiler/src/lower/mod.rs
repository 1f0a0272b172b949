//! AST → graph: name resolution, layer sugar, shape inference, and the
//! checks that make a network well-formed (one loss, unique names, labels
//! used only as labels). Errors are collected, not fatal: a statement that
//! fails poisons its name so later uses do not cascade into more errors.

mod args;
mod inference;
mod init;
mod layers;
mod train;

/// IR types lowering makes, also reachable under the stage's name (the
/// paths the facade's end-to-end tests use).
pub use crate::ir::{BatchSize, InputKind, Network};
pub use init::{Initializer, INITIALIZERS};
pub use layers::{layers, Layer};
pub use train::{Hyper, OptimizerDef, ScheduleDef, Setting, OPTIMIZERS, SCHEDULES, SETTINGS};

use crate::diagnostic::{CompileError, Diagnostic, ErrorKind, Span};
use crate::graph::{DType, Dim, Graph, NodeId, Shape, TensorType};
use crate::ir::{Init, InputDecl, Module, OutputDecl, ParamDecl, StateDecl, TrainConfig};
use crate::ops::{self, Args as OpArgs, BinaryOp, LeafOp, Matmul, Op, OpError, UnaryOp};
use crate::syntax::ast::{self, BinOp, DimExpr, Expr, ExprKind, StmtKind, TypeExpr};
use args::{suggest, ArgSrc};
use std::collections::HashMap;

/// The most elements a tensor may have (not counting `batch`): 2^40.
pub const MAX_ELEMENTS: usize = 1 << 40;

/// Marker: the error has been recorded in the lowerer's list.
#[derive(Debug, Clone, Copy)]
pub struct Reported;

/// Lowering result: `Err` means a diagnostic was already recorded.
pub type L<T> = Result<T, Reported>;

/// Lowers a parsed file.
pub fn lower(file: &ast::File) -> Result<Module, CompileError> {
    let mut errors = Vec::new();
    let mut networks: Vec<Network> = Vec::new();
    let mut seen: HashMap<&str, Span> = HashMap::new();
    for def in &file.networks {
        if let Some(&first) = seen.get(def.name.name.as_str()) {
            errors.push(
                Diagnostic::new(
                    ErrorKind::DuplicateName,
                    def.name.span,
                    format!("network `{}` is defined twice", def.name.name),
                )
                .with_label("defined again here")
                .with_note(first, "first defined here"),
            );
            continue;
        }
        seen.insert(&def.name.name, def.name.span);
        let mut l = Lowerer::default();
        match l.network(def) {
            Ok(net) if l.errors.is_empty() => networks.push(net),
            _ => errors.append(&mut l.errors),
        }
    }
    let mut trains: Vec<TrainConfig> = Vec::new();
    for def in &file.trains {
        let known = seen.contains_key(def.name.name.as_str());
        if !known {
            let mut d = Diagnostic::new(
                ErrorKind::UnknownName,
                def.name.span,
                format!("`train {}` names no network in this file", def.name.name),
            )
            .with_label("unknown network");
            if let Some(s) = suggest(&def.name.name, seen.keys().copied()) {
                d = d.with_help(format!("did you mean `{s}`?"));
            }
            errors.push(d);
            continue;
        }
        if let Some(prev) = trains.iter().find(|t| t.network == def.name.name) {
            errors.push(
                Diagnostic::new(
                    ErrorKind::DuplicateName,
                    def.name.span,
                    format!("network `{}` has two `train` blocks", def.name.name),
                )
                .with_label("second block")
                .with_note(prev.span, "first block"),
            );
            continue;
        }
        match train::lower_train(def) {
            Ok(t) => trains.push(t),
            Err(mut ds) => errors.append(&mut ds),
        }
    }
    if !errors.is_empty() {
        return Err(errors.into());
    }
    Ok(Module { networks, trains })
}

/// A name in scope: the node it is bound to (`None` if its statement failed)
/// and where it was declared.
#[derive(Clone, Copy, Debug)]
struct Binding {
    node: Option<NodeId>,
    span: Span,
}

/// Per-network lowering state.
#[derive(Default)]
pub(crate) struct Lowerer {
    graph: Graph,
    scope: HashMap<String, Binding>,
    errors: Vec<Diagnostic>,
    inputs: Vec<InputDecl>,
    params: Vec<ParamDecl>,
    outputs: Vec<OutputDecl>,
    states: Vec<StateDecl>,
    modal: Vec<(NodeId, Vec<NodeId>)>,
    /// The name layers in the current statement take their parameters' names from.
    prefix: String,
    /// How many layers the current statement has created.
    layer_count: usize,
}

impl Lowerer {
    fn report(&mut self, d: Diagnostic) -> Reported {
        self.errors.push(d);
        Reported
    }

    fn network(&mut self, def: &ast::NetworkDef) -> L<Network> {
        let mut loss: Option<(NodeId, Span)> = None;
        let mut loss_failed = false;
        for stmt in &def.stmts {
            self.layer_count = 0;
            match &stmt.kind {
                StmtKind::Input { name, ty } => {
                    let node = self.input_decl(name, ty, stmt.span);
                    self.declare(name, node.ok());
                }
                StmtKind::Label {
                    name,
                    dims,
                    classes,
                } => {
                    let node = self.label_decl(name, dims, *classes, stmt.span, false);
                    self.declare(name, node.ok());
                }
                StmtKind::Tokens {
                    name,
                    dims,
                    classes,
                } => {
                    let node = self.label_decl(name, dims, *classes, stmt.span, true);
                    self.declare(name, node.ok());
                }
                StmtKind::Param { name, ty, init } => {
                    let node = self.param_decl(name, ty, init.as_ref());
                    self.declare(name, node.ok());
                }
                StmtKind::Let { name, value } => {
                    self.prefix = name.name.clone();
                    let node = self.expr(value);
                    if let Ok(n) = node {
                        self.graph.set_name(n, &name.name);
                    }
                    self.declare(name, node.ok());
                }
                StmtKind::Output { name, value } => {
                    let node = match value {
                        Some(v) => {
                            self.prefix = name.name.clone();
                            let node = self.expr(v);
                            if let Ok(n) = node {
                                self.graph.set_name(n, &name.name);
                            }
                            if !self.declare(name, node.ok()) {
                                // Already reported as a duplicate name: one
                                // mistake, one error.
                                continue;
                            }
                            node
                        }
                        None => self.lookup(name),
                    };
                    if let Ok(node) = node {
                        if let Some(prev) = self.outputs.iter().find(|o| o.name == name.name) {
                            let d = Diagnostic::new(
                                ErrorKind::DuplicateName,
                                name.span,
                                format!("output `{}` is declared twice", name.name),
                            )
                            .with_label("declared again here")
                            .with_note(prev.span, "first declared here");
                            self.report(d);
                        } else {
                            self.outputs.push(OutputDecl {
                                name: name.name.clone(),
                                node,
                                span: stmt.span,
                            });
                        }
                    }
                }
                StmtKind::Loss { value } => {
                    self.prefix = "loss".to_string();
                    if let Some((_, first)) = loss {
                        let d = Diagnostic::new(
                            ErrorKind::Invalid,
                            stmt.span,
                            "a network has exactly one `loss`; this is a second one",
                        )
                        .with_label("second loss")
                        .with_note(first, "first loss")
                        .with_help("add the terms into one loss: `loss a + b;`");
                        self.report(d);
                        continue;
                    }
                    match self.expr(value) {
                        Ok(node) => {
                            let ty = self.graph.ty(node).clone();
                            if ty.shape.rank() != 0 {
                                let d = Diagnostic::new(
                                    ErrorKind::ShapeMismatch,
                                    value.span,
                                    format!("the loss must be a scalar, found {ty}"),
                                )
                                .with_label(format!("this is {ty}"))
                                .with_help("reduce it, for example with mean(...)");
                                self.report(d);
                                loss_failed = true;
                            } else {
                                self.graph.set_name(node, "loss");
                                loss = Some((node, stmt.span));
                            }
                        }
                        Err(_) => loss_failed = true,
                    }
                }
            }
        }
        let Some((loss, _)) = loss else {
            if !loss_failed {
                let d = Diagnostic::new(
                    ErrorKind::MissingLoss,
                    def.name.span,
                    format!("network `{}` has no `loss`", def.name.name),
                )
                .with_label("no loss declared in this network")
                .with_help(
                    "declare what training minimises, e.g. `loss cross_entropy(logits, labels);`",
                );
                self.report(d);
            }
            return Err(Reported);
        };
        Ok(Network {
            name: def.name.name.clone(),
            span: def.span,
            graph: std::mem::take(&mut self.graph),
            inputs: std::mem::take(&mut self.inputs),
            params: std::mem::take(&mut self.params),
            outputs: std::mem::take(&mut self.outputs),
            loss,
            states: std::mem::take(&mut self.states),
            modal: std::mem::take(&mut self.modal),
            inference: false,
        })
    }

    /// Binds a name, reporting a duplicate; `false` when it was one.
    fn declare(&mut self, name: &ast::Ident, node: Option<NodeId>) -> bool {
        if let Some(prev) = self.scope.get(&name.name) {
            let d = Diagnostic::new(
                ErrorKind::DuplicateName,
                name.span,
                format!("`{}` is already defined", name.name),
            )
            .with_label("defined again here")
            .with_note(prev.span, "first defined here");
            self.report(d);
            return false;
        }
        self.scope.insert(
            name.name.clone(),
            Binding {
                node,
                span: name.span,
            },
        );
        true
    }

    fn lookup(&mut self, name: &ast::Ident) -> L<NodeId> {
        match self.scope.get(&name.name) {
            Some(Binding { node: Some(n), .. }) => Ok(*n),
            Some(Binding { node: None, .. }) => Err(Reported),
            None => {
                let is_function = ops::functions().any(|f| f.name == name.name)
                    || layers::layers().any(|l| l.name == name.name);
                let mut d = Diagnostic::new(
                    ErrorKind::UnknownName,
                    name.span,
                    format!("unknown name `{}`", name.name),
                )
                .with_label("not defined before this use");
                if is_function {
                    d.message = format!("`{}` is a function, not a value", name.name);
                    d.label = "a function used as a value".to_string();
                    d = d.with_help(format!(
                        "call it, `{0}(x)`, or pipe into it, `x |> {0}`",
                        name.name
                    ));
                } else if let Some(s) = suggest(&name.name, self.scope.keys().map(String::as_str)) {
                    d = d.with_help(format!("did you mean `{s}`?"));
                }
                Err(self.report(d))
            }
        }
    }

    fn shape(&mut self, dims: &[DimExpr], allow_batch: bool) -> L<Shape> {
        let mut out = Vec::with_capacity(dims.len());
        for d in dims {
            match d {
                DimExpr::Fixed(0, sp) => {
                    return Err(self.report(
                        Diagnostic::new(ErrorKind::Invalid, *sp, "a dimension must be at least 1")
                            .with_label("zero-sized"),
                    ))
                }
                DimExpr::Fixed(n, sp) => match usize::try_from(*n) {
                    Ok(n) if n <= MAX_ELEMENTS => out.push(Dim::Fixed(n)),
                    _ => {
                        return Err(self.report(
                            Diagnostic::new(ErrorKind::Invalid, *sp, "dimension is too large")
                                .with_label("too large"),
                        ))
                    }
                },
                DimExpr::Named(id) if id.name == "batch" => {
                    if !allow_batch {
                        return Err(self.report(
                            Diagnostic::new(
                                ErrorKind::Invalid,
                                id.span,
                                "a parameter's shape cannot depend on the batch size",
                            )
                            .with_label("`batch` not allowed here"),
                        ));
                    }
                    out.push(Dim::Batch);
                }
                DimExpr::Named(id) => {
                    return Err(self.report(
                        Diagnostic::new(
                            ErrorKind::UnknownName,
                            id.span,
                            format!(
                                "unknown dimension `{}`; expected an integer or `batch`",
                                id.name
                            ),
                        )
                        .with_label("unknown dimension"),
                    ))
                }
            }
        }
        let shape = Shape(out);
        if shape.fixed_numel().is_none_or(|n| n > MAX_ELEMENTS) {
            let span = dims.first().map_or(Span::default(), |d| {
                d.span().to(dims[dims.len() - 1].span())
            });
            return Err(self.report(
                Diagnostic::new(ErrorKind::Invalid, span, "tensor has too many elements")
                    .with_label("more than 2^40 elements"),
            ));
        }
        Ok(shape)
    }

    fn tensor_type(&mut self, ty: &TypeExpr, allow_batch: bool) -> L<Shape> {
        if ty.dtype.name != "f32" {
            return Err(self.report(
                Diagnostic::new(
                    ErrorKind::Invalid,
                    ty.dtype.span,
                    format!("unknown element type `{}`; expected `f32`", ty.dtype.name),
                )
                .with_label("unknown type"),
            ));
        }
        self.shape(&ty.dims, allow_batch)
    }

    fn leaf(&mut self, leaf: LeafOp, span: Span) -> L<NodeId> {
        self.graph
            .add(Op::Leaf(leaf), &[], span)
            .map_err(|e| self.report(Diagnostic::new(ErrorKind::Internal, span, e.message)))
    }

    fn input_decl(&mut self, name: &ast::Ident, ty: &TypeExpr, span: Span) -> L<NodeId> {
        let shape = self.tensor_type(ty, true)?;
        let node = self.leaf(
            LeafOp::Input {
                name: name.name.clone(),
                shape: shape.clone(),
            },
            name.span,
        )?;
        self.graph.set_name(node, &name.name);
        self.inputs.push(InputDecl {
            name: name.name.clone(),
            kind: InputKind::Features,
            node,
            ty: TensorType::f32(shape),
            span,
        });
        Ok(node)
    }

    fn label_decl(
        &mut self,
        name: &ast::Ident,
        dims: &[DimExpr],
        (classes, cspan): (u64, Span),
        span: Span,
        tokens: bool,
    ) -> L<NodeId> {
        let shape = self.shape(dims, true)?;
        let classes = match usize::try_from(classes) {
            Ok(c) if (1..=1 << 24).contains(&c) => c,
            _ => {
                return Err(self.report(
                    Diagnostic::new(
                        ErrorKind::Invalid,
                        cspan,
                        "the class count must be between 1 and 16777216",
                    )
                    .with_label("invalid class count"),
                ))
            }
        };
        // Token ids are fed with the float inputs (predict() needs them);
        // labels only to training and loss.
        let (leaf, kind) = if tokens {
            let leaf = LeafOp::Tokens {
                name: name.name.clone(),
                shape: shape.clone(),
                classes,
            };
            (leaf, InputKind::Features)
        } else {
            let leaf = LeafOp::Label {
                name: name.name.clone(),
                shape: shape.clone(),
                classes,
            };
            (leaf, InputKind::Labels)
        };
        let node = self.leaf(leaf, name.span)?;
        self.graph.set_name(node, &name.name);
        self.inputs.push(InputDecl {
            name: name.name.clone(),
            kind,
            node,
            ty: TensorType {
                dtype: DType::Class { classes },
                shape,
            },
            span,
        });
        Ok(node)
    }

    fn param_decl(&mut self, name: &ast::Ident, ty: &TypeExpr, init: Option<&Expr>) -> L<NodeId> {
        let shape = self.tensor_type(ty, false)?;
        let init = match init {
            Some(e) => self.init(e)?,
            None => Init::default_for(&shape),
        };
        self.add_param(name.name.clone(), shape, init, name.span)
    }

    /// Registers a parameter and its leaf node.
    fn add_param(&mut self, name: String, shape: Shape, init: Init, span: Span) -> L<NodeId> {
        if shape.fixed_numel().is_none_or(|n| n > MAX_ELEMENTS) {
            let d = Diagnostic::new(
                ErrorKind::Invalid,
                span,
                format!("parameter `{name}` has too many elements: f32{shape}"),
            )
            .with_label("more than 2^40 elements");
            return Err(self.report(d));
        }
        let node = self.leaf(
            LeafOp::Param {
                name: name.clone(),
                shape: shape.clone(),
            },
            span,
        )?;
        self.graph.set_name(node, &name);
        self.params.push(ParamDecl {
            name,
            node,
            shape,
            init,
            span,
        });
        Ok(node)
    }

    /// Adds an op node, turning a shape-rule failure into a diagnostic that
    /// points at `span` and labels each operand with its type.
    /// Results are held to the same size limit as declared tensors, so that
    /// broadcasting or a product of large tensors cannot overflow a count.
    fn add_op(&mut self, op: Op, operands: &[(NodeId, Span)], span: Span) -> L<NodeId> {
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

    fn op_error(&mut self, e: OpError, operands: &[(NodeId, Span)], span: Span) -> Reported {
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
    fn expr(&mut self, e: &Expr) -> L<NodeId> {
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
            ExprKind::Bool(_) | ExprKind::List(_) => Err(self.report(
                Diagnostic::new(
                    ErrorKind::TypeMismatch,
                    e.span,
                    format!("expected a tensor, found {}", args::found(e)),
                )
                .with_label("not a tensor"),
            )),
            ExprKind::Binary { op, lhs, rhs } => {
                let a = self.expr(lhs);
                let b = self.expr(rhs);
                let (a, b) = (a?, b?);
                let op = match op {
                    BinOp::Add => Op::Binary(BinaryOp::Add),
                    BinOp::Sub => Op::Binary(BinaryOp::Sub),
                    BinOp::Mul => Op::Binary(BinaryOp::Mul),
                    BinOp::Div => Op::Binary(BinaryOp::Div),
                    BinOp::Matmul => Op::Matmul(Matmul),
                };
                self.add_op(op, &[(a, lhs.span), (b, rhs.span)], e.span)
            }
            ExprKind::Call { func, args } => self.call(func, None, args, e.span),
            ExprKind::Pipe { lhs, rhs } => {
                let x = self.expr(lhs)?;
                let first = ArgSrc::Lowered(x, lhs.span);
                match &rhs.kind {
                    ExprKind::Name(f) => self.call(f, Some(first), &[], e.span),
                    ExprKind::Call { func, args } => self.call(func, Some(first), args, e.span),
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
        }
    }

    /// Lowers a call: a layer first, then the ops' surface functions.
    fn call(
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
