//! Writing spec values into generated code: [`ToRust`] turns a value the
//! compiler built into the Rust expression that constructs it, with every
//! type named through the runtime's re-export of this crate (`rt::spec`,
//! where `rt` is the path generated code uses for `nnc-runtime`), so
//! generated code needs no dependency of its own on `nnc-spec`.
//!
//! Numbers that are not finite `f32`s are written as the constants that
//! build them (`f32::NAN`), never as a literal a token printer would reject:
//! the compiler refuses them with a diagnostic first, and this keeps a
//! missed check from becoming a panic.

use proc_macro2::{Literal, TokenStream};
use quote::quote;

use crate::init::Init;
use crate::model::{
    InputKind, InputSpec, LossKind, LossSpec, ModelSpec, OutputSpec, ParamSpec, StateSpec,
};
use crate::optim::{AdagradConfig, AdamConfig, OptimizerConfig, RmspropConfig, SgdConfig};
use crate::train::{AugmentSpec, BatchSpec, ScheduleSpec, TrainSpec};

/// A value that can be written as the Rust expression constructing it.
pub trait ToRust {
    /// The expression, naming types through `rt` (the runtime crate's path).
    fn to_rust(&self, rt: &TokenStream) -> TokenStream;
}

/// An `f32` literal (`0.001f32`), or the constant for a non-finite value.
pub fn f32_lit(v: f32) -> TokenStream {
    if v.is_nan() {
        quote!(f32::NAN)
    } else if v == f32::INFINITY {
        quote!(f32::INFINITY)
    } else if v == f32::NEG_INFINITY {
        quote!(f32::NEG_INFINITY)
    } else {
        let l = Literal::f32_suffixed(v);
        quote!(#l)
    }
}

fn usize_lit(v: usize) -> Literal {
    Literal::usize_suffixed(v)
}

fn u64_lit(v: u64) -> Literal {
    Literal::u64_suffixed(v)
}

fn u32_lit(v: u32) -> Literal {
    Literal::u32_suffixed(v)
}

/// `::std::borrow::Cow::Borrowed(&[a, b, ...])`.
fn slice<T: ToRust>(items: &[T], rt: &TokenStream) -> TokenStream {
    let items = items.iter().map(|i| i.to_rust(rt));
    quote!(::std::borrow::Cow::Borrowed(&[#(#items),*]))
}

/// `::std::borrow::Cow::Borrowed("text")`.
fn text(s: &str) -> TokenStream {
    quote!(::std::borrow::Cow::Borrowed(#s))
}

impl ToRust for Init {
    fn to_rust(&self, rt: &TokenStream) -> TokenStream {
        let i = quote!(#rt::spec::init::Init);
        match *self {
            Init::Zeros => quote!(#i::Zeros),
            Init::Ones => quote!(#i::Ones),
            Init::Constant(v) => {
                let v = f32_lit(v);
                quote!(#i::Constant(#v))
            }
            Init::Normal { mean, std } => {
                let (m, s) = (f32_lit(mean), f32_lit(std));
                quote!(#i::Normal { mean: #m, std: #s })
            }
            Init::Uniform { low, high } => {
                let (l, h) = (f32_lit(low), f32_lit(high));
                quote!(#i::Uniform { low: #l, high: #h })
            }
            Init::GlorotUniform => quote!(#i::GlorotUniform),
            Init::GlorotNormal => quote!(#i::GlorotNormal),
            Init::HeUniform => quote!(#i::HeUniform),
            Init::HeNormal => quote!(#i::HeNormal),
        }
    }
}

impl ToRust for ParamSpec {
    fn to_rust(&self, rt: &TokenStream) -> TokenStream {
        let name = text(&self.name);
        let dims = self.shape.iter().map(|&d| usize_lit(d));
        let (offset, len) = (usize_lit(self.offset), usize_lit(self.len));
        quote! {
            #rt::spec::model::ParamSpec {
                name: #name,
                shape: ::std::borrow::Cow::Borrowed(&[#(#dims),*]),
                offset: #offset,
                len: #len,
            }
        }
    }
}

impl ToRust for StateSpec {
    fn to_rust(&self, rt: &TokenStream) -> TokenStream {
        let tensor = self.tensor.to_rust(rt);
        let (init, momentum) = (f32_lit(self.init), f32_lit(self.momentum));
        quote! {
            #rt::spec::model::StateSpec { tensor: #tensor, init: #init, momentum: #momentum }
        }
    }
}

impl ToRust for InputKind {
    fn to_rust(&self, rt: &TokenStream) -> TokenStream {
        let k = quote!(#rt::spec::model::InputKind);
        match *self {
            InputKind::Features => quote!(#k::Features),
            InputKind::Labels { classes } => {
                let c = u32_lit(classes);
                quote!(#k::Labels { classes: #c })
            }
            InputKind::Tokens { classes } => {
                let c = u32_lit(classes);
                quote!(#k::Tokens { classes: #c })
            }
        }
    }
}

impl ToRust for InputSpec {
    fn to_rust(&self, rt: &TokenStream) -> TokenStream {
        let name = text(&self.name);
        let per = usize_lit(self.per_sample);
        let kind = self.kind.to_rust(rt);
        let predict = self.predict;
        quote! {
            #rt::spec::model::InputSpec { name: #name, per_sample: #per, kind: #kind, predict: #predict }
        }
    }
}

impl ToRust for OutputSpec {
    fn to_rust(&self, rt: &TokenStream) -> TokenStream {
        let name = text(&self.name);
        let per = usize_lit(self.per_sample);
        quote!(#rt::spec::model::OutputSpec { name: #name, per_sample: #per })
    }
}

impl ToRust for LossSpec {
    fn to_rust(&self, rt: &TokenStream) -> TokenStream {
        let k = quote!(#rt::spec::model::LossKind);
        let kind = match self.kind {
            LossKind::Classification {
                label,
                classes,
                positions,
            } => {
                let (l, c, p) = (usize_lit(label), u32_lit(classes), u32_lit(positions));
                quote!(#k::Classification { label: #l, classes: #c, positions: #p })
            }
            LossKind::Binary { target } => {
                let t = usize_lit(target);
                quote!(#k::Binary { target: #t })
            }
            LossKind::Regression { target } => {
                let t = usize_lit(target);
                quote!(#k::Regression { target: #t })
            }
            LossKind::Other => quote!(#k::Other),
        };
        let scores = usize_lit(self.scores);
        quote!(#rt::spec::model::LossSpec { kind: #kind, scores: #scores })
    }
}

impl ToRust for OptimizerConfig {
    fn to_rust(&self, rt: &TokenStream) -> TokenStream {
        let o = quote!(#rt::spec::optim);
        let adam = |c: &AdamConfig| {
            let (b1, b2, e, w) = (
                f32_lit(c.beta1),
                f32_lit(c.beta2),
                f32_lit(c.eps),
                f32_lit(c.weight_decay),
            );
            quote!(#o::AdamConfig { beta1: #b1, beta2: #b2, eps: #e, weight_decay: #w })
        };
        match self {
            OptimizerConfig::Sgd(SgdConfig {
                momentum,
                dampening,
                nesterov,
                weight_decay,
            }) => {
                let (m, d, w) = (
                    f32_lit(*momentum),
                    f32_lit(*dampening),
                    f32_lit(*weight_decay),
                );
                quote!(#o::OptimizerConfig::Sgd(#o::SgdConfig { momentum: #m, dampening: #d, nesterov: #nesterov, weight_decay: #w }))
            }
            OptimizerConfig::Adam(c) => {
                let c = adam(c);
                quote!(#o::OptimizerConfig::Adam(#c))
            }
            OptimizerConfig::AdamW(c) => {
                let c = adam(c);
                quote!(#o::OptimizerConfig::AdamW(#c))
            }
            OptimizerConfig::Rmsprop(RmspropConfig {
                alpha,
                eps,
                momentum,
                centered,
                weight_decay,
            }) => {
                let (a, e, m, w) = (
                    f32_lit(*alpha),
                    f32_lit(*eps),
                    f32_lit(*momentum),
                    f32_lit(*weight_decay),
                );
                quote!(#o::OptimizerConfig::Rmsprop(#o::RmspropConfig { alpha: #a, eps: #e, momentum: #m, centered: #centered, weight_decay: #w }))
            }
            OptimizerConfig::Adagrad(AdagradConfig {
                lr_decay,
                initial_accumulator_value,
                eps,
                weight_decay,
            }) => {
                let (d, a, e, w) = (
                    f32_lit(*lr_decay),
                    f32_lit(*initial_accumulator_value),
                    f32_lit(*eps),
                    f32_lit(*weight_decay),
                );
                quote!(#o::OptimizerConfig::Adagrad(#o::AdagradConfig { lr_decay: #d, initial_accumulator_value: #a, eps: #e, weight_decay: #w }))
            }
        }
    }
}

impl ToRust for BatchSpec {
    fn to_rust(&self, rt: &TokenStream) -> TokenStream {
        match *self {
            BatchSpec::Full => quote!(#rt::spec::train::BatchSpec::Full),
            BatchSpec::Size(n) => {
                let n = usize_lit(n);
                quote!(#rt::spec::train::BatchSpec::Size(#n))
            }
        }
    }
}

impl ToRust for ScheduleSpec {
    fn to_rust(&self, rt: &TokenStream) -> TokenStream {
        let s = quote!(#rt::spec::train::ScheduleSpec);
        match *self {
            ScheduleSpec::Constant => quote!(#s::Constant),
            ScheduleSpec::Step { every, gamma } => {
                let (e, g) = (u64_lit(every), f32_lit(gamma));
                quote!(#s::Step { every: #e, gamma: #g })
            }
            ScheduleSpec::Exponential { gamma } => {
                let g = f32_lit(gamma);
                quote!(#s::Exponential { gamma: #g })
            }
            ScheduleSpec::Cosine { min_lr } => {
                let m = f32_lit(min_lr);
                quote!(#s::Cosine { min_lr: #m })
            }
        }
    }
}

fn option<T>(v: Option<T>, f: impl FnOnce(T) -> TokenStream) -> TokenStream {
    match v {
        Some(x) => {
            let x = f(x);
            quote!(::core::option::Option::Some(#x))
        }
        None => quote!(::core::option::Option::None),
    }
}

impl ToRust for TrainSpec {
    fn to_rust(&self, rt: &TokenStream) -> TokenStream {
        let optimizer = self.optimizer.to_rust(rt);
        let lr = f32_lit(self.lr);
        let batch = self.batch.to_rust(rt);
        let epochs = u64_lit(self.epochs);
        let schedule = self.schedule.to_rust(rt);
        let warmup = u64_lit(self.warmup);
        let wd = f32_lit(self.weight_decay);
        let seed = u64_lit(self.seed);
        let clip = option(self.clip_norm, f32_lit);
        let early = option(self.early_stop, |e| {
            let e = u64_lit(e);
            quote!(#e)
        });
        let augment = self.augment.to_rust(rt);
        quote! {
            #rt::spec::train::TrainSpec {
                optimizer: #optimizer,
                lr: #lr,
                batch: #batch,
                epochs: #epochs,
                schedule: #schedule,
                warmup: #warmup,
                weight_decay: #wd,
                seed: #seed,
                clip_norm: #clip,
                early_stop: #early,
                augment: #augment,
            }
        }
    }
}

impl ToRust for AugmentSpec {
    fn to_rust(&self, rt: &TokenStream) -> TokenStream {
        if self.is_none() {
            // The common case reads as what it is.
            return quote!(#rt::spec::train::AugmentSpec::NONE);
        }
        let shift = Literal::u32_suffixed(self.shift);
        let rotate = f32_lit(self.rotate);
        let flip = self.flip;
        let cutout = Literal::u32_suffixed(self.cutout);
        let noise = f32_lit(self.noise);
        quote! {
            #rt::spec::train::AugmentSpec {
                shift: #shift,
                rotate: #rotate,
                flip: #flip,
                cutout: #cutout,
                noise: #noise,
            }
        }
    }
}

impl ToRust for ModelSpec {
    fn to_rust(&self, rt: &TokenStream) -> TokenStream {
        let (name, source) = (text(&self.name), text(&self.source));
        let hash = u64_lit(self.hash);
        let params = slice(&self.params, rt);
        let inits = slice(&self.inits, rt);
        let count = usize_lit(self.param_count);
        let inputs = slice(&self.inputs, rt);
        let outputs = slice(&self.outputs, rt);
        let loss = self.loss.to_rust(rt);
        let train = self.train.to_rust(rt);
        quote! {
            #rt::spec::model::ModelSpec {
                name: #name,
                source: #source,
                hash: #hash,
                params: #params,
                inits: #inits,
                param_count: #count,
                inputs: #inputs,
                outputs: #outputs,
                loss: #loss,
                train: #train,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_numbers_are_written_as_constants_not_literals() {
        assert_eq!(f32_lit(f32::NAN).to_string(), "f32 :: NAN");
        assert_eq!(f32_lit(f32::INFINITY).to_string(), "f32 :: INFINITY");
        assert_eq!(f32_lit(0.5).to_string(), "0.5f32");
    }

    #[test]
    fn a_train_spec_is_written_through_the_runtime_path() {
        let t = TrainSpec {
            optimizer: OptimizerConfig::Sgd(SgdConfig::default()),
            lr: 0.1,
            batch: BatchSpec::Size(4),
            epochs: 2,
            schedule: ScheduleSpec::Constant,
            warmup: 0,
            weight_decay: 0.0,
            seed: 7,
            clip_norm: Some(1.0),
            early_stop: None,
            augment: AugmentSpec {
                shift: 2,
                flip: true,
                ..AugmentSpec::NONE
            },
        };
        let text = t.to_rust(&quote!(::rt)).to_string();
        assert!(
            text.starts_with(":: rt :: spec :: train :: TrainSpec {"),
            "{text}"
        );
        assert!(
            text.contains("clip_norm : :: core :: option :: Option :: Some (1f32)"),
            "{text}"
        );
        assert!(text.contains("shift : 2u32"), "{text}");
        let none = AugmentSpec::NONE.to_rust(&quote!(::rt)).to_string();
        assert_eq!(none, ":: rt :: spec :: train :: AugmentSpec :: NONE");
    }
}
