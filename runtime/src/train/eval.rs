//! Loss and accuracy of a model on a dataset, in chunks of its maximum batch.

use super::{FitError, Layout};
use crate::data::{Dataset, Labels};
use crate::model::{Batch, Model};

/// A model's quality on a dataset.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Eval {
    /// Mean loss over the samples.
    pub loss: f64,
    /// Fraction of samples whose first output's argmax equals the label;
    /// `None` when the first output does not have one value per class.
    pub accuracy: Option<f64>,
}

/// Measures `model` on `data` (features plus class labels): mean loss with
/// [`Model::loss`] and accuracy with [`Model::predict`], in chunks of
/// [`Model::max_batch`] samples. The parameters are not changed.
pub fn evaluate<M: Model + ?Sized>(model: &mut M, data: &Dataset) -> Result<Eval, FitError> {
    Evaluator::new(model)?.run(model, data)
}

/// Output buffers for evaluation, allocated once per run of `fit`.
pub(super) struct Evaluator {
    layout: Layout,
    chunk: usize,
    /// One buffer per declared output, `chunk × per_sample` values.
    outputs: Vec<Vec<f32>>,
    /// Values per sample of each output.
    widths: Vec<usize>,
    /// Whether the first output has one value per class.
    scores: bool,
}

impl Evaluator {
    pub(super) fn new<M: Model + ?Sized>(model: &M) -> Result<Self, FitError> {
        let spec = model.spec();
        let layout = Layout::of(spec)?;
        let chunk = model.max_batch();
        if chunk == 0 {
            return Err(FitError::Unsupported {
                model: spec.name,
                reason: "its maximum batch is 0".into(),
            });
        }
        let widths: Vec<usize> = spec.outputs.iter().map(|o| o.per_sample).collect();
        let scores = widths.first() == Some(&(layout.classes as usize));
        Ok(Evaluator {
            layout,
            chunk,
            outputs: widths.iter().map(|w| vec![0.0; chunk * w]).collect(),
            widths,
            scores,
        })
    }

    pub(super) fn run<M: Model + ?Sized>(
        &mut self,
        model: &mut M,
        data: &Dataset,
    ) -> Result<Eval, FitError> {
        self.layout.check(data, "dataset")?;
        let Labels::Classes { values, .. } = data.labels() else {
            unreachable!("Layout::check accepts class labels only")
        };
        let f = self.layout.features;
        let n = data.len();
        let mut loss_sum = 0.0f64;
        let mut correct = 0usize;
        let mut start = 0;
        while start < n {
            let rows = self.chunk.min(n - start);
            let x = &data.features()[start * f..(start + rows) * f];
            let y = &values[start..start + rows];
            let inputs = [x];
            let labels = [y];
            let loss = model.loss(&Batch {
                inputs: &inputs,
                labels: &labels,
            })?;
            loss_sum += f64::from(loss) * rows as f64;
            if self.scores {
                let mut outs: Vec<&mut [f32]> = self
                    .outputs
                    .iter_mut()
                    .zip(&self.widths)
                    .map(|(b, &w)| &mut b[..rows * w])
                    .collect();
                model.predict(&inputs, &mut outs)?;
                let k = self.widths[0];
                correct += outs[0]
                    .chunks_exact(k)
                    .zip(y)
                    .filter(|(row, &label)| argmax(row) == label as usize)
                    .count();
            }
            start += rows;
        }
        Ok(Eval {
            loss: loss_sum / n as f64,
            accuracy: self.scores.then(|| correct as f64 / n as f64),
        })
    }
}

/// Index of the largest value (the first on ties; NaN never wins).
fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] || row[best].is_nan() {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::argmax;

    #[test]
    fn argmax_takes_first_of_ties_and_skips_nan() {
        assert_eq!(argmax(&[0.1, 0.7, 0.7, 0.2]), 1);
        assert_eq!(argmax(&[f32::NAN, 0.3, 0.5]), 2);
        assert_eq!(argmax(&[-1.0]), 0);
    }
}
