//! Batches streamed from shards ([`super::shard`]) by a background reader,
//! holding a few windows of rows in memory whatever the data's size.
//!
//! # Order (seeded, reproducible)
//! One generator, `Rng::new(seed)`, carries over the whole run, as the
//! in-memory [`super::Loader`]'s does. Each epoch, when shuffling: the
//! shards' order is shuffled (only when there are several), then each shard
//! is read front to back in windows of whole chunks, at least `window`
//! rows, and each window's rows are visited in an order the generator
//! shuffles. Batches are cut from that sequence (a batch may span two
//! windows); the last batch of an epoch may be short.
//!
//! With one shard and a window covering it, the order is exactly the
//! in-memory loader's for the same seed, so streamed training is
//! bit-identical to in-memory training.
//!
//! # Memory and overlap
//! A reader thread reads and verifies the next windows while the caller
//! consumes the current one; at most `prefetch` windows wait in the
//! channel, so memory is about `(prefetch + 2) × window` rows.

use std::fs::File;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::dataset::{Column, Dataset, Values};
use super::shard::Shard;
use super::DataError;
use crate::rng::Rng;

/// How batches are streamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamConfig {
    /// Samples per batch.
    pub batch_size: usize,
    /// Rows shuffled together (rounded up to whole chunks).
    pub window: usize,
    /// Visit rows in a fresh random order each epoch.
    pub shuffle: bool,
    /// Seed of the order (the in-memory loader's `LoaderConfig::seed`).
    pub seed: u64,
    /// Windows read ahead.
    pub prefetch: usize,
}

/// A window of rows read by the background thread.
struct Window {
    epoch: u64,
    /// Global index of the window's first row (shards numbered in the
    /// order given, rows after those of earlier shards).
    base: usize,
    data: Dataset,
    /// Local rows in visiting order.
    order: Vec<usize>,
}

/// One streamed batch.
#[derive(Debug, Clone)]
pub struct StreamBatch {
    /// 0-based epoch.
    pub epoch: u64,
    /// Each row's index in the whole data (shards concatenated in the
    /// order given), for seeding its augmentation.
    pub indices: Vec<usize>,
    /// The rows, in batch order.
    pub data: Dataset,
}

/// Batches from shards, epoch after epoch, read ahead by a thread.
pub struct ShardStream {
    rx: Option<Receiver<Result<Window, DataError>>>,
    reader: Option<JoinHandle<()>>,
    current: Option<Window>,
    pos: usize,
    epoch: u64,
    batch_size: usize,
    rows: usize,
}

impl ShardStream {
    /// Starts streaming `shards` (opened, so already validated), which must
    /// share one column layout.
    pub fn new(shards: Vec<Shard>, cfg: StreamConfig) -> Result<Self, DataError> {
        let Some(first) = shards.first() else {
            return Err(DataError::Invalid("no shard to stream".into()));
        };
        if let Some(s) = shards.iter().find(|s| s.columns() != first.columns()) {
            return Err(DataError::Invalid(format!(
                "{} has other columns than {}",
                s.path().display(),
                first.path().display()
            )));
        }
        let rows: u64 = shards.iter().map(Shard::rows).sum();
        if rows == 0 || cfg.batch_size == 0 {
            return Err(DataError::Invalid(
                "streaming needs rows and a batch size of at least 1".into(),
            ));
        }
        let (tx, rx) = sync_channel(cfg.prefetch.max(1));
        let shards = Arc::new(shards);
        let reader = std::thread::Builder::new()
            .name("nnc-shard-reader".into())
            .spawn(move || read_ahead(&shards, cfg, &tx))
            .map_err(|e| DataError::Invalid(format!("cannot start the shard reader: {e}")))?;
        Ok(ShardStream {
            rx: Some(rx),
            reader: Some(reader),
            current: None,
            pos: 0,
            epoch: 0,
            batch_size: cfg.batch_size,
            rows: rows as usize,
        })
    }

    /// Rows per epoch.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Current 0-based epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The next window, if the current one is used up.
    fn refill(&mut self) -> Result<(), DataError> {
        if self
            .current
            .as_ref()
            .is_some_and(|w| self.pos < w.order.len())
        {
            return Ok(());
        }
        let rx = self
            .rx
            .as_ref()
            .ok_or_else(|| DataError::Invalid("stream closed".into()))?;
        let w = rx
            .recv()
            .map_err(|_| DataError::Invalid("the shard reader stopped".into()))??;
        self.current = Some(w);
        self.pos = 0;
        Ok(())
    }

    /// The next batch of this epoch, or `None` once at its end (after which
    /// the stream is at the start of the next epoch).
    pub fn next_batch(&mut self) -> Result<Option<StreamBatch>, DataError> {
        let mut parts = Vec::new();
        let mut indices = Vec::with_capacity(self.batch_size);
        while indices.len() < self.batch_size {
            self.refill()?;
            let Some(w) = &self.current else { break };
            if w.epoch != self.epoch {
                break;
            }
            let take = (self.batch_size - indices.len()).min(w.order.len() - self.pos);
            let local = &w.order[self.pos..self.pos + take];
            indices.extend(local.iter().map(|&r| w.base + r));
            parts.push(w.data.subset(local)?);
            self.pos += take;
        }
        if indices.is_empty() {
            self.epoch += 1;
            return Ok(None);
        }
        Ok(Some(StreamBatch {
            epoch: self.epoch,
            indices,
            data: concat(parts)?,
        }))
    }
}

impl Drop for ShardStream {
    fn drop(&mut self) {
        // A closed channel stops the reader at its next send.
        self.rx = None;
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// The reader thread: windows of every epoch until the stream is dropped or
/// a read fails (the error is sent, then the thread ends).
fn read_ahead(shards: &[Shard], cfg: StreamConfig, tx: &SyncSender<Result<Window, DataError>>) {
    let mut rng = Rng::new(cfg.seed);
    let bases: Vec<usize> = shards
        .iter()
        .scan(0usize, |acc, s| {
            let b = *acc;
            *acc += s.rows() as usize;
            Some(b)
        })
        .collect();
    let mut buf = Vec::new();
    for epoch in 0.. {
        let mut order: Vec<usize> = (0..shards.len()).collect();
        if cfg.shuffle && shards.len() > 1 {
            rng.shuffle(&mut order);
        }
        for &k in &order {
            let shard = &shards[k];
            let cr = u64::from(shard.chunk_rows());
            let step = (cfg.window.max(1) as u64).div_ceil(cr).max(1);
            let chunks = shard.rows().div_ceil(cr);
            let mut file = match File::open(shard.path()) {
                Ok(f) => f,
                Err(error) => {
                    let _ = tx.send(Err(DataError::Io {
                        path: shard.path().to_path_buf(),
                        error,
                    }));
                    return;
                }
            };
            let mut at = 0;
            while at < chunks {
                let range = at..(at + step).min(chunks);
                let data = match shard.read_chunks(&mut file, range, &mut buf) {
                    Ok(d) => d,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let mut local: Vec<usize> = (0..data.len()).collect();
                if cfg.shuffle {
                    rng.shuffle(&mut local);
                }
                let window = Window {
                    epoch,
                    base: bases[k] + (at * cr) as usize,
                    data,
                    order: local,
                };
                if tx.send(Ok(window)).is_err() {
                    return;
                }
                at += step;
            }
        }
    }
}

/// The rows of `parts` one after another (same columns).
fn concat(mut parts: Vec<Dataset>) -> Result<Dataset, DataError> {
    if parts.len() == 1 {
        return Ok(parts.remove(0));
    }
    let Some(first) = parts.first() else {
        return Dataset::new(Vec::new());
    };
    let mut columns = Vec::with_capacity(first.columns().len());
    for (j, c) in first.columns().iter().enumerate() {
        let column = match c.values() {
            Values::F32(_) => {
                let mut v = Vec::new();
                for p in &parts {
                    if let Values::F32(x) = p.columns()[j].values() {
                        v.extend_from_slice(x);
                    }
                }
                Column::f32(c.name(), c.shape(), v)
            }
            Values::Classes { classes, names, .. } => {
                let mut v = Vec::new();
                for p in &parts {
                    if let Values::Classes { values, .. } = p.columns()[j].values() {
                        v.extend_from_slice(values);
                    }
                }
                let col = Column::classes(c.name(), c.shape(), v, *classes);
                match names {
                    Some(n) => col.with_class_names(n.to_vec()),
                    None => col,
                }
            }
        };
        columns.push(column.with_origin(c.origin().clone()));
    }
    Dataset::new(columns)
}
