//! The heat map `explain` draws for an image input: the input on the
//! left, its attributions on the right, each scaled up to about 224
//! pixels, encoded as an 8-bit RGB PNG.

/// Panel size the image is scaled up to (nearest neighbour, an integer
/// factor): MNIST's 28 × 28 become 224 × 224.
const TARGET: usize = 224;
/// Pixels between the two panels.
const GAP: usize = 8;

/// The PNG of `input` (C × H × W values) next to `attr` (the same shape):
/// the input in grey (RGB when it has three channels), the attribution
/// summed over channels — with `signed`, blue for negative, white for
/// zero, red for positive, scaled by the largest magnitude; otherwise
/// black to red to yellow to white by magnitude.
pub(super) fn render(
    input: &[f32],
    attr: &[f32],
    [c, h, w]: [usize; 3],
    signed: bool,
) -> Result<Vec<u8>, String> {
    let plane = h * w;
    if input.len() != c * plane || attr.len() != c * plane {
        return Err(format!(
            "{} values do not make a {c}x{h}x{w} image",
            input.len()
        ));
    }
    let scale = (TARGET / h.max(w)).max(1);
    let (ph, pw) = (h * scale, w * scale);
    let (width, height) = (2 * pw + GAP, ph);
    let mut rgb = vec![255u8; width * height * 3];
    // Input: min–max normalised.
    let (lo, hi) = input
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, u), &v| {
            (l.min(v), u.max(v))
        });
    let span = (hi - lo).max(f32::MIN_POSITIVE);
    let grey = |v: f32| (255.0 * ((v - lo) / span).clamp(0.0, 1.0)).round() as u8;
    let heat: Vec<f32> = (0..plane)
        .map(|p| (0..c).map(|ch| attr[ch * plane + p]).sum())
        .collect();
    let peak = heat
        .iter()
        .fold(0.0f32, |m, &v| m.max(v.abs()))
        .max(f32::MIN_POSITIVE);
    for y in 0..h {
        for x in 0..w {
            let p = y * w + x;
            let left: [u8; 3] = if c == 3 {
                [
                    grey(input[p]),
                    grey(input[plane + p]),
                    grey(input[2 * plane + p]),
                ]
            } else {
                let mean = (0..c).map(|ch| input[ch * plane + p]).sum::<f32>() / c as f32;
                let g = grey(mean);
                [g, g, g]
            };
            let right = if signed {
                diverging(heat[p] / peak)
            } else {
                hot(heat[p].abs() / peak)
            };
            for dy in 0..scale {
                let row = (y * scale + dy) * width;
                for dx in 0..scale {
                    let l = (row + x * scale + dx) * 3;
                    rgb[l..l + 3].copy_from_slice(&left);
                    let r = (row + pw + GAP + x * scale + dx) * 3;
                    rgb[r..r + 3].copy_from_slice(&right);
                }
            }
        }
    }
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, width as u32, height as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_compression(png::Compression::High);
        let mut writer = enc.write_header().map_err(|e| e.to_string())?;
        writer.write_image_data(&rgb).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// Blue (−1), white (0), red (+1).
fn diverging(t: f32) -> [u8; 3] {
    let t = t.clamp(-1.0, 1.0);
    let fade = (255.0 * (1.0 - t.abs())).round() as u8;
    if t >= 0.0 {
        [255, fade, fade]
    } else {
        [fade, fade, 255]
    }
}

/// Black (0), red, yellow, white (1).
fn hot(t: f32) -> [u8; 3] {
    let t = t.clamp(0.0, 1.0) * 3.0;
    let ch = |v: f32| (255.0 * v.clamp(0.0, 1.0)).round() as u8;
    [ch(t), ch(t - 1.0), ch(t - 2.0)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_png_decodes_to_two_scaled_panels() {
        let input: Vec<f32> = (0..28 * 28).map(|i| (i % 28) as f32).collect();
        let attr: Vec<f32> = (0..28 * 28).map(|i| (i as f32 - 392.0) / 392.0).collect();
        let png = render(&input, &attr, [1, 28, 28], true).unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(png));
        let reader = decoder.read_info().unwrap();
        let info = reader.info();
        assert_eq!((info.width, info.height), (2 * 224 + GAP as u32, 224));
        assert!(render(&input, &attr[1..], [1, 28, 28], true).is_err());
    }

    #[test]
    fn colours_are_white_at_zero_and_saturated_at_the_ends() {
        assert_eq!(diverging(0.0), [255, 255, 255]);
        assert_eq!(diverging(1.0), [255, 0, 0]);
        assert_eq!(diverging(-1.0), [0, 0, 255]);
        assert_eq!(hot(0.0), [0, 0, 0]);
        assert_eq!(hot(1.0), [255, 255, 255]);
    }
}
