//! Pipeline stages (`stages:`, issue #24) on one process: the two stage
//! networks the compiler generates for `examples/models/mnist_pipeline.nn`
//! (cut after `h1`), trained by the GPipe driver
//! (`nnc_runtime::pipeline`) with every stage local, against the unstaged
//! network trained on whole batches with the same optimizer: the same
//! losses and parameters after 10 Adam steps, to float precision (the
//! batch's sums are split by micro-batch, so not bit for bit). The same
//! driver on two MPI ranks is checked by the MNIST example's
//! `tests/mpi.rs`.

use nnc::runtime::collective::{Collective, Local, Threads};
use nnc::runtime::pipeline::{init_stage, micro_ranges, Pipeline, PipelineError, Schedule};
use nnc::runtime::{Batch, Model, StepError};

mod support;
use support::{
    assert_matches_whole, assert_resumes_bit_for_bit, assert_same_slices, mnist_batches,
    train_whole, TempDir,
};

mod mnist_pipeline {
    nnc::include_model!("mnist_pipeline");
}
use mnist_pipeline::{MnistPipeline, MnistPipelineStage0, MnistPipelineStage1};
mod mnist_pipeline4 {
    nnc::include_model!("mnist_pipeline4");
}
use mnist_pipeline4::{
    MnistPipeline4, MnistPipeline4Stage0, MnistPipeline4Stage1, MnistPipeline4Stage2,
    MnistPipeline4Stage3,
};

/// Copies `whole`'s parameters into the stage's, by name.
fn copy_params(whole: &dyn Model, stage: &mut dyn Model) {
    let specs = stage.spec().params.to_vec();
    for p in specs {
        let from = whole
            .spec()
            .params
            .iter()
            .find(|q| q.name == p.name)
            .expect("every stage parameter is the network's");
        let src = whole.params()[from.range()].to_vec();
        stage.params_mut()[p.range()].copy_from_slice(&src);
    }
}

/// The stages' parameters laid out as the whole network's.
fn gather_params(whole: &dyn Model, stages: &[&dyn Model]) -> Vec<f32> {
    let mut out = vec![f32::NAN; whole.spec().param_count];
    for s in stages {
        for p in s.spec().params.iter() {
            let to = whole
                .spec()
                .params
                .iter()
                .find(|q| q.name == p.name)
                .unwrap();
            out[to.range()].copy_from_slice(&s.params()[p.range()]);
        }
    }
    assert!(out.iter().all(|v| v.is_finite()), "a parameter in no stage");
    out
}

/// Random images and labels for `steps` batches of `batch`.
fn data(batch: usize, steps: usize) -> (Vec<Vec<f32>>, Vec<Vec<u32>>) {
    mnist_batches(7, batch, steps)
}

/// A run's losses and final parameters.
type Run = (Vec<f32>, Vec<f32>);

/// Trains `steps` Adam steps both ways; returns the losses and final
/// parameters of the whole network and of the pipeline.
fn train_both(batch: usize, micro: usize, steps: usize) -> (Run, Run) {
    let (images, labels) = data(batch, steps);
    let mut whole = MnistPipeline::new(batch);
    whole.init_params(42).unwrap();
    let lr = whole.spec().train.lr;
    let mut s0 = MnistPipelineStage0::new(batch);
    let mut s1 = MnistPipelineStage1::new(batch);
    copy_params(&whole, &mut s0);
    copy_params(&whole, &mut s1);
    let whole_losses = train_whole(&mut whole, &images, &labels);

    let mut pipe_losses = Vec::new();
    let pipe_params = {
        let mut pipe =
            Pipeline::with_schedule(vec![&mut s0, &mut s1], 2, micro, Schedule::GPipe, &Local)
                .unwrap();
        for (x, y) in images.iter().zip(&labels) {
            let loss = pipe
                .step(&[("image", x)], &[("digit", y)], batch, lr)
                .unwrap()
                .expect("one process holds the last stage");
            pipe_losses.push(loss);
        }
        let report = pipe.report();
        let expect_bubble = 1.0 / (micro as f64 + 1.0);
        assert!((report.bubble - expect_bubble).abs() < 1e-12, "{report:?}");
        // h1 forward and its gradient back: 128 floats a sample each way.
        assert_eq!(report.bytes_per_step, (2 * batch * 128 * 4) as u64);
        assert_eq!(report.bytes_sent_by_rank, 0, "one process sends nothing");
        gather_params(&whole, &pipe.models())
    };
    (
        (whole_losses, whole.params().to_vec()),
        (pipe_losses, pipe_params),
    )
}

#[test]
fn two_stages_equal_the_whole_network_after_10_adam_steps() {
    for (batch, micro) in [(64, 4), (50, 3), (32, 1)] {
        let ((wl, wp), (pl, pp)) = train_both(batch, micro, 10);
        assert_matches_whole(
            &format!("batch {batch}, {micro} micro-batches"),
            (&wl, &wp),
            (&pl, &pp),
        );
        // And training moved them: the comparison is not vacuous.
        assert!(wl[0] > wl[9], "losses {wl:?}");
    }
}

#[test]
fn micro_batches_cover_the_batch_in_order() {
    assert_eq!(micro_ranges(10, 3), vec![0..4, 4..7, 7..10]);
    assert_eq!(micro_ranges(2, 4), vec![0..1, 1..2]);
    assert_eq!(micro_ranges(8, 1), vec![0..8]);
}

#[test]
fn stages_in_the_wrong_order_are_a_layout_error() {
    let mut s0 = MnistPipelineStage0::new(8);
    let mut s1 = MnistPipelineStage1::new(8);
    let err = Pipeline::new(vec![&mut s1, &mut s0], 2, 2, &Local)
        .err()
        .expect("stage 1 given first");
    assert!(matches!(err, PipelineError::Layout(_)), "{err}");
    let mut s0 = MnistPipelineStage0::new(8);
    let err = Pipeline::new(vec![&mut s0], 2, 2, &Local)
        .err()
        .expect("a stage missing");
    assert!(
        err.to_string().contains("one process holds every stage"),
        "{err}"
    );
}

#[test]
fn only_stage_networks_have_train_step_backprop() {
    let mut whole = MnistPipeline::new(4);
    assert!(whole.backprop_inputs().is_empty());
    let x = vec![0.0; 4 * 784];
    let y = vec![0u32; 4];
    let err = whole
        .train_step_backprop(
            &Batch {
                inputs: &[&x],
                labels: &[&y],
            },
            &mut [],
        )
        .unwrap_err();
    assert!(matches!(err, StepError::NotGenerated { .. }), "{err}");
    let s1 = MnistPipelineStage1::new(4);
    assert_eq!(s1.backprop_inputs(), &["h1"]);
}

#[test]
fn a_stage_initialised_alone_equals_its_part_of_the_whole_network() {
    // `init_stage` replays the whole network's initialisation stream,
    // skipping the other stages' parameters: a rank builds its stage only.
    let mut whole = MnistPipeline4::new(4);
    whole.init_params(42).unwrap();
    let whole_spec = whole.spec();
    let mut stages: Vec<Box<dyn Model>> = vec![
        Box::new(MnistPipeline4Stage0::new(4)),
        Box::new(MnistPipeline4Stage1::new(4)),
        Box::new(MnistPipeline4Stage2::new(4)),
        Box::new(MnistPipeline4Stage3::new(4)),
    ];
    for stage in &mut stages {
        init_stage(whole_spec, 42, &mut **stage).unwrap();
        let mut copied = vec![0.0; stage.spec().param_count];
        for p in stage.spec().params.iter() {
            let from = whole_spec.params.iter().find(|q| q.name == p.name).unwrap();
            copied[p.range()].copy_from_slice(&whole.params()[from.range()]);
        }
        assert_eq!(bits(stage.params()), bits(&copied), "{}", stage.spec().name);
    }
    // A stage of another network (same names, other shapes) is refused.
    let mut other = MnistPipelineStage0::new(4);
    let err = init_stage(whole_spec, 42, &mut other).unwrap_err();
    assert!(
        err.to_string()
            .contains("is no parameter of `MnistPipeline4`"),
        "{err}"
    );
}

/// Trains the four stages of `mnist_pipeline4.nn` on one process for
/// `steps` Adam steps under `schedule`; returns the losses, the stages'
/// parameters laid out as the whole network's, and the last report.
fn train_four(
    batch: usize,
    micro: usize,
    steps: usize,
    schedule: Schedule,
) -> (Vec<f32>, Vec<f32>, nnc::runtime::pipeline::PipelineReport) {
    let (images, labels) = data(batch, steps);
    let mut whole = MnistPipeline4::new(batch);
    whole.init_params(42).unwrap();
    let lr = whole.spec().train.lr;
    let (mut s0, mut s1, mut s2, mut s3) = (
        MnistPipeline4Stage0::new(batch),
        MnistPipeline4Stage1::new(batch),
        MnistPipeline4Stage2::new(batch),
        MnistPipeline4Stage3::new(batch),
    );
    let mut stages: [&mut dyn Model; 4] = [&mut s0, &mut s1, &mut s2, &mut s3];
    for s in stages.iter_mut() {
        copy_params(&whole, &mut **s);
    }
    let mut pipe = Pipeline::with_schedule(stages.into(), 4, micro, schedule, &Local).unwrap();
    let losses = images
        .iter()
        .zip(&labels)
        .map(|(x, y)| {
            pipe.step(&[("image", x)], &[("digit", y)], batch, lr)
                .unwrap()
                .unwrap()
        })
        .collect();
    let params = gather_params(&whole, &pipe.models());
    (losses, params, pipe.report())
}

#[test]
fn one_f_one_b_equals_gpipe_bit_for_bit_and_holds_fewer_activations() {
    let (batch, micro) = (64, 8);
    let (l1, p1, r1) = train_four(batch, micro, 4, Schedule::OneFOneB);
    let (l2, p2, r2) = train_four(batch, micro, 4, Schedule::GPipe);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&l1), bits(&l2), "losses");
    assert_eq!(bits(&p1), bits(&p2), "parameters");
    // (Random labels: 4 steps need not lower the loss; the whole-network
    // comparison below checks that the four stages train.)
    assert!(l1.iter().all(|l| l.is_finite()), "{l1:?}");
    // Same bubble, (S − 1)/(M + S − 1) = 3/11; same traffic: h1, h2, h3
    // forward and back, (16 + 768 + 32) floats a sample each way.
    assert_eq!(r1.bubble, 3.0 / 11.0);
    assert_eq!(r1.bubble, r2.bubble);
    assert_eq!(r1.bytes_per_step, (2 * batch * (16 + 768 + 32) * 4) as u64);
    assert_eq!(r1.bytes_per_step, r2.bytes_per_step);
    assert_eq!(r1.state_bytes, r2.state_bytes);
    // GPipe holds every micro-batch's incoming activation on stages 1 and
    // 2 (and stage 3's gradients back) at its peak; 1F1B at most a few per
    // stage. 8 samples a micro-batch.
    let per_micro = (8 * (16 + 768) * 4) as u64;
    assert!(r2.peak_stash_bytes >= micro as u64 * per_micro, "{r2:?}");
    assert!(
        r1.peak_stash_bytes < r2.peak_stash_bytes / 2,
        "{r1:?} vs {r2:?}"
    );
}

#[test]
fn four_stages_equal_the_whole_network_after_10_adam_steps() {
    let (batch, micro, steps) = (48, 5, 10);
    let (pl, pp, _) = train_four(batch, micro, steps, Schedule::OneFOneB);
    let (images, labels) = data(batch, steps);
    let mut whole = MnistPipeline4::new(batch);
    whole.init_params(42).unwrap();
    let wl = train_whole(&mut whole, &images, &labels);
    assert_matches_whole("4 stages", (&wl, whole.params()), (&pl, &pp));
}

mod mnist_pipeline_h2 {
    nnc::include_model!("mnist_pipeline_h2");
}

#[test]
fn every_stage_carries_the_same_layout_hash_and_another_cut_another() {
    let (s0, s1) = (MnistPipelineStage0::new(4), MnistPipelineStage1::new(4));
    let h = s0.layout_hash();
    assert_ne!(h, 0, "a stage without a layout hash");
    assert_eq!(s1.layout_hash(), h);
    assert_eq!(MnistPipeline::new(4).layout_hash(), 0, "not a stage");
    assert_ne!(MnistPipeline4Stage0::new(4).layout_hash(), h);
    let other = mnist_pipeline_h2::MnistPipelineStage1::new(4);
    assert_ne!(other.layout_hash(), h);
    // One process given stages of two layouts refuses them.
    let mut s0 = MnistPipelineStage0::new(4);
    let mut other = mnist_pipeline_h2::MnistPipelineStage1::new(4);
    let err = Pipeline::new(vec![&mut s0, &mut other], 2, 2, &Local)
        .err()
        .expect("stages of two layouts");
    assert!(
        err.to_string().contains("differently compiled pipelines"),
        "{err}"
    );
}

#[test]
fn a_rank_with_another_stage_layout_stops_every_rank_naming_it() {
    // Two ranks as threads: rank 1 holds stage 1 of the same network cut
    // after h2 instead of h1. Its name and its incoming activation's width
    // (128) are the original's; the layout hash differs.
    let errors: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = Threads::group(2)
            .into_iter()
            .map(|comm| {
                s.spawn(move || {
                    let mut s0 = MnistPipelineStage0::new(8);
                    let mut other = mnist_pipeline_h2::MnistPipelineStage1::new(8);
                    let local: Vec<&mut dyn Model> = match comm.rank() {
                        0 => vec![&mut s0],
                        _ => vec![&mut other],
                    };
                    match Pipeline::new(local, 2, 2, &comm) {
                        Ok(_) => String::new(),
                        Err(e) => e.to_string(),
                    }
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (rank, e) in errors.iter().enumerate() {
        assert!(
            e.starts_with("ranks disagree: rank 1 has stage layout hash "),
            "rank {rank}: {e}"
        );
    }
}

/// What one thread rank of [`train_replicas`] trained: its replica, its
/// losses (on the last stage) and its stages' parameters by name.
type Replica = (usize, Vec<f32>, Vec<(String, Vec<f32>)>);

/// Trains 2 replicas of the two stages of `mnist_pipeline.nn` for `steps`
/// Adam steps as threads of this process: on 2 × 2 ranks (`chains`: each
/// replica's two stages on two ranks) or 2 × 1 (each replica holding both
/// stages). Returns replica 0's losses and parameters (laid out as the
/// whole network's); checks every replica ends with the same.
fn train_replicas(batch: usize, micro: usize, steps: usize, chains: bool) -> (Vec<f32>, Vec<f32>) {
    let (images, labels) = data(batch, steps);
    let per = if chains { 2 } else { 1 };
    // Thread (replica k, pipeline rank p): chain k's rank p, stage group
    // p's rank k.
    let mut chain_groups: Vec<Vec<Threads>> = (0..2).map(|_| Threads::group(per)).collect();
    let mut stage_groups: Vec<Vec<Threads>> = (0..per).map(|_| Threads::group(2)).collect();
    let mut ranks = Vec::new();
    for k in (0..2).rev() {
        for p in (0..per).rev() {
            let chain = chain_groups[k].pop().unwrap();
            let group = stage_groups[p].pop().unwrap();
            ranks.push((chain, group));
        }
    }
    let results: Vec<Replica> = std::thread::scope(|s| {
        let hs: Vec<_> = ranks
            .into_iter()
            .map(|(chain, group)| {
                let (images, labels) = (&images, &labels);
                s.spawn(move || {
                    let mut whole = MnistPipeline::new(batch);
                    whole.init_params(42).unwrap();
                    let lr = whole.spec().train.lr;
                    let mut s0 = MnistPipelineStage0::new(batch);
                    let mut s1 = MnistPipelineStage1::new(batch);
                    copy_params(&whole, &mut s0);
                    copy_params(&whole, &mut s1);
                    let local: Vec<&mut dyn Model> = match (per, chain.rank()) {
                        (1, _) => vec![&mut s0, &mut s1],
                        (_, 0) => vec![&mut s0],
                        _ => vec![&mut s1],
                    };
                    let chain_ref: &dyn nnc::runtime::pipeline::PointToPoint =
                        if per == 1 { &Local } else { &chain };
                    let mut pipe = Pipeline::replicated(
                        local,
                        2,
                        micro,
                        Schedule::OneFOneB,
                        chain_ref,
                        &group,
                    )
                    .unwrap();
                    let losses: Vec<f32> = images
                        .iter()
                        .zip(labels)
                        .filter_map(|(x, y)| {
                            pipe.step(&[("image", x)], &[("digit", y)], batch, lr)
                                .unwrap()
                        })
                        .collect();
                    let r = pipe.report();
                    assert_eq!(r.replicas, 2);
                    assert!(r.bytes_all_reduced > 0);
                    let params = pipe
                        .models()
                        .iter()
                        .map(|m| (m.spec().name.to_string(), m.params().to_vec()))
                        .collect();
                    (group.rank(), losses, params)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut whole = MnistPipeline::new(batch);
    let mut losses = Vec::new();
    let mut by_replica: Vec<Vec<(String, Vec<f32>)>> = vec![Vec::new(); 2];
    for (k, l, p) in results {
        if !l.is_empty() {
            if losses.is_empty() {
                losses = l;
            } else {
                assert_eq!(bits(&losses), bits(&l), "the replicas' losses differ");
            }
        }
        by_replica[k].extend(p);
    }
    for r in &mut by_replica {
        r.sort_by(|a, b| a.0.cmp(&b.0));
    }
    for ((n0, p0), (n1, p1)) in by_replica[0].iter().zip(&by_replica[1]) {
        assert_eq!(n0, n1);
        assert_eq!(bits(p0), bits(p1), "{n0}: the replicas' parameters differ");
    }
    let mut s0 = MnistPipelineStage0::new(batch);
    let mut s1 = MnistPipelineStage1::new(batch);
    for (name, p) in &by_replica[0] {
        let m: &mut dyn Model = if name.ends_with("Stage0") {
            &mut s0
        } else {
            &mut s1
        };
        m.params_mut().copy_from_slice(p);
    }
    whole.init_params(42).unwrap();
    (losses, gather_params(&whole, &[&s0, &s1]))
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn two_replicas_of_a_pipeline_on_2_x_2_ranks_equal_2_x_1_bit_for_bit_and_the_whole_network() {
    let (batch, micro, steps) = (64, 2, 10);
    let (l4, p4) = train_replicas(batch, micro, steps, true);
    let (l2, p2) = train_replicas(batch, micro, steps, false);
    assert_eq!(bits(&l4), bits(&l2), "losses");
    assert_eq!(bits(&p4), bits(&p2), "parameters");
    let (images, labels) = data(batch, steps);
    let mut whole = MnistPipeline::new(batch);
    whole.init_params(42).unwrap();
    let wl = train_whole(&mut whole, &images, &labels);
    assert_matches_whole("2 replicas × 2 stages", (&wl, whole.params()), (&l4, &p4));
    assert!(wl[0] > wl[steps - 1], "losses {wl:?}");
}

/// Trains the two stages of `mnist_pipeline.nn` on one process over the
/// batches given, starting from `whole`'s parameters or, with `resume`,
/// from that sliced checkpoint (the stages then start from their
/// generated defaults, which the checkpoint must replace); saves into
/// `save`. Returns the losses and the stages' parameters laid out as the
/// whole network's.
fn train_stages(
    whole: &MnistPipeline,
    (batch, micro): (usize, usize),
    (images, labels): (&[Vec<f32>], &[Vec<u32>]),
    resume: Option<&std::path::Path>,
    save: &std::path::Path,
) -> (Vec<f32>, Vec<f32>) {
    let mut s0 = MnistPipelineStage0::new(batch);
    let mut s1 = MnistPipelineStage1::new(batch);
    if resume.is_none() {
        copy_params(whole, &mut s0);
        copy_params(whole, &mut s1);
    }
    let lr = whole.spec().train.lr;
    let mut pipe = Pipeline::new(vec![&mut s0, &mut s1], 2, micro, &Local).unwrap();
    if let Some(dir) = resume {
        pipe.load_checkpoint(dir).unwrap();
    }
    let losses = images
        .iter()
        .zip(labels)
        .map(|(x, y)| {
            pipe.step(&[("image", x)], &[("digit", y)], batch, lr)
                .unwrap()
                .unwrap()
        })
        .collect();
    pipe.save_checkpoint(save).unwrap();
    (losses, gather_params(whole, &pipe.models()))
}

#[test]
fn a_sliced_checkpoint_resumes_bit_for_bit_and_merges_into_the_whole_network() {
    use nnc::runtime::checkpoint::{load_training, load_weights, sliced, LoadOptions};
    let shape = (32, 4);
    let (images, labels) = data(shape.0, 10);
    let mut whole = MnistPipeline::new(shape.0);
    whole.init_params(42).unwrap();
    let tmp = TempDir::new("pipeline-ckpt");
    // 10 steps straight; 5, saved, a later save dying midway, then 5 more
    // from the slices.
    let (straight, p10) =
        assert_resumes_bit_for_bit(&tmp.0, (&images, &labels), &|data, resume, save| {
            train_stages(&whole, shape, data, resume, save)
        });
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let m = sliced::read_manifest(&straight).unwrap();
    assert_eq!((m.step, m.layout), (10, sliced::Layout::Stages(2)));

    // Merged: the whole network's ordinary checkpoint, the stages'
    // parameters bit for bit, loadable as `nnc eval` and `fit` load.
    let merged = tmp.0.join("merged.safetensors");
    sliced::merge(&straight, whole.spec(), &merged).unwrap();
    let mut fresh = MnistPipeline::new(shape.0);
    load_weights(&mut fresh, &merged, &LoadOptions::default()).unwrap();
    assert_eq!(bits(fresh.params()), bits(&p10));
    let spec = whole.spec();
    let mut buf = vec![0.0; spec.param_count];
    let hash = format!("{:016x}", spec.hash);
    let got = load_training(&merged, &spec.params, &mut buf, Some(&hash)).unwrap();
    assert_eq!(got.meta.step, 10);
    let opt = got.optimizer.unwrap();
    assert_eq!((opt.kind.as_str(), opt.step), ("adam", 10));
    // And split again: the same slices.
    let again = tmp.0.join("again");
    let (s0, s1) = (MnistPipelineStage0::new(1), MnistPipelineStage1::new(1));
    sliced::split(
        &merged,
        spec,
        sliced::Layout::Stages(2),
        &[vec![s0.spec()], vec![s1.spec()]],
        &again,
    )
    .unwrap();
    assert_same_slices(&straight, &again);
}

#[test]
fn a_sliced_checkpoint_of_another_layout_or_with_a_missing_slice_is_refused() {
    use nnc::runtime::checkpoint::sliced;
    let tmp = TempDir::new("pipeline-ckpt-bad");
    let dir = tmp.0.join("ckpt");
    let (images, labels) = data(8, 1);
    let mut whole = MnistPipeline::new(8);
    whole.init_params(1).unwrap();
    train_stages(&whole, (8, 2), (&images, &labels), None, &dir);
    // The four-stage network's pipeline refuses the two-stage checkpoint.
    let (mut a, mut b, mut c, mut d) = (
        MnistPipeline4Stage0::new(8),
        MnistPipeline4Stage1::new(8),
        MnistPipeline4Stage2::new(8),
        MnistPipeline4Stage3::new(8),
    );
    let local: Vec<&mut dyn Model> = vec![&mut a, &mut b, &mut c, &mut d];
    let mut pipe = Pipeline::new(local, 4, 2, &Local).unwrap();
    let err = pipe.load_checkpoint(&dir).unwrap_err().to_string();
    assert!(err.contains("manifest.txt"), "{err}");
    assert!(
        err.contains("`MnistPipeline` as 2 pipeline stages"),
        "{err}"
    );
    // Nor can it save over it.
    let err = pipe.save_checkpoint(&dir).unwrap_err().to_string();
    assert!(err.contains("manifest.txt"), "{err}");
    drop(pipe);
    // A missing slice: the error names the file.
    let m = sliced::read_manifest(&dir).unwrap();
    std::fs::remove_file(dir.join(m.file_name(1))).unwrap();
    let (mut s0, mut s1) = (MnistPipelineStage0::new(8), MnistPipelineStage1::new(8));
    let mut pipe = Pipeline::new(vec![&mut s0, &mut s1], 2, 2, &Local).unwrap();
    let err = pipe.load_checkpoint(&dir).unwrap_err().to_string();
    assert!(err.contains("stage-1.gen-1.safetensors"), "{err}");
    let err = sliced::merge(&dir, whole.spec(), &tmp.0.join("m.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("stage-1.gen-1.safetensors"), "{err}");
}
