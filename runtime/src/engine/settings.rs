//! The two engine configurations, each written down once: every setting is one entry whose
//! line goes into the hashed description (when it can change what a guest observes) and whose
//! `apply` sets it on wasmtime's [`Config`], from the same value. The description and the
//! configuration therefore cannot disagree.
//!
//! * [`Semantics::Legacy`]: the engine of version-1 receipts, kept so that they keep verifying:
//!   wasmtime's fuel, Cranelift's eager NaN canonicalization, a native stack limit, code for a
//!   fixed CPU feature set. Its description names the architecture and CPU features, exactly as
//!   it always did (`tidepool-engine-v1`), so its receipts verify on the architecture that made
//!   them only.
//! * [`Semantics::V2`]: the engine of version-2 receipts: modules rewritten at admission
//!   ([`crate::instrument`]) for NaN bits, fuel and stack depth, so that nothing the guest
//!   observes depends on the host. Its description names the semantics version and never the
//!   architecture, the CPU features, the native stack or the timeout mechanism, which are
//!   applied but not hashed.

use std::sync::Arc;

use alloy_primitives::B256;
use wasmtime::{Config, OptLevel, WasmFeatures};

use crate::instrument;
use crate::wasi;

/// The wasmtime version this crate is built against (`runtime::engine::tests` checks it
/// against `Cargo.lock`).
pub const WASMTIME_VERSION: &str = "48.0.8";

/// Which engine: what a receipt's `engine_config_hash` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Semantics {
    /// Version-1 receipts.
    Legacy,
    /// Version-2 receipts.
    V2,
}

/// Which CPU features code is generated for. Not part of the semantics of [`Semantics::V2`]
/// (the same results either way, tested); the legacy engine always uses [`CpuFeatures::Baseline`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CpuFeatures {
    /// Whatever the host offers (AVX2, BMI2, FMA...): the fastest code.
    #[default]
    Host,
    /// x86-64-v2 on x86-64, the base ISA on aarch64.
    Baseline,
}

/// Everything that defines one engine.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct EngineSpec {
    pub semantics: Semantics,
    /// The legacy engine's native `max_wasm_stack`, or the v2 engine's `max_stack_height`.
    pub stack: u64,
    pub fuel: bool,
    /// Legacy: Cranelift's canonicalization. V2: the pass's.
    pub nan: bool,
    /// V2 only: Cranelift's canonicalization as well (for the differential tests).
    pub cranelift_nan: bool,
    pub cpu: CpuFeatures,
    pub epochs: bool,
    /// V2 only: the module's interrupt check ([`instrument::interrupt`]) ends overdue and
    /// stopped jobs.
    pub interrupt: bool,
    pub perf_map: bool,
    /// V2 only: a native stack this many times smaller than the proven bound (tests only).
    pub native_stack_divisor: u64,
}

type Apply = Arc<dyn Fn(&mut Config) -> wasmtime::Result<()> + Send + Sync>;

/// One setting.
pub(crate) struct Setting {
    pub name: &'static str,
    pub value: String,
    /// Part of the hashed description.
    pub hashed: bool,
    apply: Apply,
}

fn setting(name: &'static str, value: impl ToString, hashed: bool, apply: Apply) -> Setting {
    Setting { name, value: value.to_string(), hashed, apply }
}

/// An `apply` that cannot fail.
fn set(f: impl Fn(&mut Config) + Send + Sync + 'static) -> Apply {
    Arc::new(move |c| {
        f(c);
        Ok(())
    })
}

fn none() -> Apply {
    Arc::new(|_| Ok(()))
}

fn host_triple() -> &'static str {
    if cfg!(all(target_arch = "x86_64", target_os = "linux")) {
        "x86_64-unknown-linux-gnu"
    } else if cfg!(all(target_arch = "aarch64", target_os = "linux")) {
        "aarch64-unknown-linux-gnu"
    } else if cfg!(all(target_arch = "aarch64", target_os = "macos")) {
        "aarch64-apple-darwin"
    } else {
        "x86_64-apple-darwin"
    }
}

/// The baseline CPU features code is generated for, whatever the host offers.
fn baseline_flags() -> &'static [&'static str] {
    if cfg!(target_arch = "x86_64") { &["has_sse3", "has_ssse3", "has_sse41", "has_sse42", "has_popcnt"] } else { &[] }
}

fn baseline() -> Apply {
    Arc::new(|c: &mut Config| {
        c.target(host_triple())?;
        for flag in baseline_flags() {
            // SAFETY: the flags name baseline x86-64-v2 features; wasmtime checks at engine
            // creation that the host supports every enabled flag and refuses otherwise.
            unsafe {
                c.cranelift_flag_enable(flag);
            }
        }
        Ok(())
    })
}

/// Feature names in a stable order, for the description.
fn feature_names(features: WasmFeatures) -> String {
    features.iter_names().map(|(name, _)| name.to_ascii_lowercase()).collect::<Vec<_>>().join(",")
}

/// The policy constants of the WASI layer: hashed, applied nowhere in wasmtime.
fn policy() -> Vec<Setting> {
    vec![
        setting("max_table_elements", wasi::MAX_TABLE_ELEMENTS, true, none()),
        setting("host_call_fuel", wasi::HOST_CALL_FUEL, true, none()),
        setting("fuel_per_byte", wasi::FUEL_PER_BYTE, true, none()),
        setting("ns_per_fuel", wasi::ctx::NS_PER_FUEL, true, none()),
        setting("realtime_base_ns", wasi::ctx::REALTIME_BASE_NS, true, none()),
        setting("file_time_ns", wasi::vfs::FILE_TIME_NS, true, none()),
    ]
}

/// Settings that never change what a guest observes.
fn host(spec: &EngineSpec) -> Vec<Setting> {
    let perf = spec.perf_map;
    vec![
        setting(
            "backtrace_frames",
            "none",
            false,
            set(|c| {
                c.wasm_backtrace_max_frames(None);
            }),
        ),
        setting(
            "parallel_compilation",
            true,
            false,
            set(|c| {
                c.parallel_compilation(true);
            }),
        ),
        setting(
            "perf_map",
            perf,
            false,
            Arc::new(move |c: &mut Config| {
                if perf {
                    // For profiling guests with `perf`: names compiled functions in /tmp/perf-PID.map.
                    c.profiler(wasmtime::ProfilingStrategy::PerfMap);
                }
                Ok(())
            }),
        ),
    ]
}

/// The instrumentation a v2 engine applies at admission.
pub(crate) fn pass_options(spec: &EngineSpec) -> instrument::Options {
    instrument::Options {
        nan: spec.nan,
        fuel: spec.fuel,
        stack: true,
        interrupt: spec.semantics == Semantics::V2 && spec.interrupt,
        ..Default::default()
    }
}

/// wasmtime's native stack limit for an engine.
pub(crate) fn native_stack(spec: &EngineSpec) -> u64 {
    match spec.semantics {
        Semantics::Legacy => spec.stack,
        Semantics::V2 => instrument::stack::native_stack_bytes(spec.stack) / spec.native_stack_divisor.max(1),
    }
}

/// Every setting of `spec`, in description order.
pub(crate) fn settings(spec: &EngineSpec) -> Vec<Setting> {
    let (fuel, nan, epochs, interrupt) = (spec.fuel, spec.nan, spec.epochs, spec.interrupt);
    let stack = native_stack(spec);
    let native_stack: Apply = Arc::new(move |c: &mut Config| {
        let stack = usize::try_from(stack)?;
        // wasmtime refuses a wasm stack larger than the (unused) async stack.
        c.max_wasm_stack(stack).async_stack_size(stack.saturating_add(1 << 20));
        Ok(())
    });
    let opt: Apply = set(|c| {
        c.cranelift_opt_level(OptLevel::Speed);
    });
    let relaxed: Apply = set(|c| {
        c.relaxed_simd_deterministic(true);
    });
    let epoch: Apply = set(move |c| {
        c.epoch_interruption(epochs);
    });
    let mut all = match spec.semantics {
        Semantics::Legacy => vec![
            setting("wasmtime", WASMTIME_VERSION, true, none()),
            setting("arch", std::env::consts::ARCH, true, baseline()),
            setting("isa", baseline_flags().join(","), true, none()),
            setting("opt", "speed", true, opt),
            setting(
                "fuel",
                fuel,
                true,
                set(move |c| {
                    c.consume_fuel(fuel);
                }),
            ),
            setting(
                "epoch_interruption",
                true,
                true,
                set(|c| {
                    c.epoch_interruption(true);
                }),
            ),
            setting(
                "nan_canonicalization",
                nan,
                true,
                set(move |c| {
                    c.cranelift_nan_canonicalization(nan);
                }),
            ),
            setting("relaxed_simd_deterministic", true, true, relaxed),
            setting(
                "threads",
                false,
                true,
                set(|c| {
                    c.wasm_features(WasmFeatures::THREADS | WasmFeatures::SHARED_EVERYTHING_THREADS, false);
                }),
            ),
            setting(
                "multi_memory",
                false,
                true,
                set(|c| {
                    c.wasm_multi_memory(false);
                }),
            ),
            setting(
                "memory64",
                false,
                true,
                set(|c| {
                    c.wasm_memory64(false);
                }),
            ),
            setting("max_wasm_stack", stack, true, native_stack),
        ],
        Semantics::V2 => {
            let cranelift_nan = spec.cranelift_nan;
            let cpu = spec.cpu;
            vec![
                setting("wasmtime", WASMTIME_VERSION, true, none()),
                setting("instrument", instrument::describe(&pass_options(spec)), true, none()),
                setting(
                    "features",
                    feature_names(instrument::FEATURES),
                    true,
                    set(|c| {
                        c.wasm_features(WasmFeatures::all(), false);
                        c.wasm_features(instrument::FEATURES, true);
                    }),
                ),
                setting("relaxed_simd_deterministic", true, true, relaxed),
                setting(
                    "cranelift_nan_canonicalization",
                    cranelift_nan,
                    true,
                    set(move |c| {
                        c.cranelift_nan_canonicalization(cranelift_nan);
                    }),
                ),
                setting(
                    "wasmtime_fuel",
                    false,
                    false,
                    set(|c| {
                        c.consume_fuel(false);
                    }),
                ),
                setting(
                    "cpu_features",
                    format!("{cpu:?}"),
                    false,
                    if cpu == CpuFeatures::Baseline { baseline() } else { none() },
                ),
                setting("instrument_code", instrument::CODE_REVISION, false, none()),
                setting("opt", "speed", false, opt),
                setting("epoch_interruption", epochs, false, epoch),
                // The interrupt memory is a second memory of 16 one-byte pages, read with an
                // atomic load: the engine allows multi-memory, custom page sizes and atomics
                // (threads) for it, while the pass refuses guests that use any of them (it
                // validates with FEATURES).
                setting(
                    "interrupt_check",
                    interrupt,
                    false,
                    set(move |c| {
                        c.wasm_multi_memory(interrupt).wasm_custom_page_sizes(interrupt);
                        c.wasm_features(WasmFeatures::THREADS, interrupt);
                    }),
                ),
                setting("native_max_wasm_stack", stack, false, native_stack),
            ]
        }
    };
    all.extend(policy());
    all.extend(host(spec));
    all
}

/// The description hashed into receipts: the hashed settings, one `name=value` line each.
pub(crate) fn describe(spec: &EngineSpec) -> String {
    let header = match spec.semantics {
        Semantics::Legacy => "tidepool-engine-v1",
        Semantics::V2 => "tidepool-semantics-2",
    };
    let mut out = format!("{header}\n");
    for s in settings(spec).iter().filter(|s| s.hashed) {
        out.push_str(&format!("{}={}\n", s.name, s.value));
    }
    out
}

/// The engine configuration hash of `spec`.
pub(crate) fn config_hash(spec: &EngineSpec) -> B256 {
    crate::tree::blake3_b256(describe(spec).as_bytes())
}

/// The key of compiled code on disk: every setting, hashed or not, and the host it runs on.
pub(crate) fn cache_key(spec: &EngineSpec) -> B256 {
    let mut all = describe(spec);
    for s in settings(spec).iter().filter(|s| !s.hashed && s.name != "perf_map") {
        all.push_str(&format!("{}={}\n", s.name, s.value));
    }
    all.push_str(&format!("host={}\n", host_triple()));
    crate::tree::blake3_b256(all.as_bytes())
}

/// wasmtime's `Config` for `spec`, from the same settings.
pub(crate) fn config(spec: &EngineSpec) -> wasmtime::Result<Config> {
    let mut c = Config::new();
    for s in settings(spec) {
        (s.apply)(&mut c)?;
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(semantics: Semantics) -> EngineSpec {
        EngineSpec {
            semantics,
            stack: 512 * 1024,
            fuel: true,
            nan: true,
            cranelift_nan: false,
            cpu: CpuFeatures::Host,
            epochs: true,
            interrupt: true,
            perf_map: false,
            native_stack_divisor: 1,
        }
    }

    /// Version-1 receipts hold the hash of exactly this text: it must never change.
    #[test]
    fn the_legacy_description_is_the_one_version_1_receipts_hash() {
        let isa = if cfg!(target_arch = "x86_64") { "has_sse3,has_ssse3,has_sse41,has_sse42,has_popcnt" } else { "" };
        let expected = format!(
            "tidepool-engine-v1\nwasmtime=48.0.8\narch={}\nisa={isa}\nopt=speed\nfuel=true\nepoch_interruption=true\n\
             nan_canonicalization=true\nrelaxed_simd_deterministic=true\nthreads=false\nmulti_memory=false\n\
             memory64=false\nmax_wasm_stack=524288\nmax_table_elements=1000000\nhost_call_fuel=100\nfuel_per_byte=1\n\
             ns_per_fuel=1\nrealtime_base_ns=1735689600000000000\nfile_time_ns=1735689600000000000\n",
            std::env::consts::ARCH
        );
        assert_eq!(describe(&spec(Semantics::Legacy)), expected);
    }

    #[test]
    fn the_v2_description_names_semantics_not_the_host() {
        let d = describe(&spec(Semantics::V2));
        assert!(d.starts_with("tidepool-semantics-2\n"), "{d}");
        for host_fact in [std::env::consts::ARCH, "isa=", "has_sse", "max_wasm_stack", "epoch", "Host", "Baseline"] {
            assert!(!d.contains(host_fact), "`{host_fact}` in the hashed description:\n{d}");
        }
        // What is not hashed still configures the engine and keys the compile cache.
        let mut other = spec(Semantics::V2);
        other.cpu = CpuFeatures::Baseline;
        other.stack = 1 << 20;
        other.epochs = false;
        assert_eq!(config_hash(&other), config_hash(&spec(Semantics::V2)));
        assert_ne!(cache_key(&other), cache_key(&spec(Semantics::V2)));
        // How a running job is stopped is not its semantics, but it is other code.
        let mut no_interrupt = spec(Semantics::V2);
        no_interrupt.interrupt = false;
        assert_eq!(config_hash(&no_interrupt), config_hash(&spec(Semantics::V2)));
        assert_ne!(cache_key(&no_interrupt), cache_key(&spec(Semantics::V2)));
        let mut no_fuel = spec(Semantics::V2);
        no_fuel.fuel = false;
        assert_ne!(config_hash(&no_fuel), config_hash(&spec(Semantics::V2)));
    }

    #[test]
    fn every_setting_configures_the_engine_and_every_hashed_one_is_described() {
        for semantics in [Semantics::Legacy, Semantics::V2] {
            let s = spec(semantics);
            let d = describe(&s);
            for setting in settings(&s) {
                assert_eq!(
                    d.contains(&format!("\n{}={}\n", setting.name, setting.value)),
                    setting.hashed,
                    "{}",
                    setting.name
                );
            }
            config(&s).unwrap();
        }
    }
}
