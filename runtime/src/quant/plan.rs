//! A model's int8 inference: the plan the compiler derives from its
//! inference graph ([`Plan`], written into generated code as a list of
//! [`Step`]s), calibrated and quantized from the f32 weights into an
//! [`Int8Model`] that runs it.
//!
//! A plan is a straight line of steps over numbered values (a value is a
//! tensor of `values[v]` elements per sample). Dense and convolution steps
//! run on the int8 kernels ([`qgemm`](super::qgemm),
//! [`conv2d`](super::conv2d)) with bias and ReLU fused into their epilogue;
//! every other step (pooling, ReLU, softmax) runs the f32 kernel the f32
//! model runs, on f32 values: an int8 step writes f32 when anything but
//! int8 steps read its result, and the next layer's u8 input directly
//! ([`Output::U8`](super::Output::U8)) when only int8 steps do.
//! Calibration runs the same plan in f32 with the f32 weights and records
//! [`MinMax`] of every value an int8 step reads.

use std::collections::BTreeMap;

use super::{ActQuant, Channels, MinMax, PackedConv, PackedWeights, QuantError, QuantWeights};
use crate::kernels::conv::{Conv2d, Pool2d};
use crate::params::ParamSpec;
use thiserror::Error;

mod file;
mod layout;
mod run;
mod scores;

use layout::Layout;

pub use file::QUANT_FORMAT;

/// One step of a plan. Values are indices into [`Plan::values`].
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// `out[b, n] = input[b, k] @ weight[k, n] (+ bias[n]) (ReLU)`, int8.
    Dense {
        /// Input value.
        input: usize,
        /// Output value.
        out: usize,
        /// The weight parameter's name (`[k, n]`).
        weight: String,
        /// The bias parameter's name (`[n]`), if any.
        bias: Option<String>,
        /// ReLU after the bias.
        relu: bool,
    },
    /// `out = conv2d(input, weight) (+ bias per channel) (ReLU)`, int8.
    Conv {
        /// Input value.
        input: usize,
        /// Output value.
        out: usize,
        /// The weight parameter's name (`[O, C/groups, KH, KW]`).
        weight: String,
        /// The bias parameter's name (`[O]`), if any.
        bias: Option<String>,
        /// ReLU after the bias.
        relu: bool,
        /// The convolution's geometry.
        geometry: Conv2d,
    },
    /// `out = max(input, 0)`, f32.
    Relu {
        /// Input value.
        input: usize,
        /// Output value.
        out: usize,
    },
    /// Max pooling, f32.
    MaxPool {
        /// Input value.
        input: usize,
        /// Output value.
        out: usize,
        /// The window.
        pool: Pool2d,
    },
    /// Average pooling, f32.
    AvgPool {
        /// Input value.
        input: usize,
        /// Output value.
        out: usize,
        /// The window.
        pool: Pool2d,
    },
    /// Softmax over the last `n` elements of each row, f32.
    Softmax {
        /// Input value.
        input: usize,
        /// Output value.
        out: usize,
        /// Row length.
        n: usize,
    },
}

impl Step {
    /// The value the step reads.
    pub fn input(&self) -> usize {
        match self {
            Step::Dense { input, .. }
            | Step::Conv { input, .. }
            | Step::Relu { input, .. }
            | Step::MaxPool { input, .. }
            | Step::AvgPool { input, .. }
            | Step::Softmax { input, .. } => *input,
        }
    }

    /// The value the step writes.
    pub fn out(&self) -> usize {
        match self {
            Step::Dense { out, .. }
            | Step::Conv { out, .. }
            | Step::Relu { out, .. }
            | Step::MaxPool { out, .. }
            | Step::AvgPool { out, .. }
            | Step::Softmax { out, .. } => *out,
        }
    }

    /// Whether the step runs on the int8 kernels.
    pub fn is_int8(&self) -> bool {
        matches!(self, Step::Dense { .. } | Step::Conv { .. })
    }
}

/// A model's int8 inference plan: the values (elements per sample), the
/// input and output value, and the steps in order. Generated code builds
/// it (`Model::int8_plan()`); [`Plan::check`] validates it against the
/// model's parameters before anything runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Elements per sample of each value.
    pub values: Vec<usize>,
    /// The value the model's input is copied into.
    pub input: usize,
    /// The value holding the model's output.
    pub output: usize,
    /// The steps, in order; each writes a value no earlier step wrote.
    pub steps: Vec<Step>,
}

/// Why an int8 model could not be built, loaded, saved or run.
#[derive(Debug, Error)]
pub enum PlanError {
    /// The plan does not fit the model (an nnc bug, or a plan built by hand).
    #[error("int8 plan: {0}")]
    Plan(String),
    /// Quantizing weights or activations failed (non-finite values, ...).
    #[error(transparent)]
    Quant(#[from] QuantError),
    /// The calibration set is empty or not a whole number of samples.
    #[error("calibration set: {0}")]
    Calibration(String),
    /// The batch does not fit the model.
    #[error("batch: {0}")]
    Batch(String),
    /// Reading or writing the quantized weights file failed.
    #[error(transparent)]
    File(#[from] crate::checkpoint::CheckpointError),
}

impl Plan {
    /// Fails unless every step reads a value written before it (or the
    /// input), writes a fresh value, and its sizes match the parameters
    /// named in `params`.
    pub fn check(&self, params: &[ParamSpec]) -> Result<(), PlanError> {
        let bad = |m: String| Err(PlanError::Plan(m));
        let n = self.values.len();
        if self.input >= n || self.output >= n {
            return bad(format!("input or output value outside {n} values"));
        }
        let mut written = vec![false; n];
        written[self.input] = true;
        for (i, s) in self.steps.iter().enumerate() {
            let (x, y) = (s.input(), s.out());
            if x >= n || y >= n || !written[x] || written[y] {
                return bad(format!(
                    "step {i} reads value {x} before it is written or rewrites value {y}"
                ));
            }
            written[y] = true;
            let (lx, ly) = (self.values[x], self.values[y]);
            let expect = match s {
                Step::Dense { weight, bias, .. } => {
                    let w = param(params, weight)?;
                    let [k, o] = w.shape[..] else {
                        return bad(format!("dense weight `{weight}` is not a matrix"));
                    };
                    check_bias(params, bias.as_deref(), o)?;
                    (k, o)
                }
                Step::Conv {
                    weight,
                    bias,
                    geometry: g,
                    ..
                } => {
                    if param(params, weight)?.len != g.o * g.k() {
                        return bad(format!("conv weight `{weight}` does not fit {g:?}"));
                    }
                    check_bias(params, bias.as_deref(), g.o)?;
                    let (oh, ow) = g.out_hw();
                    (g.c * g.h * g.w, g.o * oh * ow)
                }
                Step::Relu { .. } => (lx, lx),
                Step::MaxPool { pool: p, .. } | Step::AvgPool { pool: p, .. } => {
                    let (oh, ow) = p.out_hw();
                    (p.c * p.h * p.w, p.c * oh * ow)
                }
                Step::Softmax { n, .. } => {
                    if *n == 0 || lx % n != 0 {
                        return bad(format!("softmax rows of {n} do not divide {lx}"));
                    }
                    (lx, lx)
                }
            };
            if (lx, ly) != expect {
                return bad(format!(
                    "step {i} maps {lx} to {ly} elements per sample, its weights say {expect:?}"
                ));
            }
        }
        if !written[self.output] {
            return bad("the output value is never written".into());
        }
        Ok(())
    }

    /// One line per step: which kernel runs it (`int8` or `f32`).
    pub fn describe(&self) -> Vec<String> {
        let layout = Layout::new(self);
        self.steps
            .iter()
            .zip(&layout.u8_pool)
            .map(|(s, &on_bytes)| {
                let (kind, what) = match s {
                    Step::Dense { weight, relu, .. } => {
                        ("int8", format!("dense {weight}{}", relu_tag(*relu)))
                    }
                    Step::Conv { weight, relu, .. } => {
                        ("int8", format!("conv2d {weight}{}", relu_tag(*relu)))
                    }
                    Step::Relu { .. } => ("f32", "relu".into()),
                    Step::MaxPool { .. } if on_bytes => ("int8", "max_pool2d".into()),
                    Step::MaxPool { .. } => ("f32", "max_pool2d".into()),
                    Step::AvgPool { .. } => ("f32", "avg_pool2d".into()),
                    Step::Softmax { .. } => ("f32", "softmax".into()),
                };
                format!("{kind} {what}")
            })
            .collect()
    }

    /// The values with an activation quantization of their own (calibrated
    /// and saved): those an int8 step reads or that are held as bytes only,
    /// except byte poolings' outputs, which share their input's.
    fn quantized_inputs(&self) -> Vec<usize> {
        let layout = Layout::new(self);
        let mut v: Vec<usize> = self
            .steps
            .iter()
            .filter(|s| s.is_int8())
            .map(Step::input)
            .chain((0..self.values.len()).filter(|&v| layout.u8_only[v]))
            .filter(|&v| !layout.is_alias(v))
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

fn relu_tag(relu: bool) -> &'static str {
    if relu {
        " + relu"
    } else {
        ""
    }
}

fn param<'a>(params: &'a [ParamSpec], name: &str) -> Result<&'a ParamSpec, PlanError> {
    params
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| PlanError::Plan(format!("no parameter `{name}`")))
}

fn check_bias(params: &[ParamSpec], bias: Option<&str>, n: usize) -> Result<(), PlanError> {
    match bias {
        Some(b) if param(params, b)?.len != n => Err(PlanError::Plan(format!(
            "bias `{b}` does not have {n} values"
        ))),
        _ => Ok(()),
    }
}

/// The quantized form of one int8 step's weights.
#[derive(Debug)]
enum Packed {
    Dense(PackedWeights),
    Conv(PackedConv),
}

/// One int8 step's weights: the quantized values (kept for saving), their
/// packed form, and the f32 bias.
#[derive(Debug)]
struct Layer {
    q: QuantWeights,
    packed: Packed,
    bias: Option<Vec<f32>>,
}

/// A model quantized to int8: the plan, per-channel int8 weights for its
/// dense and convolution steps, f32 biases, and an activation scale and
/// zero point for every value an int8 step reads.
#[derive(Debug)]
pub struct Int8Model {
    plan: Plan,
    /// One per step (`None` for f32 steps).
    layers: Vec<Option<Layer>>,
    /// The activation quantization of each value an int8 step reads.
    acts: BTreeMap<usize, ActQuant>,
    layout: Layout,
    bufs: run::Buffers,
}

impl Int8Model {
    /// Calibrates and quantizes: runs `plan` in f32 with the model's
    /// weights (`params`, laid out as `specs` say) over the `samples`
    /// calibration inputs in `calibration` (`samples · values[input]`
    /// floats) in batches of at most `batch`, recording the smallest and
    /// largest value every int8 step reads; then quantizes each int8
    /// step's weights per output channel and derives the activation scales.
    pub fn calibrate(
        plan: Plan,
        specs: &[ParamSpec],
        params: &[f32],
        calibration: &[f32],
        batch: usize,
    ) -> Result<Self, PlanError> {
        plan.check(specs)?;
        let per = plan.values[plan.input];
        if calibration.is_empty() || per == 0 || calibration.len() % per != 0 {
            return Err(PlanError::Calibration(format!(
                "{} floats are not a positive number of samples of {per}",
                calibration.len()
            )));
        }
        let get = |name: &str| -> Result<&[f32], PlanError> {
            let p = param(specs, name)?;
            params
                .get(p.offset..p.offset + p.len)
                .ok_or_else(|| PlanError::Plan(format!("parameter `{name}` outside the buffer")))
        };
        let batch = batch.max(1);
        let mut stats: BTreeMap<usize, MinMax> = plan
            .quantized_inputs()
            .into_iter()
            .map(|v| (v, MinMax::new()))
            .collect();
        let mut f32_run = run::Buffers::default();
        for chunk in calibration.chunks(batch * per) {
            let b = chunk.len() / per;
            f32_run.forward_f32(&plan, &get, chunk, b, &mut stats)?;
        }
        let acts = stats
            .iter()
            .map(|(&v, m)| Ok((v, m.act_quant()?)))
            .collect::<Result<BTreeMap<_, _>, QuantError>>()?;
        let mut layers = Vec::with_capacity(plan.steps.len());
        for s in &plan.steps {
            layers.push(match s {
                Step::Dense { weight, bias, .. } => {
                    let p = param(specs, weight)?;
                    let q = QuantWeights::dense(get(weight)?, p.shape[0], p.shape[1])?;
                    Some(Layer::new(q, None, bias.as_deref().map(&get).transpose()?)?)
                }
                Step::Conv {
                    weight,
                    bias,
                    geometry,
                    ..
                } => {
                    let q = QuantWeights::conv(get(weight)?, geometry.o)?;
                    let b = bias.as_deref().map(&get).transpose()?;
                    Some(Layer::new(q, Some(geometry), b)?)
                }
                _ => None,
            });
        }
        Int8Model::assemble(plan, layers, acts)
    }

    /// The model of a checked plan, its layers and the activation
    /// quantization of [`Plan::quantized_inputs`]: byte poolings' outputs
    /// get their input's.
    fn assemble(
        plan: Plan,
        mut layers: Vec<Option<Layer>>,
        mut acts: BTreeMap<usize, ActQuant>,
    ) -> Result<Self, PlanError> {
        let layout = Layout::new(&plan);
        for &(y, x) in &layout.aliases {
            if let Some(&a) = acts.get(&x) {
                acts.insert(y, a);
            }
        }
        for (s, layer) in plan.steps.iter().zip(&mut layers) {
            if let (Some(layer), Some(shape)) = (layer, layout.last[s.input()]) {
                layer.read_channels_last(shape)?;
            }
        }
        Ok(Int8Model {
            plan,
            layers,
            acts,
            layout,
            bufs: run::Buffers::default(),
        })
    }

    /// The plan this model runs.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The activation scale and zero point of value `v`, if an int8 step
    /// reads it.
    pub fn act(&self, v: usize) -> Option<ActQuant> {
        self.acts.get(&v).copied()
    }

    /// Runs the int8 model on `b` samples: `input` holds `b · values[input]`
    /// floats, `out` receives `b · values[output]`.
    pub fn predict(&mut self, input: &[f32], out: &mut [f32], b: usize) -> Result<(), PlanError> {
        let Int8Model {
            plan,
            layers,
            acts,
            layout,
            bufs,
        } = self;
        bufs.forward_int8(plan, layers, acts, layout, input, out, b)
    }
}

impl Layer {
    fn new(
        q: QuantWeights,
        conv: Option<&Conv2d>,
        bias: Option<&[f32]>,
    ) -> Result<Self, PlanError> {
        let packed = match conv {
            Some(g) => Packed::Conv(PackedConv::new(g, &q)?),
            None => Packed::Dense(PackedWeights::new(&q)),
        };
        Ok(Layer {
            q,
            packed,
            bias: bias.map(<[f32]>::to_vec),
        })
    }

    /// Repacks the weights for an input held channels-last with per-sample
    /// shape `[C, H, W]`: a convolution's taps in `(kh, kw, c)` order, a
    /// dense layer's rows in the order of `[H, W, C]` flattened.
    fn read_channels_last(&mut self, [c, h, w]: [usize; 3]) -> Result<(), PlanError> {
        self.packed = match &self.packed {
            Packed::Conv(p) => Packed::Conv(PackedConv::for_input(
                p.geometry(),
                &self.q,
                Channels::Last,
            )?),
            Packed::Dense(_) => {
                if self.q.depth() != c * h * w {
                    return Err(PlanError::Plan(format!(
                        "a dense layer of depth {} reads a [{c}, {h}, {w}] tensor",
                        self.q.depth()
                    )));
                }
                let order: Vec<usize> = (0..c * h * w)
                    .map(|t| {
                        let (pix, ci) = (t / c, t % c);
                        ci * h * w + pix
                    })
                    .collect();
                Packed::Dense(PackedWeights::reordered(&self.q, &order))
            }
        };
        Ok(())
    }
}

/// The plan's f32 outputs with the model's f32 weights (what calibration
/// runs), for tests.
#[cfg(test)]
pub(super) fn f32_outputs(
    plan: &Plan,
    specs: &[ParamSpec],
    params: &[f32],
    input: &[f32],
    b: usize,
) -> Result<Vec<f32>, PlanError> {
    plan.check(specs)?;
    let get = |name: &str| -> Result<&[f32], PlanError> {
        let p = param(specs, name)?;
        Ok(&params[p.offset..p.offset + p.len])
    };
    let mut bufs = run::Buffers::default();
    bufs.forward_f32(plan, &get, input, b, &mut BTreeMap::new())?;
    Ok(bufs.output(plan, b))
}
