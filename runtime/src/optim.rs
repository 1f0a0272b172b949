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
//! Design: an optimizer owns its state buffers (allocated once, sized to the
//! flat buffer) and a step counter; `step` is a handful of plain slice loops
//! with no allocation, which the compiler vectorises. The learning rate is an
//! argument of `step`, not configuration, because schedules change it every
//! step. State is exported as named `f32` vectors plus the step counter
//! ([`OptimizerState`]) so a checkpoint can store it as tensors and a resumed
//! run continues bit for bit.

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

/// `x >= 0` and not NaN: the range check for every non-negative setting.
fn non_negative(x: f32) -> bool {
    x >= 0.0
}

fn invalid(optimizer: &'static str, reason: impl Into<String>) -> OptimError {
    OptimError::InvalidConfig {
        optimizer,
        reason: reason.into(),
    }
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
    for ((_, buf), (_, saved)) in bufs.iter_mut().zip(&state.tensors) {
        buf.copy_from_slice(saved);
    }
    Ok(state.step)
}

// ---------------------------------------------------------------- SGD

/// `torch.optim.SGD` hyper-parameters (except `lr`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdConfig {
    /// Momentum factor μ; 0 disables the momentum buffer.
    pub momentum: f32,
    /// Dampening τ applied to new gradients in the momentum buffer.
    pub dampening: f32,
    /// Nesterov momentum (requires momentum > 0 and dampening = 0).
    pub nesterov: bool,
    /// Coupled L2 penalty.
    pub weight_decay: f32,
}

impl Default for SgdConfig {
    fn default() -> Self {
        SgdConfig {
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        }
    }
}

/// Stochastic gradient descent, optionally with (Nesterov) momentum.
///
/// ```text
/// g = grad + wd*p
/// if μ != 0: b = (t == 1) ? g : μ*b + (1-τ)*g
///            g = nesterov ? g + μ*b : b
/// p = p - lr*g
/// ```
#[derive(Debug, Clone)]
pub struct Sgd {
    cfg: SgdConfig,
    n: usize,
    t: u64,
    momentum_buffer: Vec<f32>,
}

impl Sgd {
    /// An SGD optimizer for `n` parameters.
    pub fn new(n: usize, cfg: SgdConfig) -> Result<Self, OptimError> {
        if !non_negative(cfg.momentum) {
            return Err(invalid("sgd", format!("momentum {} < 0", cfg.momentum)));
        }
        if !non_negative(cfg.weight_decay) {
            return Err(invalid(
                "sgd",
                format!("weight_decay {} < 0", cfg.weight_decay),
            ));
        }
        if !cfg.dampening.is_finite() {
            return Err(invalid("sgd", "dampening is not finite"));
        }
        if cfg.nesterov && (cfg.momentum <= 0.0 || cfg.dampening != 0.0) {
            return Err(invalid(
                "sgd",
                "nesterov momentum requires momentum > 0 and dampening = 0",
            ));
        }
        let buf = if cfg.momentum != 0.0 {
            vec![0.0; n]
        } else {
            Vec::new()
        };
        Ok(Sgd {
            cfg,
            n,
            t: 0,
            momentum_buffer: buf,
        })
    }
}

impl Optimizer for Sgd {
    fn kind(&self) -> &'static str {
        "sgd"
    }
    fn num_params(&self) -> usize {
        self.n
    }
    fn steps(&self) -> u64 {
        self.t
    }

    fn step(&mut self, params: &mut [f32], grads: &[f32], lr: f32) -> Result<(), OptimError> {
        check_lens(self.n, params, grads)?;
        let k = self.begin(lr);
        k.run(params, grads, &mut self.momentum_buffer);
        Ok(())
    }

    fn step_streamed(
        &mut self,
        params: &mut [f32],
        grads: GradFill<'_>,
        lr: f32,
    ) -> Option<Result<(), OptimError>> {
        if let Err(e) = check_len("params", self.n, params) {
            return Some(Err(e));
        }
        let k = self.begin(lr);
        in_chunks_streamed_one(params, grads, &mut self.momentum_buffer, |p, g, b| {
            k.run(p, g, b)
        });
        Some(Ok(()))
    }

    fn state(&self) -> OptimizerState {
        let tensors = if self.cfg.momentum != 0.0 {
            vec![("momentum_buffer".to_string(), self.momentum_buffer.clone())]
        } else {
            Vec::new()
        };
        OptimizerState {
            kind: "sgd".into(),
            step: self.t,
            tensors,
        }
    }

    fn load_state(&mut self, state: &OptimizerState) -> Result<(), OptimError> {
        let has_buf = self.cfg.momentum != 0.0;
        let mut bufs: Vec<(&'static str, &mut Vec<f32>)> = Vec::new();
        if has_buf {
            bufs.push(("momentum_buffer", &mut self.momentum_buffer));
        }
        self.t = load_named("sgd", &mut bufs, state)?;
        Ok(())
    }
}

impl Sgd {
    /// Counts the step and fixes its constants.
    fn begin(&mut self, lr: f32) -> SgdStep {
        let first = self.t == 0;
        self.t += 1;
        SgdStep {
            cfg: self.cfg,
            first,
            lr,
        }
    }
}

/// The constants of one SGD step.
#[derive(Clone, Copy)]
struct SgdStep {
    cfg: SgdConfig,
    /// The momentum buffer starts as the first gradient.
    first: bool,
    lr: f32,
}

impl SgdStep {
    /// The update of matching parameters, gradients and momentum buffer
    /// (empty without momentum).
    fn run(&self, params: &mut [f32], grads: &[f32], bufs: &mut [f32]) {
        let SgdConfig {
            momentum: mu,
            dampening,
            nesterov,
            weight_decay: wd,
        } = self.cfg;
        let lr = self.lr;
        if mu == 0.0 {
            for (p, &g) in params.iter_mut().zip(grads) {
                let g = g + wd * *p;
                *p -= lr * g;
            }
            return;
        }
        let keep = 1.0 - dampening;
        for ((p, &g), b) in params.iter_mut().zip(grads).zip(bufs) {
            let g = g + wd * *p;
            *b = if self.first { g } else { mu * *b + keep * g };
            let d = if nesterov { g + mu * *b } else { *b };
            *p -= lr * d;
        }
    }
}

// ---------------------------------------------------------------- Adam / AdamW

/// `torch.optim.Adam`/`AdamW` hyper-parameters (except `lr`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamConfig {
    /// Decay of the first-moment average.
    pub beta1: f32,
    /// Decay of the second-moment average.
    pub beta2: f32,
    /// Added to the denominator for stability.
    pub eps: f32,
    /// Coupled L2 for Adam; decoupled decay for AdamW.
    pub weight_decay: f32,
}

impl Default for AdamConfig {
    /// PyTorch's Adam defaults: betas (0.9, 0.999), eps 1e-8, no weight decay.
    fn default() -> Self {
        AdamConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

impl AdamConfig {
    /// PyTorch's AdamW defaults: as Adam but `weight_decay = 0.01`.
    pub fn adamw_default() -> Self {
        AdamConfig {
            weight_decay: 0.01,
            ..Self::default()
        }
    }
}

/// Adam, or AdamW when built with [`Adam::adamw`].
///
/// ```text
/// Adam:  g = grad + wd*p            AdamW: p = p - lr*wd*p; g = grad
/// m = β1*m + (1-β1)*g;  v = β2*v + (1-β2)*g²
/// m̂ = m/(1-β1^t);  v̂ = v/(1-β2^t)
/// p = p - lr*m̂/(sqrt(v̂) + eps)
/// ```
/// Evaluated as `p -= (lr/(1-β1^t)) * m / (sqrt(v)/sqrt(1-β2^t) + eps)`,
/// PyTorch's own arrangement, so the per-element work is one sqrt and a divide.
#[derive(Debug, Clone)]
pub struct Adam {
    cfg: AdamConfig,
    decoupled: bool,
    n: usize,
    t: u64,
    exp_avg: Vec<f32>,
    exp_avg_sq: Vec<f32>,
}

impl Adam {
    /// Adam with coupled L2 weight decay, for `n` parameters.
    pub fn new(n: usize, cfg: AdamConfig) -> Result<Self, OptimError> {
        Self::build(n, cfg, false)
    }

    /// AdamW (decoupled weight decay), for `n` parameters.
    pub fn adamw(n: usize, cfg: AdamConfig) -> Result<Self, OptimError> {
        Self::build(n, cfg, true)
    }

    fn build(n: usize, cfg: AdamConfig, decoupled: bool) -> Result<Self, OptimError> {
        let kind = if decoupled { "adamw" } else { "adam" };
        for (name, b) in [("beta1", cfg.beta1), ("beta2", cfg.beta2)] {
            if !(0.0..1.0).contains(&b) {
                return Err(invalid(kind, format!("{name} {b} not in [0, 1)")));
            }
        }
        if !non_negative(cfg.eps) {
            return Err(invalid(kind, format!("eps {} < 0", cfg.eps)));
        }
        if !non_negative(cfg.weight_decay) {
            return Err(invalid(
                kind,
                format!("weight_decay {} < 0", cfg.weight_decay),
            ));
        }
        Ok(Adam {
            cfg,
            decoupled,
            n,
            t: 0,
            exp_avg: vec![0.0; n],
            exp_avg_sq: vec![0.0; n],
        })
    }
}

impl Optimizer for Adam {
    fn kind(&self) -> &'static str {
        if self.decoupled {
            "adamw"
        } else {
            "adam"
        }
    }
    fn num_params(&self) -> usize {
        self.n
    }
    fn steps(&self) -> u64 {
        self.t
    }

    fn step(&mut self, params: &mut [f32], grads: &[f32], lr: f32) -> Result<(), OptimError> {
        check_lens(self.n, params, grads)?;
        let k = self.begin(lr);
        let run = AdamStep::chunk_loop();
        in_chunks(
            params,
            grads,
            &mut self.exp_avg,
            &mut self.exp_avg_sq,
            |p, g, m, v| run(&k, p, g, m, v),
        );
        Ok(())
    }

    fn step_streamed(
        &mut self,
        params: &mut [f32],
        grads: GradFill<'_>,
        lr: f32,
    ) -> Option<Result<(), OptimError>> {
        if let Err(e) = check_len("params", self.n, params) {
            return Some(Err(e));
        }
        let k = self.begin(lr);
        let run = AdamStep::chunk_loop();
        in_chunks_streamed(
            params,
            grads,
            &mut self.exp_avg,
            &mut self.exp_avg_sq,
            |p, g, m, v| run(&k, p, g, m, v),
        );
        Some(Ok(()))
    }

    fn state(&self) -> OptimizerState {
        OptimizerState {
            kind: self.kind().into(),
            step: self.t,
            tensors: vec![
                ("exp_avg".into(), self.exp_avg.clone()),
                ("exp_avg_sq".into(), self.exp_avg_sq.clone()),
            ],
        }
    }

    fn load_state(&mut self, state: &OptimizerState) -> Result<(), OptimError> {
        let kind = self.kind();
        let mut bufs = [
            ("exp_avg", &mut self.exp_avg),
            ("exp_avg_sq", &mut self.exp_avg_sq),
        ];
        self.t = load_named(kind, &mut bufs, state)?;
        Ok(())
    }
}

impl Adam {
    /// Counts the step and fixes its constants (bias corrections, decay).
    fn begin(&mut self, lr: f32) -> AdamStep {
        self.t += 1;
        let AdamConfig {
            beta1,
            beta2,
            eps,
            weight_decay: wd,
        } = self.cfg;
        // Bias corrections in f64: β^t for large t underflows gracefully to 0.
        let t = self.t as f64;
        let bc1 = 1.0 - (beta1 as f64).powf(t);
        let bc2 = 1.0 - (beta2 as f64).powf(t);
        let step_size = (lr as f64 / bc1) as f32;
        let inv_bc2_sqrt = (1.0 / bc2.sqrt()) as f32;
        let (c1, c2) = (1.0 - beta1, 1.0 - beta2);
        // Decoupled decay as `p -= (lr*wd)*p` rather than `p *= 1 - lr*wd`:
        // `1 - lr*wd` rounded to f32 loses most digits of a small `lr*wd` and
        // the error would compound every step.
        let (coupled, decay) = if self.decoupled {
            (0.0, lr * wd)
        } else {
            (wd, 0.0)
        };
        AdamStep {
            beta1,
            beta2,
            c1,
            c2,
            eps,
            coupled,
            decay,
            step_size,
            inv_bc2_sqrt,
        }
    }
}

/// Elements from which an update is split across the rayon pool: below,
/// the update takes microseconds and a split costs more than it saves.
const PARALLEL_MIN: usize = 1 << 16;

/// The constants of one Adam step.
#[derive(Clone, Copy)]
struct AdamStep {
    beta1: f32,
    beta2: f32,
    c1: f32,
    c2: f32,
    eps: f32,
    coupled: f32,
    decay: f32,
    step_size: f32,
    inv_bc2_sqrt: f32,
}

/// An Adam update of one chunk: `(step, params, grads, m, v)`.
type AdamChunk = fn(&AdamStep, &mut [f32], &[f32], &mut [f32], &mut [f32]);

impl AdamStep {
    /// The chunk loop for this CPU, chosen once per step (not per chunk):
    /// 8 lanes at a time where the CPU has AVX2, as the update is bound by
    /// its square root and division, which the baseline x86-64 build
    /// issues 4 lanes wide. The same IEEE operations in the same order (no
    /// FMA contraction), so every result is bit-identical to the baseline
    /// loop.
    fn chunk_loop() -> AdamChunk {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 was just detected, and only then is this closure
            // handed out.
            return |k, params, grads, m, v| unsafe { k.run_avx2(params, grads, m, v) };
        }
        |k, params, grads, m, v| k.run_any(params, grads, m, v)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn run_avx2(&self, params: &mut [f32], grads: &[f32], m: &mut [f32], v: &mut [f32]) {
        self.run_any(params, grads, m, v);
    }

    #[inline(always)]
    fn run_any(&self, params: &mut [f32], grads: &[f32], m: &mut [f32], v: &mut [f32]) {
        let k = *self;
        let state = m.iter_mut().zip(v.iter_mut());
        for ((p, &g), (m, v)) in params.iter_mut().zip(grads).zip(state) {
            let p0 = *p;
            let g = g + k.coupled * p0;
            *m = k.beta1 * *m + k.c1 * g;
            *v = k.beta2 * *v + k.c2 * g * g;
            let denom = v.sqrt() * k.inv_bc2_sqrt + k.eps;
            // Decay and Adam step in one subtraction: one rounding, not two.
            *p = p0 - (k.decay * p0 + k.step_size * *m / denom);
        }
    }
}

/// Runs an elementwise update over matching chunks of the parameters,
/// gradients and two state buffers, in parallel for large models. Each
/// element's update is the same whoever runs it, so results do not depend
/// on the thread count.
fn in_chunks(
    params: &mut [f32],
    grads: &[f32],
    a: &mut [f32],
    b: &mut [f32],
    update: impl Fn(&mut [f32], &[f32], &mut [f32], &mut [f32]) + Sync,
) {
    use rayon::prelude::*;
    let Some(chunk) = chunk_len(params.len()) else {
        update(params, grads, a, b);
        return;
    };
    params
        .par_chunks_mut(chunk)
        .zip(grads.par_chunks(chunk))
        .zip(a.par_chunks_mut(chunk).zip(b.par_chunks_mut(chunk)))
        .for_each(|((p, g), (a, b))| update(p, g, a, b));
}

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

/// [`in_chunks`] with the gradient filled in a block at a time, right
/// before the update uses it.
fn in_chunks_streamed(
    params: &mut [f32],
    grads: GradFill<'_>,
    a: &mut [f32],
    b: &mut [f32],
    update: impl Fn(&mut [f32], &[f32], &mut [f32], &mut [f32]) + Sync,
) {
    use rayon::prelude::*;
    let run = |start: usize, params: &mut [f32], a: &mut [f32], b: &mut [f32]| {
        let mut g = [0.0f32; STREAM_BLOCK];
        let blocks = params
            .chunks_mut(STREAM_BLOCK)
            .zip(a.chunks_mut(STREAM_BLOCK).zip(b.chunks_mut(STREAM_BLOCK)));
        for (i, (p, (a, b))) in blocks.enumerate() {
            let g = &mut g[..p.len()];
            grads(start + i * STREAM_BLOCK, g);
            update(p, g, a, b);
        }
    };
    let Some(chunk) = chunk_len(params.len()) else {
        run(0, params, a, b);
        return;
    };
    params
        .par_chunks_mut(chunk)
        .zip(a.par_chunks_mut(chunk).zip(b.par_chunks_mut(chunk)))
        .enumerate()
        .for_each(|(i, (p, (a, b)))| run(i * chunk, p, a, b));
}

/// [`in_chunks_streamed`] with one state buffer, which is either as long as
/// `params` or empty (an optimizer setting that needs none).
fn in_chunks_streamed_one(
    params: &mut [f32],
    grads: GradFill<'_>,
    state: &mut [f32],
    update: impl Fn(&mut [f32], &[f32], &mut [f32]) + Sync,
) {
    use rayon::prelude::*;
    let run = |start: usize, params: &mut [f32], state: &mut [f32]| {
        let mut g = [0.0f32; STREAM_BLOCK];
        for (i, p) in params.chunks_mut(STREAM_BLOCK).enumerate() {
            let at = i * STREAM_BLOCK;
            let s = if state.is_empty() {
                &mut []
            } else {
                &mut state[at..at + p.len()]
            };
            let g = &mut g[..p.len()];
            grads(start + at, g);
            update(p, g, s);
        }
    };
    let Some(chunk) = chunk_len(params.len()) else {
        run(0, params, state);
        return;
    };
    let chunks = params.par_chunks_mut(chunk).enumerate();
    if state.is_empty() {
        chunks.for_each(|(i, p)| run(i * chunk, p, &mut []));
    } else {
        chunks
            .zip(state.par_chunks_mut(chunk))
            .for_each(|((i, p), s)| run(i * chunk, p, s));
    }
}

// ---------------------------------------------------------------- RMSprop

/// `torch.optim.RMSprop` hyper-parameters (except `lr`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RmspropConfig {
    /// Smoothing constant of the squared-gradient average.
    pub alpha: f32,
    /// Added to the denominator for stability.
    pub eps: f32,
    /// Momentum factor; 0 disables the buffer.
    pub momentum: f32,
    /// Normalise by the estimated variance instead of the second moment.
    pub centered: bool,
    /// Coupled L2 penalty.
    pub weight_decay: f32,
}

impl Default for RmspropConfig {
    /// PyTorch's defaults: alpha 0.99, eps 1e-8, no momentum, not centered.
    fn default() -> Self {
        RmspropConfig {
            alpha: 0.99,
            eps: 1e-8,
            momentum: 0.0,
            centered: false,
            weight_decay: 0.0,
        }
    }
}

/// RMSprop.
///
/// ```text
/// g = grad + wd*p
/// v = α*v + (1-α)*g²;  ṽ = v
/// centered: ga = α*ga + (1-α)*g;  ṽ = v - ga²
/// μ > 0: b = μ*b + g/(sqrt(ṽ)+eps);  p = p - lr*b
/// else:  p = p - lr*g/(sqrt(ṽ)+eps)
/// ```
/// One deliberate deviation: in the centered form `ṽ` is clamped at 0 before
/// the square root. It is non-negative in exact arithmetic; rounding can make
/// it a hair negative, where PyTorch would produce NaN.
#[derive(Debug, Clone)]
pub struct Rmsprop {
    cfg: RmspropConfig,
    n: usize,
    t: u64,
    square_avg: Vec<f32>,
    momentum_buffer: Vec<f32>,
    grad_avg: Vec<f32>,
}

impl Rmsprop {
    /// An RMSprop optimizer for `n` parameters.
    pub fn new(n: usize, cfg: RmspropConfig) -> Result<Self, OptimError> {
        if !non_negative(cfg.alpha) {
            return Err(invalid("rmsprop", format!("alpha {} < 0", cfg.alpha)));
        }
        if !non_negative(cfg.eps) {
            return Err(invalid("rmsprop", format!("eps {} < 0", cfg.eps)));
        }
        if !non_negative(cfg.momentum) {
            return Err(invalid("rmsprop", format!("momentum {} < 0", cfg.momentum)));
        }
        if !non_negative(cfg.weight_decay) {
            return Err(invalid(
                "rmsprop",
                format!("weight_decay {} < 0", cfg.weight_decay),
            ));
        }
        let sized = |on: bool| if on { vec![0.0; n] } else { Vec::new() };
        Ok(Rmsprop {
            cfg,
            n,
            t: 0,
            square_avg: vec![0.0; n],
            momentum_buffer: sized(cfg.momentum > 0.0),
            grad_avg: sized(cfg.centered),
        })
    }
}

impl Optimizer for Rmsprop {
    fn kind(&self) -> &'static str {
        "rmsprop"
    }
    fn num_params(&self) -> usize {
        self.n
    }
    fn steps(&self) -> u64 {
        self.t
    }

    fn step(&mut self, params: &mut [f32], grads: &[f32], lr: f32) -> Result<(), OptimError> {
        check_lens(self.n, params, grads)?;
        self.t += 1;
        let RmspropConfig {
            alpha,
            eps,
            momentum: mu,
            centered,
            weight_decay: wd,
        } = self.cfg;
        let c = 1.0 - alpha;
        // Four specialised loops instead of per-element branches.
        let pg = params.iter_mut().zip(grads).zip(self.square_avg.iter_mut());
        match (centered, mu > 0.0) {
            (false, false) => {
                for ((p, &g), v) in pg {
                    let g = g + wd * *p;
                    *v = alpha * *v + c * g * g;
                    *p -= lr * g / (v.sqrt() + eps);
                }
            }
            (false, true) => {
                for (((p, &g), v), b) in pg.zip(self.momentum_buffer.iter_mut()) {
                    let g = g + wd * *p;
                    *v = alpha * *v + c * g * g;
                    *b = mu * *b + g / (v.sqrt() + eps);
                    *p -= lr * *b;
                }
            }
            (true, false) => {
                for (((p, &g), v), ga) in pg.zip(self.grad_avg.iter_mut()) {
                    let g = g + wd * *p;
                    *v = alpha * *v + c * g * g;
                    *ga = alpha * *ga + c * g;
                    let avg = (*v - *ga * *ga).max(0.0).sqrt() + eps;
                    *p -= lr * g / avg;
                }
            }
            (true, true) => {
                let extra = self
                    .grad_avg
                    .iter_mut()
                    .zip(self.momentum_buffer.iter_mut());
                for (((p, &g), v), (ga, b)) in pg.zip(extra) {
                    let g = g + wd * *p;
                    *v = alpha * *v + c * g * g;
                    *ga = alpha * *ga + c * g;
                    let avg = (*v - *ga * *ga).max(0.0).sqrt() + eps;
                    *b = mu * *b + g / avg;
                    *p -= lr * *b;
                }
            }
        }
        Ok(())
    }

    fn state(&self) -> OptimizerState {
        let mut tensors = vec![("square_avg".to_string(), self.square_avg.clone())];
        if self.cfg.momentum > 0.0 {
            tensors.push(("momentum_buffer".into(), self.momentum_buffer.clone()));
        }
        if self.cfg.centered {
            tensors.push(("grad_avg".into(), self.grad_avg.clone()));
        }
        OptimizerState {
            kind: "rmsprop".into(),
            step: self.t,
            tensors,
        }
    }

    fn load_state(&mut self, state: &OptimizerState) -> Result<(), OptimError> {
        let (has_mu, centered) = (self.cfg.momentum > 0.0, self.cfg.centered);
        let mut bufs: Vec<(&'static str, &mut Vec<f32>)> =
            vec![("square_avg", &mut self.square_avg)];
        if has_mu {
            bufs.push(("momentum_buffer", &mut self.momentum_buffer));
        }
        if centered {
            bufs.push(("grad_avg", &mut self.grad_avg));
        }
        self.t = load_named("rmsprop", &mut bufs, state)?;
        Ok(())
    }
}

// ---------------------------------------------------------------- Adagrad

/// `torch.optim.Adagrad` hyper-parameters (except `lr`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdagradConfig {
    /// Learning-rate decay η: step t uses `lr / (1 + (t-1)*η)`.
    pub lr_decay: f32,
    /// Starting value of the squared-gradient sum.
    pub initial_accumulator_value: f32,
    /// Added to the denominator for stability.
    pub eps: f32,
    /// Coupled L2 penalty.
    pub weight_decay: f32,
}

impl Default for AdagradConfig {
    /// PyTorch's defaults: no decay, accumulator 0, eps 1e-10.
    fn default() -> Self {
        AdagradConfig {
            lr_decay: 0.0,
            initial_accumulator_value: 0.0,
            eps: 1e-10,
            weight_decay: 0.0,
        }
    }
}

/// Adagrad.
///
/// ```text
/// clr = lr / (1 + (t-1)*η)
/// g = grad + wd*p
/// s = s + g²
/// p = p - clr*g/(sqrt(s) + eps)
/// ```
#[derive(Debug, Clone)]
pub struct Adagrad {
    cfg: AdagradConfig,
    n: usize,
    t: u64,
    sum: Vec<f32>,
}

impl Adagrad {
    /// An Adagrad optimizer for `n` parameters.
    pub fn new(n: usize, cfg: AdagradConfig) -> Result<Self, OptimError> {
        if !non_negative(cfg.lr_decay) {
            return Err(invalid("adagrad", format!("lr_decay {} < 0", cfg.lr_decay)));
        }
        if !non_negative(cfg.initial_accumulator_value) {
            return Err(invalid(
                "adagrad",
                format!(
                    "initial_accumulator_value {} < 0",
                    cfg.initial_accumulator_value
                ),
            ));
        }
        if !non_negative(cfg.eps) {
            return Err(invalid("adagrad", format!("eps {} < 0", cfg.eps)));
        }
        if !non_negative(cfg.weight_decay) {
            return Err(invalid(
                "adagrad",
                format!("weight_decay {} < 0", cfg.weight_decay),
            ));
        }
        Ok(Adagrad {
            cfg,
            n,
            t: 0,
            sum: vec![cfg.initial_accumulator_value; n],
        })
    }
}

impl Optimizer for Adagrad {
    fn kind(&self) -> &'static str {
        "adagrad"
    }
    fn num_params(&self) -> usize {
        self.n
    }
    fn steps(&self) -> u64 {
        self.t
    }

    fn step(&mut self, params: &mut [f32], grads: &[f32], lr: f32) -> Result<(), OptimError> {
        check_lens(self.n, params, grads)?;
        self.t += 1;
        let AdagradConfig {
            lr_decay,
            eps,
            weight_decay: wd,
            ..
        } = self.cfg;
        let clr = (lr as f64 / (1.0 + (self.t - 1) as f64 * lr_decay as f64)) as f32;
        for ((p, &g), s) in params.iter_mut().zip(grads).zip(self.sum.iter_mut()) {
            let g = g + wd * *p;
            *s += g * g;
            *p -= clr * g / (s.sqrt() + eps);
        }
        Ok(())
    }

    fn state(&self) -> OptimizerState {
        OptimizerState {
            kind: "adagrad".into(),
            step: self.t,
            tensors: vec![("sum".into(), self.sum.clone())],
        }
    }

    fn load_state(&mut self, state: &OptimizerState) -> Result<(), OptimError> {
        self.t = load_named("adagrad", &mut [("sum", &mut self.sum)], state)?;
        Ok(())
    }
}

// ---------------------------------------------------------------- construction

/// Any optimizer with its settings: what a `train` block's `optimizer:` line
/// becomes, so generated code can build one without naming concrete types.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OptimizerConfig {
    /// [`Sgd`].
    Sgd(SgdConfig),
    /// [`Adam`] with coupled weight decay.
    Adam(AdamConfig),
    /// [`Adam`] with decoupled weight decay.
    AdamW(AdamConfig),
    /// [`Rmsprop`].
    Rmsprop(RmspropConfig),
    /// [`Adagrad`].
    Adagrad(AdagradConfig),
}

impl OptimizerConfig {
    /// Builds the optimizer for a flat buffer of `n` parameters.
    pub fn build(&self, n: usize) -> Result<Box<dyn Optimizer>, OptimError> {
        Ok(match *self {
            OptimizerConfig::Sgd(c) => Box::new(Sgd::new(n, c)?),
            OptimizerConfig::Adam(c) => Box::new(Adam::new(n, c)?),
            OptimizerConfig::AdamW(c) => Box::new(Adam::adamw(n, c)?),
            OptimizerConfig::Rmsprop(c) => Box::new(Rmsprop::new(n, c)?),
            OptimizerConfig::Adagrad(c) => Box::new(Adagrad::new(n, c)?),
        })
    }
}

/// Scales `grads` so their global L2 norm is at most `max_norm`, like
/// `torch.nn.utils.clip_grad_norm_` (coefficient `max_norm/(norm+1e-6)`,
/// applied only when below 1). Returns the norm before clipping, accumulated
/// in f64 so it does not depend on summation luck in large buffers.
pub fn clip_grad_norm(grads: &mut [f32], max_norm: f32) -> f32 {
    let norm = grads
        .iter()
        .map(|&g| (g as f64) * (g as f64))
        .sum::<f64>()
        .sqrt();
    let coef = max_norm as f64 / (norm + 1e-6);
    if coef < 1.0 {
        let coef = coef as f32;
        for g in grads.iter_mut() {
            *g *= coef;
        }
    }
    norm as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AVX2 Adam loop and the baseline one give the same bits
    /// (coupled and decoupled decay, odd lengths for the vector tail).
    #[test]
    fn adam_vector_loop_equals_baseline_bits() {
        let mut rng = crate::rng::Rng::new(3);
        for (coupled, decay) in [(0.0, 0.0), (0.01, 0.0), (0.0, 1e-4)] {
            let k = AdamStep {
                beta1: 0.9,
                beta2: 0.999,
                c1: 0.1,
                c2: 0.001,
                eps: 1e-8,
                coupled,
                decay,
                step_size: 1e-3 / 0.1,
                inv_bc2_sqrt: 1.0 / 0.001f32.sqrt(),
            };
            let n = 1037;
            let vec = |rng: &mut crate::rng::Rng, lo: f32| -> Vec<f32> {
                (0..n).map(|_| rng.uniform_f32(lo, 1.0)).collect()
            };
            let (p, g, m, v) = (
                vec(&mut rng, -1.0),
                vec(&mut rng, -1.0),
                vec(&mut rng, -1.0),
                vec(&mut rng, 0.0),
            );
            let (mut p1, mut m1, mut v1) = (p.clone(), m.clone(), v.clone());
            let (mut p2, mut m2, mut v2) = (p, m, v);
            k.run_any(&mut p1, &g, &mut m1, &mut v1);
            AdamStep::chunk_loop()(&k, &mut p2, &g, &mut m2, &mut v2);
            let bits = |x: &[f32]| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&p1), bits(&p2));
            assert_eq!(bits(&m1), bits(&m2));
            assert_eq!(bits(&v1), bits(&v2));
        }
    }

    /// A streamed Adam, AdamW or SGD (plain, momentum, Nesterov) step equals
    /// a step on the whole gradient bit for bit, serial and split over a
    /// pool, on lengths that end mid-block and mid-chunk; optimizers that
    /// need the whole gradient decline and change nothing.
    #[test]
    fn streamed_step_equals_whole_gradient_step() {
        let mut rng = crate::rng::Rng::new(5);
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            for n in [1037, PARALLEL_MIN + 4099] {
                let p0: Vec<f32> = (0..n).map(|_| rng.uniform_f32(-1.0, 1.0)).collect();
                let grads: Vec<Vec<f32>> = (0..3)
                    .map(|_| (0..n).map(|_| rng.uniform_f32(-1.0, 1.0)).collect())
                    .collect();
                let adam = AdamConfig {
                    weight_decay: 0.01,
                    ..Default::default()
                };
                let sgd = |momentum, nesterov| SgdConfig {
                    momentum,
                    nesterov,
                    weight_decay: 0.01,
                    dampening: if nesterov { 0.0 } else { 0.1 },
                };
                let configs = [
                    OptimizerConfig::Adam(adam),
                    OptimizerConfig::AdamW(adam),
                    OptimizerConfig::Sgd(sgd(0.0, false)),
                    OptimizerConfig::Sgd(sgd(0.9, false)),
                    OptimizerConfig::Sgd(sgd(0.9, true)),
                ];
                for config in configs {
                    let build = || config.build(n).unwrap();
                    let (mut whole, mut streamed) = (build(), build());
                    let (mut p1, mut p2) = (p0.clone(), p0.clone());
                    pool.install(|| {
                        for g in &grads {
                            whole.step(&mut p1, g, 1e-2).unwrap();
                            let fill = |start: usize, out: &mut [f32]| {
                                out.copy_from_slice(&g[start..start + out.len()]);
                            };
                            streamed
                                .step_streamed(&mut p2, &fill, 1e-2)
                                .unwrap()
                                .unwrap();
                        }
                    });
                    let bits = |x: &[f32]| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                    let what = format!("{config:?}, {n} params on {threads} threads");
                    assert_eq!(bits(&p1), bits(&p2), "{what}");
                    assert_eq!(whole.state(), streamed.state());
                    assert_ne!(bits(&p1), bits(&p0));
                }
            }
        }
        let mut p = [1.0f32; 4];
        let mut adam = Adam::new(3, AdamConfig::default()).unwrap();
        let fill = |_: usize, out: &mut [f32]| out.fill(1.0);
        assert!(matches!(
            adam.step_streamed(&mut p, &fill, 0.1),
            Some(Err(OptimError::LengthMismatch { .. }))
        ));
        let mut rmsprop = Rmsprop::new(4, RmspropConfig::default()).unwrap();
        assert!(rmsprop.step_streamed(&mut p, &fill, 0.1).is_none());
        assert_eq!((rmsprop.steps(), p), (0, [1.0; 4]));
    }

    #[test]
    fn invalid_configs_are_rejected() {
        let nesterov = SgdConfig {
            nesterov: true,
            ..Default::default()
        };
        assert!(matches!(
            Sgd::new(3, nesterov),
            Err(OptimError::InvalidConfig { .. })
        ));
        let bad_beta = AdamConfig {
            beta1: 1.0,
            ..Default::default()
        };
        assert!(Adam::new(3, bad_beta).is_err());
        assert!(Rmsprop::new(
            3,
            RmspropConfig {
                alpha: -0.1,
                ..Default::default()
            }
        )
        .is_err());
        assert!(Adagrad::new(
            3,
            AdagradConfig {
                eps: f32::NAN,
                ..Default::default()
            }
        )
        .is_err());
    }

    #[test]
    fn wrong_lengths_are_errors() {
        let mut opt = Adam::new(3, AdamConfig::default()).unwrap();
        let mut p = [0.0; 2];
        assert_eq!(
            opt.step(&mut p, &[0.0; 3], 0.1),
            Err(OptimError::LengthMismatch {
                what: "params",
                expected: 3,
                actual: 2
            })
        );
        assert_eq!(opt.steps(), 0);
    }

    #[test]
    fn state_from_another_optimizer_is_rejected_and_changes_nothing() {
        let mut adam = Adam::new(2, AdamConfig::default()).unwrap();
        let mut p = [1.0, 2.0];
        adam.step(&mut p, &[0.5, -0.5], 0.1).unwrap();
        let before = adam.state();
        let sgd_state = Sgd::new(2, SgdConfig::default()).unwrap().state();
        assert!(adam.load_state(&sgd_state).is_err());
        let mut short = before.clone();
        short.tensors[1].1.pop();
        assert!(adam.load_state(&short).is_err());
        assert_eq!(adam.state(), before);
        let mut adamw = Adam::adamw(2, AdamConfig::default()).unwrap();
        assert!(adamw.load_state(&before).is_err());
    }

    #[test]
    fn clip_grad_norm_scales_to_max() {
        let mut g = [3.0, 4.0];
        let n = clip_grad_norm(&mut g, 1.0);
        assert_eq!(n, 5.0);
        assert!((g[0] - 0.6).abs() < 1e-6 && (g[1] - 0.8).abs() < 1e-6);
        let mut small = [0.1, 0.1];
        clip_grad_norm(&mut small, 1.0);
        assert_eq!(small, [0.1, 0.1]);
    }
}
