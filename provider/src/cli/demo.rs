//! `tidepool demo`: the whole story on one machine. An embedded provider on a loopback port
//! with a temporary data directory publishes a bundled sample dataset; a consumer runs an
//! example algorithm on it through the real HTTP flow; then an auditor re-executes the receipt.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use alloy_primitives::U256;
use alloy_signer_local::PrivateKeySigner;
use anyhow::{Context, Result};
use tidepool_runtime::{Algorithm, InputSpec, Runtime, RuntimeConfig, VerifyRequest};

use super::compute::{FlowDisplay, print_outcome};
use crate::client::Client;
use crate::client::flow::{AlgorithmChoice, ComputeRequest};
use crate::config::ProviderConfig;
use crate::protocol::api::{PublishRequest, ServiceLimits};
use crate::protocol::ddo::AssetKind;

/// The bundled sample dataset (`examples/data/books`).
const BOOKS: &[(&str, &[u8])] = &[
    ("moby-dick.txt", include_bytes!("../../../examples/data/books/moby-dick.txt")),
    ("pride-and-prejudice.txt", include_bytes!("../../../examples/data/books/pride-and-prejudice.txt")),
    ("tale-of-two-cities.txt", include_bytes!("../../../examples/data/books/tale-of-two-cities.txt")),
];

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// The algorithm to run (the word-frequency example).
    #[arg(long, default_value = "target/wasm32-wasip1/release/wordfreq.wasm", value_name = "FILE")]
    pub algorithm: PathBuf,
    /// Keep everything (provider data, results) in this directory instead of a temporary one.
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,
    /// Run the agreement on a local chain (an anvil it starts itself): deploy the contracts,
    /// register the dataset, lock the payment from the consumer's wallet, and read the
    /// receipt's hash back from the chain.
    #[arg(long)]
    pub chain: bool,
    /// The anvil binary for --chain [default: the one scripts/setup.sh installs].
    #[arg(long, value_name = "FILE", requires = "chain")]
    pub anvil: Option<PathBuf>,
}

/// The local chain of `--chain`: anvil, the deployed contracts, and the demo's two parties'
/// development keys (public test keys).
struct LocalChain {
    _anvil: tidepool_chain::anvil::Anvil,
    rpc: String,
    contracts: tidepool_chain::Contracts,
    contracts_file: PathBuf,
    provider: PrivateKeySigner,
    consumer: PrivateKeySigner,
}

async fn local_chain(args: &DemoArgs, work: &Path) -> Result<LocalChain> {
    use tidepool_chain::anvil::{Anvil, default_binary, dev_key};
    let binary = args.anvil.clone().unwrap_or_else(default_binary);
    let anvil = Anvil::spawn_binary(&binary).await.context("starting anvil (run scripts/setup.sh to install it)")?;
    let rpc = anvil.endpoint().to_string();
    // The provider deploys (and so mints the test token for the faucet); both are anvil's
    // funded development accounts, so each pays its own gas.
    let (provider, consumer) = (dev_key(0)?, dev_key(1)?);
    let (contracts, report) = tidepool_chain::deploy(&rpc, provider.clone(), Default::default()).await?;
    let contracts_file = work.join("contracts.json");
    contracts.write(&contracts_file)?;
    eprintln!(
        "anvil at {rpc} (chain {}); contracts deployed ({} gas), agreement store {}",
        contracts.chain_id,
        report.steps.iter().map(|(_, g)| g).sum::<u64>(),
        contracts.agreement_store
    );
    Ok(LocalChain { _anvil: anvil, rpc, contracts, contracts_file, provider, consumer })
}

fn heading(n: u32, text: &str) {
    eprintln!("\n== {n}. {text}");
}

pub async fn run(args: DemoArgs) -> Result<ExitCode> {
    let module = std::fs::read(&args.algorithm).with_context(|| {
        format!(
            "reading the example algorithm {}; build it with `cargo build --release --target wasm32-wasip1 \
             -p tidepool-example-wordfreq` (./scripts/demo.sh does everything)",
            args.algorithm.display()
        )
    })?;
    let temp;
    let work: &Path = match &args.keep {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            dir
        }
        None => {
            temp = tempfile::Builder::new().prefix("tidepool-demo-").tempdir()?;
            temp.path()
        }
    };
    let books = work.join("books");
    std::fs::create_dir_all(&books)?;
    for (name, bytes) in BOOKS {
        std::fs::write(books.join(name), bytes)?;
    }

    let chain = if args.chain {
        heading(0, "a local chain: anvil, and the agreement contracts deployed on it");
        Some(local_chain(&args, work).await?)
    } else {
        None
    };
    heading(
        1,
        if chain.is_some() {
            "a provider starts: EVM keeper, SQLite, loopback HTTP"
        } else {
            "a provider starts: embedded keeper, SQLite, loopback HTTP"
        },
    );
    let mut config = ProviderConfig {
        data_dir: work.join("provider"),
        listen: ([127, 0, 0, 1], 0).into(),
        dev_faucet: true,
        max_concurrent_jobs: 2,
        ..ProviderConfig::default()
    };
    if let Some(c) = &chain {
        let key_file = work.join("provider.key");
        if !key_file.exists() {
            crate::keys::save(&key_file, &c.provider)?;
        }
        config.key_file = Some(key_file);
        config.chain_rpc = Some(c.rpc.clone());
        config.contracts = Some(c.contracts_file.clone());
    }
    let (provider, listener) = super::serve::start(config).await?;
    let base = provider.config().base_url();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::http::serve(provider.api(), listener, async {
        let _ = stop_rx.await;
    }));
    eprintln!("provider {} at {base} (data in {})", provider.address(), provider.config().data_dir.display());

    heading(2, "the operator publishes the bundled dataset");
    let operator = Client::connect(&base, provider.signer().clone()).await?;
    let published = operator
        .publish_dirs(
            &[("books".to_string(), books.clone())],
            &PublishRequest {
                name: "Opening lines of three novels".into(),
                description: "Dickens, Austen and Melville, public domain".into(),
                author: "Tidepool demo".into(),
                license: "public domain".into(),
                kind: AssetKind::Dataset,
                price_per_fuel: Some(U256::from(1)),
                limits: ServiceLimits { max_fuel: Some(5_000_000_000), ..ServiceLimits::default() },
                trusted_algorithms: None,
                timeouts: Default::default(),
                environment: None,
            },
        )
        .await?;
    let info = &published.ddo.metadata.datasets[0];
    eprintln!("published {} ({} files, tree root {})", published.did, info.files, info.root);

    heading(3, "a consumer gets tokens from the development faucet");
    let consumer = match &chain {
        Some(c) => Client::connect(&base, c.consumer.clone()).await?.with_wallet(&c.rpc, c.contracts.clone()).await?,
        None => Client::connect(&base, PrivateKeySigner::random()).await?,
    };
    consumer.faucet().await?;
    let (provider_before, consumer_before) =
        (consumer.balance(provider.address()).await?, consumer.balance(consumer.address()).await?);
    eprintln!("consumer {} holds {consumer_before} tokens", consumer.address());

    heading(4, "the consumer runs wordfreq on it through the Service Execution Agreement flow");
    let results = work.join("results");
    let request = ComputeRequest {
        did: published.did,
        algorithm: AlgorithmChoice::Module(module.clone(), "wordfreq".into()),
        args: vec!["--top".into(), "10".into()],
        not_before: None,
        output_dir: results.clone(),
        wait: Duration::from_secs(600),
    };
    let mut display = FlowDisplay::new();
    let outcome = consumer.compute(&request, |s| display.show(s)).await;
    display.finish();
    let outcome = outcome?;
    print_outcome(&outcome, provider.address());
    eprintln!("\ntop words (outputs/wordfreq.csv):");
    for line in std::fs::read_to_string(results.join("outputs/wordfreq.csv"))?.lines().take(6) {
        eprintln!("    {line}");
    }
    eprintln!("\nthe receipt (receipt.json):\n{}", std::fs::read_to_string(results.join("receipt.json"))?);

    heading(5, "the payment split");
    let (provider_after, consumer_after) =
        (consumer.balance(provider.address()).await?, consumer.balance(consumer.address()).await?);
    eprintln!(
        "provider {provider_before} -> {provider_after} (+{}), consumer {consumer_before} -> {consumer_after} (-{}): \
         {} units of fuel at 1 token each",
        provider_after - provider_before,
        consumer_before - consumer_after,
        outcome.receipt.fuel_consumed
    );

    if let Some(c) = &chain {
        heading(6, "the receipt's hash, read back from the chain");
        let on_chain = tidepool_chain::Chain::connect(&c.rpc, c.contracts.clone(), Default::default())
            .await?
            .receipt_hash(outcome.agreement)
            .await?;
        match on_chain {
            Some(hash) if hash == outcome.receipt.receipt_hash => {
                eprintln!("the escrow committed {hash}: the receipt's own hash, recomputed by the contract")
            }
            other => anyhow::bail!("the chain holds {other:?}, not the receipt's {}", outcome.receipt.receipt_hash),
        }
    }

    heading(7, "an auditor re-executes the receipt with the same inputs");
    let receipt = outcome.receipt.clone();
    let (algorithm, inputs, claimed) = (
        Algorithm::new(receipt.algorithm_name.clone(), module),
        vec![InputSpec::new("books", books.clone())],
        results.join("outputs"),
    );
    let report = tokio::task::spawn_blocking(move || {
        Runtime::new(RuntimeConfig::default()).verify(&VerifyRequest {
            receipt,
            algorithm,
            inputs,
            claimed_outputs: Some(claimed),
        })
    })
    .await??;
    if let (true, Some(rerun)) = (report.verified(), &report.rerun) {
        eprintln!("verified: re-executing gives the same receipt {}, and the outputs match", rerun.receipt_hash);
        if let Some(c) = &chain {
            eprintln!(
                "(from the command line: tidepool verify receipt.json --algorithm ... --input books=... --chain-rpc {} \
                 --contracts {} --agreement {})",
                c.rpc,
                c.contracts_file.display(),
                outcome.agreement
            );
        }
    } else {
        eprintln!("NOT verified: {:?} {:?} {:?}", report.mismatches, report.output_mismatches, report.unconfirmed);
    }

    let _ = stop_tx.send(());
    server.await??;
    match &args.keep {
        Some(dir) => eprintln!("\neverything is in {}", dir.display()),
        None => eprintln!("\n(the demo's files were temporary; use --keep DIR to keep them)"),
    }
    Ok(if report.verified() && outcome.receipt.outcome.is_success() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
