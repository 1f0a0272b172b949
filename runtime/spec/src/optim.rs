//! Every optimizer's hyper-parameters (all but the learning rate, which
//! schedules change every step), their PyTorch defaults and range checks,
//! and [`OptimizerConfig`], the one value a `train` block's `optimizer:`
//! line becomes. The compiler validates a block with these checks and
//! writes the value into generated code; the runtime builds the optimizer
//! from it.

/// Settings no optimizer can run with, and which optimizer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// `sgd`, `adam`, ...
    pub optimizer: &'static str,
    /// What is wrong.
    pub reason: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "invalid {} configuration: {}",
            self.optimizer, self.reason
        )
    }
}

impl std::error::Error for ConfigError {}

/// `x >= 0` and not NaN: the range check for every non-negative setting.
fn non_negative(x: f32) -> bool {
    x >= 0.0
}

fn invalid(optimizer: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        optimizer,
        reason: reason.into(),
    }
}

/// `torch.optim.SGD` hyper-parameters (except `lr`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdConfig {
    /// Momentum factor μ; 0 disables the momentum buffer.
    pub momentum: f32,
    /// Dampening τ applied to new gradients in the momentum buffer.
    pub dampening: f32,
    /// Nesterov momentum (requires momentum > 0 and dampening = 0).
    pub nesterov: bool,
    /// Coupled L2 penalty.
    pub weight_decay: f32,
}

impl Default for SgdConfig {
    fn default() -> Self {
        SgdConfig {
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        }
    }
}

impl SgdConfig {
    /// Rejects settings PyTorch rejects.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let cfg = self;
        if !non_negative(cfg.momentum) {
            return Err(invalid("sgd", format!("momentum {} < 0", cfg.momentum)));
        }
        if !non_negative(cfg.weight_decay) {
            return Err(invalid(
                "sgd",
                format!("weight_decay {} < 0", cfg.weight_decay),
            ));
        }
        if !cfg.dampening.is_finite() {
            return Err(invalid("sgd", "dampening is not finite"));
        }
        if cfg.nesterov && (cfg.momentum <= 0.0 || cfg.dampening != 0.0) {
            return Err(invalid(
                "sgd",
                "nesterov momentum requires momentum > 0 and dampening = 0",
            ));
        }
        Ok(())
    }
}

/// `torch.optim.Adam`/`AdamW` hyper-parameters (except `lr`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamConfig {
    /// Decay of the first-moment average.
    pub beta1: f32,
    /// Decay of the second-moment average.
    pub beta2: f32,
    /// Added to the denominator for stability.
    pub eps: f32,
    /// Coupled L2 for Adam; decoupled decay for AdamW.
    pub weight_decay: f32,
}

impl Default for AdamConfig {
    /// PyTorch's Adam defaults: betas (0.9, 0.999), eps 1e-8, no weight decay.
    fn default() -> Self {
        AdamConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

impl AdamConfig {
    /// PyTorch's AdamW defaults: as Adam but `weight_decay = 0.01`.
    pub fn adamw_default() -> Self {
        AdamConfig {
            weight_decay: 0.01,
            ..Self::default()
        }
    }

    /// Rejects settings PyTorch rejects; `kind` (`"adam"` or `"adamw"`)
    /// names the optimizer in the error.
    pub fn validate(&self, kind: &'static str) -> Result<(), ConfigError> {
        let cfg = self;
        for (name, b) in [("beta1", cfg.beta1), ("beta2", cfg.beta2)] {
            if !(0.0..1.0).contains(&b) {
                return Err(invalid(kind, format!("{name} {b} not in [0, 1)")));
            }
        }
        if !non_negative(cfg.eps) {
            return Err(invalid(kind, format!("eps {} < 0", cfg.eps)));
        }
        if !non_negative(cfg.weight_decay) {
            return Err(invalid(
                kind,
                format!("weight_decay {} < 0", cfg.weight_decay),
            ));
        }
        Ok(())
    }
}

/// `torch.optim.RMSprop` hyper-parameters (except `lr`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RmspropConfig {
    /// Smoothing constant of the squared-gradient average.
    pub alpha: f32,
    /// Added to the denominator for stability.
    pub eps: f32,
    /// Momentum factor; 0 disables the buffer.
    pub momentum: f32,
    /// Normalise by the estimated variance instead of the second moment.
    pub centered: bool,
    /// Coupled L2 penalty.
    pub weight_decay: f32,
}

impl Default for RmspropConfig {
    /// PyTorch's defaults: alpha 0.99, eps 1e-8, no momentum, not centered.
    fn default() -> Self {
        RmspropConfig {
            alpha: 0.99,
            eps: 1e-8,
            momentum: 0.0,
            centered: false,
            weight_decay: 0.0,
        }
    }
}

impl RmspropConfig {
    /// Rejects settings PyTorch rejects.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let cfg = self;
        if !non_negative(cfg.alpha) {
            return Err(invalid("rmsprop", format!("alpha {} < 0", cfg.alpha)));
        }
        if !non_negative(cfg.eps) {
            return Err(invalid("rmsprop", format!("eps {} < 0", cfg.eps)));
        }
        if !non_negative(cfg.momentum) {
            return Err(invalid("rmsprop", format!("momentum {} < 0", cfg.momentum)));
        }
        if !non_negative(cfg.weight_decay) {
            return Err(invalid(
                "rmsprop",
                format!("weight_decay {} < 0", cfg.weight_decay),
            ));
        }
        Ok(())
    }
}

/// `torch.optim.Adagrad` hyper-parameters (except `lr`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdagradConfig {
    /// Learning-rate decay η: step t uses `lr / (1 + (t-1)*η)`.
    pub lr_decay: f32,
    /// Starting value of the squared-gradient sum.
    pub initial_accumulator_value: f32,
    /// Added to the denominator for stability.
    pub eps: f32,
    /// Coupled L2 penalty.
    pub weight_decay: f32,
}

impl Default for AdagradConfig {
    /// PyTorch's defaults: no decay, accumulator 0, eps 1e-10.
    fn default() -> Self {
        AdagradConfig {
            lr_decay: 0.0,
            initial_accumulator_value: 0.0,
            eps: 1e-10,
            weight_decay: 0.0,
        }
    }
}

impl AdagradConfig {
    /// Rejects settings PyTorch rejects.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let cfg = self;
        if !non_negative(cfg.lr_decay) {
            return Err(invalid("adagrad", format!("lr_decay {} < 0", cfg.lr_decay)));
        }
        if !non_negative(cfg.initial_accumulator_value) {
            return Err(invalid(
                "adagrad",
                format!(
                    "initial_accumulator_value {} < 0",
                    cfg.initial_accumulator_value
                ),
            ));
        }
        if !non_negative(cfg.eps) {
            return Err(invalid("adagrad", format!("eps {} < 0", cfg.eps)));
        }
        if !non_negative(cfg.weight_decay) {
            return Err(invalid(
                "adagrad",
                format!("weight_decay {} < 0", cfg.weight_decay),
            ));
        }
        Ok(())
    }
}

/// Any optimizer with its settings: what a `train` block's `optimizer:` line
/// becomes, so generated code can build one without naming concrete types.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OptimizerConfig {
    /// SGD (plain, momentum, Nesterov).
    Sgd(SgdConfig),
    /// Adam, with coupled weight decay.
    Adam(AdamConfig),
    /// AdamW: Adam with decoupled weight decay.
    AdamW(AdamConfig),
    /// RMSprop.
    Rmsprop(RmspropConfig),
    /// Adagrad.
    Adagrad(AdagradConfig),
}

impl OptimizerConfig {
    /// The optimizer's name in the language (`sgd`, `adam`, `adamw`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            OptimizerConfig::Sgd(_) => "sgd",
            OptimizerConfig::Adam(_) => "adam",
            OptimizerConfig::AdamW(_) => "adamw",
            OptimizerConfig::Rmsprop(_) => "rmsprop",
            OptimizerConfig::Adagrad(_) => "adagrad",
        }
    }

    /// Rejects settings PyTorch rejects.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self {
            OptimizerConfig::Sgd(c) => c.validate(),
            OptimizerConfig::Adam(c) => c.validate("adam"),
            OptimizerConfig::AdamW(c) => c.validate("adamw"),
            OptimizerConfig::Rmsprop(c) => c.validate(),
            OptimizerConfig::Adagrad(c) => c.validate(),
        }
    }
}
