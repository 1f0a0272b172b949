//! The abstract syntax tree. Every node keeps the span of its source text.

use crate::diagnostic::Span;

/// A name with its span.
#[derive(Clone, Debug, PartialEq)]
pub struct Ident {
    /// The text.
    pub name: String,
    /// Where it is.
    pub span: Span,
}

/// A whole source file.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct File {
    /// `network` blocks in source order.
    pub networks: Vec<NetworkDef>,
    /// `train` blocks in source order.
    pub trains: Vec<TrainDef>,
}

/// `network NAME { ... }`
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkDef {
    /// The network's name.
    pub name: Ident,
    /// Its statements in order.
    pub stmts: Vec<Stmt>,
    /// The whole block.
    pub span: Span,
}

/// One statement of a network.
#[derive(Clone, Debug, PartialEq)]
pub struct Stmt {
    /// What it declares.
    pub kind: StmtKind,
    /// The whole statement.
    pub span: Span,
}

/// The statements of a network.
#[derive(Clone, Debug, PartialEq)]
pub enum StmtKind {
    /// `input x: f32[batch, 784];`
    Input {
        /// Bound name.
        name: Ident,
        /// Declared type.
        ty: TypeExpr,
    },
    /// `input tokens: class[batch, 16] of 10;`: integer ids fed as an
    /// input (available to `predict`, unlike labels).
    Tokens {
        /// Bound name.
        name: Ident,
        /// Declared dimensions.
        dims: Vec<DimExpr>,
        /// The id count and its span.
        classes: (u64, Span),
    },
    /// `label y: class[batch] of 10;`
    Label {
        /// Bound name.
        name: Ident,
        /// Declared dimensions.
        dims: Vec<DimExpr>,
        /// The class count and its span.
        classes: (u64, Span),
    },
    /// `param w: f32[784, 128] = he_normal;`
    Param {
        /// Bound name.
        name: Ident,
        /// Declared type.
        ty: TypeExpr,
        /// The initializer expression, if given.
        init: Option<Expr>,
    },
    /// `h = expr;`
    Let {
        /// Bound name.
        name: Ident,
        /// The value.
        value: Expr,
    },
    /// `output probs = expr;` or `output h;`
    Output {
        /// Output name.
        name: Ident,
        /// The value; `None` exports the existing binding of the same name.
        value: Option<Expr>,
    },
    /// `loss expr;`
    Loss {
        /// The loss value.
        value: Expr,
    },
}

/// `f32[batch, 784]`
#[derive(Clone, Debug, PartialEq)]
pub struct TypeExpr {
    /// The dtype name and its span.
    pub dtype: Ident,
    /// Dimensions.
    pub dims: Vec<DimExpr>,
    /// The whole type.
    pub span: Span,
}

/// One dimension as written.
#[derive(Clone, Debug, PartialEq)]
pub enum DimExpr {
    /// A number.
    Fixed(u64, Span),
    /// A name (only `batch` is defined).
    Named(Ident),
}

impl DimExpr {
    /// Where it is.
    pub fn span(&self) -> Span {
        match self {
            DimExpr::Fixed(_, s) => *s,
            DimExpr::Named(i) => i.span,
        }
    }
}

/// An expression with its span.
#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    /// What it is.
    pub kind: ExprKind,
    /// Where it is.
    pub span: Span,
}

impl Drop for Expr {
    /// Frees the tree with an explicit stack: a chain `a + b + c + …` nests
    /// as deep as it is long on its left side, and the compiler-generated
    /// drop would recurse that deep.
    fn drop(&mut self) {
        fn has_children(kind: &ExprKind) -> bool {
            matches!(
                kind,
                ExprKind::Binary { .. }
                    | ExprKind::Pipe { .. }
                    | ExprKind::Neg(_)
                    | ExprKind::List(_)
                    | ExprKind::Call { .. }
            )
        }
        fn take(e: &mut Expr) -> ExprKind {
            std::mem::replace(&mut e.kind, ExprKind::Bool(false))
        }
        if !has_children(&self.kind) {
            return;
        }
        let mut stack = vec![take(self)];
        // Each child's kind is moved onto the stack before the child is
        // freed, so every drop below sees a leaf.
        while let Some(kind) = stack.pop() {
            match kind {
                ExprKind::Binary {
                    mut lhs, mut rhs, ..
                }
                | ExprKind::Pipe { mut lhs, mut rhs } => {
                    stack.push(take(&mut lhs));
                    stack.push(take(&mut rhs));
                }
                ExprKind::Neg(mut x) => stack.push(take(&mut x)),
                ExprKind::List(items) => stack.extend(items.into_iter().map(|mut e| take(&mut e))),
                ExprKind::Call { args, .. } => {
                    stack.extend(args.into_iter().map(|mut a| take(&mut a.value)));
                }
                _ => {}
            }
        }
    }
}

/// Binary operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `@`
    Matmul,
}

/// The kinds of expression.
#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    /// A numeric literal; `is_int` when written without `.` or exponent.
    Number {
        /// Its value.
        value: f64,
        /// Whether it was written as an integer.
        is_int: bool,
        /// The literal as written (`1e-3`), for messages and for integers
        /// read exactly (a seed above 2^53 is no `f64`).
        text: String,
    },
    /// `true` / `false`.
    Bool(bool),
    /// `"text"`, escapes resolved (only in `train` blocks: file and column
    /// names).
    Str(String),
    /// A name.
    Name(Ident),
    /// `[a, b, c]`
    List(Vec<Expr>),
    /// `f(a, name: b)`
    Call {
        /// The function name.
        func: Ident,
        /// Arguments in order.
        args: Vec<Arg>,
    },
    /// `a op b`
    Binary {
        /// The operator.
        op: BinOp,
        /// Left operand.
        lhs: Box<Expr>,
        /// Right operand.
        rhs: Box<Expr>,
    },
    /// `-a`
    Neg(Box<Expr>),
    /// `a |> f(args)` ≡ `f(a, args)`; `a |> f` ≡ `f(a)`.
    Pipe {
        /// The piped value.
        lhs: Box<Expr>,
        /// The function (a name or a call).
        rhs: Box<Expr>,
    },
}

/// A call argument, positional or named.
#[derive(Clone, Debug, PartialEq)]
pub struct Arg {
    /// The name, for `name: value`.
    pub name: Option<Ident>,
    /// The value.
    pub value: Expr,
}

/// `train NAME { key: value; ... }`
#[derive(Clone, Debug, PartialEq)]
pub struct TrainDef {
    /// The network it trains.
    pub name: Ident,
    /// Its settings in order.
    pub settings: Vec<Setting>,
    /// The whole block.
    pub span: Span,
}

/// `key: value;`
#[derive(Clone, Debug, PartialEq)]
pub struct Setting {
    /// The key.
    pub key: Ident,
    /// The value.
    pub value: Expr,
    /// The whole setting.
    pub span: Span,
}
