//! Statistics per column of every CSV file of every mounted dataset.
//!
//! For each column: count of numeric cells, missing (empty or non-numeric) cells, mean, sample
//! standard deviation, min, max and the 5/25/50/75/95 % quantiles (linear interpolation between
//! order statistics, "type 7"). The first row is the header. Quoted fields (RFC 4180) are
//! understood. Writes `stats.csv` (one row per file and column) and `stats.json`.
//!
//! Arguments: `--delimiter C` (default `,`), `--all-files` (not only `*.csv`).
//!
//! The library holds the algorithm ([`run`]) and its kernel ([`column_stats`]), so the
//! benchmarks can run the same code natively; `src/main.rs` is the command.

#![warn(missing_docs)]

use std::io::{BufRead, Write};

use tidepool_guest::{Context, Error, InputFile, Job, Result, json_string};

/// The quantiles reported, in order.
pub const QUANTILES: [f64; 5] = [0.05, 0.25, 0.5, 0.75, 0.95];

/// The algorithm: statistics per column of every CSV file, written as CSV and JSON.
pub fn run(job: &Job) -> Result<()> {
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
        let columns = file_stats(file, delimiter).context(format!("{}/{}", file.dataset(), file.relative_path()))?;
        for c in &columns {
            let q = c.quantiles();
            let cells = [c.mean(), c.stddev(), c.min(), q[0], q[1], q[2], q[3], q[4], c.max()].map(fmt_num);
            writeln!(
                table,
                "{},{},{},{},{},{}",
                csv_field(file.dataset()),
                csv_field(file.relative_path()),
                csv_field(&c.name),
                c.count(),
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
                c.count(),
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
#[derive(Debug)]
pub struct Column {
    /// The column's header, from the first record.
    pub name: String,
    values: Vec<f64>,
    /// Cells that were empty or not a finite number.
    pub missing: u64,
    mean: f64,
    m2: f64,
    min: f64,
    max: f64,
}

impl Column {
    /// An empty column named `name`.
    pub fn new(name: String) -> Self {
        Self { name, values: Vec::new(), missing: 0, mean: 0.0, m2: 0.0, min: f64::INFINITY, max: f64::NEG_INFINITY }
    }

    /// Numeric cells seen.
    pub fn count(&self) -> usize {
        self.values.len()
    }

    /// Adds one cell: a number (surrounding whitespace ignored), or a missing value.
    pub fn push(&mut self, cell: &[u8]) {
        match parse_number(cell) {
            Some(v) if v.is_finite() => {
                // Welford's update, in input order: stable and deterministic.
                self.values.push(v);
                let delta = v - self.mean;
                self.mean += delta / self.values.len() as f64;
                self.m2 += delta * (v - self.mean);
                if v < self.min {
                    self.min = v;
                }
                if v > self.max {
                    self.max = v;
                }
            }
            _ => self.missing += 1,
        }
    }

    /// The mean of the numeric cells; `None` when there is none.
    pub fn mean(&self) -> Option<f64> {
        (!self.values.is_empty()).then_some(self.mean)
    }

    /// The sample standard deviation (n − 1); `None` below two numeric cells.
    pub fn stddev(&self) -> Option<f64> {
        (self.values.len() > 1).then(|| (self.m2 / (self.values.len() - 1) as f64).sqrt())
    }

    /// The smallest numeric cell; `None` when there is none.
    pub fn min(&self) -> Option<f64> {
        (!self.values.is_empty()).then_some(self.min)
    }

    /// The largest numeric cell; `None` when there is none.
    pub fn max(&self) -> Option<f64> {
        (!self.values.is_empty()).then_some(self.max)
    }

    /// The [`QUANTILES`], interpolated between order statistics.
    pub fn quantiles(&self) -> [Option<f64>; 5] {
        let mut sorted = self.values.clone();
        sorted.sort_unstable_by(f64::total_cmp);
        QUANTILES.map(|q| quantile(&sorted, q))
    }
}

/// A cell as a number: Rust's float syntax, surrounded by any whitespace.
fn parse_number(cell: &[u8]) -> Option<f64> {
    let cell = cell.trim_ascii();
    match std::str::from_utf8(cell) {
        Ok(text) if cell.is_ascii() => text.parse().ok(),
        // Rare: non-ASCII bytes, which can only be Unicode whitespace around a number.
        _ => String::from_utf8_lossy(cell).trim().parse().ok(),
    }
}

/// Quantile `q` of sorted values, linear between order statistics ("type 7").
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let h = q * last as f64;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(last);
    Some(sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo]))
}

fn file_stats(file: &InputFile, delimiter: u8) -> Result<Vec<Column>> {
    column_stats(file.open()?, delimiter)
}

/// The kernel: parses CSV from `reader` (first row: the header) into per-column statistics.
pub fn column_stats(mut reader: impl BufRead, delimiter: u8) -> Result<Vec<Column>> {
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
                None => columns = Some(record.iter().map(|f| Column::new(String::from_utf8_lossy(f).into())).collect()),
                Some(cols) => {
                    for (i, col) in cols.iter_mut().enumerate() {
                        col.push(record.get(i).unwrap_or_default());
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
///
/// Fields are kept in one buffer, end to end, so parsing allocates nothing once the buffers
/// have grown to the widest record.
#[derive(Debug)]
pub struct RecordParser {
    delimiter: u8,
    /// The fields of the record being read, end to end.
    bytes: Vec<u8>,
    /// Where each field in `bytes` ends (the last, open field excluded).
    ends: Vec<usize>,
    in_quotes: bool,
    /// A record was returned: the next line starts a new one.
    done: bool,
}

/// A complete record: its fields' bytes.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    bytes: &'a [u8],
    ends: &'a [usize],
}

impl<'a> Record<'a> {
    /// How many fields it has.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True when it has no field.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Field `i`, unquoted.
    pub fn get(&self, i: usize) -> Option<&'a [u8]> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        Some(&self.bytes[start..end])
    }

    /// Its fields in order, unquoted.
    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }
}

impl RecordParser {
    /// A parser of records whose fields are separated by `delimiter` (`b','`, `b';'`, `b'\t'`...).
    pub fn new(delimiter: u8) -> Self {
        Self { delimiter, bytes: Vec::new(), ends: Vec::new(), in_quotes: false, done: false }
    }

    /// Returns a complete record when `line` ends one.
    pub fn feed_line(&mut self, line: &[u8]) -> Option<Record<'_>> {
        if std::mem::take(&mut self.done) {
            self.bytes.clear();
            self.ends.clear();
        }
        let mut field_start = self.ends.last().copied().unwrap_or(0);
        let mut i = 0;
        while i < line.len() {
            let b = line[i];
            if self.in_quotes {
                if b == b'"' {
                    if line.get(i + 1) == Some(&b'"') {
                        self.bytes.push(b'"');
                        i += 1;
                    } else {
                        self.in_quotes = false;
                    }
                } else {
                    self.bytes.push(b);
                }
            } else if b == self.delimiter {
                self.ends.push(self.bytes.len());
                field_start = self.bytes.len();
            } else if b == b'"' && self.bytes.len() == field_start {
                self.in_quotes = true;
            } else if b != b'\n' && b != b'\r' {
                self.bytes.push(b);
            }
            i += 1;
        }
        if self.in_quotes {
            return None;
        }
        if self.ends.is_empty() && self.bytes.is_empty() && line.iter().all(|b| matches!(b, b'\n' | b'\r')) {
            return None; // blank line
        }
        self.ends.push(self.bytes.len());
        self.done = true;
        Some(Record { bytes: &self.bytes, ends: &self.ends })
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
        let fields = |r: Option<Record<'_>>| r.map(|r| r.iter().map(<[u8]>::to_vec).collect::<Vec<_>>());
        let v = |fs: &[&str]| Some(fs.iter().map(|f| f.as_bytes().to_vec()).collect::<Vec<_>>());
        assert_eq!(fields(p.feed_line(b"a,\"b,\"\"c\"\"\",d\r\n")), v(&["a", "b,\"c\"", "d"]));
        assert_eq!(fields(p.feed_line(b"x,\"multi\n")), None);
        assert_eq!(fields(p.feed_line(b"line\",z\n")), v(&["x", "multi\nline", "z"]));
        assert_eq!(fields(p.feed_line(b"\n")), None);
        // Empty fields, and a quote inside an unquoted field is kept.
        assert_eq!(fields(p.feed_line(b",a\"b,\n")), v(&["", "a\"b", ""]));
        // A quoted empty field is a field.
        assert_eq!(fields(p.feed_line(b"\"\"\n")), v(&[""]));
    }

    #[test]
    fn welford_matches_the_two_pass_formula() {
        let mut c = Column::new("x".into());
        for v in ["2", " 4", "4\t", "4", "5", "5", "\u{a0}7", "9", "n/a", "", "inf"] {
            c.push(v.as_bytes());
        }
        assert_eq!(c.missing, 3);
        assert_eq!(c.mean(), Some(5.0));
        assert_eq!((c.min(), c.max()), (Some(2.0), Some(9.0)));
        let two_pass = (32.0f64 / 7.0).sqrt();
        assert!((c.stddev().unwrap() - two_pass).abs() < 1e-12);
    }
}
