//! Attributions: which input values a trained model's prediction rests
//! on, computed from the input gradient the compiler generates with
//! `explain` ([`Model::input_gradient`], the same symbolic gradients as
//! training), not from a tape replayed at run time.
//!
//! The methods are those Captum offers under the same names:
//!
//! - [`Method::Saliency`]: `|∂score/∂x|` (Simonyan et al., 2014);
//! - [`Method::GradientXInput`]: `x · ∂score/∂x`;
//! - [`Method::IntegratedGradients`]: `(x − x′) · mean over the path of
//!   ∂score/∂x` at the midpoints of `steps` equal segments from the
//!   baseline `x′` to `x` (Sundararajan et al., 2017), the steps batched
//!   through the model's batch; they sum to `score(x) − score(x′)`
//!   (completeness) up to the quadrature's error, reported as
//!   [`Attribution::delta`];
//! - [`Method::SmoothGrad`]: the mean gradient over `samples` copies of the
//!   input with seeded Gaussian noise of standard deviation `noise` times
//!   the input's range (Smilkov et al., 2017).
//!
//! The score explained is one of the loss's prediction (`spec().loss`: the
//! logits of a classifier, the logit of a binary classifier, the
//! prediction of a regression): the class the model predicts, or a chosen
//! one ([`Target`]). An [`Explainer`] holds every buffer, allocated once
//! for the model's batch; explaining a sample allocates only its result.

use crate::model::{InputKind, Model, StepError};
use crate::rng::Rng;

mod integrated;
mod quadrature;
mod rank;
#[cfg(test)]
mod tests;

pub use quadrature::Quadrature;
pub use rank::spearman;

/// How attributions are computed.
#[derive(Debug, Clone, PartialEq)]
pub enum Method {
    /// `|∂score/∂x|`.
    Saliency,
    /// `x · ∂score/∂x`.
    GradientXInput,
    /// Integrated gradients from `baseline` in `steps` midpoint steps.
    IntegratedGradients {
        /// Path segments (Captum's `n_steps`; 64 keeps completeness within
        /// 1% on the example models).
        steps: usize,
        /// Where the path starts.
        baseline: Baseline,
    },
    /// SmoothGrad: the mean gradient over noisy copies of the input.
    SmoothGrad {
        /// Noisy copies.
        samples: usize,
        /// Noise standard deviation as a fraction of the input's range
        /// (max − min over the sample; Smilkov et al. suggest 0.1–0.2).
        noise: f32,
        /// Seed of the noise.
        seed: u64,
    },
}

impl Method {
    /// Integrated gradients from the zero baseline in 64 steps.
    pub fn integrated_gradients() -> Method {
        Method::IntegratedGradients {
            steps: 64,
            baseline: Baseline::Zeros,
        }
    }

    /// SmoothGrad with 32 samples, noise 15% of the range, seed 0.
    pub fn smoothgrad() -> Method {
        Method::SmoothGrad {
            samples: 32,
            noise: 0.15,
            seed: 0,
        }
    }

    /// The method named `name` (`saliency`, `gradxinput`, `ig`,
    /// `smoothgrad`, as `nnc explain --method` takes them) with its
    /// defaults.
    pub fn from_name(name: &str) -> Option<Method> {
        match name {
            "saliency" => Some(Method::Saliency),
            "gradxinput" | "gradient_x_input" => Some(Method::GradientXInput),
            "ig" | "integrated_gradients" => Some(Method::integrated_gradients()),
            "smoothgrad" => Some(Method::smoothgrad()),
            _ => None,
        }
    }

    /// The short name [`Method::from_name`] reads.
    pub fn name(&self) -> &'static str {
        match self {
            Method::Saliency => "saliency",
            Method::GradientXInput => "gradxinput",
            Method::IntegratedGradients { .. } => "ig",
            Method::SmoothGrad { .. } => "smoothgrad",
        }
    }
}

/// The starting point of integrated gradients.
#[derive(Debug, Clone, PartialEq)]
pub enum Baseline {
    /// All zeros (Captum's default).
    Zeros,
    /// Every value the same.
    Constant(f32),
    /// One sample per input `predict` reads, each as long as one sample of
    /// that input (the embeddings of a token input attributed through them
    /// start from zero; token ids are never interpolated).
    Sample(Vec<Vec<f32>>),
}

/// Which score is explained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Target {
    /// The class the model predicts for the sample (the largest logit; the
    /// one score of a binary classifier or a regression).
    #[default]
    Predicted,
    /// This score (class index).
    Class(usize),
}

/// What went wrong explaining a sample.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// The model failed (including [`StepError::NotGenerated`] for a model
    /// compiled without `explain`).
    #[error(transparent)]
    Step(#[from] StepError),
    /// The model has no input gradient to attribute with.
    #[error("`{model}` has no float input to attribute to (compile it with `explain`)")]
    NoGradientInput {
        /// The model's name.
        model: String,
    },
    /// A class outside the prediction.
    #[error("class {class} is not one of the {classes} scores")]
    Class {
        /// The class asked for.
        class: usize,
        /// Scores per sample.
        classes: usize,
    },
    /// A sample or baseline of the wrong size.
    #[error("`{name}`: expected {expected} values for one sample, found {found}")]
    Length {
        /// The input.
        name: String,
        /// Values per sample.
        expected: usize,
        /// Values given.
        found: usize,
    },
    /// A token id outside the embedding table.
    #[error("`{name}`: token id {value} is not one of 0..{vocab}")]
    Token {
        /// The token input.
        name: String,
        /// The id given.
        value: f32,
        /// The table's rows.
        vocab: usize,
    },
    /// A zero step or sample count.
    #[error("{what} must be at least 1")]
    Count {
        /// `steps` or `samples`.
        what: &'static str,
    },
}

/// The attributions of one sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Attribution {
    /// The method's name ([`Method::name`]).
    pub method: &'static str,
    /// The score explained.
    pub class: usize,
    /// That score at the sample.
    pub score: f32,
    /// The sample's scores (all classes).
    pub scores: Vec<f32>,
    /// One attribution per value of each input [`Model::gradient_inputs`]
    /// names, in that order.
    pub values: Vec<Vec<f32>>,
    /// Integrated gradients: Σ attributions − (score(x) − score(baseline)),
    /// the completeness error of the quadrature; 0 for other methods.
    pub delta: f32,
    /// Integrated gradients: score(baseline); 0 for other methods.
    pub baseline_score: f32,
}

impl Attribution {
    /// The sum of every attribution (integrated gradients: ≈ score(x) −
    /// score(baseline)).
    pub fn total(&self) -> f64 {
        self.values
            .iter()
            .flat_map(|v| v.iter())
            .map(|&a| f64::from(a))
            .sum()
    }
}

/// One input `predict` reads, or the embeddings of an embedded token
/// input, as the explainer feeds it.
struct Feed {
    name: String,
    per_sample: usize,
    /// Token ids: fed as the sample has them on every path point and noisy
    /// copy (ids are never interpolated).
    fixed: bool,
    /// Index into the attribution's `values` if it is differentiated.
    grad: Option<usize>,
    /// The batch being fed: `max_batch × per_sample`.
    batch: Vec<f32>,
}

/// A token input attributed through its embeddings
/// ([`Model::embedded_inputs`]).
struct Embedding {
    /// Its token feed.
    ids: usize,
    /// The table's offset in the parameters, its rows and width.
    offset: usize,
    vocab: usize,
    width: usize,
    /// Index into the attribution's `values`.
    grad: usize,
    /// The sample's embeddings.
    sample: Vec<f32>,
}

/// Attributions for a model compiled with `explain`: every buffer is
/// allocated once, for the model's batch.
pub struct Explainer<'m, M: Model + ?Sized> {
    model: &'m mut M,
    /// The inputs `predict` reads, then one feed per embedding.
    feeds: Vec<Feed>,
    /// How many of `feeds` are `predict`'s inputs.
    predict: usize,
    embeddings: Vec<Embedding>,
    width: usize,
    rows: usize,
    cotangent: Vec<f32>,
    grads: Vec<Vec<f32>>,
    scores: Vec<f32>,
    /// How integrated gradients integrate along the path.
    quadrature: Quadrature,
}

impl<'m, M: Model + ?Sized> Explainer<'m, M> {
    /// An explainer of `model`; its batch (`max_batch`) is how many path
    /// points or noisy samples one call of the model computes.
    pub fn new(model: &'m mut M) -> Result<Self, ExplainError> {
        let spec = model.spec();
        let names = model.gradient_inputs();
        if names.is_empty() {
            return Err(ExplainError::NoGradientInput {
                model: spec.name.to_string(),
            });
        }
        let rows = model.max_batch().max(1);
        let embedded = model.embedded_inputs();
        let mut feeds: Vec<Feed> = spec
            .inputs
            .iter()
            .filter(|i| i.predict && i.kind.is_fed_as_feature())
            .map(|i| Feed {
                name: i.name.to_string(),
                per_sample: i.per_sample,
                fixed: matches!(i.kind, InputKind::Tokens { .. }),
                grad: names
                    .iter()
                    .position(|n| *n == i.name)
                    .filter(|_| !embedded.iter().any(|e| e.0 == i.name)),
                batch: vec![0.0; rows * i.per_sample],
            })
            .collect();
        let predict = feeds.len();
        let mut embeddings = Vec::new();
        for &(input, table) in embedded {
            let ids = feeds.iter().position(|f| f.name == input);
            let table = spec.params.iter().find(|p| p.name == table);
            let grad = names.iter().position(|n| *n == input);
            let (Some(ids), Some(table), Some(grad), &[vocab, width]) =
                (ids, table, grad, table.map_or(&[][..], |t| &t.shape[..]))
            else {
                return Err(ExplainError::NoGradientInput {
                    model: spec.name.to_string(),
                });
            };
            let per_sample = feeds[ids].per_sample * width;
            embeddings.push(Embedding {
                ids,
                offset: table.offset,
                vocab,
                width,
                grad,
                sample: vec![0.0; per_sample],
            });
            feeds.push(Feed {
                name: format!("e_{input}"),
                per_sample,
                fixed: false,
                grad: Some(grad),
                batch: vec![0.0; rows * per_sample],
            });
        }
        let grads = names
            .iter()
            .map(|n| {
                let per = feeds
                    .iter()
                    .find(|f| f.grad.is_some() && names.get(f.grad.unwrap_or(0)) == Some(n))
                    .map_or(0, |f| f.per_sample);
                vec![0.0; rows * per]
            })
            .collect();
        let width = spec.loss.scores;
        Ok(Explainer {
            model,
            feeds,
            predict,
            embeddings,
            width,
            rows,
            cotangent: vec![0.0; rows * width],
            grads,
            scores: vec![0.0; rows * width],
            quadrature: Quadrature::default(),
        })
    }

    /// The same explainer with integrated gradients integrating by `rule`
    /// (the default, [`Quadrature::default`], is the rule measured best on
    /// the example models; the others are there to compare against).
    pub fn with_quadrature(mut self, rule: Quadrature) -> Self {
        self.quadrature = rule;
        self
    }

    /// The quadrature rule integrated gradients use.
    pub fn quadrature(&self) -> Quadrature {
        self.quadrature
    }

    /// The names of the inputs a sample is given as (those `predict`
    /// reads, in declaration order).
    pub fn inputs(&self) -> Vec<&str> {
        self.feeds[..self.predict]
            .iter()
            .map(|f| f.name.as_str())
            .collect()
    }

    /// The names of the attributed inputs, the order of
    /// [`Attribution::values`].
    pub fn attributed(&self) -> &'static [&'static str] {
        self.model.gradient_inputs()
    }

    /// The token inputs attributed through their embeddings, with their
    /// tables ([`Model::embedded_inputs`]): their attributions hold one
    /// value per position.
    pub fn embedded(&self) -> &'static [(&'static str, &'static str)] {
        self.model.embedded_inputs()
    }

    /// The model's scores (one row per sample) for the first `rows` rows
    /// of the feeds, with the gradient of `class` in `self.grads`.
    fn run(&mut self, rows: usize, class: usize) -> Result<(), ExplainError> {
        self.cotangent.fill(0.0);
        for r in 0..rows {
            self.cotangent[r * self.width + class] = 1.0;
        }
        let inputs: Vec<&[f32]> = self
            .feeds
            .iter()
            .map(|f| &f.batch[..rows * f.per_sample])
            .collect();
        let mut grads: Vec<&mut [f32]> = self
            .grads
            .iter_mut()
            .map(|g| {
                let per = g.len() / self.rows;
                &mut g[..rows * per]
            })
            .collect();
        self.model.input_gradient(
            &inputs,
            &self.cotangent[..rows * self.width],
            &mut grads,
            &mut self.scores[..rows * self.width],
        )?;
        Ok(())
    }

    /// Attributions of one sample (`sample`: one slice per input `predict`
    /// reads, see [`Explainer::inputs`]) to the score `target` picks.
    pub fn explain(
        &mut self,
        sample: &[&[f32]],
        method: &Method,
        target: Target,
    ) -> Result<Attribution, ExplainError> {
        if sample.len() != self.predict {
            return Err(StepError::Arity {
                what: "input",
                expected: self.predict,
                found: sample.len(),
            }
            .into());
        }
        for (f, s) in self.feeds.iter().zip(sample) {
            if s.len() != f.per_sample {
                return Err(ExplainError::Length {
                    name: f.name.clone(),
                    expected: f.per_sample,
                    found: s.len(),
                });
            }
        }
        // The embeddings of embedded token inputs: the attributed values.
        let mut embeddings = std::mem::take(&mut self.embeddings);
        let looked_up = self.lookup(&mut embeddings, sample);
        let result = looked_up.and_then(|()| {
            let mut full: Vec<&[f32]> = sample.to_vec();
            full.extend(embeddings.iter().map(|e| &e.sample[..]));
            self.explain_full(&full, method, target, &embeddings)
        });
        self.embeddings = embeddings;
        result
    }

    /// Looks up the sample's embeddings in the tables.
    fn lookup(&self, embeddings: &mut [Embedding], sample: &[&[f32]]) -> Result<(), ExplainError> {
        let params = self.model.params();
        for e in embeddings.iter_mut() {
            for (&id, row) in sample[e.ids].iter().zip(e.sample.chunks_mut(e.width)) {
                if !(id >= 0.0 && id.fract() == 0.0 && (id as usize) < e.vocab) {
                    return Err(ExplainError::Token {
                        name: self.feeds[e.ids].name.clone(),
                        value: id,
                        vocab: e.vocab,
                    });
                }
                let at = e.offset + id as usize * e.width;
                row.copy_from_slice(&params[at..at + e.width]);
            }
        }
        Ok(())
    }

    /// [`Explainer::explain`] with the embeddings appended to the sample.
    fn explain_full(
        &mut self,
        sample: &[&[f32]],
        method: &Method,
        target: Target,
        embeddings: &[Embedding],
    ) -> Result<Attribution, ExplainError> {
        for (f, s) in self.feeds.iter().zip(sample) {
            if s.len() != f.per_sample {
                return Err(ExplainError::Length {
                    name: f.name.clone(),
                    expected: f.per_sample,
                    found: s.len(),
                });
            }
        }
        // The sample itself: its scores, the class, its gradient.
        self.fill(|_, _, x, out| out.copy_from_slice(x), sample, 1);
        self.run(1, 0)?;
        let scores = self.scores[..self.width].to_vec();
        let class = match target {
            Target::Predicted => argmax(&scores),
            Target::Class(c) if c < self.width => c,
            Target::Class(c) => {
                return Err(ExplainError::Class {
                    class: c,
                    classes: self.width,
                })
            }
        };
        if class != 0 {
            self.run(1, class)?;
        }
        let score = scores[class];
        let mut attribution = Attribution {
            method: method.name(),
            class,
            score,
            scores,
            values: Vec::new(),
            delta: 0.0,
            baseline_score: 0.0,
        };
        attribution.values = match method {
            Method::Saliency => self.gradient_rows(|_, g| g.abs(), sample),
            Method::GradientXInput => self.gradient_rows(|x, g| x * g, sample),
            Method::IntegratedGradients { steps, baseline } => {
                let (values, base) = self.integrated(sample, *steps, baseline, class)?;
                let total: f64 = values.iter().flatten().map(|&a| f64::from(a)).sum();
                attribution.baseline_score = base;
                attribution.delta = (total - f64::from(score - base)) as f32;
                values
            }
            Method::SmoothGrad {
                samples,
                noise,
                seed,
            } => self.smoothgrad(sample, *samples, *noise, *seed, class)?,
        };
        // One attribution per position of an embedded token input: the L2
        // norm over the width of a gradient (saliency, SmoothGrad), the sum
        // of a product with the embedding (gradient × input, integrated
        // gradients, whose completeness the sum keeps).
        let norm = matches!(method, Method::Saliency | Method::SmoothGrad { .. });
        for e in embeddings {
            let v = &mut attribution.values[e.grad];
            *v = v
                .chunks(e.width)
                .map(|c| {
                    if norm {
                        c.iter().map(|a| a * a).sum::<f32>().sqrt()
                    } else {
                        c.iter().sum()
                    }
                })
                .collect();
        }
        Ok(attribution)
    }

    /// `f(x, gradient)` of row 0 for each attributed input.
    fn gradient_rows(&self, f: impl Fn(f32, f32) -> f32, sample: &[&[f32]]) -> Vec<Vec<f32>> {
        let mut out = vec![Vec::new(); self.grads.len()];
        for (feed, x) in self.feeds.iter().zip(sample) {
            if let Some(k) = feed.grad {
                out[k] = x
                    .iter()
                    .zip(&self.grads[k][..feed.per_sample])
                    .map(|(&x, &g)| f(x, g))
                    .collect();
            }
        }
        out
    }

    /// Writes rows `0..rows` of every feed: `make(feed, row, sample, out)`.
    fn fill(
        &mut self,
        mut make: impl FnMut(usize, usize, &[f32], &mut [f32]),
        sample: &[&[f32]],
        rows: usize,
    ) {
        for (i, (feed, x)) in self.feeds.iter_mut().zip(sample).enumerate() {
            for r in 0..rows {
                let out = &mut feed.batch[r * feed.per_sample..(r + 1) * feed.per_sample];
                if feed.fixed {
                    out.copy_from_slice(x);
                } else {
                    make(i, r, x, out);
                }
            }
        }
    }

    /// Adds each row `r`'s gradient of each attributed input, times
    /// `weight(r)`, into `acc`.
    fn accumulate(&self, rows: usize, weight: impl Fn(usize) -> f64, acc: &mut [Vec<f64>]) {
        for (k, g) in self.grads.iter().enumerate() {
            let per = acc[k].len();
            for r in 0..rows {
                let w = weight(r);
                for (a, &v) in acc[k].iter_mut().zip(&g[r * per..(r + 1) * per]) {
                    *a += w * f64::from(v);
                }
            }
        }
    }

    fn smoothgrad(
        &mut self,
        sample: &[&[f32]],
        samples: usize,
        noise: f32,
        seed: u64,
        class: usize,
    ) -> Result<Vec<Vec<f32>>, ExplainError> {
        if samples == 0 {
            return Err(ExplainError::Count { what: "samples" });
        }
        let sigma: Vec<f32> = sample
            .iter()
            .map(|x| {
                let (lo, hi) = x
                    .iter()
                    .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| {
                        (l.min(v), h.max(v))
                    });
                noise * (hi - lo).max(0.0)
            })
            .collect();
        let mut rng = Rng::new(seed);
        let mut acc = self.grads_shape();
        let mut k = 0;
        while k < samples {
            let rows = self.rows.min(samples - k);
            // Sample by sample, input by input: the noise does not depend
            // on how many samples one call of the model takes.
            for r in 0..rows {
                for ((feed, x), &s) in self.feeds.iter_mut().zip(sample).zip(&sigma) {
                    let out = &mut feed.batch[r * feed.per_sample..(r + 1) * feed.per_sample];
                    if feed.fixed {
                        out.copy_from_slice(x);
                        continue;
                    }
                    rng.fill_normal(out, 0.0, s);
                    for (o, &xv) in out.iter_mut().zip(x.iter()) {
                        *o += xv;
                    }
                }
            }
            self.run(rows, class)?;
            self.accumulate(rows, |_| 1.0, &mut acc);
            k += rows;
        }
        Ok(acc
            .into_iter()
            .map(|a| a.into_iter().map(|g| (g / samples as f64) as f32).collect())
            .collect())
    }

    /// Zeroed accumulators, one sample of each attributed input.
    fn grads_shape(&self) -> Vec<Vec<f64>> {
        self.grads
            .iter()
            .map(|g| vec![0.0; g.len() / self.rows])
            .collect()
    }
}

/// The index of the largest value (the first of ties; 0 when empty).
fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}
