//! What the int8 measurements share (`src/bin/int8.rs`, and
//! `src/bin/int8-serve.rs`, nnc's side of `bench/peers/int8_same_run.sh`):
//! the calibration set, the batch, the timing of a round and the accuracy
//! of a set of scores.

use anyhow::Context;
use nnc::runtime::data::Dataset;
use std::time::Instant;

/// Calibration samples, spread evenly over the training set.
pub const CALIBRATION: usize = 300;
/// The inference batch.
pub const BATCH: usize = 256;
/// Classes of MNIST.
pub const CLASSES: usize = 10;

/// The calibration inputs: [`CALIBRATION`] training images spread evenly
/// over the set (row `i · n / CALIBRATION`), the rows `nnc compile
/// --calibrate` takes, so that a set sorted by class still calibrates on
/// every class.
pub fn calibration_set(train: &Dataset) -> anyhow::Result<Vec<f32>> {
    let images = train.f32_values("image").context("no image column")?;
    let n = train.len();
    let per = images.len() / n.max(1);
    let k = CALIBRATION.min(n);
    let mut out = Vec::with_capacity(k * per);
    for i in 0..k {
        let r = i * n / k;
        out.extend_from_slice(&images[r * per..(r + 1) * per]);
    }
    Ok(out)
}

/// On-CPU seconds of the calling thread (Linux's schedstat: robust against
/// other processes on a shared machine; wall-clock seconds where it is not
/// reported) and wall seconds of one call of `f`.
pub fn timed(f: &mut dyn FnMut() -> anyhow::Result<()>) -> anyhow::Result<(f64, f64)> {
    let cpu = || -> Option<u64> {
        let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
        s.split_whitespace().next()?.parse().ok()
    };
    let (c, t) = (cpu(), Instant::now());
    f()?;
    let wall = t.elapsed().as_secs_f64();
    let on_cpu = match (c, cpu()) {
        (Some(a), Some(b)) if b > a => (b - a) as f64 * 1e-9,
        _ => wall,
    };
    Ok((on_cpu, wall))
}

/// The median (the upper one of an even count).
pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Accuracy of `rows` ([`CLASSES`] scores each; the first of equal largest
/// scores wins) against `labels`.
pub fn accuracy(rows: &[f32], labels: &[u32]) -> f64 {
    let hits = rows
        .chunks(CLASSES)
        .zip(labels)
        .filter(|(r, &l)| {
            let best = (0..CLASSES).fold(0, |b, i| if r[i] > r[b] { i } else { b });
            best == l as usize
        })
        .count();
    hits as f64 / labels.len().max(1) as f64
}
