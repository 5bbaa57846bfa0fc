//! The Tidepool provider: the `tidepool` command and the library behind it.
//!
//! * [`cli`]: one module per subcommand;
//! * [`bindings`], [`auth`]: the protocol's EIP-712 types and request signatures;
//! * [`ddo`]: DIDs and DDOs; [`agreement`]: the compute template and the agreement flow;
//! * [`keeper`]: agreements, conditions, payments and events behind one trait;
//! * [`store`]: SQLite (migrations) and the content-addressed blob store.

pub mod agreement;
pub mod api;
pub mod assets;
pub mod auth;
pub mod bindings;
pub mod cli;
pub mod client;
pub mod config;
pub mod ddo;
pub mod error;
pub mod http;
pub mod jobs;
pub mod keeper;
pub mod keys;
pub mod provider;
pub mod store;
