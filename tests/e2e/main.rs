//! End-to-end tests: the real `tidepool` binary, driven as a user would.
//!
//! * `cli_run`: `tidepool run`, its flags, outputs, receipts and exit codes;
//! * `cli_verify`: `tidepool verify`, honest and dishonest receipts.
#![allow(clippy::unwrap_used, reason = "test helpers: a failed unwrap is a failed test")]

mod cli_run;
mod cli_verify;
mod util;
