//! Seeded data augmentation of training batches: what the `train` block's
//! `augment:` setting ([`AugmentSpec`]) asks for, applied to a gathered
//! batch before the step reads it.
//!
//! Every random choice about a sample comes from a generator seeded by
//! (run seed, epoch, the sample's index in the training set), never from a
//! stream shared across the batch. So a sample is augmented the same way
//! whichever batch, shard, thread or rank it lands in, and a resumed run
//! draws what the uninterrupted one did. Evaluation and prediction never
//! augment (only `fit`'s training loop calls [`Augmenter::apply`]).
//!
//! An image is a real-valued feature column with at least two dimensions
//! per sample: the last two are height and width, the product of the rest
//! the channels (MNIST's `[28, 28]` is one channel). The geometric
//! transforms below are public so they can be checked against reference
//! implementations.

use super::bind::Batcher;
use super::dataset::Dataset;
use super::DataError;
use crate::model::{AugmentSpec, InputKind, ModelSpec};
use crate::rng::Rng;
use nnc_spec::hash::mix;

/// An image's layout in a sample's values: `channels` planes of `height`
/// rows of `width` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Image {
    /// Planes (the product of the leading dimensions).
    pub channels: usize,
    /// Rows.
    pub height: usize,
    /// Values per row.
    pub width: usize,
}

impl Image {
    /// The layout of a column of per-sample `shape`, if it is an image.
    pub fn of_shape(shape: &[usize]) -> Option<Image> {
        match shape {
            [lead @ .., h, w] if *h > 0 && *w > 0 => Some(Image {
                channels: lead.iter().product(),
                height: *h,
                width: *w,
            }),
            _ => None,
        }
    }

    /// Values per plane.
    pub fn plane(&self) -> usize {
        self.height * self.width
    }

    /// Values per image.
    pub fn len(&self) -> usize {
        self.channels * self.plane()
    }

    /// Whether it has no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A stream constant, so the augmentation's draws are unrelated to the
/// shuffling and initialisation streams of the same seed.
const AUGMENT_STREAM: u64 = 0x6175_676d_656e_7421;

/// The generator of one sample's augmentation in one epoch.
pub fn sample_rng(seed: u64, epoch: u64, sample: usize) -> Rng {
    let k = mix(mix(mix(seed ^ AUGMENT_STREAM).wrapping_add(epoch)).wrapping_add(sample as u64));
    Rng::new(k)
}

/// Mirrors every row left to right.
pub fn flip_horizontal(img: &mut [f32], g: Image) {
    for row in img[..g.len()].chunks_exact_mut(g.width) {
        row.reverse();
    }
}

/// `img(y, x) = src(y + dy, x + dx)`, zero where that is outside: the image
/// moves by `(-dy, -dx)`. Equal to padding `src` with zeros by at least
/// `|dy|`, `|dx|` and cropping the original size at the offset.
pub fn shift(src: &[f32], img: &mut [f32], g: Image, dy: i64, dx: i64) {
    let (h, w) = (g.height as i64, g.width as i64);
    for (s, d) in src
        .chunks_exact(g.plane())
        .zip(img.chunks_exact_mut(g.plane()))
        .take(g.channels)
    {
        for y in 0..h {
            let sy = y + dy;
            let row = &mut d[(y * w) as usize..((y + 1) * w) as usize];
            if !(0..h).contains(&sy) {
                row.fill(0.0);
                continue;
            }
            for (x, o) in row.iter_mut().enumerate() {
                let sx = x as i64 + dx;
                *o = if (0..w).contains(&sx) {
                    s[(sy * w + sx) as usize]
                } else {
                    0.0
                };
            }
        }
    }
}

/// Rotates `src` by `degrees` about the image's centre into `img`:
/// `img(y, x)` is `src` at `(cy + c·(y−cy) − s·(x−cx), cx + s·(y−cy) +
/// c·(x−cx))` (`c = cos θ`, `s = sin θ`, centre `((h−1)/2, (w−1)/2)`),
/// interpolated bilinearly with zeros outside the image. Positions are
/// computed in `f64`, so 0° copies exactly.
pub fn rotate(src: &[f32], img: &mut [f32], g: Image, degrees: f64) {
    let (c, s) = {
        let t = degrees.to_radians();
        (t.cos(), t.sin())
    };
    let (h, w) = (g.height, g.width);
    let (cy, cx) = ((h as f64 - 1.0) / 2.0, (w as f64 - 1.0) / 2.0);
    let at = |p: &[f32], y: i64, x: i64| -> f64 {
        if (0..h as i64).contains(&y) && (0..w as i64).contains(&x) {
            f64::from(p[y as usize * w + x as usize])
        } else {
            0.0
        }
    };
    for (p, d) in src
        .chunks_exact(g.plane())
        .zip(img.chunks_exact_mut(g.plane()))
        .take(g.channels)
    {
        for y in 0..h {
            for x in 0..w {
                let (ry, rx) = (y as f64 - cy, x as f64 - cx);
                let sy = cy + c * ry - s * rx;
                let sx = cx + s * ry + c * rx;
                let (y0, x0) = (sy.floor(), sx.floor());
                let (fy, fx) = (sy - y0, sx - x0);
                let (y0, x0) = (y0 as i64, x0 as i64);
                let v = (1.0 - fy) * ((1.0 - fx) * at(p, y0, x0) + fx * at(p, y0, x0 + 1))
                    + fy * ((1.0 - fx) * at(p, y0 + 1, x0) + fx * at(p, y0 + 1, x0 + 1));
                d[y * w + x] = v as f32;
            }
        }
    }
}

/// Zeroes the `side × side` square centred at `(cy, cx)` (its top-left
/// corner at `cy − side/2`, `cx − side/2`), clipped to the image, in every
/// channel.
pub fn cutout(img: &mut [f32], g: Image, cy: usize, cx: usize, side: usize) {
    let (top, left) = (cy as i64 - (side / 2) as i64, cx as i64 - (side / 2) as i64);
    let rows = top.max(0) as usize..((top + side as i64).max(0) as usize).min(g.height);
    let cols = left.max(0) as usize..((left + side as i64).max(0) as usize).min(g.width);
    for plane in img.chunks_exact_mut(g.plane()).take(g.channels) {
        for y in rows.clone() {
            plane[y * g.width + cols.start..y * g.width + cols.end.max(cols.start)].fill(0.0);
        }
    }
}

/// Adds `std · N(0, 1)` to every value, two normals per Box–Muller draw.
pub fn add_noise(values: &mut [f32], rng: &mut Rng, std: f32) {
    let std = f64::from(std);
    let mut pairs = values.chunks_exact_mut(2);
    for p in &mut pairs {
        let (a, b) = rng.normal_pair();
        p[0] = (f64::from(p[0]) + std * a) as f32;
        p[1] = (f64::from(p[1]) + std * b) as f32;
    }
    if let [last] = pairs.into_remainder() {
        *last = (f64::from(*last) + std * rng.normal()) as f32;
    }
}

/// How one feature slot of a batch is augmented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Token ids, and values only the loss reads (regression or binary
    /// targets, a distillation teacher's logits fed as data): never changed.
    Untouched,
    /// Real values without image geometry: noise only.
    Real,
    /// An image: the geometric transforms, then noise.
    Image(Image),
}

/// Applies an [`AugmentSpec`] to gathered batches; holds one image of
/// scratch space so that applying it allocates nothing.
#[derive(Debug, Clone)]
pub struct Augmenter {
    spec: AugmentSpec,
    kinds: Vec<Kind>,
    scratch: Vec<f32>,
}

impl Augmenter {
    /// An augmenter for `batcher`'s feature slots over `data` (the dataset
    /// its binding to `model` was made for). An image augmentation needs at least one
    /// image column among the bound features.
    pub fn new(
        spec: AugmentSpec,
        model: &ModelSpec,
        batcher: &Batcher,
        data: &Dataset,
    ) -> Result<Self, DataError> {
        let columns = data.columns();
        let kinds: Vec<Kind> = batcher
            .binding()
            .feature_feeds()
            .map(|(column, input)| {
                // A target is a real-valued input too, but noise on it
                // would change what the model is asked to fit.
                let spec_input = &model.inputs[input];
                let real = spec_input.kind == InputKind::Features && spec_input.predict;
                let shape = columns[column].shape();
                match (real, Image::of_shape(shape)) {
                    (false, _) => Kind::Untouched,
                    (true, Some(g)) if spec.is_image() => Kind::Image(g),
                    (true, _) => Kind::Real,
                }
            })
            .collect();
        if spec.is_image() && !kinds.iter().any(|k| matches!(k, Kind::Image(_))) {
            let list: Vec<String> = batcher
                .binding()
                .feature_feeds()
                .map(|(c, _)| columns[c].describe())
                .collect();
            return Err(DataError::Invalid(format!(
                "`augment: image(...)` needs an image input (a real-valued column with at least \
                 two dimensions per sample, height and width last); the inputs are fed from {}",
                if list.is_empty() {
                    "no column".to_string()
                } else {
                    list.join(", ")
                }
            )));
        }
        let scratch = kinds
            .iter()
            .map(|k| match k {
                Kind::Image(g) => g.len(),
                _ => 0,
            })
            .max()
            .unwrap_or(0);
        Ok(Augmenter {
            spec,
            kinds,
            scratch: vec![0.0; scratch],
        })
    }

    /// Augments the batch `batcher` holds, whose row `r` is sample
    /// `indices[r]` of the training set, as epoch `epoch` of a run seeded
    /// with `seed` does.
    pub fn apply(&mut self, batcher: &mut Batcher, indices: &[usize], seed: u64, epoch: u64) {
        if self.spec.is_none() {
            return;
        }
        let rows = batcher.rows().min(indices.len());
        for (r, &sample) in indices[..rows].iter().enumerate() {
            let mut rng = sample_rng(seed, epoch, sample);
            for (k, kind) in self.kinds.iter().enumerate() {
                let values = batcher.feature_row_mut(k, r);
                match *kind {
                    Kind::Untouched => {}
                    Kind::Real => {
                        if self.spec.noise > 0.0 {
                            add_noise(values, &mut rng, self.spec.noise);
                        }
                    }
                    Kind::Image(g) => {
                        image(&self.spec, values, &mut self.scratch, g, &mut rng);
                        if self.spec.noise > 0.0 {
                            add_noise(values, &mut rng, self.spec.noise);
                        }
                    }
                }
            }
        }
    }
}

/// One image's geometric augmentation: flip, rotation, shift, cutout, each
/// drawn only when enabled, in that order.
fn image(spec: &AugmentSpec, img: &mut [f32], scratch: &mut [f32], g: Image, rng: &mut Rng) {
    let scratch = &mut scratch[..g.len()];
    // An image row holds whole images; a width that is a multiple of the
    // image (several images per sample) is augmented per image alike.
    for img in img.chunks_exact_mut(g.len()) {
        if spec.flip && rng.below(2) == 1 {
            flip_horizontal(img, g);
        }
        if spec.rotate > 0.0 {
            let r = f64::from(spec.rotate);
            let degrees = rng.uniform_f64(-r, r);
            scratch.copy_from_slice(img);
            rotate(scratch, img, g, degrees);
        }
        if spec.shift > 0 {
            let s = u64::from(spec.shift);
            let dy = rng.below(2 * s + 1) as i64 - s as i64;
            let dx = rng.below(2 * s + 1) as i64 - s as i64;
            scratch.copy_from_slice(img);
            shift(scratch, img, g, dy, dx);
        }
        if spec.cutout > 0 {
            let cy = rng.below(g.height as u64) as usize;
            let cx = rng.below(g.width as u64) as usize;
            cutout(img, g, cy, cx, spec.cutout as usize);
        }
    }
}

#[cfg(test)]
#[path = "augment_tests.rs"]
mod tests;
