//! Tensor types: element type and shape, with one symbolic `batch` dimension.

use std::fmt;

/// One dimension of a shape: a fixed size, or the symbolic batch size that is
/// only known when the network runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dim {
    /// The batch dimension, bound at run time.
    Batch,
    /// A size known at compile time.
    Fixed(usize),
}

impl Dim {
    /// The concrete size once the batch size is known.
    pub fn resolve(self, batch: usize) -> usize {
        match self {
            Dim::Batch => batch,
            Dim::Fixed(n) => n,
        }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Batch => f.write_str("batch"),
            Dim::Fixed(n) => write!(f, "{n}"),
        }
    }
}

/// A shape: a list of dimensions, outermost first (row-major).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Shape(pub Vec<Dim>);

impl Shape {
    /// The shape of a scalar.
    pub fn scalar() -> Self {
        Shape(Vec::new())
    }

    /// A shape of fixed dimensions.
    pub fn fixed(dims: &[usize]) -> Self {
        Shape(dims.iter().map(|&d| Dim::Fixed(d)).collect())
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.0.len()
    }

    /// The dimensions.
    pub fn dims(&self) -> &[Dim] {
        &self.0
    }

    /// Concrete sizes for a batch size.
    pub fn resolve(&self, batch: usize) -> Vec<usize> {
        self.0.iter().map(|d| d.resolve(batch)).collect()
    }

    /// How many times the symbolic batch dimension occurs.
    pub fn batch_power(&self) -> i32 {
        self.0.iter().filter(|d| **d == Dim::Batch).count() as i32
    }

    /// Product of the fixed dimensions; `None` on overflow.
    pub fn fixed_numel(&self) -> Option<usize> {
        self.0.iter().try_fold(1usize, |acc, d| match d {
            Dim::Batch => Some(acc),
            Dim::Fixed(n) => acc.checked_mul(*n),
        })
    }

    /// Number of elements for a batch size, saturating on overflow.
    pub fn numel(&self, batch: usize) -> usize {
        self.0
            .iter()
            .fold(1usize, |acc, d| acc.saturating_mul(d.resolve(batch)))
    }

    /// Whether the shape mentions the batch dimension.
    pub fn has_batch(&self) -> bool {
        self.batch_power() > 0
    }

    /// Normalises a possibly negative axis (`-1` is the last) for this rank.
    pub fn axis(&self, axis: i64) -> Option<usize> {
        let rank = self.rank() as i64;
        let a = if axis < 0 { axis + rank } else { axis };
        (0..rank).contains(&a).then_some(a as usize)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

/// The element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit floats (the reference interpreter computes them in f64).
    F32,
    /// Integer class indices in `0..classes`.
    Class {
        /// How many classes there are.
        classes: usize,
    },
}

/// A tensor's element type and shape.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TensorType {
    /// Element type.
    pub dtype: DType,
    /// Shape.
    pub shape: Shape,
}

impl TensorType {
    /// An f32 tensor of a shape.
    pub fn f32(shape: Shape) -> Self {
        TensorType {
            dtype: DType::F32,
            shape,
        }
    }

    /// An f32 scalar.
    pub fn scalar() -> Self {
        TensorType::f32(Shape::scalar())
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.dtype {
            DType::F32 => write!(f, "f32{}", self.shape),
            DType::Class { classes } => write!(f, "class{} of {classes}", self.shape),
        }
    }
}
