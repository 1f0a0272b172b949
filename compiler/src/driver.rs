//! The pipeline, run in one place: text → `syntax` → `lower` → `autodiff` →
//! `passes` → `codegen`. Each stage takes the previous one's IR value and
//! returns its own; none calls another. The library entry points —
//! [`check_source`], the build-script API, the `nnc` binary, `nnc check`'s
//! report and the `network!` macro — all come through here.

use crate::codegen::{self, Emit, Input, Options, Stats};
use crate::diagnostic::{CompileError, Diagnostic, ErrorKind, SourceFile, Span};
use crate::ir::{GradOptions, Module, Network, OptLevel, TrainConfig, TrainingGraph};
use crate::passes::Pass;
use crate::{autodiff, lower, passes, syntax};
use nnc_spec::slices::{Layout as SliceLayout, Slicing, Table};
use proc_macro2::TokenStream;

/// Parses and lowers one source file into shape-checked networks and their
/// training configurations.
///
/// Every error found is returned, each with the span of the source it
/// concerns; the result never panics on malformed input.
///
/// A file without a network (empty, or only comments) is an error, the
/// same for every command: there is nothing to check, compile or draw.
pub fn check_source(source: &SourceFile) -> Result<Module, CompileError> {
    let ast = syntax::parse(&source.text)?;
    let module = lower::lower(&ast)?;
    if module.networks.is_empty() {
        return Err(Diagnostic::new(
            ErrorKind::Invalid,
            Span::new(0, 0),
            format!("no network in {}", source.name),
        )
        .with_label("expected `network NAME { ... }`")
        .with_help("a model file defines at least one network")
        .into());
    }
    Ok(module)
}

/// The training graph of a network with its `train` block's penalties,
/// before any pass: what `nnc check` counts and `nnc graph --train` draws.
pub fn training_graph(module: &Module, net: &Network) -> Result<TrainingGraph, Diagnostic> {
    let cfg = module.train_config(&net.name);
    differentiate(net, &cfg)
}

fn differentiate(net: &Network, cfg: &TrainConfig) -> Result<TrainingGraph, Diagnostic> {
    let opts = GradOptions {
        regularization: cfg.regularization,
        inputs: Vec::new(),
    };
    autodiff::training_graph(net, &opts)
}

/// The training graph of a network after the graph passes of `opts`.
pub fn optimize(
    net: &Network,
    cfg: &TrainConfig,
    opts: &Options,
) -> Result<TrainingGraph, CompileError> {
    let mut tg = differentiate(net, cfg)?;
    passes::pipeline(opts.opt_level, &opts.disabled_passes).run(&mut tg)?;
    Ok(tg)
}

/// A network with its graphs optimised: what codegen compiles.
struct Optimized {
    train: TrainingGraph,
    inference: Option<TrainingGraph>,
    explain: Option<TrainingGraph>,
}

/// Differentiates and optimises a network; a modal one (dropout, batch
/// norm) twice, in its training form and in its inference form
/// ([`Network::for_inference`]), before any pass so that the passes see
/// two ordinary graphs.
fn optimize_both(
    net: &Network,
    cfg: &TrainConfig,
    opts: &Options,
) -> Result<Optimized, CompileError> {
    let train = optimize(net, cfg, opts)?;
    let inference = if net.is_modal() {
        Some(optimize(&net.for_inference()?, cfg, opts)?)
    } else {
        None
    };
    let explain = if opts.explain {
        Some(explain_graph(net, opts)?)
    } else {
        None
    };
    Ok(Optimized {
        train,
        inference,
        explain,
    })
}

/// The explanation graph of a network (the input gradient of its
/// prediction, [`autodiff::input_gradient_graph`]) from its inference form,
/// after the graph passes of `opts`.
pub fn explain_graph(net: &Network, opts: &Options) -> Result<TrainingGraph, CompileError> {
    let inference;
    let net = if net.is_modal() {
        inference = net.for_inference()?;
        &inference
    } else {
        net
    };
    let mut tg = autodiff::input_gradient_graph(net)?;
    passes::pipeline(opts.opt_level, &opts.disabled_passes).run(&mut tg)?;
    Ok(tg)
}

/// Generates the Rust items for every network of a checked module, as a
/// token stream (what the `network!` macro expands to).
pub fn generate_tokens(
    source: &SourceFile,
    module: &Module,
    opts: &Options,
) -> Result<TokenStream, CompileError> {
    let mut items = TokenStream::new();
    generate_each(
        source,
        module,
        opts,
        &mut Emit::tokens(),
        &mut Vec::new(),
        |tokens, _| {
            items.extend(tokens);
            Ok(())
        },
    )?;
    Ok(items)
}

/// Per network (with `--quantize int8`): its name and its int8 plan's
/// report, one line per step (which run int8, which stay f32).
pub type Int8Reports = Vec<(String, Vec<String>)>;

/// Generates every network of a checked module, handing each group of
/// items (a network, its int8 plan, each pipeline stage, each split part)
/// to `take` with `emit`, which holds the texts of their placeholders in
/// text mode. With `opts.quantize` set, every network's int8 plan report
/// goes to `reports`: one optimisation of each network serves both.
fn generate_each(
    source: &SourceFile,
    module: &Module,
    opts: &Options,
    emit: &mut Emit,
    reports: &mut Int8Reports,
    mut take: impl FnMut(TokenStream, &mut Emit) -> Result<(), CompileError>,
) -> Result<(), CompileError> {
    let rt = codegen::runtime_path(opts)?;
    for net in &module.networks {
        let config = module.train_config(&net.name);
        let graphs = optimize_both(net, &config, opts)?;
        let input = Input {
            net,
            config: &config,
            train: &graphs.train,
            inference: graphs.inference.as_ref(),
            explain: graphs.explain.as_ref(),
            layout: None,
        };
        let items = codegen::network_with(source, &input, &rt, opts, emit)?;
        let int8 = match opts.quantize {
            Some(_) => {
                let plan = codegen::int8(source, &input, &rt)?;
                reports.push((net.name.clone(), plan.report));
                Some(plan.items)
            }
            None => None,
        };
        // The graphs go before the items are formatted: a big model's
        // graphs are hundreds of megabytes.
        drop(graphs);
        take(items, emit)?;
        if let Some(items) = int8 {
            take(items, emit)?;
        }
        stage_networks(source, net, &config, &rt, opts, emit, &mut take)?;
        split_networks(source, net, &config, &rt, opts, emit, &mut take)?;
    }
    Ok(())
}

/// The stage networks of a pipelined network (`stages:` in its `train`
/// block, [`lower::stages`]), `<Name>Stage<s>`, each generated like any
/// network, with the gradient with respect to its incoming activation
/// (`train_step_backprop`), and handed to `take`. Nothing for a network
/// without stages.
fn stage_networks(
    source: &SourceFile,
    net: &Network,
    config: &TrainConfig,
    rt: &TokenStream,
    opts: &Options,
    emit: &mut Emit,
    take: &mut impl FnMut(TokenStream, &mut Emit) -> Result<(), CompileError>,
) -> Result<(), CompileError> {
    if config.stages.is_empty() {
        return Ok(());
    }
    let stages = lower::stages::split(net, &config.stages).map_err(CompileError::from)?;
    // Stages are trained by the pipeline driver, never explained.
    let opts = Options {
        explain: false,
        ..opts.clone()
    };
    // What every rank of the pipeline must share: the network, the stage
    // count and each stage's parameters and graph (their model hashes).
    let mut layout = format!("{:016x} {}", codegen::model_hash(net), stages.len());
    for stage in &stages {
        layout.push_str(&format!(" {:016x}", codegen::model_hash(stage)));
    }
    let layout = nnc_spec::hash::fnv1a(layout.bytes());
    let mut cfg = config.clone();
    cfg.stages.clear();
    for (s, stage) in stages.iter().enumerate() {
        cfg.network.clone_from(&stage.name);
        let grad = GradOptions {
            regularization: cfg.regularization,
            inputs: s
                .checked_sub(1)
                .map(|p| vec![config.stages[p].0.clone()])
                .unwrap_or_default(),
        };
        let mut tg = autodiff::training_graph(stage, &grad)?;
        passes::pipeline(opts.opt_level, &opts.disabled_passes).run(&mut tg)?;
        let input = Input {
            net: stage,
            config: &cfg,
            train: &tg,
            inference: None,
            explain: None,
            layout: Some(layout),
        };
        let items = codegen::network_with(source, &input, rt, &opts, emit)?;
        drop(tg);
        take(items, emit)?;
    }
    Ok(())
}

/// The split networks of a network with split layers (`split:` in its
/// `train` block, [`lower::split`]): `<Name>Shard`, one rank's slices up to
/// the partial sum, and `<Name>Tail`, the rest from that sum, with the
/// gradient with respect to it (`train_step_backprop`). Nothing for a
/// network without split layers.
fn split_networks(
    source: &SourceFile,
    net: &Network,
    config: &TrainConfig,
    rt: &TokenStream,
    opts: &Options,
    emit: &mut Emit,
    take: &mut impl FnMut(TokenStream, &mut Emit) -> Result<(), CompileError>,
) -> Result<(), CompileError> {
    let Some(split) = lower::split::split(net, config).map_err(CompileError::from)? else {
        return Ok(());
    };
    // The parts are trained by the split driver, never explained.
    let opts = Options {
        explain: false,
        ..opts.clone()
    };
    let mut cfg = config.clone();
    cfg.split.clear();
    for (part, inputs) in [
        (&split.shard, Vec::new()),
        (&split.tail, vec![split.partial.clone()]),
    ] {
        cfg.network.clone_from(&part.name);
        let grad = GradOptions {
            regularization: cfg.regularization,
            inputs,
        };
        let mut tg = autodiff::training_graph(part, &grad)?;
        passes::pipeline(opts.opt_level, &opts.disabled_passes).run(&mut tg)?;
        let input = Input {
            net: part,
            config: &cfg,
            train: &tg,
            inference: None,
            explain: None,
            layout: None,
        };
        let items = codegen::network_with(source, &input, rt, &opts, emit)?;
        drop(tg);
        take(items, emit)?;
    }
    Ok(())
}

/// Generates the Rust source for every network of a checked module,
/// formatted, with an `@generated` header.
pub fn generate(
    source: &SourceFile,
    module: &Module,
    opts: &Options,
) -> Result<String, CompileError> {
    Ok(generate_with_int8_report(source, module, opts)?.0)
}

/// [`generate`], with every network's int8 plan report when
/// `opts.quantize` is set (what `nnc compile --quantize int8` prints;
/// empty otherwise).
pub fn generate_with_int8_report(
    source: &SourceFile,
    module: &Module,
    opts: &Options,
) -> Result<(String, Int8Reports), CompileError> {
    // Each network formatted as it is generated, its kernels and calls
    // already text (`codegen::Emit`): a big model is never alive whole as
    // tokens.
    let mut out = codegen::header(source);
    let mut reports = Vec::new();
    generate_each(
        source,
        module,
        opts,
        &mut Emit::text(),
        &mut reports,
        |items, emit| codegen::format_into(&mut out, items, emit),
    )?;
    Ok((out, reports))
}

/// The whole pipeline on one source file: its generated Rust source.
pub fn compile_source(source: &SourceFile, opts: &Options) -> Result<String, CompileError> {
    let module = check_source(source)?;
    generate(source, &module, opts)
}

/// The training-step statistics of a network (`nnc compile --stats`):
/// its step at `-O0` against its step at `opts`.
pub fn stats(net: &Network, cfg: &TrainConfig, opts: &Options) -> Result<Stats, CompileError> {
    let o0 = Options {
        opt_level: OptLevel::O0,
        ..opts.clone()
    };
    let base = optimize(net, cfg, &o0)?;
    let tg = optimize(net, cfg, opts)?;
    codegen::stats(&base, &tg, cfg, opts)
}

/// Why each elementwise node of a network's training step is fused or not
/// (`nnc compile --explain-fusion`).
pub fn explain_fusion(
    source: &SourceFile,
    net: &Network,
    cfg: &TrainConfig,
    opts: &Options,
) -> Result<String, CompileError> {
    let tg = optimize(net, cfg, opts)?;
    codegen::explain_fusion(source, &net.name, &tg, opts)
}

/// How a network with `stages:` or `split:` is cut into the slices of a
/// sliced checkpoint (what `nnc checkpoint merge|split` hands the
/// runtime's checkpoint tool): the whole network's parameter table and
/// model hash, and each slice's part models with theirs — a stage; or a
/// split rank's shard, then the tail. `None` for a network with neither.
pub fn slicing(module: &Module, net: &Network) -> Result<Option<Slicing>, CompileError> {
    let config = module.train_config(&net.name);
    if !config.stages.is_empty() {
        let stages = lower::stages::split(net, &config.stages).map_err(CompileError::from)?;
        return Ok(Some(Slicing {
            layout: SliceLayout::Stages(stages.len()),
            whole: table(net),
            slices: stages.iter().map(|s| vec![table(s)]).collect(),
        }));
    }
    let Some(split) = lower::split::split(net, &config).map_err(CompileError::from)? else {
        return Ok(None);
    };
    let ranks = config.split_ranks;
    Ok(Some(Slicing {
        layout: SliceLayout::Split(ranks),
        whole: table(net),
        slices: vec![vec![table(&split.shard), table(&split.tail)]; ranks],
    }))
}

/// A network's name, model hash and parameters, laid out as its generated
/// code lays them out (declaration order, contiguous).
fn table(net: &Network) -> Table {
    let mut offset = 0;
    let params = net
        .params
        .iter()
        .map(|p| {
            let q = nnc_spec::ParamSpec::new(p.name.clone(), p.shape.resolve(1), offset);
            offset += q.len;
            q
        })
        .collect();
    Table {
        name: net.name.clone(),
        hash: codegen::model_hash(net),
        params,
    }
}
