//! Metrics per kind of loss, accumulated batch by batch.
//!
//! The model's [`LossKind`] says what its loss compares, and so what
//! describes it: accuracy, top-k accuracy and a confusion matrix for
//! classification (token accuracy when there is a label per position),
//! precision, recall and F1 for binary targets, MAE, RMSE and R² for
//! regression. Sums are kept in `f64`/`u64` so the result does not depend
//! on how the data was cut into batches.

use crate::model::LossKind;

/// The confusion matrix is kept only up to this many classes (it has the
/// square of it entries).
pub const MAX_CONFUSION_CLASSES: usize = 1024;

/// Counts of (true class, predicted class) pairs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confusion {
    /// Number of classes.
    pub classes: usize,
    /// `counts[t * classes + p]`: samples of class `t` predicted as `p`.
    pub counts: Vec<u64>,
}

impl Confusion {
    /// Samples of true class `t` predicted as `p`.
    pub fn get(&self, t: usize, p: usize) -> u64 {
        self.counts[t * self.classes + p]
    }

    /// The matrix as text: one row per true class, one column per
    /// predicted class, with `names` as labels when given.
    pub fn render(&self, names: Option<&[String]>) -> String {
        use std::fmt::Write;
        let label = |i: usize| {
            names
                .and_then(|n| n.get(i).cloned())
                .unwrap_or_else(|| i.to_string())
        };
        let labels: Vec<String> = (0..self.classes).map(label).collect();
        let width = self
            .counts
            .iter()
            .map(|c| c.to_string().len())
            .chain(labels.iter().map(String::len))
            .max()
            .unwrap_or(1);
        let head = labels.iter().map(String::len).max().unwrap_or(1).max(4);
        let mut s = format!("{:>head$} │", "true");
        for l in &labels {
            let _ = write!(s, " {l:>width$}");
        }
        s.push_str("  ← predicted\n");
        for (t, l) in labels.iter().enumerate() {
            let _ = write!(s, "{l:>head$} │");
            for p in 0..self.classes {
                let _ = write!(s, " {:>width$}", self.get(t, p));
            }
            s.push('\n');
        }
        s
    }
}

/// What describes a model's predictions, by the kind of its loss.
#[derive(Debug, Clone, PartialEq)]
pub enum Metrics {
    /// A loss without a known prediction to score (a custom objective).
    None,
    /// Classes, one label per sample or per position (then the counts are
    /// over positions: token accuracy).
    Classification {
        /// Fraction of labels whose highest score is the label.
        accuracy: f64,
        /// `(k, fraction)`: labels among the `k` highest scores (k = 5,
        /// reported when there are more than 5 classes).
        top_k: Option<(usize, f64)>,
        /// Whether there is a label per position (a sequence model):
        /// `accuracy` is then token accuracy.
        per_position: bool,
        /// Up to [`MAX_CONFUSION_CLASSES`] classes.
        confusion: Option<Confusion>,
    },
    /// Binary targets in `[0, 1]` against logits (positive above 0).
    Binary {
        /// Fraction of values on the right side.
        accuracy: f64,
        /// True positives over predicted positives (0 when none is predicted).
        precision: f64,
        /// True positives over actual positives (0 when there are none).
        recall: f64,
        /// Harmonic mean of precision and recall.
        f1: f64,
    },
    /// Real-valued targets.
    Regression {
        /// Mean absolute error.
        mae: f64,
        /// Root mean squared error.
        rmse: f64,
        /// Coefficient of determination, `1 − SS_res / SS_tot` (`NaN` when
        /// the targets are constant).
        r2: f64,
    },
}

impl Metrics {
    /// The one number a run is judged by besides the loss, with its name
    /// (`accuracy`, `token_accuracy`, `f1`, `rmse`).
    pub fn main(&self) -> Option<(&'static str, f64)> {
        match self {
            Metrics::None => None,
            Metrics::Classification {
                accuracy,
                per_position,
                ..
            } => Some((
                if *per_position {
                    "token_accuracy"
                } else {
                    "accuracy"
                },
                *accuracy,
            )),
            Metrics::Binary { f1, .. } => Some(("f1", *f1)),
            Metrics::Regression { rmse, .. } => Some(("rmse", *rmse)),
        }
    }

    /// Every number, named, in a fixed order (the confusion matrix aside).
    pub fn named(&self) -> Vec<(&'static str, f64)> {
        match self {
            Metrics::None => Vec::new(),
            Metrics::Classification {
                accuracy,
                top_k,
                per_position,
                ..
            } => {
                let mut v = vec![(
                    if *per_position {
                        "token_accuracy"
                    } else {
                        "accuracy"
                    },
                    *accuracy,
                )];
                if let Some((_, t)) = top_k {
                    v.push(("top5_accuracy", *t));
                }
                v
            }
            Metrics::Binary {
                accuracy,
                precision,
                recall,
                f1,
            } => vec![
                ("accuracy", *accuracy),
                ("precision", *precision),
                ("recall", *recall),
                ("f1", *f1),
            ],
            Metrics::Regression { mae, rmse, r2 } => {
                vec![("mae", *mae), ("rmse", *rmse), ("r2", *r2)]
            }
        }
    }
}

/// Top-k accuracy's k.
const TOP_K: usize = 5;

/// Running sums for [`Metrics`]; allocated once per evaluation run.
#[derive(Debug, Clone)]
pub(crate) struct Accumulator {
    kind: LossKind,
    count: u64,
    correct: u64,
    top_k: u64,
    confusion: Vec<u64>,
    tp: u64,
    fp: u64,
    fn_: u64,
    abs: f64,
    sq: f64,
    sum: f64,
    sum_sq: f64,
}

impl Accumulator {
    /// Empty sums for a loss of this kind; with `confusion`, a confusion
    /// matrix too (classification up to [`MAX_CONFUSION_CLASSES`]).
    pub(crate) fn new(kind: LossKind, confusion: bool) -> Self {
        let confusion = match kind {
            LossKind::Classification { classes, .. }
                if confusion && (classes as usize) <= MAX_CONFUSION_CLASSES =>
            {
                vec![0; classes as usize * classes as usize]
            }
            _ => Vec::new(),
        };
        Accumulator {
            kind,
            count: 0,
            correct: 0,
            top_k: 0,
            confusion,
            tp: 0,
            fp: 0,
            fn_: 0,
            abs: 0.0,
            sq: 0.0,
            sum: 0.0,
            sum_sq: 0.0,
        }
    }

    /// Starts over.
    pub(crate) fn reset(&mut self) {
        let kind = self.kind;
        let mut confusion = std::mem::take(&mut self.confusion);
        confusion.fill(0);
        *self = Accumulator {
            confusion,
            ..Accumulator::new(LossKind::Other, false)
        };
        self.kind = kind;
    }

    /// Adds a batch: `scores` is the prediction the loss compares (logits,
    /// or the regression output), `labels` the class labels of a
    /// classification loss, `targets` the real targets of the others.
    pub(crate) fn add(&mut self, scores: &[f32], labels: &[u32], targets: &[f32]) {
        match self.kind {
            LossKind::Other => {}
            LossKind::Classification { classes, .. } => {
                let k = classes as usize;
                for (row, &label) in scores.chunks_exact(k).zip(labels) {
                    let label = label as usize;
                    let best = argmax(row);
                    self.count += 1;
                    self.correct += u64::from(best == label);
                    // Rank of the label: scores strictly above it (ties
                    // count in the label's favour, as argmax's first-wins
                    // rule would not; top-k is the lenient measure).
                    let above = row.iter().filter(|&&s| s > row[label]).count();
                    self.top_k += u64::from(above < TOP_K);
                    if !self.confusion.is_empty() {
                        self.confusion[label * k + best] += 1;
                    }
                }
            }
            LossKind::Binary { .. } => {
                for (&s, &t) in scores.iter().zip(targets) {
                    let (pred, truth) = (s > 0.0, t >= 0.5);
                    self.count += 1;
                    self.correct += u64::from(pred == truth);
                    self.tp += u64::from(pred && truth);
                    self.fp += u64::from(pred && !truth);
                    self.fn_ += u64::from(!pred && truth);
                }
            }
            LossKind::Regression { .. } => {
                for (&p, &t) in scores.iter().zip(targets) {
                    let (p, t) = (f64::from(p), f64::from(t));
                    self.count += 1;
                    self.abs += (p - t).abs();
                    self.sq += (p - t) * (p - t);
                    self.sum += t;
                    self.sum_sq += t * t;
                }
            }
        }
    }

    /// The metrics of everything added.
    pub(crate) fn finish(&self) -> Metrics {
        let n = self.count.max(1) as f64;
        match self.kind {
            LossKind::Other => Metrics::None,
            LossKind::Classification {
                classes, positions, ..
            } => Metrics::Classification {
                accuracy: self.correct as f64 / n,
                top_k: (classes as usize > TOP_K).then(|| (TOP_K, self.top_k as f64 / n)),
                per_position: positions > 1,
                confusion: (!self.confusion.is_empty()).then(|| Confusion {
                    classes: classes as usize,
                    counts: self.confusion.clone(),
                }),
            },
            LossKind::Binary { .. } => {
                let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
                let precision = ratio(self.tp, self.tp + self.fp);
                let recall = ratio(self.tp, self.tp + self.fn_);
                let f1 = if precision + recall == 0.0 {
                    0.0
                } else {
                    2.0 * precision * recall / (precision + recall)
                };
                Metrics::Binary {
                    accuracy: self.correct as f64 / n,
                    precision,
                    recall,
                    f1,
                }
            }
            LossKind::Regression { .. } => {
                let mean = self.sum / n;
                let ss_tot = self.sum_sq - n * mean * mean;
                Metrics::Regression {
                    mae: self.abs / n,
                    rmse: (self.sq / n).sqrt(),
                    r2: if ss_tot > 0.0 {
                        1.0 - self.sq / ss_tot
                    } else {
                        f64::NAN
                    },
                }
            }
        }
    }
}

/// Index of the largest value (the first on ties; NaN never wins).
pub(crate) fn argmax(row: &[f32]) -> usize {
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
    use super::*;

    #[test]
    fn argmax_takes_first_of_ties_and_skips_nan() {
        assert_eq!(argmax(&[0.1, 0.7, 0.7, 0.2]), 1);
        assert_eq!(argmax(&[f32::NAN, 0.3, 0.5]), 2);
        assert_eq!(argmax(&[-1.0]), 0);
    }

    fn classification(classes: u32) -> LossKind {
        LossKind::Classification {
            label: 1,
            classes,
            positions: 1,
        }
    }

    #[test]
    fn classification_counts_hits_top_k_and_confusion() {
        let mut acc = Accumulator::new(classification(6), true);
        // Label 2 ranked first; label 0 ranked sixth; label 5 ranked second.
        let scores = [
            0.0, 0.1, 0.9, 0.2, 0.3, 0.4, //
            0.0, 0.5, 0.4, 0.3, 0.2, 0.1, //
            0.0, 0.1, 0.2, 0.3, 0.9, 0.5,
        ];
        acc.add(&scores, &[2, 0, 5], &[]);
        let Metrics::Classification {
            accuracy,
            top_k,
            confusion,
            ..
        } = acc.finish()
        else {
            panic!("classification metrics")
        };
        assert_eq!(accuracy, 1.0 / 3.0);
        assert_eq!(top_k, Some((5, 2.0 / 3.0)));
        let c = confusion.expect("6 classes have a confusion matrix");
        assert_eq!((c.get(2, 2), c.get(0, 1), c.get(5, 4)), (1, 1, 1));
        assert_eq!(c.counts.iter().sum::<u64>(), 3);
    }

    #[test]
    fn binary_precision_recall_f1_by_hand() {
        let mut acc = Accumulator::new(LossKind::Binary { target: 1 }, false);
        // tp: 2, fp: 1, fn: 1, tn: 1.
        acc.add(
            &[1.0, 2.0, 0.5, -1.0, -3.0],
            &[],
            &[1.0, 1.0, 0.0, 1.0, 0.0],
        );
        let m = acc.finish();
        let Metrics::Binary {
            accuracy,
            precision,
            recall,
            f1,
        } = m
        else {
            panic!("binary metrics")
        };
        assert_eq!(accuracy, 3.0 / 5.0);
        assert_eq!(precision, 2.0 / 3.0);
        assert_eq!(recall, 2.0 / 3.0);
        assert!((f1 - 2.0 / 3.0).abs() < 1e-15);
    }

    #[test]
    fn regression_against_closed_forms_and_batching() {
        let p = [1.0f32, 2.0, 3.0, 4.0];
        let t = [1.5f32, 2.0, 2.0, 6.0];
        let mut whole = Accumulator::new(LossKind::Regression { target: 1 }, false);
        whole.add(&p, &[], &t);
        let mut halves = Accumulator::new(LossKind::Regression { target: 1 }, false);
        halves.add(&p[..2], &[], &t[..2]);
        halves.add(&p[2..], &[], &t[2..]);
        assert_eq!(whole.finish(), halves.finish());
        let Metrics::Regression { mae, rmse, r2 } = whole.finish() else {
            panic!("regression metrics")
        };
        assert_eq!(mae, (0.5 + 0.0 + 1.0 + 2.0) / 4.0);
        assert_eq!(rmse, ((0.25 + 0.0 + 1.0 + 4.0) / 4.0f64).sqrt());
        let mean = (1.5 + 2.0 + 2.0 + 6.0) / 4.0;
        let ss_tot: f64 = t.iter().map(|&y| (f64::from(y) - mean).powi(2)).sum();
        assert!((r2 - (1.0 - 5.25 / ss_tot)).abs() < 1e-12);
    }

    #[test]
    fn reset_keeps_the_kind_and_clears_the_sums() {
        let mut acc = Accumulator::new(classification(3), true);
        acc.add(&[0.0, 1.0, 0.0], &[1], &[]);
        acc.reset();
        acc.add(&[1.0, 0.0, 0.0], &[1], &[]);
        let Metrics::Classification { accuracy, .. } = acc.finish() else {
            panic!()
        };
        assert_eq!(accuracy, 0.0);
    }
}
