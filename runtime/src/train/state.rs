//! The part of a run's state that lives in `fit` rather than in the model,
//! optimizer or loader, stored as checkpoint metadata (`fit.*` keys) so a
//! resumed run reports the same metrics as an uninterrupted one.
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
const HISTORY: &str = "fit.history";

/// Counters of a run besides the step (which the optimizer keeps).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct RunState {
    /// Completed epochs.
    pub history: Vec<EpochMetrics>,
    /// Sum of `loss × rows` over the current epoch's steps so far.
    pub epoch_loss: f64,
    /// Samples trained in the current epoch so far.
    pub epoch_samples: u64,
    /// Lowest monitored loss of a completed epoch (infinity before any).
    pub best: f64,
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
            elapsed: Duration::ZERO,
        }
    }
}

fn bits(v: f64) -> String {
    format!("{:016x}", v.to_bits())
}

fn opt_bits(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), bits)
}

fn parse_bits(s: &str) -> Result<f64, String> {
    u64::from_str_radix(s, 16)
        .map(f64::from_bits)
        .map_err(|_| format!("`{s}` is not a hex-encoded float"))
}

fn parse_opt_bits(s: &str) -> Result<Option<f64>, String> {
    if s == "-" {
        Ok(None)
    } else {
        parse_bits(s).map(Some)
    }
}

fn parse_int<T: std::str::FromStr>(s: &str) -> Result<T, String> {
    s.parse().map_err(|_| format!("`{s}` is not an integer"))
}

impl RunState {
    /// Metadata entries for a checkpoint of a run with this batch size.
    pub(super) fn encode(&self, batch: usize) -> BTreeMap<String, String> {
        let history: Vec<String> = self
            .history
            .iter()
            .map(|m| {
                format!(
                    "{},{},{},{},{},{},{},{}",
                    m.epoch,
                    m.steps,
                    bits(m.train_loss),
                    opt_bits(m.val_loss),
                    opt_bits(m.val_accuracy),
                    bits(f64::from(m.lr)),
                    bits(m.samples_per_sec),
                    m.elapsed.as_nanos()
                )
            })
            .collect();
        [
            (BATCH, batch.to_string()),
            (EPOCH_LOSS, bits(self.epoch_loss)),
            (EPOCH_SAMPLES, self.epoch_samples.to_string()),
            (BEST, bits(self.best)),
            (ELAPSED, self.elapsed.as_nanos().to_string()),
            (HISTORY, history.join(";")),
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
        let mut history = Vec::new();
        for line in get(HISTORY)?.split(';').filter(|l| !l.is_empty()) {
            history.push(decode_epoch(line).map_err(in_key(HISTORY))?);
        }
        let elapsed_ns: u64 = parse_int(get(ELAPSED)?).map_err(in_key(ELAPSED))?;
        Ok(RunState {
            history,
            epoch_loss: parse_bits(get(EPOCH_LOSS)?).map_err(in_key(EPOCH_LOSS))?,
            epoch_samples: parse_int(get(EPOCH_SAMPLES)?).map_err(in_key(EPOCH_SAMPLES))?,
            best: parse_bits(get(BEST)?).map_err(in_key(BEST))?,
            elapsed: Duration::from_nanos(elapsed_ns),
        })
    }
}

fn decode_epoch(line: &str) -> Result<EpochMetrics, String> {
    let f: Vec<&str> = line.split(',').collect();
    let &[epoch, steps, train, val, acc, lr, sps, elapsed] = f.as_slice() else {
        return Err(format!("epoch record `{line}` does not have 8 fields"));
    };
    Ok(EpochMetrics {
        epoch: parse_int(epoch)?,
        steps: parse_int(steps)?,
        train_loss: parse_bits(train)?,
        val_loss: parse_opt_bits(val)?,
        val_accuracy: parse_opt_bits(acc)?,
        lr: parse_bits(lr)? as f32,
        samples_per_sec: parse_bits(sps)?,
        elapsed: Duration::from_nanos(parse_int(elapsed)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_state_round_trips_exactly() {
        let m = |epoch, val: Option<f64>| EpochMetrics {
            epoch,
            steps: epoch * 7,
            train_loss: 0.1 + epoch as f64 / 3.0,
            val_loss: val,
            val_accuracy: val.map(|v| v / 2.0),
            lr: 1e-3 / 3.0,
            samples_per_sec: 12345.678,
            elapsed: Duration::from_nanos(987_654_321 * epoch),
        };
        let state = RunState {
            history: vec![m(1, Some(0.7)), m(2, None)],
            epoch_loss: 1.0 / 7.0,
            epoch_samples: 42,
            best: 0.7,
            elapsed: Duration::from_nanos(123),
        };
        assert_eq!(RunState::decode(&state.encode(16), 16), Ok(state.clone()));
        let fresh = RunState::default();
        assert_eq!(RunState::decode(&fresh.encode(1), 1), Ok(fresh));
        let err = RunState::decode(&state.encode(16), 32).unwrap_err();
        assert!(err.contains("batch 16"), "{err}");
        let mut bad = state.encode(16);
        bad.insert(HISTORY.into(), "1,2,3".into());
        let err = RunState::decode(&bad, 16).unwrap_err();
        assert!(err.contains("fit.history"), "{err}");
        bad.remove(HISTORY);
        let err = RunState::decode(&bad, 16).unwrap_err();
        assert!(err.contains("missing"), "{err}");
    }
}
