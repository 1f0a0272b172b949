//! What every test crate of the workspace shares: one seeded generator and
//! one tolerance helper.
//!
//! Both are written here, not taken from the code under test: the runtime
//! and the contract crate have their own SplitMix64 (`nnc_spec::hash`) for
//! shuffling, dropout and initialisation, and a test that drew its data
//! from the generator it checks could not see that generator's bugs.

/// SplitMix64 (Steele, Lea and Flood 2014): a tiny seeded generator for
/// test values, the same sequence on every platform.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1), with 53 random bits.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, 1) as an `f32`, with 24 random bits (every value
    /// exactly representable).
    pub fn unit_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// Uniform in `0..n` (`n > 0`; the modulo bias is irrelevant for tests).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// `n` values uniform in [lo, hi), as `f32` ([`Rng::unit_f32`] scaled).
    pub fn uniform_f32(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| lo + (hi - lo) * self.unit_f32()).collect()
    }
}

/// The largest difference between `got` and `want`, relative to the
/// largest magnitude in `want` but never to less than `floor` (so a
/// tensor of near-zeros compares absolutely, at `floor`'s scale).
///
/// One scale per tensor rather than per element: f32 rounding error grows
/// with the magnitudes summed, not with each element's own.
///
/// # Panics
/// When the lengths differ (a shape bug, not a numerical difference).
pub fn rel_err(got: &[f32], want: &[f64], floor: f64) -> f64 {
    assert_eq!(got.len(), want.len(), "lengths differ");
    let scale = want.iter().fold(floor, |m, v| m.max(v.abs()));
    got.iter()
        .zip(want)
        .map(|(&g, &w)| (f64::from(g) - w).abs())
        .fold(0.0, f64::max)
        / scale
}

/// Asserts [`rel_err`]`(got, want, floor) <= tol`, naming `what` and the
/// worst element when it is not.
#[track_caller]
pub fn assert_close(what: &str, got: &[f32], want: &[f64], tol: f64, floor: f64) {
    let err = rel_err(got, want, floor);
    if err > tol {
        let (i, g, w) = got
            .iter()
            .zip(want)
            .enumerate()
            .map(|(i, (&g, &w))| (i, g, w))
            .max_by(|a, b| {
                let d = |x: &(usize, f32, f64)| (f64::from(x.1) - x.2).abs();
                d(a).total_cmp(&d(b))
            })
            .expect("a difference implies an element");
        panic!("{what}: relative error {err:e} > {tol:e}; worst element {i} is {g}, want {w}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_matches_its_published_outputs() {
        // The first outputs for seed 0 (the reference implementation's).
        let mut r = Rng::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(r.next_u64(), 0x06C4_5D18_8009_454F);
    }

    #[test]
    fn draws_stay_in_their_ranges() {
        let mut r = Rng::new(7);
        for _ in 0..10_000 {
            assert!((0.0..1.0).contains(&r.unit()));
            assert!((0.0..1.0).contains(&r.unit_f32()));
            assert!((-2.0..3.0).contains(&r.range(-2.0, 3.0)));
            assert!(r.below(5) < 5);
        }
        assert!(r
            .uniform_f32(1000, -1.0, 1.0)
            .iter()
            .all(|v| (-1.0..1.0).contains(v)));
    }

    #[test]
    fn rel_err_scales_by_the_largest_magnitude_or_the_floor() {
        assert_eq!(rel_err(&[1.0, 2.0], &[1.0, 2.0], 1e-3), 0.0);
        // 0.1 off on a tensor whose largest magnitude is 4: 0.025.
        assert!((rel_err(&[1.1, 4.0], &[1.0, 4.0], 1e-3) - 0.025).abs() < 1e-6);
        // Near-zero values compare at the floor's scale.
        assert!((rel_err(&[1e-3], &[0.0], 1.0) - 1e-3).abs() < 1e-9);
    }

    #[test]
    #[should_panic(expected = "worst element 1 is 3, want 2")]
    fn assert_close_names_the_worst_element() {
        assert_close("x", &[1.0, 3.0], &[1.0, 2.0], 1e-4, 1.0);
    }
}
