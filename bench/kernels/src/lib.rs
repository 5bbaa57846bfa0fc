//! The compute kernels of the three examples, on data generated in memory, so that the same
//! Rust code can be timed as a wasm guest (through the runtime, with fuel and NaN
//! canonicalization) and as a native program (this crate's `kernels` binary built for the
//! host). Only the examples' own kernel functions run: [`WordCounter`](tidepool_example_wordfreq::WordCounter),
//! [`column_stats`](tidepool_example_csv_stats::column_stats) and
//! [`render`](tidepool_example_mandelbrot::render).
//!
//! Each run prints a checksum of what the kernel computed, so the benchmark can check that
//! both builds computed the same thing.

#![warn(missing_docs)]

use tidepool_example_mandelbrot::View;

/// The kernels, by name.
pub const KERNELS: &[&str] = &["wordfreq", "csv-stats", "mandelbrot"];

/// A kernel with its generated input.
#[derive(Debug)]
pub struct Workload {
    kernel: &'static str,
    data: Vec<u8>,
}

/// xorshift64*: the same numbers on every platform.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// FNV-1a, to fold results into a checksum.
fn fnv(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// Generates the input of `kernel` (`None` for an unknown name).
pub fn prepare(kernel: &str) -> Option<Workload> {
    let kernel = *KERNELS.iter().find(|k| **k == kernel)?;
    let mut rng = Rng(0x7469_6465_706f_6f6c);
    let data = match kernel {
        "wordfreq" => text(&mut rng, 8 << 20),
        "csv-stats" => csv(&mut rng, 120_000),
        _ => Vec::new(),
    };
    Some(Workload { kernel, data })
}

/// `size` bytes of word-frequency input (see [`prepare`]'s text), from `seed`.
pub fn generate_text(seed: u64, size: usize) -> Vec<u8> {
    text(&mut Rng(seed | 1), size)
}

/// Text: words of a 20,000-word vocabulary, frequent ones far more often (roughly
/// Zipf), some capitalized, separated by spaces, punctuation and newlines.
fn text(rng: &mut Rng, size: usize) -> Vec<u8> {
    let vocabulary: Vec<Vec<u8>> =
        (0..20_000).map(|_| (0..2 + rng.below(10)).map(|_| b'a' + rng.below(26) as u8).collect()).collect();
    let mut out = Vec::with_capacity(size + 16);
    while out.len() < size {
        // The product of two uniform draws favours small indices.
        let i = (rng.below(vocabulary.len() as u64) * rng.below(vocabulary.len() as u64)) / vocabulary.len() as u64;
        let word = &vocabulary[i as usize];
        let start = out.len();
        out.extend_from_slice(word);
        if rng.below(10) == 0 {
            out[start] = out[start].to_ascii_uppercase();
        }
        out.push(match rng.below(20) {
            0 => b'\n',
            1 => b',',
            2 => b'.',
            _ => b' ',
        });
    }
    out
}

/// A CSV file of weather-like readings: five numeric columns, one text column, some cells
/// missing.
fn csv(rng: &mut Rng, rows: usize) -> Vec<u8> {
    let mut out = b"station,temperature,pressure,humidity,wind,rain\n".to_vec();
    for _ in 0..rows {
        let cell = |rng: &mut Rng, base: f64, spread: f64| {
            if rng.below(50) == 0 {
                String::new()
            } else {
                format!("{:.2}", base + spread * (rng.below(1_000_000) as f64 / 1e6 - 0.5))
            }
        };
        let line = format!(
            "\"st-{}\",{},{},{},{},{}\n",
            rng.below(100),
            cell(rng, 12.0, 40.0),
            cell(rng, 1013.0, 60.0),
            cell(rng, 60.0, 80.0),
            cell(rng, 5.0, 10.0),
            cell(rng, 2.0, 4.0),
        );
        out.extend_from_slice(line.as_bytes());
    }
    out
}

impl Workload {
    /// The kernel's name (one of [`KERNELS`]).
    pub fn kernel(&self) -> &str {
        self.kernel
    }

    /// Runs the kernel once; returns a checksum of its results.
    pub fn run(&self) -> u64 {
        match self.kernel {
            "wordfreq" => {
                let mut counter = tidepool_example_wordfreq::WordCounter::default();
                for chunk in self.data.chunks(1 << 20) {
                    counter.feed(chunk);
                }
                counter.end_word();
                let mut h = fnv(FNV_START, &counter.total().to_le_bytes());
                for (word, count) in counter.ranked(100, 1) {
                    h = fnv(fnv(h, &word), &count.to_le_bytes());
                }
                h
            }
            "csv-stats" => {
                let columns = tidepool_example_csv_stats::column_stats(&self.data[..], b',').unwrap_or_default();
                let mut h = FNV_START;
                for c in &columns {
                    h = fnv(h, c.name.as_bytes());
                    h = fnv(h, &(c.count() as u64).to_le_bytes());
                    let stats = [c.mean(), c.stddev(), c.min(), c.max()].into_iter().chain(c.quantiles());
                    for v in stats.flatten() {
                        h = fnv(h, &v.to_bits().to_le_bytes());
                    }
                }
                h
            }
            _ => {
                let view = View { width: 320, height: 240, max_iter: 500, center_x: -0.75, center_y: 0.1, span: 0.6 };
                let image = tidepool_example_mandelbrot::render(&view, |_| {});
                fnv(fnv(FNV_START, &image.pixels), &image.total_iter.to_le_bytes())
            }
        }
    }
}
