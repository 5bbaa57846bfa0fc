//! Published assets never change: their DDOs and mountable datasets are kept in memory after
//! first use (up to a bound), sparing a query and a parse on every request about them.

use std::collections::HashMap;
use std::sync::Mutex;

use tidepool_runtime::InputSpec;

use crate::protocol::ddo::{Ddo, Did};

/// Entries kept per map; past it, the map starts over.
const CACHED: usize = 4096;

/// DDOs and mountable inputs by DID.
#[derive(Debug, Default)]
pub(super) struct Cache {
    ddos: Mutex<HashMap<Did, Ddo>>,
    inputs: Mutex<HashMap<Did, Vec<InputSpec>>>,
}

impl Cache {
    pub(super) fn ddo(&self, did: Did) -> Option<Ddo> {
        self.ddos.lock().unwrap_or_else(|p| p.into_inner()).get(&did).cloned()
    }

    pub(super) fn keep_ddo(&self, ddo: &Ddo) {
        let mut ddos = self.ddos.lock().unwrap_or_else(|p| p.into_inner());
        if ddos.len() >= CACHED {
            ddos.clear();
        }
        ddos.insert(ddo.id, ddo.clone());
    }

    pub(super) fn inputs(&self, did: Did) -> Option<Vec<InputSpec>> {
        self.inputs.lock().unwrap_or_else(|p| p.into_inner()).get(&did).cloned()
    }

    pub(super) fn keep_inputs(&self, did: Did, inputs: &[InputSpec]) {
        let mut all = self.inputs.lock().unwrap_or_else(|p| p.into_inner());
        if all.len() >= CACHED {
            all.clear();
        }
        all.insert(did, inputs.to_vec());
    }
}
