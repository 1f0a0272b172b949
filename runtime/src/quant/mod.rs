//! Int8 post-training quantization: the number formats, the packed weights
//! and the u8 × i8 → i32 matrix product (with fused requantization) that
//! generated int8 inference code calls.
//!
//! # Number formats
//!
//! * **Activations: u8, per-tensor affine.** A tensor `x` is stored as bytes
//!   `q ∈ [0, 255]` with one [`ActQuant`] `(scale, zero_point)`:
//!   `x ≈ scale · (q − zero_point)`. The zero point is an integer in
//!   `[0, 255]`, so the real value 0 is exactly `q = zero_point`: zero
//!   padding of a convolution and the zeros of a ReLU are exact. The scale
//!   and zero point come from calibration statistics ([`MinMax`], the
//!   smallest and largest value seen, widened to include 0; see
//!   [`ActQuant::from_min_max`]). Quantizing rounds half to even:
//!   `q = clamp(round(x · (1 / scale)) + zero_point, 0, 255)`.
//! * **Weights: i8, per output channel, symmetric, 7-bit.** Output channel
//!   `n` (a column of a dense layer's `[in, out]` weight, or the first axis
//!   of a convolution's `[O, C/g, KH, KW]`) is stored as `q ∈ [−63, 63]` with
//!   one scale `s[n] = max|w[·, n]| / 63` and zero point 0:
//!   `w ≈ s[n] · q` ([`QuantWeights`]).
//! * **Accumulators: i32, exact.** The product of layer inputs and weights
//!   is `acc[i, n] = Σ_k (a[i, k] − zero_point) · q[k, n]`, computed exactly
//!   in 32-bit integers for depths up to [`MAX_DEPTH`] (the GEMM multiplies
//!   the raw bytes and folds the zero point in afterwards as
//!   `zero_point · Σ_k q[k, n]`, the column sums [`PackedWeights`] keeps).
//! * **Outputs.** The epilogue of the product turns `acc` into the layer's
//!   output while it is still in registers ([`Output`]): f32
//!   `y = acc · (scale_a · s[n]) + bias[n]` (optionally ReLU'd), or directly
//!   the next layer's u8 input, `y` quantized with that layer's
//!   [`ActQuant`]. Biases stay f32: the epilogue computes in f32 anyway, so
//!   an i32 bias with scale `scale_a · s[n]` (as ONNX's `QLinearMatMul`
//!   stores it) would only add a rounding step.
//!
//! # Why 7-bit weights
//!
//! The AVX2 kernel multiplies with `vpmaddubsw` (u8 × i8, adjacent pairs
//! summed into a *saturating* i16) and `vpmaddwd` (pairs of those summed
//! into i32), as ONNX Runtime's MLAS and FBGEMM do. With full-range weights
//! a pair can reach `2 · 255 · 127 = 64770 > 32767` and saturate, so the
//! result would be inexact and differ between CPUs (ONNX Runtime documents
//! this and offers `reduce_range`). Weights in `[−63, 63]` bound a pair by
//! `2 · 255 · 63 = 32130 ≤ 32767`: nothing ever saturates, every kernel
//! (portable, AVX2, and AVX-VNNI's `vpdpbusd`, which has no intermediate
//! i16) computes the same exact i32, and the output is bit-identical across
//! CPUs and thread counts. The price is one bit of weight resolution: the
//! rounding error of a weight is at most `max|w[·, n]| / 126` instead of
//! `/ 254`, and per-channel scales keep it small (ONNX Runtime's
//! `reduce_range` makes the same trade). Rejected: widening both operands
//! to i16 and using `vpmaddwd` alone (exact with 8-bit weights, but twice
//! the bytes loaded and packed per multiply-add, and its VNNI form
//! `vpdpwssd` does half the work of `vpdpbusd`); 7-bit activations
//! (per-tensor activation scales have less headroom than per-channel
//! weight scales); accepting saturation (inexact).
//!
//! # What generated code calls
//!
//! Once, when a model is built: [`QuantWeights::dense`] /
//! [`QuantWeights::conv`] from the f32 weights (or
//! [`QuantWeights::from_parts`] from a saved file), then
//! [`PackedWeights::new`] / [`PackedConv::new`], kept in the model's struct;
//! [`ActQuant`]s from calibration. Per call: [`quantize_u8`] on the f32
//! input, [`qgemm`] (dense) or [`conv2d`] per layer, each writing the next
//! layer's u8 input or the final f32 output. Nothing allocates per call:
//! the dense product needs no scratch at all (activations are read in
//! place), the convolution works in caller-provided scratch
//! ([`conv_scratch_len`]).
//!
//! # Layout
//!
//! `scheme` (activation quantization and calibration), `weights`
//! (per-channel weight quantization), `packed` (the GEMM's weight panels),
//! `gemm` (the public product, bounds checks, the split over threads),
//! `kernel` (portable, AVX2 and AVX-VNNI microkernels), `epilogue`
//! (requantization),
//! `conv` (NCHW convolution through u8 patches), `direct` (the direct
//! convolution of one-input-channel layers, pixels in the lanes), `plan` (a model's int8
//! inference: the compiler's plan, calibration, the quantized weights file).

use thiserror::Error;

mod conv;
mod direct;
mod epilogue;
mod gemm;
mod kernel;
mod packed;
pub mod plan;
mod pool;
mod scheme;
#[cfg(test)]
mod tests;
mod weights;

pub use conv::{conv2d, conv2d_layout, conv_scratch_len, im2row, Channels, PackedConv};
pub use gemm::{kernel_family, qgemm, Epilogue, Output, QMatRef};
pub use packed::PackedWeights;
pub use plan::{Int8Model, Plan, PlanError, Step};
pub use pool::{max_pool2d_u8, max_pool2d_u8_channels_last};
pub use scheme::{dequantize_u8, quantize_u8, ActQuant, MinMax};
pub use weights::{QuantWeights, WeightLayout};

/// The largest stored weight magnitude: weights are 7-bit, `[−63, 63]`, so
/// that `vpmaddubsw`'s i16 pair sums never saturate (see the module docs).
pub const WEIGHT_MAX: i8 = 63;

/// The deepest product (`k`, the inputs per output) whose i32 accumulators
/// are exact: `|Σ_k (a − zp) · q| ≤ k · 255 · 63 ≤ i32::MAX`.
pub const MAX_DEPTH: usize = i32::MAX as usize / (255 * WEIGHT_MAX as usize);

/// Why quantization or a quantized product could not run. Invalid
/// calibration data or weight files are the user's; shape mismatches in a
/// product are bugs in the calling (generated) code, reported instead of
/// reading out of bounds.
#[derive(Debug, Error, PartialEq)]
pub enum QuantError {
    /// A value that must be finite is not (a weight, a calibration bound).
    #[error("{what} is not finite ({value})")]
    NotFinite {
        /// What the value is.
        what: &'static str,
        /// The value.
        value: f32,
    },
    /// An activation scale that is not a positive normal number (or whose
    /// reciprocal overflows).
    #[error("activation scale {0} is not a positive normal number with a finite reciprocal")]
    BadScale(f32),
    /// A weight scale that is not positive and finite.
    #[error("weight scale of channel {channel} is {scale}, not positive and finite")]
    BadWeightScale {
        /// Output channel.
        channel: usize,
        /// The scale.
        scale: f32,
    },
    /// A stored weight outside `[−WEIGHT_MAX, WEIGHT_MAX]`.
    #[error("weight {value} at index {index} is outside [-63, 63] (weights are 7-bit)")]
    WeightOutOfRange {
        /// Index in the stored layout.
        index: usize,
        /// The value.
        value: i8,
    },
    /// A slice whose length does not match the shape it is given with.
    #[error("{what}: expected {expected} elements, found {found}")]
    Length {
        /// Which slice.
        what: &'static str,
        /// Elements the shape implies.
        expected: usize,
        /// Elements present.
        found: usize,
    },
    /// A weight tensor whose length is not a positive multiple of its
    /// output channel count.
    #[error("{what}: {len} elements do not split into {channels} output channels")]
    NotMultiple {
        /// Which tensor.
        what: &'static str,
        /// Elements present.
        len: usize,
        /// Output channels.
        channels: usize,
    },
    /// A matrix operand whose leading dimension or length does not cover it.
    #[error("operand {operand}: a {rows}x{cols} matrix with leading dimension {ld} does not fit in {len} elements")]
    Operand {
        /// "A" (activations) or "C" (output).
        operand: &'static str,
        /// Rows.
        rows: usize,
        /// Columns.
        cols: usize,
        /// Leading dimension.
        ld: usize,
        /// Elements present.
        len: usize,
    },
    /// A product deeper than [`MAX_DEPTH`], whose accumulators could overflow.
    #[error("depth {0} exceeds {MAX_DEPTH}, the most an i32 accumulator holds exactly")]
    TooDeep(usize),
    /// Weights quantized for another geometry.
    #[error("convolution weights do not fit the geometry: {0}")]
    Geometry(String),
}
