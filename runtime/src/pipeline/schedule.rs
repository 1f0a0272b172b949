//! The order in which a stage runs its micro-batches' forwards and
//! backwards within one step: GPipe (every forward, then every backward) or
//! 1F1B (PipeDream-flush: a few forwards to fill the pipeline, then one
//! forward and one backward in turn, then the remaining backwards). Both
//! run each stage's backwards in micro-batch order, so the gradient sums,
//! and hence the results, are bit for bit the same; 1F1B holds at most
//! `S − s` micro-batches in flight on stage `s` of `S` instead of all `M`.

/// A pipeline schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Schedule {
    /// Every micro-batch forward, then every micro-batch backward: a stage
    /// keeps all `M` micro-batches' incoming activations until its
    /// backwards.
    GPipe,
    /// One forward, one backward (PipeDream-flush, as Megatron-LM's
    /// non-interleaved schedule): stage `s` of `S` runs `min(S − 1 − s, M)`
    /// forwards first, then alternates, so it keeps at most `S − s`
    /// incoming activations. Same bubble as GPipe.
    #[default]
    OneFOneB,
}

impl Schedule {
    /// The schedule's name as the command line spells it.
    pub fn name(self) -> &'static str {
        match self {
            Schedule::GPipe => "gpipe",
            Schedule::OneFOneB => "1f1b",
        }
    }

    /// A stable number for the ranks' start-up agreement check.
    pub(crate) fn id(self) -> u64 {
        match self {
            Schedule::GPipe => 0,
            Schedule::OneFOneB => 1,
        }
    }
}

impl std::str::FromStr for Schedule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "gpipe" => Ok(Schedule::GPipe),
            "1f1b" => Ok(Schedule::OneFOneB),
            _ => Err(format!("unknown schedule `{s}` (expected gpipe or 1f1b)")),
        }
    }
}

/// One action of a stage: the forward or the backward of a micro-batch.
/// On the last stage a forward is forward and backward at once (the loss
/// is there), and a backward only passes the gradient back (GPipe).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Forward of micro-batch `m`.
    Forward(usize),
    /// Backward of micro-batch `m`.
    Backward(usize),
}

/// Stage `s`'s actions, of `stages`, over `micro` micro-batches.
pub fn plan(schedule: Schedule, s: usize, stages: usize, micro: usize) -> Vec<Action> {
    use Action::{Backward as B, Forward as F};
    match schedule {
        // The last stage passes each gradient back at once under 1F1B (its
        // predecessor is waiting for it), after every forward under GPipe
        // (its predecessor is still sending forwards: a blocking send each
        // way would deadlock once messages are too large to be buffered).
        Schedule::OneFOneB if s + 1 == stages => (0..micro).map(F).collect(),
        Schedule::GPipe => (0..micro).map(F).chain((0..micro).map(B)).collect(),
        Schedule::OneFOneB => {
            let warm = (stages - 1 - s).min(micro);
            let mut out: Vec<Action> = (0..warm).map(F).collect();
            for i in 0..micro - warm {
                out.push(F(warm + i));
                out.push(B(i));
            }
            out.extend((micro - warm..micro).map(B));
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::{Backward as B, Forward as F};

    #[test]
    fn one_f_one_b_warms_up_alternates_and_drains() {
        // 4 stages, 6 micro-batches: stage 0 runs 3 forwards first.
        assert_eq!(
            plan(Schedule::OneFOneB, 0, 4, 6),
            [
                F(0),
                F(1),
                F(2),
                F(3),
                B(0),
                F(4),
                B(1),
                F(5),
                B(2),
                B(3),
                B(4),
                B(5)
            ]
        );
        assert_eq!(
            plan(Schedule::OneFOneB, 2, 4, 3),
            [F(0), F(1), B(0), F(2), B(1), B(2)]
        );
        // Fewer micro-batches than the warm-up: forwards, then backwards.
        assert_eq!(plan(Schedule::OneFOneB, 0, 4, 2), [F(0), F(1), B(0), B(1)]);
        assert_eq!(plan(Schedule::OneFOneB, 3, 4, 2), [F(0), F(1)]);
        assert_eq!(plan(Schedule::GPipe, 0, 2, 2), [F(0), F(1), B(0), B(1)]);
    }

    #[test]
    fn every_plan_runs_each_micro_batch_once_and_backwards_in_order() {
        for schedule in [Schedule::GPipe, Schedule::OneFOneB] {
            for stages in 2..6 {
                for micro in 1..9 {
                    for s in 0..stages {
                        let p = plan(schedule, s, stages, micro);
                        let f: Vec<_> = p
                            .iter()
                            .filter_map(|a| match a {
                                F(m) => Some(*m),
                                B(_) => None,
                            })
                            .collect();
                        let b: Vec<_> = p
                            .iter()
                            .filter_map(|a| match a {
                                B(m) => Some(*m),
                                F(_) => None,
                            })
                            .collect();
                        assert_eq!(f, (0..micro).collect::<Vec<_>>());
                        if s + 1 < stages {
                            assert_eq!(b, f);
                        }
                        // A backward never precedes its forward.
                        for (k, a) in p.iter().enumerate() {
                            if let B(m) = a {
                                assert!(p[..k].contains(&F(*m)));
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn schedules_parse_by_name() {
        for s in [Schedule::GPipe, Schedule::OneFOneB] {
            assert_eq!(s.name().parse::<Schedule>(), Ok(s));
        }
        assert!("pipedream".parse::<Schedule>().is_err());
    }
}
