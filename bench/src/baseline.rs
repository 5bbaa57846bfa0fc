//! Minimal embeddings of wasmtime 48.0.8 with stock wasmtime-wasi: they instantiate a module
//! and run `_start`, nothing else. [`StockP1`] is the baseline of the per-job overhead;
//! [`Adapted`] (feature `wasi-choice`) was the third design option of the WASI measurement.

use std::path::Path;

use wasmtime::Result;
use wasmtime::{Config, Engine, InstancePre, Linker, Module, Store};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

#[cfg(feature = "wasi-choice")]
pub use adapted::{Adapted, componentize};

/// Stock wasmtime-wasi preview 1 (implemented over preview 2 inside the host).
pub struct StockP1 {
    engine: Engine,
    pre: InstancePre<WasiP1Ctx>,
}

impl StockP1 {
    /// Compiles `wasm` on a default engine and links it against stock preview 1.
    pub fn new(wasm: &[u8]) -> Result<Self> {
        let engine = Engine::new(&Config::new())?;
        let module = Module::new(&engine, wasm)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |t| t)?;
        let pre = linker.instantiate_pre(&module)?;
        Ok(Self { engine, pre })
    }

    /// Instantiates and runs `_start`, with `inputs` (if any) preopened read-only at
    /// `/data/inputs`. Returns what the guest wrote to stdout.
    pub fn run(&self, inputs: Option<&Path>) -> Result<Vec<u8>> {
        let (mut b, stdout) = builder(inputs)?;
        let mut store = Store::new(&self.engine, b.build_p1());
        let instance = self.pre.instantiate(&mut store)?;
        let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
        match start.call(&mut store, ()) {
            Ok(()) => {}
            Err(e) => match e.downcast_ref::<wasmtime_wasi::I32Exit>() {
                Some(exit) if exit.0 == 0 => {}
                _ => return Err(e.context("the guest failed")),
            },
        }
        drop(store);
        Ok(stdout.contents().to_vec())
    }
}

/// The same world for both baselines: argv, captured stdout, `inputs` read-only at
/// `/data/inputs`.
fn builder(inputs: Option<&Path>) -> Result<(WasiCtxBuilder, MemoryOutputPipe)> {
    let stdout = MemoryOutputPipe::new(1 << 20);
    let mut b = WasiCtxBuilder::new();
    b.args(&["guest"]).stdout(stdout.clone());
    if let Some(dir) = inputs {
        b.preopened_dir(dir, "/data/inputs", FsPerms::ReadOnly)?;
    }
    Ok((b, stdout))
}

impl std::fmt::Debug for StockP1 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StockP1").finish_non_exhaustive()
    }
}

#[cfg(feature = "wasi-choice")]
mod adapted {
    use std::path::Path;

    use wasmtime::component::{Component, Linker as ComponentLinker, ResourceTable};
    use wasmtime::{Config, Engine, Result, Store};
    use wasmtime_wasi::p2::bindings::sync::Command;
    use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

    use super::builder;

    struct P2State {
        ctx: WasiCtx,
        table: ResourceTable,
    }

    impl WasiView for P2State {
        fn ctx(&mut self) -> WasiCtxView<'_> {
            WasiCtxView { ctx: &mut self.ctx, table: &mut self.table }
        }
    }

    /// Design option (b): the module turned into a component with the preview 1 adapter, run on
    /// wasmtime-wasi's preview 2 host.
    pub struct Adapted {
        engine: Engine,
        component: Component,
        linker: ComponentLinker<P2State>,
    }

    impl Adapted {
        /// Componentizes `wasm` (the per-algorithm cost of design (b)) and compiles it.
        pub fn new(wasm: &[u8]) -> Result<Self> {
            let component = componentize(wasm)?;
            let mut config = Config::new();
            config.wasm_component_model(true);
            let engine = Engine::new(&config)?;
            let component = Component::new(&engine, &component)?;
            let mut linker = ComponentLinker::new(&engine);
            wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
            Ok(Self { engine, component, linker })
        }

        /// Instantiates the component and runs its command, with `inputs` (if any) preopened
        /// read-only at `/data/inputs`. Returns what the guest wrote to stdout.
        pub fn run(&self, inputs: Option<&Path>) -> Result<Vec<u8>> {
            let (mut b, stdout) = builder(inputs)?;
            let mut store = Store::new(&self.engine, P2State { ctx: b.build(), table: ResourceTable::new() });
            let command = Command::instantiate(&mut store, &self.component, &self.linker)?;
            command.wasi_cli_run().call_run(&mut store)?.map_err(|()| wasmtime::format_err!("the guest failed"))?;
            drop(store);
            Ok(stdout.contents().to_vec())
        }
    }

    impl std::fmt::Debug for Adapted {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Adapted").finish_non_exhaustive()
        }
    }

    /// Wraps a preview 1 core module into a preview 2 component with the command adapter.
    pub fn componentize(wasm: &[u8]) -> Result<Vec<u8>> {
        let encode = || -> anyhow::Result<Vec<u8>> {
            wit_component::ComponentEncoder::default()
                .module(wasm)?
                .adapter(
                    "wasi_snapshot_preview1",
                    wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER,
                )?
                .validate(true)
                .encode()
        };
        encode().map_err(|e| wasmtime::format_err!("componentizing: {e:#}"))
    }
}
