//! What a run shows while it trains: the progress bar and the line per epoch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressStyle};

use super::EpochMetrics;

/// A progress bar over the epoch's samples, or a hidden one.
pub(super) fn progress_bar(
    show: bool,
    samples: usize,
    position: usize,
    epoch: u64,
    epochs: u64,
    running_loss: &Arc<AtomicU64>,
) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let loss = Arc::clone(running_loss);
    let style = ProgressStyle::with_template(
        "epoch {prefix} [{bar:30}] {pos}/{len}  loss {loss}  {rate}  {elapsed} (eta {eta})",
    )
    .expect("valid template")
    .progress_chars("=> ")
    .with_key(
        "loss",
        move |_: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
            let v = f64::from_bits(loss.load(Ordering::Relaxed));
            let _ = write!(w, "{v:.4}");
        },
    )
    .with_key(
        "rate",
        |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(w, "{:.0} samples/s", s.per_sec());
        },
    );
    running_loss.store(f64::NAN.to_bits(), Ordering::Relaxed);
    let bar = ProgressBar::new(samples as u64).with_style(style);
    bar.set_prefix(format!("{}/{epochs}", epoch + 1));
    bar.set_position(position as u64);
    bar
}

/// One line of metrics for an epoch.
pub(super) fn format_epoch(m: &EpochMetrics, epochs: u64) -> String {
    use std::fmt::Write;
    let mut s = format!("epoch {}/{epochs}  loss {:.4}", m.epoch, m.train_loss);
    if let Some(v) = &m.val {
        let _ = write!(s, "  val_loss {:.4}", v.loss);
        // Top-5 accuracy stays in the metrics log: the line is for a glance.
        for (name, x) in v
            .metrics
            .named()
            .into_iter()
            .filter(|(n, _)| !n.starts_with("top"))
        {
            if name.contains("accuracy") {
                let _ = write!(s, "  val_{name} {:.2}%", x * 100.0);
            } else {
                let _ = write!(s, "  val_{name} {x:.4}");
            }
        }
    }
    let _ = write!(
        s,
        "  lr {:.3e}  {:.0} samples/s  {:.1}s",
        m.lr, m.samples_per_sec, m.elapsed_s
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::metrics::Metrics;
    use crate::train::Eval;

    #[test]
    fn epoch_line_names_every_metric() {
        let m = EpochMetrics {
            epoch: 3,
            steps: 30,
            train_loss: 0.25,
            val: Some(Eval {
                loss: 0.5,
                metrics: Metrics::Classification {
                    accuracy: 0.9234,
                    top_k: None,
                    per_position: false,
                    confusion: None,
                },
            }),
            lr: 1e-3,
            samples_per_sec: 1234.4,
            elapsed_s: 4.5,
        };
        assert_eq!(
            format_epoch(&m, 10),
            "epoch 3/10  loss 0.2500  val_loss 0.5000  val_accuracy 92.34%  lr 1.000e-3  1234 samples/s  4.5s"
        );
    }
}
