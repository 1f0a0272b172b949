//! Memory planning: on random buffer sets the plan never overlaps two
//! buffers live at once and never beats the lower bound; on the MNIST
//! training step it reaches the targets of the fusion-and-planning issue.

use nnc_compiler::codegen::memory::{plan, verify, Buffer, Plan};
use nnc_compiler::codegen::Options;
use nnc_compiler::driver::stats;
use nnc_compiler::ir::OptLevel;
use nnc_compiler::{check_source, SourceFile};
use proptest::prelude::*;

fn buffers() -> impl Strategy<Value = Vec<Buffer>> {
    prop::collection::vec((1usize..64, any::<bool>(), 0usize..20, 0usize..6), 1..40).prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(id, (size, batched, start, len))| Buffer {
                id,
                size,
                batched,
                start,
                end: start + len,
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn plans_are_valid_and_bounded(bufs in buffers()) {
        let p: Plan = plan(&bufs);
        prop_assert!(verify(&bufs, &p).is_ok(), "{:?}", verify(&bufs, &p));
        prop_assert!(p.fixed >= p.fixed_bound && p.per_sample >= p.per_sample_bound);
        prop_assert!(p.fixed <= p.naive.0 && p.per_sample <= p.naive.1);
    }
}

/// Many buffers (several runs of the planner's blocks), many of one size
/// and long-lived, as in a deep model's training step.
fn many_buffers() -> impl Strategy<Value = Vec<Buffer>> {
    // A long-lived buffer is written in the first half of the steps and
    // read in the second, nested in the others like a forward value the
    // backward pass reads.
    let one = (
        0usize..5,
        any::<bool>(),
        0usize..80,
        0usize..80,
        any::<bool>(),
    );
    prop::collection::vec(one, 60..400).prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(id, (size, batched, start, len, long))| Buffer {
                id,
                size: size * 16,
                batched,
                start,
                end: if long { 200 - start } else { start + len },
            })
            .collect()
    })
}

/// Best fit as documented, checking every placed buffer: largest first
/// (then earliest start, then id), each at the start of the smallest gap
/// between the buffers already placed that are live at the same time, or
/// above them all. Returns the offsets and the region's size.
fn reference_best_fit(buffers: &[Buffer]) -> (std::collections::HashMap<usize, usize>, usize) {
    let mut order: Vec<&Buffer> = buffers.iter().collect();
    order.sort_by_key(|b| (std::cmp::Reverse(b.size), b.start, b.id));
    let mut placed: Vec<(&Buffer, usize)> = Vec::new();
    let mut offsets = std::collections::HashMap::new();
    let mut size = 0;
    for b in order {
        let mut busy: Vec<(usize, usize)> = placed
            .iter()
            .filter(|(o, _)| o.start <= b.end && b.start <= o.end)
            .map(|(o, off)| (*off, off + o.size))
            .collect();
        busy.sort();
        let mut best: Option<(usize, usize)> = None;
        let mut cursor = 0;
        for (s, e) in busy {
            if s >= cursor + b.size && best.is_none_or(|(g, _)| s - cursor < g) {
                best = Some((s - cursor, cursor));
            }
            cursor = cursor.max(e);
        }
        let offset = best.map_or(cursor, |(_, off)| off);
        offsets.insert(b.id, offset);
        size = size.max(offset + b.size);
        placed.push((b, offset));
    }
    (offsets, size)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    /// The planner's shortcuts (skipping runs of placed buffers, taking a
    /// run's merged ranges) place every buffer where checking each placed
    /// buffer would.
    #[test]
    fn plans_equal_the_reference_best_fit(bufs in many_buffers()) {
        let p: Plan = plan(&bufs);
        for batched in [false, true] {
            let region: Vec<Buffer> = bufs.iter().filter(|b| b.batched == batched).copied().collect();
            let (offsets, size) = reference_best_fit(&region);
            for b in &region {
                prop_assert_eq!(p.offsets[&b.id], offsets[&b.id], "buffer {}", b.id);
            }
            prop_assert_eq!(if batched { p.per_sample } else { p.fixed }, size);
        }
    }
}

#[test]
fn the_verifier_catches_overlap_and_reads_before_writes() {
    let a = Buffer {
        id: 0,
        size: 4,
        batched: false,
        start: 0,
        end: 2,
    };
    let b = Buffer {
        id: 1,
        size: 4,
        batched: false,
        start: 1,
        end: 3,
    };
    let mut p = plan(&[a, b]);
    assert!(verify(&[a, b], &p).is_ok());
    p.offsets.insert(1, 2);
    p.fixed = 6;
    let e = verify(&[a, b], &p).unwrap_err();
    assert_eq!(
        e,
        "buffers 0 [0, 4) and 1 [2, 6) are live at the same time and overlap"
    );
    let backwards = Buffer {
        id: 2,
        size: 1,
        batched: false,
        start: 5,
        end: 4,
    };
    let e = verify(&[backwards], &plan(&[])).unwrap_err();
    assert_eq!(e, "buffer 2 is read (step 4) before it is written (step 5)");
}

/// Buffers that never live together share the arena; ones that do, do not.
#[test]
fn disjoint_lifetimes_share_space() {
    let bufs = [
        Buffer {
            id: 0,
            size: 10,
            batched: true,
            start: 0,
            end: 1,
        },
        Buffer {
            id: 1,
            size: 10,
            batched: true,
            start: 2,
            end: 3,
        },
        Buffer {
            id: 2,
            size: 5,
            batched: true,
            start: 1,
            end: 2,
        },
    ];
    let p = plan(&bufs);
    assert_eq!((p.per_sample, p.per_sample_bound, p.naive.1), (15, 15, 25));
    assert_eq!(p.offsets[&0], p.offsets[&1]);
}

fn mnist() -> (SourceFile, nnc_compiler::Module) {
    let path = format!(
        "{}/../examples/models/mnist_mlp.nn",
        env!("CARGO_MANIFEST_DIR")
    );
    let src = SourceFile::new("mnist_mlp.nn", std::fs::read_to_string(path).unwrap());
    let module = check_source(&src).unwrap();
    (src, module)
}

#[test]
fn mnist_training_step_meets_the_planning_targets() {
    let (_, module) = mnist();
    let net = &module.networks[0];
    let cfg = module.train_config(&net.name);
    let s = stats(net, &cfg, &Options::default()).unwrap();
    assert_eq!(s.batch, 128);
    assert!(s.planned_bytes * 2 <= s.naive_bytes, "{s:?}");
    // Issue target: at most 60% of the -O0 kernels.
    assert!(s.kernels.1 * 10 <= s.kernels.0 * 6, "{s:?}");
    assert!(
        s.planned_bytes as f64 <= 1.1 * s.lower_bound_bytes as f64,
        "{s:?}"
    );
    let o0 = Options {
        opt_level: OptLevel::O0,
        ..Options::default()
    };
    let s0 = stats(net, &cfg, &o0).unwrap();
    assert_eq!(
        s0.planned_bytes, s0.naive_bytes,
        "-O0 keeps every value apart"
    );
}

/// Fusion folds elementwise producers into their consumer's loop and says
/// why every other elementwise node stays its own kernel.
#[test]
fn fusion_is_explained_and_reduces_kernels() {
    let (src, module) = mnist();
    let net = &module.networks[0];
    let cfg = module.train_config(&net.name);
    let text = nnc_compiler::driver::explain_fusion(&src, net, &cfg, &Options::default()).unwrap();
    // The bias add of each hidden layer runs inside its relu's loop.
    assert!(
        text.contains("fused: node 6 (relu) computes nodes 5 in one loop"),
        "{text}"
    );
    assert!(
        text.contains("fused: node 11 (relu) computes nodes 10 in one loop"),
        "{text}"
    );
    // Each dense layer's product runs with the bias add (and relu) as its
    // epilogue, in the forward and the backward pass (the relu mask).
    for (root, product) in [(6, 3), (11, 8), (15, 13)] {
        assert!(
            text.contains(&format!("fused: node {root} ("))
                && text.contains(&format!("run as the epilogue of node {product} (matmul)")),
            "{text}"
        );
    }
    assert_eq!(text.matches("run as the epilogue").count(), 5, "{text}");
    // The logits feed the loss, its gradient and the softmax output.
    assert!(
        text.contains("not fused: node 15 (add, mnist_mlp.nn:10:14): it has 3 uses; fusing would recompute it"),
        "{text}"
    );
    // Weight gradients are read after the step: their products stay alone.
    assert!(
        text.contains("matmul, mnist_mlp.nn:8:14): its value is read after the step"),
        "{text}"
    );
    for line in text.lines().filter(|l| l.contains("not fused")) {
        assert!(
            line.split("): ").nth(1).is_some_and(|r| !r.is_empty()),
            "no reason: {line}"
        );
    }
    let o2 = stats(net, &cfg, &Options::default()).unwrap();
    let o1 = stats(
        net,
        &cfg,
        &Options {
            opt_level: OptLevel::O1,
            ..Options::default()
        },
    )
    .unwrap();
    assert!(
        o2.kernels.1 < o1.kernels.1,
        "fusion removes kernels: {o1:?} {o2:?}"
    );
    let none = nnc_compiler::driver::explain_fusion(
        &src,
        net,
        &cfg,
        &Options {
            opt_level: OptLevel::O1,
            ..Options::default()
        },
    )
    .unwrap();
    assert!(
        none.starts_with("MnistMlp: 0 nodes fused into 0 loops"),
        "{none}"
    );
}
