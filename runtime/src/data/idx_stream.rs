//! IDX files read a block of rows at a time through a buffer (raw or
//! gzip-compressed), so converting one to a shard
//! ([`super::convert::idx_to_shard`]) holds one block whatever the file's
//! size. The header is validated as [`super::idx::read_idx`] does, and the
//! data must be exactly as long as the header promises: a short file is
//! reported with the byte offset where it ends, a long one too.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use super::DataError;

/// The most bytes of values [`IdxReader::read_f32`] reads at once (but
/// always at least one row).
const BLOCK_BYTES: usize = 16 << 20;

/// An IDX file being read row by row (a row: the values under the first
/// dimension).
pub struct IdxReader {
    path: PathBuf,
    input: Box<dyn Read + Send>,
    gzip: bool,
    /// Type byte (0x08 u8, 0x09 i8, 0x0B i16, 0x0C i32, 0x0D f32, 0x0E f64).
    kind: u8,
    elem: usize,
    dims: Vec<usize>,
    row_bytes: usize,
    /// Rows read so far.
    read: usize,
    /// Bytes of the (decompressed) stream consumed so far.
    offset: u64,
    buf: Vec<u8>,
}

impl IdxReader {
    /// Opens `path` and reads its header.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, DataError> {
        let path = path.as_ref().to_path_buf();
        let io = |error| DataError::Io {
            path: path.clone(),
            error,
        };
        let file = File::open(&path).map_err(io)?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let gzip = reader.fill_buf().map_err(io)?.starts_with(&[0x1f, 0x8b]);
        let input: Box<dyn Read + Send> = if gzip {
            Box::new(BufReader::with_capacity(
                1 << 20,
                MultiGzDecoder::new(reader),
            ))
        } else {
            Box::new(reader)
        };
        let mut r = IdxReader {
            path,
            input,
            gzip,
            kind: 0,
            elem: 0,
            dims: Vec::new(),
            row_bytes: 0,
            read: 0,
            offset: 0,
            buf: Vec::new(),
        };
        let mut magic = [0u8; 4];
        r.fill(&mut magic, "the 4-byte magic number")?;
        if magic[0] != 0 || magic[1] != 0 {
            return Err(r.bad(format!(
                "bad magic {:02x} {:02x} {:02x} {:02x} at byte offset 0: IDX files start with \
                 two zero bytes",
                magic[0], magic[1], magic[2], magic[3]
            )));
        }
        r.elem = match magic[2] {
            0x08 | 0x09 => 1,
            0x0B => 2,
            0x0C | 0x0D => 4,
            0x0E => 8,
            other => {
                return Err(r.bad(format!(
                    "unknown element type byte 0x{other:02x} at byte offset 2"
                )))
            }
        };
        r.kind = magic[2];
        if magic[3] == 0 {
            return Err(r.bad("header declares 0 dimensions (byte offset 3)".into()));
        }
        let mut dims = vec![0u8; 4 * usize::from(magic[3])];
        r.fill(&mut dims, "the dimension sizes")?;
        r.dims = dims
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
            .collect();
        r.row_bytes = r.dims[1..]
            .iter()
            .try_fold(r.elem, |a, &d| a.checked_mul(d))
            .filter(|&b| b <= 1 << 30)
            .ok_or_else(|| r.bad(format!("dimensions {:?} overflow", r.dims)))?;
        Ok(r)
    }

    /// Sizes from the header, outermost (the row count) first.
    pub fn dims(&self) -> &[usize] {
        &self.dims
    }

    /// Rows in the file.
    pub fn rows(&self) -> usize {
        self.dims[0]
    }

    /// The stored type's name (`u8`, `i8`, `i16`, `i32`, `f32`, `f64`).
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            0x08 => "u8",
            0x09 => "i8",
            0x0B => "i16",
            0x0C => "i32",
            0x0D => "f32",
            _ => "f64",
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn bad(&self, reason: String) -> DataError {
        DataError::Idx {
            path: self.path.clone(),
            reason,
        }
    }

    /// Reads exactly `buf.len()` bytes, or says where the data ran out.
    fn fill(&mut self, buf: &mut [u8], what: &str) -> Result<(), DataError> {
        let mut got = 0;
        while got < buf.len() {
            match self.input.read(&mut buf[got..]) {
                Ok(0) => {
                    return Err(self.bad(format!(
                        "truncated: the {}data ends at byte offset {} inside {what}",
                        if self.gzip { "decompressed " } else { "" },
                        self.offset + got as u64
                    )))
                }
                Ok(k) => got += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if self.gzip => {
                    return Err(self.bad(format!(
                        "corrupt gzip stream in {what} (decompressed byte offset {}): {e}",
                        self.offset + got as u64
                    )))
                }
                Err(error) => {
                    return Err(DataError::Io {
                        path: self.path.clone(),
                        error,
                    })
                }
            }
        }
        self.offset += buf.len() as u64;
        Ok(())
    }

    /// Reads exactly `len` bytes into `buf`, growing it a megabyte at a
    /// time as the data arrives: a corrupt header that claims terabytes
    /// fails as truncated instead of allocating them.
    fn fill_growing(&mut self, buf: &mut Vec<u8>, len: usize, what: &str) -> Result<(), DataError> {
        buf.clear();
        while buf.len() < len {
            let start = buf.len();
            let end = len.min(start + (1 << 20));
            buf.resize(end, 0);
            self.fill(&mut buf[start..end], what)?;
        }
        Ok(())
    }

    /// The next (up to) `rows` rows as `f32`, appended to `out`
    /// (u8 scaled by 1/255 when `scale_u8`, other types unscaled; `i32`
    /// and `f64` may round); the rows read, 0 at the end of the file, where
    /// the file must end too.
    pub fn read_f32(
        &mut self,
        rows: usize,
        scale_u8: bool,
        out: &mut Vec<f32>,
    ) -> Result<usize, DataError> {
        // At most a block of bytes at a time (at least one row), whatever
        // `rows` asks: the caller reads the labels for the rows it got.
        let n = rows
            .min(self.rows() - self.read)
            .min((BLOCK_BYTES / self.row_bytes).max(1));
        if n == 0 {
            self.expect_end()?;
            return Ok(0);
        }
        let mut buf = std::mem::take(&mut self.buf);
        let filled = self.fill_growing(&mut buf, n * self.row_bytes, "the values");
        let ok = filled.map(|()| match self.kind {
            0x08 if scale_u8 => out.extend(buf.iter().map(|&b| f32::from(b) / 255.0)),
            0x08 => out.extend(buf.iter().map(|&b| f32::from(b))),
            0x09 => out.extend(buf.iter().map(|&b| f32::from(b as i8))),
            0x0B => out.extend(
                buf.chunks_exact(2)
                    .map(|c| f32::from(i16::from_be_bytes([c[0], c[1]]))),
            ),
            0x0C => out.extend(
                buf.chunks_exact(4)
                    .map(|c| i32::from_be_bytes([c[0], c[1], c[2], c[3]]) as f32),
            ),
            0x0D => out.extend(
                buf.chunks_exact(4)
                    .map(|c| f32::from_be_bytes([c[0], c[1], c[2], c[3]])),
            ),
            _ => out.extend(buf.chunks_exact(8).map(|c| {
                f64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32
            })),
        });
        self.buf = buf;
        ok?;
        self.read += n;
        Ok(n)
    }

    /// The next (up to) `rows` class labels (a file of one dimension, of
    /// non-negative integers), appended to `out`; the rows read.
    pub fn read_labels(&mut self, rows: usize, out: &mut Vec<u32>) -> Result<usize, DataError> {
        if self.dims.len() != 1 || matches!(self.kind, 0x0D | 0x0E) {
            return Err(self.bad(format!(
                "expected non-negative integer labels [n], found {} {:?}",
                self.type_name(),
                self.dims
            )));
        }
        let n = rows.min(self.rows() - self.read);
        if n == 0 {
            self.expect_end()?;
            return Ok(0);
        }
        let mut buf = std::mem::take(&mut self.buf);
        let at = self.offset;
        let filled = self.fill_growing(&mut buf, n * self.elem, "the labels");
        let decoded = filled.and_then(|()| {
            for (k, c) in buf.chunks_exact(self.elem).enumerate() {
                let v: i64 = match self.kind {
                    0x08 => i64::from(c[0]),
                    0x09 => i64::from(c[0] as i8),
                    0x0B => i64::from(i16::from_be_bytes([c[0], c[1]])),
                    _ => i64::from(i32::from_be_bytes([c[0], c[1], c[2], c[3]])),
                };
                let v = u32::try_from(v).map_err(|_| {
                    self.bad(format!(
                        "label {v} at byte offset {} is negative; labels are classes 0, 1, ...",
                        at + (k * self.elem) as u64
                    ))
                })?;
                out.push(v);
            }
            Ok(())
        });
        self.buf = buf;
        decoded?;
        self.read += n;
        Ok(n)
    }

    /// Fails unless the data ends here.
    fn expect_end(&mut self) -> Result<(), DataError> {
        let mut extra = [0u8; 1];
        loop {
            match self.input.read(&mut extra) {
                Ok(0) => return Ok(()),
                Ok(_) => {
                    return Err(self.bad(format!(
                        "more data than header dims {:?} describe: it goes on past byte offset {}",
                        self.dims, self.offset
                    )))
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if self.gzip => {
                    return Err(self.bad(format!("corrupt gzip stream after the data: {e}")))
                }
                Err(error) => {
                    return Err(DataError::Io {
                        path: self.path.clone(),
                        error,
                    })
                }
            }
        }
    }
}
