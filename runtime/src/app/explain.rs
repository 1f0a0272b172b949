//! `explain`: the attributions of one sample (see [`crate::explain`]),
//! drawn as a PNG heat map next to the input for an image input, or
//! printed as a table of features ranked by attribution for a tabular one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;

use super::source::Use;
use super::{AppError, DataOpts, WeightsArgs};
use crate::data::{Batcher, Binding};
use crate::explain::{Attribution, Baseline, Explainer, Method, Quadrature, Target};
use crate::model::{LossKind, Model};

#[derive(Args)]
pub(super) struct ExplainArgs {
    #[command(flatten)]
    data: DataOpts,
    #[command(flatten)]
    weights: WeightsArgs,
    /// Which sample of the data (0-based row).
    #[arg(long, default_value_t = 0)]
    sample: usize,
    /// saliency, gradxinput, ig (integrated gradients) or smoothgrad.
    #[arg(long, default_value = "ig")]
    method: String,
    /// The class to explain, by index or name (default: the predicted one).
    #[arg(long)]
    class: Option<String>,
    /// Integrated gradients: path steps.
    #[arg(long, default_value_t = 64)]
    steps: usize,
    /// Integrated gradients: the baseline's value (every input value).
    #[arg(long, default_value_t = 0.0)]
    baseline: f32,
    /// SmoothGrad: noisy samples.
    #[arg(long, default_value_t = 32)]
    samples: usize,
    /// SmoothGrad: noise standard deviation as a fraction of the input's range.
    #[arg(long, default_value_t = 0.15)]
    noise: f32,
    /// SmoothGrad: seed of the noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Draw the input as an image of this shape, C,H,W (default: the data's
    /// shape when it has two or three dimensions).
    #[arg(long)]
    image: Option<String>,
    /// The heat map (PNG) of an image input (default: explain-SAMPLE-METHOD.png).
    #[arg(short = 'o', long = "output")]
    output: Option<PathBuf>,
    /// Rows of the feature table (default: every feature).
    #[arg(long)]
    top: Option<usize>,
}

pub(super) fn explain<M: Model + Default>(a: &ExplainArgs) -> Result<(), AppError> {
    let (mut model, classes, data) = a.weights.load::<M>(&a.data, Use::Predict)?;
    let spec = model.spec();
    if a.sample >= data.len() {
        return Err(AppError::Usage(format!(
            "--sample {}: {} has {} samples (0..{})",
            a.sample,
            a.data.data.display(),
            data.len(),
            data.len()
        )));
    }
    let method = match a.method.as_str() {
        "ig" | "integrated_gradients" => Method::IntegratedGradients {
            steps: a.steps,
            baseline: Baseline::Constant(a.baseline),
        },
        "smoothgrad" => Method::SmoothGrad {
            samples: a.samples,
            noise: a.noise,
            seed: a.seed,
        },
        other => Method::from_name(other).ok_or_else(|| {
            AppError::Usage(format!(
                "--method {other}: the methods are saliency, gradxinput, ig and smoothgrad"
            ))
        })?,
    };
    let names = class_names(spec, &classes);
    let target = match &a.class {
        None => Target::Predicted,
        Some(c) => Target::Class(match c.parse::<usize>() {
            Ok(i) => i,
            Err(_) => names.iter().position(|n| n == c).ok_or_else(|| {
                AppError::Usage(format!(
                    "--class {c}: not a class index{}",
                    if names.is_empty() {
                        String::new()
                    } else {
                        format!(" or one of {}", names.join(", "))
                    }
                ))
            })?,
        }),
    };
    // The sample's inputs, gathered as `predict` gathers them.
    let binding = Binding::new(spec, &data, "dataset", |i| i.predict)?;
    let columns: Vec<Option<usize>> = (0..spec.inputs.len())
        .map(|i| binding.column_of(i))
        .collect();
    let mut batcher = Batcher::new(binding, 1);
    batcher.gather_range(&data, a.sample..a.sample + 1)?;
    let fed: Vec<usize> = spec
        .inputs
        .iter()
        .enumerate()
        .filter(|(_, i)| i.predict && i.kind.is_fed_as_feature())
        .map(|(k, _)| k)
        .collect();
    let sample: Vec<Vec<f32>> = (0..fed.len())
        .map(|k| batcher.features(k).to_vec())
        .collect();
    let slices: Vec<&[f32]> = sample.iter().map(Vec::as_slice).collect();
    let mut explainer = Explainer::new(&mut model).map_err(explain_error)?;
    let attributed = explainer.attributed();
    let embedded = model_embedded(&explainer);
    let result = explainer
        .explain(&slices, &method, target)
        .map_err(explain_error)?;
    let class_name = |c: usize| names.get(c).cloned().unwrap_or_else(|| c.to_string());
    println!(
        "{} on sample {} of {}: {} (score {:.4}){}",
        spec.name,
        a.sample,
        a.data.data.display(),
        describe_prediction(spec.loss.kind, &result, &class_name),
        result.score,
        match target {
            Target::Predicted => String::new(),
            Target::Class(c) => format!("; explaining class {}", class_name(c)),
        }
    );
    println!(
        "method: {}",
        describe_method(&method, explainer.quadrature())
    );
    if let Method::IntegratedGradients { .. } = method {
        let diff = result.score - result.baseline_score;
        println!(
            "completeness: attributions sum to {:.5}; score(x) - score(baseline) = {:.5} (difference {:.2e}, {:.2}%)",
            result.total(),
            diff,
            result.delta,
            100.0 * f64::from(result.delta.abs()) / f64::from(diff.abs()).max(1e-12)
        );
    }
    for (k, name) in attributed.iter().enumerate() {
        let Some(input) = spec.inputs.iter().position(|i| i.name == *name) else {
            continue;
        };
        let Some(fed_at) = fed.iter().position(|&f| f == input) else {
            continue;
        };
        let column = columns[input].map(|c| &data.columns()[c]);
        if embedded.contains(name) {
            // Token ids, attributed through their embeddings: one value per
            // position, ranked (no image of ids).
            println!(
                "`{name}` attributed through its embeddings, one value per position ({})",
                if matches!(method, Method::Saliency | Method::SmoothGrad { .. }) {
                    "L2 norm of the gradient over the embedding width"
                } else {
                    "summed over the embedding width"
                }
            );
            print!(
                "{}",
                table(name, &sample[fed_at], &result.values[k], None, a.top, true)
            );
            continue;
        }
        let shape = match &a.image {
            Some(text) => Some(image_shape(text, spec.inputs[input].per_sample)?),
            None => column.and_then(|c| match *c.shape() {
                [h, w] => Some([1, h, w]),
                [ch, h, w] => Some([ch, h, w]),
                _ => None,
            }),
        };
        match shape {
            Some(shape) => {
                let path = a.output.clone().unwrap_or_else(|| {
                    PathBuf::from(format!("explain-{}-{}.png", a.sample, method.name()))
                });
                let png = super::heatmap::render(
                    &sample[fed_at],
                    &result.values[k],
                    shape,
                    signed(&method),
                )
                .map_err(|reason| AppError::Output {
                    path: path.clone(),
                    reason,
                })?;
                write(&path, &png)?;
                println!(
                    "heat map of `{name}` ({}x{}, input left, attribution right): {}",
                    shape[2],
                    shape[1],
                    path.display()
                );
            }
            None => {
                let fields = column.and_then(|c| c.origin().fields.clone());
                print!(
                    "{}",
                    table(
                        name,
                        &sample[fed_at],
                        &result.values[k],
                        fields,
                        a.top,
                        false
                    )
                );
            }
        }
    }
    Ok(())
}

/// The token inputs the explainer attributes through their embeddings.
fn model_embedded<M: Model + ?Sized>(e: &Explainer<'_, M>) -> Vec<&'static str> {
    e.embedded().iter().map(|p| p.0).collect()
}

fn explain_error(e: crate::explain::ExplainError) -> AppError {
    AppError::Usage(e.to_string())
}

/// Class names of the classification's label input, when the weights
/// carry them.
fn class_names(
    spec: &crate::model::ModelSpec,
    classes: &BTreeMap<String, Arc<[String]>>,
) -> Vec<String> {
    let label = match spec.loss.kind {
        LossKind::Classification { label, .. } => label,
        _ => return Vec::new(),
    };
    classes
        .get(spec.inputs[label].name.as_ref())
        .map(|n| n.to_vec())
        .unwrap_or_default()
}

fn describe_prediction(kind: LossKind, r: &Attribution, name: &dyn Fn(usize) -> String) -> String {
    match kind {
        LossKind::Classification { .. } => {
            let best = (0..r.scores.len())
                .max_by(|&i, &j| r.scores[i].total_cmp(&r.scores[j]))
                .unwrap_or(0);
            format!("predicted class {}", name(best))
        }
        LossKind::Binary { .. } => {
            format!("predicted {}", if r.scores[0] > 0.0 { "1" } else { "0" })
        }
        _ => format!("predicted {:.4}", r.scores.first().copied().unwrap_or(0.0)),
    }
}

fn describe_method(m: &Method, rule: Quadrature) -> String {
    match m {
        Method::Saliency => "saliency |d score / d x|".into(),
        Method::GradientXInput => "gradient x input".into(),
        Method::IntegratedGradients { steps, baseline } => format!(
            "integrated gradients, {steps} steps ({} rule) from the baseline {}",
            rule.name(),
            match baseline {
                Baseline::Zeros => "0".to_string(),
                Baseline::Constant(c) => c.to_string(),
                Baseline::Sample(_) => "sample".to_string(),
            }
        ),
        Method::SmoothGrad {
            samples,
            noise,
            seed,
        } => format!("SmoothGrad, {samples} samples, noise {noise} of the range, seed {seed}"),
    }
}

/// Whether the method's attributions carry a sign worth drawing.
fn signed(m: &Method) -> bool {
    !matches!(m, Method::Saliency)
}

/// `C,H,W` whose product is the input's width.
fn image_shape(text: &str, width: usize) -> Result<[usize; 3], AppError> {
    let dims: Vec<usize> = text
        .split(',')
        .map(|d| d.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|_| AppError::Usage(format!("--image {text}: expected C,H,W")))?;
    let shape = match dims.as_slice() {
        [c, h, w] => [*c, *h, *w],
        [h, w] => [1, *h, *w],
        _ => return Err(AppError::Usage(format!("--image {text}: expected C,H,W"))),
    };
    if shape.iter().product::<usize>() != width || shape.contains(&0) {
        return Err(AppError::Usage(format!(
            "--image {text}: the input has {width} values per sample"
        )));
    }
    Ok(shape)
}

/// The features (or, for `tokens`, the positions with their token ids)
/// ranked by the magnitude of their attribution.
fn table(
    input: &str,
    x: &[f32],
    attr: &[f32],
    fields: Option<Arc<[String]>>,
    top: Option<usize>,
    tokens: bool,
) -> String {
    let names: Vec<String> = match fields {
        Some(f) if f.len() == attr.len() => f.to_vec(),
        _ => (0..attr.len()).map(|j| format!("{input}[{j}]")).collect(),
    };
    let mut order: Vec<usize> = (0..attr.len()).collect();
    order.sort_by(|&i, &j| attr[j].abs().total_cmp(&attr[i].abs()));
    let total: f32 = attr.iter().map(|a| a.abs()).sum();
    let width = names.iter().map(String::len).max().unwrap_or(7).max(7);
    let (feature, value) = if tokens {
        ("position", "token")
    } else {
        ("feature", "value")
    };
    let mut out = format!(
        "{:>4}  {:<width$}  {:>12}  {:>12}  {:>7}\n",
        "rank", feature, value, "attribution", "share"
    );
    for (rank, &j) in order.iter().take(top.unwrap_or(usize::MAX)).enumerate() {
        let shown = if tokens {
            format!("{}", x[j])
        } else {
            format!("{:.5}", x[j])
        };
        out.push_str(&format!(
            "{:>4}  {:<width$}  {:>12}  {:>+12.5}  {:>6.1}%\n",
            rank + 1,
            names[j],
            shown,
            attr[j],
            100.0 * attr[j].abs() / total.max(f32::MIN_POSITIVE)
        ));
    }
    out
}

/// Writes the PNG: atomically for a regular file, in place for a device
/// or FIFO (never renamed over).
fn write(path: &Path, bytes: &[u8]) -> Result<(), AppError> {
    crate::checkpoint::write_output(path, bytes).map_err(|e| AppError::Output {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}
