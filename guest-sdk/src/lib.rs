//! Write Tidepool algorithms: read the datasets a provider mounts, write results, report
//! progress. Compile to `wasm32-wasip1`; the same code also builds natively, so you can run and
//! benchmark it on your machine.
//!
//! ```no_run
//! use tidepool_guest::{Job, Result};
//!
//! tidepool_guest::main!(run);
//!
//! fn run(job: &Job) -> Result<()> {
//!     let mut lines = 0u64;
//!     for dataset in job.datasets()? {
//!         for file in dataset.files()? {
//!             lines += file.read_to_string()?.lines().count() as u64;
//!         }
//!     }
//!     job.write_output("lines.txt", format!("{lines}\n"))?;
//!     Ok(())
//! }
//! ```
//!
//! # The world an algorithm runs in
//!
//! * `argv` is `[<algorithm name>, <inputs dir>, <outputs dir>, extra args...]`. Under Tidepool
//!   the directories are `/data/inputs` and `/data/outputs`; natively, whatever you pass.
//! * `<inputs dir>/<dataset>/...`: one read-only directory per dataset.
//! * `<outputs dir>`: empty at start; everything written here is the job's output.
//! * The module itself is readable at `/algorithm/<name>.wasm`.
//! * The environment is empty. Clocks are virtual (they advance with work done, not wall time)
//!   and randomness is seeded per job, so a run is reproducible byte for byte.
//! * stdout and stderr are kept as logs (up to a cap). Lines this SDK writes to stderr with
//!   [`Job::progress`] and [`Job::metric`] are structured events the provider shows live:
//!   `@tidepool {"event":"progress","done":3,"total":10,"message":"..."}`.
//!
//! Return an error from your `run` function to fail the job: the message is printed to stderr
//! and the process exits with code 1.

#![warn(missing_docs)]

use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// The prefix of structured event lines on stderr.
pub const EVENT_PREFIX: &str = "@tidepool ";

/// An error that fails the job, with a human message.
#[derive(Debug)]
pub struct Error {
    message: String,
}

impl Error {
    /// An error with `message`, which the job prints on stderr before exiting with code 1.
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E: std::error::Error> From<E> for Error {
    fn from(e: E) -> Self {
        Self { message: e.to_string() }
    }
}

/// `Result` with the SDK's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds what was being done to an error: `file.open().context("opening the index")?`.
pub trait Context<T> {
    /// The error, if any, as an [`Error`] whose message starts with `what`.
    fn context(self, what: impl fmt::Display) -> Result<T>;
}

impl<T, E: fmt::Display> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl fmt::Display) -> Result<T> {
        self.map_err(|e| Error::new(format!("{what}: {e}")))
    }
}

/// The job being run: where its data is, its arguments, and how to report.
#[derive(Debug, Clone)]
pub struct Job {
    name: String,
    inputs: PathBuf,
    outputs: PathBuf,
    args: Vec<String>,
}

impl Job {
    /// Reads the job from the process arguments.
    pub fn from_env() -> Result<Self> {
        Self::from_args(std::env::args())
    }

    /// Reads the job from an argument list shaped like `argv`.
    pub fn from_args(args: impl IntoIterator<Item = String>) -> Result<Self> {
        let mut it = args.into_iter();
        let name = it.next().unwrap_or_else(|| "algorithm".into());
        let (Some(inputs), Some(outputs)) = (it.next(), it.next()) else {
            return Err(Error::new(format!("usage: {name} INPUTS_DIR OUTPUTS_DIR [ARGS...]")));
        };
        Ok(Self { name, inputs: inputs.into(), outputs: outputs.into(), args: it.collect() })
    }

    /// The algorithm's name (`argv[0]`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The extra arguments, after the inputs and outputs directories.
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// The value of `--flag VALUE` or `--flag=VALUE` among the extra arguments.
    pub fn arg(&self, flag: &str) -> Option<&str> {
        let mut it = self.args.iter();
        while let Some(a) = it.next() {
            if a == flag {
                return it.next().map(String::as_str);
            }
            if let Some(v) = a.strip_prefix(flag).and_then(|rest| rest.strip_prefix('=')) {
                return Some(v);
            }
        }
        None
    }

    /// The value of `--flag`, parsed, or `default` when absent.
    pub fn arg_or<T: std::str::FromStr>(&self, flag: &str, default: T) -> Result<T>
    where
        T::Err: fmt::Display,
    {
        match self.arg(flag) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|e| Error::new(format!("invalid value `{v}` for {flag}: {e}"))),
        }
    }

    /// True when `--flag` is among the extra arguments.
    pub fn has_flag(&self, flag: &str) -> bool {
        self.args.iter().any(|a| a == flag)
    }

    /// The directory holding the datasets.
    pub fn inputs_dir(&self) -> &Path {
        &self.inputs
    }

    /// The directory outputs go to.
    pub fn outputs_dir(&self) -> &Path {
        &self.outputs
    }

    /// Every mounted dataset, sorted by name.
    pub fn datasets(&self) -> Result<Vec<Dataset>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.inputs).context(format!("listing {}", self.inputs.display()))? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                out.push(Dataset { name: entry.file_name().to_string_lossy().into_owned(), path: entry.path() });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The dataset mounted as `name`.
    pub fn dataset(&self, name: &str) -> Result<Dataset> {
        let path = self.inputs.join(name);
        if !path.is_dir() {
            return Err(Error::new(format!("no dataset named `{name}` is mounted")));
        }
        Ok(Dataset { name: name.to_string(), path })
    }

    /// Every file of every dataset, sorted by dataset then path.
    pub fn all_files(&self) -> Result<Vec<InputFile>> {
        let mut out = Vec::new();
        for d in self.datasets()? {
            out.extend(d.files()?);
        }
        Ok(out)
    }

    /// Creates (or truncates) the output file at `relative` (parents created as needed),
    /// buffered.
    pub fn create_output(&self, relative: &str) -> Result<BufWriter<File>> {
        let path = self.output_path(relative)?;
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).context(format!("creating {}", parent.display()))?;
        }
        let file = File::create(&path).context(format!("creating {}", path.display()))?;
        Ok(BufWriter::with_capacity(256 * 1024, file))
    }

    /// Writes a whole output file.
    pub fn write_output(&self, relative: &str, contents: impl AsRef<[u8]>) -> Result<()> {
        let mut w = self.create_output(relative)?;
        w.write_all(contents.as_ref())?;
        w.flush()?;
        Ok(())
    }

    fn output_path(&self, relative: &str) -> Result<PathBuf> {
        let rel = Path::new(relative);
        let escapes = rel.is_absolute()
            || rel.components().any(|c| !matches!(c, std::path::Component::Normal(_) | std::path::Component::CurDir));
        if relative.is_empty() || escapes {
            return Err(Error::new(format!("output path `{relative}` must be relative and stay inside the outputs")));
        }
        Ok(self.outputs.join(rel))
    }

    /// Reports progress: `done` of `total` units (pass `None` when the total is unknown).
    pub fn progress(&self, done: u64, total: Option<u64>, message: &str) {
        let total = total.map_or_else(|| "null".to_string(), |t| t.to_string());
        emit(&format!(r#"{{"event":"progress","done":{done},"total":{total},"message":{}}}"#, json_string(message)));
    }

    /// Reports a named measurement.
    pub fn metric(&self, name: &str, value: f64) {
        let value = if value.is_finite() { value.to_string() } else { "null".to_string() };
        emit(&format!(r#"{{"event":"metric","name":{},"value":{value}}}"#, json_string(name)));
    }
}

fn emit(json: &str) {
    // Best effort: a full stderr must not fail the job.
    let _ = writeln!(io::stderr().lock(), "{EVENT_PREFIX}{json}");
}

/// A JSON string literal for `s`.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One mounted dataset.
#[derive(Debug, Clone)]
pub struct Dataset {
    name: String,
    path: PathBuf,
}

impl Dataset {
    /// The dataset's name (its directory under `/data/inputs`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its directory (`/data/inputs/<name>`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every regular file in the dataset, recursively, sorted by relative path. Symlinks are
    /// followed when they stay inside the mount (the sandbox refuses the others).
    pub fn files(&self) -> Result<Vec<InputFile>> {
        let mut out = Vec::new();
        walk(&self.path, "", &self.name, &mut out)?;
        out.sort_by(|a, b| a.relative.cmp(&b.relative));
        Ok(out)
    }
}

fn walk(dir: &Path, prefix: &str, dataset: &str, out: &mut Vec<InputFile>) -> Result<()> {
    for entry in fs::read_dir(dir).context(format!("listing {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let relative = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
        let path = entry.path();
        let Ok(meta) = fs::metadata(&path) else { continue };
        if meta.is_dir() {
            walk(&path, &relative, dataset, out)?;
        } else if meta.is_file() {
            out.push(InputFile { dataset: dataset.to_string(), relative, path, size: meta.len() });
        }
    }
    Ok(())
}

/// A file of a dataset.
#[derive(Debug, Clone)]
pub struct InputFile {
    dataset: String,
    relative: String,
    path: PathBuf,
    size: u64,
}

impl InputFile {
    /// The dataset it belongs to.
    pub fn dataset(&self) -> &str {
        &self.dataset
    }

    /// Its path inside the dataset, `/`-separated.
    pub fn relative_path(&self) -> &str {
        &self.relative
    }

    /// Its full path in the guest (`/data/inputs/<dataset>/<relative path>`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its size in bytes, when it was listed.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The lowercase extension, if any.
    pub fn extension(&self) -> Option<String> {
        self.path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase())
    }

    /// Opens the file, buffered.
    pub fn open(&self) -> Result<BufReader<File>> {
        let f = File::open(&self.path).context(format!("opening {}/{}", self.dataset, self.relative))?;
        Ok(BufReader::with_capacity(256 * 1024, f))
    }

    /// Reads the whole file.
    pub fn read(&self) -> Result<Vec<u8>> {
        let mut buf = Vec::with_capacity(self.size as usize);
        self.open()?.read_to_end(&mut buf)?;
        Ok(buf)
    }

    /// Reads the whole file as text; an error when it is not UTF-8.
    pub fn read_to_string(&self) -> Result<String> {
        String::from_utf8(self.read()?)
            .map_err(|_| Error::new(format!("{}/{} is not UTF-8", self.dataset, self.relative)))
    }
}

/// Runs `f` as the job's body and turns its result into an exit code (0, or 1 after printing
/// the error). Used by [`main!`].
pub fn run_main(f: impl FnOnce(&Job) -> Result<()>) -> i32 {
    let outcome = Job::from_env().and_then(|job| f(&job));
    match outcome {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(io::stderr().lock(), "error: {e}");
            1
        }
    }
}

/// Declares `main` for an algorithm: `tidepool_guest::main!(run);` with
/// `fn run(job: &Job) -> tidepool_guest::Result<()>`.
#[macro_export]
macro_rules! main {
    ($run:path) => {
        fn main() {
            let code = $crate::run_main($run);
            if code != 0 {
                ::std::process::exit(code);
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(args: &[&str]) -> Job {
        Job::from_args(["algo", "in", "out"].iter().chain(args).map(|s| s.to_string())).unwrap()
    }

    #[test]
    fn arguments() {
        let j = job(&["--top", "5", "--min=3", "--verbose"]);
        assert_eq!(j.arg("--top"), Some("5"));
        assert_eq!(j.arg("--min"), Some("3"));
        assert_eq!(j.arg_or("--top", 100u32).unwrap(), 5);
        assert_eq!(j.arg_or("--absent", 7u32).unwrap(), 7);
        assert!(j.arg_or::<u32>("--min", 0).is_ok());
        assert!(job(&["--top", "x"]).arg_or::<u32>("--top", 1).is_err());
        assert!(j.has_flag("--verbose"));
        assert!(Job::from_args(["algo".to_string()]).is_err());
    }

    #[test]
    fn output_paths_stay_inside() {
        let j = job(&[]);
        assert!(j.output_path("a/b.txt").is_ok());
        assert!(j.output_path("../escape").is_err());
        assert!(j.output_path("/abs").is_err());
        assert!(j.output_path("").is_err());
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\n\u{1}"), r#""a\"b\\c\n\u0001""#);
    }

    #[test]
    fn datasets_and_files_are_sorted() {
        let tmp = std::env::temp_dir().join(format!("tidepool-guest-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        for p in ["in/b/z.txt", "in/b/sub/a.txt", "in/a/x.txt"] {
            let p = tmp.join(p);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, b"hi").unwrap();
        }
        let j =
            Job::from_args(["t".into(), tmp.join("in").display().to_string(), tmp.join("out").display().to_string()])
                .unwrap();
        let names: Vec<String> = j.datasets().unwrap().iter().map(|d| d.name().to_string()).collect();
        assert_eq!(names, ["a", "b"]);
        let files: Vec<String> = j.all_files().unwrap().iter().map(|f| f.relative_path().to_string()).collect();
        assert_eq!(files, ["x.txt", "sub/a.txt", "z.txt"]);
        j.write_output("deep/result.txt", "ok").unwrap();
        assert_eq!(fs::read_to_string(tmp.join("out/deep/result.txt")).unwrap(), "ok");
        fs::remove_dir_all(&tmp).unwrap();
    }
}
