//! Renders the Mandelbrot set to a PGM image: a compute-heavy, floating-point kernel.
//!
//! Writes `mandelbrot.pgm` (binary P5, 8-bit grey) and `stats.json` (pixels inside the set,
//! mean iterations). Reads no input. Arguments: `--width` (800), `--height` (600),
//! `--max-iter` (500), `--center-x` (-0.5), `--center-y` (0), `--span` (3.0, the width of the
//! view in the complex plane).
//!
//! Only `+ - * sqrt` are used on floats, all correctly rounded in IEEE 754, so the image is the
//! same natively and in wasm.
//!
//! The library holds the algorithm ([`run`]) and its kernel ([`render`]), so the benchmarks
//! can run the same code natively; `src/main.rs` is the command.

#![warn(missing_docs)]

use std::io::Write;

use tidepool_guest::{Error, Job, Result};

/// The algorithm: render the view its arguments describe, write the image and statistics.
pub fn run(job: &Job) -> Result<()> {
    let width: usize = job.arg_or("--width", 800)?;
    let height: usize = job.arg_or("--height", 600)?;
    let max_iter: u32 = job.arg_or("--max-iter", 500)?;
    let cx: f64 = job.arg_or("--center-x", -0.5)?;
    let cy: f64 = job.arg_or("--center-y", 0.0)?;
    let span: f64 = job.arg_or("--span", 3.0)?;
    if width == 0 || height == 0 || width * height > 64 << 20 || max_iter == 0 {
        return Err(Error::new("width and height must be positive (at most 64 Mpixel), max-iter at least 1"));
    }
    let view = View { width, height, max_iter, center_x: cx, center_y: cy, span };
    let Image { pixels, inside, total_iter } = render(&view, |rows| {
        if rows % 64 == 0 || rows == height {
            job.progress(rows as u64, Some(height as u64), "rows");
        }
    });
    let mut out = job.create_output("mandelbrot.pgm")?;
    write!(out, "P5\n{width} {height}\n255\n")?;
    out.write_all(&pixels)?;
    out.flush()?;
    let n = (width * height) as u64;
    job.write_output(
        "stats.json",
        format!("{{\"pixels\":{n},\"inside\":{inside},\"mean_iterations\":{}}}\n", total_iter as f64 / n as f64),
    )?;
    println!("{width}x{height}, {inside} of {n} pixels inside the set");
    Ok(())
}

/// What to render.
#[derive(Clone, Copy, Debug)]
pub struct View {
    /// Pixels across.
    pub width: usize,
    /// Pixels down.
    pub height: usize,
    /// Iterations before a point counts as inside the set.
    pub max_iter: u32,
    /// The real part of the image's centre.
    pub center_x: f64,
    /// The imaginary part of the image's centre.
    pub center_y: f64,
    /// The width of the view in the complex plane.
    pub span: f64,
}

/// A rendered image.
#[derive(Debug)]
pub struct Image {
    /// Grey levels, row by row (0 inside the set).
    pub pixels: Vec<u8>,
    /// Pixels inside the set (that never escaped).
    pub inside: u64,
    /// Iterations over all pixels.
    pub total_iter: u64,
}

/// The kernel: renders `view`, calling `rows_done` after each row.
pub fn render(view: &View, mut rows_done: impl FnMut(usize)) -> Image {
    let View { width, height, max_iter, center_x: cx, center_y: cy, span } = *view;
    let mut pixels = vec![0u8; width * height];
    let (mut inside, mut total_iter) = (0u64, 0u64);
    let step = span / width as f64;
    for (y, row) in pixels.chunks_mut(width).enumerate() {
        let ci = cy + (y as f64 - height as f64 / 2.0) * step;
        for (x, px) in row.iter_mut().enumerate() {
            let cr = cx + (x as f64 - width as f64 / 2.0) * step;
            let n = escape_time(cr, ci, max_iter);
            total_iter += u64::from(n);
            if n == max_iter {
                inside += 1;
                *px = 0;
            } else {
                // sqrt stretches the low counts where most of the detail is.
                *px = (255.0 * (f64::from(n) / f64::from(max_iter)).sqrt()) as u8;
            }
        }
        rows_done(y + 1);
    }
    Image { pixels, inside, total_iter }
}

/// Iterations before `z = z² + c` escapes the radius-2 disc (`max_iter` if it never does).
fn escape_time(cr: f64, ci: f64, max_iter: u32) -> u32 {
    let (mut zr, mut zi) = (0.0f64, 0.0f64);
    for i in 0..max_iter {
        let (zr2, zi2) = (zr * zr, zi * zi);
        if zr2 + zi2 > 4.0 {
            return i;
        }
        zi = 2.0 * zr * zi + ci;
        zr = zr2 - zi2 + cr;
    }
    max_iter
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_times() {
        assert_eq!(escape_time(0.0, 0.0, 100), 100, "the origin is inside");
        assert_eq!(escape_time(2.0, 2.0, 100), 1, "far points escape at once");
        assert_eq!(escape_time(-2.0, 0.0, 100), 100, "the tip of the needle stays bounded");
    }
}
