//! The static `ModelSpec` of a generated network: parameter table with
//! initializers, inputs, outputs, the `train` block, and the model hash.

use std::borrow::Cow;

use super::codegen_error;
use super::emit::Emit;
use super::format;
use super::layout::Layout;
use crate::diagnostic::{CompileError, Diagnostic, ErrorKind, SourceFile};
use crate::graph::DType;
use crate::ir::{InputKind, Network, TrainConfig, TrainingGraph};
use nnc_spec::model::InputKind as SpecInputKind;
use nnc_spec::tokens::ToRust;
use nnc_spec::{InputSpec, LossSpec, ModelSpec, OutputSpec, ParamSpec};
use proc_macro2::{Delimiter, Group, Ident, Spacing, Span, TokenStream, TokenTree};
use quote::{format_ident, quote};

pub use crate::ir::screaming;

/// FNV-1a: a stable 64-bit hash (the contract's, `nnc_spec::hash`).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    nnc_spec::hash::fnv1a(bytes.iter().copied())
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

/// The `static NAME_SPEC: ModelSpec` item: the contract's value, built
/// here and written out by `nnc_spec::tokens`. `loss` says what the loss
/// compares; `predict[i]` whether input `i` is read by `predict`. In text
/// mode a long parameter table is formatted a row at a time, and the item
/// is `emit`'s placeholder for its text.
#[allow(clippy::too_many_arguments)]
pub fn model_spec(
    source: &SourceFile,
    net: &Network,
    cfg: &TrainConfig,
    tg: &TrainingGraph,
    layout: &Layout,
    loss: LossSpec,
    predict: &[bool],
    rt: &TokenStream,
    emit: &mut Emit,
) -> Result<TokenStream, CompileError> {
    let name = format_ident!("{}_SPEC", screaming(&net.name));
    let mut params = Vec::new();
    let mut inits = Vec::new();
    for (i, p) in net.params.iter().enumerate() {
        if p.init.needs_fans() && p.shape.rank() == 0 {
            return Err(codegen_error(
                p.span,
                format!(
                    "parameter `{}` is a scalar: fan-based initializers need a shape",
                    p.name
                ),
            ));
        }
        params.push(ParamSpec {
            name: Cow::Owned(p.name.clone()),
            shape: Cow::Owned(p.shape.resolve(1)),
            offset: layout.param_offset[i],
            len: layout.param_len[i],
        });
        inits.push(p.init);
    }
    let inputs = net
        .inputs
        .iter()
        .zip(predict)
        .map(|(i, &predict)| InputSpec {
            name: Cow::Owned(i.name.clone()),
            per_sample: i.ty.shape.fixed_numel().unwrap_or(0),
            kind: match (i.kind, i.ty.dtype) {
                (InputKind::Labels, DType::Class { classes }) => SpecInputKind::Labels {
                    classes: classes as u32,
                },
                (InputKind::Features, DType::Class { classes }) => SpecInputKind::Tokens {
                    classes: classes as u32,
                },
                _ => SpecInputKind::Features,
            },
            predict,
        })
        .collect();
    let outputs = tg
        .outputs
        .iter()
        .map(|(n, node)| OutputSpec {
            name: Cow::Owned(n.clone()),
            per_sample: tg.graph.ty(*node).shape.fixed_numel().unwrap_or(0),
        })
        .collect();
    // In text mode, a long parameter table is written a row at a time
    // (`format::item_with_rows`): the value holds marks for its rows.
    let by_row = emit.is_text() && params.len() >= BY_ROW;
    let (params, rows) = if by_row {
        (Vec::new(), params)
    } else {
        (params, Vec::new())
    };
    let (inits, init_rows) = if by_row {
        (Vec::new(), inits)
    } else {
        (inits, Vec::new())
    };
    let spec = ModelSpec {
        name: Cow::Owned(net.name.clone()),
        source: Cow::Owned(source.name.clone()),
        hash: model_hash(net),
        params: Cow::Owned(params),
        inits: Cow::Owned(inits),
        param_count: layout.param_len.iter().sum(),
        inputs: Cow::Owned(inputs),
        outputs: Cow::Owned(outputs),
        loss,
        train: cfg.spec,
    };
    let mut value = spec.to_rust(rt);
    if by_row {
        value = mark_rows(value, &["params", "inits"]);
    }
    let doc = format!(" What the runtime needs to know about `{}`.", net.name);
    let item = quote! {
        #[doc = #doc]
        pub static #name: #rt::ModelSpec = #value;
    };
    if !by_row {
        return Ok(item);
    }
    let text = format::item_with_rows(
        item,
        vec![
            Box::new(rows.iter().map(|r| r.to_rust(rt))),
            Box::new(init_rows.iter().map(|r| r.to_rust(rt))),
        ],
    )
    .map_err(|e| {
        CompileError::from(Diagnostic::new(
            ErrorKind::Internal,
            Default::default(),
            format!("generated code does not parse: {e}"),
        ))
    })?;
    Ok(emit.item(text))
}

/// Parameter tables at least this long are written a row at a time: far
/// more than prints on one line, so that printed whole the table breaks
/// one row a line, as `format::item_with_rows` needs.
const BY_ROW: usize = 64;

/// `value`, a struct literal whose fields `fields` are each an empty
/// array behind a call (`Cow::Borrowed(&[])`), with field `i`'s array
/// holding `format::row_mark(i)`.
fn mark_rows(value: TokenStream, fields: &[&str]) -> TokenStream {
    value
        .into_iter()
        .map(|t| match t {
            TokenTree::Group(g) if g.delimiter() == Delimiter::Brace => {
                let mut field = None;
                let mut tokens: Vec<TokenTree> = g.stream().into_iter().collect();
                for k in 0..tokens.len() {
                    match &tokens[k] {
                        TokenTree::Ident(i)
                            if matches!(tokens.get(k + 1),
                            Some(TokenTree::Punct(p)) if p.as_char() == ':'
                                && p.spacing() == Spacing::Alone) =>
                        {
                            field = fields.iter().position(|f| i == f);
                        }
                        TokenTree::Group(call) if call.delimiter() == Delimiter::Parenthesis => {
                            if let Some(f) = field.take() {
                                let mark = Ident::new(&format::row_mark(f), Span::call_site());
                                let inner = call.stream().into_iter().map(|t| match t {
                                    TokenTree::Group(a) if a.delimiter() == Delimiter::Bracket => {
                                        TokenTree::Group(Group::new(
                                            Delimiter::Bracket,
                                            quote!(#mark),
                                        ))
                                    }
                                    t => t,
                                });
                                tokens[k] = TokenTree::Group(Group::new(
                                    Delimiter::Parenthesis,
                                    inner.collect(),
                                ));
                            }
                        }
                        _ => {}
                    }
                }
                TokenTree::Group(Group::new(Delimiter::Brace, tokens.into_iter().collect()))
            }
            t => t,
        })
        .collect()
}
