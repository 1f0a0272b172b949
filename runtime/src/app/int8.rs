//! Int8 in the model's program (a model compiled with `--quantize int8`):
//! `quantize` calibrates on a data file and writes the int8 weights file
//! (what `nnc compile --quantize int8 --calibrate DATA` runs), and `eval` /
//! `predict` with `--int8` run that file instead of the f32 weights.
//!
//! The int8 plan computes the network's output, not its loss, so `eval
//! --int8` reports the metrics of the loss kind (accuracy, top-5, the
//! confusion matrix; F1; RMSE) on the plan's scores and no loss: a plan
//! that ends in a softmax is read without it ([`Int8Model::into_scores`]),
//! so a classifier's scores are its logits, as the f32 evaluation's are.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Args;
use safetensors::SafeTensors;

use super::report;
use super::source::{self, Part, Use};
use super::{load_model, AppError, Classes, DataOpts, CLASSES_PREFIX};
use crate::checkpoint::CheckpointError;
use crate::data::{Batcher, Binding, Dataset};
use crate::model::{InputKind, LossKind, Model, ModelSpec};
use crate::quant::plan::QUANT_FORMAT;
use crate::quant::{Int8Model, Plan};
use crate::train::metrics::{Accumulator, Metrics};
use crate::train::{feature_slot, label_slot, Eval, Prediction, Scores};

/// The plan of the program's model (`Model::int8_plan` of generated code).
pub type PlanFn = fn() -> Plan;

/// Samples per int8 batch (the batch the int8 kernels are measured at).
const BATCH: usize = 256;

/// Calibration samples unless `--samples` says otherwise: a few hundred
/// cover the activations' ranges (min/max calibration) of the models nnc
/// quantizes; more only cost time.
pub const DEFAULT_SAMPLES: usize = 300;

/// `quantize`: calibrate on a data file and write the int8 weights.
#[derive(Args)]
pub(super) struct QuantizeArgs {
    #[command(flatten)]
    data: DataOpts,
    /// The f32 weights to quantize (`weights.safetensors`, or a checkpoint).
    #[arg(long)]
    weights: PathBuf,
    /// PyTorch layout: 2-D weights stored as [out, in].
    #[arg(long)]
    transpose_linear: bool,
    /// Calibration samples, spread evenly over the file (all of them when
    /// it has fewer).
    #[arg(long, default_value_t = DEFAULT_SAMPLES)]
    samples: usize,
    /// The int8 weights file to write.
    #[arg(short = 'o', long = "output")]
    output: PathBuf,
}

/// The plan, or why this program has none.
fn plan_of(plan: Option<PlanFn>, what: &str) -> Result<Plan, AppError> {
    plan.map(|p| p()).ok_or_else(|| {
        AppError::Usage(format!(
            "{what}: this program was built without an int8 plan (compile the model with --quantize int8)"
        ))
    })
}

/// The feature slot of `binding` that feeds the int8 plan: the one float
/// input `predict` reads, of the plan's width.
fn plan_slot(
    spec: &ModelSpec,
    binding: &Binding,
    width: usize,
    what: &str,
) -> Result<usize, AppError> {
    let slots: Vec<(usize, usize)> = binding
        .feature_feeds()
        .enumerate()
        .filter(|(_, (_, i))| {
            let input = &spec.inputs[*i];
            input.predict && input.kind == InputKind::Features
        })
        .map(|(k, (_, i))| (k, i))
        .collect();
    match slots[..] {
        [(k, i)] if spec.inputs[i].per_sample == width => Ok(k),
        _ => Err(AppError::Usage(format!(
            "{what}: model `{}`'s int8 plan reads one float input of {width} values per sample, \
             which its inputs do not give",
            spec.name
        ))),
    }
}

/// `quantize`: the f32 model's weights, calibrated on `--samples` samples
/// of `--data`, written as int8 weights (with the class names the f32
/// weights carry).
pub(super) fn quantize<M: Model + Default>(
    a: &QuantizeArgs,
    plan: Option<PlanFn>,
) -> Result<(), AppError> {
    let plan = plan_of(plan, "quantize")?;
    if a.samples == 0 {
        return Err(AppError::Usage(
            "--samples 0: calibration needs at least one sample".into(),
        ));
    }
    let mut model = M::default();
    let classes = load_model(&mut model, &a.weights, a.transpose_linear)?;
    let spec = model.spec();
    // Calibration reads only what `predict` reads: a label column present
    // is skipped, one absent is not needed. IDX: the training pair.
    let data = source::load(
        spec,
        &a.data.args(&a.data.data)?,
        Part::Train,
        Use::Predict,
        &classes,
    )?;
    let what = format!("calibration data {}", a.data.data.display());
    if data.is_empty() {
        return Err(AppError::Usage(format!("{what} has no samples")));
    }
    let binding = Binding::new(spec, &data, &what, |i| i.predict)?;
    let width = plan.values[plan.input];
    let slot = plan_slot(spec, &binding, width, &what)?;
    // Evenly spread rows: a file sorted by class still calibrates on every
    // class.
    let n = data.len();
    let k = a.samples.min(n);
    let rows: Vec<usize> = (0..k).map(|i| i * n / k).collect();
    let mut batcher = Batcher::new(binding, BATCH);
    let mut floats = Vec::with_capacity(k * width);
    for chunk in rows.chunks(BATCH) {
        batcher.gather(&data, chunk)?;
        floats.extend_from_slice(batcher.features(slot));
    }
    let int8 = Int8Model::calibrate(plan, &spec.params, model.params(), &floats, BATCH)?;
    let meta: BTreeMap<String, String> = classes
        .iter()
        .map(|(k, v)| (format!("{CLASSES_PREFIX}{k}"), v.join("\n")))
        .collect();
    int8.save_with(&a.output, &spec.params, &meta)?;
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let (f32_bytes, int8_bytes) = (size(&a.weights), size(&a.output));
    println!(
        "{}: int8 weights calibrated on {k} of {n} samples of {}: {} ({int8_bytes} bytes, {:.3}x the f32 weights file)",
        spec.name,
        a.data.data.display(),
        a.output.display(),
        int8_bytes as f64 / f32_bytes.max(1) as f64
    );
    for line in int8.plan().describe() {
        println!("  {line}");
    }
    Ok(())
}

/// The int8 model in `path` for the program's model (refused with the
/// reason when it is not an int8 file or was made for another model), read
/// for its scores, and the class names it carries.
pub(super) fn load<M: Model + Default>(
    path: &Path,
    plan: Option<PlanFn>,
    what: &str,
) -> Result<(M, Int8Model, Classes), AppError> {
    let plan = plan_of(plan, what)?;
    let model = M::default();
    let int8 = Int8Model::load(path, plan, &model.spec().params)?;
    // The scores the loss compares: a classifier's logits, not the
    // probabilities of a final softmax.
    let int8 = if model.spec().loss.kind == LossKind::Other {
        int8
    } else {
        int8.into_scores()?
    };
    let classes = file_classes(path)?;
    Ok((model, int8, classes))
}

/// The class names in a weights file's metadata.
fn file_classes(path: &Path) -> Result<Classes, AppError> {
    let bytes = std::fs::read(path).map_err(|error| CheckpointError::Io {
        path: path.to_path_buf(),
        error,
    })?;
    let corrupt = |reason: String| CheckpointError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| corrupt(e.to_string()))?;
    Ok(header
        .metadata()
        .iter()
        .flatten()
        .filter_map(|(k, v)| {
            let input = k.strip_prefix(CLASSES_PREFIX)?;
            Some((
                input.to_string(),
                v.split('\n').map(str::to_string).collect(),
            ))
        })
        .collect())
}

/// Whether `path` is an int8 weights file (its `nnc.format` says so).
pub(super) fn is_int8_file(path: &Path) -> bool {
    let Ok(bytes) = std::fs::read(path) else {
        return false;
    };
    SafeTensors::read_metadata(&bytes).is_ok_and(|(_, h)| {
        h.metadata()
            .as_ref()
            .and_then(|m| m.get("nnc.format"))
            .is_some_and(|f| f == QUANT_FORMAT)
    })
}

/// Runs `int8` over every sample of `data` (bound by `binding`), calling
/// `each` with each batch's batcher (for its labels and targets) and
/// scores.
fn run_batches(
    int8: &mut Int8Model,
    data: &Dataset,
    mut batcher: Batcher,
    slot: usize,
    mut each: impl FnMut(&Batcher, &[f32]),
) -> Result<(), AppError> {
    let out = int8.output_len();
    let mut scores = vec![0.0f32; BATCH * out];
    let n = data.len();
    let mut start = 0;
    while start < n {
        let rows = BATCH.min(n - start);
        batcher.gather_range(data, start..start + rows)?;
        let s = &mut scores[..rows * out];
        int8.predict(batcher.features(slot), s, rows)?;
        each(&batcher, s);
        start += rows;
    }
    Ok(())
}

/// `eval --int8`: the metrics of the int8 model's scores on `data`.
pub(super) fn eval<M: Model + Default>(
    weights: &Path,
    data_opts: &DataOpts,
    plan: Option<PlanFn>,
) -> Result<(), AppError> {
    let (model, mut int8, classes) = load::<M>(weights, plan, "eval --int8")?;
    let spec = model.spec();
    let kind = spec.loss.kind;
    if kind == LossKind::Other {
        return Err(AppError::Usage(format!(
            "eval --int8: model `{}`'s loss is not a classification, binary or regression loss, \
             so there are no metrics to report (use predict --int8)",
            spec.name
        )));
    }
    if int8.output_len() != spec.loss.scores {
        return Err(AppError::Usage(format!(
            "eval --int8: model `{}`'s int8 plan ends in {} values per sample, its loss compares {}",
            spec.name,
            int8.output_len(),
            spec.loss.scores
        )));
    }
    let data = source::load(
        spec,
        &data_opts.args(&data_opts.data)?,
        Part::Test,
        Use::Labelled,
        &classes,
    )?;
    let what = format!("evaluation data {}", data_opts.data.display());
    if data.is_empty() {
        return Err(AppError::Usage(format!("{what} has no samples")));
    }
    let binding = Binding::for_training(spec, &data, &what)?;
    let slot = plan_slot(spec, &binding, int8.input_len(), &what)?;
    let (label, target) = match kind {
        LossKind::Classification { label, .. } => (label_slot(spec, label), None),
        LossKind::Binary { target } | LossKind::Regression { target } => {
            (None, feature_slot(spec, target))
        }
        LossKind::Other => (None, None),
    };
    let mut acc = Accumulator::new(kind, true);
    let batcher = Batcher::new(binding, BATCH);
    run_batches(&mut int8, &data, batcher, slot, |b, scores| {
        let labels = label.map_or(&[][..], |k| b.labels(k));
        let targets = target.map_or(&[][..], |k| b.features(k));
        acc.add(scores, labels, targets);
    })?;
    let metrics: Metrics = acc.finish();
    println!(
        "{} (int8) on {} ({} samples):",
        spec.name,
        data_opts.data.display(),
        data.len()
    );
    let e = Eval { loss: 0.0, metrics };
    print!("{}", report::metrics_text(&e, &classes, spec));
    Ok(())
}

/// `predict --int8`: the rows `predict` writes, from the int8 model.
pub(super) fn predict<M: Model + Default>(
    weights: &Path,
    data_opts: &DataOpts,
    plan: Option<PlanFn>,
) -> Result<(String, usize), AppError> {
    let (model, mut int8, classes) = load::<M>(weights, plan, "predict --int8")?;
    let spec = model.spec();
    let data = source::load(
        spec,
        &data_opts.args(&data_opts.data)?,
        Part::Test,
        Use::Predict,
        &classes,
    )?;
    let what = format!("data {}", data_opts.data.display());
    if data.is_empty() {
        return Err(AppError::Usage(format!("{what} has no samples")));
    }
    let binding = Binding::new(spec, &data, &what, |i| i.predict)?;
    let slot = plan_slot(spec, &binding, int8.input_len(), &what)?;
    let width = int8.output_len();
    let mut values = Vec::with_capacity(data.len() * width);
    run_batches(
        &mut int8,
        &data,
        Batcher::new(binding, BATCH),
        slot,
        |_, s| values.extend_from_slice(s),
    )?;
    let rows = data.len();
    if spec.loss.kind == LossKind::Other || width != spec.loss.scores {
        let name = spec.outputs.first().map_or("output", |o| &o.name);
        let p = Prediction {
            name: name.to_string(),
            width,
            values,
        };
        return Ok((report::outputs_csv(&[p]), rows));
    }
    let scores = Scores {
        kind: spec.loss.kind,
        width,
        values,
    };
    Ok((report::predictions_csv(spec, &scores, &classes), rows))
}
