//! Re-executing a receipt: the auditor's yes or precise no.
//!
//! The algorithm given must come with the environment that runs it (a module is its own). When
//! that environment is not the one the receipt records (another module, argv, variables or
//! mounts), the job cannot be re-executed as it ran: the differing `environment.*` fields are
//! the answer, and nothing is run.

use std::path::PathBuf;

use crate::Runtime;
use crate::engine::Semantics;
use crate::error::{Error, Result};
use crate::job::{Algorithm, InputSpec, JobSpec};
use crate::receipt::{FieldDiff, RECEIPT_VERSION, Receipt};
use crate::tree;

/// What to check a receipt against.
#[derive(Clone, Debug)]
pub struct VerifyRequest {
    /// The receipt to check: its hash, then a re-execution against its fields.
    pub receipt: Receipt,
    /// The algorithm, with its environment (see [`Environment::load_algorithm`](crate::Environment::load_algorithm)).
    pub algorithm: Algorithm,
    /// The input datasets, named as in the receipt.
    pub inputs: Vec<InputSpec>,
    /// Outputs someone claims the job produced, checked against the receipt and the rerun.
    pub claimed_outputs: Option<PathBuf>,
}

/// The verdict, with every reason for a "no".
#[derive(Clone, Debug)]
pub struct VerifyReport {
    /// Hashed fields where the given receipt and the re-execution disagree.
    pub mismatches: Vec<FieldDiff>,
    /// How the claimed outputs differ from the re-executed ones (path by path).
    pub output_mismatches: Vec<String>,
    /// Why the receipt could be neither confirmed nor refuted (a re-execution that timed out
    /// while the receipt claims a deterministic outcome): no "yes", but no proven "no" either.
    pub unconfirmed: Vec<String>,
    /// Things worth knowing that do not make the verdict (e.g. a timeout receipt).
    pub notes: Vec<String>,
    /// The receipt the re-execution produced; `None` when the job was not re-executed because
    /// the environment given is not the receipt's.
    pub rerun: Option<Receipt>,
}

impl VerifyReport {
    fn not_rerun(mismatches: Vec<FieldDiff>, notes: Vec<String>) -> Self {
        VerifyReport { mismatches, output_mismatches: Vec::new(), unconfirmed: Vec::new(), notes, rerun: None }
    }

    /// True when something in the receipt is shown wrong.
    fn refuted(&self) -> bool {
        !self.mismatches.is_empty() || !self.output_mismatches.is_empty()
    }

    /// True when the receipt is confirmed.
    pub fn verified(&self) -> bool {
        !self.refuted() && self.unconfirmed.is_empty()
    }

    /// True when nothing refutes the receipt but it could not be confirmed either.
    pub fn inconclusive(&self) -> bool {
        !self.refuted() && !self.unconfirmed.is_empty()
    }
}

/// Fields that depend on wall time when a job timed out or was stopped: not comparable then.
const TIMING_DEPENDENT: &[&str] = &[
    "outcome",
    "fuel_consumed",
    "outputs_root",
    "stdout_hash",
    "stdout_len",
    "stderr_hash",
    "stderr_len",
    "deterministic",
];

impl Runtime {
    /// Re-executes `req.receipt`'s job under its limits, seed and arguments, and compares.
    pub fn verify(&self, req: &VerifyRequest) -> Result<VerifyReport> {
        let claimed = &req.receipt;
        let mut mismatches = Vec::new();
        let mut notes = Vec::new();
        if !claimed.hash_is_consistent() {
            mismatches.push(FieldDiff {
                field: "receipt_hash".into(),
                expected: claimed.compute_hash().to_string(),
                actual: format!("{} (does not match the receipt's own fields: it was altered)", claimed.receipt_hash),
            });
        }
        if claimed.version > RECEIPT_VERSION || claimed.version == 0 {
            return Err(Error::InvalidJob {
                reason: format!(
                    "receipt version {} is not one this verifier knows (1 to {RECEIPT_VERSION}); a newer tidepool made it",
                    claimed.version
                ),
            });
        }
        // Version 1 had no environment (its hash cannot cover one); version 2 hashes it and a
        // receipt of that version without one is not well formed, whatever its hash says.
        match (claimed.version, &claimed.environment) {
            (1, Some(env)) => mismatches.push(FieldDiff {
                field: "environment".into(),
                expected: "(absent: version-1 receipts have none)".into(),
                actual: format!("`{}` (not covered by a version-1 hash)", env.name),
            }),
            (2.., None) => mismatches.push(FieldDiff {
                field: "environment".into(),
                expected: format!("(present in a version-{} receipt)", claimed.version),
                actual: "(absent)".into(),
            }),
            _ => {}
        }
        if mismatches.iter().any(|d| d.field == "environment") {
            return Ok(VerifyReport::not_rerun(mismatches, notes));
        }
        // The receipt names its engine: version-1 receipts were made by the legacy engine, and
        // are re-executed and compared in version 1.
        let semantics = if claimed.version == 1 { Semantics::Legacy } else { Semantics::V2 };
        if claimed.version != RECEIPT_VERSION {
            notes.push(format!(
                "receipt version {} (this runtime writes version {RECEIPT_VERSION}); the re-execution is compared in \
                 version {}, on the engine that version names",
                claimed.version, claimed.version
            ));
        }
        let stack = match semantics {
            Semantics::Legacy => claimed.limits.max_wasm_stack,
            Semantics::V2 => claimed.limits.max_stack_height,
        };
        let engine_hash = self.engine_hash(semantics, stack);
        if engine_hash != claimed.runtime.engine_config_hash {
            notes.push(match semantics {
                Semantics::Legacy => format!(
                    "the receipt names engine {}, which this verifier cannot make: version-1 receipts name the \
                     architecture and the settings of the engine that made them (this {} verifier's legacy engine \
                     is {engine_hash}); re-execute it with the tidepool release that made it, on the same \
                     architecture",
                    claimed.runtime.engine_config_hash,
                    std::env::consts::ARCH,
                ),
                Semantics::V2 => format!(
                    "the receipt names engine {}, not this verifier's {engine_hash} (another tidepool release or \
                     non-production settings); re-execute it with the release and settings that made it",
                    claimed.runtime.engine_config_hash,
                ),
            });
        }
        if claimed.runtime.tidepool_version != crate::VERSION {
            notes.push(format!(
                "the receipt was made by tidepool {}, this is {}: fuel figures may legitimately differ",
                claimed.runtime.tidepool_version,
                crate::VERSION
            ));
        }

        let mut algorithm = req.algorithm.clone();
        algorithm.name = claimed.algorithm_name.clone();
        let claimed_env = claimed.environment();
        let given_env = algorithm.environment_info();
        if claimed_env != given_env {
            let as_receipt = |environment| Receipt { environment: Some(environment), ..claimed.clone() };
            mismatches.extend(as_receipt(claimed_env.clone()).diff(&as_receipt(given_env.clone())));
            notes.push(format!(
                "the receipt's job ran in the environment `{}` (module {}); the one given is `{}` (module {}): the job \
                 cannot be re-executed as it ran, so it was not",
                claimed_env.name, claimed_env.module_hash, given_env.name, given_env.module_hash
            ));
            return Ok(VerifyReport::not_rerun(mismatches, notes));
        }
        // What defines the job is checked before anything runs: another module, or limits no
        // runtime would have run under, is a precise no without a re-execution (which could
        // only fail to start, or run something else).
        let given_hash = algorithm.hash();
        if given_hash != claimed.algorithm_hash {
            mismatches.push(FieldDiff {
                field: "algorithm_hash".into(),
                expected: claimed.algorithm_hash.to_string(),
                actual: format!("{given_hash} (the algorithm given)"),
            });
        }
        if let Err(e) = claimed.limits.validate() {
            mismatches.push(FieldDiff {
                field: "limits".into(),
                expected: "limits a job can run under".into(),
                actual: e.to_string(),
            });
        }
        if !mismatches.iter().all(|d| d.field == "receipt_hash") {
            notes.push("the job the receipt describes is not the one given, so it was not re-executed".into());
            return Ok(VerifyReport::not_rerun(mismatches, notes));
        }

        let scratch = tempfile::tempdir().map_err(Error::io("creating a directory for the re-execution"))?;
        let spec = JobSpec {
            algorithm,
            inputs: req.inputs.clone(),
            output_dir: scratch.path().join("outputs"),
            args: claimed.args.clone(),
            limits: claimed.limits.clone(),
            seed: Some(claimed.seed),
            events: None,
            cancel: None,
        };
        let rerun = self.run_with(&spec, semantics)?;

        // A receipt whose outcome depended on wall time (a timeout, a stop) can only be checked
        // for what defines the job. Its `deterministic` flag is hashed but follows from its
        // outcome: a receipt that says otherwise is refuted, never taken at its word (else a
        // forged `deterministic: false` would excuse every result field from comparison).
        let claimed_deterministic = claimed.outcome.is_deterministic();
        if claimed.deterministic != claimed_deterministic {
            mismatches.push(FieldDiff {
                field: "deterministic".into(),
                expected: format!("{claimed_deterministic} (the receipt's outcome, {}, says so)", claimed.outcome),
                actual: claimed.deterministic.to_string(),
            });
        }
        let rerun_deterministic = rerun.receipt.outcome.is_deterministic();
        let comparable = claimed_deterministic && rerun_deterministic;
        for d in claimed.diff(&rerun.receipt) {
            let timing = TIMING_DEPENDENT.iter().any(|f| d.field == *f || d.field.starts_with(&format!("{f}.")));
            if !comparable && timing {
                continue;
            }
            mismatches.push(d);
        }
        let mut unconfirmed = Vec::new();
        if claimed_deterministic && !rerun_deterministic {
            unconfirmed.push(format!(
                "the receipt claims a deterministic outcome ({}), but the re-execution {} before it ended, so its \
                 results could not be compared: re-execute on a machine fast enough to finish within the receipt's \
                 timeout of {} ms",
                claimed.outcome, rerun.receipt.outcome, claimed.limits.timeout_ms
            ));
        } else if !comparable {
            notes.push(format!(
                "the receipt's outcome ({}) depends on wall time, so only what defines the job (algorithm, inputs, \
                 arguments, limits, seed, runtime) was compared",
                claimed.outcome
            ));
        }

        let mut output_mismatches = Vec::new();
        if let Some(dir) = &req.claimed_outputs {
            match tree::scan(dir) {
                Ok(claimed_tree) => {
                    if claimed_tree.root() != claimed.outputs_root {
                        output_mismatches.push(format!(
                            "the claimed outputs' root {} is not the receipt's outputs_root {}",
                            claimed_tree.root(),
                            claimed.outputs_root
                        ));
                    }
                    output_mismatches.extend(tree::diff(&rerun.outputs, &claimed_tree));
                }
                Err(e) => output_mismatches.push(format!("cannot read the claimed outputs: {e}")),
            }
        }
        Ok(VerifyReport { mismatches, output_mismatches, unconfirmed, notes, rerun: Some(rerun.receipt) })
    }
}
