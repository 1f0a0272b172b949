//! The training curves as SVG: loss per epoch (training and validation)
//! on the left, the validation metric of the loss kind on the right.

use std::path::Path;

use plotters::prelude::*;

use crate::train::History;

/// Draws `history` into an SVG document.
pub fn curves_svg(history: &History, title: &str) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 400)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let root = root
            .titled(title, ("sans-serif", 18))
            .map_err(|e| e.to_string())?;
        let (left, right) = root.split_horizontally(480);
        let epochs = history.epochs.len().max(1) as f64;
        let x = 1f64..epochs.max(2.0);

        let train: Vec<(f64, f64)> = history
            .epochs
            .iter()
            .map(|e| (e.epoch as f64, e.train_loss))
            .collect();
        let val: Vec<(f64, f64)> = history
            .epochs
            .iter()
            .filter_map(|e| Some((e.epoch as f64, e.val.as_ref()?.loss)))
            .collect();
        let (lo, hi) = bounds(train.iter().chain(&val).map(|p| p.1));
        let mut chart = ChartBuilder::on(&left)
            .caption("loss", ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(34)
            .y_label_area_size(56)
            .build_cartesian_2d(x.clone(), lo..hi)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .draw()
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(LineSeries::new(train, BLUE.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label("training")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
        if !val.is_empty() {
            chart
                .draw_series(LineSeries::new(val, RED.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label("validation")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()
            .map_err(|e| e.to_string())?;

        let metric = history
            .epochs
            .iter()
            .find_map(|e| e.val.as_ref()?.metrics.main().map(|m| m.0));
        if let Some(name) = metric {
            let points: Vec<(f64, f64)> = history
                .epochs
                .iter()
                .filter_map(|e| Some((e.epoch as f64, e.val.as_ref()?.metrics.main()?.1)))
                .collect();
            let (lo, hi) = bounds(points.iter().map(|p| p.1));
            let mut chart = ChartBuilder::on(&right)
                .caption(format!("validation {name}"), ("sans-serif", 16))
                .margin(12)
                .x_label_area_size(34)
                .y_label_area_size(56)
                .build_cartesian_2d(x, lo..hi)
                .map_err(|e| e.to_string())?;
            chart
                .configure_mesh()
                .x_desc("epoch")
                .draw()
                .map_err(|e| e.to_string())?;
            chart
                .draw_series(LineSeries::new(points, GREEN.stroke_width(2)))
                .map_err(|e| e.to_string())?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

/// A y range around `values` with a little room; (0, 1) when empty.
fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(1e-6);
    (lo - pad, hi + pad)
}

/// Writes the curves of `history` to `path` (atomically when it is a
/// regular file; see [`nnc_spec::output`]).
pub fn write_curves(history: &History, title: &str, path: &Path) -> Result<(), String> {
    let svg = curves_svg(history, title)?;
    crate::checkpoint::write_file_atomic(path, svg.as_bytes()).map_err(|e| e.to_string())
}
