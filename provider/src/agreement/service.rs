//! The provider's side of the Service Execution Agreement flow (OEP-12): initialize, upload the
//! algorithm, lock payment (the embedded keeper's facade), execute, refund. The HTTP handlers
//! authenticate the caller and call these; everything here is keeper-agnostic.

use std::sync::Arc;

use alloy_primitives::{Address, B256, Signature, U256};
use tidepool_runtime::Algorithm;

use super::template::{self, Terms};
use crate::api::{ExecRequest, InitializeRequest, JobView, UploadResponse};
use crate::auth::{recover_typed, unix_now};
use crate::bindings;
use crate::ddo::{AlgorithmPolicy, AssetKind, ComputeService, Ddo, Did};
use crate::error::{ApiError, ApiResult};
use crate::keeper::{Agreement, ConditionInit, NewAgreement};
use crate::provider::Provider;
use crate::store::addr;

/// The terms a consumer agrees to on a service.
pub fn terms(did: Did, service: &ComputeService, consumer: Address) -> Terms {
    Terms {
        did,
        provider: service.provider.address,
        consumer,
        price_per_fuel: service.price_per_fuel,
        max_fuel: service.provider.environment.max_fuel,
    }
}

/// Step 2: verify the consumer's signature over the agreement, and create it on the keeper
/// (which emits `ExecuteAgreement`).
pub async fn initialize(p: &Provider, signer: Address, req: InitializeRequest) -> ApiResult<Agreement> {
    if req.consumer_address != signer {
        return Err(ApiError::Forbidden("the request is signed by another address than consumerAddress".into()));
    }
    let ddo = crate::assets::ddo(p, req.did).await?;
    let service = ddo.compute_service(&req.service_definition_id).ok_or_else(|| {
        ApiError::NotFound(format!("{} has no Computing service {}", req.did, req.service_definition_id))
    })?;
    if service.provider.address != p.address() {
        return Err(ApiError::Conflict("this asset is served by another provider".into()));
    }
    let terms = terms(req.did, service, req.consumer_address);
    template::check_conditions(service.template_id, &service.conditions, p.keeper.controllers(), &terms)
        .map_err(|e| ApiError::Conflict(format!("the service cannot be agreed on with this keeper: {e}")))?;
    let signed = template::agreement_struct(req.service_agreement_id, &service.conditions, &terms);
    let who = recover_typed(&p.domain, &signed, &req.signature)?;
    if who != req.consumer_address {
        return Err(ApiError::Unauthorized(format!(
            "the agreement signature is {who}'s, not the consumer's ({}); it must sign ServiceAgreement(templateId, \
             conditionKeys, valuesHashList, timeouts, serviceAgreementId) with the provider's domain",
            req.consumer_address
        )));
    }
    let agreement = NewAgreement {
        id: req.service_agreement_id,
        did: req.did,
        template_id: service.template_id,
        consumer: req.consumer_address,
        provider: p.address(),
        price_per_fuel: service.price_per_fuel,
        max_fuel: service.provider.environment.max_fuel,
        conditions: service
            .conditions
            .iter()
            .zip(&signed.valuesHashList)
            .map(|(c, values_hash)| ConditionInit {
                name: c.name.clone(),
                key: c.key,
                values_hash: *values_hash,
                timeout: c.timeout,
                dependencies: c.dependencies.clone(),
            })
            .collect(),
    };
    Ok(p.keeper.create_agreement(agreement).await?)
}

/// The agreement `id`, which `signer` must be the consumer of.
pub async fn consumer_agreement(p: &Provider, id: B256, signer: Address) -> ApiResult<Agreement> {
    let a = p.keeper.agreement(id).await?;
    if a.consumer != signer {
        return Err(ApiError::Forbidden(format!("{signer} is not the consumer of agreement {id}")));
    }
    Ok(a)
}

/// The Computing service of an agreement's asset.
async fn service_of(p: &Provider, a: &Agreement) -> ApiResult<(Ddo, ComputeService)> {
    let ddo = crate::assets::ddo(p, a.did).await?;
    let service = ddo
        .service
        .iter()
        .find_map(|s| match s {
            crate::ddo::Service::Computing(c) => Some((**c).clone()),
            _ => None,
        })
        .ok_or_else(|| ApiError::Internal(format!("{} lost its Computing service", a.did)))?;
    Ok((ddo, service))
}

/// The algorithm being uploaded: a module's bytes, or a published algorithm's DID.
#[derive(Debug)]
pub enum AlgorithmSource {
    /// A module and the name it runs under.
    Module(Vec<u8>, String),
    Published(Did),
}

/// Step 3: check the consumer's signed checksum, admit the module and the asset's policy, keep
/// the module, and fulfil the upload condition (`FulfillUpload`).
pub async fn upload(
    p: &Arc<Provider>,
    signer: Address,
    agreement_id: B256,
    signed_checksum: Signature,
    source: AlgorithmSource,
) -> ApiResult<UploadResponse> {
    let a = consumer_agreement(p, agreement_id, signer).await?;
    if a.is_fulfilled("uploadAlgorithm") {
        return Err(ApiError::Conflict("an algorithm was uploaded for this agreement already".into()));
    }
    let (bytes, name, published) = match source {
        AlgorithmSource::Module(bytes, name) => (bytes, tidepool_runtime::job::sanitize_name(&name), None),
        AlgorithmSource::Published(did) => {
            let ddo = crate::assets::ddo(p, did).await?;
            let hash = match (ddo.metadata.kind, ddo.metadata.algorithm_hash) {
                (AssetKind::Algorithm, Some(h)) => h,
                _ => return Err(ApiError::Unprocessable(format!("{did} is not an algorithm"))),
            };
            let name = tidepool_runtime::job::sanitize_name(&ddo.metadata.name);
            (p.blobs.read(&hash)?, name, Some(ddo))
        }
    };
    let hash = tidepool_runtime::tree::blake3_b256(&bytes);
    let signed = bindings::Algorithm { serviceAgreementId: agreement_id, algorithmHash: hash };
    let who = recover_typed(&p.domain, &signed, &signed_checksum)?;
    if who != a.consumer {
        return Err(ApiError::Unauthorized(format!(
            "signedChecksum is {who}'s signature over Algorithm(serviceAgreementId, algorithmHash={hash}), not the consumer's"
        )));
    }
    let (_, service) = service_of(p, &a).await?;
    match &service.trusted_algorithms {
        AlgorithmPolicy::Any => {}
        AlgorithmPolicy::Hashes { hashes } => {
            if !hashes.contains(&hash) {
                return Err(ApiError::Unprocessable(format!(
                    "the asset's policy only runs listed algorithms, and {hash} is not one of them"
                )));
            }
        }
        AlgorithmPolicy::Publishers { publishers } => {
            let publisher = published.as_ref().and_then(Ddo::owner);
            if !publisher.is_some_and(|p| publishers.contains(&p)) {
                return Err(ApiError::Unprocessable(
                    "the asset's policy only runs algorithms published by its trusted publishers; upload one by its DID".into(),
                ));
            }
        }
    }
    crate::assets::check_module(p, Algorithm::new(name.clone(), bytes.clone())).await?;
    let stored = p.blobs.put_bytes(&bytes)?;
    p.db.execute(sqlx::query(
        "INSERT INTO uploads (agreement_id, algorithm_hash, algorithm_did, name, created_at) VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT (agreement_id) DO UPDATE SET algorithm_hash = excluded.algorithm_hash, \
         algorithm_did = excluded.algorithm_did, name = excluded.name",
    )
    .bind(agreement_id.to_string())
    .bind(stored.to_string())
    .bind(published.map(|d| d.id.to_string()))
    .bind(&name)
    .bind(unix_now() as i64))
    .await
    .map_err(ApiError::internal)?;
    p.keeper.fulfill_upload(agreement_id, hash).await?;
    Ok(UploadResponse { algorithm_hash: hash, algorithm_name: name })
}

/// Step 4 on the embedded keeper: the consumer locks the payment.
pub async fn lock_payment(p: &Provider, signer: Address, agreement_id: B256) -> ApiResult<Agreement> {
    consumer_agreement(p, agreement_id, signer).await?;
    p.keeper.lock_payment(agreement_id, signer).await?;
    Ok(p.keeper.agreement(agreement_id).await?)
}

/// Step 6: a granted consumer asks for the job; it is queued (to start at `notBefore`).
pub async fn exec(p: &Arc<Provider>, signer: Address, req: ExecRequest) -> ApiResult<JobView> {
    if req.consumer_address != signer {
        return Err(ApiError::Forbidden("the request is signed by another address than consumerAddress".into()));
    }
    let a = consumer_agreement(p, req.service_agreement_id, signer).await?;
    if !a.is_fulfilled("grantCompute") {
        return Err(ApiError::Forbidden(
            "compute has not been granted for this agreement (lock the payment and upload the algorithm first)".into(),
        ));
    }
    let now = unix_now();
    let not_before = req.not_before.unwrap_or(now).max(now);
    if let Some(deadline) = a.condition("releasePayment").and_then(|c| c.deadline) {
        let (_, service) = service_of(p, &a).await?;
        let worst_case = service.provider.environment.timeout_ms.div_ceil(1000);
        if not_before.saturating_add(worst_case) >= deadline {
            return Err(ApiError::Unprocessable(format!(
                "a job starting at {not_before} might not finish (timeout {worst_case} s) before the payment deadline {deadline}"
            )));
        }
    }
    if req.args.iter().any(|a| a.contains('\0')) {
        return Err(ApiError::BadRequest("arguments cannot contain NUL bytes".into()));
    }
    crate::jobs::enqueue(p, &a, not_before, req.args).await
}

/// Step 9: the consumer takes the payment back after the provider missed a deadline.
pub async fn refund(p: &Provider, signer: Address, agreement_id: B256) -> ApiResult<U256> {
    consumer_agreement(p, agreement_id, signer).await?;
    Ok(p.keeper.refund_payment(agreement_id, signer).await?)
}

/// The consumer of an agreement, as stored.
pub fn consumer_key(a: &Agreement) -> String {
    addr(a.consumer)
}
