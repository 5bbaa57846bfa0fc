//! The events of an agreement's life (OEP-12), declared once as Solidity events with alloy's
//! `sol!`: the embedded keeper stores and serves these very types, and a keeper on an EVM chain
//! decodes its contracts' logs into them (`SolEvent::decode_log`), so the provider and its
//! clients handle one set of typed events whichever keeper they talk to.
//!
//! On the wire (`GET /api/v1/keeper/events`) an event is
//! `{"id", "agreementId", "name", "data", "timestamp"}`: `name` is the Solidity event's name and
//! `data` its fields, named as in Solidity (`receiptHash`, `providerAmount`...).

use alloy_primitives::B256;
use serde::{Deserialize, Serialize};

alloy_sol_types::sol! {
    /// An agreement was created (the consumer's signature over it checked).
    #[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
    event ExecuteAgreement(bytes32 indexed agreementId, bytes32 did, address consumer, address provider);

    /// The consumer's algorithm was uploaded; `algorithmHash` is what the job must run.
    #[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
    event FulfillUpload(bytes32 indexed agreementId, bytes32 algorithmHash);

    /// The consumer locked `amount` tokens in escrow.
    #[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
    event PaymentLocked(bytes32 indexed agreementId, uint256 amount);

    /// The provider granted the consumer its compute.
    #[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
    event ComputeGranted(bytes32 indexed agreementId, address consumer);

    /// The escrow was split: the provider paid for the fuel used, the rest returned; the
    /// receipt's hash is committed.
    #[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
    event PaymentReleased(bytes32 indexed agreementId, bytes32 receiptHash, uint256 providerAmount, uint256 consumerRefund);

    /// The escrow went back to the consumer after the provider missed a deadline.
    #[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
    event PaymentRefund(bytes32 indexed agreementId, uint256 amount);

    /// The job's outputs were published as an asset of the consumer (`outputDid`, the 32 bytes
    /// of its `did:op:` DID).
    #[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
    event OutputPublished(bytes32 indexed agreementId, bytes32 outputDid);
}

super::named::named_enum! {
    /// The name of each event of the lifecycle (the Solidity event's name).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
    pub enum EventName("an agreement event") {
        ExecuteAgreement = "ExecuteAgreement",
        FulfillUpload = "FulfillUpload",
        PaymentLocked = "PaymentLocked",
        ComputeGranted = "ComputeGranted",
        PaymentReleased = "PaymentReleased",
        PaymentRefund = "PaymentRefund",
        OutputPublished = "OutputPublished",
    }
}

/// One event of an agreement, with its typed fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "name", content = "data")]
pub enum AgreementEvent {
    ExecuteAgreement(ExecuteAgreement),
    FulfillUpload(FulfillUpload),
    PaymentLocked(PaymentLocked),
    ComputeGranted(ComputeGranted),
    PaymentReleased(PaymentReleased),
    PaymentRefund(PaymentRefund),
    OutputPublished(OutputPublished),
}

impl AgreementEvent {
    /// Which event this is.
    pub fn name(&self) -> EventName {
        match self {
            AgreementEvent::ExecuteAgreement(_) => EventName::ExecuteAgreement,
            AgreementEvent::FulfillUpload(_) => EventName::FulfillUpload,
            AgreementEvent::PaymentLocked(_) => EventName::PaymentLocked,
            AgreementEvent::ComputeGranted(_) => EventName::ComputeGranted,
            AgreementEvent::PaymentReleased(_) => EventName::PaymentReleased,
            AgreementEvent::PaymentRefund(_) => EventName::PaymentRefund,
            AgreementEvent::OutputPublished(_) => EventName::OutputPublished,
        }
    }

    /// The agreement it is about.
    pub fn agreement_id(&self) -> B256 {
        match self {
            AgreementEvent::ExecuteAgreement(e) => e.agreementId,
            AgreementEvent::FulfillUpload(e) => e.agreementId,
            AgreementEvent::PaymentLocked(e) => e.agreementId,
            AgreementEvent::ComputeGranted(e) => e.agreementId,
            AgreementEvent::PaymentReleased(e) => e.agreementId,
            AgreementEvent::PaymentRefund(e) => e.agreementId,
            AgreementEvent::OutputPublished(e) => e.agreementId,
        }
    }
}

/// One event of a keeper's ordered log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeeperEvent {
    /// Position in the log: strictly increasing.
    pub id: u64,
    pub agreement_id: B256,
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

/// That an event was appended to a keeper's log (see `Keeper::subscribe`): its id and
/// agreement, so that a waiter for one agreement need not look at others'.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventNote {
    pub id: u64,
    pub agreement: B256,
}

#[cfg(test)]
mod tests {
    use alloy_primitives::U256;
    use alloy_sol_types::SolEvent;

    use super::*;

    #[test]
    fn events_travel_as_name_and_typed_data() {
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

    #[test]
    fn names_are_the_solidity_events_names() {
        let signatures = [
            ExecuteAgreement::SIGNATURE,
            FulfillUpload::SIGNATURE,
            PaymentLocked::SIGNATURE,
            ComputeGranted::SIGNATURE,
            PaymentReleased::SIGNATURE,
            PaymentRefund::SIGNATURE,
            OutputPublished::SIGNATURE,
        ];
        for (&name, signature) in EventName::ALL.iter().zip(signatures) {
            assert!(signature.starts_with(&format!("{name}(")), "{name} vs {signature}");
            assert_eq!(name.as_str().parse::<EventName>(), Ok(name));
            assert_eq!(serde_json::to_value(name).unwrap(), name.as_str());
        }
        assert_eq!(PaymentReleased::SIGNATURE, "PaymentReleased(bytes32,bytes32,uint256,uint256)");
    }
}
