//! Test support: the wasm modules the tests run (the test guests in `tests/guests/src/bin/*.rs`
//! and the example algorithms, built for `wasm32-wasip1` by this crate's build script), and
//! fixtures shared by the test suites.

#![warn(missing_docs)]

use std::path::PathBuf;

pub mod cluster;
pub mod daemon;

/// The directory holding every built module.
pub fn dir() -> PathBuf {
    PathBuf::from(env!("TIDEPOOL_GUESTS_DIR"))
}

/// The module built from `tests/guests/src/bin/<name>.rs` or from the example `<name>`.
///
/// Panics when it does not exist: that is a mistake in the test, not a condition to handle.
pub fn module(name: &str) -> PathBuf {
    let path = dir().join(format!("{name}.wasm"));
    assert!(path.exists(), "no guest module {} (is there a tests/guests/src/bin/{name}.rs?)", path.display());
    path
}

/// Writes `files` (relative path, contents) under a new temporary directory.
pub fn dataset(files: &[(&str, &[u8])]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    for (path, contents) in files {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().expect("a file path has a parent")).expect("creating a dataset directory");
        std::fs::write(p, contents).expect("writing a dataset file");
    }
    dir
}

/// The compile cache every test binary shares (under the target directory), so that a module
/// is compiled once per target directory, not once per test binary or run: the Python
/// environment's module takes a minute to compile in a debug build.
pub fn compile_cache() -> PathBuf {
    PathBuf::from(env!("TIDEPOOL_TARGET_DIR")).join("tmp").join("compile-cache")
}

/// Where `scripts/setup.sh` installed the environments (the rule `tidepool` follows by
/// default): `$TIDEPOOL_ENVIRONMENTS_DIR`, else `$XDG_DATA_HOME/tidepool/environments`, else
/// `~/.local/share/tidepool/environments`.
pub fn installed_environments() -> PathBuf {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    var("TIDEPOOL_ENVIRONMENTS_DIR").unwrap_or_else(|| {
        var("XDG_DATA_HOME")
            .or_else(|| var("HOME").map(|h| h.join(".local/share")))
            .unwrap_or_else(|| PathBuf::from("."))
            .join("tidepool/environments")
    })
}

/// Where [`environments`] assembles the test environments (without assembling them).
fn environments_dir() -> PathBuf {
    PathBuf::from(env!("TIDEPOOL_TARGET_DIR")).join("test-environments")
}

/// The environments the tests run in: this checkout's definitions and Python SDK (so a test
/// sees the SDK as it is in the working tree), with the modules `scripts/setup.sh` installed.
/// Assembled under the target directory; panics naming the fix when a module is missing.
pub fn environments() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let workspace = PathBuf::from(env!("TIDEPOOL_WORKSPACE_DIR"));
        let dir = environments_dir();
        let python = dir.join("python-3.12");
        let module = installed_environments().join("python-3.12/python-3.12.0.wasm");
        assert!(
            module.is_file(),
            "the Python environment's module {} is missing: run scripts/setup.sh",
            module.display()
        );
        let files = [
            (workspace.join("environments/python-3.12/environment.toml"), python.join("environment.toml")),
            (workspace.join("guest-sdk/python/tidepool.py"), python.join("sdk/tidepool.py")),
        ];
        std::fs::create_dir_all(python.join("sdk")).expect("creating the test environments");
        for (from, to) in files {
            let contents = std::fs::read(&from).unwrap_or_else(|e| panic!("reading {}: {e}", from.display()));
            if std::fs::read(&to).ok().as_deref() != Some(&contents[..]) {
                // Written aside and renamed, so a test binary running at the same time never
                // reads half a file.
                let tmp = to.with_extension(format!("tmp{}", std::process::id()));
                std::fs::write(&tmp, &contents).expect("writing the test environments");
                std::fs::rename(&tmp, &to).expect("writing the test environments");
            }
        }
        let link = python.join("python-3.12.0.wasm");
        if std::fs::read_link(&link).ok().as_deref() != Some(module.as_path()) {
            let tmp = link.with_extension(format!("tmp{}", std::process::id()));
            let _ = std::fs::remove_file(&tmp);
            std::os::unix::fs::symlink(&module, &tmp).expect("linking the Python module");
            std::fs::rename(&tmp, &link).expect("linking the Python module");
        }
        dir
    })
    .clone()
}

/// A valid WASI command module (exports `_start` and `memory`) that defines `functions` empty
/// functions: a few bytes each, so a million of them make a module of about 5 MB that would
/// take minutes and gigabytes to compile.
pub fn module_with_functions(functions: u32) -> Vec<u8> {
    fn leb(mut n: u32, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    fn section(id: u8, body: &[u8], out: &mut Vec<u8>) {
        out.push(id);
        leb(body.len() as u32, out);
        out.extend_from_slice(body);
    }
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    section(1, &[1, 0x60, 0, 0], &mut module); // one type: [] -> []
    let mut funcs = Vec::new();
    leb(functions, &mut funcs);
    funcs.resize(funcs.len() + functions as usize, 0); // each of type 0
    section(3, &funcs, &mut module);
    section(5, &[1, 0, 1], &mut module); // one memory of one page
    let mut exports = vec![2, 6];
    exports.extend_from_slice(b"_start");
    exports.extend_from_slice(&[0, 0, 6]);
    exports.extend_from_slice(b"memory");
    exports.extend_from_slice(&[2, 0]);
    section(7, &exports, &mut module);
    let mut code = Vec::new();
    leb(functions, &mut code);
    for _ in 0..functions {
        code.extend_from_slice(&[2, 0, 0x0b]); // size 2: no locals, `end`
    }
    section(10, &code, &mut module);
    module
}
