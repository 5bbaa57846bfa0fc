//! Prometheus metrics, in the text exposition format (version 0.0.4), written by hand: a few
//! counters and histograms do not need a metrics framework.
//!
//! Each component keeps the metrics of its own concern (the HTTP layer its requests and
//! refusals, the jobs their durations and fuel) with the types here, and renders them into the
//! `/metrics` answer. Nothing here is global.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Counters keyed by their label values, e.g. `(route, method, status)`.
#[derive(Debug)]
pub struct CounterVec<K: Ord> {
    values: Mutex<BTreeMap<K, u64>>,
}

impl<K: Ord> Default for CounterVec<K> {
    fn default() -> Self {
        Self { values: Mutex::new(BTreeMap::new()) }
    }
}

impl<K: Ord + Clone> CounterVec<K> {
    /// Adds one to the counter of `key`.
    pub fn inc(&self, key: K) {
        *self.values.lock().unwrap_or_else(|p| p.into_inner()).entry(key).or_insert(0) += 1;
    }

    /// The counters, in label order.
    pub fn snapshot(&self) -> Vec<(K, u64)> {
        self.values.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

/// A histogram with fixed buckets (upper bounds).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    state: Mutex<HistogramState>,
}

#[derive(Debug, Default, Clone)]
struct HistogramState {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    /// An empty histogram with these bucket upper bounds (ascending).
    pub fn new(bounds: &'static [f64]) -> Self {
        Self { bounds, state: Mutex::new(HistogramState { counts: vec![0; bounds.len()], ..Default::default() }) }
    }

    /// Counts one value (in the histogram's unit).
    pub fn observe(&self, value: f64) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = self.bounds.iter().position(|b| value <= *b) {
            s.counts[i] += 1;
        }
        s.sum += value;
        s.count += 1;
    }

    /// Writes the histogram as `name` (with its `_bucket`, `_sum` and `_count` series).
    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner()).clone();
        header(out, name, help, "histogram");
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(&s.counts) {
            cumulative += count;
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", s.count);
        let _ = writeln!(out, "{name}_sum {}", s.sum);
        let _ = writeln!(out, "{name}_count {}", s.count);
    }
}

/// `# HELP` and `# TYPE` lines.
pub fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// One sample: `name{label="value",...} value`, label values escaped.
pub fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let escaped = v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
            let _ = write!(out, "{k}=\"{escaped}\"");
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_and_samples_render_in_the_text_format() {
        let h = Histogram::new(&[1.0, 10.0]);
        for v in [0.5, 5.0, 50.0] {
            h.observe(v);
        }
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "x");
        sample(&mut out, "y_total", &[("route", "/a\"b")], 3);
        assert!(out.contains("x_seconds_bucket{le=\"1\"} 1\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"10\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_seconds_sum 55.5\n"), "{out}");
        assert!(out.contains("y_total{route=\"/a\\\"b\"} 3\n"), "{out}");
    }
}
