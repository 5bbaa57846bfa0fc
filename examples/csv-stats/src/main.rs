//! The `csv-stats` command: see the library for what it does.

tidepool_guest::main!(tidepool_example_csv_stats::run);
