//! A pipeline's sliced checkpoint: each rank writes its stages' slices
//! (parameters and optimizer state) as a new generation, rank 0 the
//! manifest naming them, then removes the previous generation; resume
//! reads them back on the same stage count (any rank count that divides
//! it). The format: [`crate::checkpoint::sliced`].

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
    /// every rank: each local stage's slice of the new generation `g`
    /// (`stage-<s>.gen-<g>.safetensors`, written atomically), then, once
    /// every rank has written its slices, rank 0's manifest naming them
    /// with their hashes, and only then the previous generation's files
    /// are removed: a save that dies midway leaves the previous checkpoint
    /// whole. A directory that holds
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
        let generation = sliced::prepare_dir(dir, &self.family, layout)?;
        let mut hashes = Vec::with_capacity(self.stages.len() + 1);
        hashes.push(generation);
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
                generation,
                self.first + i,
                &[part],
            )?);
            first.get_or_insert(state);
        }
        let mut all = vec![0u64; hashes.len() * self.comm.size()];
        self.comm.all_gather_u64(&hashes, &mut all)?;
        let (generation, hashes) = sliced::gathered(dir, &all, self.comm.size())?;
        if self.comm.rank() == 0 {
            let state = first.expect("a rank holds at least one stage");
            let m = Manifest {
                network: self.family.clone(),
                layout,
                step: state.step,
                generation,
                optimizer: state.kind,
                hashes,
            };
            sliced::write_manifest(dir, &m)?;
            sliced::remove_unused(dir, &m);
        }
        // No rank reads the checkpoint before its manifest exists.
        self.comm.barrier()?;
        Ok(())
    }

    /// Resumes from the sliced checkpoint in `dir`, on every rank: its
    /// manifest must be this pipeline's network and stage count, and each
    /// local stage's slice that stage's model (name and hash); everything
    /// is checked (file hashes against the manifest, checksums, shapes,
    /// optimizer kind and vectors) before any stage changes. Only the
    /// files the manifest names are read; the leftovers of a save that
    /// died before its manifest are removed (by rank 0 of replica 0).
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
        // Every rank has read its slices before any leftover goes.
        self.comm.barrier()?;
        self.replicas.barrier()?;
        if self.comm.rank() == 0 && self.replicas.rank() == 0 {
            sliced::remove_unused(dir, &m);
        }
        Ok(())
    }
}
