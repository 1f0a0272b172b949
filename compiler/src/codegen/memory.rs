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

/// A run of [`BLOCK`] buffers [`best_fit`] placed one after another.
struct Block {
    first: usize,
    last: usize,
    latest_start: usize,
    earliest_end: usize,
    union: Option<Vec<(usize, usize)>>,
}

/// The offset ranges of a run of placed buffers, merged where they overlap
/// or touch, in order.
fn union(run: &[(usize, usize, usize, usize)]) -> Vec<(usize, usize)> {
    let mut ranges: Vec<(usize, usize)> = run.iter().map(|&(_, _, s, e)| (s, e)).collect();
    ranges.sort_unstable();
    let mut out: Vec<(usize, usize)> = Vec::with_capacity(ranges.len());
    for (s, e) in ranges {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

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
    // Each placed buffer as `(start, end, offset, offset + size)`, side by
    // side in placement order, and the busy list's storage reused.
    let mut placed: Vec<(usize, usize, usize, usize)> = Vec::with_capacity(order.len());
    // Each run of `BLOCK` placed buffers: the steps it spans (first start,
    // last end), so that a buffer skips the runs it cannot overlap
    // (checking every placed buffer was quadratic in a deep model, most of
    // whose values live a few steps); the latest start and earliest end of
    // its members; and, once full, the union of its members' offset ranges.
    // A buffer that overlaps every member of a run in time takes the union
    // (a deep model's training step keeps tens of thousands of forward
    // values live across the whole backward pass, issue 22), which has the
    // same gaps, so the placement is the same.
    let mut blocks: Vec<Block> = Vec::new();
    let mut busy: Vec<(usize, usize)> = Vec::new();
    let mut size = 0;
    for b in order {
        busy.clear();
        for (run, block) in placed.chunks(BLOCK).zip(&blocks) {
            if block.first > b.end || b.start > block.last {
                continue;
            }
            // A union merges touching ranges, which hides the empty gap
            // between them a buffer of no elements could take.
            if b.size > 0 && block.latest_start <= b.end && b.start <= block.earliest_end {
                if let Some(union) = &block.union {
                    busy.extend_from_slice(union);
                    continue;
                }
            }
            busy.extend(
                run.iter()
                    .filter(|&&(start, end, _, _)| start <= b.end && b.start <= end)
                    .map(|&(_, _, off, off_end)| (off, off_end)),
            );
        }
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
            Some(block) if placed.len() % BLOCK != 0 => {
                block.first = block.first.min(b.start);
                block.last = block.last.max(b.end);
                block.latest_start = block.latest_start.max(b.start);
                block.earliest_end = block.earliest_end.min(b.end);
            }
            _ => blocks.push(Block {
                first: b.start,
                last: b.end,
                latest_start: b.start,
                earliest_end: b.end,
                union: None,
            }),
        }
        placed.push((b.start, b.end, offset, offset + b.size));
        if placed.len() % BLOCK == 0 {
            let run = &placed[placed.len() - BLOCK..];
            if let Some(block) = blocks.last_mut() {
                block.union = Some(union(run));
            }
        }
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
