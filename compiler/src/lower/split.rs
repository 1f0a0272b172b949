//! Split layers (`split:` in a `train` block, issue #24): tensor
//! parallelism in Megatron-LM's style. A `columns(A)` dense layer followed
//! by a `rows(B)` dense layer is cut across `split_ranks` ranks: rank `r`
//! holds `A.weight[:, cols_r]`, `A.bias[cols_r]` and `B.weight[rows_r, :]`,
//! computes its slice of `A`'s output (the elementwise activation after it
//! stays sharded) and its partial product `A_r @ B.weight[rows_r, :]`; the
//! partial products are summed over ranks (one all-reduce forward), and
//! everything after — `B`'s bias, its activation, the rest of the network
//! and the loss — runs on every rank alike, on replicated parameters.
//!
//! The split is two ordinary networks, built by slicing the parameters'
//! shapes and cutting the sliced network where the partial product ends
//! (with [`super::stages::split`], the pipeline's cut):
//! * `<Name>Shard`: the data inputs to the partial product `<B>_partial`,
//!   with the sliced parameters; its objective `Σ p · g_<B>_partial` makes
//!   its parameter gradients the whole loss's given the gradient of the sum;
//! * `<Name>Tail`: from the input `<B>_partial` (the sum over ranks) to the
//!   loss, with the gradient with respect to that input
//!   (`train_step_backprop`), which is also each rank's partial product's
//!   (the sum's adjoint copies it to every term), so the backward needs no
//!   collective while nothing with parameters precedes `A`.
//!
//! One generated shard serves every rank: the ranks differ only in which
//! slice of the whole network's parameters they hold
//! (`nnc_runtime::split`).

use super::args::suggest;
use crate::diagnostic::{Diagnostic, ErrorKind, Span};
use crate::graph::{Dim, Graph, NodeId, Shape};
use crate::ir::{Network, SplitKind, SplitLayer, TrainConfig};
use crate::ops::{LeafOp, Op};
use std::collections::{BTreeSet, HashMap};

/// The name of the network holding one rank's slices.
pub fn shard_name(net: &str) -> String {
    format!("{net}Shard")
}

/// The name of the replicated rest of the network.
pub fn tail_name(net: &str) -> String {
    format!("{net}Tail")
}

/// The name of the partial product of row-split layer `binding`: the
/// shard's output and the tail's input.
pub fn partial_name(binding: &str) -> String {
    format!("{binding}_partial")
}

/// A split network: the shard every rank runs on its slices, and the tail
/// every rank runs alike.
#[derive(Debug, Clone)]
pub struct Split {
    /// `<Name>Shard`.
    pub shard: Network,
    /// `<Name>Tail`.
    pub tail: Network,
    /// The tail's incoming sum (`<B>_partial`).
    pub partial: String,
}

/// What a `train` block with `split:` cannot have yet, an error at the
/// first split layer: pipeline stages as well (hybrid layouts), L1/L2
/// penalties (each rank would count the shard's share of the penalty in
/// no loss), a teacher, clipping by the global norm (it spans the ranks'
/// slices) and augmentation (the split driver does not augment).
pub fn check_config(cfg: &TrainConfig) -> Option<Diagnostic> {
    let first = cfg.split.first()?;
    let r = cfg.regularization;
    let spec = &cfg.spec;
    let refused = [
        ("`stages:`", !cfg.stages.is_empty()),
        ("`l1:` or `l2:`", r.l1 != 0.0 || r.l2 != 0.0),
        ("`teacher:`", cfg.teacher.is_some()),
        ("`clip_norm:`", spec.clip_norm.is_some()),
        ("`augment:`", spec.augment != nnc_spec::AugmentSpec::NONE),
    ];
    let (what, _) = refused.iter().find(|(_, on)| *on)?;
    Some(
        Diagnostic::new(
            ErrorKind::Invalid,
            first.span,
            format!("`split:` cannot be combined with {what} yet"),
        )
        .with_label("split layers with a setting the split driver does not handle")
        .with_help("drop that setting, or the split"),
    )
}

/// The split networks' names must not be taken by a network of the file.
pub fn check_names(
    cfg: &TrainConfig,
    network_at: impl Fn(&str) -> Option<Span>,
) -> Option<Diagnostic> {
    let first = cfg.split.first()?;
    [shard_name(&cfg.network), tail_name(&cfg.network)]
        .into_iter()
        .find_map(|name| {
            let taken = network_at(&name)?;
            Some(
                Diagnostic::new(
                    ErrorKind::DuplicateName,
                    first.span,
                    format!(
                        "`split:` names a part of `{}` `{name}`, which another network already is",
                        cfg.network
                    ),
                )
                .with_label("split networks are named `<Name>Shard` and `<Name>Tail`")
                .with_note(taken, format!("network `{name}`"))
                .with_help("rename that network"),
            )
        })
}

/// A split layer's dense parts in the graph.
struct Dense {
    weight: NodeId,
    bias: Option<NodeId>,
    matmul: NodeId,
    /// `[in, out]`.
    dims: [usize; 2],
}

fn error(span: Span, msg: String, label: &str) -> Diagnostic {
    Diagnostic::new(ErrorKind::Invalid, span, msg).with_label(label.to_string())
}

/// The dense layer `layer` names: its `{binding}.weight` read by one
/// matrix product as the right operand, and its `{binding}.bias`.
fn dense(net: &Network, layer: &SplitLayer) -> Result<Dense, Diagnostic> {
    let g = &net.graph;
    let b = &layer.binding;
    if !g
        .ids()
        .any(|id| g.node(id).name.as_deref() == Some(b.as_str()))
    {
        let mut d = Diagnostic::new(
            ErrorKind::UnknownName,
            layer.span,
            format!(
                "`split:` names `{b}`, which network `{}` does not bind",
                net.name
            ),
        )
        .with_label("no such binding");
        let names = g.ids().filter_map(|id| g.node(id).name.as_deref());
        if let Some(s) = suggest(b, names) {
            d = d.with_help(format!("did you mean `{s}`?"));
        }
        return Err(d);
    }
    let param = |suffix: &str| {
        net.params
            .iter()
            .find(|p| p.name == format!("{b}.{suffix}"))
    };
    let not_dense = || {
        error(
            layer.span,
            format!("`{b}` is not a `dense` layer: only dense layers can be split"),
            "not a dense layer",
        )
    };
    let w = param("weight").ok_or_else(not_dense)?;
    let dims = match w.shape.dims() {
        [Dim::Fixed(i), Dim::Fixed(o)] => [*i, *o],
        _ => return Err(not_dense()),
    };
    let users = g.users(w.node);
    let matmul = match users.as_slice() {
        [m] if matches!(g.node(*m).op, Op::Matmul(_)) && g.operands(*m)[1] == w.node => *m,
        _ => return Err(not_dense()),
    };
    Ok(Dense {
        weight: w.node,
        bias: param("bias").map(|p| p.node),
        matmul,
        dims,
    })
}

/// Every node reachable from `from` along users, `from` included.
fn descendants(g: &Graph, from: NodeId) -> BTreeSet<usize> {
    let mut seen = BTreeSet::from([from.index()]);
    let mut todo = vec![from];
    while let Some(id) = todo.pop() {
        for u in g.users(id) {
            if seen.insert(u.index()) {
                todo.push(u);
            }
        }
    }
    seen
}

/// Checks `split:` against `net` and builds its shard and tail; `None`
/// without `split:`. Every mistake is a diagnostic at the `split:` entry
/// concerned.
pub fn split(net: &Network, cfg: &TrainConfig) -> Result<Option<Split>, Vec<Diagnostic>> {
    let layers = &cfg.split;
    let Some(first) = layers.first() else {
        return Ok(None);
    };
    let ranks = cfg.split_ranks;
    let (a, b) = match layers.as_slice() {
        [a, b] if a.kind == SplitKind::Columns && b.kind == SplitKind::Rows => (a, b),
        _ => {
            return Err(vec![error(
                first.span,
                "`split:` supports one `columns(..)` layer followed by one `rows(..)` layer \
                 for now (the Megatron pair: `[columns(h1), rows(h2)]`)"
                    .into(),
                "unsupported split layout",
            )])
        }
    };
    if net.is_modal() {
        return Err(vec![error(
            first.span,
            format!(
                "`split:` cannot split `{}` yet: it uses dropout or batch norm",
                net.name
            ),
            "split layers of a modal network",
        )]);
    }
    let (da, db) = match (dense(net, a), dense(net, b)) {
        (Ok(da), Ok(db)) => (da, db),
        (ea, eb) => return Err(ea.err().into_iter().chain(eb.err()).collect()),
    };
    let g = &net.graph;
    let n = da.dims[1];
    if n % ranks != 0 {
        return Err(vec![error(
            a.span,
            format!(
                "`{}` has {n} units, which {ranks} ranks (`split_ranks:`) cannot share \
                 equally",
                a.binding
            ),
            "width not divisible by the ranks",
        )
        .with_note(g.node(da.weight).span, "the layer")]);
    }
    // Between the two products only column-wise elementwise work: the
    // sharded activation must neither be read whole nor leave the pair.
    let x = g.operands(da.matmul)[0];
    let lhs = g.operands(db.matmul)[0];
    let below = descendants(g, da.matmul);
    if !below.contains(&lhs.index()) {
        return Err(vec![error(
            b.span,
            format!(
                "`{}` does not read `{}`: a `rows` layer must follow its `columns` layer",
                b.binding, a.binding
            ),
            "not fed by the columns layer",
        )]);
    }
    let path: BTreeSet<usize> = g.ancestors(&[lhs]).intersection(&below).copied().collect();
    for &i in &path {
        let id = NodeId::new(i);
        let node = g.node(id);
        let local = id == da.matmul
            || match node.op {
                Op::Unary(_) => true,
                Op::Binary(_) => g.operands(id).iter().all(|&o| {
                    path.contains(&o.index())
                        || Some(o) == da.bias
                        || matches!(g.node(o).op, Op::Leaf(LeafOp::Constant { .. }))
                }),
                _ => false,
            };
        if !local {
            return Err(vec![error(
                b.span,
                format!(
                    "between `{}` and `{}` only elementwise operations may run, each column \
                     on its own; `{}` does not",
                    a.binding, b.binding, node.op
                ),
                "not a column-wise split pair",
            )
            .with_note(node.span, "this operation")]);
        }
        for u in g.users(id) {
            if !path.contains(&u.index()) && u != db.matmul {
                return Err(vec![error(
                    a.span,
                    format!(
                        "the output of `{}` is read outside the split pair, which would need \
                         it whole on every rank (an all-gather): not supported yet",
                        a.binding
                    ),
                    "sharded activation leaves the pair",
                )
                .with_note(g.node(u).span, "read here")]);
            }
        }
    }
    if let Some(p) = g
        .ancestors(&[x])
        .into_iter()
        .map(NodeId::new)
        .find(|&p| matches!(g.node(p).op, Op::Leaf(LeafOp::Param { .. })))
    {
        return Err(vec![error(
            a.span,
            format!(
                "layers with parameters before the `columns` layer `{}` are not supported \
                 yet: their gradient would need an all-reduce",
                a.binding
            ),
            "parameters before the split pair",
        )
        .with_note(g.node(p).span, "a parameter before it")]);
    }
    let partial = partial_name(&b.binding);
    if let Some(clash) = g
        .ids()
        .find(|&id| g.node(id).name.as_deref() == Some(partial.as_str()))
        .map(|id| g.node(id).span)
        .or_else(|| {
            net.inputs
                .iter()
                .find(|i| i.name == partial)
                .map(|i| i.span)
        })
    {
        return Err(vec![Diagnostic::new(
            ErrorKind::DuplicateName,
            b.span,
            format!("the split names its partial sum `{partial}`, which the network already binds"),
        )
        .with_label("name of the partial sum taken")
        .with_note(clash, "bound here")]);
    }
    let slice = n / ranks;
    let mut sliced = HashMap::from([
        (da.weight.index(), Shape::fixed(&[da.dims[0], slice])),
        (db.weight.index(), Shape::fixed(&[slice, db.dims[1]])),
    ]);
    if let Some(bias) = da.bias {
        sliced.insert(bias.index(), Shape::fixed(&[slice]));
    }
    let whole = slice_network(net, &sliced, db.matmul, &partial)?;
    let mut parts = super::stages::split(&whole, &[(partial.clone(), b.span)])?;
    let (Some(mut tail), Some(mut shard)) = (parts.pop(), parts.pop()) else {
        return Err(vec![Diagnostic::new(
            ErrorKind::Internal,
            b.span,
            "the split did not give two parts".to_string(),
        )]);
    };
    shard.name = shard_name(&net.name);
    tail.name = tail_name(&net.name);
    Ok(Some(Split {
        shard,
        tail,
        partial,
    }))
}

/// `net` with the parameters of `sliced` given their slice's shape (every
/// type re-inferred) and `cut` named `name`.
fn slice_network(
    net: &Network,
    sliced: &HashMap<usize, Shape>,
    cut: NodeId,
    name: &str,
) -> Result<Network, Vec<Diagnostic>> {
    let g = &net.graph;
    let mut graph = Graph::new();
    let mut map: HashMap<usize, NodeId> = HashMap::new();
    for id in g.ids() {
        let node = g.node(id);
        let op = match (&node.op, sliced.get(&id.index())) {
            (Op::Leaf(LeafOp::Param { name, .. }), Some(shape)) => Op::Leaf(LeafOp::Param {
                name: name.clone(),
                shape: shape.clone(),
            }),
            (op, _) => op.clone(),
        };
        let operands: Vec<NodeId> = g.operands(id).iter().map(|o| map[&o.index()]).collect();
        let new = graph.add(op, &operands, node.span).map_err(|e| {
            vec![Diagnostic::new(
                ErrorKind::Internal,
                node.span,
                format!("slicing the split layers: {}", e.message),
            )]
        })?;
        if let Some(n) = &node.name {
            graph.set_name(new, n);
        }
        map.insert(id.index(), new);
    }
    graph.set_name(map[&cut.index()], name);
    let at = |id: NodeId| map[&id.index()];
    let mut out = net.clone();
    out.graph = graph;
    for i in &mut out.inputs {
        i.node = at(i.node);
    }
    for p in &mut out.params {
        if let Some(shape) = sliced.get(&p.node.index()) {
            p.shape = shape.clone();
        }
        p.node = at(p.node);
    }
    for o in &mut out.outputs {
        o.node = at(o.node);
    }
    out.loss = at(out.loss);
    out.loss_decl.scores = out.loss_decl.scores.map(at);
    Ok(out)
}
