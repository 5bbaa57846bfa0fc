//! The whole consumer flow in one call: initialize → upload and lock (on `ExecuteAgreement`) →
//! exec (on `ComputeGranted`) → follow the job → download and check the results (on
//! `PaymentReleased`) → the output asset (on `OutputPublished`).
//!
//! The client reacts to keeper events the way the DDO's `serviceAgreementContract.events`
//! mapping describes for `actorType: consumer`: every handler named there must be one this
//! client knows, or the flow refuses to start. Events are read from the keeper's log, filtered by
//! the agreement id.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use alloy_primitives::{B256, U256};
use tidepool_runtime::Receipt;
use tidepool_runtime::tree::{EntryKind, Tree};

use super::{Client, ClientError, ClientResult};
use crate::agreement::service::terms;
use crate::agreement::template::{self, Actor};
use crate::api::{ExecRequest, InitializeRequest, JobView, ResultKind};
use crate::auth::{sign_typed, verify_receipt_signature};
use crate::ddo::{ComputeService, Did};
use crate::jobs::JobStatus;
use crate::keeper::{EventName, KeeperEvent, Payout};

/// The algorithm to run.
#[derive(Debug, Clone)]
pub enum AlgorithmChoice {
    /// A module's bytes, and the name it runs under.
    Module(Vec<u8>, String),
    /// A published algorithm.
    Published(Did),
}

/// What to run, where, and how long to wait.
#[derive(Debug, Clone)]
pub struct ComputeRequest {
    pub did: Did,
    pub algorithm: AlgorithmChoice,
    pub args: Vec<String>,
    pub not_before: Option<u64>,
    /// Where the outputs (`outputs/`), logs (`logs/`) and `receipt.json` go. Must not exist or
    /// be empty.
    pub output_dir: PathBuf,
    /// How long to wait for the whole flow.
    pub wait: Duration,
}

/// Where the flow is, for progress displays.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Initialized { agreement: B256 },
    Event(EventName),
    AlgorithmUploaded { hash: B256 },
    PaymentLocked { amount: U256 },
    JobQueued { job: String },
    Job(Box<JobView>),
    Downloading { files: usize },
}

/// What the flow produced.
#[derive(Debug, Clone)]
pub struct ComputeOutcome {
    pub agreement: B256,
    pub job: JobView,
    pub receipt: Receipt,
    pub payout: Payout,
    pub output_did: Option<Did>,
    pub output_dir: PathBuf,
    /// Output files, relative to `output_dir/outputs`.
    pub files: Vec<(String, u64)>,
}

/// The downloaded and checked results: the receipt, the output files, the payment split.
type Fetched = (Receipt, Vec<(String, u64)>, Payout);

/// The consumer handlers this client knows, by `module.function`.
const CONSUMER_HANDLERS: &[&str] = &[
    "compute.uploadAlgorithm",
    "payment.lockPayment",
    "compute.execute",
    "compute.fetchResults",
    "payment.refunded",
    "compute.outputPublished",
];

/// The consumer's subscriptions from a service's event mapping; refuses unknown handlers.
fn subscriptions(service: &ComputeService) -> ClientResult<BTreeMap<String, Vec<String>>> {
    let mut subs: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in &service.service_agreement_contract.events {
        if e.actor_type != Actor::Consumer.as_str() {
            continue;
        }
        let key = e.handler.key();
        if !CONSUMER_HANDLERS.contains(&key.as_str()) {
            return Err(ClientError::Flow(format!(
                "the DDO asks consumers to run `{key}` on {}, which this client does not know",
                e.name
            )));
        }
        subs.entry(e.name.clone()).or_default().push(key);
    }
    Ok(subs)
}

impl Client {
    /// Runs the whole consumer flow on `req.did`'s Computing service. `progress` sees each step.
    pub async fn compute(&self, req: &ComputeRequest, mut progress: impl FnMut(&Step)) -> ClientResult<ComputeOutcome> {
        prepare_output_dir(&req.output_dir)?;
        let ddo = self.ddo(req.did).await?;
        let service = ddo
            .compute_service("1")
            .ok_or_else(|| ClientError::Flow(format!("{} offers no Computing service", req.did)))?
            .clone();
        if service.provider.address != self.provider().address {
            return Err(ClientError::Flow("the asset is served by another provider than the one connected".into()));
        }
        let subs = subscriptions(&service)?;
        // Check the DDO before signing anything: its conditions must be the template's.
        let terms = terms(req.did, &service, self.address());
        let controllers = template::Controllers(
            service.conditions.iter().map(|c| (controller_of(&c.name), c.contract_address)).collect(),
        );
        template::check_conditions(service.template_id, &service.conditions, &controllers, &terms)
            .map_err(|e| ClientError::Flow(format!("the DDO's agreement does not match the template: {e}")))?;

        let agreement = B256::random();
        let signed = template::agreement_struct(agreement, &service.conditions, &terms);
        let signature = sign_typed(self.signer(), self.domain(), &signed);
        self.initialize(&InitializeRequest {
            did: req.did,
            service_agreement_id: agreement,
            service_definition_id: service.service_definition_id.clone(),
            signature,
            consumer_address: self.address(),
        })
        .await?;
        progress(&Step::Initialized { agreement });

        let deadline = Instant::now() + req.wait;
        let mut cursor = 0u64;
        let mut job: Option<String> = None;
        let mut fetched: Option<Fetched> = None;
        let mut output_did = None;
        let mut algorithm_hash = None;
        loop {
            if Instant::now() > deadline {
                return Err(ClientError::Flow(format!(
                    "gave up after {:?} (agreement {agreement}); if the provider missed its deadline, `tidepool refund` \
                     returns the payment",
                    req.wait
                )));
            }
            // Long polling: the provider answers as soon as an event arrives. While a job runs,
            // come back at least every quarter second to show its progress.
            let following = job.is_some() && fetched.is_none();
            let wait = if following { Duration::from_millis(250) } else { Duration::from_secs(5) };
            for event in self.wait_for_events(cursor, Some(agreement), wait).await? {
                cursor = event.id;
                progress(&Step::Event(event.name));
                for handler in subs.get(event.name.as_str()).into_iter().flatten() {
                    match handler.as_str() {
                        "compute.uploadAlgorithm" => {
                            let uploaded = match &req.algorithm {
                                AlgorithmChoice::Module(bytes, name) => {
                                    self.upload_module(agreement, bytes, name).await?
                                }
                                AlgorithmChoice::Published(did) => {
                                    let alg = self.ddo(*did).await?;
                                    let hash = alg
                                        .metadata
                                        .algorithm_hash
                                        .ok_or_else(|| ClientError::Flow(format!("{did} is not an algorithm")))?;
                                    self.upload_published(agreement, *did, hash).await?
                                }
                            };
                            algorithm_hash = Some(uploaded.algorithm_hash);
                            progress(&Step::AlgorithmUploaded { hash: uploaded.algorithm_hash });
                        }
                        "payment.lockPayment" => {
                            let a = self.lock_payment(agreement).await?;
                            progress(&Step::PaymentLocked { amount: a.escrow });
                        }
                        "compute.execute" => {
                            let view = self
                                .exec(&ExecRequest {
                                    service_agreement_id: agreement,
                                    consumer_address: self.address(),
                                    not_before: req.not_before,
                                    args: req.args.clone(),
                                })
                                .await?;
                            progress(&Step::JobQueued { job: view.job_id.clone() });
                            job = Some(view.job_id);
                        }
                        "compute.fetchResults" => {
                            let id = job.clone().ok_or_else(|| ClientError::Flow("results before a job".into()))?;
                            let payout = payout_of(&event)?;
                            let (receipt, files) = self.fetch_results(&id, &req.output_dir, &mut progress).await?;
                            check_receipt(self, &receipt, &event, algorithm_hash, &service)?;
                            fetched = Some((receipt, files, payout));
                        }
                        "payment.refunded" => {
                            return Err(ClientError::Flow(format!(
                                "the payment for agreement {agreement} was refunded"
                            )));
                        }
                        "compute.outputPublished" => {
                            output_did = event.data.get("did").and_then(|d| d.as_str()).and_then(|d| d.parse().ok());
                        }
                        _ => unreachable!("subscriptions() only keeps known handlers"),
                    }
                }
            }
            if let (Some((receipt, files, payout)), Some(_)) = (&fetched, output_did) {
                let job = self.job(job.as_deref().unwrap_or_default()).await?;
                return Ok(ComputeOutcome {
                    agreement,
                    job,
                    receipt: receipt.clone(),
                    payout: *payout,
                    output_did,
                    output_dir: req.output_dir.clone(),
                    files: files.clone(),
                });
            }
            // While the job runs, follow it; a job that ended without a payment release ends
            // the flow.
            if let (Some(id), None) = (&job, &fetched) {
                let view = self.job(id).await?;
                let status = JobStatus::from_code(view.status);
                progress(&Step::Job(Box::new(view.clone())));
                if status.is_terminal() && matches!(view.payment.as_str(), "unpaid" | "refunded") {
                    return Err(ClientError::Flow(format!(
                        "job {id} ended ({}) without the payment being released{}",
                        view.status_text,
                        view.error.map(|e| format!(": {e}")).unwrap_or_default()
                    )));
                }
            }
        }
    }

    /// Downloads every result of a job into `dir` (`outputs/`, `logs/`, `receipt.json`), and
    /// rebuilds the outputs tree exactly (directories and symlinks included).
    async fn fetch_results(
        &self,
        job: &str,
        dir: &Path,
        progress: &mut impl FnMut(&Step),
    ) -> ClientResult<(Receipt, Vec<(String, u64)>)> {
        let results = self.results(job).await?;
        progress(&Step::Downloading { files: results.results.len() });
        let outputs_dir = dir.join("outputs");
        std::fs::create_dir_all(&outputs_dir)?;
        if let Some(tree) = &results.outputs {
            recreate_tree_shape(&outputs_dir, tree)?;
        }
        let mut files = Vec::new();
        let mut receipt = None;
        // An empty file has nothing to download: it is made here (and checked like the rest).
        let empty = tidepool_runtime::tree::blake3_b256(b"");
        for r in &results.results {
            let dest = match r.kind {
                ResultKind::Output => safe_join(&outputs_dir, &r.name)?,
                ResultKind::Log => safe_join(&dir.join("logs"), &r.name)?,
                ResultKind::Receipt => dir.join("receipt.json"),
            };
            if r.kind != ResultKind::Receipt && r.size == 0 && r.hash == Some(empty) {
                if let Some(parent) = dest.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::File::create(&dest)?;
                if r.kind == ResultKind::Output {
                    files.push((r.name.clone(), 0));
                }
                continue;
            }
            match r.kind {
                ResultKind::Output => {
                    files.push((r.name.clone(), self.download(job, r.index, &dest).await?));
                }
                ResultKind::Log => {
                    self.download(job, r.index, &dest).await?;
                }
                ResultKind::Receipt => {
                    self.download(job, r.index, &dest).await?;
                    let text = std::fs::read_to_string(&dest)?;
                    receipt = Some(
                        serde_json::from_str::<Receipt>(&text)
                            .map_err(|e| ClientError::Protocol(format!("receipt: {e}")))?,
                    );
                }
            }
        }
        let receipt = receipt.ok_or_else(|| ClientError::Flow(format!("job {job} has no receipt")))?;
        // The downloaded outputs must be exactly what the receipt commits to.
        let local = tidepool_runtime::tree::scan(&outputs_dir).map_err(|e| ClientError::Flow(e.to_string()))?;
        if local.root() != receipt.outputs_root {
            return Err(ClientError::Flow(format!(
                "the downloaded outputs (root {}) are not the ones the receipt commits to ({})",
                local.root(),
                receipt.outputs_root
            )));
        }
        for (name, want) in [("stdout.log", receipt.stdout_hash), ("stderr.log", receipt.stderr_hash)] {
            let got = tidepool_runtime::tree::blake3_b256(&std::fs::read(dir.join("logs").join(name))?);
            if got != want {
                return Err(ClientError::Flow(format!("the downloaded {name} does not match the receipt")));
            }
        }
        Ok((receipt, files))
    }
}

/// Which controller a template condition belongs to.
fn controller_of(condition: &str) -> template::Controller {
    template::CONDITIONS
        .iter()
        .find(|c| c.name == condition)
        .map_or(template::Controller::EscrowReward, |c| c.controller)
}

fn payout_of(event: &KeeperEvent) -> ClientResult<Payout> {
    serde_json::from_value(event.data.clone()).map_err(|e| ClientError::Protocol(format!("PaymentReleased: {e}")))
}

/// The receipt is consistent, signed by the provider for this chain, committed on the keeper,
/// and about the algorithm we uploaded.
fn check_receipt(
    client: &Client,
    receipt: &Receipt,
    released: &KeeperEvent,
    algorithm_hash: Option<B256>,
    service: &ComputeService,
) -> ClientResult<()> {
    if !receipt.hash_is_consistent() {
        return Err(ClientError::Flow("the receipt's hash does not match its fields".into()));
    }
    verify_receipt_signature(receipt, service.provider.address, client.domain())
        .map_err(|e| ClientError::Flow(format!("the receipt's provider signature does not verify: {e}")))?;
    let committed = released.data.get("receiptHash").and_then(|h| h.as_str()).and_then(|h| h.parse::<B256>().ok());
    if committed != Some(receipt.receipt_hash) {
        return Err(ClientError::Flow("the keeper committed another receipt hash than the one downloaded".into()));
    }
    if algorithm_hash.is_some_and(|h| h != receipt.algorithm_hash) {
        return Err(ClientError::Flow("the receipt is about another algorithm than the one uploaded".into()));
    }
    Ok(())
}

fn prepare_output_dir(dir: &Path) -> ClientResult<()> {
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        return Err(ClientError::Flow(format!(
            "{} is not empty; refusing to mix results with existing files",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir)?;
    Ok(())
}

/// `base/relative`, refusing anything that would leave `base`.
fn safe_join(base: &Path, relative: &str) -> ClientResult<PathBuf> {
    crate::assets::check_path(relative)
        .map_err(|e| ClientError::Protocol(format!("the provider sent a bad result path: {e}")))?;
    Ok(base.join(relative))
}

/// Creates the directories and symlinks of an outputs tree. Symlinks must point down (as the
/// runtime makes guests' links): one that could lead out of the outputs is refused.
fn recreate_tree_shape(base: &Path, tree: &Tree) -> ClientResult<()> {
    for e in &tree.entries {
        match &e.kind {
            EntryKind::Dir => std::fs::create_dir_all(safe_join(base, &e.path)?)?,
            EntryKind::Symlink { target } => {
                let link = safe_join(base, &e.path)?;
                if !tidepool_runtime::tree::points_down(target) {
                    return Err(ClientError::Protocol(format!("the outputs hold a symlink leaving them: {}", e.path)));
                }
                std::os::unix::fs::symlink(target, link)?;
            }
            EntryKind::File { .. } => {}
        }
    }
    Ok(())
}
