//! Building an optimizer from its configuration (defined with its defaults
//! and validation in `nnc-spec`, the contract with the compiler).

pub use nnc_spec::optim::{
    AdagradConfig, AdamConfig, ConfigError, OptimizerConfig, RmspropConfig, SgdConfig,
};

use super::{Adagrad, Adam, OptimError, Optimizer, Rmsprop, Sgd};

impl From<ConfigError> for OptimError {
    fn from(e: ConfigError) -> Self {
        OptimError::InvalidConfig {
            optimizer: e.optimizer,
            reason: e.reason,
        }
    }
}

/// Builds the optimizer a configuration describes, for a flat buffer of
/// `n` parameters.
pub fn build(config: &OptimizerConfig, n: usize) -> Result<Box<dyn Optimizer>, OptimError> {
    Ok(match *config {
        OptimizerConfig::Sgd(c) => Box::new(Sgd::new(n, c)?),
        OptimizerConfig::Adam(c) => Box::new(Adam::new(n, c)?),
        OptimizerConfig::AdamW(c) => Box::new(Adam::adamw(n, c)?),
        OptimizerConfig::Rmsprop(c) => Box::new(Rmsprop::new(n, c)?),
        OptimizerConfig::Adagrad(c) => Box::new(Adagrad::new(n, c)?),
    })
}

/// Method syntax for [`build`]: `config.build(n)`.
pub trait Build {
    /// See [`build`].
    fn build(&self, n: usize) -> Result<Box<dyn Optimizer>, OptimError>;
}

impl Build for OptimizerConfig {
    fn build(&self, n: usize) -> Result<Box<dyn Optimizer>, OptimError> {
        build(self, n)
    }
}
