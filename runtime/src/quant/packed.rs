//! The weights as the int8 GEMM reads them: i8 panels of 16 output
//! channels in depth-quads, with per-channel scales and column sums.

use std::ops::Range;

use super::{QuantError, QuantWeights};

/// Output channels per panel: one panel feeds two 256-bit registers of
/// eight i32 accumulators each.
pub(super) const NR: usize = 16;
/// Depth steps per packed group: `vpmaddubsw` + `vpmaddwd` reduce four
/// adjacent bytes into one i32 lane.
pub(super) const KQ: usize = 4;
/// Bytes of one depth-quad of one panel.
pub(super) const QUAD_BYTES: usize = NR * KQ;

/// Quantized weights packed for [`qgemm`](super::qgemm), built once from
/// [`QuantWeights`] (generated code keeps it in its model struct).
///
/// Holds, for the product's `[k, n]` weight matrix `q` (`k` inputs, `n`
/// output channels):
/// * `q` in panels of 16 channels: within a panel, depth `k` in groups of 4
///   (`quads`), each group 64 bytes — channel `j`'s four weights
///   `q[4p..4p+4, j]` at bytes `4j..4j+4` — which is the operand layout of
///   `vpmaddubsw` against four broadcast activation bytes. The depth is
///   zero-padded to a multiple of 4 and the last panel to 16 channels;
/// * the per-channel scales `s[n]` (`w ≈ s[n] · q`);
/// * the column sums `Σ_k q[k, n]`, which fold the activation zero point
///   out of the product: `Σ_k (a − zp) · q = Σ_k a · q − zp · Σ_k q`.
///
/// The scales and sums are zero-padded to whole panels too, so the epilogue
/// works on full 16-lane panels without bounds checks.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedWeights {
    k: usize,
    n: usize,
    quads: usize,
    panels: Vec<i8>,
    colsums: Vec<i32>,
    scales: Vec<f32>,
}

impl PackedWeights {
    /// Packs every output channel of `q` (a dense layer's weights, or a
    /// convolution with one group).
    pub fn new(q: &QuantWeights) -> Self {
        Self::pack(q, 0..q.channels(), None)
    }

    /// Packs every output channel of `q` with its depth reordered: depth
    /// `k'` of the product is depth `order[k']` of `q` (so the activations
    /// may come in another order than the weights were stored in, e.g. a
    /// channels-last tensor flattened into a dense layer).
    ///
    /// # Panics
    /// If `order` is not a permutation of `0..q.depth()`.
    pub fn reordered(q: &QuantWeights, order: &[usize]) -> Self {
        Self::pack(q, 0..q.channels(), Some(order))
    }

    /// Quantizes (per output channel, see [`QuantWeights::dense`]) and packs
    /// a dense layer's f32 weight `w[inputs, outputs]`.
    pub fn from_dense_f32(w: &[f32], inputs: usize, outputs: usize) -> Result<Self, QuantError> {
        Ok(Self::new(&QuantWeights::dense(w, inputs, outputs)?))
    }

    /// Packs output channels `channels` of `q` (one group of a grouped
    /// convolution): channel `channels.start + j` becomes column `j`.
    ///
    /// # Panics
    /// If the range is not inside `0..q.channels()`.
    pub fn channels(q: &QuantWeights, channels: Range<usize>) -> Self {
        assert!(
            channels.start <= channels.end && channels.end <= q.channels(),
            "channel range {channels:?} outside 0..{}",
            q.channels()
        );
        Self::pack(q, channels, None)
    }

    /// Packs `channels` of `q`, depth `k'` taken from `q`'s depth
    /// `order[k']` (the identity without an order).
    pub(super) fn pack(q: &QuantWeights, channels: Range<usize>, order: Option<&[usize]>) -> Self {
        let k = q.depth();
        match order {
            Some(order) => {
                let taps: Vec<Option<usize>> = order.iter().map(|&o| Some(o)).collect();
                Self::pack_taps(q, channels, &taps)
            }
            None => {
                let taps: Vec<Option<usize>> = (0..k).map(Some).collect();
                Self::pack_taps(q, channels, &taps)
            }
        }
    }

    /// Packs `channels` of `q` with depth `taps.len()`: depth `k'` holds
    /// `q`'s depth `taps[k']`, or weight 0 for `None` (an implicit
    /// convolution's padding taps, which multiply bytes of other pixels).
    ///
    /// # Panics
    /// Unless every depth of `q` appears exactly once.
    pub(super) fn pack_taps(
        q: &QuantWeights,
        channels: Range<usize>,
        taps: &[Option<usize>],
    ) -> Self {
        let (kq, n) = (q.depth(), channels.len());
        let mut seen = vec![false; kq];
        assert!(
            taps.iter()
                .flatten()
                .all(|&o| o < kq && !std::mem::replace(&mut seen[o], true))
                && seen.iter().all(|&s| s),
            "depth order is not a permutation of 0..{kq}"
        );
        let k = taps.len();
        let quads = k.div_ceil(KQ);
        let panels = n.div_ceil(NR);
        let mut data = vec![0i8; panels * quads * QUAD_BYTES];
        let mut colsums = vec![0i32; panels * NR];
        let mut scales = vec![0.0f32; panels * NR];
        for j in 0..n {
            let c = channels.start + j;
            let panel = &mut data[j / NR * quads * QUAD_BYTES..][..quads * QUAD_BYTES];
            let mut sum = 0i32;
            for (kk, tap) in taps.iter().enumerate() {
                let v = tap.map_or(0, |t| q.get(t, c));
                panel[kk / KQ * QUAD_BYTES + j % NR * KQ + kk % KQ] = v;
                sum += i32::from(v);
            }
            colsums[j] = sum;
            scales[j] = q.scales()[c];
        }
        PackedWeights {
            k,
            n,
            quads,
            panels: data,
            colsums,
            scales,
        }
    }

    /// Inputs per output channel (`k`, the depth of the product).
    pub fn depth(&self) -> usize {
        self.k
    }

    /// Output channels (`n`, the columns of the product).
    pub fn outputs(&self) -> usize {
        self.n
    }

    /// The per-channel weight scales, `n` of them.
    pub fn scales(&self) -> &[f32] {
        &self.scales[..self.n]
    }

    /// `Σ_k q[k, n]` per channel, `n` of them.
    pub fn colsums(&self) -> &[i32] {
        &self.colsums[..self.n]
    }

    /// Bytes of memory the packed weights, sums and scales take.
    pub fn size_bytes(&self) -> usize {
        self.panels.len() + 4 * (self.colsums.len() + self.scales.len())
    }

    /// Number of 16-channel panels.
    pub(super) fn panel_count(&self) -> usize {
        self.n.div_ceil(NR)
    }

    /// Panel `p`: `quads · 64` bytes.
    pub(super) fn panel(&self, p: usize) -> &[i8] {
        &self.panels[p * self.quads * QUAD_BYTES..][..self.quads * QUAD_BYTES]
    }

    /// The 16 padded column sums of panel `p`.
    pub(super) fn panel_colsums(&self, p: usize) -> &[i32; NR] {
        self.colsums[p * NR..][..NR].try_into().expect("NR sums")
    }

    /// The 16 padded scales of panel `p`.
    pub(super) fn panel_scales(&self, p: usize) -> &[f32; NR] {
        self.scales[p * NR..][..NR].try_into().expect("NR scales")
    }
}
