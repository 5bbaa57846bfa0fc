//! Medians over repeated runs, and a table of figures with their baselines and targets.

use std::time::{Duration, Instant};

/// Runs `f` `runs` times (after one warm-up run) and returns the median duration.
pub fn median<T>(runs: usize, mut f: impl FnMut() -> T) -> Duration {
    std::hint::black_box(f());
    let mut times: Vec<Duration> = (0..runs.max(1))
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(f());
            start.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

/// One row of a result table.
#[derive(Debug, Clone)]
pub struct Row {
    pub figure: String,
    pub value: String,
    pub baseline: String,
    pub ratio: String,
    pub target: String,
    pub pass: Option<bool>,
}

/// Renders rows as a Markdown table.
pub fn table(rows: &[Row]) -> String {
    let mut out =
        String::from("| figure | value | baseline (same run) | ratio | target | result |\n|---|---|---|---|---|---|\n");
    for r in rows {
        let verdict = match r.pass {
            Some(true) => "pass",
            Some(false) => "FAIL",
            None => "reported",
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            r.figure, r.value, r.baseline, r.ratio, r.target, verdict
        ));
    }
    out
}

pub fn micros(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

pub fn mib_per_s(bytes: u64, d: Duration) -> String {
    format!("{:.0} MiB/s", bytes as f64 / (1 << 20) as f64 / d.as_secs_f64())
}
