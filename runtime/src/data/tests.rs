use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::csv::*;
use super::idx::*;
use super::*;
use crate::model::{InputKind, InputSpec, ModelSpec};

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
    let memory = read_idx_from(bytes, &p).unwrap_err().to_string();
    assert_eq!(memory, msg, "in memory and from the file");
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
            std::fs::write(&p, &content).unwrap();
            let a = read_idx(&p).unwrap();
            assert_eq!(read_idx_from(&content[..], &p).unwrap(), a);
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
    let image = m.train.column("image").unwrap();
    assert_eq!(image.shape(), &[28, 28]);
    let label = m.train.column("label").unwrap();
    assert_eq!(label.classes_count(), Some(10));
    let Values::F32(pixels) = image.values() else {
        panic!("pixels are numbers")
    };
    assert!(pixels.iter().all(|&p| (0.0..=1.0).contains(&p)));
    // First labels, read with zcat | xxd when the data was added.
    let classes = |d: &Dataset| match d.column("label").unwrap().values() {
        Values::Classes { values, .. } => values.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(&classes(&m.train)[..6], &[1, 0, 0, 5, 4, 1]);
    assert_eq!(&classes(&m.test)[..4], &[2, 8, 5, 9]);
    // Images have plausible ink (~13% of pixels > 0.5).
    let ink = pixels.iter().filter(|&&p| p > 0.5).count() as f64 / pixels.len() as f64;
    assert!((0.05..0.25).contains(&ink), "ink {ink}");
    let flat = m.test.reshape("image", &[784]).unwrap();
    assert_eq!(flat.column("image").unwrap().width(), 784);
    assert!(m.train.clone().reshape("image", &[783]).is_err());
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
    assert!(e.contains("3 labels for 2 samples"), "{e}");
    // Labels past 9 are classes too (an IDX pair is not only MNIST): the
    // class count follows them.
    let labels = encode_idx(0x08, &[2], &[1, 12]);
    std::fs::write(dir.0.join("train-labels-idx1-ubyte.gz"), gzip(&labels)).unwrap();
    std::fs::write(dir.0.join("t10k-labels-idx1-ubyte.gz"), gzip(&labels)).unwrap();
    let m = load_mnist(&dir.0).unwrap();
    assert_eq!(m.train.column("label").unwrap().classes_count(), Some(13));
    let floats = encode_idx(0x0D, &[2], &[0; 8]);
    std::fs::write(dir.0.join("train-labels-idx1-ubyte.gz"), gzip(&floats)).unwrap();
    let e = load_mnist(&dir.0).unwrap_err().to_string();
    assert!(e.contains("non-negative integer labels"), "{e}");
}

// ------------------------------------------------------------------ CSV

/// `text` parsed in memory, after checking that the file reader agrees
/// with it (values, and errors at the same line and column).
fn csv(text: &str, opts: &CsvOptions) -> Result<Dataset, DataError> {
    let dir = TempDir::new("csvfile");
    let p = dir.0.join("data.csv");
    std::fs::write(&p, text).unwrap();
    let (memory, file) = (
        parse_csv(text, Path::new("data.csv"), opts),
        read_csv(&p, opts),
    );
    match (&memory, file) {
        (Ok(m), Ok(f)) => assert!(m
            .columns()
            .iter()
            .map(|c| c.values())
            .eq(f.columns().iter().map(|c| c.values()))),
        (Err(m), Err(f)) => assert_eq!(
            m.to_string(),
            f.to_string().replace(&format!("{}/", dir.0.display()), "")
        ),
        (m, f) => panic!("in memory {m:?}, from a file {f:?}"),
    }
    memory
}

fn numbers(d: &Dataset, name: &str) -> Vec<f32> {
    match d.column(name).unwrap().values() {
        Values::F32(v) => v.clone(),
        other => panic!("{name}: {other:?}"),
    }
}

fn classes(d: &Dataset, name: &str) -> (Vec<u32>, u32) {
    match d.column(name).unwrap().values() {
        Values::Classes {
            values, classes, ..
        } => (values.clone(), *classes),
        other => panic!("{name}: {other:?}"),
    }
}

#[test]
fn csv_default_mapping_with_auto_header() {
    let d = csv("a,b,label\n1,2,0\n\n3.5, -4 ,2\r\n", &CsvOptions::default()).unwrap();
    assert_eq!(numbers(&d, "features"), [1.0, 2.0, 3.5, -4.0]);
    assert_eq!(classes(&d, "label"), (vec![0, 2], 3));
    let f = d.column("features").unwrap();
    assert_eq!(f.shape(), &[2]);
    assert_eq!(f.origin().part, "columns 1-2");
    assert_eq!(f.origin().row(1), "data.csv:4");
    // No header: the first row is data.
    let d = csv("1,2,1.0\n3,4,0\n", &CsvOptions::default()).unwrap();
    assert_eq!(d.len(), 2);
    assert_eq!(classes(&d, "label"), (vec![1, 0], 2));
}

#[test]
fn csv_mapping_by_name_index_range_and_class_names() {
    let text = "species;x;\"y\";z\nsetosa;1;2;9\nvirginica;3;4;8\nsetosa;5;6;7\n";
    let opts = CsvOptions::new()
        .delimiter(b';')
        .classes("kind", "species")
        .numbers("xy", 1..3)
        .numbers("z", 3);
    let d = csv(text, &opts).unwrap();
    assert_eq!(classes(&d, "kind"), (vec![0, 1, 0], 2));
    let kind = d.column("kind").unwrap();
    assert_eq!(
        kind.class_names(),
        Some(&["setosa".to_string(), "virginica".into()][..])
    );
    assert_eq!(kind.origin().part, "column 1 `species`");
    assert_eq!(numbers(&d, "xy"), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    assert_eq!(numbers(&d, "z"), [9.0, 8.0, 7.0]);
    // A test file numbers its classes as the training file did, even
    // when it lacks one.
    let names = kind.class_names().unwrap().to_vec();
    let test = CsvOptions::new()
        .delimiter(b';')
        .classes_named("kind", "species", names.into())
        .numbers("xy", Select::Rest);
    let t = csv("species;x;y;z\nvirginica;1;2;3\n", &test).unwrap();
    assert_eq!(classes(&t, "kind"), (vec![1], 2));
    let e = csv("species;x;y;z\nversicolor;1;2;3\n", &test)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "data.csv:2:1: `versicolor` is not one of the classes setosa, virginica"
    );
    // A regression target by index, no header.
    let opts = CsvOptions::new()
        .header(Header::Absent)
        .numbers("price", 0)
        .numbers("x", Select::Rest);
    let d = csv("0.5,1,2\n1.5,3,4\n", &opts).unwrap();
    assert_eq!(numbers(&d, "price"), [0.5, 1.5]);
    assert_eq!(numbers(&d, "x"), [1.0, 2.0, 3.0, 4.0]);
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
    assert!(
        e.starts_with("data.csv:2:5: class `-1` is not a non-negative integer"),
        "{e}"
    );
    let e = csv("1,2,0\n1,2,1.5\n", &opts).unwrap_err().to_string();
    assert!(e.starts_with("data.csv:2:5: class `1.5`"), "{e}");
    let e = csv("1,2,0\n1,nan,1\n", &opts).unwrap_err().to_string();
    assert!(
        e.contains(":2:3:") && e.contains("not a finite number"),
        "{e}"
    );
    // Finite in f64 but not in f32: an error at its place, not an inf.
    let e = csv("1,2,0\n1,1e39,1\n", &opts).unwrap_err().to_string();
    assert_eq!(
        e,
        "data.csv:2:3: `1e39` is beyond the range of f32 (about ±3.4e38)"
    );
    let named = CsvOptions::new().numbers("t", "target");
    let e = csv("a,b\n1,2\n", &named).unwrap_err().to_string();
    assert!(e.contains("no column named `target`"), "{e}");
    let twice = CsvOptions::new().numbers("a", 0).numbers("b", 0..2);
    let e = csv("1,2\n", &twice).unwrap_err().to_string();
    assert!(e.contains("column 0 is mapped twice"), "{e}");
    assert!(csv("", &opts).is_err());
    let e = csv("a,b,y\n", &opts).unwrap_err().to_string();
    assert!(e.contains("no data rows"), "{e}");
    let dir = TempDir::new("csv");
    let p = dir.0.join("real.csv");
    std::fs::write(&p, "x,y\n1,0\n2,q\n").unwrap();
    let e = read_csv(&p, &opts).unwrap_err().to_string();
    assert!(e.ends_with("real.csv:3:3: class `q` is not a non-negative integer class index like the fields above it"), "{e}");
    // A UTF-8 byte-order mark is not part of the first header name.
    let d = csv(
        "\u{feff}a,b\n1,2\n",
        &CsvOptions::new().numbers("a", "a").numbers("b", "b"),
    )
    .unwrap();
    assert_eq!(numbers(&d, "a"), [1.0]);
}

// ------------------------------------------------------------------ Dataset

fn toy(n: usize) -> Dataset {
    // Sample i has features [i, 10*i] and class i % 3: every row identifies
    // its own index, so tests can check which samples were served.
    let features = (0..n).flat_map(|i| [i as f32, 10.0 * i as f32]).collect();
    Dataset::new(vec![
        Column::f32("x", &[2], features),
        Column::classes("y", &[], (0..n).map(|i| (i % 3) as u32).collect(), 3),
    ])
    .unwrap()
}

#[test]
fn dataset_validation() {
    let e = Dataset::new(vec![Column::f32("x", &[2], vec![0.0; 5])]).unwrap_err();
    assert!(
        e.to_string().contains("not a whole number of samples"),
        "{e}"
    );
    let e = toy(2)
        .with(Column::f32("t", &[], vec![0.0; 3]))
        .unwrap_err();
    assert!(e.to_string().contains("3 rows"), "{e}");
    let e = Dataset::new(vec![Column::classes("y", &[], vec![0, 3], 3)]).unwrap_err();
    assert!(e.to_string().contains("class 3"), "{e}");
    let e = toy(2)
        .with(Column::f32("x", &[], vec![0.0; 2]))
        .unwrap_err();
    assert!(e.to_string().contains("two columns are named `x`"), "{e}");
    let e = Dataset::new(vec![Column::f32("x", &[], vec![1.0, f32::INFINITY])]).unwrap_err();
    assert!(e.to_string().contains("not a finite number"), "{e}");
    let renamed = toy(2).rename("x", "image").unwrap();
    assert!(renamed.column("image").is_some() && renamed.column("x").is_none());
    assert!(toy(2).rename("x", "y").is_err());
}

#[test]
fn splits_partition_the_data() {
    let d = toy(10);
    let (tr, va) = d.split(0.3, SplitMode::Tail).unwrap();
    assert_eq!(tr.len(), 7);
    assert_eq!(numbers(&va, "x")[..2], [7.0, 70.0]);
    let (tr, va) = d.split(0.3, SplitMode::Shuffled { seed: 1 }).unwrap();
    let mut ids: Vec<f32> = numbers(&tr, "x")
        .chunks(2)
        .chain(numbers(&va, "x").chunks(2))
        .map(|r| r[0])
        .collect();
    assert_ne!(&ids[7..], &[7.0, 8.0, 9.0], "shuffled split took the tail");
    ids.sort_by(f32::total_cmp);
    assert_eq!(ids, (0..10).map(|i| i as f32).collect::<Vec<_>>());
    // Labels travel with their features.
    for (row, c) in numbers(&va, "x").chunks(2).zip(classes(&va, "y").0) {
        assert_eq!(row[0] as u32 % 3, c);
    }
    let (tr2, _) = d.split(0.3, SplitMode::Shuffled { seed: 1 }).unwrap();
    assert_eq!(tr, tr2);
    assert!(d.split(1.5, SplitMode::Tail).is_err());
}

// ------------------------------------------------------------------ binding

fn input(name: &'static str, per_sample: usize, kind: InputKind) -> InputSpec {
    InputSpec {
        name: std::borrow::Cow::Borrowed(name),
        per_sample,
        kind,
        predict: !matches!(kind, InputKind::Labels { .. }),
    }
}

/// A model spec with these inputs (leaked: specs are `'static`).
fn spec(inputs: Vec<InputSpec>) -> &'static ModelSpec {
    Box::leak(Box::new(ModelSpec {
        inputs: std::borrow::Cow::Owned(inputs),
        ..crate::model::tests::empty_spec()
    }))
}

#[test]
fn binding_matches_by_name_then_the_one_unambiguous_pair() {
    let d = toy(5);
    // Names differ, but one feature input and one label input are left:
    // they take the one real and the one class column.
    let s = spec(vec![
        input("image", 2, InputKind::Features),
        input("digit", 1, InputKind::Labels { classes: 3 }),
    ]);
    let b = Binding::for_training(s, &d, "training set").unwrap();
    assert_eq!(b.column_of(0), Some(0));
    assert_eq!(b.column_of(1), Some(1));
    // Two feature inputs never guess.
    let s = spec(vec![
        input("a", 2, InputKind::Features),
        input("b", 1, InputKind::Features),
        input("y", 1, InputKind::Labels { classes: 3 }),
    ]);
    let d2 = d.clone().with(Column::f32("t", &[], vec![0.0; 5])).unwrap();
    let e = Binding::for_training(s, &d2, "training set")
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "training set does not fit model `test`: no column for input `a` (2 real values), \
         input `b` (1 real values); the data has `x` (2 real values), `y` (1 of 3 classes), \
         `t` (1 real values). Name each column after the input it feeds"
    );
    let d3 = d2.rename("x", "a").unwrap().rename("t", "b").unwrap();
    assert!(Binding::for_training(s, &d3, "training set").is_ok());
}

/// Issue 22: a label at or above the class count names its field's
/// `file:line:col` (the column found by re-reading the line), also when
/// the label is not the last column, is quoted, or the delimiter is `;`.
#[test]
fn label_out_of_range_names_file_line_and_column() {
    let dir = TempDir::new("labelrange");
    let s = || {
        spec(vec![
            input("x", 2, InputKind::Features),
            input("y", 1, InputKind::Labels { classes: 3 }),
        ])
    };
    let path = dir.0.join("train.csv");
    std::fs::write(&path, "a,b,label\n1,2,0\n\n3,  44,  9\n").unwrap();
    let data = read_csv(&path, &CsvOptions::default()).unwrap();
    let e = Binding::for_training(s(), &data, "training set")
        .unwrap_err()
        .to_string();
    let at = format!("{}:4:10 of column `label`", path.display());
    assert!(e.contains(&at), "{e}");
    assert!(e.ends_with("is class 9, not below 3"), "{e}");

    let path = dir.0.join("semi.csv");
    std::fs::write(&path, "y;a;b\n\"1\";5;6\n\"12\";7;8\n").unwrap();
    let opts = CsvOptions::new()
        .delimiter(b';')
        .classes("y", "y")
        .numbers("x", Select::Rest);
    let data = read_csv(&path, &opts).unwrap();
    let e = Binding::for_training(s(), &data, "training set")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&format!("{}:3:1 of column `y`", path.display())),
        "{e}"
    );
    // A field two columns in, after a quoted field holding the delimiter.
    let path = dir.0.join("mid.csv");
    std::fs::write(&path, "a,y,b\n\"1,5\",2,3\n").unwrap();
    // Column `a` is not read: the quoted delimiter only shifts the others.
    let opts = CsvOptions::new().classes("y", "y").numbers("b", "b");
    let data = read_csv(&path, &opts).unwrap();
    let label = data.column("y").unwrap();
    assert_eq!(
        label.origin().field(0, 0),
        format!("{}:2:7", path.display())
    );
}

#[test]
fn binding_errors_name_the_input_file_and_column() {
    let csv_data = csv("a,b,label\n1,2,0\n3,4,7\n", &CsvOptions::default()).unwrap();
    let s = spec(vec![
        input("x", 2, InputKind::Features),
        input("y", 1, InputKind::Labels { classes: 5 }),
    ]);
    let e = Binding::for_training(s, &csv_data, "training set")
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "training set does not fit model `test`: label `y` (1 of 5 classes): data.csv:3 of \
         column `label` of data.csv (column 3 `label`) is class 7, not below 5"
    );
    let s = spec(vec![input("x", 3, InputKind::Features)]);
    let e = Binding::for_training(s, &csv_data, "training set")
        .unwrap_err()
        .to_string();
    assert!(e.contains("input `x` (3 real values) takes 3 values per sample, column `features` of data.csv (columns 1-2) has 2"), "{e}");
    // A real-valued column fed to a class label.
    let reg = csv(
        "a,b,t\n1,2,0.5\n",
        &CsvOptions::new()
            .numbers("t", "t")
            .numbers("x", Select::Rest),
    )
    .unwrap();
    let s = spec(vec![
        input("x", 2, InputKind::Features),
        input("t", 1, InputKind::Labels { classes: 2 }),
    ]);
    let e = Binding::for_training(s, &reg, "training set")
        .unwrap_err()
        .to_string();
    assert!(e.contains("label `t` (1 of 2 classes) takes class indices, column `t` of data.csv (column 3 `t`) holds real numbers"), "{e}");
    // Token ids from numbers must be whole and in range.
    let toks = Dataset::new(vec![Column::f32("tok", &[2], vec![0.0, 1.5])]).unwrap();
    let s = spec(vec![input("tok", 2, InputKind::Tokens { classes: 4 })]);
    let e = Binding::for_training(s, &toks, "dataset")
        .unwrap_err()
        .to_string();
    assert!(e.contains("is 1.5, not a token id in 0..4"), "{e}");
}

#[test]
fn batcher_gathers_rows_and_converts_tokens() {
    let d = toy(6)
        .with(Column::classes(
            "tok",
            &[2],
            vec![0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3],
            4,
        ))
        .unwrap();
    let s = spec(vec![
        input("x", 2, InputKind::Features),
        input("tok", 2, InputKind::Tokens { classes: 4 }),
        input("y", 1, InputKind::Labels { classes: 3 }),
    ]);
    let mut b = Batcher::new(Binding::for_training(s, &d, "d").unwrap(), 4);
    b.gather(&d, &[4, 1]).unwrap();
    b.with_batch(0..2, |batch| {
        assert_eq!(batch.inputs[0], &[4.0, 40.0, 1.0, 10.0]);
        assert_eq!(batch.inputs[1], &[0.0, 1.0, 2.0, 3.0]);
        assert_eq!(batch.labels[0], &[1, 1]);
    });
    b.gather_range(&d, 2..6).unwrap();
    assert_eq!(b.labels(0), &[2, 0, 1, 2]);
    assert_eq!(b.features(0)[..2], [2.0, 20.0]);
    assert!(
        b.gather(&d, &[0, 1, 2, 3, 4]).is_err(),
        "more than the capacity"
    );
    assert!(b.gather(&d, &[6]).is_err(), "out of range");
    assert!(b.gather_range(&d, 4..7).is_err(), "out of range");
}

// ------------------------------------------------------------------ Loader

/// Serves one epoch and returns the sample ids in order, with batch sizes.
fn epoch(loader: &mut Loader, d: &Dataset, _bs: usize) -> (Vec<usize>, Vec<usize>) {
    let x = numbers(d, "x");
    let y = classes(d, "y").0;
    let (mut ids, mut sizes) = (Vec::new(), Vec::new());
    while let Some(batch) = loader.next_indices() {
        for &i in batch {
            let id = x[2 * i] as usize;
            assert_eq!(x[2 * i + 1], 10.0 * id as f32);
            assert_eq!(y[i], (id % 3) as u32);
            ids.push(id);
        }
        sizes.push(batch.len());
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
    let x = numbers(&d, "x");
    for _ in 0..2 {
        let batch = a.next_indices().unwrap();
        got.extend(batch.iter().map(|&i| x[2 * i] as usize));
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
