//! The quantized weights file: safetensors with, per int8 step, the
//! weight's `I8` values under the parameter's name (its f32 shape) and its
//! per-channel scales as `F32` `NAME.scale`, the f32 bias under its own
//! name, and per quantized activation `act.V.scale` (`F32 [1]`) and
//! `act.V.zero_point` (`U8 [1]`). Metadata: `nnc.format` and `nnc.plan`, a
//! fingerprint of the plan, so a file made for another model is refused.
//! Every value is validated on load (a corrupt file is refused with the
//! tensor and the reason); writes are atomic, as every nnc output
//! ([`crate::checkpoint::write_output`]).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, View};

use super::{param, Int8Model, Layer, Plan, PlanError, Step};
use crate::checkpoint::{write_output, CheckpointError};
use crate::params::ParamSpec;
use crate::quant::{ActQuant, QuantWeights, WeightLayout};

/// The `nnc.format` of a quantized weights file (2: a convolution's
/// output pooled on bytes has a scale of its own, shared by the pooling).
pub const QUANT_FORMAT: &str = "nnc-int8-2";

/// Raw little-endian bytes of one tensor.
struct Raw {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl View for &Raw {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

fn f32s(shape: Vec<usize>, v: &[f32]) -> Raw {
    Raw {
        dtype: Dtype::F32,
        shape,
        bytes: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

/// The plan's fingerprint (FNV-1a of its debug form: steps, names, shapes).
fn fingerprint(plan: &Plan) -> String {
    format!(
        "{:016x}",
        nnc_spec::hash::fnv1a(format!("{plan:?}").bytes())
    )
}

fn weight_and_bias(s: &Step) -> Option<(&str, Option<&str>)> {
    match s {
        Step::Dense { weight, bias, .. } | Step::Conv { weight, bias, .. } => {
            Some((weight, bias.as_deref()))
        }
        _ => None,
    }
}

impl Int8Model {
    /// The file's bytes (see the module docs).
    pub fn to_bytes(&self, specs: &[ParamSpec]) -> Result<Vec<u8>, PlanError> {
        self.to_bytes_with(specs, &BTreeMap::new())
    }

    /// [`Int8Model::to_bytes`] with more metadata (the class names a
    /// program reads back); `nnc.`-keys of this module's own win.
    pub fn to_bytes_with(
        &self,
        specs: &[ParamSpec],
        extra: &BTreeMap<String, String>,
    ) -> Result<Vec<u8>, PlanError> {
        let mut t: BTreeMap<String, Raw> = BTreeMap::new();
        for (s, layer) in self.plan.steps.iter().zip(&self.layers) {
            let (Some((w, b)), Some(l)) = (weight_and_bias(s), layer) else {
                continue;
            };
            let shape = param(specs, w)?.shape.to_vec();
            let bytes = l.q.values().iter().map(|&v| v as u8).collect();
            t.insert(
                w.to_string(),
                Raw {
                    dtype: Dtype::I8,
                    shape,
                    bytes,
                },
            );
            t.insert(
                format!("{w}.scale"),
                f32s(vec![l.q.channels()], l.q.scales()),
            );
            if let (Some(b), Some(bias)) = (b, &l.bias) {
                t.insert(b.to_string(), f32s(vec![bias.len()], bias));
            }
        }
        for v in self.plan.quantized_inputs() {
            let a = self.acts[&v];
            t.insert(format!("act.{v}.scale"), f32s(vec![1], &[a.scale()]));
            let zp = Raw {
                dtype: Dtype::U8,
                shape: vec![1],
                bytes: vec![a.zero_point()],
            };
            t.insert(format!("act.{v}.zero_point"), zp);
        }
        let mut pairs = extra.clone();
        pairs.insert("nnc.format".to_string(), QUANT_FORMAT.to_string());
        pairs.insert("nnc.plan".to_string(), fingerprint(&self.plan));
        let meta = pairs.into_iter().collect();
        safetensors::tensor::serialize(t.iter().map(|(k, v)| (k.as_str(), v)), Some(meta))
            .map_err(|e| PlanError::File(CheckpointError::Invalid(e.to_string())))
    }

    /// Writes the quantized weights to `path`, atomically.
    pub fn save(&self, path: impl AsRef<Path>, specs: &[ParamSpec]) -> Result<(), PlanError> {
        self.save_with(path, specs, &BTreeMap::new())
    }

    /// [`Int8Model::save`] with more metadata ([`Int8Model::to_bytes_with`]).
    pub fn save_with(
        &self,
        path: impl AsRef<Path>,
        specs: &[ParamSpec],
        extra: &BTreeMap<String, String>,
    ) -> Result<(), PlanError> {
        let bytes = self.to_bytes_with(specs, extra)?;
        Ok(write_output(path.as_ref(), &bytes)?)
    }

    /// Reads a file [`Int8Model::save`] wrote for `plan` (checked against
    /// `specs`), validating every tensor: dtypes, shapes, weights in
    /// `[−63, 63]`, positive finite scales, finite biases.
    pub fn load(
        path: impl AsRef<Path>,
        plan: Plan,
        specs: &[ParamSpec],
    ) -> Result<Self, PlanError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|error| CheckpointError::Io {
            path: path.to_path_buf(),
            error,
        })?;
        Self::from_bytes(&bytes, plan, specs).map_err(|e| match e {
            Corrupt::Plan(e) => e,
            Corrupt::File(reason) => PlanError::File(CheckpointError::Corrupt {
                path: path.to_path_buf(),
                reason,
            }),
        })
    }

    fn from_bytes(bytes: &[u8], plan: Plan, specs: &[ParamSpec]) -> Result<Self, Corrupt> {
        plan.check(specs)?;
        let (_, header) =
            SafeTensors::read_metadata(bytes).map_err(|e| Corrupt::File(e.to_string()))?;
        let st = SafeTensors::deserialize(bytes).map_err(|e| Corrupt::File(e.to_string()))?;
        let meta = header.metadata().clone().unwrap_or_default();
        let key = |k: &str| meta.get(k).map(String::as_str).unwrap_or("(missing)");
        if key("nnc.format") != QUANT_FORMAT {
            return Err(Corrupt::File(format!(
                "nnc.format is `{}`, expected `{QUANT_FORMAT}` (not an int8 weights file)",
                key("nnc.format")
            )));
        }
        if key("nnc.plan") != fingerprint(&plan) {
            return Err(Corrupt::File(
                "quantized for another model (its int8 plan's fingerprint differs)".into(),
            ));
        }
        let tensor = |name: &str, dtype: Dtype, shape: &[usize]| -> Result<Vec<u8>, Corrupt> {
            let v = st
                .tensor(name)
                .map_err(|_| Corrupt::File(format!("tensor `{name}` is missing")))?;
            if v.dtype() != dtype || v.shape() != shape {
                return Err(Corrupt::File(format!(
                    "tensor `{name}` is {:?} {:?}, expected {dtype:?} {shape:?}",
                    v.dtype(),
                    v.shape()
                )));
            }
            Ok(v.data().to_vec())
        };
        let floats = |name: &str, n: usize| -> Result<Vec<f32>, Corrupt> {
            let v: Vec<f32> = tensor(name, Dtype::F32, &[n])?
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            match v.iter().position(|x| !x.is_finite()) {
                Some(i) => Err(Corrupt::File(format!("tensor `{name}`[{i}] is not finite"))),
                None => Ok(v),
            }
        };
        let mut layers = Vec::with_capacity(plan.steps.len());
        for s in &plan.steps {
            let Some((w, b)) = weight_and_bias(s) else {
                layers.push(None);
                continue;
            };
            let p = param(specs, w)?;
            let (layout, channels, conv) = match s {
                Step::Conv { geometry, .. } => (WeightLayout::OutIn, geometry.o, Some(geometry)),
                _ => (WeightLayout::InOut, p.shape[1], None),
            };
            let values = tensor(w, Dtype::I8, &p.shape)?
                .into_iter()
                .map(|v| v as i8)
                .collect();
            let scales = floats(&format!("{w}.scale"), channels)?;
            let q = QuantWeights::from_parts(values, scales, layout)
                .map_err(|e| Corrupt::File(format!("`{w}`: {e}")))?;
            let bias = b.map(|b| floats(b, channels)).transpose()?;
            let layer = Layer::new(q, conv, bias.as_deref())
                .map_err(|e| Corrupt::File(format!("`{w}`: {e}")))?;
            layers.push(Some(layer));
        }
        let mut acts = BTreeMap::new();
        for v in plan.quantized_inputs() {
            let scale = floats(&format!("act.{v}.scale"), 1)?[0];
            let zp = tensor(&format!("act.{v}.zero_point"), Dtype::U8, &[1])?[0];
            let a = ActQuant::new(scale, zp).map_err(|e| Corrupt::File(format!("act.{v}: {e}")))?;
            acts.insert(v, a);
        }
        Ok(Int8Model::assemble(plan, layers, acts)?)
    }
}

/// A load failure: the plan's own (not the file's fault) or the file's.
enum Corrupt {
    Plan(PlanError),
    File(String),
}

impl From<PlanError> for Corrupt {
    fn from(e: PlanError) -> Self {
        Corrupt::Plan(e)
    }
}
