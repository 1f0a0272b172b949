//! `nnc data convert` end to end: a CSV file and the bundled MNIST's IDX
//! files become shards; a bad field is reported at `file:line:col`, a
//! truncated IDX file at its byte offset, and the output is never an input
//! or anything but a regular file. The conversion program is built
//! (`--debug`) in the cache the other command-line tests share.

use std::path::Path;

mod support;
use support::cli::{nnc, ok, temp_dir, text};

fn is_shard(path: &Path) -> bool {
    std::fs::read(path).is_ok_and(|b| b.starts_with(b"NNCSHARD"))
}

#[test]
fn csv_and_idx_files_convert_to_shards() {
    let dir = temp_dir("convert");
    std::fs::write(dir.join("d.csv"), "a,b,label\n1,2,x\n3,4,y\n5,6,x\n").unwrap();
    let out = ok(&nnc(
        &dir,
        &["data", "convert", "d.csv", "-o", "d.shard", "--debug"],
    ));
    assert!(out.contains("wrote 3 rows to d.shard"), "{out}");
    assert!(is_shard(&dir.join("d.shard")));

    let mnist = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/mnist-10k");
    let images = mnist.join("t10k-images-idx3-ubyte.gz");
    let labels = mnist.join("t10k-labels-idx1-ubyte.gz");
    let (i, l) = (images.to_str().unwrap(), labels.to_str().unwrap());
    let out = ok(&nnc(
        &dir,
        &["data", "convert", i, l, "-o", "t10k.shard", "--debug"],
    ));
    assert!(out.contains("wrote 2000 rows to t10k.shard"), "{out}");
    assert!(is_shard(&dir.join("t10k.shard")));
}

#[test]
fn mistakes_name_the_file_and_the_place() {
    let dir = temp_dir("mistakes");
    let fails = |args: &[&str]| {
        let o = nnc(&dir, args);
        let (_, err) = text(&o);
        assert_ne!(o.status.code(), Some(0), "{args:?} succeeded");
        err
    };
    std::fs::write(dir.join("bad.csv"), "a,b,label\n1,2,x\n3,zz,y\n").unwrap();
    let err = fails(&["data", "convert", "bad.csv", "-o", "o.shard", "--debug"]);
    assert!(err.contains("bad.csv:3:3"), "{err}");
    assert!(!dir.join("o.shard").exists());

    std::fs::write(
        dir.join("img.idx"),
        [0, 0, 8, 2, 0, 0, 0, 3, 0, 0, 0, 2, 1, 2, 3],
    )
    .unwrap();
    let err = fails(&["data", "convert", "img.idx", "-o", "o.shard", "--debug"]);
    assert!(
        err.contains("img.idx") && err.contains("byte offset 15"),
        "{err}"
    );

    let err = fails(&["data", "convert", "bad.csv", "-o", "bad.csv"]);
    assert!(err.contains("the output is an input"), "{err}");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    let err = fails(&["data", "convert", "bad.csv", "-o", "sub"]);
    assert!(err.contains("only to a regular file"), "{err}");
    let err = fails(&["data", "convert", "missing.csv", "-o", "o.shard"]);
    assert!(err.contains("missing.csv: no such file"), "{err}");
}

/// `nnc train --data` takes shards and streams them: a shard of the bundled
/// t10k files trains MNIST's model to the same weights, bit for bit, as
/// those files read whole (named as a training pair in a directory), and a
/// directory of shards is the shards in name order.
#[test]
fn train_streams_shards_as_it_trains_the_files_they_came_from() {
    let dir = temp_dir("train-shards");
    let mnist = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/mnist-10k");
    let images = mnist.join("t10k-images-idx3-ubyte.gz");
    let labels = mnist.join("t10k-labels-idx1-ubyte.gz");
    let (i, l) = (images.to_str().unwrap(), labels.to_str().unwrap());
    std::fs::create_dir_all(dir.join("shards")).unwrap();
    ok(&nnc(
        &dir,
        &[
            "data",
            "convert",
            i,
            l,
            "-o",
            "shards/t10k.shard",
            "--debug",
        ],
    ));
    std::fs::create_dir_all(dir.join("idx")).unwrap();
    std::fs::copy(&images, dir.join("idx/train-images-idx3-ubyte.gz")).unwrap();
    std::fs::copy(&labels, dir.join("idx/train-labels-idx1-ubyte.gz")).unwrap();
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/models/mnist_mlp.nn");
    let model = model.to_str().unwrap();
    let train = |data: &str, out: &str| {
        ok(&nnc(
            &dir,
            &[
                "train",
                model,
                "--debug",
                "--epochs",
                "1",
                "--validation",
                "0",
                "--data",
                data,
                "--out",
                out,
            ],
        ))
    };
    let streamed = train("shards/t10k.shard", "a");
    assert!(
        streamed.contains("2000 training samples from shards/t10k.shard (streamed)"),
        "{streamed}"
    );
    train("idx", "b");
    train("shards", "c");
    // The tensors' bytes: the header's metadata (which names the data it
    // came from, in an order the safetensors crate does not fix) aside.
    let weights = |out: &str| {
        let bytes = std::fs::read(dir.join(out).join("weights.safetensors")).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        bytes[8 + n..].to_vec()
    };
    assert!(weights("a") == weights("b"), "streamed vs in memory");
    assert!(weights("c") == weights("a"), "a directory of shards");
    // `eval` reads a directory of shards as the shards in it, not as IDX.
    let eval = |data: &str| {
        let out = ok(&nnc(
            &dir,
            &[
                "eval",
                model,
                "--debug",
                "--weights",
                "a/weights.safetensors",
                "--data",
                data,
            ],
        ));
        out.lines()
            .find(|l| l.trim().starts_with("accuracy "))
            .unwrap_or_else(|| panic!("no accuracy in:\n{out}"))
            .to_string()
    };
    assert_eq!(eval("shards"), eval("shards/t10k.shard"));
    assert_eq!(eval("shards"), eval("idx"));
}
