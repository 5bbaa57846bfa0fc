//! Settlement: releasing an ended job's payment on the keeper (fuel used × price to the
//! provider, the rest back to the consumer, committing the receipt hash), then publishing its
//! outputs as an asset of the consumer. Idempotent: safe to run again after a crash, and run
//! again until it succeeds.

use tidepool_runtime::Receipt;
use tracing::instrument;

use super::{JobError, JobResult, Jobs};
use crate::keeper::KeeperError;
use crate::protocol::agreement::AgreementState;
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
        // A job that never produced a receipt pays nothing.
        let receipt: Option<Receipt> = match row.receipt_hash {
            Some(_) => Some(serde_json::from_str(
                &self.store.receipt(id).await?.ok_or_else(|| JobError::Corrupt(format!("job {id} lost its receipt")))?,
            )?),
            None => None,
        };
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
}
