//! The metrics log: one CSV row per epoch, beside the checkpoints.
//!
//! `metrics.csv` has a header naming its columns (`epoch`, `steps`,
//! `train_loss`, `val_loss`, the validation metrics of the model's loss
//! kind, `lr`, `samples_per_sec`, `elapsed_s`); an empty field is a value
//! that was not measured. Numbers are written in Rust's shortest form that
//! reads back to the same bits, so [`read_log`] returns exactly the
//! [`History`] that `fit` returned. The file is replaced atomically after
//! every epoch (written to a temporary file, then renamed), so a killed
//! run leaves the previous epoch's complete log, never half a row.

use std::path::{Path, PathBuf};

use super::metrics::Metrics;
use super::{EpochMetrics, Eval, History};
use crate::checkpoint::{write_file_atomic, CheckpointError};

/// File name of the metrics log.
pub const METRICS_LOG: &str = "metrics.csv";

/// Columns every row has, before the metrics and after them.
const HEAD: [&str; 4] = ["epoch", "steps", "train_loss", "val_loss"];
const TAIL: [&str; 3] = ["lr", "samples_per_sec", "elapsed_s"];

/// Why a metrics log could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{}:{line}: {reason}", path.display())]
pub struct LogError {
    /// The log.
    pub path: PathBuf,
    /// 1-based line (0 for the file as a whole).
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// The metric columns of a history: those of its first validated epoch.
fn metric_names(h: &History) -> Vec<&'static str> {
    h.epochs
        .iter()
        .find_map(|e| e.val.as_ref())
        .map(|v| v.metrics.named().into_iter().map(|(n, _)| n).collect())
        .unwrap_or_default()
}

/// The log's text for a history.
pub fn render_log(h: &History) -> String {
    let names = metric_names(h);
    let mut header: Vec<String> = HEAD.iter().map(|s| s.to_string()).collect();
    header.extend(names.iter().map(|n| format!("val_{n}")));
    header.extend(TAIL.iter().map(|s| s.to_string()));
    let mut out = header.join(",");
    out.push('\n');
    for e in &h.epochs {
        let mut row = vec![
            e.epoch.to_string(),
            e.steps.to_string(),
            e.train_loss.to_string(),
            e.val.as_ref().map_or(String::new(), |v| v.loss.to_string()),
        ];
        let vals = e
            .val
            .as_ref()
            .map(|v| v.metrics.named())
            .unwrap_or_default();
        for n in &names {
            row.push(
                vals.iter()
                    .find(|(m, _)| m == n)
                    .map_or(String::new(), |(_, v)| v.to_string()),
            );
        }
        row.push(e.lr.to_string());
        row.push(e.samples_per_sec.to_string());
        row.push(e.elapsed_s.to_string());
        out.push_str(&row.join(","));
        out.push('\n');
    }
    out
}

/// Replaces `dir/metrics.csv` with the history, atomically.
pub fn write_log(dir: &Path, h: &History) -> Result<(), CheckpointError> {
    write_file_atomic(&dir.join(METRICS_LOG), render_log(h).as_bytes())
}

/// Reads a metrics log written by [`write_log`] back into the epochs of a
/// history (`steps` is the last row's, `finished` false).
pub fn read_log(path: &Path) -> Result<History, LogError> {
    let fail = |line: usize, reason: String| LogError {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(0, e.to_string()))?;
    let mut lines = text.lines().enumerate();
    let Some((_, header)) = lines.next() else {
        return Err(fail(0, "empty file".into()));
    };
    let cols: Vec<&str> = header.split(',').collect();
    let n = cols.len();
    if n < HEAD.len() + TAIL.len() || cols[..HEAD.len()] != HEAD || cols[n - TAIL.len()..] != TAIL {
        return Err(fail(
            1,
            format!("not an nnc metrics log header: `{header}`"),
        ));
    }
    let metric_cols: Vec<&str> = cols[HEAD.len()..n - TAIL.len()]
        .iter()
        .map(|c| c.strip_prefix("val_").unwrap_or(c))
        .collect();
    let mut history = History::default();
    for (i, line) in lines {
        let line_no = i + 1;
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() != n {
            return Err(fail(
                line_no,
                format!("{} fields, expected {n}", fields.len()),
            ));
        }
        let num = |k: usize| -> Result<Option<f64>, LogError> {
            let f = fields[k];
            if f.is_empty() {
                return Ok(None);
            }
            f.parse::<f64>().map(Some).map_err(|_| {
                fail(
                    line_no,
                    format!("`{f}` in column `{}` is not a number", cols[k]),
                )
            })
        };
        let int = |k: usize| -> Result<u64, LogError> {
            fields[k].parse::<u64>().map_err(|_| {
                fail(
                    line_no,
                    format!("`{}` in column `{}` is not a count", fields[k], cols[k]),
                )
            })
        };
        let required = |k: usize| -> Result<f64, LogError> {
            num(k)?.ok_or_else(|| fail(line_no, format!("column `{}` is empty", cols[k])))
        };
        let val_loss = num(3)?;
        let mut values = Vec::new();
        for (j, name) in metric_cols.iter().enumerate() {
            if let Some(v) = num(HEAD.len() + j)? {
                values.push((*name, v));
            }
        }
        let val = match val_loss {
            Some(loss) => Some(Eval {
                loss,
                metrics: metrics_from(&values).map_err(|r| fail(line_no, r))?,
            }),
            None => None,
        };
        let lr = fields[n - 3].parse::<f32>().map_err(|_| {
            fail(
                line_no,
                format!("`{}` in column `lr` is not a number", fields[n - 3]),
            )
        })?;
        history.epochs.push(EpochMetrics {
            epoch: int(0)?,
            steps: int(1)?,
            train_loss: required(2)?,
            val,
            lr,
            samples_per_sec: required(n - 2)?,
            elapsed_s: required(n - 1)?,
        });
    }
    history.steps = history.epochs.last().map_or(0, |e| e.steps);
    Ok(history)
}

/// The metrics a row's named values describe.
fn metrics_from(values: &[(&str, f64)]) -> Result<Metrics, String> {
    let get = |n: &str| values.iter().find(|(m, _)| *m == n).map(|(_, v)| *v);
    let need = |n: &str| get(n).ok_or_else(|| format!("column `val_{n}` is empty"));
    if values.is_empty() {
        return Ok(Metrics::None);
    }
    if get("mae").is_some() {
        return Ok(Metrics::Regression {
            mae: need("mae")?,
            rmse: need("rmse")?,
            r2: need("r2")?,
        });
    }
    if get("precision").is_some() {
        return Ok(Metrics::Binary {
            accuracy: need("accuracy")?,
            precision: need("precision")?,
            recall: need("recall")?,
            f1: need("f1")?,
        });
    }
    let (accuracy, per_position) = match (get("accuracy"), get("token_accuracy")) {
        (Some(a), None) => (a, false),
        (None, Some(a)) => (a, true),
        _ => return Err("expected one of `val_accuracy` and `val_token_accuracy`".into()),
    };
    Ok(Metrics::Classification {
        accuracy,
        top_k: get("top5_accuracy").map(|t| (5, t)),
        per_position,
        confusion: None,
    })
}
