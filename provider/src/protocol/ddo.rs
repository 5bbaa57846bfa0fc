//! DIDs and DDOs: how assets are named and described (OEP-7/OEP-8 shapes, OEP-12's Computing
//! service). One definition of every field, shared by the daemon, the client and the CLI.
//!
//! A DID is `did:op:` followed by 64 hex digits (32 bytes).

use std::fmt;
use std::str::FromStr;

use alloy_primitives::{Address, B256, FixedBytes, U256};
use serde::{Deserialize, Serialize};

use super::events::EventName;
use super::handlers::Actor;
use super::template::ConditionName;

/// An asset's decentralized identifier, `did:op:<64 hex>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Did(pub B256);

impl fmt::Display for Did {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "did:op:{}", hex::encode(self.0))
    }
}

/// A string that is not a `did:op:` DID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a DID (expected did:op: and 64 hex digits)")]
pub struct BadDid(pub String);

impl FromStr for Did {
    type Err = BadDid;

    fn from_str(s: &str) -> Result<Self, BadDid> {
        let hex = s.strip_prefix("did:op:").ok_or_else(|| BadDid(s.to_string()))?;
        if hex.len() != 64 {
            return Err(BadDid(s.to_string()));
        }
        hex.parse().map(Did).map_err(|_| BadDid(s.to_string()))
    }
}

impl Serialize for Did {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Did {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

super::named::named_enum! {
    /// What an asset is.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub enum AssetKind("an asset kind") {
        /// Datasets, offered for computation.
        Dataset = "dataset",
        /// An algorithm (a wasm module) others may run.
        Algorithm = "algorithm",
        /// The outputs of a job, owned by the consumer who ran it.
        Output = "output",
    }
}

/// A Decentralized Document: an asset's identity, metadata and services.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Ddo {
    /// The JSON-LD context (`https://w3id.org/did/v1`).
    #[serde(rename = "@context")]
    pub context: String,
    /// The asset's DID.
    pub id: Did,
    /// Unix seconds.
    pub created: u64,
    /// Its owner's key (one entry; see [`Ddo::owner`]).
    pub public_key: Vec<PublicKey>,
    /// What the asset is and holds.
    pub metadata: Metadata,
    /// What it offers: a Computing service (datasets) or downloads (outputs).
    pub service: Vec<Service>,
}

/// The key of the asset's owner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PublicKey {
    /// `<did>#owner`.
    pub id: String,
    /// The key's type (`EthereumECDSAKey`).
    #[serde(rename = "type")]
    pub kind: String,
    /// The owner's address.
    pub owner: Address,
}

/// Human metadata and what the asset holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    /// The asset's name.
    pub name: String,
    /// A description for people.
    #[serde(default)]
    pub description: String,
    /// Who made it.
    #[serde(default)]
    pub author: String,
    /// Its license (free text).
    #[serde(default)]
    pub license: String,
    /// What the asset is.
    #[serde(rename = "type")]
    pub kind: AssetKind,
    /// The asset's datasets (for an algorithm: its one module file, dataset `algorithm`).
    pub datasets: Vec<DatasetInfo>,
    /// For an algorithm: the hash receipts record, the BLAKE3 of its module or, for an
    /// algorithm in an environment, its files' tree root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm_hash: Option<B256>,
    /// For an algorithm that is not a module: the environment it needs (`python-3.12`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// For outputs: the agreement and receipt they came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derived_from: Option<Derivation>,
}

/// One named dataset of an asset, mounted at `/data/inputs/<name>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DatasetInfo {
    /// The dataset's name (a plain name).
    pub name: String,
    /// How many files it holds.
    pub files: u64,
    /// Their total size in bytes.
    pub bytes: u64,
    /// The dataset's tree root (`tidepool-tree-v1`), as receipts record it.
    pub root: B256,
}

/// Where an output asset came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Derivation {
    /// The agreement whose job produced the outputs.
    pub service_agreement_id: B256,
    /// The job's receipt hash (as committed on the keeper).
    pub receipt_hash: B256,
    /// The dataset asset the job ran on.
    pub dataset: Did,
}

/// A service of an asset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Service {
    /// OEP-12 compute-to-data.
    Computing(Box<ComputeService>),
    /// Downloads, for the owner only (output assets).
    Access(AccessService),
}

/// A download service, open to one address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessService {
    /// The service's id within the DDO.
    pub service_definition_id: String,
    /// Where the files are downloaded (the job's results URL).
    pub service_endpoint: String,
    /// The only address allowed to download.
    pub consumer: Address,
}

/// The Computing service (OEP-12), with Tidepool's environment instead of a container flavour.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ComputeService {
    /// The service's id within the DDO (what an agreement names).
    pub service_definition_id: String,
    /// The agreement template it is sold under (see [`super::template`]).
    pub template_id: B256,
    /// The URL agreements are proposed at (`.../initialize`).
    pub initialize_endpoint: String,
    /// The URL algorithms are uploaded at (`.../upload`).
    pub upload_endpoint: String,
    /// The URL jobs are asked for at (`.../exec`).
    pub service_endpoint: String,
    /// Who computes, and in what environment.
    pub provider: ProviderInfo,
    /// Token base units per unit of fuel.
    pub price_per_fuel: U256,
    /// Which algorithms may run on the data.
    pub trusted_algorithms: AlgorithmPolicy,
    /// The agreement contract and who reacts to which of its events.
    pub service_agreement_contract: AgreementContract,
    /// The template's conditions, with this asset's timeouts and known parameter values.
    pub conditions: Vec<ConditionSpec>,
}

/// Who computes, and in what environment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProviderInfo {
    /// The provider's kind (`tidepool`).
    #[serde(rename = "type")]
    pub kind: String,
    /// The provider's address: it signs receipts and receives payments.
    pub address: Address,
    /// The chain id of the EIP-712 domains agreements are signed under.
    pub chain_id: u64,
    /// `embedded` or `evm`.
    pub keeper: String,
    /// The sandbox jobs run in.
    pub environment: Environment,
}

/// The sandbox a job runs in: the limits every job on this service runs under.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Environment {
    /// The engine (`wasmtime`).
    pub runtime: String,
    /// Its version.
    pub runtime_version: String,
    /// The provider's Tidepool version.
    pub tidepool_version: String,
    /// Fuel a job may burn at most.
    pub max_fuel: u64,
    /// A job's linear memory at most, in bytes.
    pub memory_bytes: u64,
    /// A job's wall-clock time at most, in milliseconds.
    pub timeout_ms: u64,
    /// The outputs' total size at most, in bytes.
    pub output_bytes: u64,
    /// How many output files (and directories) at most.
    pub output_files: u64,
    /// The environments algorithms may name besides modules (Python...), pinned by their
    /// module's hash (what receipts record). Absent: modules only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub offers: Vec<OfferedEnvironment>,
}

/// An environment a provider offers: an algorithm uploaded for it is files, not a module.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OfferedEnvironment {
    /// The name uploads give (`environment=python-3.12`).
    pub name: String,
    /// BLAKE3 of the environment's module.
    pub module_hash: B256,
    /// What it is, for people (e.g. `CPython 3.12.0 for wasm32-wasip1, standard library only`).
    pub description: String,
}

impl From<tidepool_runtime::EnvironmentDescription> for OfferedEnvironment {
    fn from(d: tidepool_runtime::EnvironmentDescription) -> Self {
        Self { name: d.name, module_hash: d.module_hash, description: d.description }
    }
}

/// Which algorithms may run on the data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "policy", rename_all = "camelCase", deny_unknown_fields)]
pub enum AlgorithmPolicy {
    /// Any module that passes admission.
    Any,
    /// Only modules with one of these BLAKE3 hashes.
    Hashes {
        /// The allowed modules' BLAKE3 hashes.
        hashes: Vec<B256>,
    },
    /// Only algorithms published (as assets) by one of these addresses.
    Publishers {
        /// The allowed publishers.
        publishers: Vec<Address>,
    },
}

/// The agreement contract and its event-action mapping.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgreementContract {
    /// The contract's name (`TidepoolComputeAgreement`).
    pub contract_name: String,
    /// OEP-12's `fulfillmentOperator` (Tidepool writes 1 and reads it nowhere).
    pub fulfillment_operator: u32,
    /// The agreement's events and their handlers.
    pub events: Vec<EventHandlerSpec>,
}

/// An event, who reacts to it, and with which handler.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventHandlerSpec {
    /// The event.
    pub name: EventName,
    /// `consumer` or `publisher`.
    pub actor_type: Actor,
    /// The handler it runs.
    pub handler: HandlerRef,
}

/// A handler, by module and function name (OEP-12).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HandlerRef {
    /// The handler's module (OEP-12's `moduleName`).
    pub module_name: String,
    /// Its function.
    pub function_name: String,
    /// Its version (`0.1`).
    pub version: String,
}

impl HandlerRef {
    /// `module.function`, the key handlers are registered under.
    pub fn key(&self) -> String {
        format!("{}.{}", self.module_name, self.function_name)
    }
}

/// One condition of the agreement (SLA text: a controller's function, its parameters'
/// hash, a timeout, its dependencies, and the events it emits).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConditionSpec {
    /// The condition.
    pub name: ConditionName,
    /// keccak256(templateId, controller address, function selector).
    pub key: B256,
    /// The controller that fulfils it.
    pub contract_address: Address,
    /// The selector of the controller's fulfilling function.
    pub function_fingerprint: FixedBytes<4>,
    /// Seconds after the agreement's creation by which it must be fulfilled.
    pub timeout: u64,
    /// The conditions that must be fulfilled first.
    pub dependencies: Vec<ConditionName>,
    /// The parameters whose values are hashed into the agreement; `value` is absent for the
    /// ones only known when a consumer signs (its address).
    pub parameters: Vec<Parameter>,
    /// The events fulfilling it emits, and who reacts.
    pub events: Vec<EventHandlerSpec>,
}

/// A condition parameter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Parameter {
    /// The parameter's name (as in the controller's function).
    pub name: String,
    /// Its Solidity type (`bytes32`, `address`, `uint256`).
    #[serde(rename = "type")]
    pub kind: String,
    /// Its value, when known at publishing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

impl Ddo {
    /// The asset's Computing service with the given definition id.
    pub fn compute_service(&self, service_definition_id: &str) -> Option<&ComputeService> {
        self.service.iter().find_map(|s| match s {
            Service::Computing(c) if c.service_definition_id == service_definition_id => Some(&**c),
            _ => None,
        })
    }

    /// The asset's owner.
    pub fn owner(&self) -> Option<Address> {
        self.public_key.first().map(|k| k.owner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dids_parse_and_print() {
        let did: Did = format!("did:op:{}", "ab".repeat(32)).parse().unwrap();
        assert_eq!(did.0, B256::repeat_byte(0xab));
        assert_eq!(did.to_string(), format!("did:op:{}", "ab".repeat(32)));
        for bad in ["did:op:abc", "did:xx:00", &format!("did:op:{}", "zz".repeat(32)), ""] {
            assert!(bad.parse::<Did>().is_err(), "{bad}");
        }
        let json = serde_json::to_string(&did).unwrap();
        assert_eq!(serde_json::from_str::<Did>(&json).unwrap(), did);
    }

    #[test]
    fn asset_kinds_are_named_as_serde_names_them() {
        for &kind in AssetKind::ALL {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
    }

    #[test]
    fn policies_have_a_tagged_shape() {
        let p = AlgorithmPolicy::Hashes { hashes: vec![B256::ZERO] };
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["policy"], "hashes");
        assert_eq!(serde_json::to_value(AlgorithmPolicy::Any).unwrap(), serde_json::json!({"policy": "any"}));
    }
}
