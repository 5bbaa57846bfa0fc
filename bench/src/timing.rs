//! Medians over repeated runs, and the table of figures with their baselines and targets.

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
    median_of(&mut times)
}

/// The median of `samples` (the upper one of an even count). Panics on no samples.
pub fn median_of(samples: &mut [Duration]) -> Duration {
    percentile(samples, 50.0)
}

/// The median of plain numbers (rates, ratios). Panics on no values.
pub fn median_f64(values: &mut [f64]) -> f64 {
    assert!(!values.is_empty(), "no values");
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The `p`th percentile of `samples`, nearest rank. Panics on no samples.
pub fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    assert!(!samples.is_empty(), "no samples");
    samples.sort();
    let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

/// What a figure must reach.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    /// The figure's number must be at most this (`unit` is shown after it).
    AtMost(f64, &'static str),
    /// The figure's number must be at least this.
    AtLeast(f64, &'static str),
    /// Reported, not judged.
    Reported,
}

impl Target {
    fn check(self, measured: f64) -> Option<bool> {
        match self {
            Target::AtMost(t, _) => Some(measured <= t),
            Target::AtLeast(t, _) => Some(measured >= t),
            Target::Reported => None,
        }
    }

    fn show(self) -> String {
        match self {
            Target::AtMost(t, unit) => format!("≤ {}{unit}", number(t)),
            Target::AtLeast(t, unit) => format!("≥ {}{unit}", number(t)),
            Target::Reported => "reported".into(),
        }
    }
}

/// `1.2`, `0.7`, `1,000`, `50`.
fn number(v: f64) -> String {
    if v.fract() != 0.0 {
        return format!("{v}");
    }
    let digits = format!("{}", v as u64);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// One row of the result table.
#[derive(Clone, Debug)]
pub struct Row {
    /// What was measured, in words.
    pub figure: String,
    /// The measurement, with its unit.
    pub value: String,
    /// The baseline's measurement, or `—` for a figure judged on its own.
    pub baseline: String,
    /// Value against baseline (`1.23×`), or `—`.
    pub ratio: String,
    /// The target, as shown (`≤ 1.3×`), or `reported` for a figure without one.
    pub target: String,
    /// How the value was taken (`median of 21 runs`).
    pub runs: String,
    /// Whether the target was met; `None` for a figure only reported.
    pub pass: Option<bool>,
}

impl Row {
    /// A figure judged by its ratio to a baseline measured in the same run.
    pub fn ratio(figure: &str, value: String, baseline: String, ratio: f64, target: Target, runs: &str) -> Self {
        Self {
            figure: figure.into(),
            value,
            baseline,
            ratio: format!("{ratio:.2}×"),
            target: target.show(),
            runs: runs.into(),
            pass: target.check(ratio),
        }
    }

    /// A figure judged on its own value (`measured`, in the target's unit).
    pub fn absolute(figure: &str, value: String, measured: f64, target: Target, runs: &str) -> Self {
        Self {
            figure: figure.into(),
            value,
            baseline: "—".into(),
            ratio: "—".into(),
            target: target.show(),
            runs: runs.into(),
            pass: target.check(measured),
        }
    }

    /// A figure that could not be measured: it fails, with the reason as its value.
    pub fn failed(figure: &str, reason: String, target: Target) -> Self {
        Self {
            figure: figure.into(),
            value: reason,
            baseline: "—".into(),
            ratio: "—".into(),
            target: target.show(),
            runs: "—".into(),
            pass: Some(false),
        }
    }

    /// Fails the row (e.g. the two sides computed different results), saying why.
    pub fn fail_because(mut self, why: &str) -> Self {
        self.pass = Some(false);
        self.value = format!("{} ({why})", self.value);
        self
    }
}

/// Renders rows as a Markdown table.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| figure | value | baseline (same run) | ratio | target | runs | result |\n|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let verdict = match r.pass {
            Some(true) => "pass",
            Some(false) => "**FAIL**",
            None => "reported",
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            r.figure, r.value, r.baseline, r.ratio, r.target, r.runs, verdict
        ));
    }
    out
}

/// `d` in microseconds, one decimal (`12.3 µs`).
pub fn micros(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

/// `d` in milliseconds, one decimal (`12.3 ms`).
pub fn millis(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// Throughput of `bytes` in `d`, in whole MiB per second.
pub fn mib_per_s(bytes: u64, d: Duration) -> String {
    format!("{:.0} MiB/s", bytes as f64 / (1 << 20) as f64 / d.as_secs_f64())
}

/// `bytes` in whole MiB.
pub fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1 << 20) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let mut s: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        assert_eq!(percentile(&mut s, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&mut s, 99.0), Duration::from_millis(99));
        assert_eq!(
            median_of(&mut [Duration::from_secs(3), Duration::from_secs(1), Duration::from_secs(2)]),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn targets_judge_and_show() {
        assert_eq!(Target::AtMost(1.2, "×").check(1.19), Some(true));
        assert_eq!(Target::AtMost(1.2, "×").check(1.21), Some(false));
        assert_eq!(Target::AtLeast(1000.0, "/s").show(), "≥ 1,000/s");
        assert_eq!(Target::Reported.check(5.0), None);
    }
}
