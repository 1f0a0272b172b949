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
//! A window that covers the whole data (`window >= rows`, over any number
//! of shards) is one window of every row, shards in the order given, with
//! no shard shuffle: the order is then exactly the in-memory
//! [`super::Loader`]'s for the same seed, so streamed training is
//! bit-identical to in-memory training (`fit` over a [`ShardSet`] and over
//! the same rows loaded whole). A smaller window trades shuffle quality for
//! memory and gives another, equally reproducible, order.
//!
//! # Position (checkpoints)
//! [`ShardStream::state`] is a [`LoaderState`]: epoch, rows served in it
//! and the generator's state at the epoch's start; [`ShardStream::resume`]
//! replays that epoch's windows and continues at the position, so a
//! streamed run resumes bit for bit (and, with a covering window, a
//! checkpoint of a streamed run resumes in memory and vice versa).
//!
//! # Memory and overlap
//! A reader thread reads and verifies the next windows while the caller
//! consumes the current one; at most `prefetch` windows wait in the
//! channel, so memory is about `(prefetch + 2) × window` rows.

use std::fs::File;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use std::path::Path;

use super::dataset::{Column, Dataset, Origin, Values};
use super::loader::LoaderState;
use super::shard::Shard;
use super::DataError;
use crate::rng::Rng;

/// Rows shuffled together when a [`ShardSet`] is not told otherwise: about
/// 50 MB of MNIST-sized rows, a few windows in memory at once.
pub const DEFAULT_WINDOW: usize = 16 * 1024;

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
    /// Epochs the run trains (`None`: until the stream is dropped); the
    /// reader reads nothing past the last, so no window is read for an
    /// epoch that never comes.
    pub epochs: Option<u64>,
}

/// A window of rows read by the background thread.
struct Window {
    epoch: u64,
    /// The generator's state at the start of the window's epoch.
    epoch_rng: [u64; 4],
    /// Global index of the window's first row (shards numbered in the
    /// order given, rows after those of earlier shards).
    base: usize,
    /// Shared, so a window covering the data is read once and served
    /// every epoch.
    data: Arc<Dataset>,
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
    /// Used windows' data back to the reader, which decodes the next
    /// windows into their buffers instead of freshly allocated (and
    /// page-faulted) ones.
    recycle: SyncSender<Arc<Dataset>>,
    reader: Option<JoinHandle<()>>,
    current: Option<Window>,
    pos: usize,
    epoch: u64,
    /// Rows of this epoch already served.
    served: usize,
    /// The generator's state at the start of this epoch.
    epoch_rng: [u64; 4],
    batch_size: usize,
    rows: usize,
    epochs: Option<u64>,
    /// The order's fingerprint (see [`order_of`]).
    order: u64,
}

impl ShardStream {
    /// Starts streaming `shards` (opened, so already validated), which must
    /// share one column layout.
    pub fn new(shards: Vec<Shard>, cfg: StreamConfig) -> Result<Self, DataError> {
        let rng = Rng::new(cfg.seed);
        Self::start(shards, cfg, 0, rng)
    }

    /// Continues a stream of the same shards and configuration from
    /// `state` (taken by [`ShardStream::state`]): the epoch's windows are
    /// read again from its generator state and the rows already served
    /// skipped.
    pub fn resume(
        shards: Vec<Shard>,
        cfg: StreamConfig,
        state: &LoaderState,
    ) -> Result<Self, DataError> {
        let rows: u64 = shards.iter().map(Shard::rows).sum();
        if state.samples as u64 != rows || state.position > state.samples {
            return Err(DataError::Invalid(format!(
                "loader state is for {} samples at position {}, the shards hold {rows}",
                state.samples, state.position
            )));
        }
        let rng = Rng::from_state(state.epoch_rng)
            .map_err(|e| DataError::Invalid(format!("loader state: {e}")))?;
        let mut s = Self::start(shards, cfg, state.epoch, rng)?;
        if s.order != state.order {
            return Err(DataError::Invalid(format!(
                "loader state is a position in another order ({}) than this stream's ({}): \
                 resume with the shards and window it was written with",
                describe_order(state.order),
                describe_order(s.order)
            )));
        }
        s.epoch = state.epoch;
        s.epoch_rng = state.epoch_rng;
        let mut skip = state.position;
        while skip > 0 {
            s.refill()?;
            let Some(w) = &s.current else { break };
            let take = skip.min(w.order.len() - s.pos);
            s.pos += take;
            s.served += take;
            skip -= take;
        }
        Ok(s)
    }

    fn start(
        shards: Vec<Shard>,
        cfg: StreamConfig,
        epoch: u64,
        rng: Rng,
    ) -> Result<Self, DataError> {
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
        let order = order_of(&shards, &cfg, rows);
        let (tx, rx) = sync_channel(cfg.prefetch.max(1));
        let (recycle, recycled) = sync_channel(cfg.prefetch.max(1) + 2);
        let shards = Arc::new(shards);
        let epoch_rng = rng.state();
        let reader = std::thread::Builder::new()
            .name("nnc-shard-reader".into())
            .spawn(move || read_ahead(&shards, cfg, epoch, rng, &tx, &recycled))
            .map_err(|e| DataError::Invalid(format!("cannot start the shard reader: {e}")))?;
        Ok(ShardStream {
            rx: Some(rx),
            recycle,
            reader: Some(reader),
            current: None,
            pos: 0,
            epoch,
            served: 0,
            epoch_rng,
            batch_size: cfg.batch_size,
            rows: rows as usize,
            epochs: cfg.epochs,
            order,
        })
    }

    /// Batches in one epoch (the last may be short).
    pub fn batches_per_epoch(&self) -> usize {
        self.rows.div_ceil(self.batch_size)
    }

    /// The stream's position, for checkpoints (see the module docs).
    pub fn state(&self) -> LoaderState {
        LoaderState {
            epoch: self.epoch,
            position: self.served,
            epoch_rng: self.epoch_rng,
            samples: self.rows,
            order: self.order,
        }
    }

    /// Rows per epoch.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Current 0-based epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The next window, if the current one is used up (a window of a later
    /// epoch waits for it, even the rowless end marker).
    fn refill(&mut self) -> Result<(), DataError> {
        if self
            .current
            .as_ref()
            .is_some_and(|w| self.pos < w.order.len() || w.epoch != self.epoch)
        {
            return Ok(());
        }
        let rx = self
            .rx
            .as_ref()
            .ok_or_else(|| DataError::Invalid("stream closed".into()))?;
        let w = match rx.recv() {
            Ok(w) => w?,
            // The reader ends after the last epoch's end marker: past it
            // there is nothing more to serve.
            Err(_) if self.epochs.is_some_and(|e| self.epoch >= e) => {
                self.current = None;
                return Ok(());
            }
            Err(_) => return Err(DataError::Invalid("the shard reader stopped".into())),
        };
        if let Some(used) = self.current.take() {
            // Dropped instead when the reader has enough spares.
            let _ = self.recycle.try_send(used.data);
        }
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
            self.epoch_rng = w.epoch_rng;
            let take = (self.batch_size - indices.len()).min(w.order.len() - self.pos);
            let local = &w.order[self.pos..self.pos + take];
            indices.extend(local.iter().map(|&r| w.base + r));
            parts.push(w.data.subset(local)?);
            self.pos += take;
        }
        if indices.is_empty() {
            if self.current.is_none() {
                // Past the end marker of the last epoch.
                return Ok(None);
            }
            self.epoch += 1;
            self.served = 0;
            // The window that ended this epoch is the next one's first: it
            // carries that epoch's generator state.
            if let Some(w) = &self.current {
                self.epoch_rng = w.epoch_rng;
            }
            return Ok(None);
        }
        self.served += indices.len();
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

/// A training set on disk: shards of one column layout, which `fit`
/// streams ([`crate::train::TrainData::streamed`]) a window at a time.
#[derive(Debug, Clone)]
pub struct ShardSet {
    shards: Vec<Shard>,
    /// The columns with no rows: what binding a model and sizing an
    /// augmenter read.
    schema: Dataset,
    rows: usize,
    window: usize,
    prefetch: usize,
}

impl ShardSet {
    /// Opens and validates the shards at `paths`, in that order; a
    /// directory stands for its `*.shard` files in name order.
    pub fn open<P: AsRef<Path>>(paths: impl IntoIterator<Item = P>) -> Result<Self, DataError> {
        let mut shards = Vec::new();
        for p in paths {
            let p = p.as_ref();
            if p.is_dir() {
                let io = |error| DataError::Io {
                    path: p.to_path_buf(),
                    error,
                };
                let mut files = Vec::new();
                for entry in std::fs::read_dir(p).map_err(io)? {
                    let path = entry.map_err(io)?.path();
                    if path.extension().is_some_and(|e| e == "shard") && path.is_file() {
                        files.push(path);
                    }
                }
                files.sort();
                if files.is_empty() {
                    return Err(DataError::File {
                        path: p.to_path_buf(),
                        reason: "the directory holds no *.shard file".into(),
                    });
                }
                for f in files {
                    shards.push(Shard::open(f)?);
                }
            } else {
                shards.push(Shard::open(p)?);
            }
        }
        Self::from_shards(shards)
    }

    /// A set of opened shards, which must share one column layout.
    pub fn from_shards(shards: Vec<Shard>) -> Result<Self, DataError> {
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
        let mut columns = Vec::new();
        for c in first.columns() {
            let column = match c.classes {
                None => Column::f32(c.name.clone(), &c.shape, Vec::new()),
                Some(k) => {
                    let col = Column::classes(c.name.clone(), &c.shape, Vec::new(), k);
                    match &c.names {
                        Some(n) => col.with_class_names(n.clone()),
                        None => col,
                    }
                }
            };
            let origin = Origin::file(first.path(), format!("column `{}`", c.name));
            columns.push(column.with_origin(origin));
        }
        let rows = shards.iter().map(|s| s.rows() as usize).sum();
        Ok(ShardSet {
            schema: Dataset::new(columns)?,
            shards,
            rows,
            window: DEFAULT_WINDOW,
            prefetch: 2,
        })
    }

    /// Shuffles `rows` rows together (see the module docs for the order; a
    /// window of at least [`ShardSet::rows`] gives the in-memory order).
    pub fn with_window(self, rows: usize) -> Self {
        ShardSet {
            window: rows.max(1),
            ..self
        }
    }

    /// Reads `windows` windows ahead of the one in use (at least 1).
    pub fn with_prefetch(self, windows: usize) -> Self {
        ShardSet {
            prefetch: windows.max(1),
            ..self
        }
    }

    /// Rows in all shards.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Rows shuffled together.
    pub fn window(&self) -> usize {
        self.window
    }

    /// The shards, in order.
    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// The columns (names, shapes, classes) with no rows.
    pub fn schema(&self) -> &Dataset {
        &self.schema
    }

    /// The stream's configuration for batches of `batch_size`, over
    /// `epochs` epochs (`None`: until dropped).
    pub fn config(
        &self,
        batch_size: usize,
        shuffle: bool,
        seed: u64,
        epochs: Option<u64>,
    ) -> StreamConfig {
        StreamConfig {
            batch_size,
            window: self.window,
            shuffle,
            seed,
            prefetch: self.prefetch,
            epochs,
        }
    }

    /// Streams the set in batches of `batch_size` from the start, or from
    /// `state` (see [`ShardStream::resume`]), over `epochs` epochs in all
    /// (`None`: until dropped).
    pub fn stream(
        &self,
        batch_size: usize,
        shuffle: bool,
        seed: u64,
        epochs: Option<u64>,
        state: Option<&LoaderState>,
    ) -> Result<ShardStream, DataError> {
        let cfg = self.config(batch_size, shuffle, seed, epochs);
        match state {
            None => ShardStream::new(self.shards.clone(), cfg),
            Some(s) => ShardStream::resume(self.shards.clone(), cfg, s),
        }
    }
}

/// The reader thread: windows of every epoch from `first_epoch` on, `rng`
/// the generator at its start, until the stream is dropped or a read fails
/// (the error is sent, then the thread ends).
fn read_ahead(
    shards: &[Shard],
    cfg: StreamConfig,
    first_epoch: u64,
    mut rng: Rng,
    tx: &SyncSender<Result<Window, DataError>>,
    recycled: &Receiver<Arc<Dataset>>,
) {
    let bases: Vec<usize> = shards
        .iter()
        .scan(0usize, |acc, s| {
            let b = *acc;
            *acc += s.rows() as usize;
            Some(b)
        })
        .collect();
    let total: usize = shards.iter().map(|s| s.rows() as usize).sum();
    let mut buf = Vec::new();
    // Sends a window of `data` (global rows from `base`); false once the
    // stream is gone.
    let send = |epoch: u64, epoch_rng: [u64; 4], base: usize, data: Arc<Dataset>, rng: &mut Rng| {
        let mut local: Vec<usize> = (0..data.len()).collect();
        if cfg.shuffle {
            rng.shuffle(&mut local);
        }
        let window = Window {
            epoch,
            epoch_rng,
            base,
            data,
            order: local,
        };
        tx.send(Ok(window)).is_ok()
    };
    let fail = |e: DataError| {
        let _ = tx.send(Err(e));
    };
    // The whole data, once read, when one window covers it.
    let mut whole: Option<Arc<Dataset>> = None;
    for epoch in first_epoch.. {
        let epoch_rng = rng.state();
        if cfg.epochs.is_some_and(|e| epoch >= e) {
            // An end marker without rows: it carries the generator's state
            // at the start of the epoch after the last, which the stream's
            // checkpoint state needs.
            let marker = match shards[0].decode(&[], 0, Vec::new()) {
                Ok(d) => Arc::new(d),
                Err(e) => return fail(e),
            };
            let _ = send(epoch, epoch_rng, 0, marker, &mut rng);
            return;
        }
        if cfg.window >= total {
            // One window of every row, shards in the order given: the
            // in-memory loader's order (see the module docs).
            let data = match &whole {
                Some(d) => Arc::clone(d),
                None => {
                    let mut parts = Vec::with_capacity(shards.len());
                    for shard in shards {
                        match shard.load_with(&mut buf) {
                            Ok(d) => parts.push(d),
                            Err(e) => return fail(e),
                        }
                    }
                    match concat(parts) {
                        Ok(d) => Arc::clone(whole.insert(Arc::new(d))),
                        Err(e) => return fail(e),
                    }
                }
            };
            if !send(epoch, epoch_rng, 0, data, &mut rng) {
                return;
            }
            continue;
        }
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
                    return fail(DataError::Io {
                        path: shard.path().to_path_buf(),
                        error,
                    })
                }
            };
            let mut at = 0;
            while at < chunks {
                let range = at..(at + step).min(chunks);
                let spare = recycled
                    .try_recv()
                    .ok()
                    .and_then(|d| Arc::try_unwrap(d).ok())
                    .map(Dataset::into_values)
                    .unwrap_or_default();
                let data = match shard.read_chunks_reusing(&mut file, range, &mut buf, spare) {
                    Ok(d) => d,
                    Err(e) => return fail(e),
                };
                if !send(
                    epoch,
                    epoch_rng,
                    bases[k] + (at * cr) as usize,
                    Arc::new(data),
                    &mut rng,
                ) {
                    return;
                }
                at += step;
            }
        }
    }
}

/// The fingerprint of the order a stream visits rows in ([`LoaderState`]'s
/// `order`): 0 when one window covers the data (the in-memory loader's
/// order), else a hash of what decides the windows (never 0).
fn order_of(shards: &[Shard], cfg: &StreamConfig, rows: u64) -> u64 {
    if cfg.window as u64 >= rows {
        return 0;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut mix = |v: u64| {
        h = (h ^ v).wrapping_mul(0x0000_0100_0000_01b3);
        h ^= h >> 29;
    };
    mix(cfg.window as u64);
    mix(u64::from(cfg.shuffle));
    for s in shards {
        mix(s.rows());
        mix(u64::from(s.chunk_rows()));
    }
    h | 1
}

fn describe_order(order: u64) -> String {
    if order == 0 {
        "the whole data's".into()
    } else {
        format!("windowed, {order:#x}")
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
