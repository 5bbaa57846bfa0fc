//! The Tidepool provider: the `tidepool` command and the library behind it.
//!
//! * [`cli`]: one module per subcommand (`run`, `verify`, ...), shared argument parsers and the
//!   progress display.

pub mod cli;
