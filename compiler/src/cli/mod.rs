//! The commands of the `nnc` binary that build and run a model's program:
//! `train`, `eval`, `predict` ([`run`]), and the cache their programs are
//! built in ([`cache`]); `data convert` ([`data`]); `checkpoint merge`
//! and `checkpoint split` ([`checkpoint`]); and where `compile` and
//! `graph` write ([`output`]).

pub mod cache;
pub mod checkpoint;
pub mod data;
pub mod output;
pub mod run;
