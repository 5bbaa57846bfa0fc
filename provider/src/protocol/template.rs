//! The compute agreement template: its conditions, how they depend on each other, which events
//! they emit and who reacts to them, and how each condition's key and parameter values are
//! hashed. Both sides compute these from the DDO: the provider to check what a consumer
//! signed, the consumer to check the DDO before signing.
//!
//! ```text
//!   lockPayment ─────┐
//!                    ├──> grantCompute ──> releasePayment
//!   uploadAlgorithm ─┘
//!   lockPayment ──> refundPayment   (only once grantCompute or releasePayment missed its deadline)
//! ```
//!
//! * condition key: `keccak256(abi.encodePacked(templateId, controller, selector))`, the SLA
//!   text's `hash(control contract address + function fingerprint)` scoped to the template;
//! * values hash: `keccak256(abi.encode(parameters...))` with the parameters listed per
//!   condition in [`CONDITIONS`];
//! * the consumer signs EIP-712 `ServiceAgreement(templateId, conditionKeys, valuesHashList,
//!   timeouts, serviceAgreementId)`, conditions in the DDO's order.

use std::collections::{BTreeMap, BTreeSet};

use alloy_primitives::{Address, B256, FixedBytes, U256, keccak256};
use alloy_sol_types::SolValue;
use serde::{Deserialize, Serialize};

use super::ddo::{ComputeService, ConditionSpec, Did, Parameter};
use super::eip712::ServiceAgreement;
use super::events::EventName;
use super::handlers::{EVENT_HANDLERS, handler_spec};

use tidepool_chain::template::{
    CONDITIONS as ON_CHAIN, GRANT_COMPUTE, LOCK_PAYMENT, REFUND_PAYMENT, RELEASE_PAYMENT, UPLOAD_ALGORITHM,
};
/// The template's name and id, its controllers and the Solidity signatures of the functions
/// that fulfil its conditions are the contracts' (`tidepool_chain::template`): one template,
/// whichever keeper runs it.
pub use tidepool_chain::template::{Controller, TEMPLATE_NAME, template_id};

/// The controllers' addresses on a keeper.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Controllers(pub BTreeMap<Controller, Address>);

impl Controllers {
    /// The address of controller `c` (the zero address when this keeper has none).
    pub fn address(&self, c: Controller) -> Address {
        self.0.get(&c).copied().unwrap_or_default()
    }
}

super::named::named_enum! {
    /// The conditions of the template, by name.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub enum ConditionName("a condition of the compute template") {
        /// The consumer locks the price of all the fuel in escrow.
        LockPayment = "lockPayment",
        /// The provider accepts the consumer's algorithm (signed by the consumer).
        UploadAlgorithm = "uploadAlgorithm",
        /// The provider grants compute, once the payment is locked and the algorithm uploaded.
        GrantCompute = "grantCompute",
        /// The provider is paid for the fuel used and the rest goes back; the receipt's hash is committed.
        ReleasePayment = "releasePayment",
        /// The consumer takes the escrow back after a missed deadline.
        RefundPayment = "refundPayment",
    }
}

impl ConditionName {
    /// The condition's definition in the template.
    pub fn def(self) -> &'static ConditionDef {
        // CONDITIONS lists every name once, in `ALL`'s order (a test checks it).
        &CONDITIONS[self as usize]
    }
}

/// One condition of the template.
#[derive(Debug)]
pub struct ConditionDef {
    /// The condition.
    pub name: ConditionName,
    /// The controller that fulfils it.
    pub controller: Controller,
    /// The controller function that fulfills it; its selector goes into the key.
    pub function: &'static str,
    /// The conditions that must be fulfilled first.
    pub dependencies: &'static [ConditionName],
    /// The event emitted when it is fulfilled.
    pub event: EventName,
    /// The parameters hashed into its values hash, as `(name, solidity type)`.
    pub parameters: &'static [(&'static str, &'static str)],
}

/// The template's conditions, in the order of the DDO and of the signature.
pub const CONDITIONS: &[ConditionDef] = &[
    ConditionDef {
        name: ConditionName::LockPayment,
        controller: Controller::LockPaymentCondition,
        function: ON_CHAIN[LOCK_PAYMENT].signature,
        dependencies: &[],
        event: EventName::PaymentLocked,
        parameters: &[("provider", "address"), ("amount", "uint256")],
    },
    ConditionDef {
        name: ConditionName::UploadAlgorithm,
        controller: Controller::ComputeUploadCondition,
        function: ON_CHAIN[UPLOAD_ALGORITHM].signature,
        dependencies: &[],
        event: EventName::FulfillUpload,
        parameters: &[("did", "bytes32"), ("consumer", "address")],
    },
    ConditionDef {
        name: ConditionName::GrantCompute,
        controller: Controller::ComputeGrantCondition,
        function: ON_CHAIN[GRANT_COMPUTE].signature,
        dependencies: &[ConditionName::LockPayment, ConditionName::UploadAlgorithm],
        event: EventName::ComputeGranted,
        parameters: &[("consumer", "address"), ("did", "bytes32")],
    },
    ConditionDef {
        name: ConditionName::ReleasePayment,
        controller: Controller::EscrowReward,
        function: ON_CHAIN[RELEASE_PAYMENT].signature,
        dependencies: &[ConditionName::GrantCompute],
        event: EventName::PaymentReleased,
        parameters: &[("provider", "address"), ("pricePerFuel", "uint256"), ("amount", "uint256")],
    },
    ConditionDef {
        name: ConditionName::RefundPayment,
        controller: Controller::EscrowReward,
        function: ON_CHAIN[REFUND_PAYMENT].signature,
        dependencies: &[ConditionName::LockPayment],
        event: EventName::PaymentRefund,
        parameters: &[("consumer", "address"), ("amount", "uint256")],
    },
];

/// Default condition timeouts, in seconds after the agreement is created (0: none).
pub fn default_timeout(condition: ConditionName) -> u64 {
    match condition {
        ConditionName::LockPayment | ConditionName::UploadAlgorithm | ConditionName::GrantCompute => 3600,
        ConditionName::ReleasePayment => 24 * 3600,
        ConditionName::RefundPayment => 0,
    }
}

/// The values a consumer agrees to: what the conditions' parameters are set to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Terms {
    /// The dataset asset.
    pub did: Did,
    /// The provider (paid on release).
    pub provider: Address,
    /// The consumer (who locks and may be refunded).
    pub consumer: Address,
    /// Token base units per unit of fuel.
    pub price_per_fuel: U256,
    /// Fuel the job may burn at most.
    pub max_fuel: u64,
}

impl Terms {
    /// The terms `consumer` agrees to on a Computing service of `did`.
    pub fn of(did: Did, service: &ComputeService, consumer: Address) -> Self {
        Terms {
            did,
            provider: service.provider.address,
            consumer,
            price_per_fuel: service.price_per_fuel,
            max_fuel: service.provider.environment.max_fuel,
        }
    }

    /// What the consumer locks: the price of all the fuel the job may use.
    pub fn max_amount(&self) -> U256 {
        self.price_per_fuel.saturating_mul(U256::from(self.max_fuel))
    }

    fn value(&self, parameter: &str) -> Option<String> {
        Some(match parameter {
            "provider" => self.provider.to_string(),
            "consumer" => self.consumer.to_string(),
            "did" => self.did.0.to_string(),
            "amount" => self.max_amount().to_string(),
            "pricePerFuel" => self.price_per_fuel.to_string(),
            _ => return None,
        })
    }

    /// `keccak256(abi.encode(parameters...))` of a condition.
    pub fn values_hash(&self, condition: ConditionName) -> B256 {
        let encoded = match condition {
            ConditionName::LockPayment => (self.provider, self.max_amount()).abi_encode(),
            ConditionName::UploadAlgorithm => (self.did.0, self.consumer).abi_encode(),
            ConditionName::GrantCompute => (self.consumer, self.did.0).abi_encode(),
            ConditionName::ReleasePayment => (self.provider, self.price_per_fuel, self.max_amount()).abi_encode(),
            ConditionName::RefundPayment => (self.consumer, self.max_amount()).abi_encode(),
        };
        keccak256(encoded)
    }
}

/// The 4-byte selector of a function signature.
pub fn selector(function: &str) -> FixedBytes<4> {
    FixedBytes::from_slice(&keccak256(function)[..4])
}

/// `keccak256(abi.encodePacked(templateId, controller, selector))`.
pub fn condition_key(template_id: B256, controller: Address, selector: FixedBytes<4>) -> B256 {
    let mut packed = template_id.to_vec();
    packed.extend_from_slice(controller.as_slice());
    packed.extend_from_slice(selector.as_slice());
    keccak256(packed)
}

/// The conditions of a DDO's Computing service. `terms` gives the parameter values known when
/// publishing (the consumer's are left out); `timeouts` overrides the defaults by name.
pub fn condition_specs(
    controllers: &Controllers,
    terms: &Terms,
    timeouts: &BTreeMap<ConditionName, u64>,
) -> Vec<ConditionSpec> {
    let id = template_id();
    CONDITIONS
        .iter()
        .map(|c| {
            let address = controllers.address(c.controller);
            ConditionSpec {
                name: c.name,
                key: condition_key(id, address, selector(c.function)),
                contract_address: address,
                function_fingerprint: selector(c.function),
                timeout: timeouts.get(&c.name).copied().unwrap_or_else(|| default_timeout(c.name)),
                dependencies: c.dependencies.to_vec(),
                parameters: c
                    .parameters
                    .iter()
                    .map(|(name, kind)| Parameter {
                        name: name.to_string(),
                        kind: kind.to_string(),
                        value: if *name == "consumer" { None } else { terms.value(name) },
                    })
                    .collect(),
                events: EVENT_HANDLERS
                    .iter()
                    .filter(|(e, ..)| *e == c.event)
                    .map(|(e, a, h)| handler_spec(*e, *a, *h))
                    .collect(),
            }
        })
        .collect()
}

/// Why a service's conditions do not form a valid instance of the template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// The service names another template.
    #[error("the service uses template {found}, this provider knows only {expected}")]
    UnknownTemplate {
        /// The service's template id.
        found: B256,
        /// This provider's.
        expected: B256,
    },
    /// A condition is listed twice.
    #[error("condition `{0}` appears more than once")]
    Duplicate(ConditionName),
    /// A condition depends on one the service does not list.
    #[error("condition `{condition}` depends on `{missing}`, which is not a condition of the agreement")]
    MissingDependency {
        /// The condition.
        condition: ConditionName,
        /// The dependency it lacks.
        missing: ConditionName,
    },
    /// The dependencies form a cycle.
    #[error("the conditions' dependencies form a cycle through `{0}`")]
    Cycle(ConditionName),
    /// The conditions differ from the template's (number, names, keys, dependencies or values).
    #[error("the conditions do not match the template: {0}")]
    Mismatch(String),
}

/// Checks the dependency graph: names unique, every dependency present, no cycles.
pub fn validate_dependencies(conditions: &[ConditionSpec]) -> Result<(), TemplateError> {
    let mut names = BTreeSet::new();
    for c in conditions {
        if !names.insert(c.name) {
            return Err(TemplateError::Duplicate(c.name));
        }
    }
    for c in conditions {
        if let Some(missing) = c.dependencies.iter().find(|d| !names.contains(*d)) {
            return Err(TemplateError::MissingDependency { condition: c.name, missing: *missing });
        }
    }
    // Depth-first search with colours: 1 on the stack, 2 done.
    let deps: BTreeMap<ConditionName, &Vec<ConditionName>> =
        conditions.iter().map(|c| (c.name, &c.dependencies)).collect();
    let mut colour: BTreeMap<ConditionName, u8> = BTreeMap::new();
    fn visit(
        n: ConditionName,
        deps: &BTreeMap<ConditionName, &Vec<ConditionName>>,
        colour: &mut BTreeMap<ConditionName, u8>,
    ) -> Result<(), TemplateError> {
        match colour.get(&n) {
            Some(1) => return Err(TemplateError::Cycle(n)),
            Some(2) => return Ok(()),
            _ => {}
        }
        colour.insert(n, 1);
        for d in deps.get(&n).into_iter().flat_map(|v| v.iter()) {
            visit(*d, deps, colour)?;
        }
        colour.insert(n, 2);
        Ok(())
    }
    for c in conditions {
        visit(c.name, &deps, &mut colour)?;
    }
    Ok(())
}

/// Checks that a service's conditions are exactly this template's on these controllers: the
/// same names in order, keys, dependencies, and (for known parameters) values.
pub fn check_conditions(
    template: B256,
    conditions: &[ConditionSpec],
    controllers: &Controllers,
    terms: &Terms,
) -> Result<(), TemplateError> {
    if template != template_id() {
        return Err(TemplateError::UnknownTemplate { found: template, expected: template_id() });
    }
    validate_dependencies(conditions)?;
    let expected = condition_specs(controllers, terms, &BTreeMap::new());
    if conditions.len() != expected.len() {
        return Err(TemplateError::Mismatch(format!("{} conditions, expected {}", conditions.len(), expected.len())));
    }
    for (got, want) in conditions.iter().zip(&expected) {
        let same = got.name == want.name
            && got.key == want.key
            && got.dependencies == want.dependencies
            && got
                .parameters
                .iter()
                .map(|p| (&p.name, &p.value))
                .eq(want.parameters.iter().map(|p| (&p.name, &p.value)));
        if !same {
            return Err(TemplateError::Mismatch(format!(
                "condition `{}` differs from the template's `{}`",
                got.name, want.name
            )));
        }
    }
    Ok(())
}

/// The struct a consumer signs for an agreement on `conditions` with `terms`.
pub fn agreement_struct(agreement_id: B256, conditions: &[ConditionSpec], terms: &Terms) -> ServiceAgreement {
    ServiceAgreement {
        templateId: template_id(),
        conditionKeys: conditions.iter().map(|c| c.key).collect(),
        valuesHashList: conditions.iter().map(|c| terms.values_hash(c.name)).collect(),
        timeouts: conditions.iter().map(|c| U256::from(c.timeout)).collect(),
        serviceAgreementId: agreement_id,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::protocol::handlers::{Actor, Handler};

    pub(crate) fn controllers() -> Controllers {
        Controllers(Controller::ALL.iter().enumerate().map(|(i, c)| (*c, Address::repeat_byte(i as u8 + 1))).collect())
    }

    pub(crate) fn terms() -> Terms {
        Terms {
            did: Did(B256::repeat_byte(7)),
            provider: Address::repeat_byte(0xaa),
            consumer: Address::repeat_byte(0xcc),
            price_per_fuel: U256::from(3),
            max_fuel: 1_000,
        }
    }

    #[test]
    fn keys_follow_the_sla_formula() {
        let specs = condition_specs(&controllers(), &terms(), &BTreeMap::new());
        let lock = &specs[0];
        // keccak256(templateId ++ address ++ selector), by hand.
        let mut packed = keccak256("TidepoolComputeTemplate.v2").to_vec();
        packed.extend_from_slice(&[1u8; 20]);
        packed.extend_from_slice(&keccak256("lockPayment(bytes32,address,uint256)")[..4]);
        assert_eq!(lock.key, keccak256(packed));
        assert_eq!(lock.function_fingerprint.as_slice(), &keccak256("lockPayment(bytes32,address,uint256)")[..4]);
        let keys: BTreeSet<B256> = specs.iter().map(|c| c.key).collect();
        assert_eq!(keys.len(), specs.len(), "every condition has its own key");
    }

    #[test]
    fn values_hashes_bind_the_terms() {
        let t = terms();
        assert_eq!(t.max_amount(), U256::from(3_000));
        let mut encoded = [0u8; 64];
        encoded[12..32].copy_from_slice(&[0xaa; 20]);
        encoded[62..64].copy_from_slice(&3_000u16.to_be_bytes());
        assert_eq!(t.values_hash(ConditionName::LockPayment), keccak256(encoded), "abi.encode(address, uint256)");
        let other = Terms { consumer: Address::repeat_byte(0xdd), ..terms() };
        assert_ne!(t.values_hash(ConditionName::GrantCompute), other.values_hash(ConditionName::GrantCompute));
        assert_eq!(
            t.values_hash(ConditionName::LockPayment),
            other.values_hash(ConditionName::LockPayment),
            "the lock does not name the consumer"
        );
    }

    #[test]
    fn dependency_graphs_are_validated() {
        let specs = condition_specs(&controllers(), &terms(), &BTreeMap::new());
        validate_dependencies(&specs).unwrap();
        let mut cyclic = specs.clone();
        cyclic[0].dependencies = vec![ConditionName::ReleasePayment];
        assert!(matches!(validate_dependencies(&cyclic), Err(TemplateError::Cycle(_))));
        let mut dangling = specs.clone();
        // A dependency on a condition the agreement does not have.
        dangling.retain(|c| c.name != ConditionName::RefundPayment);
        dangling[2].dependencies.push(ConditionName::RefundPayment);
        assert!(matches!(validate_dependencies(&dangling), Err(TemplateError::MissingDependency { .. })));
        let mut twice = specs.clone();
        twice[1].name = ConditionName::LockPayment;
        assert!(matches!(validate_dependencies(&twice), Err(TemplateError::Duplicate(_))));
    }

    #[test]
    fn a_tampered_ddo_does_not_match_the_template() {
        let (c, t) = (controllers(), terms());
        let specs = condition_specs(&c, &t, &BTreeMap::new());
        check_conditions(template_id(), &specs, &c, &t).unwrap();
        let mut cheaper = specs.clone();
        cheaper[0].parameters[1].value = Some("1".into());
        assert!(check_conditions(template_id(), &cheaper, &c, &t).is_err());
        let mut reordered = specs.clone();
        reordered.swap(0, 1);
        assert!(check_conditions(template_id(), &reordered, &c, &t).is_err());
        assert!(matches!(check_conditions(B256::ZERO, &specs, &c, &t), Err(TemplateError::UnknownTemplate { .. })));
    }

    #[test]
    fn every_event_has_handlers_and_conditions_list_theirs() {
        let specs = condition_specs(&controllers(), &terms(), &BTreeMap::new());
        let grant = specs.iter().find(|c| c.name == ConditionName::GrantCompute).unwrap();
        assert_eq!(grant.events[0].name, EventName::ComputeGranted);
        assert_eq!(Handler::of(&grant.events[0].handler), Some(Handler::Execute));
        assert_eq!(grant.events[0].handler.key(), "compute.execute");
        let lock = specs.iter().find(|c| c.name == ConditionName::LockPayment).unwrap();
        assert_eq!(lock.events[0].actor_type, Actor::Publisher);
        assert_eq!(serde_json::to_value(&lock.events[0]).unwrap()["actorType"], "publisher");
    }

    #[test]
    fn the_template_is_the_contracts_template() {
        let on_chain = tidepool_chain::template::CONDITIONS;
        assert_eq!(CONDITIONS.len(), on_chain.len());
        for (ours, theirs) in CONDITIONS.iter().zip(&on_chain) {
            assert_eq!(ours.name.as_str(), theirs.name);
            assert_eq!(ours.controller, theirs.controller, "{}", theirs.name);
            assert_eq!(selector(ours.function), theirs.selector(), "{}", theirs.name);
            let deps: Vec<&str> = theirs.dependencies.iter().map(|d| on_chain[*d].name).collect();
            assert_eq!(ours.dependencies.iter().map(|d| d.as_str()).collect::<Vec<_>>(), deps, "{}", theirs.name);
        }
        let t = terms();
        let chain_terms = tidepool_chain::template::ComputeTerms {
            did: t.did.0,
            provider: t.provider,
            consumer: t.consumer,
            price_per_fuel: t.price_per_fuel,
            max_fuel: t.max_fuel,
        };
        let ours: Vec<B256> = ConditionName::ALL.iter().map(|c| t.values_hash(*c)).collect();
        assert_eq!(ours, chain_terms.values_hashes().unwrap().to_vec(), "the same values hashes");
    }

    #[test]
    fn condition_names_index_the_template() {
        for &name in ConditionName::ALL {
            assert_eq!(name.def().name, name, "CONDITIONS follows ConditionName::ALL");
            assert_eq!(name.as_str().parse::<ConditionName>(), Ok(name));
            assert_eq!(serde_json::to_value(name).unwrap(), name.as_str());
        }
        assert_eq!(CONDITIONS.len(), ConditionName::ALL.len());
    }
}
