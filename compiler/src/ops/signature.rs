//! Surface functions: how the language names an op and binds its arguments.
//! Each op family lists its functions next to its rules; lowering binds a
//! call's positional and named arguments against the [`Function`]'s
//! parameters and hands the typed values to `build`.

use super::{Op, OpError};
use crate::graph::{NodeId, Shape, TensorType};
use crate::ir::Init;

/// What kind of value a parameter takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgKind {
    /// A tensor expression.
    Tensor,
    /// An integer literal.
    Int,
    /// A number literal.
    Float,
    /// An axis or a list of axes, negative counting from the end.
    Axes,
    /// An integer or a list of integers, such as a stride `2` or `[2, 1]`.
    Ints,
    /// A shape list such as `[batch, 28, 28]`.
    Shape,
    /// `true` or `false`.
    Bool,
    /// A bare name such as `relu`.
    Name,
    /// An initializer: a name (`he_normal`) or a call (`normal(std: 0.01)`).
    Init,
}

impl ArgKind {
    /// How the kind is described in error messages.
    pub fn describe(self) -> &'static str {
        match self {
            ArgKind::Tensor => "a tensor",
            ArgKind::Int => "an integer",
            ArgKind::Float => "a number",
            ArgKind::Axes => "an axis or a list of axes",
            ArgKind::Ints => "an integer or a list of integers",
            ArgKind::Shape => "a shape list like [batch, 28, 28]",
            ArgKind::Bool => "true or false",
            ArgKind::Name => "a name",
            ArgKind::Init => "an initializer such as `he_normal` or `normal(std: 0.01)`",
        }
    }
}

/// One parameter of a surface function.
#[derive(Clone, Copy, Debug)]
pub struct Param {
    /// The name used for named arguments.
    pub name: &'static str,
    /// The kind of value it takes.
    pub kind: ArgKind,
    /// Whether a call must supply it.
    pub required: bool,
    /// The value an optional parameter takes when a call omits it, where
    /// the signature states one.
    pub default: Option<Lit>,
}

impl Param {
    /// A required parameter.
    pub const fn req(name: &'static str, kind: ArgKind) -> Self {
        Param {
            name,
            kind,
            required: true,
            default: None,
        }
    }

    /// An optional parameter.
    pub const fn opt(name: &'static str, kind: ArgKind) -> Self {
        Param {
            name,
            kind,
            required: false,
            default: None,
        }
    }

    /// The same parameter with a default value.
    pub const fn or(self, default: Lit) -> Self {
        Param {
            default: Some(default),
            ..self
        }
    }
}

/// A default value as a signature states it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Lit {
    /// An integer (for `Int`, `Ints` and `Float` parameters).
    Int(i64),
    /// A number.
    Float(f64),
    /// A flag.
    Bool(bool),
    /// A bare name (for `Name` and `Init` parameters).
    Name(&'static str),
}

impl Lit {
    /// The value a parameter of `kind` takes from this default, as if the
    /// call had written it; `None` for an initializer, which is parsed, and
    /// for a default that does not fit the kind.
    pub fn value(self, kind: ArgKind) -> Option<ArgValue> {
        Some(match (self, kind) {
            (Lit::Int(v), ArgKind::Int) => ArgValue::Int(v),
            (Lit::Int(v), ArgKind::Ints) => ArgValue::Ints(vec![v]),
            (Lit::Int(v), ArgKind::Float) => ArgValue::Float(v as f64),
            (Lit::Float(v), ArgKind::Float) => ArgValue::Float(v),
            (Lit::Bool(b), ArgKind::Bool) => ArgValue::Bool(b),
            (Lit::Name(n), ArgKind::Name) => ArgValue::Name(n.to_string()),
            _ => return None,
        })
    }
}

/// A bound argument value.
#[derive(Clone, Debug, PartialEq)]
pub enum ArgValue {
    /// A lowered tensor and its type.
    Tensor(NodeId, TensorType),
    /// An integer.
    Int(i64),
    /// A number.
    Float(f64),
    /// Axes as written (possibly negative).
    Axes(Vec<i64>),
    /// Integers as written (one, or a list).
    Ints(Vec<i64>),
    /// A shape.
    Shape(Shape),
    /// A flag.
    Bool(bool),
    /// A bare name.
    Name(String),
    /// A parsed initializer.
    Init(Init),
}

/// The arguments of one call, in parameter order (`None` where omitted).
#[derive(Clone, Debug, Default)]
pub struct Args {
    /// Values in the order of the function's parameters.
    pub values: Vec<Option<ArgValue>>,
}

impl Args {
    /// The tensor at parameter `i` (lowering guarantees required ones exist).
    pub fn tensor(&self, i: usize) -> Result<(NodeId, &TensorType), OpError> {
        match self.values.get(i) {
            Some(Some(ArgValue::Tensor(id, ty))) => Ok((*id, ty)),
            _ => Err(OpError::internal(format!("argument {i} is not a tensor"))),
        }
    }

    /// The integer at parameter `i`, if given.
    pub fn int(&self, i: usize) -> Option<i64> {
        match self.values.get(i) {
            Some(Some(ArgValue::Int(v))) => Some(*v),
            _ => None,
        }
    }

    /// The number at parameter `i`, if given (integers widen).
    pub fn float(&self, i: usize) -> Option<f64> {
        match self.values.get(i) {
            Some(Some(ArgValue::Float(v))) => Some(*v),
            Some(Some(ArgValue::Int(v))) => Some(*v as f64),
            _ => None,
        }
    }

    /// The axes at parameter `i`, if given.
    pub fn axes(&self, i: usize) -> Option<&[i64]> {
        match self.values.get(i) {
            Some(Some(ArgValue::Axes(v))) => Some(v),
            _ => None,
        }
    }

    /// The integers at parameter `i`, if given.
    pub fn ints(&self, i: usize) -> Option<&[i64]> {
        match self.values.get(i) {
            Some(Some(ArgValue::Ints(v))) => Some(v),
            _ => None,
        }
    }

    /// The shape at parameter `i`, if given.
    pub fn shape(&self, i: usize) -> Option<&Shape> {
        match self.values.get(i) {
            Some(Some(ArgValue::Shape(s))) => Some(s),
            _ => None,
        }
    }

    /// The flag at parameter `i`, if given.
    pub fn bool(&self, i: usize) -> Option<bool> {
        match self.values.get(i) {
            Some(Some(ArgValue::Bool(b))) => Some(*b),
            _ => None,
        }
    }

    /// The bare name at parameter `i`, if given.
    pub fn name(&self, i: usize) -> Option<&str> {
        match self.values.get(i) {
            Some(Some(ArgValue::Name(n))) => Some(n),
            _ => None,
        }
    }
}

/// What a surface function builds: the op and its operands.
pub type Built = (Op, Vec<NodeId>);

/// A function of the language that names a primitive op.
pub struct Function {
    /// The name in the language.
    pub name: &'static str,
    /// Its parameters, positional order first.
    pub params: &'static [Param],
    /// One line for `docs/language.md` and error hints.
    pub doc: &'static str,
    /// Turns bound arguments into the op and its operands.
    pub build: fn(&Args) -> Result<Built, OpError>,
}

/// Normalises one axis against a rank, with a clear error.
pub(crate) fn normalize_axis(axis: i64, rank: usize) -> Result<usize, OpError> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if (0..r).contains(&a) {
        Ok(a as usize)
    } else {
        Err(OpError::argument(format!(
            "axis {axis} is out of range for a tensor of rank {rank}"
        )))
    }
}

/// Normalises a list of axes: sorted, unique, all in range.
pub(crate) fn normalize_axes(axes: &[i64], rank: usize) -> Result<Vec<usize>, OpError> {
    let mut out = axes
        .iter()
        .map(|&a| normalize_axis(a, rank))
        .collect::<Result<Vec<_>, _>>()?;
    out.sort_unstable();
    let n = out.len();
    out.dedup();
    if out.len() != n {
        return Err(OpError::argument("an axis is listed twice"));
    }
    Ok(out)
}
