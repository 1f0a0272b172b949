//! The stable hashes both sides compute: SplitMix64 (seeding, and the
//! dropout mask), FNV-1a (model hashes, checksums, agreement checks).
//!
//! Dropout's mask is a pure function of (seed, step, layer salt, global
//! element index) through [`mix`]: the compiler's f64 interpreter and the
//! runtime's kernel call the same functions here, so generated code and
//! the oracle drop the same elements, and a data-parallel shard (starting
//! at a global sample offset) draws exactly the mask the whole batch would.

/// SplitMix64's increment (the golden ratio in 64 bits).
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's finaliser: a bijective mix of 64 bits.
#[inline]
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(GOLDEN);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One step of SplitMix64: advances `state` and returns the next output
/// (the expansion of a 64-bit seed that xoshiro's authors recommend).
#[inline]
pub fn splitmix64(state: &mut u64) -> u64 {
    let out = mix(*state);
    *state = state.wrapping_add(GOLDEN);
    out
}

/// The per-step, per-layer key of a dropout mask.
#[inline]
pub fn dropout_key(seed: u64, step: u64, salt: u64) -> u64 {
    mix(mix(seed ^ salt.rotate_left(32)) ^ step)
}

/// The threshold a drop probability compares against: an element is kept
/// when the top 53 bits of its hash are at least `rate · 2^53`.
#[inline]
pub fn dropout_threshold(rate: f64) -> u64 {
    (rate * 9_007_199_254_740_992.0) as u64
}

/// Whether the element at global flat index `index` survives: the top 53
/// bits of its hash are at least `threshold` ([`dropout_threshold`]).
#[inline]
pub fn dropout_keep(key: u64, index: u64, threshold: u64) -> bool {
    (mix(key ^ index) >> 11) >= threshold
}

/// FNV-1a over bytes: a stable 64-bit hash, the same on every platform and
/// release.
pub fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// FNV-1a over the little-endian bytes of `values`: equal exactly when
/// every value is bit-identical (up to collisions).
pub fn fnv1a_f32(values: &[f32]) -> u64 {
    fnv1a(values.iter().flat_map(|v| v.to_bits().to_le_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_reference_outputs_for_seed_zero() {
        // First outputs of the reference splitmix64.c with x = 0.
        let mut s = 0u64;
        assert_eq!(splitmix64(&mut s), 0xe220_a839_7b1d_cdaf);
        assert_eq!(splitmix64(&mut s), 0x6e78_9e6a_a1b9_65f4);
        assert_eq!(splitmix64(&mut s), 0x06c4_5d18_8009_454f);
        assert_eq!(splitmix64(&mut s), 0xf88b_b8a8_724c_81ec);
    }

    #[test]
    fn fnv1a_reference_values() {
        // The FNV authors' test vectors for FNV-1a 64.
        assert_eq!(fnv1a(*b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(*b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(*b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn dropout_threshold_and_keep_are_exact_at_the_ends() {
        assert_eq!(dropout_threshold(0.0), 0);
        assert!(dropout_keep(1, 2, 0), "rate 0 keeps everything");
        assert!(!dropout_keep(1, 2, dropout_threshold(1.0) + 1));
    }
}
