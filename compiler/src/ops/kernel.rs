//! The codegen face's context: what an op needs to emit the body of its f32
//! kernel. Bodies refer to `b` (the batch size), `x0`, `x1`, … (operand
//! slices: `&[f32]`, or `&[u32]` for labels) and `out` (`&mut [f32]`), and
//! call `nnc_runtime::kernels` through the path in `rt`.

use crate::graph::{Dim, Shape, TensorType};
use proc_macro2::{Literal, TokenStream};
use quote::quote;

/// One kernel's operand and result types, and the runtime path.
pub struct Kernel<'a> {
    /// Operand types, in order.
    pub inputs: &'a [TensorType],
    /// Result type.
    pub out: &'a TensorType,
    /// Path of the runtime crate, e.g. `::nnc::runtime`.
    pub rt: &'a TokenStream,
    /// Per operand: whether the slice holds the operand's transpose (a
    /// transpose folded into this kernel; only matmul accepts them).
    pub transposed: &'a [bool],
}

impl Kernel<'_> {
    /// A dimension as a `usize` expression: a literal, or `b`.
    pub fn dim(d: Dim) -> TokenStream {
        match d {
            Dim::Batch => quote!(b),
            Dim::Fixed(n) => {
                let n = Literal::usize_suffixed(n);
                quote!(#n)
            }
        }
    }

    /// A shape as an array expression `[b, 784usize]`.
    pub fn dims(s: &Shape) -> TokenStream {
        let d = s.dims().iter().map(|&d| Self::dim(d));
        quote!([#(#d),*])
    }

    /// The product of some dimensions as a `usize` expression (a product
    /// without parentheses: an argument, or a factor of another product).
    pub fn product(dims: &[Dim]) -> TokenStream {
        let fixed: usize = dims
            .iter()
            .map(|d| match d {
                Dim::Fixed(n) => *n,
                Dim::Batch => 1,
            })
            .product();
        let batches = dims.iter().filter(|d| **d == Dim::Batch).count();
        let f = Literal::usize_suffixed(fixed);
        let mut factors: Vec<TokenStream> = (0..batches).map(|_| quote!(b)).collect();
        if fixed != 1 || factors.is_empty() {
            factors.insert(0, quote!(#f));
        }
        if factors.len() == 1 {
            factors.remove(0)
        } else {
            // Joined by hand (`#(#f)**` repeats with a trailing `*`
            // instead of separating with one); no parentheses, so callers
            // use it only as an argument or a factor.
            let first = factors.remove(0);
            quote!(#first #(* #factors)*)
        }
    }

    /// An f32 literal.
    pub fn f32(v: f64) -> TokenStream {
        // Never a panic on a value that is not a finite f32 (lowering
        // refuses those with a diagnostic; this is the backstop).
        nnc_spec::tokens::f32_lit(v as f32)
    }

    /// A `&[bool; rank]` axis mask expression.
    pub fn mask(rank: usize, axes: &[usize]) -> TokenStream {
        let m = (0..rank).map(|i| axes.is_empty() || axes.contains(&i));
        quote!([#(#m),*])
    }

    /// Whether a shape has exactly one element whatever the batch size.
    pub fn is_scalar(s: &Shape) -> bool {
        s.dims().iter().all(|&d| d == Dim::Fixed(1))
    }
}
