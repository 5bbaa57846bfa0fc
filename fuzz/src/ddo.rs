//! The `ddo` target: a DDO as a consumer receives it from a provider (any bytes), read and
//! checked as `Client::compute` does before signing anything ([`check_ddo`]: the Computing
//! service, its event handlers, its conditions against the template), then the agreement the
//! consumer would sign. DIDs are parsed from the same bytes.
//!
//! Properties: nothing panics; a DDO that parses is written back to JSON that parses to the same
//! DDO.

use alloy_primitives::{Address, B256};
use alloy_sol_types::SolStruct;
use tidepool_provider::client::flow::check_ddo;
use tidepool_provider::protocol::ddo::{Ddo, Did};
use tidepool_provider::protocol::eip712::domain;
use tidepool_provider::protocol::template;

/// The consumer reading the DDO.
const CONSUMER: Address = Address::repeat_byte(0xcc);

/// Runs one input (any bytes).
pub fn run(data: &[u8]) {
    crate::reached(10);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = text.trim().parse::<Did>();
    }
    let ddo: Ddo = match serde_json::from_slice(data) {
        Ok(ddo) => ddo,
        Err(_) => {
            // `GET /api/v1/assets` answers a list of them.
            let _ = serde_json::from_slice::<Vec<Ddo>>(data);
            return;
        }
    };
    crate::reached(11);
    let json = serde_json::to_vec(&ddo).expect("a DDO serializes");
    let back: Ddo = serde_json::from_slice(&json).expect("a serialized DDO parses");
    assert_eq!(back, ddo, "a DDO changed in a JSON round trip");

    // Checked by a client connected to the provider the DDO names (else it is refused at once).
    let provider = ddo.compute_service("1").map_or(Address::ZERO, |c| c.provider.address);
    if let Ok(checked) = check_ddo(&ddo, ddo.id, provider, CONSUMER) {
        crate::reached(12);
        let agreement = template::agreement_struct(B256::ZERO, &checked.service.conditions, &checked.terms);
        let _ = agreement.eip712_signing_hash(&domain(checked.service.provider.chain_id, provider));
    }
}
