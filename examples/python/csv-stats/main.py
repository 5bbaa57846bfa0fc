"""Statistics per column of every CSV file of every mounted dataset: the Python twin of
`examples/csv-stats` (the same numbers and output files, byte for byte).

For each column: count of numeric cells, missing (empty or non-numeric) cells, mean, sample
standard deviation, min, max and the 5/25/50/75/95 % quantiles (linear interpolation between
order statistics, "type 7"). The first row is the header. Quoted fields (RFC 4180) are
understood. Writes `stats.csv` (one row per file and column) and `stats.json`.

Arguments: `--delimiter C` (default `,`), `--all-files` (not only `*.csv`).
"""

import math
import re

import tidepool
from tidepool import format_float, json_string

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)

# The number syntax the Rust example accepts (Rust's `f64` syntax); `inf` and `nan` would be
# missing values anyway, as every non-finite number is.
NUMBER = re.compile(rb"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
ASCII_SPACE = b" \t\n\x0c\r"
# Unicode White_Space, which Rust's `str::trim` removes around a non-ASCII cell.
UNICODE_SPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"


def parse_number(cell):
    """A cell as a finite number, or None (a missing value)."""
    cell = cell.strip(ASCII_SPACE)
    if not cell.isascii():
        cell = cell.decode("utf-8", "replace").strip(UNICODE_SPACE).encode("utf-8")
    if not NUMBER.fullmatch(cell):
        return None
    value = float(cell)
    return value if math.isfinite(value) else None


class Column:
    """The numeric values of one column."""

    def __init__(self, name):
        self.name = name
        self.values = []
        self.missing = 0
        self.mean = 0.0
        self.m2 = 0.0
        self.min = math.inf
        self.max = -math.inf

    def push(self, cell):
        v = parse_number(cell)
        if v is None:
            self.missing += 1
            return
        # Welford's update, in input order: the same floating-point steps as the Rust example.
        self.values.append(v)
        delta = v - self.mean
        self.mean += delta / len(self.values)
        self.m2 += delta * (v - self.mean)
        if v < self.min:
            self.min = v
        if v > self.max:
            self.max = v

    def stats(self):
        """mean, stddev, min, p05, p25, median, p75, p95, max (None where undefined)."""
        n = len(self.values)
        if n == 0:
            return [None] * 9
        stddev = math.sqrt(self.m2 / (n - 1)) if n > 1 else None
        ordered = sorted(self.values)
        if 0.0 in self.values:
            # Rust sorts with `total_cmp`, which puts -0 before +0.
            ordered.sort(key=lambda v: (v, math.copysign(1.0, v)))
        q = [quantile(ordered, p) for p in QUANTILES]
        return [self.mean, stddev, self.min, *q, self.max]


def quantile(ordered, q):
    """Quantile `q` of sorted values, linear between order statistics ("type 7")."""
    last = len(ordered) - 1
    h = q * last
    lo = math.floor(h)
    hi = min(lo + 1, last)
    return ordered[lo] + (h - lo) * (ordered[hi] - ordered[lo])


class RecordParser:
    """An RFC 4180 record parser fed one line at a time (a quoted field may span lines)."""

    def __init__(self, delimiter):
        self.delimiter = delimiter
        self.fields = []
        self.field = bytearray()
        self.in_quotes = False

    def feed_line(self, line):
        """Returns the record's fields when `line` ends one."""
        field, quote, delimiter = self.field, ord('"'), self.delimiter
        i, n = 0, len(line)
        while i < n:
            b = line[i]
            if self.in_quotes:
                if b == quote:
                    if i + 1 < n and line[i + 1] == quote:
                        field.append(quote)
                        i += 1
                    else:
                        self.in_quotes = False
                else:
                    field.append(b)
            elif b == delimiter:
                self.fields.append(bytes(field))
                field.clear()
            elif b == quote and not field:
                self.in_quotes = True
            elif b != 10 and b != 13:
                field.append(b)
            i += 1
        if self.in_quotes:
            return None
        if not self.fields and not field and not line.strip(b"\r\n"):
            return None  # a blank line
        self.fields.append(bytes(field))
        field.clear()
        record, self.fields = self.fields, []
        return record


def column_stats(f, delimiter):
    parser = RecordParser(delimiter)
    columns = None
    for line in f:
        record = parser.feed_line(line)
        if record is None:
            continue
        if columns is None:
            columns = [Column(name.decode("utf-8", "replace")) for name in record]
        else:
            for i, column in enumerate(columns):
                column.push(record[i] if i < len(record) else b"")
    if parser.in_quotes:
        raise tidepool.Error("unterminated quoted field at end of file")
    if columns is None:
        raise tidepool.Error("the file is empty (no header row)")
    return columns


def csv_field(s):
    return '"' + s.replace('"', '""') + '"' if any(c in s for c in ',"\n\r') else s


def run(job):
    d = job.arg("--delimiter")
    if d is None:
        delimiter = ord(",")
    elif d in ("\\t", "tab"):
        delimiter = ord("\t")
    elif len(d.encode("utf-8")) == 1:
        delimiter = d.encode("utf-8")[0]
    else:
        raise tidepool.Error(f"--delimiter must be one character, not `{d}`")
    every = job.has_flag("--all-files")
    files = [f for f in job.all_files() if every or f.extension == "csv"]
    if not files:
        raise tidepool.Error("no CSV files in the datasets (use --all-files to read every file)")
    objects = []
    with job.create_output("stats.csv") as table:
        table.write("dataset,file,column,count,missing,mean,stddev,min,p05,p25,median,p75,p95,max\n")
        summarize(job, files, delimiter, table, objects)
    job.write_output("stats.json", "[" + ",".join(objects) + "]\n")
    print(f"{len(files)} files summarized")


def summarize(job, files, delimiter, table, objects):
    """Writes a row per file and column to `table` and a JSON object for each to `objects`."""
    for i, file in enumerate(files):
        try:
            with file.open() as f:
                columns = column_stats(f, delimiter)
        except tidepool.Error as e:
            raise tidepool.Error(f"{file.dataset}/{file.relative_path}: {e}") from None
        for c in columns:
            s = c.stats()
            cells = ",".join("" if v is None else format_float(v) for v in s)
            table.write(
                f"{csv_field(file.dataset)},{csv_field(file.relative_path)},{csv_field(c.name)},"
                f"{len(c.values)},{c.missing},{cells}\n"
            )
            num = ["null" if v is None else format_float(v) for v in s]
            objects.append(
                f'{{"dataset":{json_string(file.dataset)},"file":{json_string(file.relative_path)},'
                f'"column":{json_string(c.name)},"count":{len(c.values)},"missing":{c.missing},'
                f'"mean":{num[0]},"stddev":{num[1]},"min":{num[2]},"quantiles":{{"p05":{num[3]},'
                f'"p25":{num[4]},"p50":{num[5]},"p75":{num[6]},"p95":{num[7]}}},"max":{num[8]}}}'
            )
        job.progress(i + 1, len(files), file.relative_path)


tidepool.main(run)
