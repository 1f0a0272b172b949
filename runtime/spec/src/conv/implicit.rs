//! The buffer sizes of the implicit-GEMM convolution (stride 1): the
//! kernels in `nnc-runtime`'s `conv/implicit.rs` multiply receptive fields
//! where they lie in a zero-padded copy of the image, computing outputs over
//! *padded-width* rows (`q = oy·Wp + ox` for `ox < Wp`), so every buffer is
//! sized by the padded extents and whole blocks of the indexed product.

use crate::Conv2d;

/// Columns of B the runtime's indexed product (`gemm::indexed`) reads per
/// block; its buffers are padded to whole blocks.
pub const INDEXED_BLOCK: usize = 16;

/// Rows of the indexed product's register tile (its AVX2 `6 x 16` tile);
/// [`Plan::channels_as_rows`] weighs the padding of both tile extents.
pub const TILE_ROWS: usize = 6;

/// Rounds `n` up to whole blocks of the indexed product.
fn blocks(n: usize) -> usize {
    n.div_ceil(INDEXED_BLOCK) * INDEXED_BLOCK
}

/// The sizes of one group's implicit products.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Input channels per group.
    pub cg: usize,
    /// Output channels per group.
    pub og: usize,
    /// Taps per output channel: `C/groups · KH · KW`.
    pub taps: usize,
    /// Padded input height.
    pub hp: usize,
    /// Padded input width.
    pub wp: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
    /// Outputs per channel over padded-width rows: `OH · Wp`.
    pub q: usize,
    /// Padded output-gradient height (input gradient).
    pub hd: usize,
    /// Padded output-gradient width (input gradient).
    pub wd: usize,
    /// Input-gradient outputs per channel over padded-width rows: `H · Wd`.
    pub q2: usize,
}

impl Plan {
    /// The plan for `g`, or `None` when `g` must use `im2col`: stride 1,
    /// padding at most the dilated kernel extent minus one (so the input
    /// gradient's padding is not negative), and a non-empty output.
    pub fn of(g: &Conv2d) -> Option<Plan> {
        let ([dh, dw], [ph, pw]) = (g.dilation, g.padding);
        let fits = g.stride == [1, 1]
            && g.kh > 0
            && g.kw > 0
            && ph <= (g.kh - 1) * dh
            && pw <= (g.kw - 1) * dw;
        let (oh, ow) = g.out_hw();
        if !fits || oh == 0 || ow == 0 {
            return None;
        }
        let (hp, wp) = (g.h + 2 * ph, g.w + 2 * pw);
        let (hd, wd) = (g.h + (g.kh - 1) * dh, g.w + (g.kw - 1) * dw);
        Some(Plan {
            cg: g.c / g.groups,
            og: g.o / g.groups,
            taps: g.c / g.groups * g.kh * g.kw,
            hp,
            wp,
            oh,
            ow,
            q: oh * wp,
            hd,
            wd,
            q2: g.h * wd,
        })
    }

    /// Floats of the padded input: every tap's offset plus whole blocks of
    /// outputs past it.
    pub fn xp_len(&self, g: &Conv2d) -> usize {
        let last = (self.cg - 1) * self.hp * self.wp
            + (g.kh - 1) * g.dilation[0] * self.wp
            + (g.kw - 1) * g.dilation[1];
        (last + blocks(self.q)).max(self.cg * self.hp * self.wp)
    }

    /// Floats of the padded output gradient (input-gradient product).
    pub fn dyp_len(&self, g: &Conv2d) -> usize {
        let last = (self.og - 1) * self.hd * self.wd
            + (g.kh - 1) * g.dilation[0] * self.wd
            + (g.kw - 1) * g.dilation[1];
        (last + blocks(self.q2)).max(self.og * self.hd * self.wd)
    }

    /// Panels of 16 output channels for the weight gradient.
    pub fn panels(&self) -> usize {
        self.og.div_ceil(INDEXED_BLOCK)
    }

    /// Scratch floats the three kernels need (the largest).
    pub fn scratch_len(&self, g: &Conv2d) -> usize {
        let forward = self.xp_len(g) + self.og * self.q;
        let grad_input = self.cg * self.og * g.kh * g.kw + self.dyp_len(g) + self.cg * self.q2;
        let grad_weight = if self.channels_as_rows() {
            self.xp_len(g)
                + self.og * self.q
                + self.taps.div_ceil(INDEXED_BLOCK) * self.q * INDEXED_BLOCK
                + self.q
        } else {
            self.xp_len(g) + self.panels() * self.q * INDEXED_BLOCK + self.taps * self.og
        };
        forward.max(grad_input).max(grad_weight)
    }

    /// Whether the weight gradient multiplies `dY` (rows: output channels)
    /// by packed receptive fields, rather than the receptive fields (rows:
    /// taps) by packed `dY`: whichever wastes fewer multiply-adds on tile
    /// padding ([`TILE_ROWS`]-row tiles, [`INDEXED_BLOCK`]-column blocks).
    /// LeNet's first layer (6 channels, 25 taps): 78% of the work useful
    /// against 31%.
    pub fn channels_as_rows(&self) -> bool {
        let useful = |m: usize, n: usize| {
            (m * n) as f64
                / (m.next_multiple_of(TILE_ROWS) * n.next_multiple_of(INDEXED_BLOCK)) as f64
        };
        useful(self.og, self.taps) > useful(self.taps, self.og)
    }
}
