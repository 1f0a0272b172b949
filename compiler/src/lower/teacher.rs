//! `teacher: lenet("lenet.safetensors");`: a teacher network's forward
//! pass compiled into its student's training step. The teacher (another
//! network of the same file) is taken in its inference form (dropout the
//! identity, batch norm reading running statistics), and the part of its
//! graph that computes its loss's prediction (its logits) is spliced into
//! the student's graph in place of the student's `input teacher`, before
//! autodiff. The teacher's parameters and state become `LeafOp::Frozen`
//! leaves: read from the weights file by generated code, never
//! differentiated, trained or saved with the student. Its inputs are the
//! student's inputs of the same names and types.

use super::args::suggest;
use super::loss_kind;
use crate::diagnostic::{Diagnostic, ErrorKind};
use crate::graph::{Graph, NodeId};
use crate::ir::{FrozenDecl, InputKind, Network, TeacherSource, TrainConfig};
use crate::ops::{LeafOp, Op};
use std::collections::HashMap;

/// The student's input the teacher's logits replace.
pub const TEACHER_INPUT: &str = "teacher";

/// Splices every `teacher:` of `trains` into its student in `networks`.
/// `names` are every network the file defines (one that failed to lower is
/// known but absent from `networks`: its errors are already reported).
pub(super) fn splice_teachers(
    networks: &mut [Network],
    trains: &[TrainConfig],
    names: &[&str],
    errors: &mut Vec<Diagnostic>,
) {
    for cfg in trains {
        let Some(t) = &cfg.teacher else { continue };
        if !names.contains(&t.network.as_str()) {
            let mut d = Diagnostic::new(
                ErrorKind::UnknownName,
                t.name_span,
                format!("teacher `{}` names no network in this file", t.network),
            )
            .with_label("unknown network");
            if let Some(s) = suggest(&t.network, names.iter().copied()) {
                d = d.with_help(format!("did you mean `{s}`?"));
            }
            errors.push(d);
            continue;
        }
        if t.network == cfg.network {
            errors.push(
                Diagnostic::new(
                    ErrorKind::Invalid,
                    t.name_span,
                    format!("network `{}` cannot be its own teacher", t.network),
                )
                .with_label("the student itself"),
            );
            continue;
        }
        let Some(teacher) = networks.iter().find(|n| n.name == t.network) else {
            continue;
        };
        let teacher = match teacher.for_inference() {
            Ok(n) => n,
            Err(d) => {
                errors.push(d);
                continue;
            }
        };
        let Some(student) = networks.iter_mut().find(|n| n.name == cfg.network) else {
            continue;
        };
        match splice(student, &teacher, t) {
            Ok(net) => *student = net,
            Err(d) => errors.push(d),
        }
    }
}

fn internal(t: &TeacherSource, message: String) -> Diagnostic {
    Diagnostic::new(ErrorKind::Internal, t.span, message)
}

/// The student with the teacher's logits in place of its `input teacher`.
fn splice(student: &Network, teacher: &Network, t: &TeacherSource) -> Result<Network, Diagnostic> {
    let Some(logits) = teacher.loss_decl.scores else {
        return Err(Diagnostic::new(
            ErrorKind::Invalid,
            t.name_span,
            format!(
                "teacher `{}` has no logits: its loss scores no single prediction",
                t.network
            ),
        )
        .with_label("not a classifier or regression")
        .with_note(teacher.span, "the teacher network")
        .with_help("a teacher's loss is `cross_entropy(logits, labels)` or the like; its first operand is what the student learns from"));
    };
    let Some(slot) = student
        .inputs
        .iter()
        .find(|i| i.name == TEACHER_INPUT && i.kind == InputKind::Features)
    else {
        return Err(Diagnostic::new(
            ErrorKind::Invalid,
            t.span,
            format!(
                "the teacher's logits feed the student's input `{TEACHER_INPUT}`, which `{}` does not declare",
                student.name
            ),
        )
        .with_label("no input to replace")
        .with_note(student.span, "the student network")
        .with_help(format!(
            "declare `input {TEACHER_INPUT}: {};` and pass it to `distill`",
            teacher.graph.ty(logits)
        )));
    };
    let out_ty = teacher.graph.ty(logits);
    if *out_ty != slot.ty {
        return Err(Diagnostic::new(
            ErrorKind::ShapeMismatch,
            t.span,
            format!(
                "teacher `{}` outputs {out_ty}, but the student's input `{TEACHER_INPUT}` is {}",
                t.network, slot.ty
            ),
        )
        .with_label(format!("logits of {out_ty}"))
        .with_note(slot.span, format!("declared {} here", slot.ty))
        .with_help("the teacher must score the same classes as the student"));
    }
    let needed = teacher.graph.ancestors(&[logits]);
    let sg = &student.graph;
    let mut new = Graph::new();
    let mut smap: HashMap<usize, NodeId> = HashMap::new();
    let add = |new: &mut Graph, op: Op, operands: &[NodeId], from: &Graph, id: NodeId| {
        let n = new
            .add(op, operands, from.node(id).span)
            .map_err(|e| internal(t, format!("splicing the teacher: {}", e.message)))?;
        if let Some(name) = &from.node(id).name {
            new.set_name(n, name);
        }
        Ok::<NodeId, Diagnostic>(n)
    };
    // The student's leaves first (they have no operands), so the teacher's
    // inputs can read them wherever they were declared.
    for id in sg.ids() {
        if id != slot.node && matches!(sg.node(id).op, Op::Leaf(_)) {
            let n = add(&mut new, sg.node(id).op.clone(), &[], sg, id)?;
            smap.insert(id.index(), n);
        }
    }
    // Then the teacher's forward pass up to its logits.
    let tg = &teacher.graph;
    let mut tmap: HashMap<usize, NodeId> = HashMap::new();
    let mut frozen = Vec::new();
    for id in tg.ids().filter(|i| needed.contains(&i.index())) {
        let node = tg.node(id);
        let n = match &node.op {
            Op::Leaf(LeafOp::Input { name, .. } | LeafOp::Tokens { name, .. }) => {
                let Some(mine) = student.inputs.iter().find(|i| &i.name == name) else {
                    return Err(Diagnostic::new(
                        ErrorKind::Invalid,
                        t.span,
                        format!(
                            "teacher `{}` reads input `{name}`, which the student `{}` does not declare",
                            t.network, student.name
                        ),
                    )
                    .with_label("the teacher's inputs are the student's, by name")
                    .with_note(node.span, format!("the teacher's input `{name}`")));
                };
                if mine.ty != node.ty {
                    return Err(Diagnostic::new(
                        ErrorKind::ShapeMismatch,
                        t.span,
                        format!(
                            "teacher `{}` reads input `{name}` as {}, the student declares it {}",
                            t.network, node.ty, mine.ty
                        ),
                    )
                    .with_label("the teacher's inputs are the student's, by name")
                    .with_note(node.span, format!("the teacher's input `{name}`"))
                    .with_note(mine.span, format!("the student's input `{name}`")));
                }
                match smap.get(&mine.node.index()) {
                    Some(&n) => n,
                    // The student's `teacher` input is what the teacher's
                    // logits replace: it cannot also feed them.
                    None => {
                        return Err(Diagnostic::new(
                            ErrorKind::Invalid,
                            t.span,
                            format!(
                                "teacher `{}` reads the input `{name}`, which its own logits replace in the student",
                                t.network
                            ),
                        )
                        .with_label("a teacher cannot read the student's `teacher` input")
                        .with_note(node.span, format!("the teacher's input `{name}`")));
                    }
                }
            }
            Op::Leaf(LeafOp::Label { name, .. }) => {
                return Err(Diagnostic::new(
                    ErrorKind::Invalid,
                    t.span,
                    format!(
                        "the logits of teacher `{}` read its labels `{name}`",
                        t.network
                    ),
                )
                .with_label("a teacher must predict without labels")
                .with_note(node.span, "the labels"));
            }
            Op::Leaf(LeafOp::Param { name, shape } | LeafOp::State { name, shape }) => {
                let leaf = format!("{}.{name}", t.network);
                let n = add(
                    &mut new,
                    Op::Leaf(LeafOp::Frozen {
                        name: leaf.clone(),
                        shape: shape.clone(),
                    }),
                    &[],
                    tg,
                    id,
                )?;
                frozen.push(FrozenDecl {
                    name: leaf,
                    tensor: name.clone(),
                    node: n,
                    shape: shape.clone(),
                });
                n
            }
            op => {
                let operands: Vec<NodeId> =
                    tg.operands(id).iter().map(|o| tmap[&o.index()]).collect();
                add(&mut new, op.clone(), &operands, tg, id)?
            }
        };
        tmap.insert(id.index(), n);
    }
    smap.insert(slot.node.index(), tmap[&logits.index()]);
    // Then the student's computation, reading the logits for `teacher`.
    for id in sg.ids() {
        if smap.contains_key(&id.index()) {
            continue;
        }
        let operands: Vec<NodeId> = sg.operands(id).iter().map(|o| smap[&o.index()]).collect();
        let n = add(&mut new, sg.node(id).op.clone(), &operands, sg, id)?;
        smap.insert(id.index(), n);
    }
    let m = |id: NodeId| smap[&id.index()];
    let mut net = student.clone();
    net.graph = new;
    net.inputs.retain(|i| i.node != slot.node);
    for i in &mut net.inputs {
        i.node = m(i.node);
    }
    for p in &mut net.params {
        p.node = m(p.node);
    }
    for o in &mut net.outputs {
        o.node = m(o.node);
    }
    for s in &mut net.states {
        s.node = m(s.node);
        s.update = m(s.update);
    }
    for (node, extra) in &mut net.modal {
        *node = m(*node);
        for e in extra {
            *e = m(*e);
        }
    }
    net.loss = m(net.loss);
    net.loss_decl = loss_kind::loss_decl(&net.graph, net.loss, &net.inputs);
    net.frozen = frozen;
    Ok(net)
}
