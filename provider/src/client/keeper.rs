//! The keeper as the provider shows it: agreements, the event log, balances.

use std::time::Duration;

use alloy_primitives::{Address, B256, U256};

use super::{Client, ClientResult};
use crate::protocol::agreement::Agreement;
use crate::protocol::api::{BalanceView, CreditRequest, EventsView};
use crate::protocol::events::{EventName, KeeperEvent};

impl Client {
    /// The agreement `id` as the keeper holds it (its conditions and payment).
    pub async fn agreement(&self, id: B256) -> ClientResult<Agreement> {
        self.get_public(&format!("/api/v1/keeper/agreements/{id}")).await
    }

    /// Keeper events after `after` (of one agreement, if given).
    pub async fn events(&self, after: u64, agreement: Option<B256>) -> ClientResult<Vec<KeeperEvent>> {
        self.wait_for_events(after, agreement, Duration::ZERO, &[]).await
    }

    /// Events after `after` (of one agreement, if given); when there are none yet (none of
    /// `until`, if it names any), the provider holds the request until one arrives or `wait`
    /// passes (then: those there are, possibly none).
    pub async fn wait_for_events(
        &self,
        after: u64,
        agreement: Option<B256>,
        wait: Duration,
        until: &[EventName],
    ) -> ClientResult<Vec<KeeperEvent>> {
        let mut filter = agreement.map(|a| format!("&agreement={a}")).unwrap_or_default();
        if !until.is_empty() {
            let names: Vec<&str> = until.iter().map(|n| n.as_str()).collect();
            filter.push_str(&format!("&waitFor={}", names.join(",")));
        }
        let started = std::time::Instant::now();
        let v: EventsView = self
            .get_public(&format!("/api/v1/keeper/events?after={after}{filter}&waitMs={}", wait.as_millis()))
            .await?;
        if v.events.is_empty() {
            // A provider that does not long-poll answers at once: do not ask again at once.
            // (Capped, so that a long wait does not turn into a long sleep.)
            tokio::time::sleep(wait.saturating_sub(started.elapsed()).min(Duration::from_millis(250))).await;
        }
        Ok(v.events)
    }

    /// The token balance of `who` on the provider's embedded keeper.
    pub async fn balance(&self, who: Address) -> ClientResult<U256> {
        let v: BalanceView = self.get_public(&format!("/api/v1/keeper/balances/{who}")).await?;
        Ok(v.balance)
    }

    /// Credits `amount` to `who` (operators only).
    pub async fn credit(&self, who: Address, amount: U256) -> ClientResult<U256> {
        let v: BalanceView = self.post_json("/api/v1/keeper/credit", &CreditRequest { address: who, amount }).await?;
        Ok(v.balance)
    }

    /// Asks a development provider's faucet for tokens.
    pub async fn faucet(&self) -> ClientResult<U256> {
        let v: BalanceView = self.post_json("/api/v1/keeper/faucet", &serde_json::json!({})).await?;
        Ok(v.balance)
    }
}
