-- Tidepool provider schema. Addresses are lowercase 0x-hex, hashes 0x-hex, token amounts
-- decimal strings (U256 does not fit SQLite integers), times Unix seconds.

-- Published assets (datasets, algorithms, job outputs) and their DDOs.
CREATE TABLE assets (
    did        TEXT PRIMARY KEY,
    kind       TEXT NOT NULL,
    owner      TEXT NOT NULL,
    ddo        TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

-- Each named dataset of an asset, with its tree (paths, sizes, BLAKE3 of contents).
CREATE TABLE asset_datasets (
    did      TEXT NOT NULL REFERENCES assets(did),
    name     TEXT NOT NULL,
    manifest TEXT NOT NULL,
    PRIMARY KEY (did, name)
);

-- Upload sessions: files added one request at a time, then published together.
CREATE TABLE upload_sessions (
    id         TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE upload_files (
    session_id TEXT NOT NULL REFERENCES upload_sessions(id),
    dataset    TEXT NOT NULL,
    path       TEXT NOT NULL,
    blob       TEXT NOT NULL,
    size       INTEGER NOT NULL,
    PRIMARY KEY (session_id, dataset, path)
);

-- The last request nonce accepted from each address.
CREATE TABLE nonces (
    address TEXT PRIMARY KEY,
    nonce   INTEGER NOT NULL
);

-- Embedded keeper: token balances.
CREATE TABLE balances (
    address TEXT PRIMARY KEY,
    amount  TEXT NOT NULL
);

-- Embedded keeper: service execution agreements.
CREATE TABLE agreements (
    id                TEXT PRIMARY KEY,
    did               TEXT NOT NULL,
    template_id       TEXT NOT NULL,
    consumer          TEXT NOT NULL,
    provider          TEXT NOT NULL,
    price_per_fuel    TEXT NOT NULL,
    max_fuel          INTEGER NOT NULL,
    escrow            TEXT NOT NULL,
    state             TEXT NOT NULL,
    algorithm_hash    TEXT,
    receipt_hash      TEXT,
    output_did        TEXT,
    provider_paid     TEXT,
    consumer_refunded TEXT,
    created_at        INTEGER NOT NULL
);

-- Embedded keeper: the conditions of each agreement.
CREATE TABLE conditions (
    agreement_id TEXT NOT NULL REFERENCES agreements(id),
    position     INTEGER NOT NULL,
    name         TEXT NOT NULL,
    key          TEXT NOT NULL,
    values_hash  TEXT NOT NULL,
    timeout      INTEGER NOT NULL,
    dependencies TEXT NOT NULL,
    state        TEXT NOT NULL,
    fulfilled_at INTEGER,
    PRIMARY KEY (agreement_id, name)
);

-- Embedded keeper: the ordered event log.
CREATE TABLE events (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    agreement_id TEXT NOT NULL,
    name         TEXT NOT NULL,
    data         TEXT NOT NULL,
    created_at   INTEGER NOT NULL
);
CREATE INDEX events_by_agreement ON events (agreement_id, id);

-- How far each event handler of the provider has processed the event log.
CREATE TABLE handler_cursors (
    handler    TEXT PRIMARY KEY,
    last_event INTEGER NOT NULL
);

-- The algorithm uploaded for each agreement.
CREATE TABLE uploads (
    agreement_id   TEXT PRIMARY KEY,
    algorithm_hash TEXT NOT NULL,
    algorithm_did  TEXT,
    name           TEXT NOT NULL,
    created_at     INTEGER NOT NULL
);

-- Compute jobs, one per agreement.
CREATE TABLE jobs (
    id           TEXT PRIMARY KEY,
    agreement_id TEXT NOT NULL UNIQUE,
    did          TEXT NOT NULL,
    consumer     TEXT NOT NULL,
    status       INTEGER NOT NULL,
    args         TEXT NOT NULL,
    not_before   INTEGER NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    error        TEXT,
    receipt      TEXT,
    results      TEXT,
    outputs      TEXT,
    payment      TEXT NOT NULL DEFAULT 'pending',
    output_did   TEXT,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
CREATE INDEX jobs_by_status ON jobs (status, not_before);
