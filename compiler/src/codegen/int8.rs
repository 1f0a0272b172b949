//! A network's int8 inference plan (`nnc compile --quantize int8`): its
//! inference graph read as a straight line of `nnc_runtime::quant::Step`s,
//! written into generated code as `int8_plan()`, with `quantize_int8`
//! (calibrate and quantize from the model's f32 weights) and `load_int8`
//! (a saved quantized weights file) beside it.
//!
//! Each op says how it takes part ([`Op::int8`]): a product with a weight
//! parameter becomes an int8 step, the bias add and ReLU that follow it (and
//! nothing else reads) go into its epilogue, pooling and softmax are f32
//! steps, a reshape is an alias, and anything else refuses the model with a
//! diagnostic at the op. The report lists every step and which stayed f32.

use std::collections::{BTreeSet, HashMap};

use super::{ancestors, codegen_error, spec::screaming, usize_lit, Input};
use crate::diagnostic::{CompileError, SourceFile};
use crate::graph::{Dim, Graph, NodeId};
use crate::ir::TrainingGraph;
use crate::ops::{BinaryOp, ConvOp, Int8, LeafOp, Op, ShapeOp, SoftmaxOp, UnaryOp};
use proc_macro2::TokenStream;
use quote::{format_ident, quote};

/// A plan: the generated items and the report (one line per step).
pub struct Int8Plan {
    /// `impl NAME { int8_plan, quantize_int8, load_int8 }`.
    pub items: TokenStream,
    /// `file:line:col: int8 dense h1.weight + bias + relu`, `...: f32
    /// max_pool2d (no int8 kernel)`, one line per step.
    pub report: Vec<String>,
}

struct Builder<'a> {
    g: &'a Graph,
    live: BTreeSet<usize>,
    values: Vec<usize>,
    value: HashMap<usize, usize>,
    steps: Vec<TokenStream>,
    report: Vec<String>,
    /// Max poolings' report lines (index) and their text should they run on
    /// bytes.
    pool_lines: Vec<(usize, String)>,
    /// Per step: its kind, input and output value (for [`byte_poolings`]).
    kinds: Vec<(Kind, usize, usize)>,
}

/// What a step is, as far as byte pooling cares.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Int8,
    MaxPool,
    Other,
}

/// Per step: whether the runtime runs it as a max pooling on the bytes of
/// its input. The rule of `nnc_runtime::quant::plan`'s layout
/// (`runtime/src/quant/plan/layout.rs`; the two must agree: the runtime's
/// `Plan::describe` and this report say the same of LeNet, checked in
/// `compiler/tests/int8_cli.rs` and `runtime/src/quant/tests/pool.rs`): a pooling
/// reads bytes when its input is written by an int8 step or a byte pooling,
/// is not the output, and is read only by int8 steps and max poolings.
fn byte_poolings(kinds: &[(Kind, usize, usize)], values: usize, output: usize) -> Vec<bool> {
    let mut readers = vec![0usize; values];
    let mut bytes_ok = vec![true; values];
    for &(k, x, _) in kinds {
        readers[x] += 1;
        if k == Kind::Other {
            bytes_ok[x] = false;
        }
    }
    bytes_ok[output] = false;
    let mut u8_only = vec![false; values];
    let mut on_bytes = vec![false; kinds.len()];
    for (i, &(k, x, y)) in kinds.iter().enumerate() {
        let writes_bytes = match k {
            Kind::Int8 => true,
            Kind::MaxPool => {
                on_bytes[i] = u8_only[x];
                on_bytes[i]
            }
            Kind::Other => false,
        };
        u8_only[y] = writes_bytes && bytes_ok[y] && readers[y] > 0;
    }
    on_bytes
}

/// Elements per sample of a `[batch, ...]` tensor, if it is one.
fn per_sample(g: &Graph, id: NodeId) -> Option<usize> {
    match g.ty(id).shape.dims() {
        [Dim::Batch, rest @ ..] => rest.iter().try_fold(1usize, |a, d| match d {
            Dim::Fixed(n) => a.checked_mul(*n),
            Dim::Batch => None,
        }),
        _ => None,
    }
}

fn fixed(g: &Graph, id: NodeId) -> Vec<usize> {
    g.ty(id)
        .shape
        .dims()
        .iter()
        .map(|d| match d {
            Dim::Fixed(n) => *n,
            Dim::Batch => 0,
        })
        .collect()
}

/// The parameter a node is, possibly through reshapes (a conv bias is
/// reshaped to `[O, 1, 1]`).
fn param_name(g: &Graph, mut id: NodeId) -> Option<String> {
    loop {
        match &g.node(id).op {
            Op::Leaf(LeafOp::Param { name, .. }) => return Some(name.clone()),
            Op::Shape(ShapeOp::Reshape { .. } | ShapeOp::Broadcast { .. }) => {
                id = g.operands(id)[0];
            }
            _ => return None,
        }
    }
}

/// The bias parameter `id` adds to a product's output, if it is one value
/// per output channel laid out as the epilogue applies it: `[n]` after a
/// dense product, `[O, 1, 1]` after a convolution (leading ones aside),
/// before any broadcast. A parameter added any other way is not a bias.
fn channel_bias(g: &Graph, mut id: NodeId, channels: usize, conv: bool) -> Option<String> {
    while let Op::Shape(ShapeOp::Broadcast { .. }) = &g.node(id).op {
        id = g.operands(id)[0];
    }
    let dims = fixed(g, id);
    let want: &[usize] = if conv { &[channels, 1, 1] } else { &[channels] };
    let lead = dims.len().checked_sub(want.len())?;
    let ok = dims[lead..] == *want && dims[..lead].iter().all(|&d| d == 1);
    ok.then(|| param_name(g, id)).flatten()
}

impl Builder<'_> {
    fn sole_user(&self, id: NodeId) -> Option<NodeId> {
        match self.g.users(id)[..] {
            [u] if self.live.contains(&u.index()) => Some(u),
            _ => None,
        }
    }

    fn new_value(&mut self, id: NodeId, len: usize) -> usize {
        self.values.push(len);
        let v = self.values.len() - 1;
        self.value.insert(id.index(), v);
        v
    }

    fn operand_value(
        &self,
        id: NodeId,
        err: &dyn Fn(String) -> CompileError,
    ) -> Result<usize, CompileError> {
        let x = self.g.operands(id)[0];
        self.value.get(&x.index()).copied().ok_or_else(|| {
            err(format!(
                "int8 inference: `{}` reads `{}`, which is not a per-sample tensor the plan computes",
                self.g.node(id).op,
                self.g.node(x).op
            ))
        })
    }
}

/// The int8 plan of a network, or a diagnostic at the first op that has
/// none.
pub fn int8(
    source: &SourceFile,
    input: &Input<'_>,
    rt: &TokenStream,
) -> Result<Int8Plan, CompileError> {
    let net = input.net;
    let tg: &TrainingGraph = input.inference.unwrap_or(input.train);
    let [(_, out)] = tg.outputs[..] else {
        return Err(codegen_error(
            net.span,
            format!(
                "int8 inference needs exactly one output, network `{}` has {}",
                net.name,
                tg.outputs.len()
            ),
        ));
    };
    let order = ancestors(tg, &[out]);
    let g = &tg.graph;
    let mut b = Builder {
        g,
        live: order.iter().map(|n| n.index()).collect(),
        values: Vec::new(),
        value: HashMap::new(),
        steps: Vec::new(),
        report: Vec::new(),
        pool_lines: Vec::new(),
        kinds: Vec::new(),
    };
    let mut input_value = None;
    let mut fused = BTreeSet::new();
    for &id in &order {
        let node = g.node(id);
        let span = node.span;
        let err = |m: String| codegen_error(span, m);
        let (line, col) = source.line_col(span.start);
        let at = format!("{}:{line}:{col}", source.name);
        if fused.contains(&id.index()) {
            continue;
        }
        if let Op::Leaf(leaf) = &node.op {
            if let LeafOp::Input { name, .. } = leaf {
                let len = per_sample(g, id).ok_or_else(|| {
                    err(format!(
                        "int8 inference: input `{name}` is not [batch, ...]"
                    ))
                })?;
                if input_value.is_some() {
                    return Err(err("int8 inference needs exactly one float input".into()));
                }
                input_value = Some(b.new_value(id, len));
            }
            continue;
        }
        let kind = node.op.int8();
        let len = per_sample(g, id);
        match (&node.op, kind) {
            (_, Int8::Alias) => {
                let x = g.operands(id)[0];
                if let Some(&v) = b.value.get(&x.index()) {
                    b.value.insert(id.index(), v);
                }
            }
            (op, Int8::Kernel) => {
                let x = b.operand_value(id, &err)?;
                let w = g.operands(id)[1];
                let weight = param_name(g, w)
                    .filter(|_| matches!(g.node(w).op, Op::Leaf(_)))
                    .ok_or_else(|| {
                        err(format!(
                            "int8 inference: the right operand of `{op}` is not a parameter"
                        ))
                    })?;
                // Output channels: dense `[k, n]` → n, conv `[O, ...]` → O.
                let conv = matches!(op, Op::Conv(_));
                let ws = fixed(g, w);
                let channels = if conv { ws.first() } else { ws.last() }
                    .copied()
                    .unwrap_or(0);
                let mut last = id;
                let mut bias = None;
                if let Some(u) = b.sole_user(last) {
                    if matches!(g.node(u).op, Op::Binary(BinaryOp::Add)) {
                        let ops = g.operands(u);
                        let other = if ops[0] == last { ops[1] } else { ops[0] };
                        if let Some(name) = channel_bias(g, other, channels, conv) {
                            bias = Some(name);
                            fused.insert(u.index());
                            last = u;
                        }
                    }
                }
                let mut relu = false;
                if let Some(u) = b.sole_user(last) {
                    if matches!(g.node(u).op, Op::Unary(UnaryOp::Relu)) {
                        relu = true;
                        fused.insert(u.index());
                        last = u;
                    }
                }
                let len = len
                    .ok_or_else(|| err("int8 inference: the product is not [batch, ...]".into()))?;
                let y = b.new_value(last, len);
                let (xl, yl) = (usize_lit(x), usize_lit(y));
                let bias_t = match &bias {
                    Some(n) => quote!(::core::option::Option::Some(#n.to_string())),
                    None => quote!(::core::option::Option::None),
                };
                let what = match op {
                    Op::Matmul(_) => {
                        if g.ty(g.operands(id)[0]).shape.rank() != 2 || g.ty(w).shape.rank() != 2 {
                            return Err(err(
                                "int8 inference: a dense product must be [batch, k] @ [k, n]"
                                    .into(),
                            ));
                        }
                        b.steps.push(quote! {
                            #rt::quant::Step::Dense {
                                input: #xl, out: #yl, weight: #weight.to_string(), bias: #bias_t, relu: #relu,
                            }
                        });
                        "dense"
                    }
                    Op::Conv(ConvOp::Conv2d(p)) => {
                        let (xs, ws) = (fixed(g, g.operands(id)[0]), fixed(g, w));
                        let [_, c, h, wd] = xs[..] else {
                            return Err(err("int8 inference: conv2d input is not NCHW".into()));
                        };
                        let [o, _, kh, kw] = ws[..] else {
                            return Err(err(
                                "int8 inference: conv2d weight is not [O, C/g, KH, KW]".into(),
                            ));
                        };
                        let [c, h, wd, o, kh, kw, groups] =
                            [c, h, wd, o, kh, kw, p.groups].map(usize_lit);
                        let [s0, s1] = p.stride.map(usize_lit);
                        let [p0, p1] = p.padding.map(usize_lit);
                        let [d0, d1] = p.dilation.map(usize_lit);
                        b.steps.push(quote! {
                            #rt::quant::Step::Conv {
                                input: #xl, out: #yl, weight: #weight.to_string(), bias: #bias_t, relu: #relu,
                                geometry: #rt::conv::Conv2d {
                                    c: #c, h: #h, w: #wd, o: #o, kh: #kh, kw: #kw,
                                    stride: [#s0, #s1], padding: [#p0, #p1], dilation: [#d0, #d1], groups: #groups,
                                },
                            }
                        });
                        "conv2d"
                    }
                    _ => return Err(err(format!("int8 inference: `{op}` has no int8 kernel"))),
                };
                let mut line = format!("{at}: int8 {what} {weight}");
                if let Some(bn) = &bias {
                    line.push_str(&format!(" + {bn}"));
                }
                if relu {
                    line.push_str(" + relu");
                }
                b.report.push(line);
                b.kinds.push((Kind::Int8, x, y));
            }
            (op, Int8::F32 | Int8::Epilogue) => {
                let x = b.operand_value(id, &err)?;
                let xs = fixed(g, g.operands(id)[0]);
                let len =
                    len.ok_or_else(|| err(format!("int8 inference: `{op}` is not [batch, ...]")))?;
                let (step, fields) = match op {
                    Op::Unary(UnaryOp::Relu) => (format_ident!("Relu"), TokenStream::new()),
                    Op::Conv(c @ (ConvOp::MaxPool2d(p) | ConvOp::AvgPool2d(p))) => {
                        let [_, ch, h, wd] = xs[..] else {
                            return Err(err("int8 inference: pooling input is not NCHW".into()));
                        };
                        let [ch, h, wd] = [ch, h, wd].map(usize_lit);
                        let [k0, k1] = p.kernel.map(usize_lit);
                        let [s0, s1] = p.stride.map(usize_lit);
                        let [p0, p1] = p.padding.map(usize_lit);
                        let which = if matches!(c, ConvOp::MaxPool2d(_)) {
                            format_ident!("MaxPool")
                        } else {
                            format_ident!("AvgPool")
                        };
                        let fields = quote! {
                            pool: #rt::conv::Pool2d {
                                c: #ch, h: #h, w: #wd, kernel: [#k0, #k1], stride: [#s0, #s1], padding: [#p0, #p1],
                            },
                        };
                        (which, fields)
                    }
                    Op::Softmax(SoftmaxOp { axis, .. }) if *axis + 1 == xs.len() => {
                        let n = usize_lit(xs[*axis]);
                        (format_ident!("Softmax"), quote!(n: #n,))
                    }
                    _ => {
                        return Err(err(format!(
                            "int8 inference: `{op}` has no int8 kernel and no f32 step here \
                             (int8 plans run dense, conv2d, bias adds, relu, pooling, reshape and softmax over the last axis)"
                        )))
                    }
                };
                let y = b.new_value(id, len);
                let (xl, yl) = (usize_lit(x), usize_lit(y));
                let step_t = quote!(#rt::quant::Step::#step { input: #xl, out: #yl, #fields });
                b.steps.push(step_t);
                b.report
                    .push(format!("{at}: f32 {op} (no int8 kernel: stays f32)"));
                let kind = if matches!(op, Op::Conv(ConvOp::MaxPool2d(_))) {
                    Kind::MaxPool
                } else {
                    Kind::Other
                };
                b.kinds.push((kind, x, y));
                // A byte pooling's line says so (rewritten below).
                if kind == Kind::MaxPool {
                    b.pool_lines.push((
                        b.report.len() - 1,
                        format!("{at}: int8 {op} (on the bytes of its input)"),
                    ));
                }
            }
            (op, Int8::None) => {
                return Err(err(format!(
                    "int8 inference: `{op}` has no int8 kernel and no f32 step in an int8 plan \
                     (int8 plans run dense, conv2d, bias adds, relu, pooling, reshape and softmax)"
                )))
            }
        }
    }
    let input_value = input_value
        .ok_or_else(|| codegen_error(net.span, "int8 inference needs a float input".into()))?;
    let output_value = *b.value.get(&out.index()).ok_or_else(|| {
        codegen_error(
            net.span,
            "int8 inference: the output is not computed per sample".into(),
        )
    })?;
    let on_bytes = byte_poolings(&b.kinds, b.values.len(), output_value);
    let mut pool_step = b
        .kinds
        .iter()
        .zip(on_bytes)
        .filter(|(k, _)| k.0 == Kind::MaxPool);
    for (line, text) in std::mem::take(&mut b.pool_lines) {
        if pool_step.next().is_some_and(|(_, bytes)| bytes) {
            b.report[line] = text;
        }
    }
    let name = super::rust_ident(&net.name);
    let spec = format_ident!("{}_SPEC", screaming(&net.name));
    let values = b.values.iter().map(|&v| usize_lit(v));
    let steps = &b.steps;
    let (iv, ov) = (usize_lit(input_value), usize_lit(output_value));
    let doc = format!(
        " The int8 inference plan of `{}` (`nnc compile --quantize int8`), one step per line:\n\n{}",
        net.name,
        b.report.iter().map(|l| format!(" - {l}\n")).collect::<String>()
    );
    let items = quote! {
        impl #name {
            #[doc = #doc]
            #[allow(dead_code)]
            pub fn int8_plan() -> #rt::quant::Plan {
                #rt::quant::Plan {
                    values: ::std::vec![#(#values),*],
                    input: #iv,
                    output: #ov,
                    steps: ::std::vec![#(#steps),*],
                }
            }

            /// Calibrates and quantizes this model for int8 inference: runs
            /// [`Self::int8_plan`] in f32 over `calibration` (whole samples of
            /// the input, in batches of `batch`), records each int8 layer's
            /// input range, and quantizes the weights per output channel.
            #[allow(dead_code)]
            pub fn quantize_int8(
                &self,
                calibration: &[f32],
                batch: usize,
            ) -> ::core::result::Result<#rt::quant::Int8Model, #rt::quant::PlanError> {
                #rt::quant::Int8Model::calibrate(Self::int8_plan(), &#spec.params, &self.params, calibration, batch)
            }

            /// Loads int8 weights saved (`Int8Model::save`) for this network,
            /// validating every tensor.
            #[allow(dead_code)]
            pub fn load_int8(
                path: impl ::core::convert::AsRef<::std::path::Path>,
            ) -> ::core::result::Result<#rt::quant::Int8Model, #rt::quant::PlanError> {
                #rt::quant::Int8Model::load(path, Self::int8_plan(), &#spec.params)
            }
        }
    };
    Ok(Int8Plan {
        items,
        report: b.report,
    })
}
