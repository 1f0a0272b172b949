//! What a pipeline step costs: [`PipelineReport`], and the process's peak
//! resident set it carries.

use super::Schedule;

/// What a run of the schedule costs, per step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PipelineReport {
    /// Stages of the pipeline.
    pub stages: usize,
    /// Micro-batches per step.
    pub micro_batches: usize,
    /// The schedule that ran.
    pub schedule: Schedule,
    /// The schedule's bubble: the fraction of a stage's time slots idle in
    /// one step, `(S − 1) / (M + S − 1)` for GPipe and 1F1B alike with `S`
    /// stages and `M` micro-batches of equal cost.
    pub bubble: f64,
    /// Bytes this rank's stages passed on across stage boundaries in the
    /// last step: the activations of its non-last stages, forward, and the
    /// incoming-activation gradients of its non-first stages, back (summed
    /// over ranks: every boundary's traffic, once).
    pub bytes_per_step: u64,
    /// Of those, the bytes sent to other ranks (none on one process).
    pub bytes_sent_by_rank: u64,
    /// The most bytes of activations and activation gradients this rank's
    /// stages held at once between actions of the last step (incoming
    /// activations awaiting their backward, gradients awaiting their
    /// send or use): GPipe holds every micro-batch's, 1F1B at most
    /// `S − s` on stage `s`.
    pub peak_stash_bytes: u64,
    /// Bytes of this rank's parameters, gradients (the model's and the
    /// step's sum) and optimizer state: what splitting the network into
    /// stages divides.
    pub state_bytes: u64,
    /// Replicas of the pipeline (hybrid data × pipeline parallelism; 1
    /// without).
    pub replicas: usize,
    /// Bytes this rank all-reduced across replicas in the last step: its
    /// stages' gradients and the loss (0 without replicas).
    pub bytes_all_reduced: u64,
    /// The process's peak resident set (`VmHWM` of `/proc/self/status`)
    /// when the report was taken: what the rank's memory really peaked
    /// at, code, data set and buffers included (`None` where the kernel
    /// does not say, off Linux).
    pub peak_rss_bytes: Option<u64>,
}

/// This process's peak resident set size in bytes so far (`VmHWM` of
/// `/proc/self/status`), or `None` where it cannot be read (off Linux).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(target_os = "linux")]
    fn the_peak_resident_set_is_at_least_a_buffer_just_touched() {
        let buf = vec![1u8; 8 << 20];
        let peak = super::peak_rss_bytes().expect("Linux reports VmHWM");
        assert!(peak >= buf.len() as u64, "{peak}");
        assert!(buf.iter().all(|&b| b == 1));
    }
}
