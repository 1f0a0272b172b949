//! Data at scale, measured: CSV-to-shard conversion speed, streaming speed,
//! and peak memory (each mode in its own process, so its peak RSS is its
//! own). See docs/runtime.md ("Shards and streaming") for the commands.
//!
//! ```text
//! data-bench gen MB OUT.csv              synthetic CSV: 784 numbers and a class per row
//! data-bench convert IN.csv OUT.shard    conversion MB/s and peak RSS
//! data-bench stream SHARD [WINDOW]       one shuffled epoch in batches of 128: rows/s, peak RSS
//! data-bench memory SHARD                the same data loaded whole: peak RSS
//! ```

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use nnc::runtime::data::convert::csv_to_shard;
use nnc::runtime::data::csv::CsvOptions;
use nnc::runtime::data::shard::{Shard, DEFAULT_CHUNK_ROWS};
use nnc::runtime::data::stream::{ShardStream, StreamConfig};
use nnc::runtime::rng::Rng;

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
        prefetch: 2,
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
        _ => bail!("usage: data-bench gen MB OUT.csv | convert IN.csv OUT.shard | stream SHARD [WINDOW] | memory SHARD"),
    }
}
