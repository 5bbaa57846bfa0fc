//! The template's event-action mapping (OEP-12): which actor reacts to which event, with which
//! handler. A DDO lists it in `serviceAgreementContract.events`; the provider runs the
//! publisher's handlers (`agreement::events`), the client the consumer's (`client::flow`).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::ddo::{EventHandlerSpec, HandlerRef};
use super::events::EventName;

super::named::named_enum! {
    /// Who reacts to an event.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub enum Actor("an actor") {
        /// The consumer (its client).
        Consumer = "consumer",
        /// The publisher: the provider that serves the asset.
        Publisher = "publisher",
    }
}

/// The event handlers the template names (OEP-12's `module.function`), each run by one actor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Handler {
    /// Consumer: upload the algorithm (`compute.uploadAlgorithm`).
    UploadAlgorithm,
    /// Consumer: lock the payment (`payment.lockPayment`).
    LockPayment,
    /// Provider: grant compute once paid and uploaded (`compute.grantCompute`).
    GrantCompute,
    /// Consumer: ask for the job (`compute.execute`).
    Execute,
    /// Consumer: download and check the results (`compute.fetchResults`).
    FetchResults,
    /// Consumer: the payment came back (`payment.refunded`).
    Refunded,
    /// Consumer: the outputs' asset exists (`compute.outputPublished`).
    OutputPublished,
}

impl Handler {
    /// Every handler.
    pub const ALL: [Handler; 7] = [
        Handler::UploadAlgorithm,
        Handler::LockPayment,
        Handler::GrantCompute,
        Handler::Execute,
        Handler::FetchResults,
        Handler::Refunded,
        Handler::OutputPublished,
    ];

    /// `(module, function)`, as DDOs name it.
    pub fn name(self) -> (&'static str, &'static str) {
        match self {
            Handler::UploadAlgorithm => ("compute", "uploadAlgorithm"),
            Handler::LockPayment => ("payment", "lockPayment"),
            Handler::GrantCompute => ("compute", "grantCompute"),
            Handler::Execute => ("compute", "execute"),
            Handler::FetchResults => ("compute", "fetchResults"),
            Handler::Refunded => ("payment", "refunded"),
            Handler::OutputPublished => ("compute", "outputPublished"),
        }
    }

    /// The handler a DDO's reference names, if it is one of these.
    pub fn of(reference: &HandlerRef) -> Option<Self> {
        Self::ALL.into_iter().find(|h| h.name() == (reference.module_name.as_str(), reference.function_name.as_str()))
    }
}

impl fmt::Display for Handler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (module, function) = self.name();
        write!(f, "{module}.{function}")
    }
}

/// Who reacts to which event, with which handler (the DDO's `serviceAgreementContract.events`).
pub const EVENT_HANDLERS: &[(EventName, Actor, Handler)] = &[
    (EventName::ExecuteAgreement, Actor::Consumer, Handler::UploadAlgorithm),
    (EventName::ExecuteAgreement, Actor::Consumer, Handler::LockPayment),
    (EventName::FulfillUpload, Actor::Publisher, Handler::GrantCompute),
    (EventName::PaymentLocked, Actor::Publisher, Handler::GrantCompute),
    (EventName::ComputeGranted, Actor::Consumer, Handler::Execute),
    (EventName::PaymentReleased, Actor::Consumer, Handler::FetchResults),
    (EventName::PaymentRefund, Actor::Consumer, Handler::Refunded),
    (EventName::OutputPublished, Actor::Consumer, Handler::OutputPublished),
];

pub(super) fn handler_spec(event: EventName, actor: Actor, handler: Handler) -> EventHandlerSpec {
    let (module, function) = handler.name();
    EventHandlerSpec {
        name: event,
        actor_type: actor,
        handler: HandlerRef {
            module_name: module.to_string(),
            function_name: function.to_string(),
            version: "0.1".into(),
        },
    }
}

/// The event-action mapping, as a DDO lists it.
pub fn event_handlers() -> Vec<EventHandlerSpec> {
    EVENT_HANDLERS.iter().map(|(e, a, h)| handler_spec(*e, *a, *h)).collect()
}
