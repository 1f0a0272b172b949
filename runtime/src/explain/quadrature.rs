//! Quadrature rules for integrated gradients: where on the path from the
//! baseline (`α = 0`) to the sample (`α = 1`) the gradient is evaluated,
//! and how each evaluation is weighted. Every rule takes exactly `steps`
//! gradient evaluations, so `steps` keeps its meaning whatever the rule.

/// How integrated gradients integrate the path gradient over `α ∈ [0, 1]`
/// with `steps` gradient evaluations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Quadrature {
    /// The midpoints of `steps` equal segments, each weighted `1/steps`
    /// (Captum's `riemann_middle`).
    Midpoint,
    /// `steps` equally spaced points including both ends, the ends
    /// weighted half (Captum's `riemann_trapezoid`).
    Trapezoid,
    /// Composite Simpson over `steps` equally spaced points including
    /// both ends (an even number of points closes with Simpson's 3/8 rule
    /// over the last three segments).
    Simpson,
    /// Gauss–Legendre nodes and weights on `[0, 1]` (Captum's default,
    /// `gausslegend`): exact for polynomials of degree `2·steps − 1`, and
    /// its nodes crowd towards both ends of the path.
    GaussLegendre,
    /// Adaptive, for gradients with kinks (ReLU): an eighth of the steps
    /// equally spaced including both ends, the rest, `max_batch` at a time,
    /// at the midpoints of the segments `[a, b]` over which the attributions'
    /// integrand changes most, `(b − a)·Σᵢ |(xᵢ − x′ᵢ)·(gᵢ(b) − gᵢ(a))|`.
    /// Each segment's length is then split between the gradients at its
    /// two ends at the kink `c` the scores place in it, `s(b) − s(a) = (c −
    /// a)·h(a) + (b − c)·h(b)` (`h = ∂s/∂α`, clamped to the segment): exact
    /// for every value when the gradient is constant on both sides of one
    /// kink (a piecewise-linear network), the trapezoid rule when the slope
    /// is linear. It keeps every point's gradient until the weights are
    /// known (`steps` gradients of one sample).
    #[default]
    Adaptive,
}

impl Quadrature {
    /// Every rule, in the order the comparison table lists them.
    pub const ALL: [Quadrature; 5] = [
        Quadrature::Midpoint,
        Quadrature::Trapezoid,
        Quadrature::Simpson,
        Quadrature::GaussLegendre,
        Quadrature::Adaptive,
    ];

    /// The rule's name (`midpoint`, `trapezoid`, `simpson`,
    /// `gauss-legendre`, `adaptive`).
    pub fn name(self) -> &'static str {
        match self {
            Quadrature::Midpoint => "midpoint",
            Quadrature::Trapezoid => "trapezoid",
            Quadrature::Simpson => "simpson",
            Quadrature::GaussLegendre => "gauss-legendre",
            Quadrature::Adaptive => "adaptive",
        }
    }

    /// The rule named `name` ([`Quadrature::name`]).
    pub fn from_name(name: &str) -> Option<Quadrature> {
        Quadrature::ALL.into_iter().find(|q| q.name() == name)
    }

    /// The `steps` points `α` and their weights (summing to 1) of a fixed
    /// rule; `None` for [`Quadrature::Adaptive`], whose points depend on
    /// the gradients. Rules that need both ends fall back to the midpoint
    /// rule for one point.
    pub(super) fn nodes(self, steps: usize) -> Option<Vec<(f64, f64)>> {
        Some(match self {
            Quadrature::Adaptive => return None,
            _ if steps == 0 => Vec::new(),
            Quadrature::Midpoint => midpoint(steps),
            _ if steps == 1 => midpoint(1),
            Quadrature::Trapezoid => trapezoid(steps),
            Quadrature::Simpson => simpson(steps),
            Quadrature::GaussLegendre => gauss_legendre(steps),
        })
    }
}

fn midpoint(n: usize) -> Vec<(f64, f64)> {
    let w = 1.0 / n as f64;
    (0..n).map(|k| ((k as f64 + 0.5) * w, w)).collect()
}

/// `n ≥ 2` points `k / (n − 1)` with the given weights per segment width.
fn equispaced(n: usize, weights: impl Fn(usize) -> f64) -> Vec<(f64, f64)> {
    let h = 1.0 / (n - 1) as f64;
    (0..n).map(|k| (k as f64 * h, weights(k) * h)).collect()
}

/// The trapezoid rule, or the midpoint rule for one point (the adaptive
/// rule's fallback below three steps).
pub(super) fn trapezoid_or_midpoint(n: usize) -> Vec<(f64, f64)> {
    if n < 2 {
        midpoint(n)
    } else {
        trapezoid(n)
    }
}

fn trapezoid(n: usize) -> Vec<(f64, f64)> {
    equispaced(n, |k| if k == 0 || k == n - 1 { 0.5 } else { 1.0 })
}

fn simpson(n: usize) -> Vec<(f64, f64)> {
    if n == 2 {
        return trapezoid(2);
    }
    // Simpson 1/3 over the first `even` segments, 3/8 over the rest (0 or 3).
    let segments = n - 1;
    let even = if segments % 2 == 0 {
        segments
    } else {
        segments - 3
    };
    let mut w = vec![0.0; n];
    for s in (0..even).step_by(2) {
        w[s] += 1.0 / 3.0;
        w[s + 1] += 4.0 / 3.0;
        w[s + 2] += 1.0 / 3.0;
    }
    if even < segments {
        for (i, c) in [3.0, 9.0, 9.0, 3.0].iter().enumerate() {
            w[even + i] += c / 8.0;
        }
    }
    equispaced(n, |k| w[k])
}

/// The roots of the Legendre polynomial `P_n` by Newton's method from
/// Tricomi's estimate, mapped from `[−1, 1]` to `[0, 1]`; `O(n²)` work.
fn gauss_legendre(n: usize) -> Vec<(f64, f64)> {
    let mut out = vec![(0.0, 0.0); n];
    let nf = n as f64;
    for i in 0..n.div_ceil(2) {
        // The i-th root from the top, then Newton on P_n.
        let mut x = (std::f64::consts::PI * (i as f64 + 0.75) / (nf + 0.5)).cos();
        let mut dp = 1.0;
        for _ in 0..100 {
            let (p, d) = legendre(n, x);
            dp = d;
            let dx = p / d;
            x -= dx;
            if dx.abs() < 1e-15 {
                break;
            }
        }
        let (_, d) = legendre(n, x);
        if d.is_finite() {
            dp = d;
        }
        let w = 2.0 / ((1.0 - x * x) * dp * dp);
        // Symmetric pairs ±x, each weight halved by the map to [0, 1].
        out[i] = ((1.0 - x) / 2.0, w / 2.0);
        out[n - 1 - i] = ((1.0 + x) / 2.0, w / 2.0);
    }
    out
}

/// `P_n(x)` and `P_n′(x)` by the three-term recurrence.
fn legendre(n: usize, x: f64) -> (f64, f64) {
    let (mut p0, mut p1) = (1.0, x);
    for k in 2..=n {
        let kf = k as f64;
        let p2 = ((2.0 * kf - 1.0) * x * p1 - (kf - 1.0) * p0) / kf;
        p0 = p1;
        p1 = p2;
    }
    let d = n as f64 * (x * p1 - p0) / (x * x - 1.0);
    (p1, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `∫₀¹ α^d dα = 1/(d+1)` by the rule.
    fn moment(q: Quadrature, steps: usize, d: i32) -> f64 {
        q.nodes(steps)
            .unwrap()
            .iter()
            .map(|&(a, w)| w * a.powi(d))
            .sum()
    }

    #[test]
    fn every_rule_has_steps_points_in_the_unit_interval_and_weights_summing_to_one() {
        assert_eq!(Quadrature::Adaptive.nodes(64), None);
        assert_eq!(
            Quadrature::from_name("adaptive"),
            Some(Quadrature::Adaptive)
        );
        for q in &Quadrature::ALL[..4] {
            let q = *q;
            for steps in [1, 2, 3, 4, 5, 6, 7, 16, 63, 64, 257] {
                let nodes = q.nodes(steps).unwrap();
                assert_eq!(nodes.len(), steps, "{q:?} {steps}");
                assert!(nodes
                    .iter()
                    .all(|&(a, w)| (0.0..=1.0).contains(&a) && w > 0.0));
                assert!(nodes.windows(2).all(|p| p[0].0 < p[1].0), "{q:?} {steps}");
                assert!((moment(q, steps, 0) - 1.0).abs() < 1e-12, "{q:?} {steps}");
            }
            assert_eq!(Quadrature::from_name(q.name()), Some(q));
        }
    }

    #[test]
    fn each_rule_is_exact_to_its_degree() {
        // Midpoint and trapezoid: linear; Simpson: cubic (3/8 too);
        // Gauss–Legendre with n points: degree 2n − 1.
        let exact = |q: Quadrature, steps: usize, d: i32| {
            (moment(q, steps, d) - 1.0 / f64::from(d + 1)).abs() < 1e-12
        };
        for steps in [4, 5, 8, 9] {
            assert!(exact(Quadrature::Midpoint, steps, 1));
            assert!(exact(Quadrature::Trapezoid, steps, 1));
            assert!(exact(Quadrature::Simpson, steps, 3), "{steps}");
            assert!(!exact(Quadrature::Simpson, steps, 5), "{steps}");
        }
        for steps in [1, 2, 3, 8, 20, 64] {
            assert!(exact(
                Quadrature::GaussLegendre,
                steps,
                2 * steps as i32 - 1
            ));
        }
        // Against the tabulated 3-point rule: nodes 1/2 ∓ √(3/5)/2, 5/18, 8/18.
        let g = Quadrature::GaussLegendre.nodes(3).unwrap();
        let r = (0.6f64).sqrt() / 2.0;
        for (&(a, w), (ea, ew)) in g.iter().zip([
            (0.5 - r, 5.0 / 18.0),
            (0.5, 8.0 / 18.0),
            (0.5 + r, 5.0 / 18.0),
        ]) {
            assert!((a - ea).abs() < 1e-14 && (w - ew).abs() < 1e-14);
        }
    }
}
