//! The events of an agreement's life (OEP-12), as a keeper's log holds them.
//!
//! The events themselves are declared once, as Solidity events with alloy's `sol!`, in
//! `tidepool_chain::events`, beside the contracts that emit them: the embedded keeper stores
//! and serves these very types, and the EVM keeper decodes its contracts' logs into them, so
//! the provider and its clients handle one set of typed events whichever keeper they talk to.
//!
//! On the wire (`GET /api/v1/keeper/events`) an event is
//! `{"id", "agreementId", "name", "data", "timestamp"}`: `name` is the Solidity event's name and
//! `data` its fields, named as in Solidity (`receiptHash`, `providerAmount`...).

use alloy_primitives::B256;
use serde::{Deserialize, Serialize};
pub use tidepool_chain::events::{
    AgreementEvent, ComputeGranted, EventName, ExecuteAgreement, FulfillUpload, OutputPublished, PaymentLocked,
    PaymentRefund, PaymentReleased, UnknownEvent,
};

/// One event of a keeper's ordered log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeeperEvent {
    /// Position in the log: strictly increasing.
    pub id: u64,
    /// The agreement it is about.
    pub agreement_id: B256,
    /// The event and its fields (flattened: `name` and the event's own fields).
    #[serde(flatten)]
    pub event: AgreementEvent,
    /// Unix seconds.
    pub timestamp: u64,
}

impl KeeperEvent {
    /// Which event this is.
    pub fn name(&self) -> EventName {
        self.event.name()
    }
}

/// That an event was appended to a keeper's log (see `Keeper::subscribe`): its id, agreement
/// and name, so that a waiter for one agreement or some events need not look at others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventNote {
    /// The event's position in the log.
    pub id: u64,
    /// Its agreement.
    pub agreement: B256,
    /// Which event it is.
    pub name: EventName,
}

#[cfg(test)]
mod tests {
    use alloy_primitives::U256;

    use super::*;

    #[test]
    fn log_entries_travel_with_the_event_flattened() {
        let event = KeeperEvent {
            id: 7,
            agreement_id: B256::repeat_byte(1),
            event: AgreementEvent::PaymentReleased(PaymentReleased {
                agreementId: B256::repeat_byte(1),
                receiptHash: B256::repeat_byte(2),
                providerAmount: U256::from(600),
                consumerRefund: U256::from(1_400),
            }),
            timestamp: 1_700_000_000,
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["name"], "PaymentReleased");
        assert_eq!(json["agreementId"], B256::repeat_byte(1).to_string());
        assert_eq!(json["data"]["receiptHash"], B256::repeat_byte(2).to_string());
        assert_eq!(serde_json::from_value::<KeeperEvent>(json).unwrap(), event);
    }
}
