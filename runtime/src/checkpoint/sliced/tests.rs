use std::borrow::Cow;

use nnc_spec::ParamSpec;

use super::*;
use crate::checkpoint::{load_training, save_training, CheckpointMeta};
use crate::data::tests::TempDir;
use crate::model::tests::empty_spec;

/// A network `Net` of four parameters (42 + 2 values), and its parts.
fn spec(name: &'static str, hash: u64, params: Vec<ParamSpec>) -> ModelSpec {
    let mut offset = 0;
    let params: Vec<ParamSpec> = params
        .into_iter()
        .map(|p| {
            let p = ParamSpec::new(p.name.to_string(), p.shape.to_vec(), offset);
            offset += p.len;
            p
        })
        .collect();
    ModelSpec {
        name: Cow::Borrowed(name),
        hash,
        param_count: offset,
        params: Cow::Owned(params),
        ..empty_spec()
    }
}

fn p(name: &str, shape: &[usize]) -> ParamSpec {
    ParamSpec::new(name, shape.to_vec(), 0)
}

fn whole() -> ModelSpec {
    spec(
        "Net",
        0x1234,
        vec![
            p("a.weight", &[4, 6]),
            p("a.bias", &[6]),
            p("b.weight", &[6, 2]),
            p("c.bias", &[2]),
        ],
    )
}

/// Stage 0 holds `a`, stage 1 the rest.
fn stages() -> [ModelSpec; 2] {
    [
        spec(
            "NetStage0",
            1,
            vec![p("a.weight", &[4, 6]), p("a.bias", &[6])],
        ),
        spec(
            "NetStage1",
            2,
            vec![p("b.weight", &[6, 2]), p("c.bias", &[2])],
        ),
    ]
}

/// The Megatron pair on 2 ranks: `a` by columns, `b` by rows; `c` in the tail.
fn split_parts() -> [ModelSpec; 2] {
    [
        spec(
            "NetShard",
            3,
            vec![
                p("a.weight", &[4, 3]),
                p("a.bias", &[3]),
                p("b.weight", &[3, 2]),
            ],
        ),
        spec("NetTail", 4, vec![p("c.bias", &[2])]),
    ]
}

fn values(n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|i| scale * (i as f32 + 1.0)).collect()
}

/// An ordinary Adam checkpoint of `Net` at step 5.
fn ordinary(dir: &Path) -> (PathBuf, Vec<f32>, OptimizerState) {
    let w = whole();
    let params = values(w.param_count, 0.5);
    let opt = OptimizerState {
        kind: "adam".into(),
        step: 5,
        tensors: vec![
            ("exp_avg".into(), values(w.param_count, -0.25)),
            ("exp_avg_sq".into(), values(w.param_count, 0.125)),
        ],
    };
    let meta = CheckpointMeta {
        step: 5,
        model_hash: format!("{:016x}", w.hash),
        ..CheckpointMeta::default()
    };
    let path = dir.join("whole.safetensors");
    save_training(&path, &w.params, &params, Some(&opt), &meta).unwrap();
    (path, params, opt)
}

fn load(path: &Path) -> (Vec<f32>, OptimizerState) {
    let w = whole();
    let mut params = vec![0.0; w.param_count];
    let got = load_training(path, &w.params, &mut params, Some("0000000000001234")).unwrap();
    (params, got.optimizer.unwrap())
}

#[test]
fn stages_split_and_merge_back_bit_for_bit() {
    let tmp = TempDir::new("sliced-stages");
    let (path, params, opt) = ordinary(&tmp.0);
    let [s0, s1] = stages();
    let dir = tmp.0.join("ckpt");
    let m = split(
        &path,
        &whole(),
        Layout::Stages(2),
        &[vec![&s0], vec![&s1]],
        &dir,
    )
    .unwrap();
    assert_eq!((m.step, m.optimizer.as_str()), (5, "adam"));
    // Stage 1's slice: `b.weight` and `c.bias`, values 25.. of the whole.
    let got = read_slice(&dir, &m, 1, &[&s1]).unwrap().pop().unwrap();
    assert_eq!(got.params, params[30..].to_vec());
    assert_eq!(got.optimizer.tensors[1].1, opt.tensors[1].1[30..].to_vec());
    assert_eq!(got.optimizer.step, 5);
    let out = tmp.0.join("merged.safetensors");
    merge(&dir, &whole(), &out).unwrap();
    assert_eq!(load(&out), (params, opt));
}

#[test]
fn split_layers_split_and_merge_back_bit_for_bit() {
    let tmp = TempDir::new("sliced-split");
    let (path, params, opt) = ordinary(&tmp.0);
    let [shard, tail] = split_parts();
    let dir = tmp.0.join("ckpt");
    let parts = vec![vec![&shard, &tail], vec![&shard, &tail]];
    let m = split(&path, &whole(), Layout::Split(2), &parts, &dir).unwrap();
    // Rank 1's shard, by hand: columns 3..6 of `a.weight` [4, 6], entries
    // 3..6 of `a.bias`, rows 3..6 of `b.weight` [6, 2].
    let got = read_slice(&dir, &m, 1, &[&shard, &tail]).unwrap();
    let mut want = Vec::new();
    for r in 0..4 {
        want.extend_from_slice(&params[r * 6 + 3..r * 6 + 6]);
    }
    want.extend_from_slice(&params[24 + 3..24 + 6]);
    want.extend_from_slice(&params[30 + 6..30 + 12]);
    assert_eq!(got[0].params, want);
    assert_eq!(got[1].params, params[42..].to_vec());
    let out = tmp.0.join("merged.safetensors");
    merge(&dir, &whole(), &out).unwrap();
    assert_eq!(load(&out), (params, opt));
}

/// A 2-stage checkpoint in `tmp/ckpt`.
fn staged(tmp: &TempDir) -> (PathBuf, Manifest) {
    let (path, _, _) = ordinary(&tmp.0);
    let [s0, s1] = stages();
    let dir = tmp.0.join("ckpt");
    let m = split(
        &path,
        &whole(),
        Layout::Stages(2),
        &[vec![&s0], vec![&s1]],
        &dir,
    )
    .unwrap();
    (dir, m)
}

#[test]
fn a_damaged_slice_is_refused_naming_the_file() {
    let tmp = TempDir::new("sliced-damaged");
    let (dir, m) = staged(&tmp);
    let file = dir.join("stage-1.gen-1.safetensors");
    let mut bytes = std::fs::read(&file).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0x10;
    std::fs::write(&file, &bytes).unwrap();
    let err = read_slice(&dir, &m, 1, &[&stages()[1]]).unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with(&file.display().to_string()), "{text}");
    assert!(text.contains("the manifest says"), "{text}");
    let err = merge(&dir, &whole(), &tmp.0.join("m.safetensors")).unwrap_err();
    assert!(
        err.to_string().contains("stage-1.gen-1.safetensors"),
        "{err}"
    );
    // Stage 0's slice is still fine on its own.
    read_slice(&dir, &m, 0, &[&stages()[0]]).unwrap();
}

#[test]
fn a_missing_slice_is_refused_naming_the_file() {
    let tmp = TempDir::new("sliced-missing");
    let (dir, _) = staged(&tmp);
    std::fs::remove_file(dir.join("stage-0.gen-1.safetensors")).unwrap();
    let err = merge(&dir, &whole(), &tmp.0.join("m.safetensors")).unwrap_err();
    assert!(matches!(err, CheckpointError::Io { .. }), "{err}");
    assert!(
        err.to_string().contains("stage-0.gen-1.safetensors"),
        "{err}"
    );
}

#[test]
fn a_slice_from_another_save_is_refused() {
    // A slice file the manifest names, rewritten behind its back (by hand,
    // or by a writer of another format): its hash gives it away.
    let tmp = TempDir::new("sliced-mixed");
    let (dir, m) = staged(&tmp);
    let st = stages();
    let s1 = &st[1];
    let opt = OptimizerState {
        kind: "adam".into(),
        step: 5,
        tensors: vec![
            ("exp_avg".into(), vec![0.0; 14]),
            ("exp_avg_sq".into(), vec![0.0; 14]),
        ],
    };
    let part = Part {
        spec: s1,
        params: &[1.0; 14],
        optimizer: &opt,
    };
    write_slice(&dir, "Net", Layout::Stages(2), m.generation, 1, &[part]).unwrap();
    let err = read_slice(&dir, &m, 1, &[s1]).unwrap_err();
    assert!(
        err.to_string().contains("stage-1.gen-1.safetensors"),
        "{err}"
    );
    assert!(err.to_string().contains("not from the save"), "{err}");
}

#[test]
fn another_layout_or_model_is_refused_naming_the_file() {
    let tmp = TempDir::new("sliced-layout");
    let (dir, m) = staged(&tmp);
    // Resuming 2 stages as 4, or saving 4 over 2.
    let err = m.expect(&dir, "Net", Layout::Stages(4)).unwrap_err();
    assert!(err.to_string().contains("manifest.txt"), "{err}");
    assert!(err.to_string().contains("as 2 pipeline stages"), "{err}");
    let err = prepare_dir(&dir, "Net", Layout::Split(2)).unwrap_err();
    assert!(
        err.to_string().contains("split layers over 2 ranks"),
        "{err}"
    );
    // Stage 1's slice read for stage 0's model.
    let err = read_slice(&dir, &m, 1, &[&stages()[0]]).unwrap_err();
    assert!(
        err.to_string().contains("stage-1.gen-1.safetensors"),
        "{err}"
    );
    assert!(err.to_string().contains("written by `NetStage1`"), "{err}");
    // Merged into another network.
    let other = ModelSpec {
        name: Cow::Borrowed("Other"),
        ..whole()
    };
    let err = merge(&dir, &other, &tmp.0.join("m.safetensors")).unwrap_err();
    assert!(err.to_string().contains("not `Other`"), "{err}");
    // Merged over its own manifest.
    let err = merge(&dir, &whole(), &dir.join(MANIFEST)).unwrap_err();
    assert!(
        err.to_string().contains("part of the sliced checkpoint"),
        "{err}"
    );
}

#[test]
fn a_damaged_manifest_is_refused() {
    let tmp = TempDir::new("sliced-manifest");
    let (dir, _) = staged(&tmp);
    let path = dir.join(MANIFEST);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("slice stage-1", "slice stage-7")).unwrap();
    let err = read_manifest(&dir).unwrap_err();
    assert!(err.to_string().contains("manifest.txt: corrupt"), "{err}");
    std::fs::write(&path, "hello\n").unwrap();
    assert!(read_manifest(&dir).is_err());
}

#[cfg(unix)]
#[test]
fn only_regular_files_are_replaced() {
    let tmp = TempDir::new("sliced-link");
    let (dir, _) = staged(&tmp);
    let target = tmp.0.join("elsewhere");
    std::fs::write(&target, b"keep").unwrap();
    let link = dir.join("stage-0.gen-1.safetensors");
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let st = stages();
    let s0 = &st[0];
    let opt = OptimizerState {
        kind: "sgd".into(),
        step: 0,
        tensors: vec![],
    };
    let part = Part {
        spec: s0,
        params: &[0.0; 30],
        optimizer: &opt,
    };
    let err = write_slice(&dir, "Net", Layout::Stages(2), 1, 0, &[part]).unwrap_err();
    assert!(err.to_string().contains("not a regular file"), "{err}");
    assert_eq!(std::fs::read(&target).unwrap(), b"keep");
}

/// The files of `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_save_that_dies_midway_leaves_the_previous_generation_whole() {
    let tmp = TempDir::new("sliced-generations");
    let (path, params, opt) = ordinary(&tmp.0);
    let (dir, m) = staged(&tmp);
    assert_eq!(m.generation, 1);
    // The next save died after stage 0's slice (and in the middle of stage
    // 1's temporary file): generation 2 exists in part, no manifest names it.
    let st = stages();
    let later = OptimizerState {
        kind: "adam".into(),
        step: 6,
        tensors: vec![
            ("exp_avg".into(), vec![0.5; 30]),
            ("exp_avg_sq".into(), vec![0.5; 30]),
        ],
    };
    let part = Part {
        spec: &st[0],
        params: &[2.0; 30],
        optimizer: &later,
    };
    write_slice(&dir, "Net", Layout::Stages(2), 2, 0, &[part]).unwrap();
    std::fs::write(
        dir.join(".stage-1.gen-2.safetensors.tmp-4000000-3"),
        b"half",
    )
    .unwrap();
    std::fs::write(dir.join("notes.txt"), b"mine").unwrap();
    // The previous generation is what loads, whole.
    assert_eq!(read_manifest(&dir).unwrap(), m);
    let out = tmp.0.join("merged.safetensors");
    merge(&dir, &whole(), &out).unwrap();
    assert_eq!(load(&out), (params.clone(), opt.clone()));
    // The next save is generation 2; once its manifest is in place, the
    // first generation, the orphan and the temporary file are gone, and
    // nothing else.
    let again = split(
        &path,
        &whole(),
        Layout::Stages(2),
        &[vec![&st[0]], vec![&st[1]]],
        &dir,
    )
    .unwrap();
    assert_eq!(again.generation, 2);
    assert_eq!(
        listing(&dir),
        [
            "manifest.txt",
            "notes.txt",
            "stage-0.gen-2.safetensors",
            "stage-1.gen-2.safetensors"
        ]
    );
    merge(&dir, &whole(), &out).unwrap();
    assert_eq!(load(&out), (params, opt));
}

#[test]
fn a_manifest_of_the_first_format_is_refused_with_the_reason() {
    let tmp = TempDir::new("sliced-format1");
    let (dir, _) = staged(&tmp);
    std::fs::write(
        dir.join(MANIFEST),
        "nnc sliced checkpoint 1\nnetwork = Net\n",
    )
    .unwrap();
    let err = read_manifest(&dir).unwrap_err().to_string();
    assert!(err.contains("format 1"), "{err}");
    let err = prepare_dir(&dir, "Net", Layout::Stages(2)).unwrap_err();
    assert!(err.to_string().contains("manifest.txt"), "{err}");
}
