//! Models built from a small grammar, so that most fuzz inputs get past
//! the parser and into lowering, autodiff, the passes and code generation.
//!
//! The generator keeps the width of every value it binds (all are
//! `f32[batch, W]`, or NCHW images), so most models shape-check; a few
//! choices are deliberately off (a wrong width, an unknown name, an edge
//! literal, a fragment of raw input) to reach the diagnostics of lowering.

use arbitrary::{Arbitrary, Result, Unstructured};
use nnc_compiler::ir::OptLevel;
use std::fmt::{self, Write};

/// A generated model's text and the optimisation level to compile it at.
pub struct Model {
    /// The `.nn` source.
    pub text: String,
    /// `-O0`, `-O1` or `-O2`.
    pub opt: OptLevel,
}

// The text, so that `cargo fuzz fmt` shows a crash as the model it is.
impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{:?}", self.opt)?;
        f.write_str(&self.text)
    }
}

impl<'a> Arbitrary<'a> for Model {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let opt = *u.choose(&[OptLevel::O0, OptLevel::O1, OptLevel::O2])?;
        let mut g = Gen {
            u,
            out: String::new(),
            values: Vec::new(),
            params: 0,
        };
        let networks = g.u.int_in_range(1..=2)?;
        for n in 0..networks {
            g.network(n)?;
        }
        Ok(Model { text: g.out, opt })
    }
}

/// Widths values take: small, so code generation stays fast.
const WIDTHS: &[u32] = &[1, 2, 3, 4, 8, 10, 16];

/// Numbers a literal may be: ordinary ones, and the edges of `f32` and of
/// the integers the language reads (issue 22's overflows among them).
const NUMBERS: &[&str] = &[
    "0",
    "1",
    "2",
    "0.5",
    "0.1",
    "1e-3",
    "3",
    "10",
    "1e-8",
    "0.99",
    "0.9",
    "1.5",
    "1e39",
    "1e-50",
    "1e38",
    "3.4028235e38",
    "1e-45",
    "99999999999999999999",
    "4294967296",
    "16777217",
    "0.0",
];

const UNARY: &[&str] = &[
    "relu",
    "tanh",
    "sigmoid",
    "gelu",
    "exp",
    "abs",
    "neg",
    "softmax",
    "log_softmax",
];

const ACTIVATIONS: &[&str] = &["relu", "tanh", "sigmoid", "gelu", "softmax"];

const INITS: &[&str] = &[
    "zeros",
    "ones",
    "he_normal",
    "he_uniform",
    "glorot_uniform",
    "glorot_normal",
    "xavier_uniform",
    "kaiming_normal",
    "normal(std: 0.3)",
    "uniform(low: -1, high: 1)",
    "constant(0.5)",
    "normal(mean: 0, std: 0)",
    "uniform(low: 1, high: 0)",
    "constant(1e39)",
];

/// A value in scope: its name and width (`f32[batch, width]`).
#[derive(Clone)]
struct Value {
    name: String,
    width: u32,
}

struct Gen<'u, 'a> {
    u: &'u mut Unstructured<'a>,
    out: String,
    values: Vec<Value>,
    params: usize,
}

impl Gen<'_, '_> {
    fn pick<T: Copy>(&mut self, from: &[T]) -> Result<T> {
        self.u.choose(from).copied()
    }

    fn ratio(&mut self, num: u8, den: u8) -> Result<bool> {
        self.u.ratio(num, den)
    }

    fn number(&mut self) -> Result<&'static str> {
        self.pick(NUMBERS)
    }

    fn width(&mut self) -> Result<u32> {
        self.pick(WIDTHS)
    }

    /// A value in scope (biased to the latest), or by one in 32 a name
    /// that is not.
    fn operand(&mut self) -> Result<Value> {
        if self.values.is_empty() || self.ratio(1, 32)? {
            return Ok(Value {
                name: "undefined".into(),
                width: 1,
            });
        }
        let n = self.values.len();
        let back = if self.ratio(2, 3)? {
            0
        } else {
            self.u.int_in_range(0..=n - 1)?
        };
        Ok(self.values[n - 1 - back].clone())
    }

    /// A value of width `w` in scope, if any.
    fn operand_of(&mut self, w: u32) -> Result<Option<Value>> {
        let same: Vec<Value> = self
            .values
            .iter()
            .filter(|v| v.width == w)
            .cloned()
            .collect();
        if same.is_empty() {
            return Ok(None);
        }
        Ok(Some(self.u.choose(&same)?.clone()))
    }

    /// A few bytes of the raw input as text: the escape hatch that lets the
    /// fuzzer put anything anywhere now and then.
    fn raw(&mut self) -> Result<String> {
        let len = self.u.int_in_range(0..=12)?;
        let bytes = self.u.bytes(len)?;
        Ok(String::from_utf8_lossy(bytes).into_owned())
    }

    fn network(&mut self, index: u32) -> Result<()> {
        self.values.clear();
        let names = ["Net", "M", "Model2", "Vec", "Option", "x"];
        let name = if index == 0 {
            self.pick(&names)?.to_string()
        } else {
            format!("Second{index}")
        };
        writeln!(self.out, "network {name} {{").unwrap();
        let w = self.width()?;
        writeln!(self.out, "    input x: f32[batch, {w}];").unwrap();
        self.values.push(Value {
            name: "x".into(),
            width: w,
        });
        let classes = self.pick(&[1u32, 2, 3, 10, 16777216, 16777217, 0])?;
        let images = self.ratio(1, 4)?;
        if images {
            self.images()?;
        }
        let statements = self.u.int_in_range(0..=10)?;
        for i in 0..statements {
            self.statement(i)?;
        }
        self.tail(classes)?;
        self.out.push_str("}\n");
        if self.ratio(3, 4)? {
            self.train(&name)?;
        }
        Ok(())
    }

    /// A convolutional branch that ends flattened, as a value in scope.
    fn images(&mut self) -> Result<()> {
        let c = self.pick(&[1u32, 2, 3])?;
        let hw = self.pick(&[2u32, 4, 5, 8])?;
        let filters = self.pick(&[1u32, 2, 4])?;
        let kernel = self.pick(&[1u32, 2, 3])?;
        let padding = self.pick(&[0u32, 1])?;
        writeln!(self.out, "    input img: f32[batch, {c}, {hw}, {hw}];").unwrap();
        let act = self.pick(ACTIVATIONS)?;
        writeln!(
            self.out,
            "    c1 = conv2d(img, {filters}, kernel: {kernel}, padding: {padding}, activation: {act});"
        )
        .unwrap();
        let out = (hw + 2 * padding).saturating_sub(kernel) + 1;
        let flat = filters * out * out;
        let (line, width) = match self.u.int_in_range(0..=2)? {
            0 => ("im = flatten(max_pool2d(c1, kernel: 1));", flat),
            1 => ("im = flatten(c1 |> batch_norm(momentum: 0.2));", flat),
            _ => ("im = global_avg_pool(c1);", filters),
        };
        writeln!(self.out, "    {line}").unwrap();
        self.values.push(Value {
            name: "im".into(),
            width,
        });
        Ok(())
    }

    fn bind(&mut self, index: u32, expr: String, width: u32) -> Value {
        let name = format!("h{index}");
        writeln!(self.out, "    {name} = {expr};").unwrap();
        let v = Value { name, width };
        self.values.push(v.clone());
        v
    }

    fn statement(&mut self, i: u32) -> Result<()> {
        let a = self.operand()?;
        match self.u.int_in_range(0..=13)? {
            0 | 1 => {
                let n = self.width()?;
                let mut args = format!("dense({}, {n}", a.name);
                if self.ratio(1, 2)? {
                    write!(args, ", activation: {}", self.pick(ACTIVATIONS)?).unwrap();
                }
                if self.ratio(1, 4)? {
                    write!(args, ", init: {}", self.pick(INITS)?).unwrap();
                }
                if self.ratio(1, 6)? {
                    args.push_str(", bias: false");
                }
                args.push(')');
                self.bind(i, args, n);
            }
            2 => {
                let f = self.pick(UNARY)?;
                let e = if self.ratio(1, 2)? {
                    format!("{}({})", f, a.name)
                } else {
                    format!("{} |> {f}", a.name)
                };
                self.bind(i, e, a.width);
            }
            3 => {
                let op = self.pick(&["+", "-", "*", "/"])?;
                let e = match self.operand_of(a.width)? {
                    Some(b) if self.ratio(2, 3)? => format!("{} {op} {}", a.name, b.name),
                    _ => format!("{} {op} {}", a.name, self.number()?),
                };
                self.bind(i, e, a.width);
            }
            4 => {
                // A parameter and a matrix product.
                let n = self.width()?;
                let p = format!("w{}", self.params);
                self.params += 1;
                let init = if self.ratio(1, 2)? {
                    format!(" = {}", self.pick(INITS)?)
                } else {
                    String::new()
                };
                writeln!(self.out, "    param {p}: f32[{}, {n}]{init};", a.width).unwrap();
                self.bind(i, format!("{} @ {p}", a.name), n);
            }
            5 => {
                let rate = self.pick(&["0", "0.25", "0.5", "0.9", "1", "1.5"])?;
                self.bind(i, format!("dropout({}, rate: {rate})", a.name), a.width);
            }
            6 => {
                self.bind(i, format!("layer_norm({})", a.name), a.width);
            }
            7 => {
                let m = self.pick(&["0.1", "0", "1", "2"])?;
                let eps = self.pick(&["1e-5", "1e-50", "0", "1"])?;
                self.bind(
                    i,
                    format!("batch_norm({}, momentum: {m}, eps: {eps})", a.name),
                    a.width,
                );
            }
            8 => {
                let f = self.pick(&["mean", "sum", "max"])?;
                let keep = self.ratio(1, 2)?;
                let e = format!("{f}({}, axis: 1, keepdims: {keep})", a.name);
                let v = self.bind(i, e, 1);
                if keep && self.ratio(1, 2)? {
                    let n = self.width()?;
                    self.bind(i + 100, format!("broadcast({}, [batch, {n}])", v.name), n);
                }
            }
            9 => {
                let e = match self.u.int_in_range(0..=3)? {
                    0 => format!("leaky_relu({}, alpha: {})", a.name, self.number()?),
                    1 => format!("pow({}, {})", a.name, self.pick(&["2", "0.5", "3"])?),
                    2 => format!("sqrt(abs({}) + 1)", a.name),
                    _ => format!("log(exp({}) + 1)", a.name),
                };
                self.bind(i, e, a.width);
            }
            10 => {
                // A reshape round trip, or a wrong width (a shape error).
                let w = if self.ratio(3, 4)? {
                    a.width
                } else {
                    a.width + 1
                };
                let e = format!("flatten(reshape({}, [batch, {w}, 1]))", a.name);
                self.bind(i, e, a.width);
            }
            11 => {
                // A chain of unary minus, a little deeper each time.
                let depth = self.u.int_in_range(1..=64)?;
                let e = format!("{}{}", "-".repeat(depth), a.name);
                self.bind(i, e, a.width);
            }
            12 => {
                let b = self.operand()?;
                let e = format!("concat({}, {})", a.name, b.name);
                self.bind(i, e, a.width + b.width);
            }
            _ => {
                let raw = self.raw()?;
                self.bind(i, format!("{}{raw}", a.name), a.width);
            }
        }
        Ok(())
    }

    /// Outputs, the label or target, and the loss.
    fn tail(&mut self, classes: u32) -> Result<()> {
        let last = self.operand()?;
        match self.u.int_in_range(0..=4)? {
            0 | 1 => {
                writeln!(self.out, "    label y: class[batch] of {classes};").unwrap();
                writeln!(self.out, "    logits = dense({}, {classes});", last.name).unwrap();
                if self.ratio(1, 2)? {
                    self.out.push_str("    output probs = softmax(logits);\n");
                }
                self.out.push_str("    loss cross_entropy(logits, y);\n");
            }
            2 => {
                let w = self.width()?;
                writeln!(self.out, "    input target: f32[batch, {w}];").unwrap();
                writeln!(self.out, "    pred = dense({}, {w});", last.name).unwrap();
                self.out.push_str("    output pred;\n");
                let f = self.pick(&["mse", "l1", "binary_cross_entropy"])?;
                let scale = if self.ratio(1, 3)? {
                    format!(" * {}", self.number()?)
                } else {
                    String::new()
                };
                writeln!(self.out, "    loss {f}(pred, target){scale};").unwrap();
            }
            3 => {
                writeln!(self.out, "    output {};", last.name).unwrap();
                writeln!(self.out, "    loss mean({});", last.name).unwrap();
            }
            _ => {
                let raw = self.raw()?;
                writeln!(self.out, "    loss {}{raw};", last.name).unwrap();
            }
        }
        Ok(())
    }

    fn train(&mut self, name: &str) -> Result<()> {
        writeln!(self.out, "train {name} {{").unwrap();
        let settings = self.u.int_in_range(0..=6)?;
        let mut used = Vec::new();
        for _ in 0..settings {
            let k = self.u.int_in_range(0..=10)?;
            if used.contains(&k) && !self.ratio(1, 8)? {
                continue;
            }
            used.push(k);
            let line = match k {
                0 => format!("optimizer: {}", self.optimizer()?),
                1 => format!(
                    "batch: {}",
                    self.pick(&[
                        "1",
                        "32",
                        "full",
                        "0",
                        "18446744073709551615",
                        "100000000000"
                    ])?
                ),
                2 => format!("epochs: {}", self.pick(&["1", "10", "0"])?),
                3 => format!(
                    "seed: {}",
                    self.pick(&["0", "42", "18446744073709551616", "1.5"])?
                ),
                4 => format!("l1: {}", self.number()?),
                5 => format!("l2: {}", self.number()?),
                6 => format!("weight_decay: {}", self.number()?),
                7 => format!("clip_norm: {}", self.number()?),
                8 => format!("schedule: {}", self.schedule()?),
                9 => format!("early_stop: {}", self.pick(&["1", "3", "0"])?),
                _ => format!("validation: {}", self.pick(&["0", "0.1", "1", "0.5"])?),
            };
            writeln!(self.out, "    {line};").unwrap();
        }
        self.out.push_str("}\n");
        Ok(())
    }

    fn optimizer(&mut self) -> Result<String> {
        let lr = self.number()?;
        Ok(match self.u.int_in_range(0..=5)? {
            0 => format!(
                "sgd(lr: {lr}, momentum: {}, nesterov: {})",
                self.pick(&["0", "0.9", "1"])?,
                self.ratio(1, 2)?
            ),
            1 => format!(
                "adam(lr: {lr}, beta1: {}, eps: {})",
                self.number()?,
                self.number()?
            ),
            2 => format!("adamw(lr: {lr}, weight_decay: {})", self.number()?),
            3 => format!(
                "rmsprop(lr: {lr}, alpha: {}, centered: true)",
                self.number()?
            ),
            4 => format!("adagrad(lr: {lr}, lr_decay: {})", self.number()?),
            _ => self.pick(&["momentum", "adam", "sgd"])?.to_string(),
        })
    }

    fn schedule(&mut self) -> Result<String> {
        let warmup = self.pick(&["0", "10", "100"])?;
        Ok(match self.u.int_in_range(0..=3)? {
            0 => format!("constant(warmup: {warmup})"),
            1 => format!(
                "step(every: {}, gamma: {}, warmup: {warmup})",
                self.pick(&["1", "50", "0"])?,
                self.number()?
            ),
            2 => format!("exponential(gamma: {})", self.number()?),
            _ => format!("cosine(min_lr: {}, warmup: {warmup})", self.number()?),
        })
    }
}
