//! Service Execution Agreements: the compute template ([`template`]), and the provider's side
//! of the flow ([`service`]: initialize, upload, execute), which the HTTP handlers call.

pub mod events;
pub mod service;
pub mod template;
