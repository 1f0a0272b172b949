//! nnc's binary shard format: a data set on disk that is read a window of
//! rows at a time ([`super::stream`]), so training memory does not grow with
//! the data.
//!
//! # Layout (version 3, every number little-endian)
//!
//! | bytes | what |
//! |---|---|
//! | 8 | magic `NNCSHARD` |
//! | 4 | version (3; versions 1 and 2, whose checksums covered big chunks in a table at the end, are refused) |
//! | 4 | header length `H`: bytes before the first row |
//! | 8 | rows `N` |
//! | 4 | rows per block `R` |
//! | 4 | columns `C` |
//! | … | per column: name (u32 length, UTF-8), kind (u8: 0 real, 1 classes), class count (u32), dimensions (u32 count, u64 each), class names (u32 count, then each as u32 length and UTF-8) |
//! | 8 | checksum of every header byte before it |
//! | `⌈N/R⌉ ×` | blocks: `R` rows (the last block may hold fewer), each row its columns' values in column order (`f32` or `u32` class indices), then the 8-byte checksum of the block's rows |
//!
//! Each block carries its own checksum right after its rows, so a reader
//! that needs only some rows (one rank of a data-parallel group) reads and
//! verifies only the blocks that hold them, and nothing about the rest is
//! kept in memory. [`ShardWriter`] picks `R` so a block is about a page
//! ([`BLOCK_BYTES`]): a row of MNIST's size is a block of its own. The
//! checksum reads 64-bit words in four independent lanes, so verifying a
//! block costs far less than decoding it.
//!
//! The file's length follows from the header, so a truncated or extended
//! shard is rejected on open; each block is checked against its checksum
//! when it is read, so a corrupt byte is reported with the block's offset;
//! the length and modification time are checked again before every read,
//! so a shard replaced during training is detected.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::dataset::{Column, Dataset, Origin, Values};
use super::DataError;

/// The first bytes of every shard.
pub const MAGIC: [u8; 8] = *b"NNCSHARD";
/// The format version this module reads and writes.
pub const VERSION: u32 = 3;
/// Rows per checksummed block when asked for 0: as many as fit in
/// [`BLOCK_BYTES`], at least 1.
pub const DEFAULT_CHUNK_ROWS: u32 = 0;
/// The size a block of [`DEFAULT_CHUNK_ROWS`] rows aims at: a page, the
/// unit the operating system reads anyway, so a reader of scattered rows
/// reads little beyond them.
pub const BLOCK_BYTES: usize = 4096;
/// Bytes read from the file at once at most (unless one block is larger):
/// the reader's byte buffer stays this small whatever the window.
const READ_PIECE: usize = 1 << 20;

/// Odd multiplier of [`checksum`] (2^64 / golden ratio).
const MUL: u64 = 0x9e37_79b9_7f4a_7c15;

/// One step of [`checksum`]: absorbs word `w` into lane `h`. For a fixed
/// `w` it is a bijection of `h` (xor, an odd multiply, an xorshift), so a
/// change to any one word always changes the result.
#[inline(always)]
fn absorb(h: u64, w: u64) -> u64 {
    let h = (h ^ w).wrapping_mul(MUL);
    h ^ (h >> 29)
}

/// The shard checksum (version 2) of `bytes`: see [`Checksum`].
fn checksum(bytes: &[u8]) -> u64 {
    let mut c = Checksum::new();
    c.update(bytes);
    c.finish()
}

/// The shard checksum (version 2), fed in pieces: the bytes as
/// little-endian 64-bit words in four independent lanes (so the multiplies
/// overlap), then the length, the lanes and the zero-padded tail folded
/// into one. A word at a time instead of version 1's byte-at-a-time
/// FNV-1a, which was most of the reader thread's work. Not cryptographic:
/// it catches corruption, not tampering.
struct Checksum {
    lanes: [u64; 4],
    /// Bytes not yet absorbed (less than a 32-byte block).
    pending: [u8; 32],
    npending: usize,
    len: u64,
}

fn word(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w[..b.len()].copy_from_slice(b);
    u64::from_le_bytes(w)
}

impl Checksum {
    fn new() -> Self {
        Checksum {
            lanes: [
                0x243f_6a88_85a3_08d3,
                0x1319_8a2e_0370_7344,
                0xa409_3822_299f_31d0,
                0x082e_fa98_ec4e_6c89,
            ],
            pending: [0; 32],
            npending: 0,
            len: 0,
        }
    }

    fn block(lanes: &mut [u64; 4], block: &[u8]) {
        for (lane, w) in lanes.iter_mut().zip(block.chunks_exact(8)) {
            *lane = absorb(*lane, word(w));
        }
    }

    fn update(&mut self, mut bytes: &[u8]) {
        self.len += bytes.len() as u64;
        if self.npending > 0 {
            let take = (32 - self.npending).min(bytes.len());
            self.pending[self.npending..self.npending + take].copy_from_slice(&bytes[..take]);
            self.npending += take;
            bytes = &bytes[take..];
            if self.npending < 32 {
                return;
            }
            let pending = self.pending;
            Self::block(&mut self.lanes, &pending);
            self.npending = 0;
        }
        let mut blocks = bytes.chunks_exact(32);
        for block in &mut blocks {
            Self::block(&mut self.lanes, block);
        }
        let rest = blocks.remainder();
        self.pending[..rest.len()].copy_from_slice(rest);
        self.npending = rest.len();
    }

    fn finish(&self) -> u64 {
        let mut h = absorb(0, self.len);
        for &lane in &self.lanes {
            h = absorb(h, lane);
        }
        for w in self.pending[..self.npending].chunks(8) {
            h = absorb(h, word(w));
        }
        absorb(h, h >> 32)
    }
}

/// One column of a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardColumn {
    /// The column's name.
    pub name: String,
    /// Shape of one sample's values.
    pub shape: Vec<usize>,
    /// `Some(count)` for class indices, `None` for real numbers.
    pub classes: Option<u32>,
    /// Class names, for a class column that has them.
    pub names: Option<Vec<String>>,
}

impl ShardColumn {
    /// The layout of a dataset column.
    pub fn of(c: &Column) -> Self {
        ShardColumn {
            name: c.name().to_string(),
            shape: c.shape().to_vec(),
            classes: c.classes_count(),
            names: c.class_names().map(<[String]>::to_vec),
        }
    }

    /// Values per sample.
    pub fn width(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Bytes per row: `None` without columns, for a column of zero values per
/// row, or when the size overflows.
fn record_bytes(columns: &[ShardColumn]) -> Option<usize> {
    let mut record = 0usize;
    for c in columns {
        let width = c
            .shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))?;
        if width == 0 {
            return None;
        }
        record = record.checked_add(width.checked_mul(4)?)?;
    }
    (record > 0).then_some(record)
}

fn file_error(path: &Path, reason: String) -> DataError {
    DataError::File {
        path: path.to_path_buf(),
        reason,
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> DataError + '_ {
    move |error| DataError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// Writes a shard row by row, never holding more than one chunk's
/// checksum state: into a temporary sibling, renamed over `path` by
/// [`ShardWriter::finish`] (only a regular file or a new path is replaced).
pub struct ShardWriter {
    path: PathBuf,
    tmp: PathBuf,
    out: BufWriter<File>,
    /// Whether `finish` renamed the temporary file into place.
    renamed: bool,
    columns: Vec<ShardColumn>,
    header_len: u64,
    rows: u64,
    chunk_rows: u32,
    in_chunk: u32,
    chunk_hash: Checksum,
    record: Vec<u8>,
}

impl ShardWriter {
    /// Starts a shard of these columns at `path`, checksummed every
    /// `chunk_rows` rows (0: [`DEFAULT_CHUNK_ROWS`], about a page a block).
    pub fn create(
        path: impl AsRef<Path>,
        columns: Vec<ShardColumn>,
        chunk_rows: u32,
    ) -> Result<Self, DataError> {
        let path = path.as_ref().to_path_buf();
        let Some(record) = record_bytes(&columns) else {
            return Err(file_error(
                &path,
                "a shard needs at least one column, each with at least one value per row".into(),
            ));
        };
        let chunk_rows = if chunk_rows == 0 {
            u32::try_from((BLOCK_BYTES / record).max(1)).unwrap_or(1)
        } else {
            chunk_rows
        };
        if let Ok(m) = std::fs::symlink_metadata(&path) {
            if !m.is_file() {
                return Err(file_error(
                    &path,
                    "a shard is written only to a regular file or a new path".into(),
                ));
            }
        }
        let name = path
            .file_name()
            .map_or_else(|| "shard".to_string(), |n| n.to_string_lossy().into_owned());
        let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
        // A fresh file, never an existing one nor a link's target: a stale
        // temporary of a killed run is removed (the link itself, not what it
        // points to), and one planted again in between makes this fail.
        let _ = std::fs::remove_file(&tmp);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io_error(&tmp))?;
        let mut w = ShardWriter {
            path,
            tmp,
            out: BufWriter::with_capacity(1 << 20, file),
            renamed: false,
            columns,
            header_len: 0,
            rows: 0,
            chunk_rows,
            in_chunk: 0,
            chunk_hash: Checksum::new(),
            record: Vec::new(),
        };
        let header = w.header();
        w.header_len = header.len() as u64;
        w.write(&header)?;
        Ok(w)
    }

    /// The header as it stands (rows so far), checksum included.
    fn header(&self) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(&MAGIC);
        h.extend_from_slice(&VERSION.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes()); // patched below
        h.extend_from_slice(&self.rows.to_le_bytes());
        h.extend_from_slice(&self.chunk_rows.to_le_bytes());
        h.extend_from_slice(&(self.columns.len() as u32).to_le_bytes());
        let string = |h: &mut Vec<u8>, s: &str| {
            h.extend_from_slice(&(s.len() as u32).to_le_bytes());
            h.extend_from_slice(s.as_bytes());
        };
        for c in &self.columns {
            string(&mut h, &c.name);
            h.push(u8::from(c.classes.is_some()));
            h.extend_from_slice(&c.classes.unwrap_or(0).to_le_bytes());
            h.extend_from_slice(&(c.shape.len() as u32).to_le_bytes());
            for &d in &c.shape {
                h.extend_from_slice(&(d as u64).to_le_bytes());
            }
            let names = c.names.as_deref().unwrap_or(&[]);
            h.extend_from_slice(&(names.len() as u32).to_le_bytes());
            for n in names {
                string(&mut h, n);
            }
        }
        let len = (h.len() + 8) as u32;
        h[12..16].copy_from_slice(&len.to_le_bytes());
        let sum = checksum(&h);
        h.extend_from_slice(&sum.to_le_bytes());
        h
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), DataError> {
        self.out.write_all(bytes).map_err(io_error(&self.tmp))
    }

    /// Appends every row of `data`, whose columns must be the shard's
    /// (names, shapes and kinds, in order).
    pub fn push(&mut self, data: &Dataset) -> Result<(), DataError> {
        let layout: Vec<ShardColumn> = data.columns().iter().map(ShardColumn::of).collect();
        let same = layout.len() == self.columns.len()
            && layout.iter().zip(&self.columns).all(|(a, b)| {
                a.name == b.name && a.shape == b.shape && a.classes.is_some() == b.classes.is_some()
            });
        if !same {
            return Err(file_error(
                &self.path,
                format!(
                    "rows with columns {:?} do not fit the shard's {:?}",
                    layout.iter().map(|c| &c.name).collect::<Vec<_>>(),
                    self.columns.iter().map(|c| &c.name).collect::<Vec<_>>()
                ),
            ));
        }
        for r in 0..data.len() {
            self.record.clear();
            for c in data.columns() {
                let w = c.width();
                match c.values() {
                    Values::F32(v) => v[r * w..(r + 1) * w]
                        .iter()
                        .for_each(|x| self.record.extend_from_slice(&x.to_le_bytes())),
                    Values::Classes { values, .. } => values[r * w..(r + 1) * w]
                        .iter()
                        .for_each(|x| self.record.extend_from_slice(&x.to_le_bytes())),
                }
            }
            let record = std::mem::take(&mut self.record);
            self.chunk_hash.update(&record);
            let written = self.write(&record);
            self.record = record;
            written?;
            self.rows += 1;
            self.in_chunk += 1;
            if self.in_chunk == self.chunk_rows {
                self.end_block()?;
            }
        }
        Ok(())
    }

    /// Sets class column `j`'s class count (known once every row has been
    /// seen); [`ShardWriter::finish`] writes it into the header.
    pub fn set_classes(&mut self, j: usize, count: u32) {
        if let Some(c) = self.columns.get_mut(j).filter(|c| c.classes.is_some()) {
            c.classes = Some(count);
        }
    }

    /// Closes a block: its checksum after its rows.
    fn end_block(&mut self) -> Result<(), DataError> {
        let sum = std::mem::replace(&mut self.chunk_hash, Checksum::new()).finish();
        self.in_chunk = 0;
        self.write(&sum.to_le_bytes())
    }

    /// Writes the last block's checksum and the final header, then moves the
    /// shard into place; the rows written.
    pub fn finish(mut self) -> Result<u64, DataError> {
        if self.in_chunk > 0 {
            self.end_block()?;
        }
        let header = self.header();
        let tmp = self.tmp.clone();
        let out = &mut self.out;
        let done = (|| {
            out.flush()?;
            let f = out.get_mut();
            f.seek(SeekFrom::Start(0))?;
            f.write_all(&header)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        })();
        if let Err(error) = done {
            return Err(DataError::Io {
                path: self.path.clone(),
                error,
            });
        }
        self.renamed = true;
        Ok(self.rows)
    }
}

impl Drop for ShardWriter {
    /// A writer dropped before [`ShardWriter::finish`] moved the shard into
    /// place (an error midway, or never finished) removes its temporary
    /// file: nothing half-written is left beside the output.
    fn drop(&mut self) {
        if !self.renamed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Writes `data` as a shard at `path`.
pub fn write_shard(
    path: impl AsRef<Path>,
    data: &Dataset,
    chunk_rows: u32,
) -> Result<u64, DataError> {
    let columns = data.columns().iter().map(ShardColumn::of).collect();
    let mut w = ShardWriter::create(path, columns, chunk_rows)?;
    w.push(data)?;
    w.finish()
}

/// An open shard: its validated header (nothing that grows with the rows).
#[derive(Debug, Clone)]
pub struct Shard {
    path: PathBuf,
    columns: Vec<ShardColumn>,
    rows: u64,
    chunk_rows: u32,
    header_len: u64,
    record: usize,
    len: u64,
    modified: Option<SystemTime>,
}

/// Reads a header field by field, reporting where it ends early.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize, what: &str) -> Result<&[u8], String> {
        let s = self.bytes.get(self.at..self.at + n).ok_or_else(|| {
            format!(
                "header ends at byte offset {} inside the {what}",
                self.bytes.len()
            )
        })?;
        self.at += n;
        Ok(s)
    }
    fn u32(&mut self, what: &str) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4, what)?.try_into().unwrap_or_default(),
        ))
    }
    fn u64(&mut self, what: &str) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8, what)?.try_into().unwrap_or_default(),
        ))
    }
    fn string(&mut self, what: &str) -> Result<String, String> {
        let at = self.at;
        let n = self.u32(what)? as usize;
        String::from_utf8(self.take(n, what)?.to_vec())
            .map_err(|_| format!("the {what} at byte offset {at} is not UTF-8"))
    }
}

impl Shard {
    /// Opens and validates a shard: magic, version, header checksum, and a
    /// length that matches the header and the chunk table's checksum.
    pub fn open(path: impl AsRef<Path>) -> Result<Shard, DataError> {
        let path = path.as_ref().to_path_buf();
        let mut f = File::open(&path).map_err(io_error(&path))?;
        let meta = f.metadata().map_err(io_error(&path))?;
        let bad = |reason: String| file_error(&path, format!("invalid shard: {reason}"));
        let mut fixed = [0u8; 16];
        let got = read_up_to(&mut f, &mut fixed).map_err(io_error(&path))?;
        if got < 16 || fixed[..8] != MAGIC {
            return Err(bad(if got >= 8 && fixed[..8] != MAGIC {
                "no NNCSHARD magic at byte offset 0".into()
            } else {
                format!("the file ends at byte offset {got}, inside the fixed header")
            }));
        }
        let version = u32::from_le_bytes(fixed[8..12].try_into().unwrap_or_default());
        if version != VERSION {
            return Err(bad(format!(
                "version {version} at byte offset 8; this nnc reads version {VERSION}{}",
                if version < VERSION {
                    " (the shard was written by an older nnc: convert the data again with \
                     `nnc data convert`)"
                } else {
                    ""
                }
            )));
        }
        let header_len = u64::from(u32::from_le_bytes(
            fixed[12..16].try_into().unwrap_or_default(),
        ));
        if header_len < 40 || header_len > meta.len() || header_len > 1 << 30 {
            return Err(bad(format!(
                "header length {header_len} at byte offset 12 does not fit a file of {} bytes",
                meta.len()
            )));
        }
        let mut header = vec![0u8; header_len as usize];
        f.seek(SeekFrom::Start(0)).map_err(io_error(&path))?;
        f.read_exact(&mut header).map_err(io_error(&path))?;
        let body = header_len as usize - 8;
        let sum = u64::from_le_bytes(header[body..].try_into().unwrap_or_default());
        if checksum(&header[..body]) != sum {
            return Err(bad(format!("header checksum mismatch (bytes 0..{body})")));
        }
        let mut c = Cursor {
            bytes: &header[..body],
            at: 16,
        };
        let rows = c.u64("row count").map_err(bad)?;
        let chunk_rows = c.u32("rows per chunk").map_err(bad)?;
        let ncols = c.u32("column count").map_err(bad)?;
        if chunk_rows == 0 {
            return Err(bad("rows per chunk is 0 at byte offset 24".into()));
        }
        let mut columns = Vec::new();
        for _ in 0..ncols {
            let name = c.string("column name").map_err(bad)?;
            let kind = c.take(1, "column kind").map_err(bad)?[0];
            let classes = c.u32("class count").map_err(bad)?;
            let ndim = c.u32("dimension count").map_err(bad)?;
            let mut shape = Vec::new();
            for _ in 0..ndim {
                shape.push(c.u64("dimension").map_err(bad)? as usize);
            }
            let count = c.u32("class name count").map_err(bad)?;
            let mut names = Vec::new();
            for _ in 0..count {
                names.push(c.string("class name").map_err(bad)?);
            }
            columns.push(ShardColumn {
                name,
                shape,
                classes: (kind == 1).then_some(classes),
                names: (count > 0).then_some(names),
            });
        }
        // A record of zero bytes would make every row the same nothing
        // (and chunking by bytes impossible); sizes come from the file,
        // so their products are checked.
        let record = record_bytes(&columns).ok_or_else(|| {
            bad(if columns.is_empty() {
                "a shard without columns".to_string()
            } else {
                "a column of zero values per row, or a row too large to address".to_string()
            })
        })?;
        let blocks = rows.div_ceil(u64::from(chunk_rows));
        let expected =
            (rows as u128) * (record as u128) + u128::from(header_len) + u128::from(blocks) * 8;
        if u128::from(meta.len()) != expected {
            return Err(bad(format!(
                "the header promises {rows} rows of {record} bytes ({expected} bytes in all) but the \
                 file {} at byte offset {}",
                if u128::from(meta.len()) < expected { "is truncated: it ends" } else { "goes on past its end" },
                meta.len().min(expected as u64)
            )));
        }
        Ok(Shard {
            path,
            columns,
            rows,
            chunk_rows,
            header_len,
            record,
            len: meta.len(),
            modified: meta.modified().ok(),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The columns.
    pub fn columns(&self) -> &[ShardColumn] {
        &self.columns
    }

    /// Rows in the shard.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Rows per checksummed chunk.
    pub fn chunk_rows(&self) -> u32 {
        self.chunk_rows
    }

    /// Fails when the file's length or modification time is no longer what
    /// it was when the shard was opened.
    pub fn check_unchanged(&self) -> Result<(), DataError> {
        let meta = std::fs::metadata(&self.path).map_err(io_error(&self.path))?;
        if meta.len() != self.len || meta.modified().ok() != self.modified {
            return Err(file_error(
                &self.path,
                format!(
                    "the shard changed while it was being read (it was {} bytes, now {}; \
                     or its modification time moved)",
                    self.len,
                    meta.len()
                ),
            ));
        }
        Ok(())
    }

    /// Bytes per row.
    pub fn record_bytes(&self) -> usize {
        self.record
    }

    /// Block `b`'s byte offset and rows.
    fn block(&self, b: u64) -> (u64, u64) {
        let r = u64::from(self.chunk_rows);
        let stride = r * self.record as u64 + 8;
        (self.header_len + b * stride, r.min(self.rows - b * r))
    }

    /// Reads rows `rows` of the shard that `want` accepts (by their index
    /// from `rows.start`; every row without it) into `out`, in row order.
    /// Only the blocks holding a wanted row are read, each verified against
    /// its checksum, at most [`READ_PIECE`] bytes at a time through `buf`;
    /// the bytes read from the file.
    pub(super) fn read_rows(
        &self,
        file: &mut File,
        rows: std::ops::Range<u64>,
        want: Option<&[bool]>,
        buf: &mut Vec<u8>,
        out: &mut Decoder,
    ) -> Result<u64, DataError> {
        self.check_unchanged()?;
        let rows = rows.start.min(self.rows)..rows.end.min(self.rows);
        if rows.is_empty() {
            return Ok(0);
        }
        let cr = u64::from(self.chunk_rows);
        let wanted = |r: u64| want.is_none_or(|w| w[(r - rows.start) as usize]);
        // Block `b`'s rows that `rows` covers.
        let span = |b: u64| (b * cr).max(rows.start)..((b + 1) * cr).min(rows.end);
        let needed = |b: u64| span(b).any(wanted);
        let (first, last) = (rows.start / cr, (rows.end - 1) / cr);
        let mut read = 0u64;
        let mut b = first;
        while b <= last {
            if !needed(b) {
                b += 1;
                continue;
            }
            // A run of needed blocks, one read of at most READ_PIECE bytes
            // (or one block, if larger).
            let (at, _) = self.block(b);
            let mut end = b;
            let mut bytes = 0usize;
            while end <= last && needed(end) {
                let (_, n) = self.block(end);
                let len = n as usize * self.record + 8;
                if bytes > 0 && bytes + len > READ_PIECE {
                    break;
                }
                bytes += len;
                end += 1;
            }
            buf.resize(bytes, 0);
            file.seek(SeekFrom::Start(at))
                .map_err(io_error(&self.path))?;
            file.read_exact(buf).map_err(io_error(&self.path))?;
            read += bytes as u64;
            let mut off = 0usize;
            for k in b..end {
                let (start, n) = self.block(k);
                let len = n as usize * self.record;
                let (data, sum) = buf[off..off + len + 8].split_at(len);
                if checksum(data) != u64::from_le_bytes(sum.try_into().unwrap_or_default()) {
                    return Err(file_error(
                        &self.path,
                        format!(
                            "corrupt shard: block {k} (bytes {start}..{}) does not match its checksum",
                            start + len as u64 + 8
                        ),
                    ));
                }
                for r in span(k) {
                    if wanted(r) {
                        let i = (r - k * cr) as usize * self.record;
                        out.push(&data[i..i + self.record]);
                    }
                }
                off += len + 8;
            }
            b = end;
        }
        Ok(read)
    }

    /// A decoder of this shard's rows, filling `spare`'s buffers (a used
    /// window's values, column by column) where they fit.
    pub(super) fn decoder(&self, spare: Vec<Values>) -> Decoder {
        let mut spare = spare.into_iter();
        let columns = self
            .columns
            .iter()
            .map(|c| {
                let (mut reals, mut classes) = match spare.next() {
                    Some(Values::F32(v)) => (v, Vec::new()),
                    Some(Values::Classes { values, .. }) => (Vec::new(), values),
                    None => (Vec::new(), Vec::new()),
                };
                reals.clear();
                classes.clear();
                match c.classes {
                    None => Filling::Reals(reals),
                    Some(_) => Filling::Classes(classes),
                }
            })
            .collect();
        Decoder {
            shard: self.clone(),
            columns,
        }
    }

    /// Rows `rows` of the shard, every block verified.
    pub fn read_range(
        &self,
        file: &mut File,
        rows: std::ops::Range<u64>,
        buf: &mut Vec<u8>,
    ) -> Result<Dataset, DataError> {
        let mut out = self.decoder(Vec::new());
        self.read_rows(file, rows, None, buf, &mut out)?;
        out.finish()
    }

    /// Reads the whole shard into memory, verifying every block.
    pub fn load(&self) -> Result<Dataset, DataError> {
        self.load_with(&mut Vec::new())
    }

    /// [`Shard::load`] reading through `buf` (kept to be reused).
    pub fn load_with(&self, buf: &mut Vec<u8>) -> Result<Dataset, DataError> {
        let mut f = File::open(&self.path).map_err(io_error(&self.path))?;
        self.read_range(&mut f, 0..self.rows, buf)
    }
}

/// One column's values as rows arrive.
enum Filling {
    Reals(Vec<f32>),
    Classes(Vec<u32>),
}

/// Rows of a shard's records, decoded one at a time into columns
/// ([`Shard::read_rows`] fills it; [`Decoder::finish`] makes the dataset).
pub(super) struct Decoder {
    shard: Shard,
    columns: Vec<Filling>,
}

impl Decoder {
    /// Appends one row from its record's bytes.
    fn push(&mut self, record: &[u8]) {
        let four = |b: &[u8]| [b[0], b[1], b[2], b[3]];
        let mut offset = 0;
        for (c, fill) in self.shard.columns.iter().zip(&mut self.columns) {
            // One exact-size loop per cell, which the compiler turns into a
            // plain copy (a flattened iterator over every value was most of
            // the reader's time).
            let cell = &record[offset..offset + 4 * c.width()];
            match fill {
                Filling::Reals(v) => {
                    v.extend(cell.chunks_exact(4).map(|b| f32::from_le_bytes(four(b))));
                }
                Filling::Classes(v) => {
                    v.extend(cell.chunks_exact(4).map(|b| u32::from_le_bytes(four(b))));
                }
            }
            offset += cell.len();
        }
    }

    /// The rows as a dataset.
    pub(super) fn finish(self) -> Result<Dataset, DataError> {
        let path = &self.shard.path;
        let columns = self
            .shard
            .columns
            .iter()
            .zip(self.columns)
            .map(|(c, fill)| {
                let origin = Origin::file(path, format!("column `{}`", c.name));
                let column = match (fill, c.classes) {
                    (Filling::Reals(v), _) => Column::f32(c.name.clone(), &c.shape, v),
                    (Filling::Classes(v), classes) => {
                        let col =
                            Column::classes(c.name.clone(), &c.shape, v, classes.unwrap_or(0));
                        match &c.names {
                            Some(n) => col.with_class_names(n.clone()),
                            None => col,
                        }
                    }
                };
                column.with_origin(origin)
            })
            .collect();
        Dataset::new(columns)
    }
}

/// Reads until `buf` is full or the file ends; the bytes read.
fn read_up_to(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
#[path = "shard_tests.rs"]
mod tests;
