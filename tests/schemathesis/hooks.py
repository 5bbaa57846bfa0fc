"""Schemathesis hooks for Tidepool's API (scripts/schemathesis.sh loads them with SCHEMATHESIS_HOOKS).

Every request schemathesis sends is signed as Tidepool's client signs it
(provider/src/protocol/signing.rs): headers x-tidepool-address, -nonce, -expiry, -content-hash
and -signature, the signature an EIP-712 signature over
Request(string method,string path,bytes32 contentHash,uint64 nonce,uint64 expiry) under the
domain {name: "Tidepool", version: "1", chainId, verifyingContract: the provider}. It is made on
the prepared request (a `requests` auth), so it covers the exact method, path with query and body
bytes that go on the wire, and a request sent again gets a fresh nonce. (Writing the fixtures is
a signed request too: a signature the daemon does not accept fails the run before fuzzing.)

Path parameters are sometimes replaced by identifiers that exist on the daemon under test (the
published dataset's DID, the consumer's agreements and job...: TIDEPOOL_FUZZ_FIXTURES, a JSON file
of operation path prefix -> parameter -> values), so the fuzzing reaches past 404s.

Environment: TIDEPOOL_FUZZ_URL (the daemon: its GET /api/v1/provider gives the domain's chain id
and provider address, as the client reads them), TIDEPOOL_FUZZ_KEY (the signer's key file, 64
hex digits), TIDEPOOL_FUZZ_FIXTURES (optional). `python -m hooks fixtures ...` writes the
fixtures file (see the end of this file).
"""

import itertools
import json
import os
import threading
import time

import coincurve
import requests
import schemathesis
from Crypto.Hash import keccak
from hypothesis import strategies as st

REQUEST_TTL = 300


def keccak256(data: bytes) -> bytes:
    return keccak.new(digest_bits=256, data=data).digest()


def uint256(n: int) -> bytes:
    return n.to_bytes(32, "big")


def address_word(address: str) -> bytes:
    return bytes(12) + bytes.fromhex(address.removeprefix("0x"))


DOMAIN_TYPE = keccak256(b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)")
REQUEST_TYPE = keccak256(b"Request(string method,string path,bytes32 contentHash,uint64 nonce,uint64 expiry)")


def domain_separator(chain_id: int, provider: str) -> bytes:
    return keccak256(
        DOMAIN_TYPE + keccak256(b"Tidepool") + keccak256(b"1") + uint256(chain_id) + address_word(provider)
    )


def request_digest(domain: bytes, method: str, path: str, content_hash: bytes, nonce: int, expiry: int) -> bytes:
    struct = keccak256(
        REQUEST_TYPE
        + keccak256(method.upper().encode())
        + keccak256(path.encode())
        + content_hash
        + uint256(nonce)
        + uint256(expiry)
    )
    return keccak256(b"\x19\x01" + domain + struct)


class Signer(requests.auth.AuthBase):
    """Signs a prepared request as Tidepool's client does. Nonces strictly increase."""

    def __init__(self, key_hex: str, chain_id: int, provider: str):
        self.key = coincurve.PrivateKey(bytes.fromhex(key_hex.strip().removeprefix("0x")))
        public = self.key.public_key.format(compressed=False)[1:]
        self.address = "0x" + keccak256(public)[-20:].hex()
        self.domain = domain_separator(chain_id, provider)
        # Microseconds: above the milliseconds the client used for this key's earlier requests.
        self.nonces = itertools.count(time.time_ns() // 1000)
        self.lock = threading.Lock()

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        body = r.body or b""
        if isinstance(body, str):
            body = body.encode()
        content_hash = keccak256(body)
        with self.lock:
            nonce = next(self.nonces)
        expiry = int(time.time()) + REQUEST_TTL
        digest = request_digest(self.domain, r.method, r.path_url, content_hash, nonce, expiry)
        # 65 bytes r || s || recovery id, low s (libsecp256k1); Ethereum's v is 27 + the id.
        signature = bytearray(self.key.sign_recoverable(digest, hasher=None))
        signature[64] += 27
        r.headers["x-tidepool-address"] = self.address
        r.headers["x-tidepool-nonce"] = str(nonce)
        r.headers["x-tidepool-expiry"] = str(expiry)
        r.headers["x-tidepool-content-hash"] = "0x" + content_hash.hex()
        r.headers["x-tidepool-signature"] = "0x" + bytes(signature).hex()
        return r


def _signer() -> Signer:
    provider = requests.get(f"{URL}/api/v1/provider", timeout=30).json()
    with open(os.environ["TIDEPOOL_FUZZ_KEY"]) as f:
        key = f.read()
    return Signer(key, provider["chainId"], provider["address"])


URL = os.environ["TIDEPOOL_FUZZ_URL"].rstrip("/")
SIGNER = _signer()


def _fixtures() -> dict:
    path = os.environ.get("TIDEPOOL_FUZZ_FIXTURES")
    if not path or not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


# Operation path prefix -> path parameter -> values that exist on the daemon.
FIXTURES = _fixtures()

# Long polls wait up to waitMs (at most 30 s) for an event: bounded here so the run's time goes
# to fuzzing, not waiting.
MAX_WAIT_MS = 1000

# Module and files bodies are bytes like any other.
schemathesis.serializer.alias(["application/wasm", "application/vnd.tidepool.files"], "application/octet-stream")


@schemathesis.hook
def before_call(context, case, kwargs):
    kwargs["auth"] = SIGNER
    query = case.query if isinstance(case.query, dict) else {}
    wait = query.get("waitMs")
    if isinstance(wait, int) and not isinstance(wait, bool) and wait > MAX_WAIT_MS:
        query["waitMs"] = MAX_WAIT_MS


@schemathesis.hook
def flatmap_path_parameters(context, path_parameters):
    """Each parameter the daemon has real values for: the generated value or a real one."""
    path = context.operation.path if context.operation is not None else ""
    known = {}
    for prefix, params in FIXTURES.items():
        if path.startswith(prefix):
            for name, values in params.items():
                known.setdefault(name, []).extend(values)
    choices = {
        name: st.sampled_from([value, *known[name]]) if known.get(name) else st.just(value)
        for name, value in (path_parameters or {}).items()
    }
    return st.fixed_dictionaries(choices)


def write_fixtures(out: str, dids: list, agreements: list, jobs: list) -> None:
    """Creates an upload session as the signer and writes the fixtures file."""
    response = requests.post(f"{URL}/api/v1/uploads", data=b"{}", auth=SIGNER, timeout=30)
    response.raise_for_status()
    session = response.json()["id"]
    fixtures = {
        "/api/v1/assets/": {"did": dids},
        "/api/v1/uploads/": {"id": [session], "dataset": ["books"]},
        "/api/v1/keeper/agreements/": {"id": agreements},
        "/api/v1/services/compute/jobs/": {"id": jobs, "index": [0, 1, 2, 3, 4]},
        "/api/v1/keeper/balances/": {"address": [SIGNER.address]},
    }
    with open(out, "w") as f:
        json.dump(fixtures, f, indent=2)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Writes the fixtures file the hooks read.")
    parser.add_argument("command", choices=["fixtures"])
    parser.add_argument("out")
    parser.add_argument("--did", action="append", default=[])
    parser.add_argument("--agreement", action="append", default=[])
    parser.add_argument("--job", action="append", default=[])
    args = parser.parse_args()
    write_fixtures(args.out, args.did, args.agreement, args.job)
