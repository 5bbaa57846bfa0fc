// Compiles the contracts in src/ with the pinned solcjs (package.json) into artifacts/: one
// JSON file per deployable contract, {contractName, abi, bytecode}, plus TidepoolErrors (ABI
// only) for decoding reverts. Deterministic: fixed optimizer settings, no metadata hash and no
// CBOR metadata in the bytecode, sources read in sorted order, stable JSON formatting.
//
//   node compile.js [OUT_DIR]     (default: artifacts)
'use strict';
const fs = require('fs');
const path = require('path');
const solc = require('solc');

const SRC = path.join(__dirname, 'src');
const OUT = path.resolve(process.argv[2] || path.join(__dirname, 'artifacts'));
// The contracts whose artifacts the Rust crate binds.
const ARTIFACTS = [
    'AgreementStore',
    'DIDRegistry',
    'TidepoolTestToken',
    'LockPaymentCondition',
    'ComputeUploadCondition',
    'ComputeGrantCondition',
    'EscrowReward',
    'TidepoolErrors',
];

function sources(dir, prefix = '') {
    const out = {};
    for (const entry of fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
        const rel = prefix + entry.name;
        if (entry.isDirectory()) Object.assign(out, sources(path.join(dir, entry.name), rel + '/'));
        else if (entry.name.endsWith('.sol')) out[rel] = { content: fs.readFileSync(path.join(dir, entry.name), 'utf8') };
    }
    return out;
}

const input = {
    language: 'Solidity',
    sources: sources(SRC),
    settings: {
        evmVersion: 'cancun',
        viaIR: true,
        optimizer: { enabled: true, runs: 200 },
        metadata: { bytecodeHash: 'none', appendCBOR: false },
        outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object'] } },
    },
};

const output = JSON.parse(solc.compile(JSON.stringify(input)));
const errors = (output.errors || []).filter((e) => e.severity === 'error');
for (const e of output.errors || []) console.error(e.formattedMessage);
if (errors.length) process.exit(1);

fs.mkdirSync(OUT, { recursive: true });
const found = {};
for (const file of Object.keys(output.contracts)) {
    for (const [name, c] of Object.entries(output.contracts[file])) found[name] = c;
}
for (const name of ARTIFACTS) {
    const c = found[name];
    if (!c) {
        console.error(`no contract ${name} in the sources`);
        process.exit(1);
    }
    const artifact = { contractName: name, compiler: `solc ${solc.version()}`, abi: c.abi };
    if (c.evm.bytecode.object) artifact.bytecode = '0x' + c.evm.bytecode.object;
    fs.writeFileSync(path.join(OUT, name + '.json'), JSON.stringify(artifact, null, 2) + '\n');
}
console.error(`compiled ${ARTIFACTS.length} artifacts into ${OUT}`);
