//! The provider's side of the Service Execution Agreement flow (OEP-12): initialize, upload the
//! algorithm, lock payment (the embedded keeper's facade), execute, refund. The HTTP handlers
//! authenticate the caller and call these; everything here is keeper-agnostic.

use std::sync::Arc;

use alloy_primitives::{Address, B256, Signature, U256};
use tidepool_runtime::Algorithm;
use tidepool_runtime::job::sanitize_name;
use tracing::instrument;

use crate::algorithms::{AdmissionError, Algorithms};
use crate::assets::{AssetError, Assets};
use crate::jobs::{JobError, Jobs};
use crate::keeper::{ConditionInit, Keeper, KeeperError, NewAgreement};
use crate::protocol::agreement::Agreement;
use crate::protocol::api::{ExecRequest, InitializeRequest, JobView, UploadResponse};
use crate::protocol::ddo::{AlgorithmPolicy, AssetKind, ComputeService, Ddo, Did};
use crate::protocol::eip712;
use crate::protocol::signing::{AuthError, recover_typed, unix_now};
use crate::protocol::template::{self, ConditionName, TemplateError, Terms};

/// Why a step of the flow was refused or failed. The HTTP layer maps each to its status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// Signed by someone who may not do this (not the consumer, not the request's signer).
    #[error("{0}")]
    Forbidden(String),
    /// A signature over the agreement or the algorithm is not the consumer's.
    #[error("{0}")]
    BadSignature(String),
    /// A signature does not parse or recover (401).
    #[error("a signature cannot be checked")]
    Signature(#[from] AuthError),
    /// The asset has no Computing service with this id (404).
    #[error("{did} has no Computing service {id}")]
    NoService {
        /// The asset.
        did: Did,
        /// The service id asked for.
        id: String,
    },
    /// The request conflicts with the agreement's state or this provider.
    #[error("{0}")]
    Conflict(String),
    /// The service's conditions are not this template's on this keeper (409).
    #[error("the service cannot be agreed on with this keeper: {0}")]
    Template(#[from] TemplateError),
    /// The algorithm or the request is refused by policy.
    #[error("{0}")]
    Refused(String),
    /// Malformed input (400).
    #[error("{0}")]
    BadRequest(String),
    /// The keeper refused or failed (its own statuses).
    #[error(transparent)]
    Keeper(#[from] KeeperError),
    /// The assets component refused or failed (its own statuses).
    #[error(transparent)]
    Asset(#[from] AssetError),
    /// The algorithm was not admitted (its own statuses).
    #[error(transparent)]
    Admission(#[from] AdmissionError),
    /// The jobs component refused or failed (its own statuses).
    #[error(transparent)]
    Job(#[from] JobError),
    /// The database failed while recording the upload (503 when transient, else 500).
    #[error("the uploaded algorithm cannot be recorded")]
    Db(#[from] crate::store::DbError),
    /// Storing the algorithm failed (500).
    #[error("the algorithm cannot be stored")]
    Io(#[from] std::io::Error),
}

/// The latest `notBefore` accepted: 9999-12-31T23:59:59Z.
pub const MAX_NOT_BEFORE: u64 = 253_402_300_799;

/// Results of the flow's steps.
pub type ServiceResult<T> = Result<T, ServiceError>;

/// The algorithm being uploaded: a module's bytes, files for an environment, or a published
/// algorithm's DID.
#[derive(Debug)]
pub enum AlgorithmSource {
    /// A module and the name it runs under.
    Module(Vec<u8>, String),
    /// Files for an environment this provider offers, as a `tidepool-files-v1` archive, and
    /// the name the algorithm runs under.
    Files {
        /// The environment's name.
        environment: String,
        /// The files' archive.
        archive: Vec<u8>,
        /// The name it runs under.
        name: String,
    },
    /// A published algorithm asset.
    Published(Did),
}

/// The agreement flow, on this provider.
#[derive(Debug)]
pub struct Agreements {
    keeper: Arc<dyn Keeper>,
    assets: Arc<Assets>,
    algorithms: Arc<Algorithms>,
    jobs: Arc<Jobs>,
    /// This provider's address.
    provider: Address,
}

impl Agreements {
    /// The provider's side of the flow for `provider`, over the components each step calls.
    pub fn new(
        keeper: Arc<dyn Keeper>,
        assets: Arc<Assets>,
        algorithms: Arc<Algorithms>,
        jobs: Arc<Jobs>,
        provider: Address,
    ) -> Self {
        Self { keeper, assets, algorithms, jobs, provider }
    }

    /// Step 2: verify the consumer's signature over the agreement, and create it on the keeper
    /// (which emits `ExecuteAgreement`).
    #[instrument(skip_all, fields(agreement_id = %req.service_agreement_id))]
    pub async fn initialize(&self, signer: Address, req: InitializeRequest) -> ServiceResult<Agreement> {
        if req.consumer_address != signer {
            return Err(ServiceError::Forbidden(
                "the request is signed by another address than consumerAddress".into(),
            ));
        }
        let ddo = self.assets.ddo(req.did).await?;
        let service = ddo
            .compute_service(&req.service_definition_id)
            .ok_or_else(|| ServiceError::NoService { did: req.did, id: req.service_definition_id.clone() })?;
        if service.provider.address != self.provider {
            return Err(ServiceError::Conflict("this asset is served by another provider".into()));
        }
        let terms = Terms::of(req.did, service, req.consumer_address);
        template::check_conditions(service.template_id, &service.conditions, self.keeper.controllers(), &terms)?;
        let signed = template::agreement_struct(req.service_agreement_id, &service.conditions, &terms);
        let who = recover_typed(self.keeper.agreement_domain(), &signed, &req.signature)?;
        if who != req.consumer_address {
            return Err(ServiceError::BadSignature(format!(
                "the agreement signature is {who}'s, not the consumer's ({}); it must sign ServiceAgreement(templateId, \
                 conditionKeys, valuesHashList, timeouts, serviceAgreementId) under the keeper's agreement domain",
                req.consumer_address
            )));
        }
        let agreement = NewAgreement {
            id: req.service_agreement_id,
            did: req.did,
            template_id: service.template_id,
            consumer: req.consumer_address,
            provider: self.provider,
            price_per_fuel: service.price_per_fuel,
            max_fuel: service.provider.environment.max_fuel,
            conditions: service
                .conditions
                .iter()
                .zip(&signed.valuesHashList)
                .map(|(c, values_hash)| ConditionInit {
                    name: c.name,
                    key: c.key,
                    values_hash: *values_hash,
                    timeout: c.timeout,
                    dependencies: c.dependencies.clone(),
                })
                .collect(),
            signature: req.signature,
        };
        Ok(self.keeper.create_agreement(agreement).await?)
    }

    /// The agreement `id`, which `signer` must be the consumer of.
    async fn consumer_agreement(&self, id: B256, signer: Address) -> ServiceResult<Agreement> {
        let a = self.keeper.agreement(id).await?;
        if a.consumer != signer {
            return Err(ServiceError::Forbidden(format!("{signer} is not the consumer of agreement {id}")));
        }
        Ok(a)
    }

    /// The Computing service of an agreement's asset.
    async fn service_of(&self, a: &Agreement) -> ServiceResult<ComputeService> {
        let ddo = self.assets.ddo(a.did).await?;
        let service = ddo.compute_service("1").cloned();
        service.ok_or(ServiceError::NoService { did: a.did, id: "1".into() })
    }

    /// Step 3: check the consumer's signed checksum, admit the algorithm (a module, or files
    /// for an environment this provider offers) and the asset's policy, keep it, and fulfil the
    /// upload condition (`FulfillUpload`).
    #[instrument(skip_all, fields(agreement_id = %agreement_id))]
    pub async fn upload(
        &self,
        signer: Address,
        agreement_id: B256,
        signed_checksum: Signature,
        source: AlgorithmSource,
    ) -> ServiceResult<UploadResponse> {
        let a = self.consumer_agreement(agreement_id, signer).await?;
        if a.is_fulfilled(ConditionName::UploadAlgorithm) {
            return Err(ServiceError::Conflict("an algorithm was uploaded for this agreement already".into()));
        }
        let (algorithm, published) = match source {
            AlgorithmSource::Module(bytes, name) => (Algorithm::new(sanitize_name(&name), bytes), None),
            AlgorithmSource::Files { environment, archive, name } => {
                (self.algorithms.from_archive(&environment, &name, &archive)?, None)
            }
            AlgorithmSource::Published(did) => {
                let ddo = self.assets.ddo(did).await?;
                let hash = match (ddo.metadata.kind, ddo.metadata.algorithm_hash) {
                    (AssetKind::Algorithm, Some(h)) => h,
                    _ => return Err(ServiceError::Refused(format!("{did} is not an algorithm"))),
                };
                let name = sanitize_name(&ddo.metadata.name);
                let algorithm = match &ddo.metadata.environment {
                    None => Algorithm::new(name, self.algorithms.module(hash).await?),
                    Some(environment) => {
                        let manifests = self.assets.manifests(did).await?;
                        let [(_, tree)] = &manifests[..] else {
                            return Err(ServiceError::Refused(format!("{did} is not an algorithm of one dataset")));
                        };
                        self.algorithms.from_tree(environment, &name, tree).await?
                    }
                };
                if algorithm.hash() != hash {
                    return Err(ServiceError::Refused(format!("{did}'s files do not hash to its algorithmHash")));
                }
                (algorithm, Some(ddo))
            }
        };
        let hash = algorithm.hash();
        let signed = eip712::Algorithm { serviceAgreementId: agreement_id, algorithmHash: hash };
        let who = recover_typed(self.keeper.agreement_domain(), &signed, &signed_checksum)?;
        if who != a.consumer {
            return Err(ServiceError::BadSignature(format!(
                "signedChecksum is {who}'s signature over Algorithm(serviceAgreementId, algorithmHash={hash}), not the \
                 consumer's"
            )));
        }
        let service = self.service_of(&a).await?;
        check_policy(&service.trusted_algorithms, hash, published.as_ref())?;
        self.algorithms.admit(algorithm.clone()).await?;
        let upload = self.algorithms.keep(&algorithm, published.map(|d| d.id)).await?;
        self.algorithms.record_upload(agreement_id, &upload).await?;
        self.keeper.fulfill_upload(agreement_id, hash, signed_checksum).await?;
        let name = upload.name;
        Ok(UploadResponse { algorithm_hash: hash, algorithm_name: name })
    }

    /// Step 4 on the embedded keeper: the consumer locks the payment.
    #[instrument(skip_all, fields(agreement_id = %agreement_id))]
    pub async fn lock_payment(&self, signer: Address, agreement_id: B256) -> ServiceResult<Agreement> {
        self.consumer_agreement(agreement_id, signer).await?;
        self.keeper.lock_payment(agreement_id, signer).await?;
        Ok(self.keeper.agreement(agreement_id).await?)
    }

    /// Step 6: a granted consumer asks for the job; it is queued (to start at `notBefore`).
    #[instrument(skip_all, fields(agreement_id = %req.service_agreement_id))]
    pub async fn exec(&self, signer: Address, req: ExecRequest) -> ServiceResult<JobView> {
        if req.consumer_address != signer {
            return Err(ServiceError::Forbidden(
                "the request is signed by another address than consumerAddress".into(),
            ));
        }
        if let Some(t) = req.not_before.filter(|t| *t > MAX_NOT_BEFORE) {
            return Err(ServiceError::BadRequest(format!(
                "notBefore {t} is out of range (Unix seconds, at most {MAX_NOT_BEFORE}: the year 9999)"
            )));
        }
        let a = self.consumer_agreement(req.service_agreement_id, signer).await?;
        if !a.is_fulfilled(ConditionName::GrantCompute) {
            return Err(ServiceError::Forbidden(
                "compute has not been granted for this agreement (lock the payment and upload the algorithm first)"
                    .into(),
            ));
        }
        let now = unix_now();
        let not_before = req.not_before.unwrap_or(now).max(now);
        if let Some(deadline) = a.deadline(ConditionName::ReleasePayment) {
            let service = self.service_of(&a).await?;
            let worst_case = service.provider.environment.timeout_ms.div_ceil(1000);
            if not_before.saturating_add(worst_case) >= deadline {
                return Err(ServiceError::Refused(format!(
                    "a job starting at {not_before} might not finish (timeout {worst_case} s) before the payment \
                     deadline {deadline}"
                )));
            }
        }
        if req.args.iter().any(|a| a.contains('\0')) {
            return Err(ServiceError::BadRequest("arguments cannot contain NUL bytes".into()));
        }
        Ok(self.jobs.enqueue(&a, not_before, req.args).await?)
    }

    /// Step 9: the consumer takes the payment back after the provider missed a deadline.
    #[instrument(skip_all, fields(agreement_id = %agreement_id))]
    pub async fn refund(&self, signer: Address, agreement_id: B256) -> ServiceResult<U256> {
        self.consumer_agreement(agreement_id, signer).await?;
        Ok(self.keeper.refund_payment(agreement_id, signer).await?)
    }
}

/// Does the asset's policy let this algorithm run?
fn check_policy(policy: &AlgorithmPolicy, hash: B256, published: Option<&Ddo>) -> ServiceResult<()> {
    match policy {
        AlgorithmPolicy::Any => Ok(()),
        AlgorithmPolicy::Hashes { hashes } if hashes.contains(&hash) => Ok(()),
        AlgorithmPolicy::Hashes { .. } => Err(ServiceError::Refused(format!(
            "the asset's policy only runs listed algorithms, and {hash} is not one of them"
        ))),
        AlgorithmPolicy::Publishers { publishers } => {
            let publisher = published.and_then(Ddo::owner);
            if publisher.is_some_and(|p| publishers.contains(&p)) {
                Ok(())
            } else {
                Err(ServiceError::Refused(
                    "the asset's policy only runs algorithms published by its trusted publishers; upload one by its \
                     DID"
                    .into(),
                ))
            }
        }
    }
}
