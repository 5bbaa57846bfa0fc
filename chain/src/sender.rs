//! Sending transactions from one key: estimate, sign, submit, wait for the receipt, check it.
//!
//! Filling is done here, in an order that cannot leave a nonce gap. alloy's recommended
//! fillers reserve a nonce while they estimate gas, so one estimate that reverts burns a
//! nonce and every later transaction waits forever behind the gap. Here:
//!
//! 1. gas is estimated first, with no nonce: a revert is decoded ([`ChainError`]) and
//!    returned, and nothing else happened;
//! 2. under one lock, the next nonce is taken, the transaction signed and submitted; the nonce
//!    advances only when the node accepted the transaction (a failed submission makes the
//!    next one read the account's pending count again);
//! 3. outside the lock, the receipt is awaited, so many transactions from one key are in
//!    flight at once, and its status is checked: a mined revert is replayed as a call to read
//!    its reason.
//!
//! Transient transport errors are retried with exponential backoff at every step; a
//! resubmission sends the same signed bytes, so it cannot double-spend.

use std::time::{Duration, Instant};

use alloy::consensus::TxEnvelope;
use alloy::eips::eip2718::Encodable2718;
use alloy::network::{Ethereum, EthereumWallet, NetworkWallet, TransactionBuilder};
use alloy::primitives::{Address, B256, Bytes};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::{Log, TransactionReceipt, TransactionRequest};
use tokio::sync::Mutex;

use crate::error::{ChainError, Result};

/// How often and how long to retry transient errors.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Tries in all, the first included.
    pub attempts: u32,
    /// The pause after the first failure; it doubles after each one.
    pub initial_backoff: Duration,
    /// The longest pause between two tries.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { attempts: 6, initial_backoff: Duration::from_millis(100), max_backoff: Duration::from_secs(2) }
    }
}

impl RetryPolicy {
    /// Runs `op` until it succeeds, fails with a permanent error, or the attempts run out.
    pub async fn run<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut backoff = self.initial_backoff;
        let mut attempt = 1;
        loop {
            match op().await {
                Err(e) if e.is_transient() && attempt < self.attempts => {
                    tracing::debug!(what, attempt, error = %e, "transient RPC error; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.max_backoff);
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

/// A mined, successful transaction.
#[derive(Clone, Debug)]
pub struct TxOutcome {
    /// The transaction's hash.
    pub tx_hash: B256,
    /// The block it was mined in.
    pub block_number: u64,
    /// Gas it used.
    pub gas_used: u64,
    /// For a contract creation: the new contract.
    pub contract_address: Option<Address>,
    /// The logs it emitted, in order.
    pub logs: Vec<Log>,
}

/// Submits one account's transactions (see the module documentation).
#[derive(Debug)]
pub struct TxSender {
    provider: DynProvider,
    wallet: EthereumWallet,
    address: Address,
    chain_id: u64,
    /// The next nonce to use; `None`: read the account's pending count first.
    nonce: Mutex<Option<u64>>,
    retry: RetryPolicy,
    receipt_timeout: Duration,
    receipt_poll: Duration,
}

impl TxSender {
    pub(crate) fn new(
        provider: DynProvider,
        wallet: EthereumWallet,
        chain_id: u64,
        retry: RetryPolicy,
        receipt_timeout: Duration,
        receipt_poll: Duration,
    ) -> Self {
        let address = NetworkWallet::<Ethereum>::default_signer_address(&wallet);
        Self { provider, wallet, address, chain_id, nonce: Mutex::new(None), retry, receipt_timeout, receipt_poll }
    }

    /// The account that signs.
    pub fn address(&self) -> Address {
        self.address
    }

    /// The chain id the transactions are signed for.
    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    /// Calls `to` with `input`.
    pub async fn call(&self, to: Address, input: Bytes) -> Result<TxOutcome> {
        self.send(TransactionRequest::default().with_to(to).with_input(input)).await
    }

    /// Deploys a contract from its creation code (bytecode and constructor arguments).
    pub async fn create(&self, code: Bytes) -> Result<TxOutcome> {
        self.send(TransactionRequest::default().with_deploy_code(code)).await
    }

    async fn send(&self, request: TransactionRequest) -> Result<TxOutcome> {
        let mut request = request.with_from(self.address).with_chain_id(self.chain_id);
        // 1. Estimate, with no nonce taken: a revert ends here.
        let gas =
            self.retry.run("estimate gas", || async { Ok(self.provider.estimate_gas(request.clone()).await?) }).await?;
        let fees =
            self.retry.run("estimate fees", || async { Ok(self.provider.estimate_eip1559_fees().await?) }).await?;
        // A margin: state may change between the estimate and the inclusion.
        request.set_gas_limit(gas + gas / 4);
        request.set_max_fee_per_gas(fees.max_fee_per_gas);
        request.set_max_priority_fee_per_gas(fees.max_priority_fee_per_gas);

        // 2. Nonce, sign, submit, under the lock.
        let tx_hash = {
            let mut next = self.nonce.lock().await;
            let nonce = match *next {
                Some(n) => n,
                None => {
                    self.retry
                        .run("nonce", || async {
                            Ok(self.provider.get_transaction_count(self.address).pending().await?)
                        })
                        .await?
                }
            };
            request.set_nonce(nonce);
            let envelope = NetworkWallet::<Ethereum>::sign_request(&self.wallet, request.clone())
                .await
                .map_err(ChainError::Signing)?;
            match self.submit(&envelope).await {
                Ok(hash) => {
                    *next = Some(nonce + 1);
                    hash
                }
                Err(e) => {
                    *next = None;
                    return Err(e);
                }
            }
        };

        // 3. Wait for the receipt, outside the lock.
        let receipt = self.wait(tx_hash).await?;
        if !receipt.status() {
            // Replay it as a call on the block it was mined in to read why it reverted.
            let replay = self.provider.call(request).block(receipt.block_number.unwrap_or_default().into()).await;
            return Err(match replay {
                Err(e) => match ChainError::from_transport(e) {
                    ChainError::Transport { .. } => ChainError::RevertedWithoutReason { tx_hash },
                    revert => revert,
                },
                Ok(_) => ChainError::RevertedWithoutReason { tx_hash },
            });
        }
        Ok(TxOutcome {
            tx_hash,
            block_number: receipt.block_number.unwrap_or_default(),
            gas_used: receipt.gas_used,
            contract_address: receipt.contract_address,
            logs: receipt.inner.logs().to_vec(),
        })
    }

    /// Submits signed bytes, retrying transient errors with the same bytes. A retry the node
    /// answers with "already known" or "nonce too low" means an earlier try got through.
    async fn submit(&self, envelope: &TxEnvelope) -> Result<B256> {
        let raw = envelope.encoded_2718();
        let hash = *envelope.tx_hash();
        let mut tried = false;
        self.retry
            .run("send transaction", || {
                let raw = &raw;
                let retry = std::mem::replace(&mut tried, true);
                async move {
                    match self.provider.send_raw_transaction(raw).await {
                        Ok(_) => Ok(hash),
                        Err(e) => {
                            let message = e.as_error_resp().map(|p| p.message.to_lowercase()).unwrap_or_default();
                            if retry && (message.contains("already known") || message.contains("nonce too low")) {
                                Ok(hash)
                            } else {
                                Err(ChainError::from_transport(e))
                            }
                        }
                    }
                }
            })
            .await
    }

    /// Polls for the receipt until it comes or the timeout passes.
    async fn wait(&self, tx_hash: B256) -> Result<TransactionReceipt> {
        let started = Instant::now();
        let mut poll = Duration::from_millis(10).min(self.receipt_poll);
        loop {
            let receipt = self
                .retry
                .run("receipt", || async { Ok(self.provider.get_transaction_receipt(tx_hash).await?) })
                .await?;
            if let Some(receipt) = receipt {
                return Ok(receipt);
            }
            if started.elapsed() >= self.receipt_timeout {
                return Err(ChainError::ReceiptTimeout { tx_hash, waited_ms: started.elapsed().as_millis() as u64 });
            }
            tokio::time::sleep(poll).await;
            poll = (poll * 2).min(self.receipt_poll);
        }
    }
}
