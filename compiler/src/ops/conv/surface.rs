//! The surface functions of convolution and pooling: `conv2d`,
//! `max_pool2d`, `avg_pool2d`, `global_avg_pool`, and the argument parsing
//! the `conv2d` layer shares.

use super::super::reduce::{ReduceKind, ReduceOp};
use super::super::signature::{ArgKind, Args, Built, Function, Param};
use super::super::{Op, OpError};
use super::geometry::image;
use super::{ConvOp, ConvParams, PoolParams};

/// An `int or [h, w]` argument: both axes.
fn hw_arg(a: &Args, i: usize, name: &str, default: [usize; 2]) -> Result<[usize; 2], OpError> {
    let Some(v) = a.ints(i) else {
        return Ok(default);
    };
    let bad = || {
        OpError::argument(format!(
            "`{name}` must be a non-negative integer or a list [height, width] of them, found {v:?}"
        ))
    };
    let conv = |x: i64| usize::try_from(x).ok().filter(|&x| x <= 1 << 30);
    match v {
        [x] => conv(*x).map(|x| [x, x]).ok_or_else(bad),
        [h, w] => Ok([conv(*h).ok_or_else(bad)?, conv(*w).ok_or_else(bad)?]),
        _ => Err(bad()),
    }
}

const CONV_PARAMS: &[Param] = &[
    Param::req("x", ArgKind::Tensor),
    Param::req("w", ArgKind::Tensor),
    Param::opt("stride", ArgKind::Ints),
    Param::opt("padding", ArgKind::Ints),
    Param::opt("dilation", ArgKind::Ints),
    Param::opt("groups", ArgKind::Int),
];

/// Binds the configuration arguments of `conv2d` (parameters 2 to 5 of
/// `CONV_PARAMS`, shared with the `conv2d` layer, which passes its own
/// indices): stride, padding, dilation, groups.
pub fn conv_params(a: &Args, first: usize) -> Result<ConvParams, OpError> {
    let p = ConvParams {
        stride: hw_arg(a, first, "stride", [1, 1])?,
        padding: hw_arg(a, first + 1, "padding", [0, 0])?,
        dilation: hw_arg(a, first + 2, "dilation", [1, 1])?,
        groups: match a.int(first + 3) {
            None => 1,
            Some(g) if (1..=1 << 30).contains(&g) => g as usize,
            Some(g) => {
                return Err(OpError::argument(format!(
                    "conv2d: `groups` must be at least 1, found {g}"
                )))
            }
        },
    };
    p.validate()?;
    Ok(p)
}

const POOL_PARAMS: &[Param] = &[
    Param::req("x", ArgKind::Tensor),
    Param::req("kernel", ArgKind::Ints),
    Param::opt("stride", ArgKind::Ints),
    Param::opt("padding", ArgKind::Ints),
];

fn build_pool(max: bool, a: &Args) -> Result<Built, OpError> {
    let kernel = hw_arg(a, 1, "kernel", [1, 1])?;
    let p = PoolParams {
        kernel,
        stride: hw_arg(a, 2, "stride", kernel)?,
        padding: hw_arg(a, 3, "padding", [0, 0])?,
    };
    let op = if max {
        ConvOp::MaxPool2d(p)
    } else {
        ConvOp::AvgPool2d(p)
    };
    Ok((Op::Conv(op), vec![a.tensor(0)?.0]))
}

/// The convolution and pooling functions of the language.
pub static FUNCTIONS: &[Function] = &[
    Function {
        name: "conv2d",
        params: CONV_PARAMS,
        doc: "2-D convolution of x f32[batch, C, H, W] with w f32[O, C/groups, KH, KW] → f32[batch, O, OH, OW]",
        build: |a| {
            let p = conv_params(a, 2)?;
            Ok((
                Op::Conv(ConvOp::Conv2d(p)),
                vec![a.tensor(0)?.0, a.tensor(1)?.0],
            ))
        },
    },
    Function {
        name: "max_pool2d",
        params: POOL_PARAMS,
        doc: "maximum over each kernel window of an NCHW tensor; stride defaults to the kernel",
        build: |a| build_pool(true, a),
    },
    Function {
        name: "avg_pool2d",
        params: POOL_PARAMS,
        doc: "mean over each kernel window of an NCHW tensor (padding counts as zeros)",
        build: |a| build_pool(false, a),
    },
    Function {
        name: "global_avg_pool",
        params: &[Param::req("x", ArgKind::Tensor)],
        doc: "mean over the spatial axes: f32[batch, C, H, W] → f32[batch, C]",
        build: |a| {
            let (x, ty) = a.tensor(0)?;
            image(ty, 0, "global_avg_pool", "an input")?;
            Ok((
                Op::Reduce(ReduceOp {
                    kind: ReduceKind::Mean,
                    axes: vec![2, 3],
                    keepdims: false,
                }),
                vec![x],
            ))
        },
    },
];
