//! Settlement: releasing an ended job's payment on the keeper (fuel used × price to the
//! provider, the rest back to the consumer, committing the receipt hash), then publishing its
//! outputs as an asset of the consumer. Idempotent: safe to run again after a crash, and run
//! again until it succeeds, and safe to run on several nodes at once (the keeper releases a
//! payment and records an output once).
//!
//! A receipt stored without the provider's signature (a worker, which never holds the key, ran
//! the job) is signed here first, by a node that holds it; a node without the key leaves such
//! a job to one that has it. Signing is deterministic, so whichever node signs, the receipt is
//! the same.

use tidepool_runtime::Receipt;
use tracing::instrument;

use super::{JobError, JobResult, Jobs};
use crate::keeper::KeeperError;
use crate::protocol::agreement::AgreementState;
use crate::protocol::states::JobStatus;
use crate::protocol::states::PaymentState;

impl Jobs {
    /// Settles every ended job whose payment is still pending.
    pub(super) async fn settle_pending(&self) {
        let ids = match self.store.unsettled().await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::error!(error = %crate::error_chain(&e), "listing unsettled jobs");
                return;
            }
        };
        for id in ids {
            if let Err(e) = self.settle(&id).await {
                tracing::error!(job_id = %id, error = %crate::error_chain(&e), "settling failed; will retry");
            }
        }
    }

    /// Releases the payment of an ended job and publishes its outputs (see the module).
    #[instrument(skip_all, fields(job_id = %id))]
    pub(super) async fn settle(&self, id: &str) -> JobResult<()> {
        let row = self.store.settle_row(id).await?;
        if row.payment()?.is_settled() || !row.status()?.is_terminal() {
            return Ok(());
        }
        let agreement_id = row.agreement_id.0;
        // A job that never produced a receipt pays nothing: the whole escrow goes back.
        let mut receipt: Option<Receipt> = match row.receipt_hash {
            Some(_) => Some(self.stored_receipt(id).await?),
            None => None,
        };
        if let Some(ran) = receipt.as_ref().map(|r| r.algorithm_hash) {
            // A receipt is paid for only if it is of the algorithm the keeper recorded.
            let agreed = self.keeper.agreement(agreement_id).await?.algorithm_hash;
            if agreed != Some(ran) {
                tracing::error!(%ran, ?agreed, "the job ran another algorithm than the agreed one; refunding");
                self.store
                    .fail(id, None, JobStatus::Error, "the job ran another algorithm than the agreement's")
                    .await?;
                receipt = None;
            }
        }
        if let Some(unsigned) = receipt.take() {
            match self.signed(id, unsigned).await? {
                Some(signed) => receipt = Some(signed),
                None => return Ok(()), // unsigned, and this node cannot sign it
            }
        }
        match self.keeper.release_payment(agreement_id, receipt.as_ref()).await {
            Ok(payout) => tracing::info!(
                provider = %payout.provider_amount, refund = %payout.consumer_refund, "payment released"
            ),
            Err(KeeperError::AlreadyFulfilled { .. } | KeeperError::Closed { state: AgreementState::Released }) => {}
            Err(KeeperError::Closed { state: AgreementState::Refunded }) => {
                return self.store.set_payment(id, PaymentState::Refunded, None).await;
            }
            Err(
                e @ (KeeperError::TimedOut { .. }
                | KeeperError::DependencyUnfulfilled { .. }
                | KeeperError::Closed { .. }
                | KeeperError::Unsupported(_)
                | KeeperError::ReceiptRefused(_)),
            ) => {
                tracing::warn!(error = %e, "the payment cannot be released");
                return self.store.set_payment(id, PaymentState::Unpaid, None).await;
            }
            Err(e) => return Err(e.into()),
        }
        let mut output = None;
        if let Some(receipt) = &receipt {
            let outputs = self.store.results(id).await?.outputs.map(|o| o.0);
            if let Some(outputs) = outputs {
                let a = self.keeper.agreement(agreement_id).await?;
                let did = self.assets.publish_output(&a, id, receipt, &outputs).await?;
                match self.keeper.publish_output(agreement_id, did).await {
                    Ok(()) | Err(KeeperError::OutputAlreadyPublished(_)) => {}
                    Err(e) => return Err(e.into()),
                }
                output = Some(did);
            }
        }
        self.store.set_payment(id, PaymentState::Released, output).await
    }

    /// A finished job's receipt.
    async fn stored_receipt(&self, id: &str) -> JobResult<Receipt> {
        let json =
            self.store.receipt(id).await?.ok_or_else(|| JobError::Corrupt(format!("job {id} lost its receipt")))?;
        Ok(serde_json::from_str(&json)?)
    }

    /// Job `id`'s stored `receipt` with the provider's signature: as stored if it has one, else
    /// signed here and stored so if this node holds the key (another node that settles it at
    /// the same time signs it identically: the signature is deterministic); `None` if it is
    /// unsigned and cannot be signed here.
    async fn signed(&self, id: &str, mut receipt: Receipt) -> JobResult<Option<Receipt>> {
        if !receipt.signatures.is_empty() {
            return Ok(Some(receipt));
        }
        let Some(receipts) = &self.receipts else { return Ok(None) };
        crate::protocol::signing::sign_receipt(&receipts.signer, &receipts.domain, &mut receipt);
        self.store.set_receipt(id, &serde_json::to_string_pretty(&receipt)?).await?;
        Ok(Some(receipt))
    }
}
