//! The compute template as the contracts know it: its conditions in order, the control
//! contract and fulfilling function of each (whose selector goes into the condition key), their
//! dependencies, and how each condition's values hash is computed from the agreement's terms.
//!
//! ```text
//!   lockPayment ─────┐
//!                    ├──> grantCompute ──> releasePayment
//!   uploadAlgorithm ─┘
//!   lockPayment ──> refundPayment   (only once grantCompute or releasePayment missed its deadline)
//! ```
//!
//! * template id: `keccak256("TidepoolComputeTemplate.v2")`;
//! * condition key: `keccak256(abi.encodePacked(templateId, controller, selector))`;
//! * values hash: `keccak256(abi.encode(parameters...))`, parameters per [`ComputeTerms::values_hashes`];
//! * a dataset asset's checksum in the DID registry: [`dataset_checksum`].

use alloy::primitives::{Address, B256, FixedBytes, U256, keccak256};
use alloy::sol_types::{SolCall, SolStruct, SolValue};

use crate::bindings::{
    AgreementStore, ComputeGrantCondition, ComputeUploadCondition, EscrowReward, LockPaymentCondition, eip712,
};
use crate::deploy::Contracts;

/// The template's name; its id is the keccak-256 of this. `.v2`: the fulfilling functions of
/// `uploadAlgorithm` (the consumer's signature) and `releasePayment` (the receipt) changed.
pub const TEMPLATE_NAME: &str = "TidepoolComputeTemplate.v2";

/// `keccak256(TEMPLATE_NAME)`.
pub fn template_id() -> B256 {
    keccak256(TEMPLATE_NAME)
}

/// The contracts that control the conditions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Controller {
    /// Fulfills `lockPayment` (takes the consumer's tokens into escrow).
    LockPaymentCondition,
    /// Fulfills `uploadAlgorithm` (records the consumer's signed algorithm hash).
    ComputeUploadCondition,
    /// Fulfills `grantCompute` (the provider lets the consumer's job run).
    ComputeGrantCondition,
    /// Holds the escrow; fulfills `releasePayment` and `refundPayment`.
    EscrowReward,
}

impl Controller {
    /// Every controller.
    pub const ALL: [Controller; 4] = [
        Controller::LockPaymentCondition,
        Controller::ComputeUploadCondition,
        Controller::ComputeGrantCondition,
        Controller::EscrowReward,
    ];

    /// The contract's name.
    pub fn name(self) -> &'static str {
        match self {
            Controller::LockPaymentCondition => "LockPaymentCondition",
            Controller::ComputeUploadCondition => "ComputeUploadCondition",
            Controller::ComputeGrantCondition => "ComputeGrantCondition",
            Controller::EscrowReward => "EscrowReward",
        }
    }
}

/// One condition of the template.
#[derive(Debug)]
pub struct ConditionDef {
    /// Its name in the template and in DDOs (`lockPayment`...).
    pub name: &'static str,
    /// The contract that fulfills it.
    pub controller: Controller,
    /// The Solidity signature of the fulfilling function (`name(types)`); its selector is the
    /// DDO's `functionFingerprint`.
    pub signature: &'static str,
    /// The fulfilling function's selector (the first 4 bytes of keccak256 of `signature`).
    pub selector: [u8; 4],
    /// Indices of the conditions this one depends on.
    pub dependencies: &'static [usize],
    /// Fulfilling it closes the agreement.
    pub closes_agreement: bool,
}

impl ConditionDef {
    /// [`selector`](Self::selector) as alloy's type.
    pub fn selector(&self) -> FixedBytes<4> {
        FixedBytes(self.selector)
    }
}

/// Index of `lockPayment` in [`CONDITIONS`].
pub const LOCK_PAYMENT: usize = 0;
/// Index of `uploadAlgorithm` in [`CONDITIONS`].
pub const UPLOAD_ALGORITHM: usize = 1;
/// Index of `grantCompute` in [`CONDITIONS`].
pub const GRANT_COMPUTE: usize = 2;
/// Index of `releasePayment` in [`CONDITIONS`].
pub const RELEASE_PAYMENT: usize = 3;
/// Index of `refundPayment` in [`CONDITIONS`].
pub const REFUND_PAYMENT: usize = 4;

/// The template's conditions, in the order of the DDO, of the signature and on chain.
pub const CONDITIONS: [ConditionDef; 5] = [
    ConditionDef {
        name: "lockPayment",
        controller: Controller::LockPaymentCondition,
        signature: LockPaymentCondition::lockPaymentCall::SIGNATURE,
        selector: LockPaymentCondition::lockPaymentCall::SELECTOR,
        dependencies: &[],
        closes_agreement: false,
    },
    ConditionDef {
        name: "uploadAlgorithm",
        controller: Controller::ComputeUploadCondition,
        signature: ComputeUploadCondition::fulfillUploadCall::SIGNATURE,
        selector: ComputeUploadCondition::fulfillUploadCall::SELECTOR,
        dependencies: &[],
        closes_agreement: false,
    },
    ConditionDef {
        name: "grantCompute",
        controller: Controller::ComputeGrantCondition,
        signature: ComputeGrantCondition::grantComputeCall::SIGNATURE,
        selector: ComputeGrantCondition::grantComputeCall::SELECTOR,
        dependencies: &[LOCK_PAYMENT, UPLOAD_ALGORITHM],
        closes_agreement: false,
    },
    ConditionDef {
        name: "releasePayment",
        controller: Controller::EscrowReward,
        signature: EscrowReward::releasePaymentCall::SIGNATURE,
        selector: EscrowReward::releasePaymentCall::SELECTOR,
        dependencies: &[GRANT_COMPUTE],
        closes_agreement: true,
    },
    ConditionDef {
        name: "refundPayment",
        controller: Controller::EscrowReward,
        signature: EscrowReward::refundPaymentCall::SIGNATURE,
        selector: EscrowReward::refundPaymentCall::SELECTOR,
        dependencies: &[LOCK_PAYMENT],
        closes_agreement: true,
    },
];

/// `keccak256(abi.encodePacked(templateId, controller, selector))`.
pub fn condition_key(template_id: B256, controller: Address, selector: FixedBytes<4>) -> B256 {
    keccak256((template_id, controller, selector).abi_encode_packed())
}

/// The keys of the template's conditions on these contracts, in order.
pub fn condition_keys(contracts: &Contracts) -> Vec<B256> {
    let id = template_id();
    CONDITIONS.iter().map(|c| condition_key(id, contracts.controller(c.controller), c.selector())).collect()
}

/// The name of the condition with this key on these contracts (for messages).
pub fn condition_name(contracts: &Contracts, key: B256) -> Option<&'static str> {
    condition_keys(contracts).iter().position(|k| *k == key).map(|i| CONDITIONS[i].name)
}

/// The template as `AgreementStore.registerTemplate` takes it.
pub fn registration(contracts: &Contracts) -> Vec<AgreementStore::ConditionTemplate> {
    CONDITIONS
        .iter()
        .map(|c| AgreementStore::ConditionTemplate {
            controlContract: contracts.controller(c.controller),
            selector: c.selector(),
            // At most five conditions: the indices fit.
            dependencies: c.dependencies.iter().map(|d| *d as u8).collect(),
            closesAgreement: c.closes_agreement,
        })
        .collect()
}

/// The values an agreement's conditions are set to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComputeTerms {
    /// The dataset asset the job runs on.
    pub did: B256,
    /// Who runs the job and is paid.
    pub provider: Address,
    /// Who pays, uploads the algorithm and gets the results.
    pub consumer: Address,
    /// Token units paid per unit of fuel the job uses.
    pub price_per_fuel: U256,
    /// The most fuel the consumer pays for: it locks `price_per_fuel × max_fuel`.
    pub max_fuel: u64,
}

impl ComputeTerms {
    /// What the consumer locks: the price of all the fuel the job may use. `None` if it
    /// overflows (the contracts would refuse it).
    pub fn max_amount(&self) -> Option<U256> {
        self.price_per_fuel.checked_mul(U256::from(self.max_fuel))
    }

    /// Each condition's `keccak256(abi.encode(parameters...))`, in the template's order:
    /// `lockPayment (provider, amount)`, `uploadAlgorithm (did, consumer)`,
    /// `grantCompute (consumer, did)`, `releasePayment (provider, pricePerFuel, amount)`,
    /// `refundPayment (consumer, amount)`, with `amount = maxFuel × pricePerFuel`.
    pub fn values_hashes(&self) -> Option<[B256; 5]> {
        let amount = self.max_amount()?;
        Some([
            keccak256((self.provider, amount).abi_encode()),
            keccak256((self.did, self.consumer).abi_encode()),
            keccak256((self.consumer, self.did).abi_encode()),
            keccak256((self.provider, self.price_per_fuel, amount).abi_encode()),
            keccak256((self.consumer, amount).abi_encode()),
        ])
    }
}

/// The struct a consumer signs for an agreement on these contracts. `timeouts` are seconds
/// after creation, per condition in the template's order (0: none).
pub fn service_agreement(
    contracts: &Contracts,
    agreement_id: B256,
    terms: &ComputeTerms,
    timeouts: [u64; 5],
) -> Option<eip712::ServiceAgreement> {
    Some(eip712::ServiceAgreement {
        templateId: template_id(),
        conditionKeys: condition_keys(contracts),
        valuesHashList: terms.values_hashes()?.to_vec(),
        timeouts: timeouts.iter().map(|t| U256::from(*t)).collect(),
        serviceAgreementId: agreement_id,
    })
}

/// The checksum the DID registry holds for a dataset asset: keccak256 of the concatenated
/// EIP-712 `hashStruct(Input(name, root))` of its datasets, sorted by name (bytewise, as the
/// runtime orders a job's inputs). It equals the encoding of a receipt's `inputs` inside the
/// receipt hash, so the escrow compares the two directly.
pub fn dataset_checksum<'a>(datasets: impl IntoIterator<Item = (&'a str, B256)>) -> B256 {
    let mut datasets: Vec<(&str, B256)> = datasets.into_iter().collect();
    datasets.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let hashes: Vec<B256> = datasets
        .into_iter()
        .map(|(name, root)| EscrowReward::Input { name: name.to_string(), root }.eip712_hash_struct())
        .collect();
    keccak256(hashes.abi_encode_packed())
}

/// The checksum of a job's output asset: one dataset, `outputs`, at the receipt's outputs root
/// (what `EscrowReward.publishOutput` registers).
pub fn output_checksum(outputs_root: B256) -> B256 {
    dataset_checksum([("outputs", outputs_root)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_are_those_of_the_signatures() {
        for c in &CONDITIONS {
            assert_eq!(c.selector, keccak256(c.signature)[..4], "{}", c.name);
        }
        assert_eq!(CONDITIONS[LOCK_PAYMENT].signature, "lockPayment(bytes32,address,uint256)");
        assert_eq!(CONDITIONS[REFUND_PAYMENT].signature, "refundPayment(bytes32)");
    }

    #[test]
    fn keys_follow_the_sla_formula() {
        let controller = Address::repeat_byte(1);
        let selector = FixedBytes([1, 2, 3, 4]);
        let mut packed = keccak256("TidepoolComputeTemplate.v2").to_vec();
        packed.extend_from_slice(&[1u8; 20]);
        packed.extend_from_slice(&[1, 2, 3, 4]);
        assert_eq!(condition_key(template_id(), controller, selector), keccak256(packed));
    }

    #[test]
    fn values_hashes_bind_the_terms() {
        let terms = ComputeTerms {
            did: B256::repeat_byte(7),
            provider: Address::repeat_byte(0xaa),
            consumer: Address::repeat_byte(0xcc),
            price_per_fuel: U256::from(3),
            max_fuel: 1_000,
        };
        let mut encoded = [0u8; 64];
        encoded[12..32].copy_from_slice(&[0xaa; 20]);
        encoded[62..64].copy_from_slice(&3_000u16.to_be_bytes());
        let hashes = terms.values_hashes().unwrap();
        assert_eq!(hashes[LOCK_PAYMENT], keccak256(encoded), "abi.encode(address, uint256)");
        let overflowing = ComputeTerms { price_per_fuel: U256::MAX, ..terms };
        assert_eq!(overflowing.values_hashes(), None);
    }

    #[test]
    fn dataset_checksums_sort_by_name() {
        let (a, b) = (B256::repeat_byte(1), B256::repeat_byte(2));
        assert_eq!(dataset_checksum([("b", b), ("a", a)]), dataset_checksum([("a", a), ("b", b)]));
        assert_ne!(dataset_checksum([("a", b), ("b", a)]), dataset_checksum([("a", a), ("b", b)]));
        // One dataset, by hand: keccak256(hashStruct(Input)).
        let type_hash = keccak256("Input(string name,bytes32 root)");
        let input = keccak256([type_hash.as_slice(), keccak256("outputs").as_slice(), a.as_slice()].concat());
        assert_eq!(output_checksum(a), keccak256(input));
    }
}
