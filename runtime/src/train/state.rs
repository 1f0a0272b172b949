//! The part of a run's state that lives in `fit` rather than in the model,
//! optimizer or loader, stored as checkpoint metadata (`fit.*` keys) so a
//! resumed run continues exactly as an uninterrupted one: the current
//! epoch's loss sums, the best monitored loss and the epochs since it (for
//! early stopping), the time spent. The per-epoch history is not here: it
//! is the metrics log beside the checkpoint.
//!
//! Floats are stored as the hex of their bits: exact, unlike decimal text.

use std::collections::BTreeMap;
use std::time::Duration;

use super::EpochMetrics;

const BATCH: &str = "fit.batch";
const EPOCH_LOSS: &str = "fit.epoch_loss";
const EPOCH_SAMPLES: &str = "fit.epoch_samples";
const BEST: &str = "fit.best_loss";
const ELAPSED: &str = "fit.elapsed_ns";
const SINCE_BEST: &str = "fit.since_best";

/// Counters of a run besides the step (which the optimizer keeps).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct RunState {
    /// Completed epochs (restored from the metrics log on resume).
    pub history: Vec<EpochMetrics>,
    /// Sum of `loss × rows` over the current epoch's steps so far.
    pub epoch_loss: f64,
    /// Samples trained in the current epoch so far.
    pub epoch_samples: u64,
    /// Lowest monitored loss of a completed epoch (infinity before any).
    pub best: f64,
    /// Epochs completed since the one with the lowest monitored loss.
    pub since_best: u64,
    /// Training wall time before the current call of `fit`.
    pub elapsed: Duration,
}

impl Default for RunState {
    fn default() -> Self {
        RunState {
            history: Vec::new(),
            epoch_loss: 0.0,
            epoch_samples: 0,
            best: f64::INFINITY,
            since_best: 0,
            elapsed: Duration::ZERO,
        }
    }
}

fn bits(v: f64) -> String {
    format!("{:016x}", v.to_bits())
}

fn parse_bits(s: &str) -> Result<f64, String> {
    u64::from_str_radix(s, 16)
        .map(f64::from_bits)
        .map_err(|_| format!("`{s}` is not a hex-encoded float"))
}

fn parse_int<T: std::str::FromStr>(s: &str) -> Result<T, String> {
    s.parse().map_err(|_| format!("`{s}` is not an integer"))
}

impl RunState {
    /// Metadata entries for a checkpoint of a run with this batch size.
    pub(super) fn encode(&self, batch: usize) -> BTreeMap<String, String> {
        [
            (BATCH, batch.to_string()),
            (EPOCH_LOSS, bits(self.epoch_loss)),
            (EPOCH_SAMPLES, self.epoch_samples.to_string()),
            (BEST, bits(self.best)),
            (ELAPSED, self.elapsed.as_nanos().to_string()),
            (SINCE_BEST, self.since_best.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Reads the entries written by [`RunState::encode`], checking that the
    /// checkpoint was trained with the same batch size.
    pub(super) fn decode(meta: &BTreeMap<String, String>, batch: usize) -> Result<Self, String> {
        let get = |k: &str| {
            meta.get(k).map(String::as_str).ok_or_else(|| {
                format!("metadata `{k}` is missing (not a checkpoint written by fit?)")
            })
        };
        fn in_key(k: &'static str) -> impl Fn(String) -> String {
            move |e| format!("metadata `{k}`: {e}")
        }
        let saved_batch: usize = parse_int(get(BATCH)?).map_err(in_key(BATCH))?;
        if saved_batch != batch {
            return Err(format!(
                "the checkpoint was trained with batch {saved_batch}, this run uses {batch}"
            ));
        }
        let elapsed_ns: u64 = parse_int(get(ELAPSED)?).map_err(in_key(ELAPSED))?;
        Ok(RunState {
            history: Vec::new(),
            since_best: parse_int(get(SINCE_BEST)?).map_err(in_key(SINCE_BEST))?,
            epoch_loss: parse_bits(get(EPOCH_LOSS)?).map_err(in_key(EPOCH_LOSS))?,
            epoch_samples: parse_int(get(EPOCH_SAMPLES)?).map_err(in_key(EPOCH_SAMPLES))?,
            best: parse_bits(get(BEST)?).map_err(in_key(BEST))?,
            elapsed: Duration::from_nanos(elapsed_ns),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_state_round_trips_exactly() {
        let state = RunState {
            history: Vec::new(),
            epoch_loss: 1.0 / 7.0,
            epoch_samples: 42,
            best: 0.7,
            since_best: 3,
            elapsed: Duration::from_nanos(123),
        };
        assert_eq!(RunState::decode(&state.encode(16), 16), Ok(state.clone()));
        let fresh = RunState::default();
        assert_eq!(RunState::decode(&fresh.encode(1), 1), Ok(fresh));
        let err = RunState::decode(&state.encode(16), 32).unwrap_err();
        assert!(err.contains("batch 16"), "{err}");
        let mut bad = state.encode(16);
        bad.insert(SINCE_BEST.into(), "x".into());
        let err = RunState::decode(&bad, 16).unwrap_err();
        assert!(err.contains("fit.since_best"), "{err}");
        bad.remove(SINCE_BEST);
        let err = RunState::decode(&bad, 16).unwrap_err();
        assert!(err.contains("missing"), "{err}");
    }
}
