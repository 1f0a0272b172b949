//! Pipeline parallelism (issue #24, first increment): a network cut into
//! stages by `stages:` in its `train` block, each stage a generated model
//! of its own (`<Name>Stage<s>`, see the compiler's `lower::stages`), one
//! stage per rank, activations sent forward and their gradients back over
//! point-to-point messages ([`PointToPoint`]: MPI, or nothing on one
//! process, which then holds every stage).
//!
//! One training step cuts the global batch into micro-batches and runs a
//! [`Schedule`]: 1F1B (the default: a few forwards, then one forward and
//! one backward in turn) or GPipe (every micro-batch forward through the
//! stages, then every micro-batch backward). A stage keeps only its
//! *incoming* activation of each micro-batch in flight; its backward
//! recomputes its forward
//! (`train_step_backprop` is a whole training step of the stage network:
//! GPipe's re-materialisation). The last stage runs forward and backward
//! of a micro-batch at once and weighs its loss by the micro-batch's share
//! of the batch, so the gradients sent back, and summed over micro-batches
//! on every stage, are those of the whole batch's mean loss. Each rank holds
//! its stage's parameters, gradients and optimizer state only.
//!
//! Hybrid data × pipeline parallelism ([`Pipeline::replicated`]): the
//! pipeline replicated `K` times, each replica on its share of the global
//! batch, the stages' gradients all-reduced within each stage's group of
//! ranks (one per replica) before the optimizer step; with MPI the job is
//! split into both kinds of group (`Mpi::split`).
//!
//! Numerics: one process running every stage computes the same values as
//! the ranks of a pipeline bit for bit (same kernels, same order of the
//! micro-batch sums); against the unstaged network on the whole batch they
//! agree to float precision (the batch's sums are split by micro-batch).
//! Two replicas equal two replicas run as threads of one process
//! ([`crate::collective::Threads`]) bit for bit: each sums its own
//! micro-batches in order and the all-reduce adds the two sums, which is
//! exact in either order; with more replicas the order of MPI's sum is the
//! library's.

mod checkpoint;
#[cfg(feature = "mpi")]
mod mpi;
mod report;
mod schedule;
mod stage;

pub use report::{peak_rss_bytes, PipelineReport};
pub use schedule::{plan, Action, Schedule};
pub use stage::init_stage;

use crate::collective::{fnv1a, Collective, CollectiveError, Local, Threads, Value};
use crate::model::{Model, StepError};
use crate::optim::OptimError;
use stage::Stage;
use thiserror::Error;

/// Why a pipeline could not be set up or step.
#[derive(Debug, Error)]
pub enum PipelineError {
    /// A collective (the start-up check) failed.
    #[error(transparent)]
    Collective(#[from] CollectiveError),
    /// A stage's training step failed.
    #[error("stage {stage}")]
    Step {
        /// The stage.
        stage: usize,
        /// Why.
        #[source]
        source: StepError,
    },
    /// The optimizer rejected its configuration or a step.
    #[error(transparent)]
    Optim(#[from] OptimError),
    /// The stages given do not make a pipeline on these ranks.
    #[error("pipeline layout: {0}")]
    Layout(String),
    /// The ranks run different pipelines.
    #[error("pipeline layout differs on rank {rank}: {what}")]
    Disagree {
        /// The rank that differs.
        rank: usize,
        /// How.
        what: String,
    },
    /// A `train` setting the pipeline does not implement yet.
    #[error("pipeline training does not support {0} yet")]
    Unsupported(&'static str),
    /// The batch does not provide a stage's input.
    #[error("no data for input `{0}` of the pipeline")]
    MissingInput(String),
    /// A stage's parameters could not be initialised.
    #[error(transparent)]
    Init(#[from] crate::init::InitError),
    /// A sliced checkpoint could not be written or read.
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    /// A point-to-point message could not be sent or received.
    #[error("message {what} rank {peer}: {why}")]
    Message {
        /// "to" or "from".
        what: &'static str,
        /// The other rank.
        peer: usize,
        /// Why.
        why: String,
    },
}

/// Ranks that exchange point-to-point messages besides collectives: sends
/// and receives of f32 buffers between two ranks, matched in order.
pub trait PointToPoint: Collective {
    /// Sends `data` to rank `to` (returns once the buffer may be reused).
    fn send(&self, to: usize, data: &[f32]) -> Result<(), PipelineError>;
    /// Receives exactly `data.len()` values from rank `from`.
    fn recv(&self, from: usize, data: &mut [f32]) -> Result<(), PipelineError>;
    /// Sends `data` to rank `to` and receives `into` from rank `from` with
    /// both in flight at once (so two neighbours that send each other a
    /// message at the same point of their schedules do not wait for each
    /// other: 1F1B's steady state). By default the send, then the receive.
    fn exchange(
        &self,
        to: usize,
        data: &[f32],
        from: usize,
        into: &mut [f32],
    ) -> Result<(), PipelineError> {
        self.send(to, data)?;
        self.recv(from, into)
    }
}

/// One process holds every stage: nothing is ever sent.
impl PointToPoint for Local {
    fn send(&self, to: usize, _data: &[f32]) -> Result<(), PipelineError> {
        Err(PipelineError::Message {
            what: "to",
            peer: to,
            why: "a single process has no other rank".into(),
        })
    }
    fn recv(&self, from: usize, _data: &mut [f32]) -> Result<(), PipelineError> {
        Err(PipelineError::Message {
            what: "from",
            peer: from,
            why: "a single process has no other rank".into(),
        })
    }
}

/// Ranks that are threads of one process exchange messages through shared
/// memory (tests, and one-process references of multi-rank layouts).
impl PointToPoint for Threads {
    fn send(&self, to: usize, data: &[f32]) -> Result<(), PipelineError> {
        if to >= self.size() || to == self.rank() {
            return Err(PipelineError::Message {
                what: "to",
                peer: to,
                why: format!("no such peer in a group of {}", self.size()),
            });
        }
        self.post(to, data);
        Ok(())
    }
    fn recv(&self, from: usize, data: &mut [f32]) -> Result<(), PipelineError> {
        if from >= self.size() || from == self.rank() {
            return Err(PipelineError::Message {
                what: "from",
                peer: from,
                why: format!("no such peer in a group of {}", self.size()),
            });
        }
        let got = self.take(from);
        if got.len() != data.len() {
            return Err(PipelineError::Message {
                what: "from",
                peer: from,
                why: format!("{} values, {} expected", got.len(), data.len()),
            });
        }
        data.copy_from_slice(&got);
        Ok(())
    }
}

/// A pipelined training run on this rank: its stages (every stage on one
/// process, one stage per rank otherwise), a [`Schedule`] over
/// `micro_batches` micro-batches.
pub struct Pipeline<'m, 'c> {
    comm: &'c dyn PointToPoint,
    /// The ranks holding this rank's stages in every replica of the
    /// pipeline (hybrid data × pipeline parallelism; [`Local`] without).
    replicas: &'c dyn Collective,
    /// The local stages' gradients and the loss, all-reduced across
    /// replicas once a step (empty without replicas).
    reduce: Vec<f32>,
    stages: Vec<Stage<'m>>,
    /// Index of this rank's first stage.
    first: usize,
    count: usize,
    micro: usize,
    schedule: Schedule,
    report: PipelineReport,
    /// The pipelined network's name (`MnistPipeline` of `MnistPipelineStage0`).
    family: String,
}

impl<'m, 'c> Pipeline<'m, 'c> {
    /// Sets up rank `comm.rank()`'s part of a pipeline of `count` stages:
    /// `local` is every stage (in order) on a single process, or, on `R`
    /// ranks, the `count / R` consecutive stages from `rank × count / R`
    /// (stage `rank` when there is one rank per stage). Checks on every rank that
    /// all ranks run the same pipeline (network, the layout hash of every
    /// stage's parameters and graph, [`Model::layout_hash`], stage count,
    /// micro-batches, activation widths between neighbours), naming the
    /// first rank that differs. Runs the default schedule, 1F1B.
    pub fn new(
        local: Vec<&'m mut dyn Model>,
        count: usize,
        micro_batches: usize,
        comm: &'c dyn PointToPoint,
    ) -> Result<Self, PipelineError> {
        Self::with_schedule(local, count, micro_batches, Schedule::default(), comm)
    }

    /// [`Pipeline::new`] with the given schedule (which the ranks must
    /// agree on too).
    pub fn with_schedule(
        local: Vec<&'m mut dyn Model>,
        count: usize,
        micro_batches: usize,
        schedule: Schedule,
        comm: &'c dyn PointToPoint,
    ) -> Result<Self, PipelineError> {
        Self::replicated(local, count, micro_batches, schedule, comm, &Local)
    }

    /// One replica's part of a pipeline replicated `replicas.size()` times
    /// (hybrid data × pipeline parallelism, e.g. 2 × 2 ranks): `comm` is
    /// this replica's ranks, the chain its activations and gradients pass
    /// along, laid out as for [`Pipeline::with_schedule`]; `replicas` is
    /// the group of ranks holding this rank's stages in every replica (one
    /// per replica, in replica order). Replica `k` of `K` trains on the
    /// `k`-th contiguous share of every global batch
    /// ([`micro_ranges`]`(batch, K)`), in `micro_batches` micro-batches of
    /// it; one all-reduce within `replicas` a step sums the stages'
    /// gradients (and the loss) before every replica takes the same
    /// optimizer step. The replicas start from replica 0's parameters
    /// (broadcast). Both groups check that their ranks agree.
    pub fn replicated(
        local: Vec<&'m mut dyn Model>,
        count: usize,
        micro_batches: usize,
        schedule: Schedule,
        comm: &'c dyn PointToPoint,
        replicas: &'c dyn Collective,
    ) -> Result<Self, PipelineError> {
        let (rank, size) = (comm.rank(), comm.size());
        if count < 2 {
            return Err(PipelineError::Layout(format!(
                "{count} stage(s): a pipeline has at least 2"
            )));
        }
        // Each rank holds the same number of consecutive stages.
        let first = match size {
            n if n <= count && count % n == 0 && local.len() == count / n => rank * local.len(),
            _ => {
                return Err(PipelineError::Layout(format!(
                    "{} stage(s) on rank {rank} of {size}, for a pipeline of {count}: one \
                     process holds every stage, or each rank the same number of \
                     consecutive stages",
                    local.len()
                )))
            }
        };
        if micro_batches == 0 {
            return Err(PipelineError::Layout("0 micro-batches".into()));
        }
        let mut stages = Vec::with_capacity(local.len());
        let mut family = None;
        for (i, model) in local.into_iter().enumerate() {
            let s = first + i;
            let stage = Stage::new(model, s, count)?;
            let name = stage.model.spec().name.to_string();
            let base = name
                .strip_suffix(&format!("Stage{s}"))
                .ok_or_else(|| {
                    PipelineError::Layout(format!("model `{name}` is not stage {s} of a pipeline"))
                })?
                .to_string();
            if family.get_or_insert_with(|| base.clone()) != &base {
                return Err(PipelineError::Layout(format!(
                    "stage {s} is `{name}`, not a stage of `{}`",
                    family.unwrap_or_default()
                )));
            }
            stages.push(stage);
        }
        let family = family.unwrap_or_default();
        // Every stage of one pipeline carries the hash of the same layout.
        let layout = stages[0].model.layout_hash();
        if let Some(st) = stages.iter().find(|st| st.model.layout_hash() != layout) {
            return Err(PipelineError::Layout(format!(
                "`{}` and `{}` are stages of differently compiled pipelines (layout hashes \
                 {layout:016x} and {:016x})",
                stages[0].model.spec().name,
                st.model.spec().name,
                st.model.layout_hash()
            )));
        }
        // The same pipeline everywhere: network, its layout (every stage's
        // parameters and graph), stages, micro-batches.
        comm.check_agreement(&[
            ("pipelined network", Value::Hash(fnv1a(family.bytes()))),
            ("stage layout hash", Value::Hash(layout)),
            ("stage count", Value::Count(count as u64)),
            ("micro-batches", Value::Count(micro_batches as u64)),
            ("schedule", Value::Count(schedule.id())),
        ])?;
        if size > 1 {
            // Neighbours agree on the activation between them.
            let (head, tail) = (&stages[0], &stages[stages.len() - 1]);
            let mine = [head.in_width as u64, tail.out_width as u64];
            let mut all = vec![0u64; 2 * size];
            comm.all_gather_u64(&mine, &mut all)?;
            for r in 1..size {
                let (sent, got) = (all[2 * (r - 1) + 1], all[2 * r]);
                if sent != got {
                    return Err(PipelineError::Disagree {
                        rank: comm.job_rank(r),
                        what: format!(
                            "its stage takes {got} values a sample, rank {} sends {sent}",
                            comm.job_rank(r - 1)
                        ),
                    });
                }
            }
        }
        let reduce = if replicas.size() > 1 {
            // The same stages in every replica, and the same start.
            replicas.check_agreement(&[
                ("pipelined network", Value::Hash(fnv1a(family.bytes()))),
                ("stage layout hash", Value::Hash(layout)),
                ("first stage", Value::Count(first as u64)),
                ("stages held", Value::Count(stages.len() as u64)),
                ("micro-batches", Value::Count(micro_batches as u64)),
                ("schedule", Value::Count(schedule.id())),
            ])?;
            for st in &mut stages {
                replicas.broadcast(st.model.params_mut(), 0)?;
            }
            let n: usize = stages.iter().map(|st| st.acc.len()).sum();
            vec![0.0; n + 1]
        } else {
            Vec::new()
        };
        let bubble = (count - 1) as f64 / (micro_batches + count - 1) as f64;
        let state_bytes = stages
            .iter()
            .map(|st| {
                let opt: usize = st
                    .optimizer
                    .state()
                    .tensors
                    .iter()
                    .map(|(_, t)| t.len())
                    .sum();
                // The model's gradient buffer is allocated on its first
                // step: counted by the spec, as it will be.
                let n = st.model.spec().param_count;
                4 * (2 * n + st.acc.len() + opt) as u64
            })
            .sum();
        Ok(Pipeline {
            comm,
            replicas,
            reduce,
            stages,
            first,
            count,
            micro: micro_batches,
            schedule,
            family,
            report: PipelineReport {
                stages: count,
                micro_batches,
                schedule,
                bubble,
                bytes_per_step: 0,
                bytes_sent_by_rank: 0,
                peak_stash_bytes: 0,
                state_bytes,
                replicas: replicas.size(),
                bytes_all_reduced: 0,
                peak_rss_bytes: None,
            },
        })
    }

    /// The cost of the last step (bubble, bytes, memory), with the
    /// process's peak resident set so far.
    pub fn report(&self) -> PipelineReport {
        PipelineReport {
            peak_rss_bytes: peak_rss_bytes(),
            ..self.report
        }
    }

    /// The local stages' models, in stage order.
    pub fn models(&self) -> Vec<&dyn Model> {
        self.stages
            .iter()
            .map(|s| &*s.model as &dyn Model)
            .collect()
    }

    /// Index of this rank's first stage.
    pub fn first_stage(&self) -> usize {
        self.first
    }

    /// One training step on a global batch of `batch` samples: every rank
    /// passes the same batch (`inputs` and `labels` by name, whole-batch
    /// slices; each stage reads what it declares), the schedule runs, and
    /// every local stage takes one optimizer step at rate `lr`. Returns the
    /// batch's mean loss on the rank holding the last stage, `None`
    /// elsewhere.
    pub fn step(
        &mut self,
        inputs: &[(&str, &[f32])],
        labels: &[(&str, &[u32])],
        batch: usize,
        lr: f32,
    ) -> Result<Option<f32>, PipelineError> {
        // This replica's share of the batch, cut into micro-batches.
        let (k, replicas) = (self.replicas.rank(), self.replicas.size());
        if batch < replicas {
            return Err(PipelineError::Layout(format!(
                "a batch of {batch} cannot be shared by {replicas} replicas"
            )));
        }
        let share = micro_ranges(batch, replicas)[k].clone();
        let ranges: Vec<_> = micro_ranges(share.len(), self.micro)
            .into_iter()
            .map(|r| share.start + r.start..share.start + r.end)
            .collect();
        let mut run = Run {
            ranges: &ranges,
            inputs,
            labels,
            batch,
            loss: 0.0,
            report: PipelineReport {
                bytes_per_step: 0,
                bytes_sent_by_rank: 0,
                peak_stash_bytes: 0,
                bytes_all_reduced: 0,
                ..self.report
            },
        };
        for st in &mut self.stages {
            st.acc.iter_mut().for_each(|g| *g = 0.0);
            for buf in [&mut st.act_in, &mut st.grad_in, &mut st.g_out] {
                buf.clear();
                buf.resize(ranges.len(), Vec::new());
            }
        }
        // Each local stage walks its plan; a stage whose next action waits
        // for another local stage's output yields to it (one process
        // holding every stage runs them interleaved as ranks would). A
        // remote neighbour's message is waited for where it is needed.
        let plans: Vec<Vec<Action>> = (0..self.stages.len())
            .map(|i| plan(self.schedule, self.first + i, self.count, ranges.len()))
            .collect();
        let mut next = vec![0usize; plans.len()];
        loop {
            let mut progressed = false;
            for i in 0..plans.len() {
                while let Some(&action) = plans[i].get(next[i]) {
                    if !self.ready(i, action) {
                        break;
                    }
                    let after = plans[i].get(next[i] + 1).copied();
                    self.act(i, action, after, &mut run)?;
                    next[i] += 1;
                    progressed = true;
                    let held = self.held_bytes();
                    run.report.peak_stash_bytes = run.report.peak_stash_bytes.max(held);
                }
            }
            if next.iter().zip(&plans).all(|(k, p)| *k == p.len()) {
                break;
            }
            if !progressed {
                return Err(PipelineError::Layout(format!(
                    "the {} schedule stalled (a bug)",
                    self.schedule.name()
                )));
            }
        }
        if !self.reduce.is_empty() {
            // Every replica's gradients (weighted by its share of the
            // global batch) and loss, summed: the whole batch's.
            let mut at = 0;
            for st in &self.stages {
                self.reduce[at..at + st.acc.len()].copy_from_slice(&st.acc);
                at += st.acc.len();
            }
            self.reduce[at] = run.loss;
            self.replicas.all_reduce_sum(&mut self.reduce)?;
            at = 0;
            for st in &mut self.stages {
                let n = st.acc.len();
                st.acc.copy_from_slice(&self.reduce[at..at + n]);
                at += n;
            }
            run.loss = self.reduce[at];
            run.report.bytes_all_reduced = 4 * self.reduce.len() as u64;
        }
        for st in &mut self.stages {
            let Stage {
                model,
                optimizer,
                acc,
                ..
            } = st;
            optimizer.step(model.params_mut(), acc, lr)?;
        }
        self.report = run.report;
        let holds_last = self.first + self.stages.len() == self.count;
        Ok(holds_last.then_some(run.loss))
    }

    /// Can local stage `i` run `action` now? Not if it needs the output of
    /// a local stage that has not produced it yet (a remote neighbour's
    /// message is waited for instead).
    fn ready(&self, i: usize, action: Action) -> bool {
        match action {
            Action::Forward(m) => i == 0 || !self.stages[i].act_in[m].is_empty(),
            Action::Backward(m) => {
                i + 1 == self.stages.len() || !self.stages[i + 1].grad_in[m].is_empty()
            }
        }
    }

    /// The rank holding stage `s` (each rank holds as many as this one).
    fn rank_of(&self, s: usize) -> usize {
        s / self.stages.len()
    }

    /// Bytes of activations and gradients the local stages hold.
    fn held_bytes(&self) -> u64 {
        let held: usize = self
            .stages
            .iter()
            .flat_map(|st| st.act_in.iter().chain(&st.grad_in).chain(&st.g_out))
            .map(Vec::len)
            .sum();
        4 * held as u64
    }

    /// Local stage `i` runs `action`, receiving what it needs from a remote
    /// neighbour first and passing on what it produced; `after` is its next
    /// action, whose message from the same neighbour is exchanged together
    /// with this one's (1F1B's neighbours send each other at once).
    fn act(
        &mut self,
        i: usize,
        action: Action,
        after: Option<Action>,
        run: &mut Run<'_, '_>,
    ) -> Result<(), PipelineError> {
        let s = self.first + i;
        let last = self.count - 1;
        let remote_prev = i == 0 && s > 0;
        let remote_next = i + 1 == self.stages.len() && s < last;
        let ranges = run.ranges;
        match action {
            Action::Forward(m) => {
                let r = ranges[m].clone();
                if remote_prev && self.stages[i].act_in[m].is_empty() {
                    let mut act = vec![0.0f32; r.len() * self.stages[i].in_width];
                    self.comm.recv(self.rank_of(s - 1), &mut act)?;
                    self.stages[i].act_in[m] = act;
                }
                if s == last {
                    // The loss is here: forward and backward at once.
                    let w = r.len() as f32 / run.batch as f32;
                    let l = self.stages[i].backward(s, m, r, run.inputs, run.labels, None, w)?;
                    run.loss += w * l;
                    self.stages[i].act_in[m] = Vec::new();
                    if self.schedule == Schedule::OneFOneB {
                        self.pass_back(i, m, after, run)?;
                    }
                } else {
                    let out = self.stages[i].forward(s, m, r, run.inputs)?;
                    run.report.bytes_per_step += 4 * out.len() as u64;
                    if !remote_next {
                        self.stages[i + 1].act_in[m] = out;
                    } else {
                        run.report.bytes_sent_by_rank += 4 * out.len() as u64;
                        if let Some(Action::Backward(k)) = after {
                            let mut g = vec![0.0f32; ranges[k].len() * self.stages[i].out_width];
                            let peer = self.rank_of(s + 1);
                            self.comm.exchange(peer, &out, peer, &mut g)?;
                            self.stages[i].g_out[k] = g;
                        } else {
                            self.comm.send(self.rank_of(s + 1), &out)?;
                        }
                    }
                }
            }
            Action::Backward(m) if s == last => self.pass_back(i, m, after, run)?,
            Action::Backward(m) => {
                let r = ranges[m].clone();
                let g = if remote_next {
                    let mut g = std::mem::take(&mut self.stages[i].g_out[m]);
                    if g.is_empty() {
                        g = vec![0.0f32; r.len() * self.stages[i].out_width];
                        self.comm.recv(self.rank_of(s + 1), &mut g)?;
                    }
                    g
                } else {
                    std::mem::take(&mut self.stages[i + 1].grad_in[m])
                };
                self.stages[i].backward(s, m, r, run.inputs, run.labels, Some(&g), 1.0)?;
                self.stages[i].act_in[m] = Vec::new();
                self.pass_back(i, m, after, run)?;
            }
        }
        Ok(())
    }

    /// After micro-batch `m`'s backward on local stage `i`: counts the
    /// incoming activation's gradient and, when the previous stage is on
    /// another rank, sends it (exchanged with the next micro-batch's
    /// activation if `after` is that forward). A local previous stage
    /// takes it from `grad_in` itself.
    fn pass_back(
        &mut self,
        i: usize,
        m: usize,
        after: Option<Action>,
        run: &mut Run<'_, '_>,
    ) -> Result<(), PipelineError> {
        let s = self.first + i;
        if s == 0 {
            return Ok(());
        }
        let bytes = 4 * self.stages[i].grad_in[m].len() as u64;
        run.report.bytes_per_step += bytes;
        if i > 0 {
            return Ok(());
        }
        run.report.bytes_sent_by_rank += bytes;
        let gin = std::mem::take(&mut self.stages[i].grad_in[m]);
        if let Some(Action::Forward(k)) = after {
            let mut act = vec![0.0f32; run.ranges[k].len() * self.stages[i].in_width];
            let peer = self.rank_of(s - 1);
            self.comm.exchange(peer, &gin, peer, &mut act)?;
            self.stages[i].act_in[k] = act;
        } else {
            self.comm.send(self.rank_of(s - 1), &gin)?;
        }
        Ok(())
    }
}

/// One step's batch and running totals, shared by its actions.
struct Run<'a, 'b> {
    ranges: &'a [std::ops::Range<usize>],
    inputs: &'a [(&'b str, &'b [f32])],
    labels: &'a [(&'b str, &'b [u32])],
    batch: usize,
    /// The batch's mean loss so far (last stage).
    loss: f32,
    report: PipelineReport,
}

/// The rows of each of `micro` micro-batches of a batch of `batch`
/// samples: contiguous, the first `batch % micro` one sample longer; no
/// empty micro-batch (fewer when the batch is smaller).
pub fn micro_ranges(batch: usize, micro: usize) -> Vec<std::ops::Range<usize>> {
    let m = micro.min(batch).max(1);
    let (q, extra) = (batch / m, batch % m);
    let mut start = 0;
    (0..m)
        .map(|k| {
            let len = q + usize::from(k < extra);
            let r = start..start + len;
            start += len;
            r
        })
        .collect()
}
