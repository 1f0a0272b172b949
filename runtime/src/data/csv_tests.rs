//! The fast number path against `str::parse`, its oracle.

use super::{fast_number, number};
use crate::rng::Rng;

/// Every string the fast path accepts parses to the same bits as
/// `str::parse::<f32>`; the ones it declines still parse through [`number`].
#[test]
fn fast_number_matches_std_parse_bit_for_bit() {
    let mut fixed: Vec<String> = [
        "0",
        "-0",
        "+0",
        "1",
        "1.",
        ".5",
        "-.5",
        "0.1",
        "0.0001",
        "3.1415927",
        "16777216",
        "16777217",
        "-16777216",
        "0.0000000001",
        "0.00000000001",
        "1234567.8",
        "99999999",
        "4294967295",
        "4294967296",
        "1e3",
        "1.5e-3",
        "",
        ".",
        "-",
        "+",
        "1.2.3",
        "1-2",
        " 1",
        "0x10",
        "inf",
        "NaN",
        "0.000000000000000000001",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut rng = Rng::new(7);
    for _ in 0..200_000 {
        let digits = 1 + rng.below(12) as usize;
        let point = rng.below(digits as u64 + 2) as usize;
        let mut s = String::new();
        match rng.below(4) {
            0 => s.push('-'),
            1 => s.push('+'),
            _ => {}
        }
        for i in 0..digits {
            if i == point {
                s.push('.');
            }
            s.push(char::from(b'0' + rng.below(10) as u8));
        }
        fixed.push(s);
    }
    let mut fast = 0;
    for s in &fixed {
        match fast_number(s.as_bytes()) {
            Some(v) => {
                fast += 1;
                let want: f32 = s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
                assert_eq!(v.to_bits(), want.to_bits(), "{s}");
            }
            None => {
                if let Ok(want) = s.parse::<f32>() {
                    if want.is_finite() {
                        assert_eq!(number(s).unwrap().to_bits(), want.to_bits(), "{s}");
                    }
                }
            }
        }
    }
    // Most short decimals take the fast path.
    assert!(fast > fixed.len() / 2, "{fast} of {}", fixed.len());
}
