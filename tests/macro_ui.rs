//! The `network!` macro's errors as rustc shows them (trybuild UI tests):
//! each case in `tests/ui/` is one mistake in a model, and its `.stderr`
//! shows exactly one error, underlining the offending tokens. Regenerate the
//! `.stderr` files with `TRYBUILD=overwrite cargo test --test macro_ui`, and
//! read them.

#[test]
fn network_macro_errors_point_at_the_offending_tokens() {
    trybuild::TestCases::new().compile_fail("tests/ui/*.rs");
}
