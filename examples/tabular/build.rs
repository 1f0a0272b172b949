//! Compiles the two models into OUT_DIR; `main.rs` includes them.

fn main() {
    for model in ["models/penguin_species.nn", "models/penguin_mass.nn"] {
        if let Err(e) = nnc::build::compile(model) {
            panic!("{e}");
        }
    }
}
