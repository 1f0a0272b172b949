//! Integrated gradients: the path gradient integrated by the explainer's
//! [`Quadrature`](super::Quadrature) rule, the path points batched through the model.

use super::{Baseline, ExplainError, Explainer};
use crate::model::{Model, StepError};

impl<M: Model + ?Sized> Explainer<'_, M> {
    /// Attributions of `sample` to `class` from `baseline` in `steps`
    /// gradient evaluations, and score(baseline).
    pub(super) fn integrated(
        &mut self,
        sample: &[&[f32]],
        steps: usize,
        baseline: &Baseline,
        class: usize,
    ) -> Result<(Vec<Vec<f32>>, f32), ExplainError> {
        if steps == 0 {
            return Err(ExplainError::Count { what: "steps" });
        }
        let base = self.baseline(baseline)?;
        // score(baseline), for the completeness check.
        self.fill(|i, _, _, out| out.copy_from_slice(&base[i]), sample, 1);
        self.run(1, class)?;
        let base_score = self.scores[class];
        let acc = match self.quadrature.nodes(steps) {
            Some(nodes) => self.fixed(sample, &base, &nodes, class)?,
            None if steps < 3 => {
                let nodes = super::quadrature::trapezoid_or_midpoint(steps);
                self.fixed(sample, &base, &nodes, class)?
            }
            None => self.adaptive(sample, &base, steps, class)?,
        };
        let mut out = vec![Vec::new(); acc.len()];
        for (i, (feed, x)) in self.feeds.iter().zip(sample).enumerate() {
            if let Some(k) = feed.grad {
                out[k] = acc[k]
                    .iter()
                    .zip(x.iter().zip(&base[i]))
                    .map(|(&g, (&xv, &bv))| ((f64::from(xv) - f64::from(bv)) * g) as f32)
                    .collect();
            }
        }
        Ok((out, base_score))
    }

    /// Σ weight · gradient over the path points `nodes` (α, weight).
    fn fixed(
        &mut self,
        sample: &[&[f32]],
        base: &[Vec<f32>],
        nodes: &[(f64, f64)],
        class: usize,
    ) -> Result<Vec<Vec<f64>>, ExplainError> {
        let mut acc = self.grads_shape();
        for batch in nodes.chunks(self.rows) {
            self.fill_path(sample, base, batch.iter().map(|n| n.0));
            self.run(batch.len(), class)?;
            self.accumulate(batch.len(), |r| batch[r].1, &mut acc);
        }
        Ok(acc)
    }

    /// Rows `0..` of every feed at the path points `alphas`.
    fn fill_path(
        &mut self,
        sample: &[&[f32]],
        base: &[Vec<f32>],
        alphas: impl ExactSizeIterator<Item = f64> + Clone,
    ) {
        let rows = alphas.len();
        let alphas: Vec<f32> = alphas.map(|a| a as f32).collect();
        self.fill(
            |i, r, x, out| {
                for ((o, &xv), &bv) in out.iter_mut().zip(x).zip(&base[i]) {
                    *o = bv + alphas[r] * (xv - bv);
                }
            },
            sample,
            rows,
        );
    }

    /// [`Quadrature::Adaptive`](super::Quadrature::Adaptive): `steps ≥ 3`
    /// gradient evaluations.
    fn adaptive(
        &mut self,
        sample: &[&[f32]],
        base: &[Vec<f32>],
        steps: usize,
        class: usize,
    ) -> Result<Vec<Vec<f64>>, ExplainError> {
        let first = steps.div_ceil(2).max(2);
        let grid: Vec<f64> = (0..first).map(|k| k as f64 / (first - 1) as f64).collect();
        let mut points = self.points(sample, base, &grid, class)?;
        while points.len() < steps {
            // How far each segment's trapezoid misses s(b) − s(a).
            let mut miss: Vec<(f64, usize)> = points
                .windows(2)
                .enumerate()
                .map(|(i, p)| {
                    let trapezoid = (p[1].alpha - p[0].alpha) * (p[0].slope + p[1].slope) / 2.0;
                    ((trapezoid - (p[1].score - p[0].score)).abs(), i)
                })
                .collect();
            miss.sort_by(|a, b| b.0.total_cmp(&a.0));
            let take = self.rows.min(steps - points.len());
            let mids: Vec<f64> = miss
                .iter()
                .take(take)
                .map(|&(_, i)| (points[i].alpha + points[i + 1].alpha) / 2.0)
                .collect();
            let new = self.points(sample, base, &mids, class)?;
            points.extend(new);
            points.sort_by(|a, b| a.alpha.total_cmp(&b.alpha));
        }
        // The trapezoid rule on the points placed.
        let mut acc = self.grads_shape();
        for (p, point) in points.iter().enumerate() {
            let lo = points[p.saturating_sub(1)].alpha;
            let hi = points[(p + 1).min(points.len() - 1)].alpha;
            let w = (hi - lo) / 2.0;
            for (a, g) in acc.iter_mut().zip(&point.grads) {
                for (a, &g) in a.iter_mut().zip(g) {
                    *a += w * f64::from(g);
                }
            }
        }
        Ok(acc)
    }

    /// The score, path slope and gradients at each of `alphas`.
    fn points(
        &mut self,
        sample: &[&[f32]],
        base: &[Vec<f32>],
        alphas: &[f64],
        class: usize,
    ) -> Result<Vec<Point>, ExplainError> {
        let mut out = Vec::with_capacity(alphas.len());
        for batch in alphas.chunks(self.rows) {
            self.fill_path(sample, base, batch.iter().copied());
            self.run(batch.len(), class)?;
            for (r, &alpha) in batch.iter().enumerate() {
                let grads: Vec<Vec<f32>> = self
                    .grads
                    .iter()
                    .map(|g| {
                        let per = g.len() / self.rows;
                        g[r * per..(r + 1) * per].to_vec()
                    })
                    .collect();
                // ∂s/∂α = Σ ∂s/∂x · (x − x′) over the attributed values.
                let mut slope = 0.0;
                for (i, (feed, x)) in self.feeds.iter().zip(sample).enumerate() {
                    if let Some(k) = feed.grad {
                        for ((&g, &xv), &bv) in grads[k].iter().zip(x.iter()).zip(&base[i]) {
                            slope += f64::from(g) * (f64::from(xv) - f64::from(bv));
                        }
                    }
                }
                out.push(Point {
                    alpha,
                    score: f64::from(self.scores[r * self.width + class]),
                    slope,
                    grads,
                });
            }
        }
        Ok(out)
    }

    /// The baseline of every feed (embeddings start from zero unless the
    /// baseline is a constant).
    fn baseline(&self, baseline: &Baseline) -> Result<Vec<Vec<f32>>, ExplainError> {
        Ok(match baseline {
            Baseline::Zeros => self.feeds.iter().map(|f| vec![0.0; f.per_sample]).collect(),
            Baseline::Constant(c) => self.feeds.iter().map(|f| vec![*c; f.per_sample]).collect(),
            Baseline::Sample(b) => {
                for (f, v) in self.feeds.iter().zip(b) {
                    if v.len() != f.per_sample {
                        return Err(ExplainError::Length {
                            name: format!("baseline of {}", f.name),
                            expected: f.per_sample,
                            found: v.len(),
                        });
                    }
                }
                if b.len() != self.predict {
                    return Err(StepError::Arity {
                        what: "baseline",
                        expected: self.predict,
                        found: b.len(),
                    }
                    .into());
                }
                let mut b = b.clone();
                b.extend(
                    self.feeds[self.predict..]
                        .iter()
                        .map(|f| vec![0.0; f.per_sample]),
                );
                b
            }
        })
    }
}

/// One evaluated point of the path.
struct Point {
    alpha: f64,
    /// The score there.
    score: f64,
    /// `∂s/∂α` there.
    slope: f64,
    /// The gradient of each attributed input there.
    grads: Vec<Vec<f32>>,
}
