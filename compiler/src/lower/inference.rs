//! The inference form of a network: each modal op (dropout, batch norm)
//! replaced in place by its inference form. Lowering builds the training
//! form; the driver asks for this one before any pass runs.

use crate::diagnostic::{Diagnostic, ErrorKind};
use crate::ir::Network;
use crate::ops::Op;

impl Network {
    /// The network in inference mode: every modal node replaced in place
    /// by its inference form (dropout the identity, batch norm reading its
    /// running statistics). Node indices are unchanged, so the declarations
    /// stay valid. This runs before any optimisation: the passes then see
    /// two ordinary graphs.
    pub fn for_inference(&self) -> Result<Network, Diagnostic> {
        let mut net = self.clone();
        for (node, extra) in &self.modal {
            let n = net.graph.node(*node).clone();
            let Op::Norm(op) = n.op else {
                return Err(Diagnostic::new(
                    ErrorKind::Internal,
                    n.span,
                    format!("node {} ({}) is not a modal op", node.index(), n.op),
                ));
            };
            let Some(inf) = op.inference() else {
                continue;
            };
            let mut operands = vec![net.graph.operands(*node)[0]];
            operands.extend(extra);
            net.graph
                .replace(*node, Op::Norm(inf), &operands)
                .map_err(|e| Diagnostic::new(ErrorKind::Internal, n.span, e.message))?;
        }
        net.inference = true;
        Ok(net)
    }
}
