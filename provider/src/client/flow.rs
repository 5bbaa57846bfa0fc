//! The whole consumer flow in one call: initialize → upload and lock (on `ExecuteAgreement`) →
//! exec (on `ComputeGranted`) → follow the job → download and check the results (on
//! `PaymentReleased`) → the output asset (on `OutputPublished`).
//!
//! The client reacts to keeper events the way the DDO's `serviceAgreementContract.events`
//! mapping describes for `actorType: consumer`: every handler named there must be one this
//! client knows, or the flow refuses to start. Events are read from the keeper's log, filtered by
//! the agreement id.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use alloy_primitives::{Address, B256, U256};
use tidepool_runtime::Receipt;

use super::results::{check_receipt, prepare_output_dir};
use super::{Client, ClientError, ClientResult};
use crate::protocol::agreement::Payout;
use crate::protocol::api::{ExecRequest, InitializeRequest, JobView};
use crate::protocol::ddo::{ComputeService, Ddo, Did};
use crate::protocol::events::{AgreementEvent, EventName};
use crate::protocol::handlers::{Actor, Handler};
use crate::protocol::signing::sign_typed;
use crate::protocol::states::PaymentState;
use crate::protocol::template::{self, Terms};

/// The algorithm to run.
#[derive(Debug, Clone)]
pub enum AlgorithmChoice {
    /// A module's bytes, and the name it runs under.
    Module(Vec<u8>, String),
    /// Files for an environment the provider offers (Python...).
    Files(FilesAlgorithm),
    /// A published algorithm.
    Published(Did),
}

/// An algorithm for an environment, packed for a provider: the environment's name, the name it
/// runs under, its files as a canonical archive (`tidepool-files-v1`) and their tree root,
/// which is the `algorithmHash` the consumer signs and the receipt's `algorithm_hash`.
#[derive(Debug, Clone)]
pub struct FilesAlgorithm {
    /// The environment's name (a plain name, e.g. `python`).
    pub environment: String,
    /// The name the algorithm runs under.
    pub name: String,
    /// The files as a canonical `tidepool-files-v1` archive.
    pub archive: Vec<u8>,
    /// The files' tree root: the hash the consumer signs.
    pub algorithm_hash: B256,
}

impl FilesAlgorithm {
    /// Packs an environment algorithm (as `tidepool run` loads it); `None` for a module.
    pub fn pack(algorithm: &tidepool_runtime::Algorithm) -> Option<Self> {
        let (environment, files) = (algorithm.environment()?, algorithm.files()?);
        Some(Self {
            environment: environment.name().to_string(),
            name: algorithm.name.clone(),
            archive: files.to_archive(),
            algorithm_hash: files.root(),
        })
    }
}

/// What to run, where, and how long to wait.
#[derive(Debug, Clone)]
pub struct ComputeRequest {
    /// The dataset asset whose Computing service runs the job.
    pub did: Did,
    /// The algorithm to run.
    pub algorithm: AlgorithmChoice,
    /// Arguments for the algorithm, after its inputs and outputs directories.
    pub args: Vec<String>,
    /// Do not start before this time (Unix seconds); `None`: as soon as possible.
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
    /// The agreement was created on the keeper.
    Initialized {
        /// The agreement's id.
        agreement: B256,
    },
    /// A keeper event of the agreement arrived.
    Event(EventName),
    /// The provider accepted the algorithm.
    AlgorithmUploaded {
        /// The algorithm's hash (its module's BLAKE3, or its files' tree root).
        hash: B256,
    },
    /// The payment is locked in escrow.
    PaymentLocked {
        /// The amount locked, in token base units.
        amount: U256,
    },
    /// The provider queued the job.
    JobQueued {
        /// The job's id.
        job: String,
    },
    /// The job as last polled (while it runs).
    Job(Box<JobView>),
    /// The results are being downloaded.
    Downloading {
        /// How many result files.
        files: usize,
    },
}

/// What the flow produced.
#[derive(Debug, Clone)]
pub struct ComputeOutcome {
    /// The agreement's id.
    pub agreement: B256,
    /// The job as it ended.
    pub job: JobView,
    /// The receipt, checked: signed by the provider, committed on the keeper, its outputs the
    /// downloaded files.
    pub receipt: Receipt,
    /// How the payment was split (from `PaymentReleased`).
    pub payout: Payout,
    /// The DID of the asset the provider published from the outputs (always set: the flow
    /// waits for `OutputPublished`).
    pub output_did: Option<Did>,
    /// Where the results were downloaded (the request's `output_dir`).
    pub output_dir: PathBuf,
    /// Output files, relative to `output_dir/outputs`, with their sizes in bytes.
    pub files: Vec<(String, u64)>,
}

/// The downloaded and checked results: the receipt, the output files, the payment split, and
/// the job as the provider showed it with them.
type Fetched = (Receipt, Vec<(String, u64)>, Payout, Option<JobView>);

/// The consumer handlers this client runs.
const CONSUMER_HANDLERS: &[Handler] = &[
    Handler::UploadAlgorithm,
    Handler::LockPayment,
    Handler::Execute,
    Handler::FetchResults,
    Handler::Refunded,
    Handler::OutputPublished,
];

/// The consumer's subscriptions from a service's event mapping; refuses unknown handlers.
fn subscriptions(service: &ComputeService) -> ClientResult<BTreeMap<EventName, Vec<Handler>>> {
    let mut subs: BTreeMap<EventName, Vec<Handler>> = BTreeMap::new();
    for e in &service.service_agreement_contract.events {
        if e.actor_type != Actor::Consumer {
            continue;
        }
        let handler = Handler::of(&e.handler).filter(|h| CONSUMER_HANDLERS.contains(h)).ok_or_else(|| {
            ClientError::Flow(format!(
                "the DDO asks consumers to run `{}` on {}, which this client does not know",
                e.handler.key(),
                e.name
            ))
        })?;
        subs.entry(e.name).or_default().push(handler);
    }
    Ok(subs)
}

/// A DDO's Computing service as a consumer checked it, with what the flow needs of it.
#[derive(Debug, Clone)]
pub struct CheckedService {
    /// The Computing service.
    pub service: ComputeService,
    /// The consumer handlers to run on each event.
    pub subscriptions: BTreeMap<EventName, Vec<Handler>>,
    /// The terms `consumer` would sign.
    pub terms: Terms,
}

/// Checks the DDO a provider gave for `did` (a stranger's document) before `consumer` signs
/// anything for it: the asset asked for, a Computing service `1` served by `provider`, consumer
/// handlers this client knows, and conditions that are exactly the template's on the
/// controllers the DDO names.
pub fn check_ddo(ddo: &Ddo, did: Did, provider: Address, consumer: Address) -> ClientResult<CheckedService> {
    if ddo.id != did {
        return Err(ClientError::Flow(format!("asked for the DDO of {did}, the provider sent {}'s", ddo.id)));
    }
    let service =
        ddo.compute_service("1").ok_or_else(|| ClientError::Flow(format!("{did} offers no Computing service")))?;
    if service.provider.address != provider {
        return Err(ClientError::Flow("the asset is served by another provider than the one connected".into()));
    }
    let subscriptions = subscriptions(service)?;
    let terms = Terms::of(did, service, consumer);
    let controllers = template::Controllers(
        service.conditions.iter().map(|c| (c.name.def().controller, c.contract_address)).collect(),
    );
    template::check_conditions(service.template_id, &service.conditions, &controllers, &terms)
        .map_err(|e| ClientError::Flow(format!("the DDO's agreement does not match the template: {e}")))?;
    Ok(CheckedService { service: service.clone(), subscriptions, terms })
}

impl Client {
    /// Runs the whole consumer flow on `req.did`'s Computing service. `progress` sees each step.
    pub async fn compute(&self, req: &ComputeRequest, mut progress: impl FnMut(&Step)) -> ClientResult<ComputeOutcome> {
        prepare_output_dir(&req.output_dir)?;
        let ddo = self.ddo(req.did).await?;
        // Check the DDO before signing anything: its conditions must be the template's.
        let CheckedService { service, subscriptions: subs, terms } =
            check_ddo(&ddo, req.did, self.provider().address, self.address())?;
        if let AlgorithmChoice::Files(files) = &req.algorithm
            && !self.provider().environments.iter().any(|e| e.name == files.environment)
        {
            let offered: Vec<&str> = self.provider().environments.iter().map(|e| e.name.as_str()).collect();
            return Err(ClientError::Flow(format!(
                "the provider does not offer the environment `{}` (it offers: {})",
                files.environment,
                if offered.is_empty() { "modules only".to_string() } else { offered.join(", ") }
            )));
        }

        let agreement = B256::random();
        let signed = template::agreement_struct(agreement, &service.conditions, &terms);
        let signature = sign_typed(self.signer(), &self.agreement_domain(), &signed);
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
        // The provider answers once an event the consumer acts on is there.
        let until: Vec<EventName> = subs.keys().copied().collect();
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
            let events = self.wait_for_events(cursor, Some(agreement), wait, &until).await?;
            let heard = !events.is_empty();
            for event in events {
                cursor = event.id;
                progress(&Step::Event(event.name()));
                for handler in subs.get(&event.name()).into_iter().flatten() {
                    match handler {
                        Handler::UploadAlgorithm => {
                            let uploaded = match &req.algorithm {
                                AlgorithmChoice::Module(bytes, name) => {
                                    self.upload_module(agreement, bytes, name).await?
                                }
                                AlgorithmChoice::Files(files) => self.upload_files(agreement, files).await?,
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
                        Handler::LockPayment => {
                            let a = self.lock_payment(agreement).await?;
                            progress(&Step::PaymentLocked { amount: a.escrow });
                        }
                        Handler::Execute => {
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
                        Handler::FetchResults => {
                            let id = job.clone().ok_or_else(|| ClientError::Flow("results before a job".into()))?;
                            let AgreementEvent::PaymentReleased(released) = &event.event else {
                                return Err(ClientError::Protocol(format!(
                                    "the DDO maps {} to fetching results",
                                    event.name()
                                )));
                            };
                            let payout = Payout {
                                provider_amount: released.providerAmount,
                                consumer_refund: released.consumerRefund,
                            };
                            let (receipt, files, shown) =
                                self.fetch_results(&id, &req.output_dir, &mut progress).await?;
                            check_receipt(self, &receipt, released, algorithm_hash, &service)?;
                            fetched = Some((receipt, files, payout, shown));
                        }
                        Handler::Refunded => {
                            return Err(ClientError::Flow(format!(
                                "the payment for agreement {agreement} was refunded"
                            )));
                        }
                        Handler::OutputPublished => {
                            if let AgreementEvent::OutputPublished(published) = &event.event {
                                output_did = Some(Did(published.outputDid));
                            }
                        }
                        Handler::GrantCompute => {
                            return Err(ClientError::Flow("the provider's handler is not the consumer's".into()));
                        }
                    }
                }
            }
            if let (Some((receipt, files, payout, shown)), Some(did)) = (&fetched, output_did) {
                // The job as the results showed it, with what the keeper's events said since:
                // the payment released, the output asset published (a provider that did not
                // show it is asked).
                let job = match shown {
                    Some(shown) => JobView { output_did: Some(did), payment: PaymentState::Released, ..shown.clone() },
                    None => self.job(job.as_deref().unwrap_or_default()).await?,
                };
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
            // While the job runs and no event comes, follow it; a job that ended without a
            // payment release ends the flow.
            if let (Some(id), None, false) = (&job, &fetched, heard) {
                let view = self.job(id).await?;
                progress(&Step::Job(Box::new(view.clone())));
                if view.status.is_terminal() && matches!(view.payment, PaymentState::Unpaid | PaymentState::Refunded) {
                    return Err(ClientError::Flow(format!(
                        "job {id} ended ({}) without the payment being released{}",
                        view.status_text,
                        view.error.map(|e| format!(": {e}")).unwrap_or_default()
                    )));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assets::{Offer, computing_service};
    use crate::protocol::ddo::{AlgorithmPolicy, Environment, PublicKey, Service};
    use crate::protocol::template::tests::{controllers, terms};

    /// A dataset's DDO as the provider publishes it.
    fn published() -> Ddo {
        let (controllers, terms) = (controllers(), terms());
        let offer =
            Offer { base_url: "http://provider", chain_id: 1337, keeper: "embedded", controllers: &controllers };
        let environment = Environment {
            runtime: "wasmtime".into(),
            runtime_version: "0".into(),
            tidepool_version: "0".into(),
            max_fuel: terms.max_fuel,
            memory_bytes: 1,
            timeout_ms: 1,
            output_bytes: 1,
            output_files: 1,
            offers: Vec::new(),
        };
        let service = computing_service(offer, &terms, environment, AlgorithmPolicy::Any, &BTreeMap::new());
        Ddo {
            context: "https://w3id.org/did/v1".into(),
            id: terms.did,
            created: 0,
            public_key: vec![PublicKey { id: "owner".into(), kind: "EthereumECDSAKey".into(), owner: terms.provider }],
            metadata: serde_json::from_value(serde_json::json!({"name": "d", "type": "dataset", "datasets": []}))
                .unwrap(),
            service: vec![Service::Computing(Box::new(service))],
        }
    }

    #[test]
    fn a_published_ddo_passes_the_consumers_check_and_a_changed_one_does_not() {
        let (ddo, t) = (published(), terms());
        let checked = check_ddo(&ddo, t.did, t.provider, t.consumer).unwrap();
        assert_eq!(checked.terms, t);
        assert!(!checked.subscriptions.is_empty(), "the consumer runs handlers");

        let refused = |ddo: &Ddo, did: Did, provider: Address, what: &str| {
            let r = check_ddo(ddo, did, provider, t.consumer);
            assert!(matches!(r, Err(ClientError::Flow(ref m)) if m.contains(what)), "{what}: {r:?}");
        };
        refused(&ddo, Did(B256::repeat_byte(1)), t.provider, "the provider sent");
        refused(&ddo, t.did, Address::repeat_byte(1), "another provider");
        let mut cheaper = ddo.clone();
        if let Service::Computing(c) = &mut cheaper.service[0] {
            c.price_per_fuel = U256::ZERO;
        }
        refused(&cheaper, t.did, t.provider, "does not match the template");
        let mut unknown = ddo.clone();
        if let Service::Computing(c) = &mut unknown.service[0] {
            let consumer = c.service_agreement_contract.events.iter_mut().find(|e| e.actor_type == Actor::Consumer);
            consumer.unwrap().handler.function_name = "somethingElse".into();
        }
        refused(&unknown, t.did, t.provider, "does not know");
        refused(&Ddo { service: Vec::new(), ..ddo }, t.did, t.provider, "no Computing service");
    }
}
