//! Service Execution Agreements on this provider: the flow's steps ([`service`]: initialize,
//! upload, lock, execute, refund), which the HTTP handlers call, and the provider's reactions
//! to keeper events ([`events`]). The template itself is protocol
//! ([`crate::protocol::template`]): consumers compute it too.

pub mod events;
pub mod service;

pub use events::Dispatcher;
pub use service::{Agreements, AlgorithmSource, ServiceError};
