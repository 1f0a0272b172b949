use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::csv::*;
use super::idx::*;
use super::*;

/// A fresh directory under the system temp dir, removed on drop.
pub(crate) struct TempDir(pub PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!(
            "nnc-rt-{tag}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The oracle for the reader: an IDX encoder written from the format spec.
fn encode_idx(type_byte: u8, dims: &[u32], payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, type_byte, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(payload);
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn mnist_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/mnist-10k")
}

fn idx_err(dir: &TempDir, name: &str, bytes: &[u8]) -> String {
    let p = dir.0.join(name);
    std::fs::write(&p, bytes).unwrap();
    let e = read_idx(&p).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains(name), "error does not name the file: {msg}");
    msg
}

// ------------------------------------------------------------------ IDX

#[test]
fn idx_round_trips_every_type_raw_and_gzip() {
    let dir = TempDir::new("idx");
    let cases: Vec<(u8, Vec<u8>, IdxData)> = vec![
        (
            0x08,
            vec![1, 2, 255, 0, 7, 9],
            IdxData::U8(vec![1, 2, 255, 0, 7, 9]),
        ),
        (
            0x09,
            vec![0xff, 1, 0x80, 0, 2, 3],
            IdxData::I8(vec![-1, 1, -128, 0, 2, 3]),
        ),
        (
            0x0B,
            [-2i16, 300, 0, 1, -1, 7]
                .iter()
                .flat_map(|v| v.to_be_bytes())
                .collect(),
            IdxData::I16(vec![-2, 300, 0, 1, -1, 7]),
        ),
        (
            0x0C,
            [70000i32, -5, 0, 1, 2, 3]
                .iter()
                .flat_map(|v| v.to_be_bytes())
                .collect(),
            IdxData::I32(vec![70000, -5, 0, 1, 2, 3]),
        ),
        (
            0x0D,
            [0.5f32, -1.25, 3.0, 0.0, 1e-3, 2.0]
                .iter()
                .flat_map(|v| v.to_be_bytes())
                .collect(),
            IdxData::F32(vec![0.5, -1.25, 3.0, 0.0, 1e-3, 2.0]),
        ),
        (
            0x0E,
            [0.1f64, 2.0, -3.5, 0.0, 1.0, 9.0]
                .iter()
                .flat_map(|v| v.to_be_bytes())
                .collect(),
            IdxData::F64(vec![0.1, 2.0, -3.5, 0.0, 1.0, 9.0]),
        ),
    ];
    for (t, payload, want) in cases {
        let bytes = encode_idx(t, &[2, 3], &payload);
        for (name, content) in [("raw", bytes.clone()), ("gz", gzip(&bytes))] {
            let p = dir.0.join(format!("t{t}.{name}"));
            std::fs::write(&p, content).unwrap();
            let a = read_idx(&p).unwrap();
            assert_eq!(a.dims, vec![2, 3]);
            assert_eq!(a.data, want);
        }
    }
}

#[test]
fn idx_rejects_corrupt_files_with_reasons() {
    let dir = TempDir::new("idxbad");
    let good = encode_idx(0x08, &[3, 2], &[1, 2, 3, 4, 5, 6]);
    let m = idx_err(&dir, "truncated", &good[..good.len() - 2]);
    assert!(m.contains("truncated"), "{m}");
    let m = idx_err(&dir, "truncated-header", &good[..6]);
    assert!(m.contains("truncated") && m.contains("dimension"), "{m}");
    let m = idx_err(&dir, "extra", &[good.as_slice(), &[0]].concat());
    assert!(m.contains("more data"), "{m}");
    let mut wrong_magic = good.clone();
    wrong_magic[0] = 7;
    let m = idx_err(&dir, "magic", &wrong_magic);
    assert!(m.contains("magic"), "{m}");
    let mut wrong_type = good.clone();
    wrong_type[2] = 0x0A;
    let m = idx_err(&dir, "type", &wrong_type);
    assert!(m.contains("type byte 0x0a"), "{m}");
    // Header claims 4 rows, data has 3: a wrong count.
    let wrong_count = encode_idx(0x08, &[4, 2], &[1, 2, 3, 4, 5, 6]);
    let m = idx_err(&dir, "count", &wrong_count);
    assert!(m.contains("need 8") && m.contains("has 6"), "{m}");
    // A header claiming an enormous size fails without allocating it.
    let huge = encode_idx(0x0E, &[u32::MAX, u32::MAX], &[0; 16]);
    let m = idx_err(&dir, "huge", &huge);
    assert!(m.contains("truncated") || m.contains("overflow"), "{m}");
    let m = idx_err(&dir, "empty", &[]);
    assert!(m.contains("truncated"), "{m}");
    // Truncated gzip stream and garbage after the gzip magic.
    let gz = gzip(&good);
    let m = idx_err(&dir, "trunc.gz", &gz[..gz.len() / 2]);
    assert!(m.contains("truncated") || m.contains("gzip"), "{m}");
    let m = idx_err(
        &dir,
        "garbage.gz",
        &[0x1f, 0x8b, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
    );
    assert!(m.contains("gzip") || m.contains("truncated"), "{m}");
    let missing = read_idx(dir.0.join("nope")).unwrap_err();
    assert!(matches!(missing, DataError::Io { .. }), "{missing}");
}

#[test]
fn mnist_subset_loads() {
    let m = load_mnist(mnist_dir()).unwrap();
    assert_eq!(m.train.len(), 8000);
    assert_eq!(m.test.len(), 2000);
    assert_eq!(m.train.sample_shape(), &[28, 28]);
    assert_eq!(m.train.num_classes(), Some(10));
    assert!(m.train.features().iter().all(|&p| (0.0..=1.0).contains(&p)));
    // First labels, read with zcat | xxd when the data was added.
    match m.train.labels() {
        Labels::Classes { values, .. } => assert_eq!(&values[..6], &[1, 0, 0, 5, 4, 1]),
        other => panic!("{other:?}"),
    }
    match m.test.labels() {
        Labels::Classes { values, .. } => assert_eq!(&values[..4], &[2, 8, 5, 9]),
        other => panic!("{other:?}"),
    }
    // Every class occurs and images have plausible ink (~13% of pixels > 0.5).
    let ink = m.train.features().iter().filter(|&&p| p > 0.5).count() as f64
        / m.train.features().len() as f64;
    assert!((0.05..0.25).contains(&ink), "ink {ink}");
    let flat = m.test.with_sample_shape(vec![784]).unwrap();
    assert_eq!(flat.sample_len(), 784);
}

#[test]
fn mnist_mismatched_counts_are_rejected() {
    let dir = TempDir::new("mnist");
    let img = encode_idx(0x08, &[2, 2, 2], &[0; 8]);
    let lab = encode_idx(0x08, &[3], &[1, 2, 3]);
    for split in ["train", "t10k"] {
        std::fs::write(dir.0.join(format!("{split}-images-idx3-ubyte")), &img).unwrap();
        std::fs::write(
            dir.0.join(format!("{split}-labels-idx1-ubyte.gz")),
            gzip(&lab),
        )
        .unwrap();
    }
    let e = load_mnist(&dir.0).unwrap_err().to_string();
    assert!(e.contains("3 labels for 2 images"), "{e}");
    let bad_label = encode_idx(0x08, &[2], &[1, 12]);
    std::fs::write(dir.0.join("train-labels-idx1-ubyte.gz"), gzip(&bad_label)).unwrap();
    let e = load_mnist(&dir.0).unwrap_err().to_string();
    assert!(e.contains("not a digit"), "{e}");
}

// ------------------------------------------------------------------ CSV

fn csv(text: &str, opts: &CsvOptions) -> Result<CsvData, DataError> {
    parse_csv(text, Path::new("data.csv"), opts)
}

#[test]
fn csv_with_auto_header_and_class_labels() {
    let d = csv("a,b,label\n1,2,0\n\n3.5, -4 ,2\r\n", &CsvOptions::default()).unwrap();
    assert_eq!(d.feature_names, Some(vec!["a".into(), "b".into()]));
    assert_eq!(d.dataset.features(), &[1.0, 2.0, 3.5, -4.0]);
    assert_eq!(
        d.dataset.labels(),
        &Labels::Classes {
            values: vec![0, 2],
            num_classes: 3
        }
    );
    // No header: first row is data.
    let d = csv("1,2,1.0\n3,4,0\n", &CsvOptions::default()).unwrap();
    assert_eq!(d.dataset.len(), 2);
    assert!(d.feature_names.is_none());
}

#[test]
fn csv_label_by_name_index_and_kinds() {
    let text = "species;x;\"y\"\nsetosa;1;2\nvirginica;3;4\nsetosa;5;6\n";
    let opts = CsvOptions {
        label: LabelColumn::Name("species".into()),
        delimiter: b';',
        label_kind: LabelKind::ClassName,
        ..Default::default()
    };
    let d = csv(text, &opts).unwrap();
    assert_eq!(
        d.class_names,
        Some(vec!["setosa".into(), "virginica".into()])
    );
    assert_eq!(d.feature_names, Some(vec!["x".into(), "y".into()]));
    assert_eq!(d.dataset.features(), &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    assert_eq!(
        d.dataset.labels(),
        &Labels::Classes {
            values: vec![0, 1, 0],
            num_classes: 2
        }
    );
    let opts = CsvOptions {
        label: LabelColumn::Index(0),
        header: Header::Absent,
        label_kind: LabelKind::Target,
        ..Default::default()
    };
    let d = csv("0.5,1,2\n1.5,3,4\n", &opts).unwrap();
    assert_eq!(
        d.dataset.labels(),
        &Labels::Targets {
            values: vec![0.5, 1.5],
            width: 1
        }
    );
    assert_eq!(d.dataset.features(), &[1.0, 2.0, 3.0, 4.0]);
}

#[test]
fn csv_errors_point_at_file_line_column() {
    let opts = CsvOptions::default();
    let e = csv("a,b,y\n1,2,0\n1, x1,0\n", &opts)
        .unwrap_err()
        .to_string();
    assert_eq!(e, "data.csv:3:4: `x1` is not a number");
    let e = csv("1,2,0\n1,2\n", &opts).unwrap_err().to_string();
    assert!(
        e.starts_with("data.csv:2:3: row has 2 fields, expected 3"),
        "{e}"
    );
    let e = csv("1,2,0\n1,,0\n", &opts).unwrap_err().to_string();
    assert!(e.starts_with("data.csv:2:3: empty field"), "{e}");
    let e = csv("1,2,0\n1,2,-1\n", &opts).unwrap_err().to_string();
    assert!(e.starts_with("data.csv:2:5: class label `-1`"), "{e}");
    let e = csv("1,2,0\n1,2,1.5\n", &opts).unwrap_err().to_string();
    assert!(e.starts_with("data.csv:2:5: class label `1.5`"), "{e}");
    let e = csv("1,2,0\n1,nan,1\n", &opts).unwrap_err().to_string();
    assert!(
        e.contains(":2:3:") && e.contains("not a finite number"),
        "{e}"
    );
    let e = csv("1,\"2,0\n", &opts).unwrap_err().to_string();
    assert!(e.starts_with("data.csv:1:3: unterminated"), "{e}");
    let named = CsvOptions {
        label: LabelColumn::Name("target".into()),
        ..Default::default()
    };
    let e = csv("a,b\n1,2\n", &named).unwrap_err().to_string();
    assert!(e.contains("no column named `target`"), "{e}");
    assert!(csv("", &opts).is_err());
    let dir = TempDir::new("csv");
    let p = dir.0.join("real.csv");
    std::fs::write(&p, "x,y\n1,0\n2,q\n").unwrap();
    let e = read_csv(&p, &opts).unwrap_err().to_string();
    assert!(
        e.ends_with("real.csv:3:3: class label `q` is not a non-negative integer"),
        "{e}"
    );
}

// ------------------------------------------------------------------ Dataset

fn toy(n: usize) -> Dataset {
    // Sample i has features [i, 10*i] and class i % 3: every row identifies
    // its own index, so tests can check which samples were served.
    let features = (0..n).flat_map(|i| [i as f32, 10.0 * i as f32]).collect();
    let labels = Labels::Classes {
        values: (0..n).map(|i| (i % 3) as u32).collect(),
        num_classes: 3,
    };
    Dataset::new(features, vec![2], labels).unwrap()
}

#[test]
fn dataset_validation() {
    assert!(Dataset::new(
        vec![0.0; 5],
        vec![2],
        Labels::Targets {
            values: vec![0.0; 2],
            width: 1
        }
    )
    .is_err());
    assert!(Dataset::new(
        vec![0.0; 4],
        vec![2],
        Labels::Targets {
            values: vec![0.0; 3],
            width: 1
        }
    )
    .is_err());
    let e = Dataset::new(
        vec![0.0; 4],
        vec![2],
        Labels::Classes {
            values: vec![0, 3],
            num_classes: 3,
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("class 3"), "{e}");
}

#[test]
fn splits_partition_the_data() {
    let d = toy(10);
    let (tr, va) = d.split(0.3, SplitMode::Tail).unwrap();
    assert_eq!(tr.len(), 7);
    assert_eq!(va.sample(0), Some(&[7.0, 70.0][..]));
    let (tr, va) = d.split(0.3, SplitMode::Shuffled { seed: 1 }).unwrap();
    let mut ids: Vec<f32> = tr
        .features()
        .chunks(2)
        .chain(va.features().chunks(2))
        .map(|r| r[0])
        .collect();
    assert_ne!(&ids[7..], &[7.0, 8.0, 9.0], "shuffled split took the tail");
    ids.sort_by(f32::total_cmp);
    assert_eq!(ids, (0..10).map(|i| i as f32).collect::<Vec<_>>());
    // Labels travel with their features.
    match va.labels() {
        Labels::Classes { values, .. } => {
            for (row, &c) in va.features().chunks(2).zip(values) {
                assert_eq!(row[0] as u32 % 3, c);
            }
        }
        other => panic!("{other:?}"),
    }
    let (tr2, _) = d.split(0.3, SplitMode::Shuffled { seed: 1 }).unwrap();
    assert_eq!(tr, tr2);
    assert!(d.split(1.5, SplitMode::Tail).is_err());
}

// ------------------------------------------------------------------ Loader

/// Serves one epoch and returns the sample ids in order, with batch sizes.
fn epoch(loader: &mut Loader, d: &Dataset, bs: usize) -> (Vec<usize>, Vec<usize>) {
    let mut x = vec![f32::NAN; bs * 2];
    let mut y = vec![u32::MAX; bs];
    let (mut ids, mut sizes) = (Vec::new(), Vec::new());
    while let Some(rows) = loader
        .next_batch(d, &mut x, LabelsMut::Classes(&mut y))
        .unwrap()
    {
        for r in 0..rows {
            let id = x[2 * r] as usize;
            assert_eq!(x[2 * r + 1], 10.0 * id as f32);
            assert_eq!(y[r], (id % 3) as u32);
            ids.push(id);
        }
        sizes.push(rows);
    }
    (ids, sizes)
}

#[test]
fn loader_epochs_are_permutations_with_partial_last_batch() {
    let d = toy(10);
    let cfg = LoaderConfig {
        batch_size: 4,
        shuffle: true,
        drop_last: false,
        seed: 3,
    };
    let mut l = Loader::new(10, cfg).unwrap();
    assert_eq!(l.batches_per_epoch(), 3);
    let (a, sizes) = epoch(&mut l, &d, 4);
    assert_eq!(sizes, vec![4, 4, 2]);
    let mut sorted = a.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..10).collect::<Vec<_>>());
    assert_eq!(l.epoch(), 1);
    let (b, _) = epoch(&mut l, &d, 4);
    assert_ne!(a, b, "each epoch reshuffles");
    // Same seed, same order.
    let mut l2 = Loader::new(10, cfg).unwrap();
    assert_eq!(epoch(&mut l2, &d, 4).0, a);
}

#[test]
fn loader_drop_last_full_batch_and_sgd() {
    let d = toy(10);
    let mut cfg = LoaderConfig {
        batch_size: 4,
        shuffle: false,
        drop_last: true,
        seed: 0,
    };
    let mut l = Loader::new(10, cfg).unwrap();
    assert_eq!(epoch(&mut l, &d, 4), ((0..8).collect(), vec![4, 4]));
    cfg.batch_size = 10;
    let mut full = Loader::new(10, cfg).unwrap();
    assert_eq!(epoch(&mut full, &d, 10).1, vec![10]);
    cfg.batch_size = 1;
    cfg.shuffle = true;
    let mut sgd = Loader::new(10, cfg).unwrap();
    assert_eq!(epoch(&mut sgd, &d, 1).1, vec![1; 10]);
    cfg.batch_size = 11;
    assert!(Loader::new(10, cfg).is_err());
    cfg.batch_size = 0;
    assert!(Loader::new(10, cfg).is_err());
}

#[test]
fn loader_resume_continues_the_same_order() {
    let d = toy(23);
    let cfg = LoaderConfig {
        batch_size: 5,
        shuffle: true,
        drop_last: false,
        seed: 99,
    };
    // Reference: three uninterrupted epochs.
    let mut reference = Loader::new(23, cfg).unwrap();
    let mut want = Vec::new();
    for _ in 0..3 {
        want.extend(epoch(&mut reference, &d, 5).0);
    }
    // Interrupted after 2 batches of epoch 1, restored into a fresh loader.
    let mut a = Loader::new(23, cfg).unwrap();
    let mut got = epoch(&mut a, &d, 5).0;
    let mut x = vec![0.0; 10];
    for _ in 0..2 {
        a.next_batch(&d, &mut x, LabelsMut::Skip).unwrap().unwrap();
        got.extend(x.chunks(2).map(|r| r[0] as usize));
    }
    let saved = a.state();
    let mut b = Loader::new(23, cfg).unwrap();
    b.restore(&saved).unwrap();
    assert_eq!(b.epoch(), 1);
    got.extend(epoch(&mut b, &d, 5).0);
    got.extend(epoch(&mut b, &d, 5).0);
    assert_eq!(got, want);
    // Bad states are rejected.
    let mut bad = saved;
    bad.samples = 24;
    assert!(b.restore(&bad).is_err());
    let mut bad = saved;
    bad.epoch_rng = [0; 4];
    assert!(b.restore(&bad).is_err());
}

#[test]
fn loader_buffer_errors_do_not_skip_samples() {
    let d = toy(6);
    let cfg = LoaderConfig {
        batch_size: 3,
        shuffle: false,
        drop_last: false,
        seed: 0,
    };
    let mut l = Loader::new(6, cfg).unwrap();
    let mut small = vec![0.0; 4];
    assert!(l.next_batch(&d, &mut small, LabelsMut::Skip).is_err());
    let mut targets = vec![0.0; 3];
    let mut x = vec![0.0; 6];
    assert!(l
        .next_batch(&d, &mut x, LabelsMut::Targets(&mut targets))
        .is_err());
    assert_eq!(epoch(&mut l, &d, 3).0, (0..6).collect::<Vec<_>>());
    assert!(l.next_batch(&toy(5), &mut x, LabelsMut::Skip).is_err());
}
