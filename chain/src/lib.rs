//! The Service Execution Agreement on an EVM chain: Tidepool's contracts (`contracts/`),
//! deployed and driven with alloy.
//!
//! * [`bindings`]: the contracts' `sol!` bindings, generated from the committed artifacts,
//!   and the EIP-712 types consumers sign for them;
//! * [`deploy`]: deploying the contracts and registering the compute template; [`Contracts`]
//!   records where they are;
//! * [`template`]: the compute template (conditions, keys, values hashes, dataset checksums);
//! * [`client`]: [`Chain`] reads, [`Agent`] acts for one party, a typed function per step;
//! * [`sender`]: how transactions are sent (nonces without gaps, receipts checked, transient
//!   errors retried);
//! * [`events`]: the agreement events, read from a persisted block cursor;
//! * [`receipt`]: the execution receipt as the escrow takes it;
//! * [`error`]: [`ChainError`], one variant per contract error;
//! * [`anvil`]: a local chain for tests and demos.
//!
//! This crate knows the chain and the contracts, not the provider: the provider's EVM keeper
//! is built on it.

#![warn(missing_docs)]

pub mod anvil;
pub mod bindings;
pub mod client;
pub mod deploy;
pub mod error;
pub mod events;
pub mod receipt;
pub mod sender;
pub mod template;
mod transport;

pub use client::{Agent, AgreementState, Chain, ChainConfig, OnChainAgreement, Released};
pub use deploy::{Contracts, deploy};
pub use error::{ChainError, ReceiptCheck, Result};
pub use events::{AgreementEvent, ChainEvent, EventName, EventReader};
pub use sender::TxOutcome;
