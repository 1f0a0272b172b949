//! Per-output-channel symmetric 7-bit weight quantization, in the layer's
//! own layout (what a weights file stores next to the scales).

use super::{QuantError, WEIGHT_MAX};

/// Where the output channels lie in a stored weight tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightLayout {
    /// A dense layer's `[inputs, outputs]` (nnc computes `x @ w`): output
    /// channel `n` is column `n`.
    InOut,
    /// A convolution's `[O, C/groups, KH, KW]`, seen as `[O, depth]`: output
    /// channel `o` is row `o`.
    OutIn,
}

/// A weight tensor quantized per output channel: `w ≈ scales[n] · q` with
/// `q ∈ [−63, 63]` (7 bits in an i8; see the module docs for why not 8) and
/// `scales[n] = max|w[·, n]| / 63`, zero point 0.
///
/// `values` keeps the layout of the f32 tensor it came from, so a weights
/// file can store it as an `I8` tensor of the same shape beside an `F32`
/// tensor of `channels` scales, and [`QuantWeights::from_parts`] reads the
/// pair back.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantWeights {
    values: Vec<i8>,
    scales: Vec<f32>,
    depth: usize,
    layout: WeightLayout,
}

/// `max|w|` over each channel's elements `w[at(channel, i)]`, `i < depth`,
/// and the scale that maps it to [`WEIGHT_MAX`].
fn channel_scale(w: &[f32], depth: usize, at: impl Fn(usize) -> usize) -> Result<f32, QuantError> {
    let mut amax = 0.0f32;
    for i in 0..depth {
        let v = w[at(i)];
        if !v.is_finite() {
            return Err(QuantError::NotFinite {
                what: "weight",
                value: v,
            });
        }
        amax = amax.max(v.abs());
    }
    // An all-zero channel quantizes to zeros under any scale; 1 keeps the
    // scale a normal number. Tiny channels are kept normal too, so that the
    // epilogue's `scale_a · scale` does not lose precision to subnormals.
    Ok(if amax == 0.0 {
        1.0
    } else {
        (amax / f32::from(WEIGHT_MAX)).max(f32::MIN_POSITIVE)
    })
}

/// `round_half_even(w / scale)`, clamped to the 7-bit range (the clamp only
/// catches the last-ulp rounding of `amax / 63`).
fn quantize_weight(w: f32, scale: f32) -> i8 {
    let m = f32::from(WEIGHT_MAX);
    (w / scale).round_ties_even().clamp(-m, m) as i8
}

impl QuantWeights {
    /// Quantizes a dense layer's f32 weight `w[inputs, outputs]` (row-major,
    /// `x @ w`) with one scale per output column. Fails on a non-finite
    /// weight or a length other than `inputs · outputs`.
    pub fn dense(w: &[f32], inputs: usize, outputs: usize) -> Result<Self, QuantError> {
        let expected = inputs * outputs;
        if w.len() != expected {
            return Err(QuantError::Length {
                what: "dense weight",
                expected,
                found: w.len(),
            });
        }
        let scales = (0..outputs)
            .map(|n| channel_scale(w, inputs, |k| k * outputs + n))
            .collect::<Result<Vec<_>, _>>()?;
        let values = w
            .iter()
            .enumerate()
            .map(|(i, &v)| quantize_weight(v, scales[i % outputs]))
            .collect();
        Ok(QuantWeights {
            values,
            scales,
            depth: inputs,
            layout: WeightLayout::InOut,
        })
    }

    /// Quantizes a convolution's f32 weight `w[O, C/groups, KH, KW]` with
    /// one scale per output channel `o` (over its `C/groups · KH · KW`
    /// taps). Fails on a non-finite weight, `out_channels == 0`, or a length
    /// that is not a multiple of `out_channels`.
    pub fn conv(w: &[f32], out_channels: usize) -> Result<Self, QuantError> {
        if out_channels == 0 || w.len() % out_channels != 0 {
            return Err(QuantError::NotMultiple {
                what: "convolution weight",
                len: w.len(),
                channels: out_channels,
            });
        }
        let depth = w.len() / out_channels;
        let scales = (0..out_channels)
            .map(|o| channel_scale(w, depth, |i| o * depth + i))
            .collect::<Result<Vec<_>, _>>()?;
        let values = w
            .iter()
            .enumerate()
            .map(|(i, &v)| quantize_weight(v, scales[i / depth]))
            .collect();
        Ok(QuantWeights {
            values,
            scales,
            depth,
            layout: WeightLayout::OutIn,
        })
    }

    /// Weights already quantized (read from a file): `values` in `layout`
    /// with one scale per output channel (`scales.len()` channels, so
    /// `values.len() / scales.len()` inputs each). Fails unless the lengths
    /// agree, every value is in `[−63, 63]` and every scale is positive and
    /// finite.
    pub fn from_parts(
        values: Vec<i8>,
        scales: Vec<f32>,
        layout: WeightLayout,
    ) -> Result<Self, QuantError> {
        let channels = scales.len();
        if channels == 0 || values.len() % channels != 0 {
            return Err(QuantError::NotMultiple {
                what: "quantized weight values",
                len: values.len(),
                channels,
            });
        }
        if let Some((channel, &scale)) = scales
            .iter()
            .enumerate()
            .find(|(_, s)| !(s.is_finite() && **s > 0.0))
        {
            return Err(QuantError::BadWeightScale { channel, scale });
        }
        if let Some((index, &value)) = values
            .iter()
            .enumerate()
            .find(|(_, v)| v.unsigned_abs() > WEIGHT_MAX as u8)
        {
            return Err(QuantError::WeightOutOfRange { index, value });
        }
        Ok(QuantWeights {
            depth: values.len() / channels,
            values,
            scales,
            layout,
        })
    }

    /// The stored values, in [`QuantWeights::layout`].
    pub fn values(&self) -> &[i8] {
        &self.values
    }

    /// One scale per output channel.
    pub fn scales(&self) -> &[f32] {
        &self.scales
    }

    /// Where the output channels lie in [`QuantWeights::values`].
    pub fn layout(&self) -> WeightLayout {
        self.layout
    }

    /// Output channels (`n`, the columns of the product).
    pub fn channels(&self) -> usize {
        self.scales.len()
    }

    /// Inputs per output channel (`k`, the depth of the product).
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// The quantized weight multiplying input `k` into output channel `n`,
    /// whatever the layout.
    ///
    /// # Panics
    /// If `k ≥ depth` or `n ≥ channels`.
    pub fn get(&self, k: usize, n: usize) -> i8 {
        assert!(
            k < self.depth && n < self.channels(),
            "weight index out of range"
        );
        match self.layout {
            WeightLayout::InOut => self.values[k * self.channels() + n],
            WeightLayout::OutIn => self.values[n * self.depth + k],
        }
    }

    /// The f32 weights these values stand for, `scales[n] · q`, in the
    /// stored layout (each within `scales[n] / 2` of the weight quantized,
    /// up to f32 rounding).
    pub fn dequantize(&self) -> Vec<f32> {
        let c = self.channels();
        self.values
            .iter()
            .enumerate()
            .map(|(i, &q)| {
                let n = match self.layout {
                    WeightLayout::InOut => i % c,
                    WeightLayout::OutIn => i / self.depth.max(1),
                };
                f32::from(q) * self.scales[n]
            })
            .collect()
    }

    /// The values and scales, to save them.
    pub fn into_parts(self) -> (Vec<i8>, Vec<f32>) {
        (self.values, self.scales)
    }
}
