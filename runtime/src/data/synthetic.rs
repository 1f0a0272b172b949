//! Data generated in code, for examples and benchmarks that must not
//! depend on a download.

use crate::rng::Rng;

/// The sequence-reversal task (`examples/sequence`, bench W4): `n`
/// sequences of `len` digits drawn uniformly below `digits` from `rng`, one
/// after another, and each sequence reversed, both flat (`n × len` ids).
pub fn reversed_sequences(
    rng: &mut Rng,
    n: usize,
    len: usize,
    digits: u32,
) -> (Vec<u32>, Vec<u32>) {
    let mut tokens = Vec::with_capacity(n * len);
    let mut reversed = vec![0u32; n * len];
    for s in 0..n {
        for i in 0..len {
            let d = rng.below(u64::from(digits)) as u32;
            tokens.push(d);
            reversed[s * len + len - 1 - i] = d;
        }
    }
    (tokens, reversed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_sequence_is_reversed_in_place_and_digits_stay_below_the_bound() {
        let (x, y) = reversed_sequences(&mut Rng::new(3), 5, 7, 10);
        assert_eq!((x.len(), y.len()), (35, 35));
        assert!(x.iter().all(|&d| d < 10));
        for (a, b) in x.chunks(7).zip(y.chunks(7)) {
            assert!(a.iter().eq(b.iter().rev()));
        }
        // The same stream as drawing the digits one by one.
        let mut rng = Rng::new(3);
        let direct: Vec<u32> = (0..35).map(|_| rng.below(10) as u32).collect();
        assert_eq!(x, direct);
    }
}
