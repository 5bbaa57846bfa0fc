-- EVM keeper: the terms of the agreements this provider created on chain that the contracts
-- do not store (releasePayment must be given them; the signed values hash binds them).
CREATE TABLE evm_agreements (
    agreement_id   TEXT PRIMARY KEY,
    price_per_fuel TEXT NOT NULL,
    max_fuel       INTEGER NOT NULL,
    created_at     INTEGER NOT NULL
);
