//! `nnc checkpoint merge|split` end to end: a small classifier cut into
//! pipeline stages (and one with split layers) trained by `nnc train` on one
//! process; its checkpoint split into the slices of the model's layout and
//! merged back equals it tensor for tensor, bit for bit (parameters and
//! Adam's moments); a damaged slice is refused naming the file; outputs
//! follow nnc's rule (never over the input). The checkpoint tool is built
//! (`--debug`) in the cache the other command-line tests share.

use std::path::Path;

mod support;
use support::cli::{nnc, ok, pairs, temp_dir, text};

/// Every tensor of a safetensors file: name, shape and values as bits.
fn tensors(path: &Path) -> Vec<(String, Vec<usize>, Vec<u32>)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(name, v)| {
            let bits = v
                .data()
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            (name, v.shape().to_vec(), bits)
        })
        .collect();
    out.sort();
    out
}

/// `pairs.csv` and `NAME.nn`, the `pairs` classifier with two hidden
/// layers and `cut` in its train block.
fn model(dir: &Path, name: &str, cut: &str) {
    pairs(dir, 5, 2);
    std::fs::write(
        dir.join(format!("{name}.nn")),
        format!(
            r#"network Pairs {{
    input  x: f32[batch, 3];
    label  kind: class[batch] of 2;
    h1     = dense(x, 16) |> relu;
    h2     = dense(h1, 8) |> relu;
    logits = dense(h2, 2);
    output probs = softmax(logits);
    loss   cross_entropy(logits, kind);
}}

train Pairs {{
    data: csv("pairs.csv", label: kind);
    optimizer: adam(lr: 1e-2);
    batch: 16;
    epochs: 2;
    seed: 3;
    {cut}
}}
"#
        ),
    )
    .unwrap();
}

/// Trains `NAME.nn`, splits its last checkpoint into `sliced/`, merges
/// that into `merged.safetensors`, and checks the merge equals the
/// checkpoint's tensors; returns the slice files the manifest names.
fn round_trip(dir: &Path, name: &str) -> Vec<String> {
    let nn = format!("{name}.nn");
    ok(&nnc(dir, &["train", &nn, "--debug", "--quiet"]));
    let last = "runs/Pairs/last.safetensors";
    let out = ok(&nnc(
        dir,
        &["checkpoint", "split", &nn, last, "-o", "sliced", "--debug"],
    ));
    assert!(out.contains("generation 1"), "{out}");
    let manifest = std::fs::read_to_string(dir.join("sliced/manifest.txt")).unwrap();
    let files: Vec<String> = manifest
        .lines()
        .filter_map(|l| l.strip_prefix("slice "))
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    for f in &files {
        assert!(dir.join("sliced").join(f).is_file(), "{f}");
    }
    let out = ok(&nnc(
        dir,
        &[
            "checkpoint",
            "merge",
            &nn,
            "sliced",
            "-o",
            "merged.safetensors",
            "--debug",
        ],
    ));
    assert!(out.contains("into merged.safetensors"), "{out}");
    let (want, got) = (
        tensors(&dir.join(last)),
        tensors(&dir.join("merged.safetensors")),
    );
    assert!(
        want.iter().any(|(n, ..)| n.starts_with("optimizer.")),
        "no optimizer state in {last}"
    );
    assert_eq!(
        want.iter().map(|t| &t.0).collect::<Vec<_>>(),
        got.iter().map(|t| &t.0).collect::<Vec<_>>()
    );
    assert!(want == got, "the merged checkpoint differs from {last}");
    files
}

#[test]
fn stages_split_and_merge_back_bit_for_bit_and_a_damaged_slice_is_refused() {
    let dir = temp_dir("stages");
    model(&dir, "staged", "stages: h1;");
    let files = round_trip(&dir, "staged");
    assert_eq!(
        files,
        ["stage-0.gen-1.safetensors", "stage-1.gen-1.safetensors"]
    );

    // Split again into the same directory: a new generation, the first
    // one removed once the new manifest is in place.
    let last = "runs/Pairs/last.safetensors";
    let out = ok(&nnc(
        &dir,
        &[
            "checkpoint",
            "split",
            "staged.nn",
            last,
            "-o",
            "sliced",
            "--debug",
        ],
    ));
    assert!(out.contains("generation 2"), "{out}");
    let mut names: Vec<String> = std::fs::read_dir(dir.join("sliced"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "manifest.txt",
            "stage-0.gen-2.safetensors",
            "stage-1.gen-2.safetensors"
        ]
    );

    // Never over an input: the manifest, a slice, the model file.
    for (target, why) in [
        ("sliced/manifest.txt", "part of the sliced checkpoint"),
        (
            "sliced/stage-0.gen-2.safetensors",
            "part of the sliced checkpoint",
        ),
        ("staged.nn", "is the model file"),
    ] {
        let o = nnc(
            &dir,
            &[
                "checkpoint",
                "merge",
                "staged.nn",
                "sliced",
                "-o",
                target,
                "--debug",
            ],
        );
        let (_, err) = text(&o);
        assert_ne!(o.status.code(), Some(0), "merged over {target}");
        assert!(err.contains(why), "{target}: {err}");
    }
    // A device is written in place, as `nnc compile -o` writes it.
    ok(&nnc(
        &dir,
        &[
            "checkpoint",
            "merge",
            "staged.nn",
            "sliced",
            "-o",
            "/dev/null",
            "--debug",
        ],
    ));

    // A damaged slice: refused, naming the file and why.
    let slice = dir.join("sliced/stage-1.gen-2.safetensors");
    let mut bytes = std::fs::read(&slice).unwrap();
    let n = bytes.len();
    bytes[n - 2] ^= 0x40;
    std::fs::write(&slice, bytes).unwrap();
    let o = nnc(
        &dir,
        &[
            "checkpoint",
            "merge",
            "staged.nn",
            "sliced",
            "-o",
            "again.safetensors",
            "--debug",
        ],
    );
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("stage-1.gen-2.safetensors: corrupt checkpoint")
            && err.contains("the manifest says"),
        "{err}"
    );
    assert!(!dir.join("again.safetensors").exists());
}

#[test]
fn split_layers_split_and_merge_back_bit_for_bit() {
    let dir = temp_dir("split");
    model(
        &dir,
        "split",
        "split: [columns(h1), rows(h2)];\n    split_ranks: 2;",
    );
    let files = round_trip(&dir, "split");
    assert_eq!(
        files,
        ["shard-0.gen-1.safetensors", "shard-1.gen-1.safetensors"]
    );
}

#[test]
fn mistakes_are_named_before_anything_is_built() {
    let dir = temp_dir("mistakes");
    pairs(&dir, 1, 1);
    std::fs::write(dir.join("ckpt.safetensors"), b"x").unwrap();
    for (args, want) in [
        (
            vec![
                "checkpoint",
                "merge",
                "pairs.nn",
                "nowhere",
                "-o",
                "m.safetensors",
            ],
            "nowhere: not a sliced checkpoint (no manifest.txt in it)",
        ),
        (
            vec![
                "checkpoint",
                "split",
                "pairs.nn",
                "missing.safetensors",
                "-o",
                "d",
            ],
            "missing.safetensors: no such file",
        ),
        (
            vec![
                "checkpoint",
                "split",
                "pairs.nn",
                "ckpt.safetensors",
                "-o",
                "pairs.csv",
            ],
            "pairs.csv: not a directory",
        ),
        (
            vec![
                "checkpoint",
                "split",
                "pairs.nn",
                "ckpt.safetensors",
                "-o",
                "d",
            ],
            "network `Pairs` has neither `stages:` nor `split:`",
        ),
    ] {
        let o = nnc(&dir, &args);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}
