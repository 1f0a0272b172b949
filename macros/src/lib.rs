//! `nnc-macros`: the `network!` procedural macro.
//!
//! The macro is a thin shell over `nnc-compiler`; it lands together with code
//! generation (see the README's roadmap). Until then this crate exports nothing.
