//! The language front end through code generation on raw text: `nnc check`
//! and `nnc compile` (`-O2`, the default) of any bytes, read as UTF-8 with
//! invalid sequences replaced. See `nnc_fuzz::frontend` for what is checked.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nnc_compiler::ir::OptLevel;

fuzz_target!(|data: &[u8]| {
    nnc_fuzz::frontend(&String::from_utf8_lossy(data), OptLevel::O2);
});
