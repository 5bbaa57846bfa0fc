//! Deploying the contracts and registering the compute template, and the file that records
//! where they are.

use std::path::Path;

use alloy::primitives::{Address, B256};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{SolCall, SolValue};
use serde::{Deserialize, Serialize};

use crate::bindings::{AgreementStore, bytecode};
use crate::client::{Chain, ChainConfig, TxOutcome};
use crate::error::{ChainError, Result};
use crate::template::{self, Controller};

/// Where the contracts are on a chain: what `tidepool chain deploy` writes and every other
/// command reads (JSON, camelCase).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Contracts {
    /// The chain's id (checked against the node's when connecting).
    pub chain_id: u64,
    /// The block the store was deployed in: event readers start there.
    pub deployed_at_block: u64,
    /// `AgreementStore`: templates, agreements, their conditions.
    pub agreement_store: Address,
    /// `DIDRegistry`: assets' owners, checksums and DDO URLs.
    pub did_registry: Address,
    /// The ERC-20 payments are made in.
    pub token: Address,
    /// `LockPaymentCondition`: controls `lockPayment`.
    pub lock_payment_condition: Address,
    /// `ComputeUploadCondition`: controls `uploadAlgorithm`.
    pub compute_upload_condition: Address,
    /// `ComputeGrantCondition`: controls `grantCompute`.
    pub compute_grant_condition: Address,
    /// `EscrowReward`: holds the escrow; controls `releasePayment` and `refundPayment`.
    pub escrow_reward: Address,
    /// The compute template registered in the store.
    pub template_id: B256,
}

impl Contracts {
    /// The address of a condition's control contract.
    pub fn controller(&self, c: Controller) -> Address {
        match c {
            Controller::LockPaymentCondition => self.lock_payment_condition,
            Controller::ComputeUploadCondition => self.compute_upload_condition,
            Controller::ComputeGrantCondition => self.compute_grant_condition,
            Controller::EscrowReward => self.escrow_reward,
        }
    }

    /// Every contract, named, for checks and log filters.
    pub fn all(&self) -> [(&'static str, Address); 7] {
        [
            ("AgreementStore", self.agreement_store),
            ("DIDRegistry", self.did_registry),
            ("token", self.token),
            ("LockPaymentCondition", self.lock_payment_condition),
            ("ComputeUploadCondition", self.compute_upload_condition),
            ("ComputeGrantCondition", self.compute_grant_condition),
            ("EscrowReward", self.escrow_reward),
        ]
    }

    /// Reads a contracts file (`ChainError::ContractsFile` when it cannot be read or parsed).
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ChainError::ContractsFile { path: path.to_path_buf(), source })?;
        serde_json::from_str(&text).map_err(|e| ChainError::ContractsFile {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })
    }

    /// Writes the contracts file (pretty JSON), replacing any at `path`.
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut text = serde_json::to_string_pretty(self).map_err(|e| ChainError::Invalid(e.to_string()))?;
        text.push('\n');
        std::fs::write(path, text).map_err(|source| ChainError::ContractsFile { path: path.to_path_buf(), source })
    }
}

/// The gas each deployment step used.
#[derive(Clone, Debug, Default)]
pub struct DeployReport {
    /// Each step's name (the contract deployed, or `registerTemplate`) and gas used, in order.
    pub steps: Vec<(&'static str, u64)>,
}

/// Deploys the contracts with a test token from `deployer`'s account, and registers the
/// compute template. The deployer owns the store (it alone registers templates) and mints the
/// test token.
pub async fn deploy(rpc: &str, deployer: PrivateKeySigner, config: ChainConfig) -> Result<(Contracts, DeployReport)> {
    let sender = Chain::sender_for(rpc, deployer, config).await?;
    let mut report = DeployReport::default();
    let mut create = async |name: &'static str, bytecode: &str, args: Vec<u8>| -> Result<(Address, TxOutcome)> {
        let code = alloy::hex::decode(bytecode.trim())
            .map_err(|e| ChainError::Invalid(format!("the bytecode of {name} is not hex: {e}")))?;
        let out = sender.create([code, args].concat().into()).await?;
        let address = out.contract_address.ok_or(ChainError::NoCode { name, address: Address::ZERO })?;
        report.steps.push((name, out.gas_used));
        Ok((address, out))
    };
    let (store, store_tx) = create("AgreementStore", bytecode::AGREEMENT_STORE, vec![]).await?;
    let (registry, _) = create("DIDRegistry", bytecode::DID_REGISTRY, (store,).abi_encode_params()).await?;
    let (token, _) = create("TidepoolTestToken", bytecode::TEST_TOKEN, vec![]).await?;
    let (upload, _) =
        create("ComputeUploadCondition", bytecode::COMPUTE_UPLOAD_CONDITION, (store,).abi_encode_params()).await?;
    let (grant, _) =
        create("ComputeGrantCondition", bytecode::COMPUTE_GRANT_CONDITION, (store,).abi_encode_params()).await?;
    let (escrow, _) =
        create("EscrowReward", bytecode::ESCROW_REWARD, (store, token, registry, upload, grant).abi_encode_params())
            .await?;
    let (lock, _) =
        create("LockPaymentCondition", bytecode::LOCK_PAYMENT_CONDITION, (store, escrow).abi_encode_params()).await?;
    let contracts = Contracts {
        chain_id: sender.chain_id(),
        deployed_at_block: store_tx.block_number,
        agreement_store: store,
        did_registry: registry,
        token,
        lock_payment_condition: lock,
        compute_upload_condition: upload,
        compute_grant_condition: grant,
        escrow_reward: escrow,
        template_id: template::template_id(),
    };
    let call = AgreementStore::registerTemplateCall {
        templateId: contracts.template_id,
        conditions: template::registration(&contracts),
    };
    let out = sender.call(store, call.abi_encode().into()).await?;
    report.steps.push(("registerTemplate", out.gas_used));
    Ok((contracts, report))
}
