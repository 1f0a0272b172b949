//! Data at scale, measured: CSV-to-shard conversion speed, streaming speed,
//! and peak memory (each mode in its own process, so its peak RSS is its
//! own). See docs/runtime.md ("Shards and streaming") for the commands.
//!
//! ```text
//! data-bench gen MB OUT.csv              synthetic CSV: 784 numbers and a class per row
//! data-bench convert IN.csv OUT.shard    conversion MB/s and peak RSS
//! data-bench stream SHARD [WINDOW]       one shuffled epoch in batches of 128: rows/s, peak RSS
//! data-bench memory SHARD                the same data loaded whole: peak RSS
//! data-bench gen-shard MB OUT.shard      synthetic shard written directly (784 reals, a class)
//! data-bench fit W1|W3 SHARD EPOCHS [WINDOW]
//!                                        training samples/s in memory and streamed, alternated
//!                                        in one process (warm page cache): the ratio
//! data-bench fit-rss W1|W3 SHARD [WINDOW] [STEPS]
//!                                        streamed training only: peak RSS
//! data-bench fit-cold W1|W3 SHARD WINDOW one epoch in memory, streamed with the page cache warm
//!                                        and streamed with it dropped (root: writes
//!                                        /proc/sys/vm/drop_caches), alternated: the ratios
//! ```
//!
//! A WINDOW of 0 is the shard set's default (16 MiB of rows).

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use nnc::runtime::data::convert::csv_to_shard;
use nnc::runtime::data::csv::CsvOptions;
use nnc::runtime::data::shard::{Shard, DEFAULT_CHUNK_ROWS};
use nnc::runtime::data::shard::{ShardColumn, ShardWriter};
use nnc::runtime::data::stream::{ShardStream, StreamConfig};
use nnc::runtime::data::{Column, Dataset, ShardSet};
use nnc::runtime::parallel::Strategy;
use nnc::runtime::rng::Rng;
use nnc::runtime::{fit, BatchSpec, FitOptions, Model, TrainData};

mod w1 {
    nnc::include_model!("mnist_mlp");
}
mod w3 {
    nnc::include_model!("lenet");
}

/// The workload's model at batch 128.
fn model(id: &str) -> Result<Box<dyn Model>> {
    Ok(match id {
        "W1" => Box::new(w1::MnistMlp::new(128)),
        "W3" => Box::new(w3::LeNet::new(128)),
        _ => bail!("workload {id}: W1 or W3"),
    })
}

fn options(epochs: u64, steps: Option<u64>) -> FitOptions {
    FitOptions {
        epochs: Some(epochs),
        batch: Some(BatchSpec::Size(128)),
        threads: Some(1),
        parallel: Strategy::Data { shards: None },
        max_steps: steps,
        ..FitOptions::quiet()
    }
}

/// A synthetic MNIST-like shard of about `mb` MB, written row block by row
/// block.
fn gen_shard(mb: u64, out: &Path) -> Result<()> {
    let rows = (mb * 1_000_000 / (785 * 4)).max(1) as usize;
    let columns = vec![
        ShardColumn {
            name: "features".into(),
            shape: vec![784],
            classes: None,
            names: None,
        },
        ShardColumn {
            name: "label".into(),
            shape: vec![],
            classes: Some(10),
            names: None,
        },
    ];
    let mut w = ShardWriter::create(out, columns, DEFAULT_CHUNK_ROWS)?;
    let mut rng = Rng::new(1);
    let mut done = 0;
    while done < rows {
        let n = (rows - done).min(4096);
        let x: Vec<f32> = (0..n * 784)
            .map(|_| {
                let v = rng.next_f32();
                if v < 0.8 {
                    0.0
                } else {
                    v
                }
            })
            .collect();
        let y: Vec<u32> = (0..n).map(|_| rng.below(10) as u32).collect();
        w.push(&Dataset::new(vec![
            Column::f32("features", &[784], x),
            Column::classes("label", &[], y, 10),
        ])?)?;
        done += n;
    }
    w.finish()?;
    println!(
        "{}: {rows} rows, {:.1} MB",
        out.display(),
        rows as f64 * 3140.0 / 1e6
    );
    Ok(())
}

/// Samples per second of `epochs` epochs on `data`.
fn throughput(id: &str, data: &TrainData<'_>, epochs: u64) -> Result<f64> {
    let mut m = model(id)?;
    let started = Instant::now();
    let h = fit(m.as_mut(), data, &options(epochs, None))?;
    Ok(h.samples as f64 / started.elapsed().as_secs_f64())
}

/// The shards at `path`, shuffled `window` rows together (0: the default).
fn shard_set(path: &Path, window: usize) -> Result<ShardSet> {
    let set = ShardSet::open([path])?;
    Ok(if window > 0 {
        set.with_window(window)
    } else {
        set
    })
}

fn fit_compare(id: &str, path: &Path, epochs: u64, window: usize) -> Result<()> {
    let set = shard_set(path, window)?;
    let window = set.window();
    let data = Shard::open(path)?.load()?;
    // Warm-up (page cache, allocator), then memory and stream alternated
    // three times each, so drift on a loaded machine hits both alike.
    throughput(id, &TrainData::streamed(&set), 1)?;
    let (mut mem, mut streamed) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        mem.push(throughput(id, &TrainData::new(&data), epochs)?);
        streamed.push(throughput(id, &TrainData::streamed(&set), epochs)?);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (m, s) = (median(&mut mem), median(&mut streamed));
    println!(
        "fit {id}: {} rows x {epochs} epochs, batch 128, 1 thread; in memory {m:.0} samples/s, \
         streamed (window {window}) {s:.0} samples/s: streaming costs {:+.1}% (medians of 3)",
        data.len(),
        (1.0 - s / m) * 100.0
    );
    Ok(())
}

fn fit_rss(id: &str, path: &Path, window: usize, steps: Option<u64>) -> Result<()> {
    let set = shard_set(path, window)?;
    let window = set.window();
    let mut m = model(id)?;
    let started = Instant::now();
    let h = fit(m.as_mut(), &TrainData::streamed(&set), &options(1, steps))?;
    println!(
        "fit-rss {id}: {} rows on disk ({:.0} MB), {} samples trained streamed (window {window}) \
         in {:.1} s; peak RSS {}",
        set.rows(),
        set.rows() as f64 * 3140.0 / 1e6,
        h.samples,
        started.elapsed().as_secs_f64(),
        rss()
    );
    Ok(())
}

/// Drops the page cache (Linux, root): every shard byte is read from the
/// disk again.
fn drop_caches() -> Result<()> {
    let synced = std::process::Command::new("sync").status();
    if !synced.is_ok_and(|s| s.success()) {
        bail!("sync failed");
    }
    std::fs::write("/proc/sys/vm/drop_caches", "1\n")
        .context("dropping the page cache needs root (echo 1 > /proc/sys/vm/drop_caches)")
}

/// One epoch in memory, streamed warm and streamed cold (the page cache
/// dropped first), alternated three times in one process so a loaded
/// machine's drift hits all three alike: the medians and the costs.
fn fit_cold(id: &str, path: &Path, window: usize) -> Result<()> {
    let set = shard_set(path, window)?;
    let data = Shard::open(path)?.load()?;
    throughput(id, &TrainData::streamed(&set), 1)?;
    let (mut mem, mut warm, mut cold) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        mem.push(throughput(id, &TrainData::new(&data), 1)?);
        warm.push(throughput(id, &TrainData::streamed(&set), 1)?);
        drop_caches()?;
        cold.push(throughput(id, &TrainData::streamed(&set), 1)?);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (m, w, c) = (median(&mut mem), median(&mut warm), median(&mut cold));
    println!(
        "fit-cold {id}: {} rows x 1 epoch, batch 128, 1 thread, window {}; in memory {m:.0}, \
         streamed warm {w:.0} ({:+.1}%), streamed cold {c:.0} samples/s ({:+.1}%) (medians of 3)",
        data.len(),
        set.window(),
        (1.0 - w / m) * 100.0,
        (1.0 - c / m) * 100.0
    );
    Ok(())
}

/// Peak resident memory of this process in MiB (Linux), if known.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// CPU seconds this process has used (user + system, Linux), if known: on
/// a shared machine, MB per CPU second is the speed on one core.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) end with `)`.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // Clock ticks: USER_HZ, 100 on Linux.
    Some(ticks / 100.0)
}

fn rss() -> String {
    peak_rss_mib().map_or_else(|| "unknown".into(), |m| format!("{m:.1} MiB"))
}

fn gen(mb: u64, out: &Path) -> Result<()> {
    let mut w = std::io::BufWriter::new(std::fs::File::create(out)?);
    let mut rng = Rng::new(1);
    let target = mb * 1_000_000;
    let (mut written, mut rows) = (0u64, 0u64);
    let mut line = String::new();
    while written < target {
        line.clear();
        for _ in 0..784 {
            // MNIST-like: mostly zeros, some fractions.
            let v = rng.next_f32();
            if v < 0.8 {
                line.push_str("0,");
            } else {
                line.push_str(&format!("{:.4},", v));
            }
        }
        line.push_str(&format!("{}\n", rng.below(10)));
        w.write_all(line.as_bytes())?;
        written += line.len() as u64;
        rows += 1;
    }
    w.flush()?;
    println!(
        "{}: {rows} rows, {:.1} MB",
        out.display(),
        written as f64 / 1e6
    );
    Ok(())
}

fn convert(input: &Path, output: &Path) -> Result<()> {
    let bytes = std::fs::metadata(input)?.len() as f64;
    let (started, cpu0) = (Instant::now(), cpu_seconds());
    let rows = csv_to_shard(input, &CsvOptions::new(), output, DEFAULT_CHUNK_ROWS)?;
    let s = started.elapsed().as_secs_f64();
    let cpu = match (cpu0, cpu_seconds()) {
        (Some(a), Some(b)) if b > a => format!(
            "; {:.2} CPU s = {:.1} MB per CPU second",
            b - a,
            bytes / 1e6 / (b - a)
        ),
        _ => String::new(),
    };
    println!(
        "convert: {rows} rows, {:.1} MB in {s:.2} s = {:.1} MB/s{cpu}; peak RSS {}",
        bytes / 1e6,
        bytes / 1e6 / s,
        rss()
    );
    Ok(())
}

fn stream(path: &Path, window: usize) -> Result<()> {
    let shard = Shard::open(path)?;
    let cfg = StreamConfig {
        batch_size: 128,
        window,
        shuffle: true,
        seed: 1,
        prefetch: 1,
        epochs: Some(1),
        rank: None,
    };
    let started = Instant::now();
    let mut s = ShardStream::new(vec![shard], cfg)?;
    let mut rows = 0usize;
    let mut checksum = 0f64;
    while let Some(b) = s.next_batch()? {
        rows += b.indices.len();
        checksum += f64::from(b.data.columns()[0].width() as f32);
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "stream: {rows} rows (window {window}) in {secs:.2} s = {:.0} rows/s; peak RSS {} ({checksum})",
        rows as f64 / secs,
        rss()
    );
    Ok(())
}

fn memory(path: &Path) -> Result<()> {
    let started = Instant::now();
    let data = Shard::open(path)?.load()?;
    println!(
        "memory: {} rows loaded whole in {:.2} s; peak RSS {}",
        data.len(),
        started.elapsed().as_secs_f64(),
        rss()
    );
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    match a.as_slice() {
        ["gen", mb, out] => gen(mb.parse().context("MB")?, Path::new(out)),
        ["convert", i, o] => convert(Path::new(i), Path::new(o)),
        ["stream", p] => stream(Path::new(p), 8192),
        ["stream", p, w] => stream(Path::new(p), w.parse().context("WINDOW")?),
        ["memory", p] => memory(Path::new(p)),
        ["gen-shard", mb, out] => gen_shard(mb.parse().context("MB")?, Path::new(out)),
        ["fit", w, p, e] => fit_compare(w, Path::new(p), e.parse().context("EPOCHS")?, 0),
        ["fit", w, p, e, win] => fit_compare(
            w,
            Path::new(p),
            e.parse().context("EPOCHS")?,
            win.parse().context("WINDOW")?,
        ),
        ["fit-rss", w, p] => fit_rss(w, Path::new(p), 0, None),
        ["fit-cold", w, p, win] => fit_cold(w, Path::new(p), win.parse().context("WINDOW")?),
        ["fit-rss", w, p, win] => fit_rss(w, Path::new(p), win.parse().context("WINDOW")?, None),
        ["fit-rss", w, p, win, steps] => fit_rss(
            w,
            Path::new(p),
            win.parse().context("WINDOW")?,
            Some(steps.parse().context("STEPS")?),
        ),
        _ => bail!(
            "usage: data-bench gen MB OUT.csv | convert IN.csv OUT.shard | stream SHARD [WINDOW] \
             | memory SHARD | gen-shard MB OUT.shard | fit W1|W3 SHARD EPOCHS [WINDOW] \
             | fit-rss W1|W3 SHARD [WINDOW] [STEPS] | fit-cold W1|W3 SHARD WINDOW"
        ),
    }
}
