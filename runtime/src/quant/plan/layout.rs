//! Which values an int8 run holds as bytes only, and which max poolings
//! run on bytes.
//!
//! Max pooling commutes with any monotone map, so with the requantization
//! too: `quantize(max(x)) = max(quantize(x))` for one scale and zero point.
//! A max pooling whose input is held as u8 therefore pools the bytes and
//! its output shares the input's quantization (an *alias*: no scale of its
//! own, no calibration, no f32 round trip between a convolution and the
//! next one). Where something other than an int8 step or a max pooling
//! reads the pooled value, the pooling dequantizes its bytes instead
//! (`max` then dequantize equals dequantize then `max`).
//!
//! A u8-only value a convolution writes is held channels-last (NHWC, with
//! its `[C, H, W]` recorded) when every step that reads it can read that:
//! convolutions (their weights packed in `(kh, kw, c)` tap order), dense
//! layers (their weights' rows permuted to the flattening of `[H, W, C]`)
//! and byte max poolings whose output is held channels-last in turn. The
//! epilogue then stores each pixel's channels contiguously.

use super::{Plan, Step};

/// How an int8 run holds each value (derived from the plan once).
#[derive(Debug, Default)]
pub(super) struct Layout {
    /// Per value: written and read as u8 only (the producer's epilogue or
    /// byte pooling writes it; only int8 steps and max poolings read it).
    pub(super) u8_only: Vec<bool>,
    /// Per step: a max pooling over the bytes of its (u8-only) input.
    pub(super) u8_pool: Vec<bool>,
    /// `(pooled, source)`, in step order: value `pooled` is u8-only and
    /// holds a byte pooling of `source`, so it shares `source`'s
    /// quantization.
    pub(super) aliases: Vec<(usize, usize)>,
    /// Per value: `Some([C, H, W])` when it is held channels-last.
    pub(super) last: Vec<Option<[usize; 3]>>,
}

impl Layout {
    /// The layout of `plan` (checked: steps in order, each value written
    /// once).
    pub(super) fn new(plan: &Plan) -> Layout {
        let n = plan.values.len();
        // Whether every reader of a value reads bytes (and there is one).
        let mut readers = vec![0usize; n];
        let mut bytes_ok = vec![true; n];
        for s in &plan.steps {
            readers[s.input()] += 1;
            if !(s.is_int8() || matches!(s, Step::MaxPool { .. })) {
                bytes_ok[s.input()] = false;
            }
        }
        bytes_ok[plan.output] = false;
        let mut u8_only = vec![false; n];
        let mut u8_pool = vec![false; plan.steps.len()];
        let mut aliases = Vec::new();
        for (i, s) in plan.steps.iter().enumerate() {
            let (x, y) = (s.input(), s.out());
            let writes_bytes = match s {
                _ if s.is_int8() => true,
                Step::MaxPool { .. } => {
                    u8_pool[i] = u8_only[x];
                    u8_pool[i]
                }
                _ => false,
            };
            u8_only[y] = writes_bytes && bytes_ok[y] && readers[y] > 0;
            if u8_pool[i] && u8_only[y] {
                aliases.push((y, x));
            }
        }
        // Whether every reader of a value reads channels-last bytes; the
        // readers come later, so walk the steps backwards.
        let mut last_ok = u8_only.clone();
        for (i, s) in plan.steps.iter().enumerate().rev() {
            let ok = match s {
                Step::Conv { .. } | Step::Dense { .. } => true,
                Step::MaxPool { .. } => u8_pool[i] && u8_only[s.out()] && last_ok[s.out()],
                _ => false,
            };
            last_ok[s.input()] &= ok;
        }
        let mut last = vec![None; n];
        for (i, s) in plan.steps.iter().enumerate() {
            let y = s.out();
            last[y] = match s {
                Step::Conv { geometry: g, .. } if last_ok[y] => {
                    let (oh, ow) = g.out_hw();
                    Some([g.o, oh, ow])
                }
                Step::MaxPool { pool, .. } if u8_pool[i] && last[s.input()].is_some() => {
                    let (oh, ow) = pool.out_hw();
                    Some([pool.c, oh, ow])
                }
                _ => None,
            };
        }
        Layout {
            u8_only,
            u8_pool,
            aliases,
            last,
        }
    }

    /// Whether value `v` shares another value's quantization.
    pub(super) fn is_alias(&self, v: usize) -> bool {
        self.aliases.iter().any(|&(y, _)| y == v)
    }
}
