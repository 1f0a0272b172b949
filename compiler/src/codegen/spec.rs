//! The static `ModelSpec` of a generated network: parameter table with
//! initializers, inputs, outputs, the `train` block, and the model hash.

use super::layout::Layout;
use super::{codegen_error, usize_lit};
use crate::diagnostic::{CompileError, SourceFile};
use crate::graph::DType;
use crate::ir::TrainingGraph;
use crate::ir::{BatchSize, Init, InputKind, Network, Optimizer, ScheduleKind, TrainConfig};
use crate::ops::Kernel;
use proc_macro2::TokenStream;
use quote::{format_ident, quote};

/// `MnistMlp` → `MNIST_MLP`.
pub fn screaming(name: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = name.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        let boundary = i > 0
            && c.is_uppercase()
            && (chars[i - 1].is_lowercase() || chars.get(i + 1).is_some_and(|n| n.is_lowercase()));
        if boundary && !out.ends_with('_') {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// FNV-1a: a stable 64-bit hash, the same on every platform and release.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A hash of what makes two compiled networks interchangeable: the
/// parameter table and the network's forward graph as declared (before any
/// optimisation, so `-O0` and `-O2` builds share checkpoints).
pub fn model_hash(net: &Network) -> u64 {
    let mut s = format!("{}\n", net.name);
    for p in &net.params {
        s.push_str(&format!("param {} {}\n", p.name, p.shape));
    }
    let g = &net.graph;
    for id in g.ids() {
        let node = g.node(id);
        let ops: Vec<usize> = g.operands(id).iter().map(|o| o.index()).collect();
        s.push_str(&format!(
            "{} {} {} {:?}\n",
            id.index(),
            node.op,
            node.ty,
            ops
        ));
    }
    fnv1a(s.as_bytes())
}

fn f(v: f64) -> TokenStream {
    Kernel::f32(v)
}

fn init(rt: &TokenStream, i: &Init) -> TokenStream {
    match i {
        Init::Zeros => quote!(#rt::init::Init::Zeros),
        Init::Constant(v) if *v == 1.0 => quote!(#rt::init::Init::Ones),
        Init::Constant(v) => {
            let v = f(*v);
            quote!(#rt::init::Init::Constant(#v))
        }
        Init::Normal { mean, std } => {
            let (m, s) = (f(*mean), f(*std));
            quote!(#rt::init::Init::Normal { mean: #m, std: #s })
        }
        Init::Uniform { low, high } => {
            let (l, h) = (f(*low), f(*high));
            quote!(#rt::init::Init::Uniform { low: #l, high: #h })
        }
        Init::GlorotUniform => quote!(#rt::init::Init::GlorotUniform),
        Init::GlorotNormal => quote!(#rt::init::Init::GlorotNormal),
        Init::HeUniform => quote!(#rt::init::Init::HeUniform),
        Init::HeNormal => quote!(#rt::init::Init::HeNormal),
    }
}

fn optimizer(rt: &TokenStream, o: &Optimizer) -> TokenStream {
    let o_ = quote!(#rt::optim);
    match *o {
        Optimizer::Sgd {
            momentum,
            dampening,
            nesterov,
            ..
        } => {
            let (m, d) = (f(momentum), f(dampening));
            quote!(#o_::OptimizerConfig::Sgd(#o_::SgdConfig { momentum: #m, dampening: #d, nesterov: #nesterov, weight_decay: 0.0 }))
        }
        Optimizer::Adam {
            beta1, beta2, eps, ..
        } => {
            let (b1, b2, e) = (f(beta1), f(beta2), f(eps));
            quote!(#o_::OptimizerConfig::Adam(#o_::AdamConfig { beta1: #b1, beta2: #b2, eps: #e, weight_decay: 0.0 }))
        }
        Optimizer::AdamW {
            beta1,
            beta2,
            eps,
            weight_decay,
            ..
        } => {
            let (b1, b2, e, w) = (f(beta1), f(beta2), f(eps), f(weight_decay));
            quote!(#o_::OptimizerConfig::AdamW(#o_::AdamConfig { beta1: #b1, beta2: #b2, eps: #e, weight_decay: #w }))
        }
        Optimizer::RmsProp {
            alpha,
            eps,
            momentum,
            centered,
            ..
        } => {
            let (a, e, m) = (f(alpha), f(eps), f(momentum));
            quote!(#o_::OptimizerConfig::Rmsprop(#o_::RmspropConfig { alpha: #a, eps: #e, momentum: #m, centered: #centered, weight_decay: 0.0 }))
        }
        Optimizer::Adagrad {
            lr_decay,
            eps,
            initial_accumulator,
            ..
        } => {
            let (d, e, a) = (f(lr_decay), f(eps), f(initial_accumulator));
            quote!(#o_::OptimizerConfig::Adagrad(#o_::AdagradConfig { lr_decay: #d, initial_accumulator_value: #a, eps: #e, weight_decay: 0.0 }))
        }
    }
}

/// The `static NAME_SPEC: ModelSpec` item.
pub fn model_spec(
    source: &SourceFile,
    net: &Network,
    cfg: &TrainConfig,
    tg: &TrainingGraph,
    layout: &Layout,
    rt: &TokenStream,
) -> Result<TokenStream, CompileError> {
    let name = format_ident!("{}_SPEC", screaming(&net.name));
    let mut params = Vec::new();
    let mut inits = Vec::new();
    for (i, p) in net.params.iter().enumerate() {
        let needs_fans = matches!(
            p.init,
            Init::GlorotUniform | Init::GlorotNormal | Init::HeUniform | Init::HeNormal
        );
        if needs_fans && p.shape.rank() == 0 {
            return Err(codegen_error(
                p.span,
                format!(
                    "parameter `{}` is a scalar: fan-based initializers need a shape",
                    p.name
                ),
            ));
        }
        let pname = &p.name;
        let dims = p.shape.resolve(1).into_iter().map(usize_lit);
        let (off, len) = (
            usize_lit(layout.param_offset[i]),
            usize_lit(layout.param_len[i]),
        );
        params.push(quote! {
            #rt::params::ParamSpec {
                name: ::std::borrow::Cow::Borrowed(#pname),
                shape: ::std::borrow::Cow::Borrowed(&[#(#dims),*]),
                offset: #off,
                len: #len,
            }
        });
        inits.push(init(rt, &p.init));
    }
    let inputs = net.inputs.iter().map(|i| {
        let n = &i.name;
        let per = usize_lit(i.ty.shape.fixed_numel().unwrap_or(0));
        let kind = match (i.kind, i.ty.dtype) {
            (InputKind::Labels, DType::Class { classes }) => {
                let c = classes as u32;
                quote!(#rt::model::InputKind::Labels { classes: #c })
            }
            (InputKind::Features, DType::Class { classes }) => {
                let c = classes as u32;
                quote!(#rt::model::InputKind::Tokens { classes: #c })
            }
            _ => quote!(#rt::model::InputKind::Features),
        };
        quote!(#rt::model::InputSpec { name: #n, per_sample: #per, kind: #kind })
    });
    let outputs = tg.outputs.iter().map(|(n, node)| {
        let per = usize_lit(tg.graph.ty(*node).shape.fixed_numel().unwrap_or(0));
        quote!(#rt::model::OutputSpec { name: #n, per_sample: #per })
    });
    let opt = optimizer(rt, &cfg.optimizer);
    let lr = f(cfg.optimizer.lr());
    let batch = match cfg.batch {
        BatchSize::Full => quote!(#rt::model::BatchSpec::Full),
        BatchSize::Size(n) => {
            let n = usize_lit(n as usize);
            quote!(#rt::model::BatchSpec::Size(#n))
        }
    };
    let schedule = match cfg.schedule.kind {
        ScheduleKind::Constant => quote!(#rt::model::ScheduleSpec::Constant),
        ScheduleKind::Step { every, gamma } => {
            let g = f(gamma);
            quote!(#rt::model::ScheduleSpec::Step { every: #every, gamma: #g })
        }
        ScheduleKind::Exponential { gamma } => {
            let g = f(gamma);
            quote!(#rt::model::ScheduleSpec::Exponential { gamma: #g })
        }
        ScheduleKind::Cosine { min_lr } => {
            let m = f(min_lr);
            quote!(#rt::model::ScheduleSpec::Cosine { min_lr: #m })
        }
    };
    let (epochs, warmup, seed) = (cfg.epochs, cfg.schedule.warmup, cfg.seed);
    let wd = f(cfg.weight_decay);
    let hash = model_hash(net);
    let (net_name, src) = (&net.name, &source.name);
    let count = usize_lit(layout.param_len.iter().sum());
    let doc = format!(" What the runtime needs to know about `{}`.", net.name);
    Ok(quote! {
        #[doc = #doc]
        pub static #name: #rt::ModelSpec = #rt::ModelSpec {
            name: #net_name,
            source: #src,
            hash: #hash,
            params: &[#(#params),*],
            inits: &[#(#inits),*],
            param_count: #count,
            inputs: &[#(#inputs),*],
            outputs: &[#(#outputs),*],
            train: #rt::TrainSpec {
                optimizer: #opt,
                lr: #lr,
                batch: #batch,
                epochs: #epochs,
                schedule: #schedule,
                warmup: #warmup,
                weight_decay: #wd,
                seed: #seed,
            },
        };
    })
}
