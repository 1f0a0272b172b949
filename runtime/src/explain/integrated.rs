//! Integrated gradients: the path gradient integrated by the explainer's
//! [`Quadrature`](super::Quadrature) rule, the path points batched through the model.

use super::{Baseline, ExplainError, Explainer};
use crate::model::{Model, StepError};

/// [`Quadrature::Adaptive`](super::Quadrature::Adaptive) spends
/// `1/ADAPTIVE_GRID` of its steps on an equally spaced grid, the rest where
/// the gradient changes most (measured on the example models: a larger
/// share of the steps on the grid leaves the transformer's kinks less
/// resolved, a smaller one misses more of the path).
const ADAPTIVE_GRID: usize = 8;

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
        let first = steps.div_ceil(ADAPTIVE_GRID).max(2);
        let grid: Vec<f64> = (0..first).map(|k| k as f64 / (first - 1) as f64).collect();
        let mut points = self.points(sample, base, &grid, class)?;
        // x − x′ of every attributed value, as the gradients are laid out.
        let mut path: Vec<Vec<f64>> = vec![Vec::new(); self.grads.len()];
        for (i, (feed, x)) in self.feeds.iter().zip(sample).enumerate() {
            if let Some(k) = feed.grad {
                path[k] = x
                    .iter()
                    .zip(&base[i])
                    .map(|(&xv, &bv)| f64::from(xv) - f64::from(bv))
                    .collect();
            }
        }
        while points.len() < steps {
            // (b − a)·Σᵢ |(xᵢ − x′ᵢ)·(gᵢ(b) − gᵢ(a))|: how much the
            // attributions could be off over the segment.
            let mut change: Vec<(f64, usize)> = points
                .windows(2)
                .enumerate()
                .map(|(i, p)| {
                    let mut c = 0.0;
                    for ((ga, gb), d) in p[0].grads.iter().zip(&p[1].grads).zip(&path) {
                        for ((&u, &v), &d) in ga.iter().zip(gb).zip(d) {
                            c += ((f64::from(v) - f64::from(u)) * d).abs();
                        }
                    }
                    (c * (p[1].alpha - p[0].alpha), i)
                })
                .collect();
            change.sort_by(|a, b| b.0.total_cmp(&a.0));
            let take = self.rows.min(steps - points.len());
            let mids: Vec<f64> = change
                .iter()
                .take(take)
                .map(|&(_, i)| (points[i].alpha + points[i + 1].alpha) / 2.0)
                .collect();
            let new = self.points(sample, base, &mids, class)?;
            points.extend(new);
            points.sort_by(|a, b| a.alpha.total_cmp(&b.alpha));
        }
        // Each segment's length split between its two ends at its kink.
        let mut weights = vec![0.0; points.len()];
        for (i, p) in points.windows(2).enumerate() {
            let left = split(&p[0], &p[1]);
            weights[i] += left;
            weights[i + 1] += p[1].alpha - p[0].alpha - left;
        }
        let mut acc = self.grads_shape();
        for (point, &w) in points.iter().zip(&weights) {
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

/// How much of the segment `[a, b]` the gradient at `a` stands for (the
/// rest is `b`'s).
///
/// The gradient of a piecewise-linear network (ReLU, max pooling) is
/// constant along the path between the points where a unit switches: with
/// one such kink at `c` in the segment, `∫ₐᵇ ∂s/∂x dα = (c − a)·g(a) + (b −
/// c)·g(b)` exactly, for every input value at once, and `c` follows from
/// the scores, `s(b) − s(a) = (c − a)·h(a) + (b − c)·h(b)` (`h = ∂s/∂α`).
/// A slope linear in α gives the midpoint (the trapezoid rule, exact
/// then). `c` is clamped to the segment, so the weights stay positive; when
/// the slopes at both ends agree it is the midpoint.
fn split(a: &Point, b: &Point) -> f64 {
    let len = b.alpha - a.alpha;
    let jump = a.slope - b.slope;
    if jump.abs() > f64::EPSILON * (a.slope.abs() + b.slope.abs()) {
        ((b.score - a.score - len * b.slope) / jump).clamp(0.0, len)
    } else {
        len / 2.0
    }
}
