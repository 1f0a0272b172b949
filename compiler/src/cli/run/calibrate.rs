//! `nnc compile --quantize int8 --calibrate DATA`: the model's program
//! built with its int8 plan and run on calibration data.

use std::path::Path;
use std::process::{Command, ExitCode};

use anyhow::Context;
use clap::Args;

use super::*;

/// `nnc compile --quantize int8 --calibrate DATA`: what the calibration
/// run takes besides the model.
#[derive(Args, Clone, Debug, Default)]
pub struct CalibrateArgs {
    /// Calibrate the int8 plan on this data (a CSV file, an IDX directory
    /// or a shard; the train block's column mapping applies) and write the
    /// int8 weights file. Needs --quantize int8.
    #[arg(long, requires = "quantize")]
    pub calibrate: Option<PathBuf>,
    /// The f32 weights to quantize (default: runs/NETWORK/weights.safetensors).
    #[arg(long, requires = "calibrate")]
    pub weights: Option<PathBuf>,
    /// Calibration samples, spread evenly over the data (default 300).
    #[arg(long, requires = "calibrate")]
    pub calibration_samples: Option<usize>,
    /// The int8 weights file (default: weights.int8.safetensors next to
    /// the f32 weights).
    #[arg(long, requires = "calibrate")]
    pub int8_output: Option<PathBuf>,
    /// Which network to calibrate, when the file has several (default: the
    /// one with a `train` block, else the first).
    #[arg(long, requires = "calibrate")]
    pub network: Option<String>,
    /// Build the calibration program without optimisations.
    #[arg(long, requires = "calibrate")]
    pub debug: bool,
    /// The CSV column of the labels (skipped when present).
    #[arg(long, requires = "calibrate")]
    pub label: Option<String>,
    /// Which CSV columns feed an input: INPUT=NAME, INPUT=3, INPUT=0..30 or INPUT=a,b,c.
    #[arg(long = "column", requires = "calibrate")]
    pub columns: Vec<String>,
}

/// Calibrates `file`'s network (`network`, or the one `nnc train` would
/// pick) on `a.calibrate` and writes its int8 weights: builds the model's
/// program with its int8 plan and runs its `quantize`.
pub fn calibrate(file: &Path, a: &CalibrateArgs) -> Result<ExitCode, Failure> {
    let Some(data) = &a.calibrate else {
        return Ok(ExitCode::SUCCESS);
    };
    // Before the (long) build: the files named on the command line.
    for (what, path) in [
        ("calibration data", Some(data)),
        ("weights", a.weights.as_ref()),
    ] {
        if let Some(p) = path.filter(|p| !p.exists()) {
            return Err(anyhow::anyhow!("{what} file {} does not exist", p.display()).into());
        }
    }
    let model = ModelArgs {
        file: file.to_path_buf(),
        network: a.network.clone(),
        debug: a.debug,
    };
    let p = program_with(&model, false, true)?;
    let weights = WeightsArgs {
        weights: a.weights.clone(),
    };
    let mut args = weights.command("quantize", &p.network, false)?;
    // `DIR/NAME.safetensors` → `DIR/NAME.int8.safetensors` (the default
    // weights give the default `eval --int8` reads).
    let output = a.int8_output.clone().unwrap_or_else(|| {
        let w = PathBuf::from(&args[2]);
        let stem = w
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        w.with_file_name(format!("{stem}.int8.safetensors"))
    });
    let cli = DataArgs {
        data: Some(data.clone()),
        label: a.label.clone(),
        columns: a.columns.clone(),
    };
    args.extend(data_flags(
        &p,
        &cli,
        p.config.data.as_ref(),
        "calibration data",
    )?);
    if let Some(n) = a.calibration_samples {
        args.push("--samples".into());
        args.push(n.to_string().into());
    }
    args.push("--output".into());
    args.push(output.into_os_string());
    // The program's report goes where the int8 plan's does (standard
    // error): standard output may be carrying the generated code.
    let mut child = Command::new(&p.exe)
        .args(&args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", p.exe.display()))?;
    if let Some(mut out) = child.stdout.take() {
        std::io::copy(&mut out, &mut std::io::stderr())
            .with_context(|| format!("cannot read the output of {}", p.exe.display()))?;
    }
    let status = child
        .wait()
        .with_context(|| format!("cannot run {}", p.exe.display()))?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}
