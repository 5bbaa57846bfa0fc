//! The Tidepool provider: the `tidepool` command and the library behind it. Layers, from the
//! bottom (see `ARCHITECTURE.md` at the top of the repository):
//!
//! * [`protocol`]: everything on the wire (bodies, DDOs, the agreement template, events,
//!   states, signatures), shared by the daemon, the [`client`] and the [`cli`];
//! * [`config`], [`keys`], [`store`] (SQLite, blobs, nonces);
//! * [`keeper`]: agreements, conditions, payments and events behind one trait;
//! * [`algorithms`], [`assets`], [`jobs`], [`agreement`]: the provider's components, each
//!   owning its tables;
//! * [`http`]: the API over those components; [`provider`]: the wiring.

#![warn(missing_docs)]

pub mod agreement;
pub mod algorithms;
pub mod assets;
pub mod blocking;
pub mod cli;
pub mod client;
pub mod config;
pub mod http;
pub mod jobs;
pub mod keeper;
pub mod keys;
pub mod metrics;
pub mod protocol;
pub mod provider;
pub mod store;
pub mod worker;

/// An error and its sources, `: `-separated (what `{:#}` shows for `anyhow`): what logs show.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // `#[error(transparent)]` and `{0}` messages repeat their source: say it once.
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn error_chains_show_every_cause_once() {
        let io = std::io::Error::other("disk on fire");
        let db = crate::store::DbError(sqlx::Error::Io(io));
        let shown = super::error_chain(&crate::keeper::KeeperError::Storage(db));
        assert!(shown.starts_with("the keeper's storage failed: the database failed: "), "{shown}");
        assert!(shown.ends_with("disk on fire"), "{shown}");
    }
}
