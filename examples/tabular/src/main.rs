//! A CSV classifier and a CSV regression on the bundled Palmer penguins:
//! read the file with a column mapping, hold out a test set (and a
//! validation set for early stopping), `fit`, `evaluate`, save the
//! weights, predict.
//!
//! ```sh
//! cargo run --release -p tabular
//! ```

#![deny(warnings)]

use nnc::runtime::data::csv::{read_csv, CsvOptions};
use nnc::runtime::data::{Dataset, SplitMode};
use nnc::runtime::{evaluate, fit, predict, FitOptions, Metrics, TrainData};

nnc::include_model!("penguin_species");
nnc::include_model!("penguin_mass");

const DATA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../data/penguins/penguins.csv"
);

/// 64% training, 16% validation, 20% test, by a seeded shuffle.
fn three_way(data: &Dataset) -> anyhow::Result<(Dataset, Dataset, Dataset)> {
    let (rest, test) = data.split(0.2, SplitMode::Shuffled { seed: 7 })?;
    let (train, val) = rest.split(0.2, SplitMode::Shuffled { seed: 8 })?;
    Ok((train, val, test))
}

fn main() -> anyhow::Result<()> {
    // Classification: the species column feeds the label `species`,
    // columns 1-4 the input `x`.
    let csv = CsvOptions::new()
        .classes("species", "species")
        .numbers("x", 1..5);
    let (train, val, test) = three_way(&read_csv(DATA, &csv)?)?;
    let mut species = PenguinSpecies::default();
    let data = TrainData::new(&train).with_validation(&val);
    let h = fit(&mut species, &data, &FitOptions::quiet())?;
    let e = evaluate(&mut species, &test)?;
    println!(
        "species: {} epochs, test accuracy {:.1}% on {} penguins",
        h.epochs.len(),
        100.0 * e.accuracy().unwrap_or(0.0),
        test.len()
    );
    species.save(std::env::temp_dir().join("penguin_species.safetensors"))?;

    // Regression: body mass from the other three measurements.
    let csv = CsvOptions::new()
        .numbers("x", 1..4)
        .numbers("body_mass_kg", "body_mass_kg");
    let (train, val, test) = three_way(&read_csv(DATA, &csv)?)?;
    let mut mass = PenguinMass::default();
    let data = TrainData::new(&train).with_validation(&val);
    let h = fit(&mut mass, &data, &FitOptions::quiet())?;
    let e = evaluate(&mut mass, &test)?;
    if let Metrics::Regression { mae, rmse, r2 } = e.metrics {
        println!(
            "body mass: {} epochs, test MAE {mae:.3} kg, RMSE {rmse:.3} kg, R² {r2:.3}",
            h.epochs.len()
        );
    }
    // Predicting needs only the input the output reads.
    let first = predict(&mut mass, &test.subset(&[0])?)?;
    println!(
        "the first test penguin weighs {:.2} kg by the model",
        first[0].values[0]
    );
    Ok(())
}
