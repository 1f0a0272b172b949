//! Tests of the broadcasting, shape, reduction, loss and matmul kernels and
//! of the workspace splitting, through the flat `kernels::…` paths
//! generated code uses.

use super::*;

#[test]
fn broadcasting_matches_index_arithmetic() {
    // [2, 3] + [3] and [2, 1] * [1, 3]
    let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    let b = [10.0, 20.0, 30.0];
    let mut out = [0.0; 6];
    zip_broadcast(&mut out, &[2, 3], &a, &[2, 3], &b, &[3], |x, y| x + y);
    assert_eq!(out, [11.0, 22.0, 33.0, 14.0, 25.0, 36.0]);
    zip_broadcast(
        &mut out,
        &[2, 3],
        &[1.0, 2.0],
        &[2, 1],
        &b,
        &[1, 3],
        |x, y| x * y,
    );
    assert_eq!(out, [10.0, 20.0, 30.0, 20.0, 40.0, 60.0]);
    let mut s = [0.0; 3];
    sum_to(&mut s, &[3], &a, &[2, 3]);
    assert_eq!(s, [5.0, 7.0, 9.0]);
    let mut s = [0.0; 2];
    sum_to(&mut s, &[2, 1], &a, &[2, 3]);
    assert_eq!(s, [6.0, 15.0]);
}

/// The row-major index of multi-index `ix` in `dims` under numpy
/// broadcasting (`dims` right-aligned, size-1 dimensions repeat).
fn naive_index(ix: &[usize], dims: &[usize]) -> usize {
    let off = ix.len() - dims.len();
    dims.iter().enumerate().fold(0, |acc, (d, &n)| {
        acc * n + if n == 1 { 0 } else { ix[off + d] }
    })
}

fn multi_index(mut flat: usize, dims: &[usize]) -> Vec<usize> {
    let mut ix = vec![0; dims.len()];
    for d in (0..dims.len()).rev() {
        ix[d] = flat % dims[d];
        flat /= dims[d];
    }
    ix
}

/// Random shapes up to rank 5, each operand broadcasting in random
/// dimensions (the row merging must never change an index).
#[test]
fn broadcasting_kernels_equal_index_arithmetic_on_random_shapes() {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    for _ in 0..500 {
        let rank = 1 + next(5);
        let out: Vec<usize> = (0..rank).map(|_| 1 + next(4)).collect();
        let operand = |next: &mut dyn FnMut(usize) -> usize| -> Vec<usize> {
            let skip = next(rank + 1).min(rank - 1);
            out[skip..]
                .iter()
                .map(|&n| if next(3) == 0 { 1 } else { n })
                .collect()
        };
        let (ad, bd) = (operand(&mut next), operand(&mut next));
        let len = |d: &[usize]| d.iter().product::<usize>();
        let a: Vec<f32> = (0..len(&ad)).map(|i| (i % 7) as f32).collect();
        // Small values: every sum is exact in f32, whatever its order.
        let b: Vec<f32> = (0..len(&bd)).map(|i| (i * 7 % 5) as f32 + 0.5).collect();
        let mut got = vec![f32::NAN; len(&out)];
        zip_broadcast(&mut got, &out, &a, &ad, &b, &bd, |x, y| x * 8.0 + y);
        let mut sum = vec![0.0f32; len(&ad)];
        for (flat, g) in got.iter().enumerate() {
            let ix = multi_index(flat, &out);
            let (x, y) = (a[naive_index(&ix, &ad)], b[naive_index(&ix, &bd)]);
            assert_eq!(*g, x * 8.0 + y, "{out:?} {ad:?} {bd:?} at {ix:?}");
            sum[naive_index(&ix, &ad)] += got[flat];
        }
        let mut got_sum = vec![f32::NAN; len(&ad)];
        sum_to(&mut got_sum, &ad, &got, &out);
        assert_eq!(got_sum, sum, "sum_to {out:?} -> {ad:?}");
        let mut perm: Vec<usize> = (0..rank).collect();
        for i in (1..rank).rev() {
            perm.swap(i, next(i + 1));
        }
        let mut t = vec![f32::NAN; got.len()];
        transpose(&mut t, &got, &out, &perm);
        let tdims: Vec<usize> = perm.iter().map(|&p| out[p]).collect();
        for (flat, v) in t.iter().enumerate() {
            let ix = multi_index(flat, &tdims);
            let mut src = vec![0; rank];
            for (i, &p) in perm.iter().enumerate() {
                src[p] = ix[i];
            }
            assert_eq!(
                *v,
                got[naive_index(&src, &out)],
                "transpose {out:?} {perm:?}"
            );
        }
    }
}

/// Transposes large enough for several of [`transpose`]'s blocks and rows:
/// attention's head splits and merges and a matrix with ragged blocks.
#[test]
fn transposes_past_one_block_move_every_element() {
    let cases: [(&[usize], &[usize]); 6] = [
        (&[3, 16, 4, 16], &[0, 2, 1, 3]),
        (&[3, 16, 4, 16], &[0, 2, 3, 1]),
        (&[3, 4, 16, 16], &[0, 2, 1, 3]),
        (&[19, 23], &[1, 0]),
        (&[2, 1, 9, 1, 11], &[4, 1, 2, 3, 0]),
        (&[5, 6, 7], &[0, 1, 2]),
    ];
    for (dims, perm) in cases {
        let x: Vec<f32> = (0..dims.iter().product::<usize>())
            .map(|i| i as f32)
            .collect();
        let mut t = vec![f32::NAN; x.len()];
        transpose(&mut t, &x, dims, perm);
        let tdims: Vec<usize> = perm.iter().map(|&p| dims[p]).collect();
        for (flat, v) in t.iter().enumerate() {
            let ix = multi_index(flat, &tdims);
            let mut src = vec![0; dims.len()];
            for (i, &p) in perm.iter().enumerate() {
                src[p] = ix[i];
            }
            assert_eq!(*v, x[naive_index(&src, dims)], "{dims:?} {perm:?}");
        }
    }
}

#[test]
fn transpose_and_reduce() {
    let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    let mut t = [0.0; 6];
    transpose(&mut t, &a, &[2, 3], &[1, 0]);
    assert_eq!(t, [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    let mut r = [0.0; 3];
    reduce(Reduce::Sum, &mut r, &a, &[2, 3], &[true, false]);
    assert_eq!(r, [5.0, 7.0, 9.0]);
    let mut r = [0.0; 2];
    reduce(Reduce::Max, &mut r, &a, &[2, 3], &[false, true]);
    assert_eq!(r, [3.0, 6.0]);
    let mut r = [0.0; 1];
    reduce(Reduce::Mean, &mut r, &a, &[2, 3], &[true, true]);
    assert_eq!(r, [3.5]);
    // Non-contiguous axes 0 and 2 of [2, 2, 2].
    let x: Vec<f32> = (0..8).map(|v| v as f32).collect();
    let mut r = [0.0; 2];
    reduce(Reduce::Sum, &mut r, &x, &[2, 2, 2], &[true, false, true]);
    assert_eq!(r, [0.0 + 1.0 + 4.0 + 5.0, 2.0 + 3.0 + 6.0 + 7.0]);
}

#[test]
fn losses_have_closed_forms() {
    let logits = [0.0f32; 8];
    let ce = cross_entropy(&logits, &[0, 3], 4);
    assert!((ce - 4f32.ln()).abs() < 1e-6);
    let bce = binary_cross_entropy(&[0.0; 3], &[0.0, 0.5, 1.0]);
    assert!((bce - 2f32.ln()).abs() < 1e-6);
    let mut oh = [9.0; 6];
    one_hot(&mut oh, &[2, 0], 3);
    assert_eq!(oh, [0.0, 0.0, 1.0, 1.0, 0.0, 0.0]);
    let mut s = [0.0; 3];
    softmax(&mut s, &[1000.0, 0.0, 0.0], 1, 3, 1, false);
    assert_eq!(s, [1.0, 0.0, 0.0]);
}

/// Softmax and log-softmax over contiguous rows and over a strided axis
/// give the same bits, within a few ulps of the f64 formula.
#[test]
fn softmax_rows_and_strided_axes_agree_with_f64() {
    let (outer, n, inner) = (3, 17, 5);
    let x: Vec<f32> = (0..outer * n * inner)
        .map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.7)
        .collect();
    for log in [false, true] {
        let mut strided = vec![f32::NAN; x.len()];
        softmax(&mut strided, &x, outer, n, inner, log);
        // The same values with the axis moved last: contiguous rows.
        let mut rows = vec![0.0f32; x.len()];
        transpose(&mut rows, &x, &[outer, n, inner], &[0, 2, 1]);
        let mut got = vec![f32::NAN; x.len()];
        softmax(&mut got, &rows, outer * inner, n, 1, log);
        let mut back = vec![0.0f32; x.len()];
        transpose(&mut back, &got, &[outer, inner, n], &[0, 2, 1]);
        assert_eq!(back, strided, "log {log}");
        for r in rows.chunks(n).zip(got.chunks(n)) {
            let m = r.0.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
            let z: f64 = r.0.iter().map(|&v| (v as f64 - m).exp()).sum();
            for (&v, &g) in r.0.iter().zip(r.1) {
                let want = if log {
                    v as f64 - m - z.ln()
                } else {
                    (v as f64 - m).exp() / z
                };
                assert!(
                    (g as f64 - want).abs() <= 1e-6 * want.abs().max(1.0),
                    "{g} vs {want}"
                );
            }
        }
    }
}

#[test]
fn transposed_operands_equal_explicit_transposes() {
    // a: [m=2, k=3], b: [k=3, n=2]; stored transposed as [3, 2] and [2, 3].
    let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    let b = [1.0, -1.0, 0.5, 2.0, -2.0, 1.0];
    let mut want = [0.0; 4];
    matmul(&mut want, &a, &b, 1, 2, 3, 2, true);
    let (mut at, mut bt) = ([0.0; 6], [0.0; 6]);
    transpose(&mut at, &a, &[2, 3], &[1, 0]);
    transpose(&mut bt, &b, &[3, 2], &[1, 0]);
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        let mut got = [f32::NAN; 4];
        let x = if ta { &at[..] } else { &a[..] };
        let y = if tb { &bt[..] } else { &b[..] };
        matmul_t(&mut got, x, y, 2, 3, 2, ta, tb);
        assert_eq!(got, want, "ta={ta} tb={tb}");
    }
}

#[test]
fn cross_entropy_grad_is_softmax_minus_one_hot_scaled() {
    // Large logits: a naive exp would overflow; the kernel subtracts the max.
    let logits = [1.0f32, 2.0, 3.0, 500.0, 499.0, -3.0];
    let labels = [2u32, 0];
    let scale = 0.5f32;
    let mut out = [f32::NAN; 6];
    cross_entropy_grad(&mut out, &logits, &labels, 3, scale);
    for (r, &l) in labels.iter().enumerate() {
        let row = &logits[r * 3..][..3];
        let m = row
            .iter()
            .fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
        let z: f64 = row.iter().map(|&v| (f64::from(v) - m).exp()).sum();
        for c in 0..3 {
            let p = (f64::from(row[c]) - m).exp() / z;
            let want = (p - f64::from(u8::from(c == l as usize))) * f64::from(scale);
            assert!((f64::from(out[r * 3 + c]) - want).abs() < 1e-6, "({r},{c})");
        }
    }
}

#[test]
fn matmul_then_applies_the_epilogue_to_the_product() {
    let a: Vec<f32> = (0..12).map(|v| v as f32 * 0.5 - 2.0).collect(); // [3, 4]
    let b: Vec<f32> = (0..8).map(|v| 1.0 - v as f32 * 0.25).collect(); // [4, 2]
    let bias = [0.5f32, -4.0];
    let mut want = [0.0; 6];
    matmul(&mut want, &a, &b, 1, 3, 4, 2, true);
    for (i, w) in want.iter_mut().enumerate() {
        *w = (*w + bias[i % 2]).max(0.0);
    }
    let mut got = [f32::NAN; 6];
    matmul_then(&mut got, &a, &b, 3, 4, 2, false, false, |i0, seg| {
        for (j, o) in seg.iter_mut().enumerate() {
            *o = (*o + bias[(i0 + j) % 2]).max(0.0);
        }
    });
    assert_eq!(got, want);
}

#[test]
fn io_splits_disjoint_ranges() {
    let mut ws: Vec<f32> = (0..10).map(|v| v as f32).collect();
    let ([a, b], out) = io(&mut ws, (4, 2), [(0, 2), (7, 2)]);
    assert_eq!((a, b), (&[0.0, 1.0][..], &[7.0, 8.0][..]));
    out[0] = a[1] + b[0];
    assert_eq!(ws[4], 8.0);
}

#[test]
#[should_panic(expected = "overlaps its output")]
fn io_rejects_overlap() {
    let mut ws = vec![0.0f32; 10];
    let _ = io(&mut ws, (4, 2), [(5, 2)]);
}
