//! The front end through code generation on models built from a small
//! grammar (`nnc_fuzz::model`): layers, ops, parameters, losses and `train`
//! blocks, at `-O0`, `-O1` or `-O2`, so the fuzzer spends its time past
//! the parser.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nnc_fuzz::model::Model;

fuzz_target!(|model: Model| {
    nnc_fuzz::frontend(&model.text, model.opt);
});
