use std::borrow::Cow;

use super::*;
use crate::data::tests::TempDir;
use crate::optim::{Adam, AdamConfig, Optimizer};

const SPECS: &[ParamSpec] = &[
    ParamSpec {
        name: Cow::Borrowed("h1.weight"),
        shape: Cow::Borrowed(&[3, 2]),
        offset: 0,
        len: 6,
    },
    ParamSpec {
        name: Cow::Borrowed("h1.bias"),
        shape: Cow::Borrowed(&[2]),
        offset: 6,
        len: 2,
    },
];

fn params() -> Vec<f32> {
    vec![0.5, -1.0, 2.25, 3.0, -0.125, 7.0, 1e-3, -4.0]
}

fn meta() -> CheckpointMeta {
    CheckpointMeta {
        step: 7,
        epoch: 2,
        model_hash: "abc123".into(),
        rng: Some([1, u64::MAX, 3, 4]),
        loader: Some(LoaderState {
            epoch: 2,
            position: 40,
            epoch_rng: [5, 6, 7, u64::MAX - 1],
            samples: 100,
            order: 0x9e37_79b9_7f4a_7c15,
        }),
        extra: [("lr".to_string(), "0.001".to_string())].into(),
    }
}

fn adam_state() -> OptimizerState {
    let mut opt = Adam::new(8, AdamConfig::default()).unwrap();
    let mut p = params();
    opt.step(&mut p, &[0.1, -0.2, 0.3, 0.4, 0.5, -0.6, 0.7, 0.8], 0.01)
        .unwrap();
    opt.state()
}

fn saved(dir: &TempDir) -> PathBuf {
    let path = dir.0.join("model.safetensors");
    save_training(&path, SPECS, &params(), Some(&adam_state()), &meta()).unwrap();
    path
}

#[test]
fn training_checkpoint_round_trips() {
    let dir = TempDir::new("ckpt");
    let path = saved(&dir);
    let mut loaded = vec![0.0; 8];
    let got = load_training(&path, SPECS, &mut loaded, Some("abc123")).unwrap();
    assert_eq!(loaded, params());
    assert_eq!(got.meta, meta());
    assert_eq!(got.optimizer, Some(adam_state()));
    let mut memory = vec![0.0; 8];
    let bytes = std::fs::read(&path).unwrap();
    let same = parse_training(&bytes, &path, SPECS, &mut memory, Some("abc123")).unwrap();
    assert_eq!((same, memory), (got.clone(), loaded.clone()));
    // The state loads into a fresh optimizer.
    let mut fresh = Adam::new(8, AdamConfig::default()).unwrap();
    fresh.load_state(got.optimizer.as_ref().unwrap()).unwrap();
    assert_eq!(fresh.steps(), 1);
    // No temporary files left behind.
    let names: Vec<_> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("model.safetensors")]);
}

#[test]
fn file_follows_the_safetensors_layout() {
    // Independent reading of the format: u64 LE header length, JSON, LE data.
    let dir = TempDir::new("ckptfmt");
    let path = dir.0.join("plain.safetensors");
    let data = [1.5f32, -2.0, 3.25];
    let md = BTreeMap::from([("k".to_string(), "v".to_string())]);
    save_tensors(
        &path,
        &[TensorRef {
            name: "w",
            shape: &[3],
            data: &data,
        }],
        &md,
    )
    .unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + n]).unwrap();
    assert!(
        header.contains(r#""w":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}"#),
        "{header}"
    );
    // The checksum is FNV-1a 64 of the little-endian bytes of the values,
    // computed independently (Python's struct.pack('<3f', ...)).
    assert!(header.contains(r#""k":"v""#), "{header}");
    assert!(
        header.contains(r#""nnc.fnv1a64.w":"43cf422b5c0d2608""#),
        "{header}"
    );
    let body = &bytes[8 + n..];
    let values: Vec<f32> = body
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(values, data);
    let (tensors, meta) = load_tensors(&path).unwrap();
    assert_eq!(
        tensors,
        vec![Tensor {
            name: "w".into(),
            shape: vec![3],
            data: data.to_vec()
        }]
    );
    assert_eq!(meta, md);
}

/// A safetensors file assembled by hand, for corruptions the writer cannot produce.
fn raw_file(header: &str, data_len: usize) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend(std::iter::repeat_n(0u8, data_len));
    out
}

fn load_err(dir: &TempDir, name: &str, bytes: &[u8]) -> CheckpointError {
    let path = dir.0.join(name);
    std::fs::write(&path, bytes).unwrap();
    let mut buf = vec![9.0; 8];
    let e = load_training(&path, SPECS, &mut buf, None).unwrap_err();
    assert_eq!(buf, vec![9.0; 8], "a failed load wrote into the parameters");
    let memory = parse_training(bytes, &path, SPECS, &mut buf, None).unwrap_err();
    assert_eq!(
        memory.to_string(),
        e.to_string(),
        "in memory and from the file"
    );
    assert_eq!(buf, vec![9.0; 8], "a failed load wrote into the parameters");
    assert!(
        e.to_string().contains(name),
        "error does not name the file: {e}"
    );
    e
}

#[test]
fn corrupt_files_are_rejected() {
    let dir = TempDir::new("ckptbad");
    let good = std::fs::read(saved(&dir)).unwrap();
    let e = load_err(&dir, "truncated", &good[..good.len() - 3]);
    assert!(matches!(e, CheckpointError::Corrupt { .. }), "{e}");
    let e = load_err(&dir, "tiny", &good[..5]);
    assert!(matches!(e, CheckpointError::Corrupt { .. }), "{e}");
    let mut flipped = good.clone();
    flipped[8] = b'x'; // the JSON's opening brace
    let e = load_err(&dir, "flipped", &flipped);
    assert!(e.to_string().contains("JSON"), "{e}");
    let mut bad_len = good.clone();
    bad_len[..8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    let e = load_err(&dir, "badlen", &bad_len);
    assert!(matches!(e, CheckpointError::Corrupt { .. }), "{e}");
    let overlap = raw_file(
        r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
        12,
    );
    let e = load_err(&dir, "overlap", &overlap);
    assert!(e.to_string().contains("offset"), "{e}");
    let out_of_range = raw_file(
        r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
        8,
    );
    let e = load_err(&dir, "range", &out_of_range);
    assert!(matches!(e, CheckpointError::Corrupt { .. }), "{e}");
    let size = raw_file(
        r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
        8,
    );
    let e = load_err(&dir, "size", &size);
    assert!(matches!(e, CheckpointError::Corrupt { .. }), "{e}");
    let f64_file = raw_file(
        r#"{"h1.bias":{"dtype":"F64","shape":[2],"data_offsets":[0,16]}}"#,
        16,
    );
    let e = load_err(&dir, "dtype", &f64_file);
    assert!(e.to_string().contains("expected F32"), "{e}");
    // A valid safetensors file that nnc did not write.
    let foreign = raw_file(
        r#"{"h1.bias":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
        8,
    );
    let e = load_err(&dir, "foreign", &foreign);
    assert!(e.to_string().contains("nnc.format"), "{e}");
    // One flipped bit in a value: the header still parses, the checksum
    // does not match.
    let mut bit = good.clone();
    let last = bit.len() - 1;
    bit[last] ^= 0x01;
    let e = load_err(&dir, "bitflip", &bit);
    assert!(e.to_string().contains("fails its checksum"), "{e}");
    // A NaN in a file without checksums (written elsewhere) is refused too.
    let mut nan = raw_file(
        r#"{"h1.bias":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
        8,
    );
    let at = nan.len() - 4;
    nan[at..].copy_from_slice(&f32::NAN.to_le_bytes());
    let e = load_err(&dir, "nan", &nan);
    assert!(
        e.to_string()
            .contains("tensor `h1.bias` holds NaN at index 1"),
        "{e}"
    );
}

#[test]
fn checkpoints_of_other_models_are_rejected() {
    let dir = TempDir::new("ckptmodel");
    let path = saved(&dir);
    let mut buf = vec![0.0; 8];
    let e = load_training(&path, SPECS, &mut buf, Some("other")).unwrap_err();
    assert!(
        matches!(e, CheckpointError::Mismatch { .. }) && e.to_string().contains("hash"),
        "{e}"
    );
    let mut wrong_shape = SPECS.to_vec();
    wrong_shape[0].shape = Cow::Borrowed(&[2, 3]);
    let e = load_training(&path, &wrong_shape, &mut buf, None).unwrap_err();
    assert!(
        e.to_string()
            .contains("shape [3, 2] in the file, model expects [2, 3]"),
        "{e}"
    );
    let mut renamed = SPECS.to_vec();
    renamed[1].name = Cow::Borrowed("h2.bias");
    let e = load_training(&path, &renamed, &mut buf, None).unwrap_err();
    assert!(e.to_string().contains("`h2.bias` is missing"), "{e}");
    let e = load_training(&path, &SPECS[..1], &mut buf[..6], None).unwrap_err();
    assert!(
        e.to_string().contains("`h1.bias` that the model does not"),
        "{e}"
    );
    assert_eq!(buf, vec![0.0; 8]);
}

#[test]
fn failed_saves_leave_the_old_checkpoint_intact() {
    let dir = TempDir::new("ckptatomic");
    let path = saved(&dir);
    let before = std::fs::read(&path).unwrap();
    // 1. An inconsistent request is refused before any file is touched.
    let short = vec![0.0; 7];
    assert!(save_training(&path, SPECS, &short, None, &meta()).is_err());
    let mut reserved = meta();
    reserved.extra.insert("nnc.step".into(), "1".into());
    assert!(save_training(&path, SPECS, &params(), None, &reserved).is_err());
    // 2. A crash after writing the new file but before the rename.
    let bytes = encode_training(SPECS, &[0.0; 8], None, &CheckpointMeta::default()).unwrap();
    let err = write_atomic(&path, &bytes, |_| {
        Err(std::io::Error::other("simulated crash"))
    })
    .unwrap_err();
    assert!(err.to_string().contains("simulated crash"));
    // 3. The rename itself fails (target replaced by a non-empty directory).
    let dir_target = dir.0.join("is-a-dir");
    std::fs::create_dir(&dir_target).unwrap();
    std::fs::write(dir_target.join("f"), b"x").unwrap();
    assert!(save_training(&dir_target, SPECS, &params(), None, &meta()).is_err());
    assert_eq!(std::fs::read(&path).unwrap(), before);
    let mut names: Vec<_> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec!["is-a-dir", "model.safetensors"],
        "temporary files left behind"
    );
    // And a successful save replaces it.
    save_training(&path, SPECS, &[1.0; 8], None, &CheckpointMeta::default()).unwrap();
    let mut buf = vec![0.0; 8];
    let got = load_training(&path, SPECS, &mut buf, Some("")).unwrap();
    assert_eq!(buf, vec![1.0; 8]);
    assert_eq!(got.optimizer, None);
    assert_eq!(got.meta.loader, None);
}

#[test]
fn outputs_replace_regular_files_and_write_into_anything_else() {
    use std::os::unix::fs::FileTypeExt;
    let dir = TempDir::new("output");
    // A regular file is replaced whole.
    let file = dir.0.join("out.csv");
    std::fs::write(&file, "old contents that are longer").unwrap();
    write_output(&file, b"new").unwrap();
    assert_eq!(std::fs::read(&file).unwrap(), b"new");
    // A symlink stays a symlink; its target gets the new contents.
    let target = dir.0.join("target.csv");
    std::fs::write(&target, "old").unwrap();
    let link = dir.0.join("link.csv");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    write_output(&link, b"through the link").unwrap();
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read(&target).unwrap(), b"through the link");
    // A device is written in place, never renamed over: /dev/null stays a
    // character device (an earlier version replaced it with a regular file).
    write_output(Path::new("/dev/null"), b"discarded").unwrap();
    let meta = std::fs::metadata("/dev/null").unwrap();
    assert!(
        meta.file_type().is_char_device(),
        "/dev/null is no longer a device"
    );
    // A missing file is created; no temporary file is left behind.
    let fresh = dir.0.join("fresh.csv");
    write_output(&fresh, b"x").unwrap();
    let names: Vec<_> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains(".tmp-")), "{names:?}");
}

/// A teacher's tensors: read by name in the order asked (not the file's),
/// extra tensors ignored; a missing file, a missing tensor, another shape
/// and a non-finite value are errors naming the file and the tensor.
#[test]
fn load_frozen_reads_by_name_and_validates() {
    let dir = TempDir::new("frozen");
    let path = dir.0.join("teacher.safetensors");
    let w = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
    let b = [0.5f32, -0.5];
    let save = |bias: &[f32]| {
        save_tensors(
            &path,
            &[
                TensorRef {
                    name: "a.bias",
                    shape: &[2],
                    data: bias,
                },
                TensorRef {
                    name: "a.weight",
                    shape: &[3, 2],
                    data: &w,
                },
                TensorRef {
                    name: "__optim.m",
                    shape: &[1],
                    data: &[9.0],
                },
            ],
            &BTreeMap::new(),
        )
        .unwrap()
    };
    save(&b);
    let want: &[(&str, &[usize])] = &[("a.weight", &[3, 2]), ("a.bias", &[2])];
    let got = load_frozen(&path, want).unwrap();
    assert_eq!(got, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 0.5, -0.5]);

    let shown = path.display().to_string();
    let err = |wanted: &[(&str, &[usize])]| load_frozen(&path, wanted).unwrap_err().to_string();
    let e = err(&[("a.gamma", &[2])]);
    assert!(
        e.contains(&shown) && e.contains("no tensor `a.gamma`"),
        "{e}"
    );
    let e = err(&[("a.weight", &[2, 3])]);
    assert!(
        e.contains(&shown) && e.contains("`a.weight` is [3, 2]"),
        "{e}"
    );
    save(&[0.5, f32::NAN]);
    let e = err(want);
    assert!(
        e.contains(&shown) && e.contains("`a.bias` holds NaN at index 1"),
        "{e}"
    );
    let missing = dir.0.join("absent.safetensors");
    let e = load_frozen(&missing, want).unwrap_err().to_string();
    assert!(e.contains("absent.safetensors"), "{e}");
}
