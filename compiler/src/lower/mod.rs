//! AST → graph: name resolution, layers, shape inference, and the checks
//! that make a network well-formed (one loss, unique names, labels used
//! only as labels). Errors are collected, not fatal: a statement that fails
//! poisons its name so later uses do not cascade into more errors.
//!
//! `mod.rs` lowers a file and a network's statements; `decl.rs` the
//! declarations, `expr.rs` expressions and calls, `args.rs` binds every
//! call's arguments, `layers/` and `init.rs` are the layer and
//! initializer tables, `train/` lowers `train` blocks (settings, optimizer
//! and schedule tables), `inference.rs` makes a network's inference form,
//! `teacher.rs` splices a `teacher:` network into its student.

mod args;
mod decl;
mod expr;
mod inference;
mod init;
mod layers;
mod loss_kind;
pub mod split;
pub mod stages;
mod teacher;
mod train;

/// IR types lowering makes, also reachable under the stage's name (the
/// paths the facade's end-to-end tests use).
pub use crate::ir::{BatchSpec, InputKind, Network};
pub use init::{Initializer, INITIALIZERS};
pub use layers::{layers, Layer};
pub use train::{
    AugmentDef, Hyper, OptimizerDef, ScheduleDef, Setting, AUGMENTS, OPTIMIZERS, SCHEDULES,
    SETTINGS,
};

use crate::diagnostic::{CompileError, Diagnostic, ErrorKind, Span};
use crate::graph::{Graph, NodeId};
use crate::ir::{InputDecl, Module, OutputDecl, ParamDecl, StateDecl, TrainConfig};
use crate::ops;
use crate::syntax::ast::{self, StmtKind};
use args::suggest;
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
    let mut statics: Vec<(String, &str, Span)> = Vec::new();
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
        // Generated code names a network's statics `NAME_SPEC`: `Net` and
        // `NET` would define the same one.
        let key = crate::ir::screaming(&def.name.name);
        if let Some((other, first)) = statics
            .iter()
            .find(|(k, _, _)| *k == key)
            .map(|(_, n, s)| (n, s))
        {
            errors.push(
                Diagnostic::new(
                    ErrorKind::DuplicateName,
                    def.name.span,
                    format!(
                        "networks `{other}` and `{}` would both define `{key}_SPEC` in generated code",
                        def.name.name
                    ),
                )
                .with_label("rename this network")
                .with_note(*first, "the other network"),
            );
            continue;
        }
        statics.push((key, def.name.name.as_str(), def.name.span));
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
            Ok(t) => {
                // `stages:` must cut the network validly; the stage
                // networks themselves are built again where needed.
                if let Some(net) = networks.iter().find(|n| n.name == t.network) {
                    if let Err(mut ds) = stages::split(net, &t.stages) {
                        errors.append(&mut ds);
                    }
                }
                if let Some(d) = stages::check_config(&t) {
                    errors.push(d);
                }
                if let Some(d) = stages::check_names(&t, |n| seen.get(n).copied()) {
                    errors.push(d);
                }
                // `split:` must name a valid split pair; its shard and
                // tail are built again where needed.
                if let Some(net) = networks.iter().find(|n| n.name == t.network) {
                    if let Err(mut ds) = split::split(net, &t) {
                        errors.append(&mut ds);
                    }
                }
                if let Some(d) = split::check_config(&t) {
                    errors.push(d);
                }
                if let Some(d) = split::check_names(&t, |n| seen.get(n).copied()) {
                    errors.push(d);
                }
                trains.push(t);
            }
            Err(mut ds) => errors.append(&mut ds),
        }
    }
    let mut names: Vec<&str> = seen.keys().copied().collect();
    names.sort_unstable();
    teacher::splice_teachers(&mut networks, &trains, &names, &mut errors);
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
        let loss_decl = loss_kind::loss_decl(&self.graph, loss, &self.inputs);
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
            loss_decl,
            frozen: Vec::new(),
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
}
