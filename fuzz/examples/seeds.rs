//! Writes the fuzz targets' seed corpus (`fuzz/seeds/TARGET/`): a few small inputs each.
//! `cargo run -p tidepool-fuzz --example seeds` rewrites them; the files are committed.
//!
//! * `ddo`: DDOs as a provider publishes them (a dataset with its Computing service, an output
//!   asset with its download service), a list of them, a DID;
//! * `signed_request`, `wasm_module`: fixed pseudo-random bytes (both targets build their input
//!   from any bytes), and for `wasm_module` a small WASI command taken as it is.

use std::collections::BTreeMap;
use std::path::Path;

use alloy_primitives::{Address, B256, U256};
use tidepool_fuzz::smith::bytes;
use tidepool_provider::assets::{Offer, computing_service};
use tidepool_provider::protocol::ddo::{
    AccessService, AlgorithmPolicy, AssetKind, DatasetInfo, Ddo, Derivation, Did, Environment, Metadata, PublicKey,
    Service,
};
use tidepool_provider::protocol::template::{Controller, Controllers, Terms};

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let write = |target: &str, name: &str, data: &[u8]| -> std::io::Result<()> {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(name), data)
    };

    let (dataset, output) = (dataset_ddo(), output_ddo());
    write("ddo", "dataset.json", &serde_json::to_vec_pretty(&dataset)?)?;
    write("ddo", "output.json", &serde_json::to_vec_pretty(&output)?)?;
    write("ddo", "list.json", &serde_json::to_vec(&[&dataset, &output])?)?;
    write("ddo", "did.txt", dataset.id.to_string().as_bytes())?;

    for (i, len) in [32, 128, 512].into_iter().enumerate() {
        write("signed_request", &format!("random-{i}"), &bytes(i as u64, len))?;
        let mut generate = bytes(100 + i as u64, len * 2);
        generate[0] |= 1; // `Knobs::generate`
        write("wasm_module", &format!("generated-{i}"), &generate)?;
    }
    // Limits (the rest of `Knobs`) then a module that writes to stdout and a file.
    let mut raw = vec![0u8; 16];
    raw[1..5].copy_from_slice(&1_000_000u32.to_le_bytes());
    raw[5..7].copy_from_slice(&16u16.to_le_bytes());
    raw[7..9].copy_from_slice(&500u16.to_le_bytes());
    raw[9..11].copy_from_slice(&16_384u16.to_le_bytes());
    raw[11..13].copy_from_slice(&4_096u16.to_le_bytes());
    raw[13] = 4;
    raw[14..16].copy_from_slice(&1_024u16.to_le_bytes());
    raw.extend(wat::parse_str(HELLO).expect("the seed module parses"));
    write("wasm_module", "hello-command", &raw)
}

/// Writes "hi\n" to stdout and exits 0.
const HELLO: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hi\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 3))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

const PROVIDER: Address = Address::repeat_byte(0xaa);
const OWNER: Address = Address::repeat_byte(0x0b);

fn ddo(id: Did, metadata: Metadata, service: Vec<Service>) -> Ddo {
    Ddo {
        context: "https://w3id.org/did/v1".into(),
        id,
        created: 1_700_000_000,
        public_key: vec![PublicKey { id: format!("{id}#owner"), kind: "EthereumECDSAKey".into(), owner: OWNER }],
        metadata,
        service,
    }
}

fn metadata(name: &str, kind: AssetKind, derived_from: Option<Derivation>) -> Metadata {
    Metadata {
        name: name.into(),
        description: "a seed".into(),
        author: "fuzz".into(),
        license: "CC0".into(),
        kind,
        datasets: vec![DatasetInfo { name: "data".into(), files: 2, bytes: 21, root: B256::repeat_byte(3) }],
        algorithm_hash: None,
        environment: None,
        derived_from,
    }
}

/// A dataset with the Computing service a provider publishes for it.
fn dataset_ddo() -> Ddo {
    let did = Did(B256::repeat_byte(7));
    let controllers =
        Controllers(Controller::ALL.iter().zip(1u8..).map(|(c, i)| (*c, Address::repeat_byte(i))).collect());
    let terms =
        Terms { did, provider: PROVIDER, consumer: Address::ZERO, price_per_fuel: U256::from(1), max_fuel: 1_000_000 };
    let offer =
        Offer { base_url: "http://127.0.0.1:8030", chain_id: 1337, keeper: "embedded", controllers: &controllers };
    let environment = Environment {
        runtime: "wasmtime".into(),
        runtime_version: tidepool_runtime::engine::WASMTIME_VERSION.into(),
        tidepool_version: tidepool_runtime::VERSION.into(),
        max_fuel: terms.max_fuel,
        memory_bytes: 1 << 26,
        timeout_ms: 60_000,
        output_bytes: 1 << 20,
        output_files: 100,
        offers: Vec::new(),
    };
    let policy = AlgorithmPolicy::Hashes { hashes: vec![B256::repeat_byte(5)] };
    let service = computing_service(offer, &terms, environment, policy, &BTreeMap::new());
    ddo(did, metadata("seed dataset", AssetKind::Dataset, None), vec![Service::Computing(Box::new(service))])
}

/// The outputs of a job, downloadable by their consumer.
fn output_ddo() -> Ddo {
    let derived = Derivation {
        service_agreement_id: B256::repeat_byte(1),
        receipt_hash: B256::repeat_byte(2),
        dataset: Did(B256::repeat_byte(7)),
    };
    let access = AccessService {
        service_definition_id: "2".into(),
        service_endpoint: "http://127.0.0.1:8030/api/v1/assets".into(),
        consumer: Address::repeat_byte(0xcc),
    };
    ddo(
        Did(B256::repeat_byte(8)),
        metadata("seed output", AssetKind::Output, Some(derived)),
        vec![Service::Access(access)],
    )
}
