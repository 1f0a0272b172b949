//! The data augmentations a `train` block's `augment:` names: one table of
//! each form's settings and the contract's [`AugmentSpec`] its values make.
//!
//! ```text
//! augment: image(shift: 2, rotate: 10, flip: true, cutout: 8, noise: 0.05);
//! augment: tabular(noise: 0.1);
//! ```

use super::{const_call, count, expected, flag, hypers, non_negative, num, unknown, Hyper};
use crate::diagnostic::{Diagnostic, ErrorKind};
use crate::ir::AugmentSpec;
use crate::syntax::ast::Expr;

/// An augmentation form of the language.
pub struct AugmentDef {
    /// Its name.
    pub name: &'static str,
    /// Its settings, positional order.
    pub params: &'static [Hyper],
    /// The augmentation the values (in parameter order, defaults filled
    /// in) make.
    pub build: fn(&[f64]) -> AugmentSpec,
}

/// The largest shift or cutout side, in pixels: beyond it an image is
/// all zeros, which no augmentation wants.
const MAX_PIXELS: f64 = 4096.0;

fn pixels(v: f64) -> bool {
    (0.0..=MAX_PIXELS).contains(&v) && v.fract() == 0.0
}

fn degrees(v: f64) -> bool {
    (0.0..=180.0).contains(&v)
}

const NOISE: Hyper = num("noise", 0.0, non_negative, "a standard deviation ≥ 0");

/// Every augmentation form, in the order errors list them.
pub static AUGMENTS: &[AugmentDef] = &[
    AugmentDef {
        name: "image",
        params: &[
            count(
                "shift",
                Some(0.0),
                pixels,
                "a whole number of pixels in [0, 4096]",
            ),
            num("rotate", 0.0, degrees, "a number of degrees in [0, 180]"),
            flag("flip"),
            count(
                "cutout",
                Some(0.0),
                pixels,
                "a whole number of pixels in [0, 4096]",
            ),
            NOISE,
        ],
        build: |v| AugmentSpec {
            shift: v[0] as u32,
            rotate: v[1] as f32,
            flip: v[2] != 0.0,
            cutout: v[3] as u32,
            noise: v[4] as f32,
        },
    },
    AugmentDef {
        name: "tabular",
        params: &[NOISE],
        build: |v| AugmentSpec {
            noise: v[0] as f32,
            ..AugmentSpec::NONE
        },
    },
];

/// The augmentation an `augment:` value names.
pub(super) fn augment(e: &Expr, errors: &mut Vec<Diagnostic>) -> Option<AugmentSpec> {
    let Some(c) = const_call(e) else {
        errors.push(expected(
            e,
            "augment",
            "an augmentation such as `image(shift: 2, flip: true)` or `tabular(noise: 0.1)`",
        ));
        return None;
    };
    let Some(def) = AUGMENTS.iter().find(|s| s.name == c.name) else {
        let names: Vec<&str> = AUGMENTS.iter().map(|s| s.name).collect();
        errors.push(unknown("augmentation", &c, &names));
        return None;
    };
    let v = hypers(&c, def.params, errors)?;
    let spec = (def.build)(&v);
    if spec.is_none() {
        let names: Vec<&str> = def.params.iter().map(|p| p.name).collect();
        errors.push(
            Diagnostic::new(
                ErrorKind::BadArgument,
                c.span,
                format!(
                    "`{}` with these settings changes nothing; give one of: {}",
                    c.name,
                    names.join(", ")
                ),
            )
            .with_label("augments nothing"),
        );
        return None;
    }
    Some(spec)
}
