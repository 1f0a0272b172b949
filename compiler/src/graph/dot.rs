//! Graphviz rendering of a graph, for `nnc graph --dot`.

use super::Graph;
use std::fmt::Write;

/// Renders `graph` as a Graphviz digraph. Nodes show their op, name and type;
/// nodes at index `backward_from` and after are drawn as the backward pass.
pub fn to_dot(graph: &Graph, title: &str, backward_from: Option<usize>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph \"{}\" {{", escape(title));
    let _ = writeln!(out, "  rankdir=TB;");
    let _ = writeln!(
        out,
        "  node [shape=box, fontname=\"monospace\", fontsize=10];"
    );
    for id in graph.ids() {
        let node = graph.node(id);
        let name = node
            .name
            .as_deref()
            .map(|n| format!("{n} = "))
            .unwrap_or_default();
        let label = format!("{name}{}\\n{}", node.op, node.ty);
        let style = match (&node.op, backward_from) {
            (crate::ops::Op::Leaf(crate::ops::LeafOp::Param { .. }), _) => {
                ", style=filled, fillcolor=\"#fde9c9\""
            }
            (crate::ops::Op::Leaf(_), _) => ", style=filled, fillcolor=\"#dde8f7\"",
            (_, Some(b)) if id.index() >= b => ", style=filled, fillcolor=\"#f2f2f2\"",
            _ => "",
        };
        let _ = writeln!(
            out,
            "  n{} [label=\"{}\"{style}];",
            id.index(),
            escape(&label)
        );
    }
    for id in graph.ids() {
        for (i, o) in graph.operands(id).iter().enumerate() {
            let _ = writeln!(out, "  n{} -> n{} [label=\"{i}\"];", o.index(), id.index());
        }
    }
    out.push_str("}\n");
    out
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace("\\\\n", "\\n")
}
