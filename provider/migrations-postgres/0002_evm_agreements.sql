-- EVM keeper: the terms of the agreements this provider created on chain that the contracts
-- do not store (releasePayment must be given them; the signed values hash binds them). Kept in
-- step with SQLite's schema, although a cluster runs with the embedded keeper only.
CREATE TABLE evm_agreements (
    agreement_id   TEXT PRIMARY KEY,
    price_per_fuel TEXT NOT NULL,
    max_fuel       BIGINT NOT NULL,
    created_at     BIGINT NOT NULL
);
