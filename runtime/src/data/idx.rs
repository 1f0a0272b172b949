//! Reader for the IDX format (MNIST and its relatives), raw or gzip-compressed.
//!
//! Layout: two zero bytes, a type byte (0x08 u8, 0x09 i8, 0x0B i16, 0x0C i32,
//! 0x0D f32, 0x0E f64), a dimension count, then that many big-endian `u32`
//! sizes, then the values, big-endian, row-major. The reader insists that the
//! data is exactly as long as the header promises: a short file is truncated,
//! a long one is not what its header claims, and both would otherwise train
//! on garbage silently. Gzip is detected by its magic bytes `1f 8b`, not by
//! the file name.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use flate2::read::MultiGzDecoder;

use super::dataset::{Column, Dataset, Origin};
use super::DataError;

/// The values of an IDX file, in their stored type.
#[derive(Debug, Clone, PartialEq)]
pub enum IdxData {
    /// Type byte 0x08.
    U8(Vec<u8>),
    /// Type byte 0x09.
    I8(Vec<i8>),
    /// Type byte 0x0B.
    I16(Vec<i16>),
    /// Type byte 0x0C.
    I32(Vec<i32>),
    /// Type byte 0x0D.
    F32(Vec<f32>),
    /// Type byte 0x0E.
    F64(Vec<f64>),
}

impl IdxData {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            IdxData::U8(v) => v.len(),
            IdxData::I8(v) => v.len(),
            IdxData::I16(v) => v.len(),
            IdxData::I32(v) => v.len(),
            IdxData::F32(v) => v.len(),
            IdxData::F64(v) => v.len(),
        }
    }

    /// True when there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The stored type's name, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            IdxData::U8(_) => "u8",
            IdxData::I8(_) => "i8",
            IdxData::I16(_) => "i16",
            IdxData::I32(_) => "i32",
            IdxData::F32(_) => "f32",
            IdxData::F64(_) => "f64",
        }
    }

    /// All values converted to f32 (unscaled; i32/f64 may round).
    pub fn to_f32(&self) -> Vec<f32> {
        match self {
            IdxData::U8(v) => v.iter().map(|&x| x as f32).collect(),
            IdxData::I8(v) => v.iter().map(|&x| x as f32).collect(),
            IdxData::I16(v) => v.iter().map(|&x| x as f32).collect(),
            IdxData::I32(v) => v.iter().map(|&x| x as f32).collect(),
            IdxData::F32(v) => v.clone(),
            IdxData::F64(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }
}

/// A whole IDX file: its dimensions and values.
#[derive(Debug, Clone, PartialEq)]
pub struct IdxArray {
    /// Sizes from the header, outermost first (`[n, 28, 28]` for MNIST images).
    pub dims: Vec<usize>,
    /// The values, `dims.iter().product()` of them.
    pub data: IdxData,
}

/// Reads an IDX file, transparently gunzipping it if it starts with `1f 8b`.
pub fn read_idx(path: impl AsRef<Path>) -> Result<IdxArray, DataError> {
    let path = path.as_ref();
    let io = |error| DataError::Io {
        path: path.to_path_buf(),
        error,
    };
    let file = File::open(path).map_err(io)?;
    read_idx_from(BufReader::new(file), path)
}

/// Parses IDX from a buffered reader as [`read_idx`] reads a file:
/// gunzipped when it starts with `1f 8b`; `path` names it in errors. The
/// fuzz target reads bytes in memory through it (no file per input).
pub fn read_idx_from(mut reader: impl BufRead, path: &Path) -> Result<IdxArray, DataError> {
    let gz = match reader.fill_buf() {
        Ok(buf) => buf.starts_with(&[0x1f, 0x8b]),
        Err(error) => {
            return Err(DataError::Io {
                path: path.to_path_buf(),
                error,
            })
        }
    };
    if gz {
        parse_idx(MultiGzDecoder::new(reader), path, true)
    } else {
        parse_idx(reader, path, false)
    }
}

/// A dataset from an IDX file of samples and one of class labels, as
/// MNIST ships them: column `image` (u8 pixels scaled to `[0, 1]`, other
/// types unscaled, shape the file's dimensions after the first) and
/// column `label` (one integer class per sample; the class count is the
/// largest label plus one, at least 10 for u8 labels that are all digits,
/// so an MNIST subset missing a digit still has ten classes).
pub fn load_pair(images: &Path, labels: &Path) -> Result<Dataset, DataError> {
    pair(read_idx(images)?, images, read_idx(labels)?, labels)
}

/// [`load_pair`] of two arrays already read, from the files `images` and
/// `labels` (named in errors and in the columns' origins).
pub fn pair(
    img: IdxArray,
    images: &Path,
    lab: IdxArray,
    labels: &Path,
) -> Result<Dataset, DataError> {
    let file_err = |path: &Path, reason: String| DataError::File {
        path: path.to_path_buf(),
        reason,
    };
    if img.dims.len() < 2 {
        return Err(file_err(
            images,
            format!("expected samples [n, ...], found dimensions {:?}", img.dims),
        ));
    }
    let classes: Vec<u32> = match (&lab.data, lab.dims.as_slice()) {
        (IdxData::U8(l), [_]) => l.iter().map(|&c| u32::from(c)).collect(),
        (IdxData::I8(l), [_]) if l.iter().all(|&c| c >= 0) => l.iter().map(|&c| c as u32).collect(),
        (IdxData::I16(l), [_]) if l.iter().all(|&c| c >= 0) => {
            l.iter().map(|&c| c as u32).collect()
        }
        (IdxData::I32(l), [_]) if l.iter().all(|&c| c >= 0) => {
            l.iter().map(|&c| c as u32).collect()
        }
        _ => {
            return Err(file_err(
                labels,
                format!(
                    "expected non-negative integer labels [n], found {} {:?}",
                    lab.data.type_name(),
                    lab.dims
                ),
            ))
        }
    };
    if img.dims[0] != lab.dims[0] {
        return Err(file_err(
            labels,
            format!(
                "{} labels for {} samples in {}",
                lab.dims[0],
                img.dims[0],
                images.display()
            ),
        ));
    }
    let features = match &img.data {
        IdxData::U8(p) => p.iter().map(|&p| f32::from(p) / 255.0).collect(),
        other => other.to_f32(),
    };
    let max = classes.iter().copied().max().unwrap_or(0);
    let digits = matches!(lab.data, IdxData::U8(_)) && max <= 9;
    let count = if digits { 10 } else { max.saturating_add(1) };
    Dataset::new(vec![
        Column::f32("image", &img.dims[1..], features).with_origin(Origin::file(images, "")),
        Column::classes("label", &[], classes, count).with_origin(Origin::file(labels, "")),
    ])
}

/// Parses IDX from any reader; `path` is only used in error messages and
/// `gzip` only to word them ("corrupt gzip stream" vs "truncated").
pub fn parse_idx(mut r: impl Read, path: &Path, gzip: bool) -> Result<IdxArray, DataError> {
    let bad = |reason: String| DataError::Idx {
        path: path.to_path_buf(),
        reason,
    };
    // Reads exactly buf.len() bytes, or says what was being read when the
    // data ran out or the decompressor failed.
    let mut read_exact = |buf: &mut [u8], what: &str| -> Result<(), DataError> {
        let mut got = 0;
        while got < buf.len() {
            match r.read(&mut buf[got..]) {
                Ok(0) => {
                    return Err(bad(format!(
                        "truncated: file ends after {got} of {} bytes of {what}",
                        buf.len()
                    )))
                }
                Ok(k) => got += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if gzip => return Err(bad(format!("corrupt gzip stream in {what}: {e}"))),
                Err(e) => {
                    return Err(DataError::Io {
                        path: path.to_path_buf(),
                        error: e,
                    })
                }
            }
        }
        Ok(())
    };

    let mut magic = [0u8; 4];
    read_exact(&mut magic, "the 4-byte magic number")?;
    if magic[0] != 0 || magic[1] != 0 {
        return Err(bad(format!(
            "bad magic {:02x} {:02x} {:02x} {:02x}: IDX files start with two zero bytes",
            magic[0], magic[1], magic[2], magic[3]
        )));
    }
    let (elem_size, type_byte) = match magic[2] {
        0x08 | 0x09 => (1, magic[2]),
        0x0B => (2, magic[2]),
        0x0C | 0x0D => (4, magic[2]),
        0x0E => (8, magic[2]),
        other => return Err(bad(format!("unknown element type byte 0x{other:02x}"))),
    };
    let ndims = magic[3] as usize;
    if ndims == 0 {
        return Err(bad("header declares 0 dimensions".into()));
    }
    let mut dim_bytes = vec![0u8; 4 * ndims];
    read_exact(&mut dim_bytes, "the dimension sizes")?;
    let dims: Vec<usize> = dim_bytes
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let count = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| bad(format!("dimensions {dims:?} overflow")))?;
    let bytes = count
        .checked_mul(elem_size)
        .ok_or_else(|| bad(format!("dimensions {dims:?} overflow")))?;

    // Grow the buffer as data actually arrives, so a corrupt header that
    // claims terabytes fails as "truncated" instead of allocating them.
    let mut raw = Vec::with_capacity(bytes.min(1 << 26));
    let got = (&mut r)
        .take(bytes as u64)
        .read_to_end(&mut raw)
        .map_err(|e| {
            if gzip {
                bad(format!("corrupt gzip stream in the data: {e}"))
            } else {
                DataError::Io {
                    path: path.to_path_buf(),
                    error: e,
                }
            }
        })?;
    if got < bytes {
        return Err(bad(format!(
            "truncated: header dims {dims:?} need {bytes} data bytes, file has {got}"
        )));
    }
    let mut extra = [0u8; 1];
    match r.read(&mut extra) {
        Ok(0) => {}
        Ok(_) => {
            return Err(bad(format!(
                "more data than header dims {dims:?} describe ({bytes} bytes expected)"
            )))
        }
        Err(e) if gzip => return Err(bad(format!("corrupt gzip stream after the data: {e}"))),
        Err(e) => {
            return Err(DataError::Io {
                path: path.to_path_buf(),
                error: e,
            })
        }
    }

    let data = match type_byte {
        0x08 => IdxData::U8(raw),
        0x09 => IdxData::I8(raw.iter().map(|&b| b as i8).collect()),
        0x0B => IdxData::I16(
            raw.chunks_exact(2)
                .map(|c| i16::from_be_bytes([c[0], c[1]]))
                .collect(),
        ),
        0x0C => IdxData::I32(
            raw.chunks_exact(4)
                .map(|c| i32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        0x0D => IdxData::F32(
            raw.chunks_exact(4)
                .map(|c| f32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        _ => IdxData::F64(
            raw.chunks_exact(8)
                .map(|c| f64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect(),
        ),
    };
    Ok(IdxArray { dims, data })
}
