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
//! A reader thread reads and verifies the next window while the caller
//! consumes the current one: at most `prefetch` decoded windows wait ahead
//! of the one in use (one unless asked otherwise) and the file is read a
//! piece of at most 1 MiB at a time, so memory is about
//! `(prefetch + 1) × window` rows whatever the data's size (a window that
//! covers the data is the data, read once).
//!
//! # One rank's rows
//! With [`StreamConfig::rank`], the stream serves only the rows of each
//! batch that one rank of a data-parallel group trains on (`fit` splits
//! every global batch into contiguous ranges, one per rank). The reader
//! knows each window's order before reading it, so it reads from disk, and
//! verifies, only the blocks that hold this rank's rows
//! ([`super::shard`]); the order, and so every rank's rows, is the same as
//! without it.

use std::fs::File;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use std::path::Path;

use super::dataset::{Column, Dataset, Origin, Values};
use super::loader::LoaderState;
use super::shard::Shard;
use super::DataError;
use crate::rng::Rng;

/// Bytes of rows shuffled together when a [`ShardSet`] is not told
/// otherwise: 5,300 MNIST-sized rows, far more small tabular ones. A
/// window in bytes keeps memory (about two windows) the same whatever the
/// row size.
pub const DEFAULT_WINDOW_BYTES: usize = 16 << 20;

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
    /// The rows of each batch this rank trains on (`None`: every row).
    pub rank: Option<RankRows>,
}

/// Which rows of each batch one rank of a data-parallel group takes: a
/// contiguous range of a full batch's rows and of the epoch's short last
/// batch's, as `fit` splits them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RankRows {
    batch_size: usize,
    full: (usize, usize),
    last: (usize, usize),
}

impl RankRows {
    /// For batches of `batch_size` out of `rows` rows an epoch, where this
    /// rank takes rows `mine(n)` of a batch of `n` rows.
    pub fn new(batch_size: usize, rows: usize, mine: impl Fn(usize) -> Range<usize>) -> Self {
        let pair = |r: Range<usize>| (r.start, r.end.max(r.start));
        let full = pair(mine(batch_size));
        let short = rows % batch_size.max(1);
        RankRows {
            batch_size,
            full,
            last: if short == 0 { full } else { pair(mine(short)) },
        }
    }

    /// This rank's rows of a batch of `n` rows.
    pub fn of(&self, n: usize) -> Range<usize> {
        let (a, b) = if n == self.batch_size {
            self.full
        } else {
            self.last
        };
        a.min(n)..b.min(n)
    }

    /// Whether row `p` of an epoch of `total` rows is this rank's.
    fn takes(&self, p: usize, total: usize) -> bool {
        let bs = self.batch_size.max(1);
        let b = p / bs;
        let n = bs.min(total - b * bs);
        self.of(n).contains(&(p % bs))
    }
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
    /// With [`StreamConfig::rank`]: each local row's index in `data`, or
    /// [`NOT_READ`] for another rank's row (without it, `data` holds every
    /// row at its local index).
    slot: Option<Vec<u32>>,
}

/// A [`Window::slot`] of a row this rank does not read.
const NOT_READ: u32 = u32::MAX;

/// One streamed batch.
#[derive(Debug, Clone)]
pub struct StreamBatch {
    /// 0-based epoch.
    pub epoch: u64,
    /// Each row's index in the whole data (shards concatenated in the
    /// order given), for seeding its augmentation.
    pub indices: Vec<usize>,
    /// The rows `own` of the batch, in batch order (every row without
    /// [`StreamConfig::rank`]).
    pub data: Dataset,
    /// Which rows of the batch `data` holds.
    pub own: Range<usize>,
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
    rank: Option<RankRows>,
    /// Bytes the reader has read from the shards.
    read: Arc<AtomicU64>,
}

impl ShardStream {
    /// Starts streaming `shards` (opened, so already validated), which must
    /// share one column layout.
    pub fn new(shards: Vec<Shard>, cfg: StreamConfig) -> Result<Self, DataError> {
        Self::counted(shards, cfg, Arc::default())
    }

    /// [`ShardStream::new`], adding the bytes it reads to `read`.
    fn counted(
        shards: Vec<Shard>,
        cfg: StreamConfig,
        read: Arc<AtomicU64>,
    ) -> Result<Self, DataError> {
        let rng = Rng::new(cfg.seed);
        Self::start(shards, cfg, 0, rng, read)
    }

    /// Bytes read from the shards so far (of every stream of its
    /// [`ShardSet`], for a stream the set started).
    pub fn bytes_read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
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
        Self::resume_counted(shards, cfg, state, Arc::default())
    }

    fn resume_counted(
        shards: Vec<Shard>,
        cfg: StreamConfig,
        state: &LoaderState,
        read: Arc<AtomicU64>,
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
        let mut s = Self::start(shards, cfg, state.epoch, rng, read)?;
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
        read: Arc<AtomicU64>,
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
        // The reader holds one decoded window as it waits to send it: the
        // channel holds the others read ahead.
        let (tx, rx) = sync_channel(cfg.prefetch.max(1) - 1);
        let (recycle, recycled) = sync_channel(cfg.prefetch.max(1));
        let shards = Arc::new(shards);
        let epoch_rng = rng.state();
        let counter = Arc::clone(&read);
        let reader = std::thread::Builder::new()
            .name("nnc-shard-reader".into())
            .spawn(move || read_ahead(&shards, cfg, epoch, rng, &tx, &recycled, &counter))
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
            rank: cfg.rank,
            read,
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
            match &w.slot {
                None => parts.push(w.data.subset(local)?),
                Some(slot) => {
                    let rows: Vec<usize> = local
                        .iter()
                        .map(|&r| slot[r])
                        .filter(|&k| k != NOT_READ)
                        .map(|k| k as usize)
                        .collect();
                    if !rows.is_empty() {
                        parts.push(w.data.subset(&rows)?);
                    }
                }
            }
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
        let own = self.rank.map_or(0..indices.len(), |r| r.of(indices.len()));
        let data = if parts.is_empty() {
            self.current
                .as_ref()
                .map_or_else(|| Dataset::new(Vec::new()), |w| w.data.subset(&[]))?
        } else {
            concat(parts)?
        };
        if data.len() != own.len() {
            return Err(DataError::Invalid(format!(
                "the shard reader read {} rows of a batch for rows {own:?}",
                data.len()
            )));
        }
        Ok(Some(StreamBatch {
            epoch: self.epoch,
            indices,
            data,
            own,
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
    /// Bytes its streams have read.
    read: Arc<AtomicU64>,
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
        let window = (DEFAULT_WINDOW_BYTES / first.record_bytes()).max(1);
        Ok(ShardSet {
            schema: Dataset::new(columns)?,
            shards,
            rows,
            window,
            prefetch: 1,
            read: Arc::default(),
        })
    }

    /// Every row of every shard in memory, shard after shard: what `eval`
    /// and `predict` read (the shards share one column layout, class names
    /// included, so their class numbers agree).
    pub fn load(&self) -> Result<Dataset, DataError> {
        let mut buf = Vec::new();
        let parts = self
            .shards
            .iter()
            .map(|s| s.load_with(&mut buf))
            .collect::<Result<Vec<_>, _>>()?;
        concat(parts)
    }

    /// Shuffles `rows` rows together (see the module docs for the order; a
    /// window of at least [`ShardSet::rows`] gives the in-memory order).
    pub fn with_window(self, rows: usize) -> Self {
        ShardSet {
            window: rows.max(1),
            ..self
        }
    }

    /// Keeps up to `windows` decoded windows ahead of the one in use (at
    /// least 1, the default: memory is `(windows + 1) × window` rows).
    pub fn with_prefetch(self, windows: usize) -> Self {
        ShardSet {
            prefetch: windows.max(1),
            ..self
        }
    }

    /// Bytes the set's streams have read from its shards so far.
    pub fn bytes_read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
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
    /// `epochs` epochs (`None`: until dropped), of every row.
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
            rank: None,
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
        self.stream_config(self.config(batch_size, shuffle, seed, epochs), state)
    }

    /// Streams the set as `cfg` says (its window and read-ahead replaced by
    /// the set's), from the start or from `state`.
    pub fn stream_config(
        &self,
        cfg: StreamConfig,
        state: Option<&LoaderState>,
    ) -> Result<ShardStream, DataError> {
        let cfg = StreamConfig {
            window: self.window,
            prefetch: self.prefetch,
            ..cfg
        };
        let read = Arc::clone(&self.read);
        match state {
            None => ShardStream::counted(self.shards.clone(), cfg, read),
            Some(s) => ShardStream::resume_counted(self.shards.clone(), cfg, s, read),
        }
    }
}

/// The reader thread: windows of every epoch from `first_epoch` on, `rng`
/// the generator at its start, until the stream is dropped or a read fails
/// (the error is sent, then the thread ends); the bytes read added to
/// `read`.
fn read_ahead(
    shards: &[Shard],
    cfg: StreamConfig,
    first_epoch: u64,
    rng: Rng,
    tx: &SyncSender<Result<Window, DataError>>,
    recycled: &Receiver<Arc<Dataset>>,
    read: &AtomicU64,
) {
    let mut r = Reader {
        shards,
        cfg,
        rng,
        tx,
        recycled,
        read,
        files: (0..shards.len()).map(|_| None).collect(),
        buf: Vec::new(),
        total: shards.iter().map(|s| s.rows() as usize).sum(),
    };
    if let Err(e) = r.run(first_epoch) {
        let _ = tx.send(Err(e));
    }
}

/// The reader thread's state.
struct Reader<'a> {
    shards: &'a [Shard],
    cfg: StreamConfig,
    rng: Rng,
    tx: &'a SyncSender<Result<Window, DataError>>,
    recycled: &'a Receiver<Arc<Dataset>>,
    read: &'a AtomicU64,
    /// Each shard's open file, once read.
    files: Vec<Option<File>>,
    /// The bytes of one read (at most a piece, see [`super::shard`]).
    buf: Vec<u8>,
    /// Rows in an epoch.
    total: usize,
}

/// The stream is gone: the reader stops.
struct Gone;

impl Reader<'_> {
    /// Reads and sends windows, epoch after epoch; `Ok` once the stream is
    /// gone or the last epoch's end marker is sent.
    fn run(&mut self, first_epoch: u64) -> Result<(), DataError> {
        let shards = self.shards;
        let bases: Vec<usize> = shards
            .iter()
            .scan(0usize, |acc, s| {
                let b = *acc;
                *acc += s.rows() as usize;
                Some(b)
            })
            .collect();
        // The whole data, once read, when one window covers it and every
        // row is read.
        let mut whole: Option<Arc<Dataset>> = None;
        for epoch in first_epoch.. {
            let epoch_rng = self.rng.state();
            if self.cfg.epochs.is_some_and(|e| epoch >= e) {
                // An end marker without rows: it carries the generator's
                // state at the start of the epoch after the last, which the
                // stream's checkpoint state needs.
                let marker = Arc::new(shards[0].decoder(Vec::new()).finish()?);
                let _ = self.send(epoch, epoch_rng, 0, marker, (0..0).collect(), None);
                return Ok(());
            }
            if self.cfg.window >= self.total {
                // One window of every row, shards in the order given: the
                // in-memory loader's order (see the module docs).
                let segments: Vec<(usize, Range<u64>)> = shards
                    .iter()
                    .enumerate()
                    .map(|(k, s)| (k, 0..s.rows()))
                    .collect();
                let sent = if self.cfg.rank.is_none() {
                    let data = match &whole {
                        Some(d) => Arc::clone(d),
                        None => {
                            let d = self.read_window(&segments, None)?;
                            Arc::clone(whole.insert(Arc::new(d)))
                        }
                    };
                    let mut order: Vec<usize> = (0..self.total).collect();
                    if self.cfg.shuffle {
                        self.rng.shuffle(&mut order);
                    }
                    self.send(epoch, epoch_rng, 0, data, order, None)
                } else {
                    self.window(epoch, epoch_rng, 0, 0, &segments)?
                };
                if sent.is_err() {
                    return Ok(());
                }
                continue;
            }
            let mut order: Vec<usize> = (0..shards.len()).collect();
            if self.cfg.shuffle && shards.len() > 1 {
                self.rng.shuffle(&mut order);
            }
            // Rows of this epoch before the window.
            let mut pos = 0;
            for &k in &order {
                let shard = &shards[k];
                let cr = u64::from(shard.chunk_rows());
                let step = (self.cfg.window.max(1) as u64).div_ceil(cr).max(1) * cr;
                let mut at = 0;
                while at < shard.rows() {
                    let rows = at..(at + step).min(shard.rows());
                    let len = (rows.end - rows.start) as usize;
                    let base = bases[k] + at as usize;
                    if self
                        .window(epoch, epoch_rng, pos, base, &[(k, rows)])?
                        .is_err()
                    {
                        return Ok(());
                    }
                    pos += len;
                    at += step;
                }
            }
        }
        Ok(())
    }

    /// Shuffles, reads and sends the window of `segments` (shard, rows), its
    /// first row at `pos` in the epoch and `base` in the whole data.
    fn window(
        &mut self,
        epoch: u64,
        epoch_rng: [u64; 4],
        pos: usize,
        base: usize,
        segments: &[(usize, Range<u64>)],
    ) -> Result<Result<(), Gone>, DataError> {
        let len: usize = segments
            .iter()
            .map(|(_, r)| (r.end - r.start) as usize)
            .sum();
        let mut order: Vec<usize> = (0..len).collect();
        if self.cfg.shuffle {
            self.rng.shuffle(&mut order);
        }
        // The order is known before reading: this rank's rows of it.
        let want = self.cfg.rank.map(|rank| {
            let mut want = vec![false; len];
            for (i, &local) in order.iter().enumerate() {
                want[local] = rank.takes(pos + i, self.total);
            }
            want
        });
        let data = self.read_window(segments, want.as_deref())?;
        let slot = want.map(|want| {
            let mut next = 0u32;
            want.iter()
                .map(|&w| {
                    if w {
                        next += 1;
                        next - 1
                    } else {
                        NOT_READ
                    }
                })
                .collect()
        });
        Ok(self.send(epoch, epoch_rng, base, Arc::new(data), order, slot))
    }

    /// The rows of `segments` that `want` accepts (indexed over the
    /// segments one after another), decoded into a used window's buffers
    /// when one is back.
    fn read_window(
        &mut self,
        segments: &[(usize, Range<u64>)],
        want: Option<&[bool]>,
    ) -> Result<Dataset, DataError> {
        let spare = self
            .recycled
            .try_recv()
            .ok()
            .and_then(|d| Arc::try_unwrap(d).ok())
            .map(Dataset::into_values)
            .unwrap_or_default();
        let mut out = self.shards[segments[0].0].decoder(spare);
        let mut at = 0usize;
        for (k, rows) in segments {
            let shard = &self.shards[*k];
            let file = match &mut self.files[*k] {
                Some(f) => f,
                slot => slot.insert(File::open(shard.path()).map_err(|error| DataError::Io {
                    path: shard.path().to_path_buf(),
                    error,
                })?),
            };
            let n = (rows.end - rows.start) as usize;
            let w = want.map(|w| &w[at..at + n]);
            let bytes = shard.read_rows(file, rows.clone(), w, &mut self.buf, &mut out)?;
            self.read.fetch_add(bytes, Ordering::Relaxed);
            at += n;
        }
        out.finish()
    }

    fn send(
        &mut self,
        epoch: u64,
        epoch_rng: [u64; 4],
        base: usize,
        data: Arc<Dataset>,
        order: Vec<usize>,
        slot: Option<Vec<u32>>,
    ) -> Result<(), Gone> {
        let window = Window {
            epoch,
            epoch_rng,
            base,
            data,
            order,
            slot,
        };
        self.tx.send(Ok(window)).map_err(|_| Gone)
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
