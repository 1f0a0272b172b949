//! The `nnc` binary end to end (`train_cli.rs`, `explain_cli.rs`): fresh
//! directories, runs whose programs are built in one cache shared by every
//! such test, and the small classification data set they train on.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A fresh directory for one test of this test binary.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{}-{name}", env!("CARGO_CRATE_NAME")));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A fresh directory (as [`temp_dir`]) holding a copy of example model
/// `examples/models/MODEL.nn` as `m.nn`.
pub fn with_model(name: &str, model: &str) -> PathBuf {
    let dir = temp_dir(name);
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../examples/models/{model}.nn"));
    std::fs::copy(src, dir.join("m.nn")).expect("copy the model");
    dir
}

/// Standard error of a run.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `nnc ARGS` in `dir`, its programs built in the shared test cache.
pub fn command(dir: &Path, args: &[&str]) -> Command {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    // The workspace's own target directory: the runtime's dependencies are
    // already built there, with the same profile, by the test build.
    let target = tmp.parent().expect("target/tmp is in the target directory");
    let mut c = Command::new(env!("CARGO_BIN_EXE_nnc"));
    c.args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env("NNC_CACHE_DIR", tmp.join("nnc-train-cache"))
        .env("NNC_TARGET_DIR", target);
    c
}

/// `nnc ARGS` in `dir`, run to the end.
pub fn nnc(dir: &Path, args: &[&str]) -> Output {
    command(dir, args).output().expect("nnc runs")
}

/// Standard output and standard error.
pub fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Standard output of a run that must have succeeded.
#[track_caller]
pub fn ok(o: &Output) -> String {
    let (out, err) = text(o);
    assert_eq!(o.status.code(), Some(0), "stdout:\n{out}\nstderr:\n{err}");
    out
}

/// A small generator for the data files.
pub struct Lcg(pub u64);

impl Lcg {
    /// The next value in [0, 1).
    pub fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as f64 / (1u64 << 31) as f64) as f32
    }
}

/// `pairs.csv` (300 rows drawn from `Lcg(seed)`: the class is which of two
/// features is larger, plus a distractor column `noise`) and `pairs.nn`, a
/// classifier of it whose `train` block names it and trains `epochs`.
pub fn pairs(dir: &Path, seed: u64, epochs: u32) {
    let mut csv = String::from("a,b,noise,kind\n");
    let mut rng = Lcg(seed);
    for _ in 0..300 {
        let (a, b, n) = (rng.next(), rng.next(), rng.next());
        let kind = if a > b { "big_a" } else { "big_b" };
        csv.push_str(&format!("{a},{b},{n},{kind}\n"));
    }
    std::fs::write(dir.join("pairs.csv"), csv).unwrap();
    std::fs::write(
        dir.join("pairs.nn"),
        format!(
            r#"network Pairs {{
    input  x: f32[batch, 3];
    label  kind: class[batch] of 2;
    output logits = dense(dense(x, 16, activation: relu), 2);
    loss cross_entropy(logits, kind);
}}

train Pairs {{
    data: csv("pairs.csv", label: kind);
    validation: 0.2;
    optimizer: adam(lr: 1e-2);
    batch: 16;
    epochs: {epochs};
    seed: 3;
}}
"#
        ),
    )
    .unwrap();
}
