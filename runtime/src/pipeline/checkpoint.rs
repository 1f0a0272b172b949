//! A pipeline's sliced checkpoint: each rank writes its stages' slices
//! (parameters and optimizer state), rank 0 the manifest; resume reads
//! them back on the same stage count (any rank count that divides it).
//! The format: [`crate::checkpoint::sliced`].

use std::path::Path;

use super::{Pipeline, PipelineError};
use crate::checkpoint::sliced::{self, check_optimizer, Layout, Manifest, Part};
use crate::optim::OptimizerState;

impl Pipeline<'_, '_> {
    /// The layout this pipeline's checkpoints have.
    pub fn checkpoint_layout(&self) -> Layout {
        Layout::Stages(self.count)
    }

    /// Saves the pipeline into the sliced checkpoint directory `dir`, on
    /// every rank: each local stage's slice (`stage-<s>.safetensors`,
    /// written atomically), then, once every rank has written its slices,
    /// rank 0's manifest with every slice's hash. A directory that holds
    /// another network's or layout's checkpoint is refused. With replicas
    /// (data × pipeline), replica 0 alone writes: the replicas hold the
    /// same parameters only up to the all-reduce's rounding when there are
    /// more than two, and two writers of one file could leave one
    /// replica's manifest beside another's slices.
    pub fn save_checkpoint(&self, dir: &Path) -> Result<(), PipelineError> {
        if self.replicas.rank() == 0 {
            self.write_checkpoint(dir)?;
        }
        // No replica goes on (or reads the checkpoint) before it is whole.
        self.replicas.barrier()?;
        Ok(())
    }

    /// [`Pipeline::save_checkpoint`] on one replica's ranks.
    fn write_checkpoint(&self, dir: &Path) -> Result<(), PipelineError> {
        let layout = self.checkpoint_layout();
        sliced::prepare_dir(dir, &self.family, layout)?;
        let mut hashes = Vec::with_capacity(self.stages.len());
        let mut first: Option<OptimizerState> = None;
        for (i, st) in self.stages.iter().enumerate() {
            let state = st.optimizer.state();
            let part = Part {
                spec: st.model.spec(),
                params: st.model.params(),
                optimizer: &state,
            };
            hashes.push(sliced::write_slice(
                dir,
                &self.family,
                layout,
                self.first + i,
                &[part],
            )?);
            first.get_or_insert(state);
        }
        let mut all = vec![0u64; self.count];
        self.comm.all_gather_u64(&hashes, &mut all)?;
        if self.comm.rank() == 0 {
            let state = first.expect("a rank holds at least one stage");
            sliced::write_manifest(
                dir,
                &Manifest {
                    network: self.family.clone(),
                    layout,
                    step: state.step,
                    optimizer: state.kind,
                    hashes: all,
                },
            )?;
        }
        // No rank reads the checkpoint before its manifest exists.
        self.comm.barrier()?;
        Ok(())
    }

    /// Resumes from the sliced checkpoint in `dir`, on every rank: its
    /// manifest must be this pipeline's network and stage count, and each
    /// local stage's slice that stage's model (name and hash); everything
    /// is checked (file hashes against the manifest, checksums, shapes,
    /// optimizer kind and vectors) before any stage changes.
    pub fn load_checkpoint(&mut self, dir: &Path) -> Result<(), PipelineError> {
        let m = sliced::read_manifest(dir)?;
        m.expect(dir, &self.family, self.checkpoint_layout())?;
        let mut loaded = Vec::with_capacity(self.stages.len());
        for (i, st) in self.stages.iter().enumerate() {
            let s = self.first + i;
            let mut part = sliced::read_slice(dir, &m, s, &[st.model.spec()])?;
            let part = part.pop().expect("one part per stage");
            check_optimizer(dir, &m, s, &st.optimizer.state(), &part.optimizer)?;
            loaded.push(part);
        }
        for (st, part) in self.stages.iter_mut().zip(loaded) {
            st.optimizer.load_state(&part.optimizer)?;
            st.model.params_mut().copy_from_slice(&part.params);
        }
        Ok(())
    }
}
