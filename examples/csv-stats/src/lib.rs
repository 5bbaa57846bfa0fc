//! Statistics per column of every CSV file of every mounted dataset.
//!
//! For each column: count of numeric cells, missing (empty or non-numeric) cells, mean, sample
//! standard deviation, min, max and the 5/25/50/75/95 % quantiles (linear interpolation between
//! order statistics, "type 7"). The first row is the header. Quoted fields (RFC 4180) are
//! understood. Writes `stats.csv` (one row per file and column) and `stats.json`.
//!
//! Arguments: `--delimiter C` (default `,`), `--all-files` (not only `*.csv`).

use std::io::{BufRead, Write};

use tidepool_guest::{Context, Error, InputFile, Job, Result, json_string};

tidepool_guest::main!(run);

const QUANTILES: [f64; 5] = [0.05, 0.25, 0.5, 0.75, 0.95];

fn run(job: &Job) -> Result<()> {
    let delimiter = match job.arg("--delimiter") {
        None => b',',
        Some("\\t") | Some("tab") => b'\t',
        Some(d) if d.len() == 1 => d.as_bytes()[0],
        Some(d) => return Err(Error::new(format!("--delimiter must be one character, not `{d}`"))),
    };
    let all = job.has_flag("--all-files");
    let files: Vec<InputFile> =
        job.all_files()?.into_iter().filter(|f| all || f.extension().as_deref() == Some("csv")).collect();
    if files.is_empty() {
        return Err(Error::new("no CSV files in the datasets (use --all-files to read every file)"));
    }
    let mut table = job.create_output("stats.csv")?;
    writeln!(table, "dataset,file,column,count,missing,mean,stddev,min,p05,p25,median,p75,p95,max")?;
    let mut json = String::from("[");
    for (i, file) in files.iter().enumerate() {
        let columns = column_stats(file, delimiter).context(format!("{}/{}", file.dataset(), file.relative_path()))?;
        for c in &columns {
            let q = c.quantiles();
            let cells = [c.mean(), c.stddev(), c.min(), q[0], q[1], q[2], q[3], q[4], c.max()].map(fmt_num);
            writeln!(
                table,
                "{},{},{},{},{},{}",
                csv_field(file.dataset()),
                csv_field(file.relative_path()),
                csv_field(&c.name),
                c.values.len(),
                c.missing,
                cells.join(",")
            )?;
            if json.len() > 1 {
                json.push(',');
            }
            json.push_str(&format!(
                "{{\"dataset\":{},\"file\":{},\"column\":{},\"count\":{},\"missing\":{},\"mean\":{},\"stddev\":{},\
                 \"min\":{},\"quantiles\":{{\"p05\":{},\"p25\":{},\"p50\":{},\"p75\":{},\"p95\":{}}},\"max\":{}}}",
                json_string(file.dataset()),
                json_string(file.relative_path()),
                json_string(&c.name),
                c.values.len(),
                c.missing,
                json_num(c.mean()),
                json_num(c.stddev()),
                json_num(c.min()),
                json_num(q[0]),
                json_num(q[1]),
                json_num(q[2]),
                json_num(q[3]),
                json_num(q[4]),
                json_num(c.max()),
            ));
        }
        job.progress(i as u64 + 1, Some(files.len() as u64), file.relative_path());
    }
    json.push_str("]\n");
    table.flush()?;
    job.write_output("stats.json", json)?;
    println!("{} files summarized", files.len());
    Ok(())
}

fn fmt_num(v: Option<f64>) -> String {
    v.map_or_else(String::new, |v| v.to_string())
}

fn json_num(v: Option<f64>) -> String {
    v.map_or_else(|| "null".to_string(), |v| v.to_string())
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
}

/// The numeric values of one column.
struct Column {
    name: String,
    values: Vec<f64>,
    missing: u64,
    mean: f64,
    m2: f64,
}

impl Column {
    fn new(name: String) -> Self {
        Self { name, values: Vec::new(), missing: 0, mean: 0.0, m2: 0.0 }
    }

    fn push(&mut self, cell: &str) {
        match cell.trim().parse::<f64>() {
            Ok(v) if v.is_finite() => {
                // Welford's update, in input order: stable and deterministic.
                self.values.push(v);
                let delta = v - self.mean;
                self.mean += delta / self.values.len() as f64;
                self.m2 += delta * (v - self.mean);
            }
            _ => self.missing += 1,
        }
    }

    fn mean(&self) -> Option<f64> {
        (!self.values.is_empty()).then_some(self.mean)
    }

    fn stddev(&self) -> Option<f64> {
        (self.values.len() > 1).then(|| (self.m2 / (self.values.len() - 1) as f64).sqrt())
    }

    fn min(&self) -> Option<f64> {
        self.values.iter().copied().reduce(f64::min)
    }

    fn max(&self) -> Option<f64> {
        self.values.iter().copied().reduce(f64::max)
    }

    fn quantiles(&self) -> [Option<f64>; 5] {
        let mut sorted = self.values.clone();
        sorted.sort_unstable_by(f64::total_cmp);
        QUANTILES.map(|q| quantile(&sorted, q))
    }
}

fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let h = q * last as f64;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(last);
    Some(sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo]))
}

fn column_stats(file: &InputFile, delimiter: u8) -> Result<Vec<Column>> {
    let mut reader = file.open()?;
    let mut parser = RecordParser::new(delimiter);
    let mut columns: Option<Vec<Column>> = None;
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        if let Some(record) = parser.feed_line(&line) {
            match &mut columns {
                None => columns = Some(record.into_iter().map(Column::new).collect()),
                Some(cols) => {
                    for (i, col) in cols.iter_mut().enumerate() {
                        col.push(record.get(i).map_or("", String::as_str));
                    }
                }
            }
        }
    }
    if parser.in_quotes {
        return Err(Error::new("unterminated quoted field at end of file"));
    }
    columns.ok_or_else(|| Error::new("the file is empty (no header row)"))
}

/// An RFC 4180 record parser fed one line at a time (a quoted field may span lines).
struct RecordParser {
    delimiter: u8,
    fields: Vec<String>,
    field: Vec<u8>,
    in_quotes: bool,
}

impl RecordParser {
    fn new(delimiter: u8) -> Self {
        Self { delimiter, fields: Vec::new(), field: Vec::new(), in_quotes: false }
    }

    /// Returns a complete record when `line` ends one.
    fn feed_line(&mut self, line: &[u8]) -> Option<Vec<String>> {
        let mut i = 0;
        while i < line.len() {
            let b = line[i];
            if self.in_quotes {
                if b == b'"' {
                    if line.get(i + 1) == Some(&b'"') {
                        self.field.push(b'"');
                        i += 1;
                    } else {
                        self.in_quotes = false;
                    }
                } else {
                    self.field.push(b);
                }
            } else if b == b'"' && self.field.is_empty() {
                self.in_quotes = true;
            } else if b == self.delimiter {
                self.fields.push(String::from_utf8_lossy(&self.field).into_owned());
                self.field.clear();
            } else if b != b'\n' && b != b'\r' {
                self.field.push(b);
            }
            i += 1;
        }
        if self.in_quotes {
            return None;
        }
        if self.fields.is_empty() && self.field.is_empty() {
            return None; // blank line
        }
        self.fields.push(String::from_utf8_lossy(&self.field).into_owned());
        self.field.clear();
        Some(std::mem::take(&mut self.fields))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(&v, 0.5), Some(2.5));
        assert_eq!(quantile(&v, 0.0), Some(1.0));
        assert_eq!(quantile(&v, 1.0), Some(4.0));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn quoted_fields_span_lines_and_escape_quotes() {
        let mut p = RecordParser::new(b',');
        assert_eq!(p.feed_line(b"a,\"b,\"\"c\"\"\",d\r\n"), Some(vec!["a".into(), "b,\"c\"".into(), "d".into()]));
        assert_eq!(p.feed_line(b"x,\"multi\n"), None);
        assert_eq!(p.feed_line(b"line\",z\n"), Some(vec!["x".into(), "multi\nline".into(), "z".into()]));
        assert_eq!(p.feed_line(b"\n"), None);
    }

    #[test]
    fn welford_matches_the_two_pass_formula() {
        let mut c = Column::new("x".into());
        for v in ["2", "4", "4", "4", "5", "5", "7", "9", "n/a", ""] {
            c.push(v);
        }
        assert_eq!(c.missing, 2);
        assert_eq!(c.mean(), Some(5.0));
        let two_pass = (32.0f64 / 7.0).sqrt();
        assert!((c.stddev().unwrap() - two_pass).abs() < 1e-12);
    }
}
