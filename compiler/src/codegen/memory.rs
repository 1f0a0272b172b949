//! Memory planning: liveness intervals over a fixed schedule, then offsets
//! in one arena by decreasing-size best fit (the heap-simulator approach of
//! XLA's buffer assignment and TFLite's arena planner).
//!
//! Values whose size scales with the batch and values that do not are
//! planned in two regions: the fixed region, in elements, and the
//! per-sample region, in elements per sample, placed after it and scaled by
//! the maximum batch at run time. Because every batch-scaled value grows in
//! proportion, one plan is right for every batch size.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

/// One value to place: its size and the schedule steps it is live in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buffer {
    /// An identifier for the caller (the node index).
    pub id: usize,
    /// Elements (per sample when `batched`).
    pub size: usize,
    /// Whether the size is per sample of the batch.
    pub batched: bool,
    /// The step that writes it.
    pub start: usize,
    /// The last step that reads it (inclusive).
    pub end: usize,
}

impl Buffer {
    fn overlaps_in_time(&self, o: &Buffer) -> bool {
        self.start <= o.end && o.start <= self.end
    }
}

/// Offsets for every buffer, with the sizes that matter for reports.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// Offset of each buffer within its region, by id.
    pub offsets: HashMap<usize, usize>,
    /// Size of the fixed region (elements).
    pub fixed: usize,
    /// Size of the per-sample region (elements per sample).
    pub per_sample: usize,
    /// Lower bound of the fixed region: the most elements live at once.
    pub fixed_bound: usize,
    /// Lower bound of the per-sample region.
    pub per_sample_bound: usize,
    /// What every buffer in its own region would take (fixed, per sample).
    pub naive: (usize, usize),
}

impl Plan {
    /// Total elements for a batch size.
    pub fn elements(&self, batch: usize) -> usize {
        self.fixed + self.per_sample * batch
    }

    /// The lower bound in elements for a batch size.
    pub fn bound(&self, batch: usize) -> usize {
        self.fixed_bound + self.per_sample_bound * batch
    }

    /// The naive size in elements for a batch size.
    pub fn naive_elements(&self, batch: usize) -> usize {
        self.naive.0 + self.naive.1 * batch
    }
}

/// Plans both regions.
pub fn plan(buffers: &[Buffer]) -> Plan {
    let mut out = Plan::default();
    for batched in [false, true] {
        let region: Vec<Buffer> = buffers
            .iter()
            .filter(|b| b.batched == batched)
            .copied()
            .collect();
        let (size, bound) = best_fit(&region, &mut out.offsets);
        let naive: usize = region.iter().map(|b| b.size).sum();
        if batched {
            out.per_sample = size;
            out.per_sample_bound = bound;
            out.naive.1 = naive;
        } else {
            out.fixed = size;
            out.fixed_bound = bound;
            out.naive.0 = naive;
        }
    }
    out
}

/// How many placed buffers [`best_fit`] skips at once when none of them
/// can overlap the one being placed.
const BLOCK: usize = 64;

/// Places one region's buffers, largest first, each in the smallest gap
/// between buffers live at the same time that fits it. Returns the region's
/// size and its lower bound (the peak of live elements over time).
fn best_fit(buffers: &[Buffer], offsets: &mut HashMap<usize, usize>) -> (usize, usize) {
    let mut order: Vec<&Buffer> = buffers.iter().collect();
    order.sort_by(|a, b| {
        b.size
            .cmp(&a.size)
            .then(a.start.cmp(&b.start))
            .then(a.id.cmp(&b.id))
    });
    let mut placed: Vec<(&Buffer, usize)> = Vec::new();
    // The steps each run of `BLOCK` placed buffers spans (first start, last
    // end), so that a buffer skips the runs it cannot overlap: checking
    // every placed buffer was quadratic in a deep model, most of whose
    // values live a few steps. The busy list is the same.
    let mut blocks: Vec<(usize, usize)> = Vec::new();
    let mut size = 0;
    for b in order {
        let mut busy: Vec<(usize, usize)> = placed
            .chunks(BLOCK)
            .zip(&blocks)
            .filter(|(_, &(first, last))| first <= b.end && b.start <= last)
            .flat_map(|(run, _)| run)
            .filter(|(o, _)| o.overlaps_in_time(b))
            .map(|(o, off)| (*off, off + o.size))
            .collect();
        busy.sort_unstable();
        let mut best: Option<(usize, usize)> = None; // (gap size, offset)
        let mut cursor = 0;
        for &(s, e) in &busy {
            if s >= cursor + b.size {
                let gap = s - cursor;
                if best.is_none_or(|(g, _)| gap < g) {
                    best = Some((gap, cursor));
                }
            }
            cursor = cursor.max(e);
        }
        let offset = best.map_or(cursor, |(_, off)| off);
        offsets.insert(b.id, offset);
        size = size.max(offset + b.size);
        match blocks.last_mut() {
            Some(span) if placed.len() % BLOCK != 0 => {
                *span = (span.0.min(b.start), span.1.max(b.end));
            }
            _ => blocks.push((b.start, b.end)),
        }
        placed.push((b, offset));
    }
    // The peak of live elements, by differences: a value live from the
    // first step to the last (a forward activation the backward pass reads)
    // costs two entries, not one per step, which was quadratic in a deep
    // chain.
    let steps = buffers.iter().map(|b| b.end + 2).max().unwrap_or(0);
    let mut delta = vec![0isize; steps];
    for b in buffers.iter().filter(|b| b.start <= b.end) {
        delta[b.start] += b.size as isize;
        delta[b.end + 1] -= b.size as isize;
    }
    let peak = delta
        .into_iter()
        .scan(0isize, |live, d| {
            *live += d;
            Some(*live)
        })
        .max()
        .unwrap_or(0);
    (size, peak.max(0) as usize)
}

/// Checks a plan: no two buffers live at the same time share an element,
/// every buffer lies inside its region, and no buffer is read before the
/// step that writes it.
pub fn verify(buffers: &[Buffer], plan: &Plan) -> Result<(), String> {
    for b in buffers {
        if b.start > b.end {
            return Err(format!(
                "buffer {} is read (step {}) before it is written (step {})",
                b.id, b.end, b.start
            ));
        }
        let off = *plan
            .offsets
            .get(&b.id)
            .ok_or_else(|| format!("buffer {} has no offset", b.id))?;
        let limit = if b.batched {
            plan.per_sample
        } else {
            plan.fixed
        };
        if off + b.size > limit {
            return Err(format!(
                "buffer {} ends at {} past its region's {limit}",
                b.id,
                off + b.size
            ));
        }
    }
    // Sweep over time: at each step, retire what died before it, then add
    // what it writes, checking each against its neighbours in the region
    // by offset (live buffers are disjoint, so neighbours suffice):
    // O(n log n), where comparing every pair was quadratic.
    let mut order: Vec<&Buffer> = buffers.iter().filter(|b| b.size > 0).collect();
    order.sort_by_key(|b| (b.start, b.id));
    let mut ends: BinaryHeap<Reverse<(usize, usize)>> = BinaryHeap::new();
    // (batched, offset) → (end offset, id) of each live buffer.
    let mut live: BTreeMap<(bool, usize), (usize, usize)> = BTreeMap::new();
    let overlap = |a: usize, a_end: usize, a_id: usize, b: usize, b_end: usize, b_id: usize| {
        format!(
            "buffers {a_id} [{a}, {a_end}) and {b_id} [{b}, {b_end}) are live at the same time and overlap"
        )
    };
    for (k, b) in order.iter().enumerate() {
        while let Some(&Reverse((end, j))) = ends.peek() {
            if end >= b.start {
                break;
            }
            ends.pop();
            let d = order[j];
            live.remove(&(d.batched, plan.offsets[&d.id]));
        }
        let off = plan.offsets[&b.id];
        let end = off + b.size;
        let key = (b.batched, off);
        if let Some((&(_, o), &(o_end, o_id))) = live
            .range(..=key)
            .next_back()
            .filter(|(k, _)| k.0 == b.batched)
        {
            if o_end > off {
                return Err(overlap(o, o_end, o_id, off, end, b.id));
            }
        }
        if let Some((&(_, o), &(o_end, o_id))) = live
            .range((b.batched, off)..)
            .next()
            .filter(|(k, _)| k.0 == b.batched)
        {
            if o < end {
                return Err(overlap(o, o_end, o_id, off, end, b.id));
            }
        }
        live.insert(key, (end, b.id));
        ends.push(Reverse((b.end, k)));
    }
    Ok(())
}
