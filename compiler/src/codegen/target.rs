//! The code-generation seam: what a kernel's body and a fused loop's element
//! expressions are written as.
//!
//! Everything above this seam is target-independent: which nodes become
//! kernels, fusion, the memory plan, the schedule, the entry points and the
//! `Model` surface. Below it, a [`Target`] writes each kernel's body. The
//! shipped target, [`RustRuntime`], asks each op for its codegen face
//! (`Op::emit`, `UnaryOp::emit_expr`, ...), which call `nnc-runtime`'s
//! kernels; the op stays the unit of change for it. A second target — plain
//! loops without the runtime, calls into a vendor BLAS, explicit SIMD — is a
//! new type implementing this trait that writes the ops it handles its own
//! way and hands the others to [`RustRuntime`] (see
//! `compiler/tests/target.rs`): an addition, not an edit of every op.
//!
//! Bodies see the names [`Kernel`] documents: `b`, `x0`, `x1`, …, `out`
//! (and `scratch`, `key` where the op asks for them).

use crate::graph::Dim;
use crate::ops::{BinaryOp, ConvOp, Kernel, Op, UnaryOp};
use proc_macro2::TokenStream;
use quote::quote;

/// A code-generation target for kernel bodies.
pub trait Target: std::fmt::Debug + Send + Sync {
    /// The body of `op`'s kernel, or `None` for a leaf (an operand, not a
    /// kernel).
    fn kernel(&self, op: &Op, k: &Kernel<'_>) -> Option<TokenStream>;

    /// The element expression of `op` applied to `x` inside a fused loop.
    fn unary(&self, op: &UnaryOp, rt: &TokenStream) -> TokenStream;

    /// The element expression of `op` on `l` and `r` inside a fused loop.
    fn binary(&self, op: &BinaryOp) -> TokenStream;

    /// A matrix product `out = a · b` (`x0` and `x1`, `[m, k]` and `[k, n]`,
    /// either transposed) whose finished blocks are handed to `epilogue`:
    /// a closure `|i0, seg| { ... }` that rewrites `seg`, the block that
    /// starts at element `i0` of `out`, in place. A block never crosses a
    /// row of the product: the closure slices its inputs to it.
    fn matmul_epilogue(&self, p: &Product, epilogue: TokenStream) -> TokenStream;

    /// A convolution (`op`, a forward `conv2d`, over `k`'s operands `x0`
    /// and `x1`, with `scratch`) whose finished samples are handed to
    /// `epilogue`, a closure like [`Target::matmul_epilogue`]'s.
    ///
    /// By default this target's own `conv2d` kernel ([`Target::kernel`])
    /// writes the whole output, then the epilogue rewrites it as one block:
    /// a target that writes its own convolution keeps it on fused nodes.
    /// [`RustRuntime`] hands finished samples to the epilogue while they are
    /// in cache instead.
    fn conv_epilogue(&self, op: &ConvOp, k: &Kernel<'_>, epilogue: TokenStream) -> TokenStream {
        let conv = self
            .kernel(&Op::Conv(*op), k)
            .unwrap_or_else(|| quote!(unreachable!("nnc internal error: conv2d has no kernel");));
        quote! {
            { #conv }
            let epilogue: &dyn Fn(usize, &mut [f32]) = &#epilogue;
            epilogue(0, &mut out[..]);
        }
    }
}

/// A matrix product's dimensions (as `usize` expressions, see
/// [`Kernel::dim`]) and which operands arrive transposed.
#[derive(Debug, Clone)]
pub struct Product<'a> {
    /// Path of the runtime crate.
    pub rt: &'a TokenStream,
    /// Rows of the result.
    pub m: TokenStream,
    /// The inner dimension.
    pub k: TokenStream,
    /// Columns of the result.
    pub n: TokenStream,
    /// Whether `x0` holds `a`'s transpose.
    pub ta: bool,
    /// Whether `x1` holds `b`'s transpose.
    pub tb: bool,
}

/// The shipped target: Rust that calls `nnc-runtime`'s kernels, each body
/// written by its op's codegen face.
#[derive(Debug, Default, Clone, Copy)]
pub struct RustRuntime;

impl Target for RustRuntime {
    fn kernel(&self, op: &Op, k: &Kernel<'_>) -> Option<TokenStream> {
        op.emit(k)
    }

    fn unary(&self, op: &UnaryOp, rt: &TokenStream) -> TokenStream {
        op.emit_expr(rt)
    }

    fn binary(&self, op: &BinaryOp) -> TokenStream {
        op.emit_expr()
    }

    fn matmul_epilogue(&self, p: &Product, epilogue: TokenStream) -> TokenStream {
        let Product {
            rt,
            m,
            k,
            n,
            ta,
            tb,
        } = p;
        quote! {
            #rt::kernels::matmul_then(out, x0, x1, #m, #k, #n, #ta, #tb, #epilogue);
        }
    }

    fn conv_epilogue(&self, op: &ConvOp, k: &Kernel<'_>, epilogue: TokenStream) -> TokenStream {
        op.emit_then(k, epilogue)
    }
}

/// A second target: [`RustRuntime`] with every matrix product written as
/// plain nested loops instead of the runtime's blocked, vectorised GEMM.
/// Slow, but independent of the GEMM's packing, blocking and kernels, so
/// the same model generated for both targets is a differential test of the
/// GEMM (`tests/codegen.rs`), and it shows the seam: one type, no op
/// touched.
#[derive(Debug, Default, Clone, Copy)]
pub struct NaiveProducts;

impl Target for NaiveProducts {
    fn kernel(&self, op: &Op, k: &Kernel<'_>) -> Option<TokenStream> {
        let Op::Matmul(_) = op else {
            return RustRuntime.kernel(op, k);
        };
        let (a, b) = (k.inputs[0].shape.dims(), k.inputs[1].shape.dims());
        let ra = a.len();
        let lead = &a[..ra - 2];
        let p = Product {
            rt: k.rt,
            m: Kernel::dim(a[ra - 2]),
            k: Kernel::dim(a[ra - 1]),
            n: Kernel::dim(b[b.len() - 1]),
            ta: k.transposed.first().copied().unwrap_or(false),
            tb: k.transposed.get(1).copied().unwrap_or(false),
        };
        if lead.iter().all(|&d| d == Dim::Fixed(1)) {
            return Some(loops(&p, quote!(&mut *out), quote!(x0), quote!(x1)));
        }
        // One product per leading index; the right operand is shared when
        // it is a plain matrix (`x @ weight`).
        let batches = Kernel::product(lead);
        let (m, kk, n) = (&p.m, &p.k, &p.n);
        let w = if b.len() == 2 {
            quote!(x1)
        } else {
            quote!(&x1[l * #kk * #n..(l + 1) * #kk * #n])
        };
        let body = loops(
            &p,
            quote!(&mut out[l * #m * #n..(l + 1) * #m * #n]),
            quote!(&x0[l * #m * #kk..(l + 1) * #m * #kk]),
            w,
        );
        Some(quote! {
            for l in 0..#batches {
                #body
            }
        })
    }

    fn unary(&self, op: &UnaryOp, rt: &TokenStream) -> TokenStream {
        RustRuntime.unary(op, rt)
    }

    fn binary(&self, op: &BinaryOp) -> TokenStream {
        RustRuntime.binary(op)
    }

    fn matmul_epilogue(&self, p: &Product, epilogue: TokenStream) -> TokenStream {
        let product = loops(p, quote!(&mut *out), quote!(x0), quote!(x1));
        let n = &p.n;
        // Row by row, as the epilogue requires; a named function rather
        // than a loop calling the closure in place, which clippy rightly
        // calls redundant in hand-written code.
        quote! {
            #product
            fn epilogue(out: &mut [f32], n: usize, f: impl Fn(usize, &mut [f32])) {
                for (r, row) in out.chunks_mut(n.max(1)).enumerate() {
                    f(r * n, row)
                }
            }
            epilogue(out, #n, #epilogue);
        }
    }
}

/// `o = a · w` by definition, over the slices `o`, `a` and `w` (slice
/// expressions), with `a` and `w` read transposed where `p` says so.
fn loops(p: &Product, o: TokenStream, a: TokenStream, w: TokenStream) -> TokenStream {
    let (m, k, n) = (&p.m, &p.k, &p.n);
    let at = if p.ta {
        quote!(q * #m + i)
    } else {
        quote!(i * #k + q)
    };
    let wt = if p.tb {
        quote!(j * #k + q)
    } else {
        quote!(q * #n + j)
    };
    quote! {
        {
            let (o, a, w): (&mut [f32], &[f32], &[f32]) = (#o, #a, #w);
            for i in 0..#m {
                for j in 0..#n {
                    let mut s = 0.0f32;
                    for q in 0..#k {
                        s += a[#at] * w[#wt];
                    }
                    o[i * #n + j] = s;
                }
            }
        }
    }
}
