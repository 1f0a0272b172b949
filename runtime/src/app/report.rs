//! What `eval` prints and what `predict` writes.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

use crate::model::{LossKind, ModelSpec};
use crate::train::metrics::Metrics;
use crate::train::{Eval, Scores};

/// The class names of the label input of a classification loss, if known.
fn label_names<'a>(
    spec: &ModelSpec,
    classes: &'a BTreeMap<String, Arc<[String]>>,
) -> Option<&'a [String]> {
    let LossKind::Classification { label, .. } = spec.loss.kind else {
        return None;
    };
    classes.get(&*spec.inputs.get(label)?.name).map(|n| &n[..])
}

/// Loss, every metric, and the confusion matrix of a classifier.
pub fn eval_text(e: &Eval, classes: &BTreeMap<String, Arc<[String]>>, spec: &ModelSpec) -> String {
    format!("  loss {:.4}\n{}", e.loss, metrics_text(e, classes, spec))
}

/// Every metric and the confusion matrix of a classifier, without the loss
/// (what `eval --int8` reports: the int8 plan computes no loss).
pub fn metrics_text(
    e: &Eval,
    classes: &BTreeMap<String, Arc<[String]>>,
    spec: &ModelSpec,
) -> String {
    let mut s = String::new();
    for (name, v) in e.metrics.named() {
        if name.contains("accuracy") || ["precision", "recall"].contains(&name) {
            let _ = writeln!(s, "  {name} {:.2}%", 100.0 * v);
        } else {
            let _ = writeln!(s, "  {name} {v:.4}");
        }
    }
    if let Metrics::Classification {
        confusion: Some(c), ..
    } = &e.metrics
    {
        let _ = writeln!(
            s,
            "  confusion matrix (rows: true class, columns: predicted):"
        );
        for line in c.render(label_names(spec, classes)).lines() {
            let _ = writeln!(s, "    {line}");
        }
    }
    s
}

/// Softmax of a row, in f64.
fn softmax(row: &[f32]) -> Vec<f64> {
    let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let e: Vec<f64> = row.iter().map(|&v| f64::from(v - m).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.into_iter().map(|v| v / sum).collect()
}

/// A CSV field, quoted when it needs to be.
fn field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// One row per sample: for a classifier the predicted class and the
/// probability of every class (softmax of the logits; per position for a
/// sequence), for binary targets the predicted 0/1 and the probability of
/// 1, for a regression the predicted values.
pub fn predictions_csv(
    spec: &ModelSpec,
    scores: &Scores,
    classes: &BTreeMap<String, Arc<[String]>>,
) -> String {
    let mut out = String::new();
    match scores.kind {
        LossKind::Classification {
            classes: k,
            positions,
            ..
        } => {
            let k = k as usize;
            let names: Vec<String> = match label_names(spec, classes) {
                Some(n) => n.to_vec(),
                None => (0..k).map(|i| i.to_string()).collect(),
            };
            let positions = positions.max(1) as usize;
            let mut header = Vec::new();
            for p in 0..positions {
                let at = if positions > 1 {
                    format!("[{p}]")
                } else {
                    String::new()
                };
                header.push(format!("class{at}"));
                header.extend(names.iter().map(|n| field(&format!("p({n}){at}"))));
            }
            out.push_str(&header.join(","));
            out.push('\n');
            for i in 0..scores.len() {
                let mut row = Vec::new();
                for pos in scores.row(i).chunks_exact(k) {
                    let p = softmax(pos);
                    let best = crate::train::metrics::argmax(pos);
                    row.push(field(&names[best]));
                    row.extend(p.iter().map(|v| format!("{v:.6}")));
                }
                out.push_str(&row.join(","));
                out.push('\n');
            }
        }
        LossKind::Binary { .. } => {
            let w = scores.width;
            let mut header = Vec::new();
            for j in 0..w {
                let at = if w > 1 {
                    format!("[{j}]")
                } else {
                    String::new()
                };
                header.push(format!("class{at}"));
                header.push(format!("p(1){at}"));
            }
            out.push_str(&header.join(","));
            out.push('\n');
            for i in 0..scores.len() {
                let row: Vec<String> = scores
                    .row(i)
                    .iter()
                    .flat_map(|&z| {
                        let p = 1.0 / (1.0 + (-f64::from(z)).exp());
                        [u8::from(z > 0.0).to_string(), format!("{p:.6}")]
                    })
                    .collect();
                out.push_str(&row.join(","));
                out.push('\n');
            }
        }
        LossKind::Regression { target } => {
            let name = spec.inputs.get(target).map_or("prediction", |i| &*i.name);
            let w = scores.width;
            let header: Vec<String> = (0..w)
                .map(|j| {
                    if w > 1 {
                        format!("{name}[{j}]")
                    } else {
                        name.to_string()
                    }
                })
                .collect();
            out.push_str(&header.join(","));
            out.push('\n');
            for i in 0..scores.len() {
                let row: Vec<String> = scores.row(i).iter().map(|v| v.to_string()).collect();
                out.push_str(&row.join(","));
                out.push('\n');
            }
        }
        LossKind::Other => {}
    }
    out
}

/// One row per sample of the declared outputs, each value in a column
/// `output[j]` (for a loss with no known prediction to interpret).
pub fn outputs_csv(outputs: &[crate::train::Prediction]) -> String {
    let mut header = Vec::new();
    for o in outputs {
        for j in 0..o.width {
            header.push(if o.width > 1 {
                format!("{}[{j}]", o.name)
            } else {
                o.name.to_string()
            });
        }
    }
    let mut out = header.join(",");
    out.push('\n');
    let rows = outputs
        .first()
        .map_or(0, |o| o.values.len() / o.width.max(1));
    for i in 0..rows {
        let row: Vec<String> = outputs
            .iter()
            .flat_map(|o| o.row(i).iter().map(|v| v.to_string()))
            .collect();
        out.push_str(&row.join(","));
        out.push('\n');
    }
    out
}
