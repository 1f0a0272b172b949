//! Dead-code elimination: only what the roots (loss, gradients, outputs)
//! depend on survives.

use super::{rebuild, Pass, Rewrite};
use crate::diagnostic::Diagnostic;
use crate::ir::TrainingGraph;

/// Removes nodes no root depends on.
pub struct Dce;

impl Pass for Dce {
    fn name(&self) -> &'static str {
        "dce"
    }
    fn run(&self, tg: &mut TrainingGraph) -> Result<bool, Diagnostic> {
        let live = tg.graph.ancestors(&tg.roots());
        if live.len() == tg.graph.len() {
            return Ok(false);
        }
        rebuild(
            tg,
            |id| live.contains(&id.index()),
            |_, node, ops| Ok(Rewrite::Add(node.op.clone(), ops.to_vec())),
        )
    }
}
