//! End-to-end tests: the real `tidepool` binary, driven as a user would.
//!
//! * `cli_run`: `tidepool run`, its flags, outputs, receipts and exit codes;
//! * `cli_verify`: `tidepool verify`, honest and dishonest receipts;
//! * `cli_python`: Python algorithms through `run` and `verify`, and their mistakes;
//! * `provider_flow`: the daemon over loopback HTTP: the agreement flow for each example, several
//!   datasets, deferred execution, refunds, concurrency;
//! * `provider_python`: Python algorithms on a provider: `compute`, then `verify`; uploads checked;
//! * `provider_errors`: every error class, replays, algorithm policies;
//! * `provider_restart`: SIGKILL at any point, restart, nothing lost or duplicated;
//! * `provider_cli`: the client commands and `tidepool demo`;
//! * `keepers`: one scenario suite on both keepers (embedded, and contracts on anvil);
//! * `cluster`: API nodes and workers on real PostgreSQL and SeaweedFS, failures included;
//! * `sandbox`: jobs in confined worker processes: a worker killed or stuck mid-job,
//!   quarantine, huge modules refused while jobs run;
//! * `hostile`: slow connections, endless chunked bodies, endless guests, over real TCP;
//! * `gc`: `tidepool gc` on a stopped daemon's data directory, and the provider after it;
//! * `packaging`: the systemd unit's hardening, rated by `systemd-analyze security`.
#![allow(clippy::unwrap_used, reason = "test helpers: a failed unwrap is a failed test")]

mod cli_python;
mod cli_run;
mod cli_verify;
mod cluster;
mod daemon;
mod gc;
mod hostile;
mod keepers;
mod packaging;
mod provider_cli;
mod provider_errors;
mod provider_flow;
mod provider_python;
mod provider_restart;
mod sandbox;
mod util;
