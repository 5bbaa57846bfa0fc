//! Environments: a pinned WebAssembly module plus how to call it, so that an algorithm can be a
//! program for that module (a Python script) instead of a module of its own.
//!
//! An environment is described by an `environment.toml` in a directory of its own:
//!
//! ```toml
//! name = "python-3.12"
//! description = "CPython 3.12.0 for wasm32-wasip1, standard library only"
//! module = "python-3.12.0.wasm"          # in the same directory
//! module_blake3 = "0x..."                # pinned: a different file is refused
//! argv = ["python", "/algorithm/main.py", "/data/inputs", "/data/outputs"]
//! env = ["PYTHONHASHSEED=0", "PYTHONPATH=/sdk"]
//!
//! [algorithm]
//! entry = "main.py"                      # the file every algorithm must have
//! extensions = ["py"]                    # a single file with one of these runs as the entry
//! skip = ["__pycache__"]                 # directories left out when reading an algorithm
//!
//! [[mounts]]
//! path = "/sdk"                          # the guest path, read-only
//! dir = "sdk"                            # relative to the environment's directory
//! ```
//!
//! A job in an environment runs the environment's module with `argv` followed by the job's
//! arguments, the environment variables `env`, the algorithm's files read-only at `/algorithm`
//! and each mount read-only at its path. Its receipt records all of that
//! ([`EnvironmentInfo`]: name, module hash, argv, env, mounts with their tree roots) and the
//! algorithm's tree root as `algorithm_hash`, so a verifier re-executes exactly the same thing.
//!
//! [`Environments`] is the set a provider offers, loaded from a directory holding one
//! subdirectory per environment. Loading reads the definitions only; an environment's module
//! and mounts are read, checked against the pin and hashed when it is first used. This module
//! never downloads anything and reads no environment variable: where the directory is, is
//! configuration.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use alloy_primitives::B256;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::files::FileTree;
use crate::job::{Algorithm, sanitize_name};
use crate::receipt::{EnvironmentInfo, InputRoot};

/// The definition file of an environment, in its directory.
pub const DEFINITION_FILE: &str = "environment.toml";

/// Most bytes of files an environment's extra mount may hold.
const MAX_MOUNT_BYTES: u64 = 64 << 20;

/// `environment.toml`, as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Definition {
    name: String,
    #[serde(default)]
    description: String,
    module: String,
    module_blake3: B256,
    argv: Vec<String>,
    #[serde(default)]
    env: Vec<String>,
    algorithm: AlgorithmRules,
    #[serde(default)]
    mounts: Vec<MountDefinition>,
}

/// How an algorithm for the environment is laid out.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlgorithmRules {
    entry: String,
    #[serde(default)]
    extensions: Vec<String>,
    #[serde(default)]
    skip: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MountDefinition {
    path: String,
    dir: String,
}

/// What a provider says about an environment it offers (for DDOs and error messages).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvironmentDescription {
    /// The environment's name, as algorithms ask for it (`python-3.12`).
    pub name: String,
    /// BLAKE3 of the environment's module (what receipts record as `environment.module_hash`).
    pub module_hash: B256,
    /// What it is, in words (`description` in its `environment.toml`; may be empty).
    pub description: String,
}

/// A loaded environment: its module, checked against the pin, and its mounts, hashed.
pub struct Environment {
    /// The directory its definition was read from.
    dir: PathBuf,
    definition: Definition,
    module: Arc<[u8]>,
    mounts: Vec<(String, Arc<FileTree>)>,
    info: EnvironmentInfo,
}

impl std::fmt::Debug for Environment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Environment").field("info", &self.info).finish_non_exhaustive()
    }
}

impl Environment {
    /// Loads the environment described by `dir/environment.toml`.
    pub fn load(dir: &Path) -> Result<Self> {
        Self::from_definition(dir, read_definition(dir)?)
    }

    fn from_definition(dir: &Path, definition: Definition) -> Result<Self> {
        let name = definition.name.clone();
        let unavailable = |reason: String| Error::EnvironmentUnavailable { name: name.clone(), reason };
        let path = dir.join(&definition.module);
        let module: Arc<[u8]> = match std::fs::read(&path) {
            Ok(bytes) => bytes.into(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(unavailable(format!(
                    "its module {} is missing; run scripts/setup.sh to install it",
                    path.display()
                )));
            }
            Err(e) => return Err(unavailable(format!("cannot read its module {}: {e}", path.display()))),
        };
        let module_hash = crate::tree::blake3_b256(&module);
        if module_hash != definition.module_blake3 {
            return Err(unavailable(format!(
                "its module {} has BLAKE3 {module_hash}, but {DEFINITION_FILE} pins {}; run scripts/setup.sh to \
                 install the right one",
                path.display(),
                definition.module_blake3
            )));
        }
        let mut mounts = Vec::new();
        for m in &definition.mounts {
            let files = FileTree::from_dir(&dir.join(&m.dir), &[], MAX_MOUNT_BYTES)
                .map_err(|e| unavailable(format!("mount {}: {e}", m.path)))?;
            mounts.push((m.path.clone(), Arc::new(files)));
        }
        let info = EnvironmentInfo {
            name: definition.name.clone(),
            module_hash,
            argv: definition.argv.clone(),
            env: definition.env.clone(),
            mounts: mounts.iter().map(|(path, files)| InputRoot { name: path.clone(), root: files.root() }).collect(),
        };
        Ok(Self { dir: dir.to_path_buf(), definition, module, mounts, info })
    }

    /// The environment's name (`name` in its `environment.toml`).
    pub fn name(&self) -> &str {
        &self.definition.name
    }

    /// The directory holding its definition, module and mounts: what a process that runs its
    /// jobs elsewhere (a confined worker) loads it from again, with [`load`](Self::load).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file its module is read from (which may be a link to a file elsewhere).
    pub fn module_path(&self) -> PathBuf {
        self.dir.join(&self.definition.module)
    }

    /// What receipts of jobs in this environment record.
    pub fn info(&self) -> &EnvironmentInfo {
        &self.info
    }

    /// What a provider says about it.
    pub fn describe(&self) -> EnvironmentDescription {
        EnvironmentDescription {
            name: self.definition.name.clone(),
            module_hash: self.info.module_hash,
            description: self.definition.description.clone(),
        }
    }

    /// The environment's module.
    pub fn module(&self) -> &Arc<[u8]> {
        &self.module
    }

    /// The extra read-only mounts: guest path and files.
    pub(crate) fn mounts(&self) -> &[(String, Arc<FileTree>)] {
        &self.mounts
    }

    /// The file every algorithm for this environment must hold (`main.py`).
    pub fn entry(&self) -> &str {
        &self.definition.algorithm.entry
    }

    /// An algorithm from its files, as a provider receives them: they must hold the entry file.
    pub fn algorithm(self: &Arc<Self>, name: &str, files: FileTree) -> Result<Algorithm> {
        if files.file(self.entry()).is_none() {
            return Err(Error::InvalidAlgorithm {
                reason: format!("an algorithm for {} needs a file `{}` at its top", self.name(), self.entry()),
            });
        }
        Ok(Algorithm::in_environment(sanitize_name(name), self.clone(), Arc::new(files)))
    }

    /// Reads an algorithm from the host: a directory holding the entry file (directories named
    /// in the definition's `skip` are left out), or a single file, which becomes the entry.
    /// It is named after the directory or the file's stem. `max_bytes` bounds its contents.
    pub fn load_algorithm(self: &Arc<Self>, path: &Path, max_bytes: u64) -> Result<Algorithm> {
        let invalid = |reason: String| Error::InvalidAlgorithm { reason };
        let meta = std::fs::metadata(path).map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
        let name = algorithm_name(path, meta.is_dir());
        let files = if meta.is_dir() {
            if !path.join(self.entry()).is_file() {
                return Err(invalid(format!(
                    "{} has no {}: an algorithm directory for {} needs one (it is what runs)",
                    path.display(),
                    self.entry(),
                    self.name()
                )));
            }
            FileTree::from_dir(path, &self.definition.algorithm.skip, max_bytes)
                .map_err(|e| invalid(format!("{}: {e}", path.display())))?
        } else {
            let bytes = std::fs::read(path).map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
            if bytes.len() as u64 > max_bytes {
                return Err(invalid(format!(
                    "{} is {} bytes, over the algorithm size limit of {max_bytes} bytes",
                    path.display(),
                    bytes.len()
                )));
            }
            FileTree::single(self.entry(), bytes).map_err(|e| invalid(e.to_string()))?
        };
        self.algorithm(&name, files)
    }

    /// True when a single file at `path` is a program for this environment (by extension).
    fn runs_file(definition: &Definition, path: &Path) -> bool {
        path.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| definition.algorithm.extensions.iter().any(|x| x.eq_ignore_ascii_case(e)))
    }
}

/// A directory's name, or a file's stem (`.` names the current directory).
fn algorithm_name(path: &Path, is_dir: bool) -> String {
    let named =
        |p: &Path| if is_dir { p.file_name() } else { p.file_stem() }.and_then(|s| s.to_str()).map(String::from);
    named(path).or_else(|| named(&path.canonicalize().ok()?)).unwrap_or_else(|| "algorithm".into())
}

fn read_definition(dir: &Path) -> Result<Definition> {
    let path = dir.join(DEFINITION_FILE);
    let text = std::fs::read_to_string(&path).map_err(Error::io(format!("reading {}", path.display())))?;
    let definition: Definition = toml::from_str(&text).map_err(|e| Error::EnvironmentUnavailable {
        name: dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        reason: format!("{} is not a valid environment definition: {e}", path.display()),
    })?;
    let bad = |reason: &str| {
        Err(Error::EnvironmentUnavailable {
            name: definition.name.clone(),
            reason: format!("{}: {reason}", path.display()),
        })
    };
    if definition.name.is_empty() || sanitize_name(&definition.name) != definition.name {
        return bad("`name` may only use A-Z a-z 0-9 . _ -");
    }
    if definition.name == EnvironmentInfo::MODULE {
        return bad("`module` is the name of algorithms that are modules themselves");
    }
    if definition.argv.is_empty() {
        return bad("`argv` needs at least the program name");
    }
    if !definition.env.iter().all(|v| v.split_once('=').is_some_and(|(k, _)| !k.is_empty())) {
        return bad("`env` entries are NAME=value");
    }
    if definition.algorithm.entry.is_empty() || definition.algorithm.entry.contains('/') {
        return bad("`algorithm.entry` is a file name");
    }
    let reserved = [crate::job::ALGORITHM_DIR, crate::job::INPUTS_DIR, crate::job::OUTPUTS_DIR, "/data"];
    for m in &definition.mounts {
        if !m.path.starts_with('/') || m.path.len() < 2 || reserved.iter().any(|r| m.path.starts_with(r)) {
            return bad("mount paths are absolute and outside /algorithm and /data");
        }
    }
    Ok(definition)
}

/// The environments a runtime may run jobs in, from a directory with one subdirectory per
/// environment, each holding an `environment.toml`. Cheap to share (`Arc`).
#[derive(Debug, Default)]
pub struct Environments {
    dir: Option<PathBuf>,
    /// By name: the directory, the definition, and the environment once loaded.
    entries: BTreeMap<String, Slot>,
}

#[derive(Debug)]
struct Slot {
    dir: PathBuf,
    definition: Definition,
    loaded: OnceLock<Arc<Environment>>,
}

impl Environments {
    /// No environment: only algorithms that are modules run.
    pub fn none() -> Self {
        Self::default()
    }

    /// Reads every `*/environment.toml` under `dir`. A missing `dir` is an empty set; a broken
    /// definition is an error naming it. Modules are not read yet (see [`get`](Self::get)).
    pub fn load(dir: &Path) -> Result<Self> {
        let mut entries = BTreeMap::new();
        let listing = match std::fs::read_dir(dir) {
            Ok(listing) => listing,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self { dir: Some(dir.to_path_buf()), entries });
            }
            Err(e) => return Err(Error::Io { context: format!("listing {}", dir.display()), source: e }),
        };
        for entry in listing {
            let entry = entry.map_err(Error::io(format!("listing {}", dir.display())))?;
            let sub = entry.path();
            if !sub.join(DEFINITION_FILE).is_file() {
                continue;
            }
            let definition = read_definition(&sub)?;
            let name = definition.name.clone();
            if entries.contains_key(&name) {
                return Err(Error::EnvironmentUnavailable {
                    name,
                    reason: format!("defined twice under {}", dir.display()),
                });
            }
            entries.insert(name, Slot { dir: sub, definition, loaded: OnceLock::new() });
        }
        Ok(Self { dir: Some(dir.to_path_buf()), entries })
    }

    /// The names of the environments offered, sorted.
    pub fn names(&self) -> Vec<String> {
        self.entries.keys().cloned().collect()
    }

    /// What each environment offered is, for DDOs (from the definitions: nothing is loaded).
    pub fn describe(&self) -> Vec<EnvironmentDescription> {
        self.entries
            .values()
            .map(|s| EnvironmentDescription {
                name: s.definition.name.clone(),
                module_hash: s.definition.module_blake3,
                description: s.definition.description.clone(),
            })
            .collect()
    }

    /// The environment `name`, loaded (module read and checked against its pin, mounts hashed)
    /// on first use. Unknown names are refused with the list of those offered.
    pub fn get(&self, name: &str) -> Result<Arc<Environment>> {
        let slot = self.entries.get(name).ok_or_else(|| Error::UnknownEnvironment {
            name: name.to_string(),
            offered: self.names(),
            dir: self.dir.clone(),
        })?;
        if let Some(env) = slot.loaded.get() {
            return Ok(env.clone());
        }
        let env = Arc::new(Environment::from_definition(&slot.dir, slot.definition.clone())?);
        Ok(slot.loaded.get_or_init(|| env).clone())
    }

    /// Which environment runs the algorithm at `path`: `None` for a module (`.wasm`), else the
    /// environment whose entry file a directory holds, or whose extension a file has.
    pub fn pick(&self, path: &Path) -> Result<Option<String>> {
        if is_module(path) {
            return Ok(None);
        }
        let is_dir = path.is_dir();
        let fits = |s: &Slot| {
            if is_dir {
                path.join(&s.definition.algorithm.entry).is_file()
            } else {
                Environment::runs_file(&s.definition, path)
            }
        };
        if let Some(slot) = self.entries.values().find(|s| fits(s)) {
            return Ok(Some(slot.definition.name.clone()));
        }
        let entries: Vec<String> = self.entries.values().map(|s| s.definition.algorithm.entry.clone()).collect();
        let reason = if is_dir {
            format!(
                "{} holds no {}: an algorithm directory needs its entry file{}",
                path.display(),
                if entries.is_empty() { "entry file".to_string() } else { entries.join(" or ") },
                self.offered_suffix()
            )
        } else {
            format!(
                "cannot tell what runs {}: give a WebAssembly module (.wasm), a script or a directory for an \
                 environment{}",
                path.display(),
                self.offered_suffix()
            )
        };
        Err(Error::InvalidAlgorithm { reason })
    }

    fn offered_suffix(&self) -> String {
        if self.entries.is_empty() {
            match &self.dir {
                Some(d) => format!(" (no environment is installed in {}: run scripts/setup.sh)", d.display()),
                None => " (no environment is installed)".into(),
            }
        } else {
            let list: Vec<String> = self
                .entries
                .values()
                .map(|s| format!("{} ({})", s.definition.name, s.definition.algorithm.entry))
                .collect();
            format!("; environments: {}", list.join(", "))
        }
    }
}

/// True when `path` is a WebAssembly module, which runs as itself: a `.wasm` file, or a file
/// starting with the WebAssembly magic number.
pub fn is_module(path: &Path) -> bool {
    use std::io::Read;
    if path.is_dir() {
        return false;
    }
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("wasm")) {
        return true;
    }
    let mut magic = [0u8; 4];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && &magic == b"\0asm"
}
