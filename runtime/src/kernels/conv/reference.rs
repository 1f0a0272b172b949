//! Direct nested-loop convolution in f64: the oracle the im2col kernels are
//! tested and benchmarked against. Not for training (it is slow on purpose:
//! every product term is visited once, in the obvious order).

use super::Conv2d;

/// Input position of output `o` and kernel tap `k`, if inside `0..n`.
fn at(o: usize, k: usize, s: usize, p: usize, d: usize, n: usize) -> Option<usize> {
    let i = (o * s + k * d) as isize - p as isize;
    (0..n as isize).contains(&i).then_some(i as usize)
}

/// The convolution `y` of `b` samples and, for the output gradient `dy`,
/// the gradients `(y, dx, dw)`, accumulated in f64.
pub fn conv2d(
    g: &Conv2d,
    b: usize,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (oh, ow) = g.out_hw();
    let (cg, og) = (g.c / g.groups, g.o / g.groups);
    let mut y = vec![0.0; b * g.o * oh * ow];
    let mut dx = vec![0.0; x.len()];
    let mut dw = vec![0.0; w.len()];
    for n in 0..b {
        for o in 0..g.o {
            let grp = o / og;
            for oy in 0..oh {
                for ox in 0..ow {
                    let yi = ((n * g.o + o) * oh + oy) * ow + ox;
                    for ci in 0..cg {
                        let c = grp * cg + ci;
                        for ki in 0..g.kh {
                            let Some(iy) =
                                at(oy, ki, g.stride[0], g.padding[0], g.dilation[0], g.h)
                            else {
                                continue;
                            };
                            for kj in 0..g.kw {
                                let Some(ix) =
                                    at(ox, kj, g.stride[1], g.padding[1], g.dilation[1], g.w)
                                else {
                                    continue;
                                };
                                let xi = ((n * g.c + c) * g.h + iy) * g.w + ix;
                                let wi = ((o * cg + ci) * g.kh + ki) * g.kw + kj;
                                y[yi] += f64::from(x[xi]) * f64::from(w[wi]);
                                dx[xi] += f64::from(dy[yi]) * f64::from(w[wi]);
                                dw[wi] += f64::from(dy[yi]) * f64::from(x[xi]);
                            }
                        }
                    }
                }
            }
        }
    }
    (y, dx, dw)
}
