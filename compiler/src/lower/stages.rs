//! Pipeline stages (`stages:` in a `train` block, issue #24): a network cut
//! after the named bindings into consecutive stage networks, each an
//! ordinary [`Network`] that the rest of the pipeline (autodiff, passes,
//! code generation, the interpreter) handles like any other.
//!
//! A cut is valid when exactly one tensor crosses it: every node after the
//! cut reads only nodes after it, the cut binding itself, or data leaves
//! (inputs, labels, token ids, constants), which each stage that reads them
//! is fed itself. A parameter read on both sides, or a second activation
//! crossing, is an error at the cut's name.
//!
//! Stage `s` of `k + 1` is the network `<Name>Stage<s>`:
//! * after the first, its first input is the incoming activation, a float
//!   input named as the binding that ends the previous stage;
//! * before the last, its one output is its outgoing activation `o`, and
//!   its objective is `Σ o · g_<o>` with `g_<o>` an extra float input of
//!   `o`'s shape: fed the gradient of the whole loss with respect to `o`
//!   (what the next stage sends back), the gradient of this objective with
//!   respect to the stage's parameters and incoming activation is the whole
//!   loss's (the chain rule, one vector-Jacobian product per stage);
//! * the last keeps the network's loss (its kind re-indexed to the stage's
//!   inputs) and the outputs it computes.
//!
//! The gradient with respect to the incoming activation is what
//! `GradOptions::inputs` already asks the training graph for.

use super::args::suggest;
use crate::diagnostic::{Diagnostic, ErrorKind, Span};
use crate::graph::NodeId;
use crate::ir::{InputDecl, InputKind, LossDecl, Network, OutputDecl, TrainConfig};
use crate::ops::reduce::{ReduceKind, ReduceOp};
use crate::ops::{BinaryOp, LeafOp, Op};
use nnc_spec::LossKind;
use std::collections::{BTreeSet, HashMap};

/// The name of the cotangent input of a stage that `output` ends.
pub fn cotangent_name(output: &str) -> String {
    format!("g_{output}")
}

/// The name of stage `s` of network `net`.
pub fn stage_name(net: &str, s: usize) -> String {
    format!("{net}Stage{s}")
}

/// What a pipelined `train` block cannot have yet, an error at the first
/// stage's name: L1/L2 penalties, which a non-last stage would add once per
/// micro-batch (its objective is summed over micro-batches, not averaged);
/// a compiled-in teacher, whose frozen weights are not placed on stages;
/// clipping by the global norm and coupled weight decay, which the
/// pipeline driver refuses (the norm spans every stage's rank); and
/// augmentation, which the pipeline driver does not apply.
pub fn check_config(cfg: &TrainConfig) -> Option<Diagnostic> {
    let (_, span) = cfg.stages.first()?;
    let r = cfg.regularization;
    let spec = &cfg.spec;
    let refused = [
        ("`l1:` or `l2:`", r.l1 != 0.0 || r.l2 != 0.0),
        ("`teacher:`", cfg.teacher.is_some()),
        ("`clip_norm:`", spec.clip_norm.is_some()),
        (
            "`weight_decay:` (with this optimizer)",
            spec.weight_decay != 0.0,
        ),
        ("`augment:`", spec.augment != nnc_spec::AugmentSpec::NONE),
    ];
    let (what, _) = refused.iter().find(|(_, on)| *on)?;
    Some(
        Diagnostic::new(
            ErrorKind::Invalid,
            *span,
            format!("`stages:` cannot be combined with {what} yet"),
        )
        .with_label("pipeline stages with a setting the pipeline does not handle")
        .with_help("drop that setting, or the stages"),
    )
}

/// The stage networks' names must not be taken by a network of the file:
/// generated code would define the same struct twice. An error at the
/// first stage's name, with a note at the network that has the name.
pub fn check_names(
    cfg: &TrainConfig,
    network_at: impl Fn(&str) -> Option<Span>,
) -> Option<Diagnostic> {
    let (_, span) = cfg.stages.first()?;
    (0..=cfg.stages.len()).find_map(|s| {
        let name = stage_name(&cfg.network, s);
        let taken = network_at(&name)?;
        Some(
            Diagnostic::new(
                ErrorKind::DuplicateName,
                *span,
                format!(
                    "`stages:` names stage {s} of `{}` `{name}`, which another network already is",
                    cfg.network
                ),
            )
            .with_label("the pipeline's stage networks are named `<Name>Stage<s>`")
            .with_note(taken, format!("network `{name}`"))
            .with_help("rename that network"),
        )
    })
}

/// Splits `net` after each binding of `cuts` (in order). No cut: the
/// network itself. Every mistake is a diagnostic at the cut's name.
pub fn split(net: &Network, cuts: &[(String, Span)]) -> Result<Vec<Network>, Vec<Diagnostic>> {
    if cuts.is_empty() {
        return Ok(vec![net.clone()]);
    }
    let mut errors = Vec::new();
    if net.is_modal() {
        errors.push(
            Diagnostic::new(
                ErrorKind::Invalid,
                cuts[0].1,
                format!(
                    "`stages:` cannot split `{}` yet: it uses dropout or batch norm, whose \
                     training and inference forms pipelines do not handle yet",
                    net.name
                ),
            )
            .with_label("pipeline stages of a modal network"),
        );
        return Err(errors);
    }
    let ends = resolve(net, cuts, &mut errors);
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut stages = Vec::with_capacity(ends.len() + 1);
    for s in 0..=ends.len() {
        let incoming = s.checked_sub(1).map(|p| (ends[p], &cuts[p]));
        let outgoing = ends.get(s).map(|&e| (e, &cuts[s]));
        match stage(net, s, incoming, outgoing) {
            Ok(n) => stages.push(n),
            Err(d) => errors.push(d),
        }
    }
    if errors.is_empty() {
        Ok(stages)
    } else {
        Err(errors)
    }
}

/// The node each cut names (its last binding of that name), checked to be
/// computed, in order, each leading to the next and to the loss.
fn resolve(net: &Network, cuts: &[(String, Span)], errors: &mut Vec<Diagnostic>) -> Vec<NodeId> {
    let g = &net.graph;
    let mut ends: Vec<NodeId> = Vec::new();
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    for (name, span) in cuts {
        if !seen.insert(name) {
            errors.push(
                Diagnostic::new(
                    ErrorKind::DuplicateName,
                    *span,
                    format!("`stages:` names `{name}` twice"),
                )
                .with_label("named again here"),
            );
            continue;
        }
        let Some(node) = g
            .ids()
            .filter(|&id| g.node(id).name.as_deref() == Some(name.as_str()))
            .last()
        else {
            let names: Vec<&str> = g
                .ids()
                .filter_map(|id| g.node(id).name.as_deref())
                .collect();
            let mut d = Diagnostic::new(
                ErrorKind::UnknownName,
                *span,
                format!(
                    "`stages:` names `{name}`, which network `{}` does not bind",
                    net.name
                ),
            )
            .with_label("no such binding");
            if let Some(s) = suggest(name, names) {
                d = d.with_help(format!("did you mean `{s}`?"));
            }
            errors.push(d);
            continue;
        };
        if matches!(g.node(node).op, Op::Leaf(_)) {
            errors.push(
                Diagnostic::new(
                    ErrorKind::Invalid,
                    *span,
                    format!("a stage must end at a computed binding; `{name}` is a declaration"),
                )
                .with_label("not computed"),
            );
            continue;
        }
        if let Some(&prev) = ends.last() {
            if !g.ancestors(&[node]).contains(&prev.index()) {
                errors.push(
                    Diagnostic::new(
                        ErrorKind::Invalid,
                        *span,
                        format!(
                            "stage boundary `{name}` does not depend on the previous one, `{}`: \
                             list the bindings in the order the network computes them, each \
                             computed from the one before",
                            g.node(prev).name.as_deref().unwrap_or("?")
                        ),
                    )
                    .with_label("not after the previous boundary"),
                );
                continue;
            }
        }
        if !g.ancestors(&[net.loss]).contains(&node.index()) {
            errors.push(
                Diagnostic::new(
                    ErrorKind::Invalid,
                    *span,
                    format!("`{name}` does not lead to the loss, so it cannot end a stage"),
                )
                .with_label("the loss does not read it"),
            );
            continue;
        }
        ends.push(node);
    }
    ends
}

/// Whether a leaf is data every stage that reads it is fed itself.
fn is_data(op: &Op) -> bool {
    matches!(
        op,
        Op::Leaf(
            LeafOp::Input { .. }
                | LeafOp::Label { .. }
                | LeafOp::Tokens { .. }
                | LeafOp::Constant { .. }
        )
    )
}

/// Stage `s`: from `incoming` (absent for the first) to `outgoing` (absent
/// for the last, which ends at the loss).
fn stage(
    net: &Network,
    s: usize,
    incoming: Option<(NodeId, &(String, Span))>,
    outgoing: Option<(NodeId, &(String, Span))>,
) -> Result<Network, Diagnostic> {
    let g = &net.graph;
    let end = outgoing.map_or(net.loss, |o| o.0);
    let before = incoming.map_or_else(BTreeSet::new, |i| g.ancestors(&[i.0]));
    let owned: BTreeSet<usize> = g
        .ancestors(&[end])
        .into_iter()
        .filter(|i| !before.contains(i))
        .collect();
    let mut needed = owned.clone();
    for &i in &owned {
        let id = NodeId::new(i);
        for o in g.operands(id) {
            if owned.contains(&o.index()) || incoming.is_some_and(|inc| inc.0 == o) {
                continue;
            }
            let on = g.node(o);
            if is_data(&on.op) {
                needed.insert(o.index());
                continue;
            }
            let (cut, span) = incoming.map_or(("?", Span::default()), |(_, c)| (&*c.0, c.1));
            let what = match &on.op {
                Op::Leaf(LeafOp::Param { name, .. }) => {
                    format!("parameter `{name}` is used on both sides of it")
                }
                _ => format!(
                    "`{}` crosses it too",
                    on.name.as_deref().unwrap_or("an intermediate value")
                ),
            };
            return Err(Diagnostic::new(
                ErrorKind::Invalid,
                span,
                format!(
                    "the stage boundary after `{cut}` is not a valid cut: {what}; only `{cut}` \
                     may pass from one stage to the next"
                ),
            )
            .with_label("not a valid cut")
            .with_note(on.span, "read across the boundary here"));
        }
    }
    let internal = |what: String| Diagnostic::new(ErrorKind::Internal, net.span, what);
    let mut graph = crate::graph::Graph::new();
    let mut map: HashMap<usize, NodeId> = HashMap::new();
    let mut inputs = Vec::new();
    if let Some((inc, (name, span))) = incoming {
        let ty = g.ty(inc).clone();
        let op = Op::Leaf(LeafOp::Input {
            name: name.clone(),
            shape: ty.shape.clone(),
        });
        let id = graph
            .add(op, &[], *span)
            .map_err(|e| internal(format!("stage input `{name}`: {}", e.message)))?;
        graph.set_name(id, name);
        map.insert(inc.index(), id);
        inputs.push(InputDecl {
            name: name.clone(),
            kind: InputKind::Features,
            node: id,
            ty,
            span: *span,
        });
    }
    for id in g.ids().filter(|id| needed.contains(&id.index())) {
        let node = g.node(id);
        let operands: Vec<NodeId> = g.operands(id).iter().map(|o| map[&o.index()]).collect();
        let new = graph
            .add(node.op.clone(), &operands, node.span)
            .map_err(|e| internal(format!("stage {s}: {}", e.message)))?;
        if let Some(n) = &node.name {
            graph.set_name(new, n);
        }
        map.insert(id.index(), new);
    }
    inputs.extend(
        net.inputs
            .iter()
            .filter(|i| needed.contains(&i.node.index()))
            .map(|i| InputDecl {
                node: map[&i.node.index()],
                ..i.clone()
            }),
    );
    let params = net
        .params
        .iter()
        .filter(|p| owned.contains(&p.node.index()))
        .map(|p| crate::ir::ParamDecl {
            node: map[&p.node.index()],
            ..p.clone()
        })
        .collect();
    let (loss, outputs, loss_decl) = match outgoing {
        Some((out, (name, span))) => {
            let o = map[&out.index()];
            let gname = cotangent_name(name);
            if let Some(clash) = net.inputs.iter().find(|i| i.name == gname) {
                return Err(Diagnostic::new(
                    ErrorKind::DuplicateName,
                    clash.span,
                    format!(
                        "input `{gname}` clashes with the gradient input the stage ending at \
                         `{name}` is given; rename it"
                    ),
                ));
            }
            let ty = graph.ty(o).clone();
            let gop = Op::Leaf(LeafOp::Input {
                name: gname.clone(),
                shape: ty.shape.clone(),
            });
            let gid = graph
                .add(gop, &[], *span)
                .map_err(|e| internal(format!("{gname}: {}", e.message)))?;
            graph.set_name(gid, &gname);
            inputs.push(InputDecl {
                name: gname,
                kind: InputKind::Features,
                node: gid,
                ty,
                span: *span,
            });
            let prod = graph
                .add(Op::Binary(BinaryOp::Mul), &[o, gid], *span)
                .map_err(|e| internal(format!("stage objective: {}", e.message)))?;
            let sum = ReduceOp {
                kind: ReduceKind::Sum,
                axes: Vec::new(),
                keepdims: false,
            };
            let loss = graph
                .add(Op::Reduce(sum), &[prod], *span)
                .map_err(|e| internal(format!("stage objective: {}", e.message)))?;
            let outputs = vec![OutputDecl {
                name: name.clone(),
                node: o,
                span: *span,
            }];
            let decl = LossDecl {
                kind: LossKind::Other,
                scores: None,
            };
            (loss, outputs, decl)
        }
        None => {
            let outputs = net
                .outputs
                .iter()
                .filter(|o| owned.contains(&o.node.index()))
                .map(|o| OutputDecl {
                    node: map[&o.node.index()],
                    ..o.clone()
                })
                .collect();
            // The loss kind names its label or target by index into the
            // inputs, which the stage renumbers.
            let reindex = |i: usize| {
                let name = &net.inputs[i].name;
                inputs.iter().position(|j| j.name == *name).unwrap_or(i)
            };
            let kind = match net.loss_decl.kind {
                LossKind::Classification {
                    label,
                    classes,
                    positions,
                } => LossKind::Classification {
                    label: reindex(label),
                    classes,
                    positions,
                },
                LossKind::Binary { target } => LossKind::Binary {
                    target: reindex(target),
                },
                LossKind::Regression { target } => LossKind::Regression {
                    target: reindex(target),
                },
                LossKind::Other => LossKind::Other,
            };
            let decl = LossDecl {
                kind,
                scores: net.loss_decl.scores.map(|n| map[&n.index()]),
            };
            (map[&net.loss.index()], outputs, decl)
        }
    };
    Ok(Network {
        name: stage_name(&net.name, s),
        span: net.span,
        graph,
        inputs,
        params,
        outputs,
        loss,
        states: Vec::new(),
        modal: Vec::new(),
        inference: false,
        loss_decl,
        frozen: Vec::new(),
    })
}
