//! `tidepool verify`: re-execute a receipt's job and say yes, or precisely why not.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use tidepool_runtime::{Receipt, VerifyRequest};

use super::args::InputArg;
use super::run::{CacheArgs, EnvironmentArgs, load_algorithm};

/// `tidepool verify RECEIPT.json --algorithm ALGORITHM [--input NAME=DIR]... [--outputs DIR]`
#[derive(Debug, clap::Args)]
#[command(after_help = "Exit status: 0 the receipt is confirmed; 1 it is not (the differing fields are \
                        listed); 2 it could not be checked.")]
pub struct VerifyArgs {
    /// The receipt to check.
    pub receipt: PathBuf,
    /// The algorithm the receipt claims was run: its module, or its script or directory (run
    /// in the environment the receipt names, which must be installed).
    #[arg(long, value_name = "FILE|DIR")]
    pub algorithm: PathBuf,
    #[command(flatten)]
    pub environments: EnvironmentArgs,
    /// A dataset, as it was mounted in the job (repeatable).
    #[arg(long = "input", value_name = "NAME=DIR")]
    pub inputs: Vec<InputArg>,
    /// Outputs claimed to come from the job: checked against the receipt and the re-execution.
    #[arg(long, value_name = "DIR")]
    pub outputs: Option<PathBuf>,
    #[command(flatten)]
    pub cache: CacheArgs,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Also check that this receipt is the one committed on chain for the agreement
    /// (with --chain-rpc and --contracts).
    #[arg(long, value_name = "ID", requires = "rpc")]
    pub agreement: Option<alloy_primitives::B256>,
    #[command(flatten)]
    pub chain: super::serve::ChainArgs,
}

/// What the chain says of the receipt: `None` when no chain check was asked for; else whether
/// the hash committed for the agreement is the receipt's, and what was committed.
fn committed(args: &VerifyArgs, receipt: &Receipt) -> anyhow::Result<Option<(bool, Option<alloy_primitives::B256>)>> {
    let (Some(agreement), Some((rpc, contracts))) = (args.agreement, args.chain.chain()?) else { return Ok(None) };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let on_chain = rt.block_on(async {
        let chain = tidepool_chain::Chain::connect(&rpc, contracts, tidepool_chain::ChainConfig::default()).await?;
        chain.receipt_hash(agreement).await
    });
    let on_chain = on_chain.with_context(|| format!("reading agreement {agreement} on {rpc}"))?;
    Ok(Some((on_chain == Some(receipt.receipt_hash), on_chain)))
}

pub fn run(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.receipt).with_context(|| format!("reading {}", args.receipt.display()))?;
    let receipt: Receipt =
        serde_json::from_str(&text).with_context(|| format!("{} is not a Tidepool receipt", args.receipt.display()))?;
    let environment = receipt.environment();
    let algorithm =
        load_algorithm(&args.algorithm, Some(&environment.name), &args.environments, receipt.limits.module_bytes)
            .with_context(|| format!("loading the algorithm for the receipt's environment `{}`", environment.name))?;
    let mut given: Vec<&str> = args.inputs.iter().map(|i| i.name.as_str()).collect();
    given.sort_unstable();
    let expected: Vec<&str> = receipt.inputs.iter().map(|i| i.name.as_str()).collect();
    if given != expected && !args.json {
        eprintln!("note: the receipt's inputs are [{}], you gave [{}]", expected.join(", "), given.join(", "));
    }
    let runtime = args.cache.runtime();
    let report = runtime
        .verify(&VerifyRequest {
            receipt: receipt.clone(),
            algorithm,
            inputs: args.inputs.iter().cloned().map(Into::into).collect(),
            claimed_outputs: args.outputs.clone(),
        })
        .context("could not re-execute the job")?;
    let chain = committed(&args, &receipt)?;
    let on_chain_ok = chain.is_none_or(|(same, _)| same);
    let verified = report.verified() && on_chain_ok;
    let inconclusive = report.inconclusive() && on_chain_ok;

    if args.json {
        let json = serde_json::json!({
            "verified": verified,
            "receipt_hash": receipt.receipt_hash,
            "committed_on_chain": chain.map(|(same, hash)| serde_json::json!({
                "agreement": args.agreement, "receipt_hash": hash, "matches": same,
            })),
            "mismatches": report.mismatches.iter().map(|d| serde_json::json!({
                "field": d.field, "expected": d.expected, "actual": d.actual,
            })).collect::<Vec<_>>(),
            "output_mismatches": report.output_mismatches,
            "inconclusive": report.unconfirmed,
            "notes": report.notes,
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        for note in &report.notes {
            eprintln!("note: {note}");
        }
        if verified {
            println!(
                "verified: {} re-executes to the same receipt ({} {}, fuel {}{}{})",
                receipt.receipt_hash,
                receipt.algorithm_name,
                receipt.outcome,
                super::run::group(receipt.fuel_consumed),
                if args.outputs.is_some() { "; the outputs match" } else { "" },
                if chain.is_some() { "; it is the hash committed on chain" } else { "" },
            );
        } else if inconclusive {
            println!("could not be checked: {}", receipt.receipt_hash);
            for u in &report.unconfirmed {
                println!("  {u}");
            }
        } else {
            println!("NOT verified: {}", receipt.receipt_hash);
            for d in &report.mismatches {
                println!("  {d}");
            }
            for m in &report.output_mismatches {
                println!("  outputs: {m}");
            }
            if let (Some((false, hash)), Some(agreement)) = (chain, args.agreement) {
                match hash {
                    Some(hash) => println!("  on chain: agreement {agreement} committed {hash}, not this receipt"),
                    None => println!("  on chain: agreement {agreement} has no receipt committed"),
                }
            }
        }
    }
    Ok(match (verified, inconclusive) {
        (true, _) => ExitCode::SUCCESS,
        (false, true) => ExitCode::from(2),
        (false, false) => ExitCode::from(1),
    })
}
