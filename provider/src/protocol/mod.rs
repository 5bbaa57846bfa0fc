//! The protocol: everything that travels between a provider, its consumers and publishers,
//! and a keeper, declared once and shared by the daemon, the client and the CLI.
//!
//! * [`api`]: request and response bodies of the HTTP API;
//! * [`ddo`]: DIDs and DDOs; [`template`]: the compute agreement template (condition names,
//!   keys, values hashes) and [`handlers`] (its event-action mapping), which both sides compute
//!   from a DDO;
//! * [`agreement`]: agreements, conditions and payouts as a keeper holds them;
//! * [`events`]: the agreement's events, as Solidity events (`sol!`);
//! * [`states`]: job and payment states; [`names`]: dataset names and file paths;
//! * [`eip712`]: the signed EIP-712 types and their domain; [`signing`]: request envelopes,
//!   typed-data signatures and receipt signatures.
//!
//! Nothing here knows about storage, HTTP servers or the runtime's execution: this module
//! depends on no other module of the crate.

pub mod agreement;
pub mod api;
pub mod ddo;
pub mod eip712;
pub mod events;
pub mod handlers;
pub mod named;
pub mod names;
pub mod signing;
pub mod states;
pub mod template;
