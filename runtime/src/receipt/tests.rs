//! The receipt's test vector, hashing, JSON and diffs.

use super::*;

pub(crate) fn sample() -> Receipt {
    Receipt {
        version: RECEIPT_VERSION,
        receipt_hash: B256::ZERO,
        environment: Some(EnvironmentInfo::module("wordfreq")),
        algorithm_hash: B256::repeat_byte(0x11),
        algorithm_name: "wordfreq".into(),
        args: vec!["--top".into(), "10".into()],
        inputs: vec![InputRoot { name: "books".into(), root: B256::repeat_byte(0x22) }],
        outputs_root: B256::repeat_byte(0x33),
        stdout_hash: B256::repeat_byte(0x44),
        stdout_len: 12,
        stderr_hash: B256::repeat_byte(0x55),
        stderr_len: 0,
        outcome: Outcome::Exited { code: 0 },
        fuel_consumed: 123_456,
        limits: Limits::default(),
        runtime: RuntimeInfo {
            tidepool_version: "0.1.0".into(),
            wasmtime_version: "48.0.8".into(),
            engine_config_hash: B256::repeat_byte(0x66),
        },
        seed: B256::repeat_byte(0x77),
        deterministic: true,
        signatures: vec![],
        meta: None,
    }
    .seal()
}

/// `sample()` as version 1 wrote it: no environment.
fn sample_v1() -> Receipt {
    Receipt { version: 1, environment: None, ..sample() }.seal()
}

/// A receipt of a job in an environment with arguments, variables and an extra mount.
fn sample_python() -> Receipt {
    Receipt {
        environment: Some(EnvironmentInfo {
            name: "python-3.12".into(),
            module_hash: B256::repeat_byte(0x99),
            argv: vec!["python".into(), "/algorithm/main.py".into(), "/data/inputs".into(), "/data/outputs".into()],
            env: vec!["PYTHONHASHSEED=0".into(), "PYTHONPATH=/sdk".into()],
            mounts: vec![InputRoot { name: "/sdk".into(), root: B256::repeat_byte(0xaa) }],
        }),
        ..sample()
    }
    .seal()
}

#[test]
fn receipt_hash_test_vector() {
    let r = sample();
    assert!(r.hash_is_consistent());
    // EIP-712 by hand for the innermost struct, to pin the encoding down independently of
    // alloy: hashStruct(Input) = keccak256(typeHash || keccak256(name) || root).
    let type_hash = keccak256("Input(string name,bytes32 root)");
    let mut enc = type_hash.to_vec();
    enc.extend_from_slice(keccak256("books").as_slice());
    enc.extend_from_slice(B256::repeat_byte(0x22).as_slice());
    let input = eip712::Input { name: "books".into(), root: B256::repeat_byte(0x22) };
    assert_eq!(input.eip712_hash_struct(), keccak256(enc));
    assert_eq!(
        Receipt::eip712_encode_type(),
        "Receipt(uint32 version,Environment environment,bytes32 algorithmHash,string algorithmName,string[] args,\
         Input[] inputs,bytes32 outputsRoot,bytes32 stdoutHash,uint64 stdoutLen,bytes32 stderrHash,uint64 stderrLen,\
         Outcome outcome,uint64 fuelConsumed,Limits limits,Runtime runtime,bytes32 seed,bool deterministic)\
         Environment(string name,bytes32 moduleHash,string[] argv,string[] env,Input[] mounts)\
         Input(string name,bytes32 root)\
         Limits(uint64 fuel,uint64 memoryBytes,uint64 timeoutMs,uint64 outputBytes,uint64 outputFiles,\
         uint64 stdoutBytes,uint64 stderrBytes,uint64 moduleBytes,uint64 maxStackHeight)\
         Outcome(string kind,int32 code,string message)\
         Runtime(string tidepoolVersion,string wasmtimeVersion,bytes32 engineConfigHash)"
    );
    assert_eq!(
        r.receipt_hash.to_string(),
        "0x5ae3c84845a308cf4ea2aca38293183fce13e765632461815dd8a4ff9283415c",
        "the documented test vector for `sample()`"
    );
    assert_eq!(
        sample_python().receipt_hash.to_string(),
        "0x8acfd8e960673d46edcd20301306b61fff3cb7a86cb265276b342d6930a7ae5b",
        "the documented test vector for `sample_python()`"
    );
}

#[test]
fn version_1_receipts_keep_their_hash() {
    let r = sample_v1();
    assert_eq!(
        eip712::v1::Receipt::eip712_encode_type(),
        "Receipt(uint32 version,bytes32 algorithmHash,string algorithmName,string[] args,Input[] inputs,\
         bytes32 outputsRoot,bytes32 stdoutHash,uint64 stdoutLen,bytes32 stderrHash,uint64 stderrLen,\
         Outcome outcome,uint64 fuelConsumed,Limits limits,Runtime runtime,bytes32 seed,bool deterministic)\
         Input(string name,bytes32 root)\
         Limits(uint64 fuel,uint64 memoryBytes,uint64 timeoutMs,uint64 outputBytes,uint64 outputFiles,\
         uint64 stdoutBytes,uint64 stderrBytes,uint64 moduleBytes,uint64 maxWasmStack)\
         Outcome(string kind,int32 code,string message)\
         Runtime(string tidepoolVersion,string wasmtimeVersion,bytes32 engineConfigHash)"
    );
    assert_eq!(
        r.receipt_hash.to_string(),
        "0x3b834165547220e2ee619c5bc3baa26dee20308dc79a27184080928ab755672e",
        "version 1's documented test vector (the same fields, hashed as version 1 hashed them)"
    );
    // What version 1 wrote parses and keeps its hash; the stack height it did not have
    // takes its default and changes nothing.
    let mut json = serde_json::to_value(&r).unwrap();
    json["limits"].as_object_mut().unwrap().remove("max_stack_height");
    let back: Receipt = serde_json::from_value(json).unwrap();
    assert_eq!(back.environment, None);
    assert!(back.hash_is_consistent());
    assert_ne!(r.receipt_hash, sample().receipt_hash, "the two versions hash differently");
}

#[test]
fn the_signing_hash_is_eip712s() {
    let domain = alloy_sol_types::eip712_domain! { name: "Tidepool", version: "1", chain_id: 1337, };
    assert_eq!(sample().eip712_signing_hash(&domain), sample().to_eip712().eip712_signing_hash(&domain));
    assert_eq!(sample_v1().eip712_signing_hash(&domain), sample_v1().to_eip712_v1().eip712_signing_hash(&domain));
}

#[test]
fn the_hand_encoding_matches_alloys_eip712() {
    let mut receipts = vec![sample(), sample_python()];
    let mut r = sample();
    r.environment = Some(EnvironmentInfo { argv: vec![], mounts: vec![], ..sample_python().environment() });
    receipts.push(r);
    let mut r = sample();
    r.args = vec![];
    r.inputs = vec![];
    r.outcome = Outcome::Trap { message: "wasm trap: integer divide by zero".into() };
    receipts.push(r);
    let mut r = sample();
    r.outcome = Outcome::Exited { code: -7 };
    r.inputs.push(InputRoot { name: "weather".into(), root: B256::repeat_byte(0x88) });
    r.args = vec!["".into(), "ünïcode".into(), "x".repeat(300)];
    r.deterministic = false;
    r.version = u32::MAX;
    r.limits.fuel = u64::MAX;
    receipts.push(r);
    for (n, code) in [(3, i32::MIN), (4, i32::MAX)] {
        let mut r = sample();
        r.outcome = Outcome::Exited { code };
        r.algorithm_name = "a".repeat(n);
        receipts.push(r);
    }
    // Twice, in order: the parts remembered from one receipt must not leak into the next.
    for r in receipts.iter().chain(&receipts) {
        assert_eq!(r.compute_hash(), r.to_eip712().eip712_hash_struct(), "{r:?}");
        assert_eq!(r.compute_hash(), r.to_eip712().eip712_hash_struct(), "{r:?}");
    }
}

#[test]
fn every_hashed_field_changes_the_hash_and_unhashed_ones_do_not() {
    let base = sample();
    let mut changed = base.clone();
    changed.limits.fuel += 1;
    assert_ne!(changed.compute_hash(), base.receipt_hash);
    let mut changed = base.clone();
    changed.outcome = Outcome::Trap { message: "x".into() };
    assert_ne!(changed.compute_hash(), base.receipt_hash);
    let mut meta_only = base.clone();
    meta_only.meta = Some(ReceiptMeta { wall_time_ms: 5, compile_cached: true });
    assert_eq!(meta_only.compute_hash(), base.receipt_hash);
}

#[test]
fn json_round_trips_with_the_contract_field_names() {
    let r = sample();
    let json = serde_json::to_value(&r).unwrap();
    for field in [
        "version",
        "receipt_hash",
        "algorithm_hash",
        "inputs",
        "outputs_root",
        "stdout_hash",
        "stderr_hash",
        "outcome",
        "fuel_consumed",
        "limits",
        "runtime",
        "seed",
        "deterministic",
    ] {
        assert!(json.get(field).is_some(), "receipt JSON lacks `{field}`");
    }
    assert_eq!(json["outcome"], serde_json::json!({"kind": "exited", "code": 0}));
    let back: Receipt = serde_json::from_value(json).unwrap();
    assert_eq!(back, r);
}

#[test]
fn diff_names_nested_fields() {
    let a = sample();
    let mut b = a.clone();
    b.inputs[0].root = B256::repeat_byte(0x99);
    b.limits.memory_bytes = 1;
    b.meta = Some(ReceiptMeta::default());
    b.fuel_consumed += 1;
    let fields: Vec<String> = a.diff(&b).into_iter().map(|d| d.field).collect();
    assert_eq!(fields, ["inputs[books].root", "limits.memory_bytes", "fuel_consumed"], "causes first");
}

#[test]
fn diff_sees_inputs_that_differ_only_in_order_or_by_a_repeated_name() {
    let mut a = sample();
    a.inputs.push(InputRoot { name: "prices".into(), root: B256::repeat_byte(0x23) });
    let mut reordered = a.clone();
    reordered.inputs.reverse();
    assert_ne!(a.compute_hash(), reordered.compute_hash(), "the hash covers the order");
    let fields: Vec<String> = a.diff(&reordered).into_iter().map(|d| d.field).collect();
    assert_eq!(fields, ["inputs_order"]);

    let mut repeated = a.clone();
    repeated.inputs[1] = repeated.inputs[0].clone();
    let fields: Vec<String> = a.diff(&repeated).into_iter().map(|d| d.field).collect();
    assert!(fields.contains(&"inputs_order".to_string()), "{fields:?}");
}
