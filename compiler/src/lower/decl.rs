//! Declarations: inputs, labels, token ids and parameters, with their
//! shapes checked against the size limit.

use super::{Lowerer, L, MAX_ELEMENTS};
use crate::diagnostic::{Diagnostic, ErrorKind, Span};
use crate::graph::{DType, Dim, NodeId, Shape, TensorType};
use crate::ir::{Init, InputDecl, InputKind, ParamDecl};
use crate::ops::{LeafOp, Op};
use crate::syntax::ast::{self, DimExpr, Expr, TypeExpr};

impl Lowerer {
    pub(super) fn shape(&mut self, dims: &[DimExpr], allow_batch: bool) -> L<Shape> {
        let mut out = Vec::with_capacity(dims.len());
        for d in dims {
            match d {
                DimExpr::Fixed(0, sp) => {
                    return Err(self.report(
                        Diagnostic::new(ErrorKind::Invalid, *sp, "a dimension must be at least 1")
                            .with_label("zero-sized"),
                    ))
                }
                DimExpr::Fixed(n, sp) => match usize::try_from(*n) {
                    Ok(n) if n <= MAX_ELEMENTS => out.push(Dim::Fixed(n)),
                    _ => {
                        return Err(self.report(
                            Diagnostic::new(ErrorKind::Invalid, *sp, "dimension is too large")
                                .with_label("too large"),
                        ))
                    }
                },
                DimExpr::Named(id) if id.name == "batch" => {
                    if !allow_batch {
                        return Err(self.report(
                            Diagnostic::new(
                                ErrorKind::Invalid,
                                id.span,
                                "a parameter's shape cannot depend on the batch size",
                            )
                            .with_label("`batch` not allowed here"),
                        ));
                    }
                    out.push(Dim::Batch);
                }
                DimExpr::Named(id) => {
                    return Err(self.report(
                        Diagnostic::new(
                            ErrorKind::UnknownName,
                            id.span,
                            format!(
                                "unknown dimension `{}`; expected an integer or `batch`",
                                id.name
                            ),
                        )
                        .with_label("unknown dimension"),
                    ))
                }
            }
        }
        let shape = Shape(out);
        if shape.fixed_numel().is_none_or(|n| n > MAX_ELEMENTS) {
            let span = dims.first().map_or(Span::default(), |d| {
                d.span().to(dims[dims.len() - 1].span())
            });
            return Err(self.report(
                Diagnostic::new(ErrorKind::Invalid, span, "tensor has too many elements")
                    .with_label("more than 2^40 elements"),
            ));
        }
        Ok(shape)
    }

    pub(super) fn tensor_type(&mut self, ty: &TypeExpr, allow_batch: bool) -> L<Shape> {
        if ty.dtype.name != "f32" {
            return Err(self.report(
                Diagnostic::new(
                    ErrorKind::Invalid,
                    ty.dtype.span,
                    format!("unknown element type `{}`; expected `f32`", ty.dtype.name),
                )
                .with_label("unknown type"),
            ));
        }
        self.shape(&ty.dims, allow_batch)
    }

    pub(super) fn leaf(&mut self, leaf: LeafOp, span: Span) -> L<NodeId> {
        self.graph
            .add(Op::Leaf(leaf), &[], span)
            .map_err(|e| self.report(Diagnostic::new(ErrorKind::Internal, span, e.message)))
    }

    pub(super) fn input_decl(&mut self, name: &ast::Ident, ty: &TypeExpr, span: Span) -> L<NodeId> {
        let shape = self.tensor_type(ty, true)?;
        let node = self.leaf(
            LeafOp::Input {
                name: name.name.clone(),
                shape: shape.clone(),
            },
            name.span,
        )?;
        self.graph.set_name(node, &name.name);
        self.inputs.push(InputDecl {
            name: name.name.clone(),
            kind: InputKind::Features,
            node,
            ty: TensorType::f32(shape),
            span,
        });
        Ok(node)
    }

    pub(super) fn label_decl(
        &mut self,
        name: &ast::Ident,
        dims: &[DimExpr],
        (classes, cspan): (u64, Span),
        span: Span,
        tokens: bool,
    ) -> L<NodeId> {
        let shape = self.shape(dims, true)?;
        let classes = match usize::try_from(classes) {
            Ok(c) if (1..=1 << 24).contains(&c) => c,
            _ => {
                return Err(self.report(
                    Diagnostic::new(
                        ErrorKind::Invalid,
                        cspan,
                        "the class count must be between 1 and 16777216",
                    )
                    .with_label("invalid class count"),
                ))
            }
        };
        // Token ids are fed with the float inputs (predict() needs them);
        // labels only to training and loss.
        let (leaf, kind) = if tokens {
            let leaf = LeafOp::Tokens {
                name: name.name.clone(),
                shape: shape.clone(),
                classes,
            };
            (leaf, InputKind::Features)
        } else {
            let leaf = LeafOp::Label {
                name: name.name.clone(),
                shape: shape.clone(),
                classes,
            };
            (leaf, InputKind::Labels)
        };
        let node = self.leaf(leaf, name.span)?;
        self.graph.set_name(node, &name.name);
        self.inputs.push(InputDecl {
            name: name.name.clone(),
            kind,
            node,
            ty: TensorType {
                dtype: DType::Class { classes },
                shape,
            },
            span,
        });
        Ok(node)
    }

    pub(super) fn param_decl(
        &mut self,
        name: &ast::Ident,
        ty: &TypeExpr,
        init: Option<&Expr>,
    ) -> L<NodeId> {
        let shape = self.tensor_type(ty, false)?;
        let init = match init {
            Some(e) => self.init(e)?,
            None => crate::ir::default_init(&shape),
        };
        self.add_param(name.name.clone(), shape, init, name.span)
    }

    /// Registers a parameter and its leaf node.
    pub(super) fn add_param(
        &mut self,
        name: String,
        shape: Shape,
        init: Init,
        span: Span,
    ) -> L<NodeId> {
        if shape.fixed_numel().is_none_or(|n| n > MAX_ELEMENTS) {
            let d = Diagnostic::new(
                ErrorKind::Invalid,
                span,
                format!("parameter `{name}` has too many elements: f32{shape}"),
            )
            .with_label("more than 2^40 elements");
            return Err(self.report(d));
        }
        let node = self.leaf(
            LeafOp::Param {
                name: name.clone(),
                shape: shape.clone(),
            },
            span,
        )?;
        self.graph.set_name(node, &name);
        self.params.push(ParamDecl {
            name,
            node,
            shape,
            init,
            span,
        });
        Ok(node)
    }
}
