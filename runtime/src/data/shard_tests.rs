//! Shards round-trip, are rejected with the file and offset when truncated
//! or corrupt, and are caught changing; streams visit every row once per
//! epoch, reproducibly, and equal the in-memory loader when the window
//! covers the data.

use super::*;
use crate::data::stream::{ShardStream, StreamConfig};
use crate::data::tests::TempDir;
use crate::data::{Loader, LoaderConfig};
use crate::rng::Rng;

/// `n` rows: a 2×3 real column, a class column with names, per-position
/// classes of width 2.
fn data(n: usize, seed: u64) -> Dataset {
    let mut rng = Rng::new(seed);
    let x: Vec<f32> = (0..n * 6).map(|_| rng.normal() as f32).collect();
    let y: Vec<u32> = (0..n).map(|i| (i % 3) as u32).collect();
    let t: Vec<u32> = (0..n * 2).map(|i| (i % 7) as u32).collect();
    Dataset::new(vec![
        Column::f32("x", &[2, 3], x),
        Column::classes("y", &[], y, 3).with_class_names(vec!["a".into(), "b".into(), "c".into()]),
        Column::classes("t", &[2], t, 7),
    ])
    .unwrap()
}

fn same(a: &Dataset, b: &Dataset) -> bool {
    a.len() == b.len()
        && a.columns().len() == b.columns().len()
        && a.columns().iter().zip(b.columns()).all(|(p, q)| {
            p.name() == q.name()
                && p.shape() == q.shape()
                && p.class_names() == q.class_names()
                && match (p.values(), q.values()) {
                    (Values::F32(u), Values::F32(v)) => u
                        .iter()
                        .map(|x| x.to_bits())
                        .eq(v.iter().map(|x| x.to_bits())),
                    (
                        Values::Classes {
                            values: u,
                            classes: c,
                            ..
                        },
                        Values::Classes {
                            values: v,
                            classes: d,
                            ..
                        },
                    ) => u == v && c == d,
                    _ => false,
                }
        })
}

#[test]
fn a_shard_round_trips_every_value_and_name() {
    let dir = TempDir::new("shard-rt");
    let d = data(23, 1);
    let path = dir.0.join("d.shard");
    assert_eq!(write_shard(&path, &d, 5).unwrap(), 23);
    let s = Shard::open(&path).unwrap();
    assert_eq!((s.rows(), s.chunk_rows()), (23, 5));
    assert!(same(&s.load().unwrap(), &d));
    // Writing again replaces it atomically, leaving no temporary behind.
    write_shard(&path, &data(4, 2), 5).unwrap();
    assert_eq!(Shard::open(&path).unwrap().rows(), 4);
    assert_eq!(std::fs::read_dir(&dir.0).unwrap().count(), 1);
}

#[test]
fn truncated_corrupt_and_foreign_shards_are_rejected_with_file_and_offset() {
    let dir = TempDir::new("shard-bad");
    let path = dir.0.join("d.shard");
    write_shard(&path, &data(10, 3), 4).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let name = path.display().to_string();
    let err = |b: &[u8]| {
        std::fs::write(&path, b).unwrap();
        let e = Shard::open(&path)
            .and_then(|s| s.load())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(&name), "{e}");
        e
    };
    let e = err(&bytes[..bytes.len() - 3]);
    assert!(e.contains("is truncated: it ends at byte offset"), "{e}");
    let e = err(&bytes[..10]);
    assert!(e.contains("ends at byte offset 10"), "{e}");
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(err(&longer).contains("goes on past its end"));
    let e = err(b"PK\x03\x04 not a shard at all");
    assert!(e.contains("no NNCSHARD magic at byte offset 0"), "{e}");
    let mut header = bytes.clone();
    header[20] ^= 1; // the row count
    assert!(err(&header).contains("header checksum mismatch"));
    // A flipped bit in row 5 (block 1 of 4-row blocks, each followed by
    // its checksum) names that block.
    let h = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    let record = 6 * 4 + 4 + 2 * 4;
    let block = 4 * record + 8;
    let mut payload = bytes.clone();
    payload[h + block + record + 2] ^= 0x10;
    let e = err(&payload);
    let want = format!("block 1 (bytes {}..{})", h + block, h + 2 * block);
    assert!(e.contains(&want), "{e}");
    // So does a flipped bit in its checksum.
    let mut sum = bytes.clone();
    sum[h + 2 * block - 1] ^= 0x01;
    assert!(err(&sum).contains(&want));
}

#[test]
fn older_versions_are_refused_with_the_way_out() {
    let dir = TempDir::new("shard-v1");
    let path = dir.0.join("d.shard");
    for old in [1u32, 2] {
        write_shard(&path, &data(3, 1), 4).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[8..12].copy_from_slice(&old.to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        let e = Shard::open(&path).unwrap_err().to_string();
        let want = format!("version {old} at byte offset 8; this nnc reads version 3");
        assert!(e.contains(&want), "{e}");
        assert!(e.contains("nnc data convert"), "{e}");
    }
}

/// Block rows default to about a page: a large row is a block of its own,
/// small rows share one.
#[test]
fn default_blocks_are_about_a_page() {
    let dir = TempDir::new("shard-blocks");
    let path = dir.0.join("d.shard");
    write_shard(&path, &data(300, 1), DEFAULT_CHUNK_ROWS).unwrap();
    let s = Shard::open(&path).unwrap();
    assert_eq!(s.chunk_rows() as usize, BLOCK_BYTES / s.record_bytes());
    assert!(same(&s.load().unwrap(), &data(300, 1)));
    let wide = Dataset::new(vec![Column::f32("x", &[2000], vec![0.5; 4000])]).unwrap();
    write_shard(&path, &wide, DEFAULT_CHUNK_ROWS).unwrap();
    assert_eq!(Shard::open(&path).unwrap().chunk_rows(), 1);
}

#[test]
fn the_checksum_fed_in_pieces_equals_it_at_once_and_sees_every_bit() {
    let mut rng = Rng::new(7);
    let bytes: Vec<u8> = (0..203).map(|_| (rng.next_u64() >> 56) as u8).collect();
    for len in [0, 1, 7, 8, 31, 32, 33, 64, 100, 203] {
        let whole = checksum(&bytes[..len]);
        for split in [0, 1, 5, 31, 32, 40] {
            for step in [1, 3, 8, 32, 1000] {
                let mut c = Checksum::new();
                c.update(&bytes[..split.min(len)]);
                for piece in bytes[split.min(len)..len].chunks(step) {
                    c.update(piece);
                }
                assert_eq!(c.finish(), whole, "len {len} split {split} step {step}");
            }
        }
        // Every single flipped bit changes the checksum.
        let mut flipped = bytes[..len].to_vec();
        for i in 0..len * 8 {
            flipped[i / 8] ^= 1 << (i % 8);
            assert_ne!(checksum(&flipped), whole, "len {len} bit {i}");
            flipped[i / 8] ^= 1 << (i % 8);
        }
    }
    // Trailing zeros are not lost in the padding: the length is hashed.
    assert_ne!(checksum(&[0; 5]), checksum(&[0; 6]));
}

#[test]
fn a_shard_replaced_while_streaming_is_detected() {
    let dir = TempDir::new("shard-change");
    let path = dir.0.join("d.shard");
    write_shard(&path, &data(40, 4), 4).unwrap();
    let s = Shard::open(&path).unwrap();
    s.check_unchanged().unwrap();
    write_shard(&path, &data(41, 5), 4).unwrap();
    let e = s.check_unchanged().unwrap_err().to_string();
    assert!(e.contains("changed while it was being read"), "{e}");
    let mut f = File::open(&path).unwrap();
    assert!(s.read_range(&mut f, 0..1, &mut Vec::new()).is_err());
}

fn stream(paths: &[&Path], batch: usize, window: usize, seed: u64) -> ShardStream {
    stream_for(paths, batch, window, seed, None)
}

fn stream_for(
    paths: &[&Path],
    batch: usize,
    window: usize,
    seed: u64,
    epochs: Option<u64>,
) -> ShardStream {
    let shards = paths.iter().map(|p| Shard::open(p).unwrap()).collect();
    let cfg = StreamConfig {
        batch_size: batch,
        window,
        shuffle: true,
        seed,
        prefetch: 2,
        epochs,
        rank: None,
    };
    ShardStream::new(shards, cfg).unwrap()
}

/// A stream told the epoch count serves exactly the unbounded stream's
/// batches for those epochs, then nothing, and ends at the same state (the
/// next epoch's generator), so a finished run's checkpoint can go on.
#[test]
fn a_stream_told_its_epochs_ends_after_them_at_the_unbounded_state() {
    let dir = TempDir::new("shard-epochs");
    let path = dir.0.join("d.shard");
    write_shard(&path, &data(37, 6), 4).unwrap();
    for window in [8, 37] {
        let mut bounded = stream_for(&[&path], 5, window, 3, Some(2));
        let mut open = stream(&[&path], 5, window, 3);
        for _ in 0..2 {
            loop {
                let b = open.next_batch().unwrap();
                let a = bounded
                    .next_batch()
                    .unwrap_or_else(|e| panic!("window {window} epoch {}: {e}", open.epoch()));
                assert_eq!(
                    a.as_ref().map(|x| &x.indices),
                    b.as_ref().map(|x| &x.indices)
                );
                if a.is_none() {
                    break;
                }
            }
        }
        assert_eq!(bounded.state(), open.state(), "window {window}");
        assert_eq!(bounded.epoch(), 2);
        assert!(bounded.next_batch().unwrap().is_none());
        assert!(bounded.next_batch().unwrap().is_none());
        assert_eq!(bounded.state(), open.state(), "window {window}");
    }
}

#[test]
fn a_window_covering_the_data_streams_the_in_memory_loaders_batches() {
    let dir = TempDir::new("shard-eq");
    let d = data(37, 6);
    let path = dir.0.join("d.shard");
    write_shard(&path, &d, 8).unwrap();
    let mut s = stream(&[&path], 5, 37, 11);
    let cfg = LoaderConfig {
        batch_size: 5,
        shuffle: true,
        drop_last: false,
        seed: 11,
    };
    let mut loader = Loader::new(37, cfg).unwrap();
    for epoch in 0..3 {
        loop {
            let want = loader.next_indices().map(<[usize]>::to_vec);
            let got = s.next_batch().unwrap();
            match (want, got) {
                (None, None) => break,
                (Some(w), Some(g)) => {
                    assert_eq!(g.epoch, epoch);
                    assert_eq!(g.indices, w, "epoch {epoch}");
                    assert!(same(&g.data, &d.subset(&w).unwrap()));
                }
                (w, g) => panic!(
                    "epoch {epoch}: loader {w:?}, stream {:?}",
                    g.map(|b| b.indices)
                ),
            }
        }
    }
}

#[test]
fn small_windows_over_several_shards_visit_every_row_once_reproducibly() {
    let dir = TempDir::new("shard-win");
    let (a, b) = (data(19, 7), data(12, 8));
    let (pa, pb) = (dir.0.join("a.shard"), dir.0.join("b.shard"));
    write_shard(&pa, &a, 3).unwrap();
    write_shard(&pb, &b, 3).unwrap();
    let all = |s: &mut ShardStream| {
        let mut epochs = Vec::new();
        for _ in 0..3 {
            let mut seen = Vec::new();
            while let Some(batch) = s.next_batch().unwrap() {
                assert!(batch.indices.len() <= 4);
                // Each row carries the values of its global index.
                for (r, &i) in batch.indices.iter().enumerate() {
                    let (src, at) = if i < 19 { (&a, i) } else { (&b, i - 19) };
                    let want = &src.f32_values("x").unwrap()[at * 6..at * 6 + 6];
                    let got = &batch.data.f32_values("x").unwrap()[r * 6..r * 6 + 6];
                    assert_eq!(want, got);
                }
                seen.extend(batch.indices);
            }
            epochs.push(seen);
        }
        epochs
    };
    let first = all(&mut stream(&[&pa, &pb], 4, 5, 3));
    for seen in &first {
        let mut sorted = seen.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..31).collect::<Vec<_>>());
    }
    assert_ne!(first[0], first[1], "each epoch draws a new order");
    assert_eq!(
        first,
        all(&mut stream(&[&pa, &pb], 4, 5, 3)),
        "same seed, same order"
    );
    assert_ne!(first, all(&mut stream(&[&pa, &pb], 4, 5, 4)));
}

#[test]
fn a_corrupt_chunk_stops_the_stream_with_its_error() {
    let dir = TempDir::new("shard-stream-bad");
    let path = dir.0.join("d.shard");
    write_shard(&path, &data(20, 9), 4).unwrap();
    let mut s = stream(&[&path], 4, 4, 1);
    // Corrupt in place (same length; the time may not move on a coarse
    // clock, so this is the checksum's catch).
    let mut bytes = std::fs::read(&path).unwrap();
    let h = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    let at = bytes.len() - 8 - 5 * 8 - 10;
    assert!(at > h);
    bytes[at] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let mut result = Ok(());
    for _ in 0..20 {
        match s.next_batch() {
            Ok(_) => {}
            Err(e) => {
                result = Err(e.to_string());
                break;
            }
        }
    }
    let e = result.unwrap_err();
    assert!(
        e.contains("does not match its checksum") || e.contains("changed while"),
        "{e}"
    );
}

#[test]
fn a_csv_converted_in_blocks_loads_as_read_csv_reads_it() {
    use crate::data::convert::csv_to_shard;
    use crate::data::csv::{read_csv, CsvOptions};
    let dir = TempDir::new("shard-csv");
    let csv = dir.0.join("d.csv");
    // More rows than a block, names that first appear late, an integer
    // class column whose largest value is in the last block.
    let mut text = String::from("a,b,species,level\n");
    let n = 40_000;
    for i in 0..n {
        let species = if i < 30_000 {
            ["setosa", "virginica"][i % 2]
        } else {
            "alpha"
        };
        let level = if i == n - 1 { 7 } else { i % 3 };
        text.push_str(&format!(
            "{},{}.5,{species},{level}\n",
            i as f32 * 0.25,
            i % 11
        ));
    }
    std::fs::write(&csv, &text).unwrap();
    let opts = CsvOptions::new()
        .numbers("x", 0..2)
        .classes("species", "species")
        .classes("level", "level");
    let out = dir.0.join("d.shard");
    assert_eq!(csv_to_shard(&csv, &opts, &out, 1000).unwrap(), n as u64);
    let loaded = Shard::open(&out).unwrap().load().unwrap();
    let direct = read_csv(&csv, &opts).unwrap();
    assert!(same(&loaded, &direct));
    assert_eq!(loaded.column("species").unwrap().classes_count(), Some(3));
    assert_eq!(loaded.column("level").unwrap().classes_count(), Some(8));
    // Errors still point at the file's line and column.
    std::fs::write(&csv, format!("{text}1,x,setosa,0\n")).unwrap();
    let e = csv_to_shard(&csv, &opts, &out, 1000)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(&format!("{}:{}:3:", csv.display(), n + 2)),
        "{e}"
    );
}

/// Integer classes convert in one pass; a class column whose names appear
/// only after the first block sends the conversion back for its names, and
/// no temporary file of the abandoned pass is left behind.
#[test]
fn a_csv_conversion_falls_back_to_two_passes_only_for_class_names() {
    use crate::data::convert::csv_to_shard;
    use crate::data::csv::{read_csv, CsvOptions};
    let dir = TempDir::new("shard-csv-passes");
    let csv = dir.0.join("d.csv");
    let out = dir.0.join("d.shard");
    let n = 20_000;
    let mut ints = String::new();
    let mut names = String::from("x,y,label\n");
    for i in 0..n {
        ints.push_str(&format!("{}, {:.3} ,{}\n", i % 97, i as f32 / 7.0, i % 4));
        let label = if i < 18_000 { "b" } else { "a" };
        names.push_str(&format!("{},-{}.25,{label}\n", i % 5, i % 13));
    }
    for text in [ints, names] {
        std::fs::write(&csv, &text).unwrap();
        let opts = CsvOptions::new();
        assert_eq!(csv_to_shard(&csv, &opts, &out, 500).unwrap(), n as u64);
        let loaded = Shard::open(&out).unwrap().load().unwrap();
        assert!(same(&loaded, &read_csv(&csv, &opts).unwrap()));
        let left: Vec<_> = std::fs::read_dir(&dir.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left.len(), 2, "{left:?}");
    }
}

/// A shard must hold something per row: without columns (or with a column
/// of zero values) rows could not be chunked by bytes, and reading one back
/// would divide by a zero record size.
#[test]
fn a_shard_without_columns_is_refused() {
    let dir = TempDir::new("shard-empty");
    let path = dir.0.join("d.shard");
    let e = write_shard(&path, &Dataset::default(), 4)
        .unwrap_err()
        .to_string();
    assert!(e.contains("at least one column"), "{e}");
    assert!(!path.exists());
    let columns = vec![ShardColumn {
        name: "x".into(),
        shape: vec![0],
        classes: None,
        names: None,
    }];
    assert!(ShardWriter::create(&path, columns, 4).is_err());
    assert!(
        std::fs::read_dir(&dir.0).unwrap().next().is_none(),
        "no temporary left"
    );
}

/// A write that fails midway, or a writer never finished, leaves nothing
/// beside the output: its temporary file goes with the writer.
#[test]
fn a_failed_or_unfinished_write_leaves_no_temporary_file() {
    let dir = TempDir::new("shard-tmp");
    let path = dir.0.join("d.shard");
    let d = data(10, 3);
    let columns: Vec<ShardColumn> = d.columns().iter().map(ShardColumn::of).collect();
    let mut w = ShardWriter::create(&path, columns.clone(), 4).unwrap();
    w.push(&d).unwrap();
    let other = Dataset::new(vec![Column::f32("z", &[2], vec![0.0; 4])]).unwrap();
    assert!(w.push(&other).is_err(), "rows of another layout");
    drop(w);
    assert!(
        std::fs::read_dir(&dir.0).unwrap().next().is_none(),
        "nothing left"
    );
    // Finished, the shard is in place and nothing else is.
    let mut w = ShardWriter::create(&path, columns, 4).unwrap();
    w.push(&d).unwrap();
    assert_eq!(w.finish().unwrap(), 10);
    let names: Vec<_> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["d.shard"]);
}

/// The bundled MNIST's training files (gzip) converted in blocks load to
/// exactly what the in-memory IDX reader gives; a truncated or too long
/// IDX file is rejected with its byte offset.
#[test]
fn idx_converts_to_a_shard_equal_to_the_in_memory_reader() {
    use crate::data::convert::idx_to_shard;
    let dir = TempDir::new("shard-idx");
    let mnist = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/mnist-10k");
    let find = |stem: &str| {
        let gz = mnist.join(format!("{stem}.gz"));
        if gz.exists() {
            gz
        } else {
            mnist.join(stem)
        }
    };
    let (images, labels) = (
        find("t10k-images-idx3-ubyte"),
        find("t10k-labels-idx1-ubyte"),
    );
    let out = dir.0.join("t10k.shard");
    let rows = idx_to_shard(&images, Some(&labels), &out, 1000).unwrap();
    let want = crate::data::idx::load_pair(&images, &labels).unwrap();
    assert_eq!(rows as usize, want.len());
    assert!(same(&Shard::open(&out).unwrap().load().unwrap(), &want));

    // Raw IDX, cut short or extended, names the byte offset.
    let raw = dir.0.join("labels.idx");
    let mut bytes = vec![0, 0, 8, 1, 0, 0, 0, 5];
    bytes.extend([1, 2, 3, 4]);
    std::fs::write(&raw, &bytes).unwrap();
    let img = dir.0.join("img.idx");
    let mut ib = vec![0, 0, 8, 2, 0, 0, 0, 5, 0, 0, 0, 2];
    ib.extend([7u8; 10]);
    std::fs::write(&img, &ib).unwrap();
    let e = idx_to_shard(&img, Some(&raw), dir.0.join("x.shard"), 4)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("labels.idx") && e.contains("byte offset 12"),
        "{e}"
    );
    bytes.extend([5, 6]);
    std::fs::write(&raw, &bytes).unwrap();
    let e = idx_to_shard(&img, Some(&raw), dir.0.join("x.shard"), 4)
        .unwrap_err()
        .to_string();
    assert!(e.contains("past byte offset 13"), "{e}");
    assert!(!dir.0.join("x.shard").exists());
}

/// A header that claims terabytes of values fails as truncated without
/// allocating them, and a labels file cut short far past its header names
/// the offset where it ends (no arithmetic underflow on the way).
#[test]
fn idx_headers_that_lie_fail_as_truncated() {
    use crate::data::convert::idx_to_shard;
    let dir = TempDir::new("shard-idx-lie");
    // i32 values, dimensions [4096, 2^28]: 4 TiB claimed, no data.
    let img = dir.0.join("huge.idx");
    std::fs::write(&img, [0, 0, 0x0C, 2, 0, 0, 16, 0, 16, 0, 0, 0]).unwrap();
    let e = idx_to_shard(&img, None, dir.0.join("x.shard"), 4)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("truncated") && e.contains("byte offset 12"),
        "{e}"
    );

    // 6000 images of 2 bytes, 6000 labels claimed, 100 present.
    let img = dir.0.join("img.idx");
    let mut ib = vec![0, 0, 8, 2, 0, 0, 0x17, 0x70, 0, 0, 0, 2];
    ib.extend(vec![7u8; 12_000]);
    std::fs::write(&img, &ib).unwrap();
    let raw = dir.0.join("labels.idx");
    let mut lb = vec![0, 0, 8, 1, 0, 0, 0x17, 0x70];
    lb.extend(vec![1u8; 100]);
    std::fs::write(&raw, &lb).unwrap();
    let e = idx_to_shard(&img, Some(&raw), dir.0.join("x.shard"), 4)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("labels.idx") && e.contains("byte offset 108"),
        "{e}"
    );
    assert!(!dir.0.join("x.shard").exists());
}

/// A position is only meaningful in the order it was taken in: a windowed
/// stream's state resumes a stream with the same window and is refused by
/// the in-memory loader and by a stream with another window (which would
/// repeat some samples and skip others); a covering window's state is the
/// in-memory loader's order and restores there.
#[test]
fn a_position_resumes_only_in_the_order_it_was_taken_in() {
    let dir = TempDir::new("shard-order");
    let path = dir.0.join("d.shard");
    write_shard(&path, &data(37, 6), 4).unwrap();
    let open = || vec![Shard::open(&path).unwrap()];
    let cfg = |window| StreamConfig {
        batch_size: 5,
        window,
        shuffle: true,
        seed: 3,
        prefetch: 2,
        epochs: None,
        rank: None,
    };
    let loader = || {
        let cfg = LoaderConfig {
            batch_size: 5,
            shuffle: true,
            drop_last: false,
            seed: 3,
        };
        Loader::new(37, cfg).unwrap()
    };
    let mut s = stream(&[&path], 5, 8, 3);
    s.next_batch().unwrap();
    s.next_batch().unwrap();
    let windowed = s.state();
    assert_ne!(windowed.order, 0);
    let e = loader().restore(&windowed).unwrap_err().to_string();
    assert!(e.contains("window"), "{e}");
    let e = ShardStream::resume(open(), cfg(16), &windowed)
        .err()
        .expect("another window must be refused")
        .to_string();
    assert!(e.contains("another order"), "{e}");
    let mut again = ShardStream::resume(open(), cfg(8), &windowed).unwrap();
    assert_eq!(
        again.next_batch().unwrap().map(|b| b.indices),
        s.next_batch().unwrap().map(|b| b.indices)
    );

    let mut covering = stream(&[&path], 5, 37, 3);
    covering.next_batch().unwrap();
    let whole = covering.state();
    assert_eq!(whole.order, 0);
    let mut l = loader();
    l.restore(&whole).unwrap();
    assert_eq!(
        l.next_indices().map(<[usize]>::to_vec),
        covering.next_batch().unwrap().map(|b| b.indices)
    );
    assert!(ShardStream::resume(open(), cfg(8), &whole).is_err());
}

/// One rank of a group reads, and verifies, only the blocks that hold its
/// rows of each batch, and is served exactly those rows of the batches the
/// whole stream serves: counted in bytes read, for covering and smaller
/// windows, 1 to 3 ranks, and a short last batch.
#[test]
fn a_rank_reads_only_its_own_rows() {
    use crate::data::stream::RankRows;
    let dir = TempDir::new("shard-rank");
    let path = dir.0.join("d.shard");
    let d = data(101, 12);
    // One row a block, so the bytes a rank reads count its rows exactly.
    write_shard(&path, &d, 1).unwrap();
    let record = Shard::open(&path).unwrap().record_bytes() as u64;
    let split = |n: usize, ranks: usize, rank: usize| n * rank / ranks..n * (rank + 1) / ranks;
    let cfg = |window, rank| StreamConfig {
        batch_size: 10,
        window,
        shuffle: true,
        seed: 5,
        prefetch: 1,
        epochs: Some(2),
        rank,
    };
    let batches = |s: &mut ShardStream| {
        let mut all = Vec::new();
        for _ in 0..2 {
            while let Some(b) = s.next_batch().unwrap() {
                all.push(b);
            }
        }
        all
    };
    for window in [101, 16] {
        let mut whole =
            ShardStream::new(vec![Shard::open(&path).unwrap()], cfg(window, None)).unwrap();
        let want = batches(&mut whole);
        assert_eq!(want.len(), 2 * 11);
        for ranks in 1..=3 {
            let mut total = 0;
            for rank in 0..ranks {
                let rows = RankRows::new(10, 101, |n| split(n, ranks, rank));
                let shards = vec![Shard::open(&path).unwrap()];
                let mut s = ShardStream::new(shards, cfg(window, Some(rows))).unwrap();
                let got = batches(&mut s);
                assert_eq!(got.len(), want.len());
                let mut served = 0;
                for (g, w) in got.iter().zip(&want) {
                    assert_eq!(
                        g.indices, w.indices,
                        "window {window}, rank {rank} of {ranks}"
                    );
                    assert_eq!(g.own, split(w.indices.len(), ranks, rank));
                    let own: Vec<usize> = g.own.clone().collect();
                    assert!(same(&g.data, &w.data.subset(&own).unwrap()));
                    served += own.len() as u64;
                }
                // Every row read is one this rank was served (a window
                // covering the data is read again each epoch on a rank).
                assert_eq!(
                    s.bytes_read(),
                    served * (record + 8),
                    "window {window}, rank {rank} of {ranks}"
                );
                total += served;
            }
            assert_eq!(total, 2 * 101, "the ranks' rows are the batches' rows");
        }
    }
}
