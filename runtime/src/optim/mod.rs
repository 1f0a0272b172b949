//! Optimizers over the flat parameter and gradient buffers.
//!
//! Each update follows the pseudo-code in PyTorch's documentation of
//! `torch.optim.{SGD, Adam, AdamW, RMSprop, Adagrad}` exactly (default,
//! non-`maximize`, non-`amsgrad` paths), so a model trained here and one
//! trained in PyTorch with the same hyper-parameters take the same steps, and
//! users can carry their tuned settings over. `weight_decay` is PyTorch's:
//! coupled L2 (`g += wd * p`) everywhere except AdamW, which decays the weights
//! directly (`p -= lr * wd * p`).
//!
//! Design: the optimizers share one base, the private `Core`, which owns
//! the step counter and the state buffers (allocated once, sized to the
//! flat buffer), checks lengths, saves and restores the state, and runs the
//! update over chunks of the buffers: on the calling thread for small
//! models, split across the rayon pool for large ones, and, with
//! [`Optimizer::step_streamed`], with the gradient filled in a block at a
//! time. Each optimizer (`sgd.rs`, `adam.rs`, `rmsprop.rs`, `adagrad.rs`)
//! writes only its `Rule`: which state buffers its configuration keeps, the
//! constants of one step, and the update of one chunk, a handful of plain
//! slice loops with no allocation, which the compiler vectorises. An
//! element's update reads only that element, so the chunking never changes
//! a result. The hyper-parameters live in `config.rs`. The learning rate is
//! an argument of `step`, not configuration, because schedules change it
//! every step. State is exported as named `f32` vectors plus the step
//! counter ([`OptimizerState`]) so a checkpoint can store it as tensors and
//! a resumed run continues bit for bit.

use rayon::iter::Either;
use rayon::prelude::*;
use std::fmt;
use thiserror::Error;

/// Why an optimizer could not be built, stepped or restored.
#[derive(Debug, Error, PartialEq)]
pub enum OptimError {
    /// A buffer passed to `step` has the wrong length.
    #[error("{what} has {actual} elements, optimizer was built for {expected}")]
    LengthMismatch {
        /// "params" or "grads".
        what: &'static str,
        /// Length the optimizer was built for.
        expected: usize,
        /// Length passed.
        actual: usize,
    },
    /// A hyper-parameter outside the range PyTorch accepts.
    #[error("invalid {optimizer} setting: {reason}")]
    InvalidConfig {
        /// Optimizer kind.
        optimizer: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Saved state belongs to a different optimizer or configuration.
    #[error("optimizer state mismatch: {0}")]
    StateMismatch(String),
}

/// An optimizer's resumable state: what a checkpoint must store.
///
/// Tensor names are stable strings (`exp_avg`, `momentum_buffer`, ...), the
/// names PyTorch uses for the same quantities. Each tensor has the flat
/// buffer's length.
#[derive(Debug, Clone, PartialEq)]
pub struct OptimizerState {
    /// Which optimizer wrote this (`"sgd"`, `"adam"`, `"adamw"`, `"rmsprop"`, `"adagrad"`).
    pub kind: String,
    /// Number of completed steps.
    pub step: u64,
    /// Named state vectors, in a fixed order.
    pub tensors: Vec<(String, Vec<f32>)>,
}

/// A gradient produced on demand: `fill(start, out)` writes the gradient's
/// elements `start..start + out.len()` into `out`. It may be called from
/// several threads at once, on disjoint ranges, in any order.
pub type GradFill<'a> = &'a (dyn Fn(usize, &mut [f32]) + Sync);

/// An optimizer over one flat parameter buffer.
pub trait Optimizer: Send {
    /// Stable kind name, stored in checkpoints.
    fn kind(&self) -> &'static str;
    /// Length of the flat buffers this optimizer was built for.
    fn num_params(&self) -> usize;
    /// Number of completed steps.
    fn steps(&self) -> u64;
    /// One update of `params` given `grads` (same length) and this step's
    /// learning rate.
    fn step(&mut self, params: &mut [f32], grads: &[f32], lr: f32) -> Result<(), OptimError>;
    /// [`Optimizer::step`] with the gradient produced a block at a time, as
    /// the update consumes it: a data-parallel runner sums its shards'
    /// gradients straight into the update this way, so the summed gradient
    /// never makes a round trip through memory. The result is bit-identical
    /// to `step` on the gradient `grads` fills in.
    ///
    /// Returns `None`, having changed nothing, if this optimizer needs the
    /// whole gradient at once (the default); the caller then materialises
    /// it and calls `step`.
    fn step_streamed(
        &mut self,
        params: &mut [f32],
        grads: GradFill<'_>,
        lr: f32,
    ) -> Option<Result<(), OptimError>> {
        let _ = (params, grads, lr);
        None
    }
    /// A copy of the full state, for checkpoints.
    fn state(&self) -> OptimizerState;
    /// Restores state saved by [`Optimizer::state`] of the same kind,
    /// configuration and size; on error `self` is unchanged.
    fn load_state(&mut self, state: &OptimizerState) -> Result<(), OptimError>;
}

fn check_lens(n: usize, params: &[f32], grads: &[f32]) -> Result<(), OptimError> {
    check_len("params", n, params)?;
    check_len("grads", n, grads)
}

/// `buf` (`what`: "params" or "grads") holds the `n` elements the optimizer
/// was built for.
fn check_len(what: &'static str, n: usize, buf: &[f32]) -> Result<(), OptimError> {
    if buf.len() != n {
        return Err(OptimError::LengthMismatch {
            what,
            expected: n,
            actual: buf.len(),
        });
    }
    Ok(())
}

/// Copies `state` into `bufs` (matched by name, in order) after checking kind,
/// names and lengths, so a failed load leaves the optimizer untouched.
fn load_named(
    kind: &str,
    bufs: &mut [(&'static str, &mut Vec<f32>)],
    state: &OptimizerState,
) -> Result<u64, OptimError> {
    if state.kind != kind {
        return Err(OptimError::StateMismatch(format!(
            "saved by `{}`, loading into `{kind}`",
            state.kind
        )));
    }
    let names: Vec<&str> = state.tensors.iter().map(|(n, _)| n.as_str()).collect();
    let want: Vec<&str> = bufs.iter().map(|(n, _)| *n).collect();
    if names != want {
        return Err(OptimError::StateMismatch(format!(
            "`{kind}` state has tensors {names:?}, expected {want:?} (different configuration?)"
        )));
    }
    for ((name, buf), (_, saved)) in bufs.iter().zip(&state.tensors) {
        if buf.len() != saved.len() {
            return Err(OptimError::StateMismatch(format!(
                "`{kind}` state tensor `{name}` has {} elements, expected {}",
                saved.len(),
                buf.len()
            )));
        }
    }
    for (name, saved) in &state.tensors {
        check_values(kind, name, saved)?;
    }
    for ((_, buf), (_, saved)) in bufs.iter_mut().zip(&state.tensors) {
        buf.copy_from_slice(saved);
    }
    Ok(state.step)
}

/// State tensors that are sums or averages of squared gradients: a negative
/// element cannot come from any run (its square root is NaN on the next
/// step), only from a damaged or edited checkpoint.
const NON_NEGATIVE: [&str; 3] = ["exp_avg_sq", "square_avg", "sum"];

/// Refuses a saved state tensor with a value no run produces: not finite,
/// or negative where it accumulates squares.
fn check_values(kind: &str, name: &str, values: &[f32]) -> Result<(), OptimError> {
    let bad = |i: usize, why: &str| {
        Err(OptimError::StateMismatch(format!(
            "`{kind}` state tensor `{name}` holds {} at element {i}: {why}",
            values[i]
        )))
    };
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return bad(i, "not a finite number");
    }
    if NON_NEGATIVE.contains(&name) {
        if let Some(i) = values.iter().position(|&v| v < 0.0) {
            return bad(i, "an average of squares is never negative");
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- the shared base

/// The most state buffers an update rule keeps (RMSprop's square average,
/// momentum buffer and gradient average).
const SLOTS: usize = 3;

/// Matching chunks of the state buffers, one per slot; a slot the
/// configuration does not use is an empty slice.
type Slots<'a> = [&'a mut [f32]; SLOTS];

/// What distinguishes one optimizer from another; [`Core`] does the rest.
trait Rule: Clone + fmt::Debug + Send {
    /// The constants of one step, fixed before any element is updated.
    type Step: Sync;

    /// Whether the rule takes its gradient a block at a time
    /// ([`Optimizer::step_streamed`]). RMSprop and Adagrad do not (yet):
    /// a data-parallel runner then materialises the summed gradient and
    /// calls `step`, the fallback `tests/parallel.rs` covers through
    /// RMSprop. Streaming them would give the same bits.
    const STREAMS: bool;

    /// Stable kind name, stored in checkpoints.
    fn kind(&self) -> &'static str;

    /// The name of each slot's state buffer (PyTorch's), or `None` for a
    /// slot this configuration does not keep. Checkpoints list the named
    /// buffers in slot order.
    fn slots(&self) -> [Option<&'static str>; SLOTS];

    /// Every state element's value before the first step.
    fn initial(&self) -> f32 {
        0.0
    }

    /// The constants of step `t` (the first step is 1) at learning rate `lr`.
    fn begin(&self, t: u64, lr: f32) -> Self::Step;

    /// The update of matching chunks of the parameters, the gradient and the
    /// state buffers. Each element's update reads only that element, so any
    /// chunking gives the same bits.
    fn update(step: &Self::Step, params: &mut [f32], grads: &[f32], state: Slots<'_>);
}

/// The base every optimizer wraps: its rule, the step counter and the
/// state buffers, and the [`Optimizer`] methods in terms of the rule.
#[derive(Debug, Clone)]
struct Core<R> {
    rule: R,
    n: usize,
    t: u64,
    /// One buffer per slot: `n` elements, or empty for an unused slot.
    state: [Vec<f32>; SLOTS],
}

impl<R: Rule> Core<R> {
    fn new(n: usize, rule: R) -> Self {
        let init = rule.initial();
        let state = rule.slots().map(|name| {
            if name.is_some() {
                vec![init; n]
            } else {
                Vec::new()
            }
        });
        Core {
            rule,
            n,
            t: 0,
            state,
        }
    }

    /// Counts the step and fixes its constants.
    fn begin(&mut self, lr: f32) -> R::Step {
        self.t += 1;
        self.rule.begin(self.t, lr)
    }

    fn step(&mut self, params: &mut [f32], grads: &[f32], lr: f32) -> Result<(), OptimError> {
        check_lens(self.n, params, grads)?;
        let k = self.begin(lr);
        let state = self.state.each_mut().map(Vec::as_mut_slice);
        in_chunks(params, grads, state, |p, g, s| R::update(&k, p, g, s));
        Ok(())
    }

    fn step_streamed(
        &mut self,
        params: &mut [f32],
        grads: GradFill<'_>,
        lr: f32,
    ) -> Option<Result<(), OptimError>> {
        if !R::STREAMS {
            return None;
        }
        if let Err(e) = check_len("params", self.n, params) {
            return Some(Err(e));
        }
        let k = self.begin(lr);
        let state = self.state.each_mut().map(Vec::as_mut_slice);
        in_chunks_streamed(params, grads, state, |p, g, s| R::update(&k, p, g, s));
        Some(Ok(()))
    }

    fn state(&self) -> OptimizerState {
        let named = self.rule.slots().into_iter().zip(&self.state);
        OptimizerState {
            kind: self.rule.kind().into(),
            step: self.t,
            tensors: named
                .filter_map(|(name, buf)| Some((name?.to_string(), buf.clone())))
                .collect(),
        }
    }

    fn load_state(&mut self, state: &OptimizerState) -> Result<(), OptimError> {
        let named = self.rule.slots().into_iter().zip(self.state.iter_mut());
        let mut bufs: Vec<(&'static str, &mut Vec<f32>)> =
            named.filter_map(|(name, buf)| Some((name?, buf))).collect();
        self.t = load_named(self.rule.kind(), &mut bufs, state)?;
        Ok(())
    }
}

/// Implements [`Optimizer`] for a public optimizer type whose one field is
/// its [`Core`].
macro_rules! optimizer_over_core {
    ($name:ident) => {
        impl $crate::optim::Optimizer for $name {
            fn kind(&self) -> &'static str {
                self.0.rule.kind()
            }
            fn num_params(&self) -> usize {
                self.0.n
            }
            fn steps(&self) -> u64 {
                self.0.t
            }
            fn step(
                &mut self,
                params: &mut [f32],
                grads: &[f32],
                lr: f32,
            ) -> Result<(), $crate::optim::OptimError> {
                self.0.step(params, grads, lr)
            }
            fn step_streamed(
                &mut self,
                params: &mut [f32],
                grads: $crate::optim::GradFill<'_>,
                lr: f32,
            ) -> Option<Result<(), $crate::optim::OptimError>> {
                self.0.step_streamed(params, grads, lr)
            }
            fn state(&self) -> $crate::optim::OptimizerState {
                self.0.state()
            }
            fn load_state(
                &mut self,
                state: &$crate::optim::OptimizerState,
            ) -> Result<(), $crate::optim::OptimError> {
                self.0.load_state(state)
            }
        }
    };
}

mod adagrad;
mod adam;
mod clip;
mod config;
mod rmsprop;
mod sgd;
#[cfg(test)]
mod tests;

pub use adagrad::Adagrad;
pub use adam::Adam;
pub use clip::clip_grad_norm;
pub use config::{
    build, AdagradConfig, AdamConfig, Build, ConfigError, OptimizerConfig, RmspropConfig, SgdConfig,
};
pub use rmsprop::Rmsprop;
pub use sgd::Sgd;

// ---------------------------------------------------------------- chunked drivers

/// Elements from which an update is split across the rayon pool: below,
/// the update takes microseconds and a split costs more than it saves.
const PARALLEL_MIN: usize = 1 << 16;

/// Gradient floats [`in_chunks_streamed`] asks for at a time: 4 KiB, so a
/// block is still in L1 when the update reads it.
const STREAM_BLOCK: usize = 1024;

/// The length of the chunks an update of `n` elements is split into across
/// the rayon pool, or `None` to run it on the calling thread. Four chunks
/// per thread (whole stream blocks): work stealing evens out a slow thread,
/// and no thread is left with one chunk more than the others when `n` is a
/// few chunks long.
fn chunk_len(n: usize) -> Option<usize> {
    let threads = rayon::current_num_threads();
    if n < PARALLEL_MIN || threads == 1 {
        return None;
    }
    Some(n.div_ceil(4 * threads).next_multiple_of(STREAM_BLOCK))
}

/// The `chunk`-long pieces of one state buffer, `count` of them, in
/// parallel; an unused (empty) buffer yields `count` empty pieces, so every
/// slot zips with the parameters' chunks.
fn slot_chunks(
    buf: &mut [f32],
    chunk: usize,
    count: usize,
) -> impl IndexedParallelIterator<Item = &mut [f32]> {
    if buf.is_empty() {
        Either::Left((0..count).into_par_iter().map(|_| <&mut [f32]>::default()))
    } else {
        Either::Right(buf.par_chunks_mut(chunk))
    }
}

/// Elements `at..at + len` of a state buffer, or the empty unused buffer.
fn slot_block(buf: &mut [f32], at: usize, len: usize) -> &mut [f32] {
    if buf.is_empty() {
        buf
    } else {
        &mut buf[at..at + len]
    }
}

/// Runs an elementwise update over matching chunks of the parameters,
/// gradients and state buffers, in parallel for large models. Each
/// element's update is the same whoever runs it, so results do not depend
/// on the thread count.
fn in_chunks(
    params: &mut [f32],
    grads: &[f32],
    state: Slots<'_>,
    update: impl Fn(&mut [f32], &[f32], Slots<'_>) + Sync,
) {
    let Some(chunk) = chunk_len(params.len()) else {
        update(params, grads, state);
        return;
    };
    let count = params.len().div_ceil(chunk);
    let [a, b, c] = state;
    let state = slot_chunks(a, chunk, count)
        .zip(slot_chunks(b, chunk, count))
        .zip(slot_chunks(c, chunk, count));
    params
        .par_chunks_mut(chunk)
        .zip(grads.par_chunks(chunk))
        .zip(state)
        .for_each(|((p, g), ((a, b), c))| update(p, g, [a, b, c]));
}

/// [`in_chunks`] with the gradient filled in a block at a time, right
/// before the update uses it.
fn in_chunks_streamed(
    params: &mut [f32],
    grads: GradFill<'_>,
    state: Slots<'_>,
    update: impl Fn(&mut [f32], &[f32], Slots<'_>) + Sync,
) {
    let run = |start: usize, params: &mut [f32], [a, b, c]: Slots<'_>| {
        let mut g = [0.0f32; STREAM_BLOCK];
        for (i, p) in params.chunks_mut(STREAM_BLOCK).enumerate() {
            let (at, len) = (i * STREAM_BLOCK, p.len());
            let g = &mut g[..len];
            grads(start + at, g);
            let s = [
                slot_block(a, at, len),
                slot_block(b, at, len),
                slot_block(c, at, len),
            ];
            update(p, g, s);
        }
    };
    let Some(chunk) = chunk_len(params.len()) else {
        run(0, params, state);
        return;
    };
    let count = params.len().div_ceil(chunk);
    let [a, b, c] = state;
    let state = slot_chunks(a, chunk, count)
        .zip(slot_chunks(b, chunk, count))
        .zip(slot_chunks(c, chunk, count));
    params
        .par_chunks_mut(chunk)
        .zip(state)
        .enumerate()
        .for_each(|(i, (p, ((a, b), c)))| run(i * chunk, p, [a, b, c]));
}
