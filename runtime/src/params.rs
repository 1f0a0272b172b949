//! Where each named parameter lives in the flat parameter buffer.
//!
//! Generated code keeps all parameters in one `f32` buffer (and all gradients
//! in another with the same layout) so the optimizer is one loop and a
//! gradient allreduce is one call. A [`ParamSpec`] table maps the language's
//! names (`h1.weight`) to slices of that buffer; checkpoints and initializers
//! go through it.

use std::collections::HashSet;

use thiserror::Error;

pub use nnc_spec::model::ParamSpec;

/// A parameter table that does not describe a valid flat buffer.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum LayoutError {
    /// `len` disagrees with the product of the shape.
    #[error("parameter `{name}`: len {len} but shape {shape:?} has {product} elements")]
    LenMismatch {
        /// Parameter name.
        name: String,
        /// Declared shape.
        shape: Vec<usize>,
        /// Declared length.
        len: usize,
        /// Product of the shape.
        product: usize,
    },
    /// The parameter reaches past the end of the buffer.
    #[error("parameter `{name}` ends at {end}, past the buffer length {total}")]
    OutOfRange {
        /// Parameter name.
        name: String,
        /// One past its last element.
        end: usize,
        /// Buffer length.
        total: usize,
    },
    /// Two parameters share elements.
    #[error("parameters `{a}` and `{b}` overlap in the flat buffer")]
    Overlap {
        /// First parameter.
        a: String,
        /// Second parameter.
        b: String,
    },
    /// The same name appears twice.
    #[error("parameter name `{0}` appears twice")]
    DuplicateName(String),
}

/// Checks a table against a buffer of `total` elements: lengths match shapes,
/// everything in range, no overlaps, unique names. Gaps are allowed (padding
/// for alignment is a legitimate layout choice).
pub fn validate_layout(specs: &[ParamSpec], total: usize) -> Result<(), LayoutError> {
    let mut names = HashSet::new();
    for s in specs {
        let product = s
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .unwrap_or(usize::MAX);
        if product != s.len {
            return Err(LayoutError::LenMismatch {
                name: s.name.to_string(),
                shape: s.shape.to_vec(),
                len: s.len,
                product,
            });
        }
        let end = s.offset.saturating_add(s.len);
        if end > total {
            return Err(LayoutError::OutOfRange {
                name: s.name.to_string(),
                end,
                total,
            });
        }
        if !names.insert(&*s.name) {
            return Err(LayoutError::DuplicateName(s.name.to_string()));
        }
    }
    let mut sorted: Vec<&ParamSpec> = specs.iter().filter(|s| s.len > 0).collect();
    sorted.sort_by_key(|s| s.offset);
    for w in sorted.windows(2) {
        if w[0].offset + w[0].len > w[1].offset {
            return Err(LayoutError::Overlap {
                a: w[0].name.to_string(),
                b: w[1].name.to_string(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    const TABLE: &[ParamSpec] = &[
        ParamSpec {
            name: Cow::Borrowed("h1.weight"),
            shape: Cow::Borrowed(&[4, 3]),
            offset: 0,
            len: 12,
        },
        ParamSpec {
            name: Cow::Borrowed("h1.bias"),
            shape: Cow::Borrowed(&[3]),
            offset: 12,
            len: 3,
        },
    ];

    #[test]
    fn const_table_validates() {
        validate_layout(TABLE, 15).unwrap();
        assert_eq!(TABLE[1].range(), 12..15);
    }

    #[test]
    fn bad_layouts_are_rejected() {
        assert!(matches!(
            validate_layout(TABLE, 14),
            Err(LayoutError::OutOfRange { .. })
        ));
        let mut t = TABLE.to_vec();
        t[1].offset = 11;
        assert!(matches!(
            validate_layout(&t, 20),
            Err(LayoutError::Overlap { .. })
        ));
        let mut t = TABLE.to_vec();
        t[1].len = 4;
        assert!(matches!(
            validate_layout(&t, 20),
            Err(LayoutError::LenMismatch { .. })
        ));
        let t = vec![
            ParamSpec::new("a", vec![2], 0),
            ParamSpec::new("a", vec![2], 2),
        ];
        assert_eq!(
            validate_layout(&t, 4),
            Err(LayoutError::DuplicateName("a".into()))
        );
    }
}
