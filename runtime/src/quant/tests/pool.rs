//! Byte max pooling against the f32 kernel on the values the bytes stand
//! for, and the plan layout that decides where it runs.

use super::bytes;
use crate::conv::{max_pool2d, Pool2d};
use crate::quant::plan::{Plan, Step};
use crate::quant::{
    dequantize_u8, max_pool2d_u8, max_pool2d_u8_channels_last, quantize_u8, ActQuant,
};
use crate::rng::Rng;

/// `max_pool2d_u8(q)` is `quantize(max_pool2d(dequantize(q)))`, bit for
/// bit: max commutes with the monotone quantization (the common 2×2 path,
/// odd sizes, strides, overlapping windows and padding).
#[test]
fn byte_pooling_equals_pooling_the_values() {
    let mut rng = Rng::new(5);
    let act = ActQuant::new(0.037, 17).unwrap();
    let cases = [
        ([2, 2], [2, 2], [0, 0], 6, 8),
        ([2, 2], [2, 2], [0, 0], 7, 5),
        ([3, 3], [2, 2], [1, 1], 7, 6),
        ([3, 2], [1, 2], [0, 1], 5, 5),
        ([2, 3], [3, 1], [1, 0], 9, 4),
    ];
    // 1 to 17 channels: the 2×2 channels-last pooling's 16-byte moves (at
    // most 16 channels) and the byte loop of its last pixels.
    for (c, (kernel, stride, padding, h, w)) in [1, 3, 6, 8, 16, 17]
        .into_iter()
        .flat_map(|c| cases.map(|case| (c, case)))
    {
        let p = Pool2d {
            c,
            h,
            w,
            kernel,
            stride,
            padding,
        };
        let (oh, ow) = p.out_hw();
        let b = 2;
        let x = bytes(&mut rng, b * c * h * w);
        let mut got = vec![0u8; b * c * oh * ow];
        max_pool2d_u8(&p, b, &mut got, &x);
        let mut xf = vec![0.0; x.len()];
        dequantize_u8(act, &x, &mut xf);
        let mut yf = vec![0.0; got.len()];
        max_pool2d(&p, b, &mut yf, &xf);
        let mut want = vec![0u8; got.len()];
        quantize_u8(act, &yf, &mut want);
        assert_eq!(got, want, "{p:?}");
        // Channels-last: the same bytes, transposed.
        let mut last = vec![0u8; got.len()];
        let x_last = super::conv::to_last(&x, b, c, h * w);
        max_pool2d_u8_channels_last(&p, b, &mut last, &x_last);
        assert_eq!(last, super::conv::to_last(&got, b, c, oh * ow), "{p:?}");
    }
}

fn pool_step(input: usize, out: usize) -> Step {
    Step::MaxPool {
        input,
        out,
        pool: Pool2d {
            c: 1,
            h: 2,
            w: 2,
            kernel: [2, 2],
            stride: [2, 2],
            padding: [0, 0],
        },
    }
}

fn dense_step(input: usize, out: usize) -> Step {
    Step::Dense {
        input,
        out,
        weight: "w".into(),
        bias: None,
        relu: true,
    }
}

/// A pooling between int8 steps runs on bytes (and says so); one whose
/// input an f32 step also reads, or whose input is the f32 model input,
/// stays f32.
#[test]
fn poolings_run_on_bytes_between_int8_steps() {
    // dense → pool → dense → pool → softmax (the output).
    let plan = Plan {
        values: vec![4, 4, 1, 4, 1, 1],
        input: 0,
        output: 5,
        steps: vec![
            dense_step(0, 1),
            pool_step(1, 2),
            dense_step(2, 3),
            pool_step(3, 4),
            Step::Softmax {
                input: 4,
                out: 5,
                n: 1,
            },
        ],
    };
    let kinds: Vec<String> = plan.describe();
    assert_eq!(
        kinds,
        [
            "int8 dense w + relu",
            "int8 max_pool2d",
            "int8 dense w + relu",
            "int8 max_pool2d",
            "f32 softmax"
        ]
    );
    // The input's pooling and one whose input f32 also reads stay f32.
    let plan = Plan {
        values: vec![4, 1, 4, 1, 4],
        input: 0,
        output: 4,
        steps: vec![
            pool_step(0, 1),
            dense_step(1, 2),
            pool_step(2, 3),
            Step::Relu { input: 2, out: 4 },
        ],
    };
    assert_eq!(
        plan.describe(),
        [
            "f32 max_pool2d",
            "int8 dense w + relu",
            "f32 max_pool2d",
            "f32 relu"
        ]
    );
}
