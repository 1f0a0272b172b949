//! The `network!` expansion: the input, tokenized as rustc would hand it to
//! the macro, is rendered, checked and compiled by the macro's own code,
//! and the expansion must parse as Rust items.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = nnc_fuzz::network_macro(text);
    }
});
