//! The code of fused loops: each root's loop body (`out[i] = expression`)
//! with its epilogue or in-place form, and the element expression written
//! against the loop's inputs.

use super::*;

impl Fusion {
    /// The loop body of a fused root: `out[i] = expression`.
    /// With an epilogue, the product runs first and the loop over each
    /// finished block of it (`*o` is the product's element).
    pub fn emit(
        &self,
        tg: &TrainingGraph,
        root: NodeId,
        rt: &TokenStream,
        target: &dyn Target,
    ) -> Option<TokenStream> {
        self.groups.get(&root.index())?;
        let inputs = self.inputs(tg, root);
        // An epilogue's product and an in-place loop's input are both the
        // element already in `out`.
        let product = self.epilogue_product(root).or(self.in_place_input(root));
        let out_shape = &tg.graph.ty(root).shape;
        // A loop whose broadcast inputs are all blocks of one length runs
        // block by block, each block's index computed once (`ib`), not a
        // division per element. Not in a matrix product's epilogue: its
        // segments are tile rows, not whole blocks.
        let mut inners =
            inputs
                .iter()
                .filter_map(|&x| match access(&tg.graph.ty(x).shape, out_shape) {
                    Some(Access::Block { inner, .. }) => Some(inner),
                    _ => None,
                });
        let first = inners.next();
        let matmul_epilogue = self
            .epilogue_product(root)
            .is_some_and(|p| matches!(tg.graph.node(p).op, Op::Matmul(_)));
        let block = first.filter(|&f| inners.all(|x| x == f) && !matmul_epilogue);
        let expr = self.expr(
            tg,
            root,
            &Loop {
                inputs: &inputs,
                out: out_shape,
                rt,
                target,
                product,
                block,
                sliced: matmul_epilogue,
            },
        );
        let mentioned =
            |name: &proc_macro2::Ident| super::super::kernels::mentions(&expr, &name.to_string());
        let guards = inputs.iter().enumerate().filter_map(|(j, &x)| {
            let name = format_ident!("x{}", j);
            let same = access(&tg.graph.ty(x).shape, out_shape) == Some(Access::Same);
            (same && Some(x) != product && !matmul_epilogue && mentioned(&name))
                .then(|| quote!(let #name = &#name[..out.len()];))
        });
        let guards: Vec<TokenStream> = guards.collect();
        // A matrix product's epilogue segment lies in one row of the
        // product: the inputs it reads element by element (the same shape,
        // or a bias row) are sliced to the segment once, so the loop indexes
        // them by `j` without bounds checks or a remainder, and vectorises.
        let slices = inputs.iter().enumerate().filter_map(|(j, &x)| {
            let name = format_ident!("x{}", j);
            if !matmul_epilogue || Some(x) == product || !mentioned(&name) {
                return None;
            }
            match access(&tg.graph.ty(x).shape, out_shape)? {
                Access::Same => Some(quote!(let #name = &#name[i0..][..seg.len()];)),
                Access::Suffix(n) => {
                    let n = proc_macro2::Literal::usize_suffixed(n);
                    Some(quote!(let #name = &#name[i0 % #n..][..seg.len()];))
                }
                _ => None,
            }
        });
        let slices: Vec<TokenStream> = slices.collect();
        let uses_i = super::super::kernels::mentions(&expr, "i");
        let uses_j = super::super::kernels::mentions(&expr, "j");
        if let Some(inner) = block {
            let inner = proc_macro2::Literal::usize_suffixed(inner);
            let index = uses_i.then(|| quote!(let i = ib * #inner + j;));
            let (head, first) = match self.epilogue_product(root) {
                Some(_) => (
                    quote!(for (r, row) in seg.chunks_mut(#inner).enumerate()),
                    quote!(let ib = i0 / #inner + r;),
                ),
                None => (
                    quote!(for (ib, row) in out.chunks_mut(#inner).enumerate()),
                    quote!(),
                ),
            };
            let inner_head = if uses_i {
                quote!(for (j, o) in row.iter_mut().enumerate())
            } else {
                quote!(for o in row.iter_mut())
            };
            let body = quote! {
                #head {
                    #first
                    #inner_head {
                        #index
                        *o = #expr;
                    }
                }
            };
            let Some(product) = self.epilogue_product(root) else {
                return Some(quote! {
                    #(#guards)*
                    #body
                });
            };
            return Some(self.conv_call(
                tg,
                product,
                rt,
                target,
                guards,
                quote!(|i0, seg| { #body }),
            ));
        }
        let Some(product) = self.epilogue_product(root) else {
            let head = if uses_i {
                quote!(for (i, o) in out.iter_mut().enumerate())
            } else {
                quote!(for o in out.iter_mut())
            };
            return Some(quote! {
                #(#guards)*
                #head {
                    *o = #expr;
                }
            });
        };
        let epilogue = if uses_i || uses_j {
            let index = uses_i.then(|| quote!(let i = i0 + j;));
            quote! {
                |i0, seg| {
                    #(#slices)*
                    for (j, o) in seg.iter_mut().enumerate() {
                        #index
                        *o = #expr;
                    }
                }
            }
        } else {
            quote! {
                |_, seg| {
                    for o in seg.iter_mut() {
                        *o = #expr;
                    }
                }
            }
        };
        if let Op::Conv(_) = &tg.graph.node(product).op {
            return Some(self.conv_call(tg, product, rt, target, guards, epilogue));
        }
        let ops = tg.graph.operands(product);
        let (a, b) = (
            tg.graph.ty(ops[0]).shape.dims(),
            tg.graph.ty(ops[1]).shape.dims(),
        );
        let ta = self.folded_transposes.contains_key(&ops[0].index());
        let tb = self.folded_transposes.contains_key(&ops[1].index());
        let p = Product {
            rt,
            m: Kernel::dim(a[0]),
            k: Kernel::dim(a[1]),
            n: Kernel::dim(b[1]),
            ta,
            tb,
        };
        let call = target.matmul_epilogue(&p, epilogue);
        Some(quote! {
            #(#guards)*
            #call
        })
    }

    /// The call of a convolution `product` with `epilogue`, after `guards`.
    fn conv_call(
        &self,
        tg: &TrainingGraph,
        product: NodeId,
        rt: &TokenStream,
        target: &dyn Target,
        guards: Vec<TokenStream>,
        epilogue: TokenStream,
    ) -> TokenStream {
        let Op::Conv(op) = &tg.graph.node(product).op else {
            return quote!(unreachable!("nnc internal error: not a convolution"););
        };
        let ops = tg.graph.operands(product);
        let logical: Vec<_> = ops.iter().map(|&o| tg.graph.ty(o).clone()).collect();
        let k = Kernel {
            inputs: &logical,
            out: tg.graph.ty(product),
            rt,
            transposed: &[],
        };
        let call = target.conv_epilogue(op, &k, epilogue);
        quote! {
            #(#guards)*
            #call
        }
    }

    fn expr(&self, tg: &TrainingGraph, id: NodeId, l: &Loop<'_>) -> TokenStream {
        let Loop {
            inputs,
            out,
            rt,
            target,
            product,
            block,
            sliced,
        } = *l;
        let operand = |o: NodeId| -> TokenStream {
            if self.into.contains_key(&o.index()) {
                return self.expr(tg, o, l);
            }
            if Some(o) == product {
                return quote!(*o);
            }
            let j = inputs.iter().position(|&x| x == o).unwrap_or(0);
            let x = format_ident!("x{}", j);
            match access(&tg.graph.ty(o).shape, out) {
                Some(Access::Scalar) => quote!(#x[0]),
                Some(Access::Same | Access::Suffix(_)) if sliced => quote!(#x[j]),
                Some(Access::Suffix(n)) => {
                    let n = proc_macro2::Literal::usize_suffixed(n);
                    quote!(#x[i % #n])
                }
                Some(Access::Block { n, inner }) if block == Some(inner) => {
                    let n = proc_macro2::Literal::usize_suffixed(n);
                    quote!(#x[ib % #n])
                }
                Some(Access::Block { n, inner }) => {
                    let n = proc_macro2::Literal::usize_suffixed(n);
                    let inner = proc_macro2::Literal::usize_suffixed(inner);
                    quote!(#x[(i / #inner) % #n])
                }
                _ => quote!(#x[i]),
            }
        };
        let ops = tg.graph.operands(id);
        match &tg.graph.node(id).op {
            Op::Unary(u) => {
                let x = operand(ops[0]);
                let e = target.unary(u, rt);
                quote!({ let x = #x; #e })
            }
            Op::Binary(b) => {
                let (l, r) = (operand(ops[0]), operand(ops[1]));
                let e = target.binary(b);
                quote!({ let l = #l; let r = #r; #e })
            }
            _ => quote!(0.0),
        }
    }
}

/// What a fused loop's element expression is written against: the loop's
/// inputs (`x0`, `x1`, …), the shape it runs over, the target, and the
/// product an epilogue or in-place loop finds in `*o`.
#[derive(Clone, Copy)]
struct Loop<'a> {
    inputs: &'a [NodeId],
    out: &'a Shape,
    rt: &'a TokenStream,
    target: &'a dyn Target,
    product: Option<NodeId>,
    /// The block length a block-by-block loop runs over (its index `ib`).
    block: Option<usize>,
    /// A matrix product's epilogue: inputs of the output's shape and bias
    /// rows are sliced to the segment and indexed by `j`.
    sliced: bool,
}
