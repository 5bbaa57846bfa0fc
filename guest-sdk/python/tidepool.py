"""Write Tidepool algorithms in Python: read the datasets a provider mounts, write results,
report progress. The same API as the Rust guest SDK (`tidepool-guest`).

    import tidepool

    def run(job):
        lines = 0
        for dataset in job.datasets():
            for file in dataset.files():
                lines += file.read_to_string().count("\\n")
        job.write_output("lines.txt", f"{lines}\\n")

    tidepool.main(run)

The world an algorithm runs in (the `python-3.12` environment):

* `sys.argv` is `["/algorithm/main.py", "/data/inputs", "/data/outputs", ARGS...]`. Run
  natively, `python3 main.py INPUTS_DIR OUTPUTS_DIR ARGS...` gives the same shape.
* `<inputs dir>/<dataset>/...`: one read-only directory per dataset.
* `<outputs dir>`: empty at start; everything written here is the job's output.
* Your algorithm (the script as `main.py`, or your directory) is read-only under `/algorithm`,
  and this module under `/sdk`; the standard library is CPython 3.12's, nothing else.
* Clocks are virtual (they advance with work done, not wall time), randomness is seeded per
  job and `hash()` of strings is fixed, so a run is reproducible byte for byte.
* stdout and stderr are kept as logs (up to a cap). Lines written by `Job.progress` and
  `Job.metric` are structured events the provider shows live:
  `@tidepool {"event":"progress","done":3,"total":10,"message":"..."}`.

Raise `tidepool.Error` from your `run` function to fail the job with a message (printed to
stderr as `error: ...`, exit code 1); any other exception prints its traceback and exits 1.
"""

import math
import os
import stat
import sys

__all__ = [
    "EVENT_PREFIX",
    "Dataset",
    "Error",
    "InputFile",
    "Job",
    "format_float",
    "json_string",
    "main",
    "run_main",
]

#: The prefix of structured event lines on stderr.
EVENT_PREFIX = "@tidepool "

_BUFFER = 256 * 1024


class Error(Exception):
    """An error that fails the job, with a human message."""


class Job:
    """The job being run: where its data is, its arguments, and how to report."""

    def __init__(self, name, inputs, outputs, args):
        self._name = name
        self._inputs = inputs
        self._outputs = outputs
        self._args = list(args)

    @classmethod
    def from_env(cls):
        """Reads the job from the process arguments (`sys.argv`)."""
        return cls.from_args(sys.argv)

    @classmethod
    def from_args(cls, argv):
        """Reads the job from an argument list shaped like `sys.argv`."""
        argv = list(argv)
        name = _stem(argv[0]) if argv else "algorithm"
        if len(argv) < 3:
            raise Error(f"usage: {name} INPUTS_DIR OUTPUTS_DIR [ARGS...]")
        return cls(name, argv[1], argv[2], argv[3:])

    @property
    def name(self):
        """The algorithm's name: the script's file name without `.py`."""
        return self._name

    @property
    def args(self):
        """The extra arguments, after the inputs and outputs directories."""
        return list(self._args)

    def arg(self, flag):
        """The value of `--flag VALUE` or `--flag=VALUE` among the extra arguments, or None."""
        it = iter(self._args)
        for a in it:
            if a == flag:
                return next(it, None)
            if a.startswith(flag + "="):
                return a[len(flag) + 1 :]
        return None

    def arg_or(self, flag, default):
        """The value of `--flag`, converted to the type of `default`, or `default` when absent."""
        value = self.arg(flag)
        if value is None:
            return default
        kind = type(default)
        if kind is bool:
            if value in ("true", "false"):
                return value == "true"
            raise Error(f"invalid value `{value}` for {flag}: expected true or false")
        try:
            return value if kind is str or default is None else kind(value)
        except (TypeError, ValueError) as e:
            raise Error(f"invalid value `{value}` for {flag}: {e}") from None

    def has_flag(self, flag):
        """True when `--flag` is among the extra arguments."""
        return flag in self._args

    @property
    def inputs_dir(self):
        """The directory holding the datasets."""
        return self._inputs

    @property
    def outputs_dir(self):
        """The directory outputs go to."""
        return self._outputs

    def datasets(self):
        """Every mounted dataset, sorted by name."""
        try:
            with os.scandir(self._inputs) as entries:
                found = [Dataset(e.name, e.path) for e in entries if e.is_dir(follow_symlinks=False)]
        except OSError as e:
            raise Error(f"listing {self._inputs}: {e.strerror or e}") from None
        found.sort(key=lambda d: d.name)
        return found

    def dataset(self, name):
        """The dataset mounted as `name`."""
        path = os.path.join(self._inputs, name)
        if not os.path.isdir(path):
            raise Error(f"no dataset named `{name}` is mounted")
        return Dataset(name, path)

    def all_files(self):
        """Every file of every dataset, sorted by dataset then path."""
        return [f for d in self.datasets() for f in d.files()]

    def create_output(self, relative, binary=False):
        """Creates (or truncates) the output file at `relative`, parents created as needed, and
        returns it open for writing: text (UTF-8, `\\n` line ends) or, with `binary=True`, bytes.
        Use it in a `with` block."""
        path = self._output_path(relative)
        parent = os.path.dirname(path)
        try:
            # Only below the outputs directory: its own parent, /data, is not in the guest's
            # world (only the mounts are), so makedirs must not walk up to it.
            if not os.path.isdir(parent):
                os.makedirs(parent, exist_ok=True)
        except OSError as e:
            raise Error(f"creating {parent}: {e.strerror or e}") from None
        try:
            if binary:
                return open(path, "wb", buffering=_BUFFER)
            return open(path, "w", buffering=_BUFFER, encoding="utf-8", newline="\n")
        except OSError as e:
            raise Error(f"creating {path}: {e.strerror or e}") from None

    def write_output(self, relative, contents):
        """Writes a whole output file: `str` (as UTF-8) or bytes."""
        data = contents.encode("utf-8") if isinstance(contents, str) else bytes(contents)
        with self.create_output(relative, binary=True) as f:
            f.write(data)

    def _output_path(self, relative):
        parts = relative.split("/")
        if not relative or relative.startswith("/") or any(p == ".." for p in parts):
            raise Error(f"output path `{relative}` must be relative and stay inside the outputs")
        return os.path.join(self._outputs, *[p for p in parts if p not in ("", ".")])

    def progress(self, done, total=None, message=""):
        """Reports progress: `done` of `total` units (leave `total` None when unknown)."""
        total = "null" if total is None else str(int(total))
        _emit(f'{{"event":"progress","done":{int(done)},"total":{total},"message":{json_string(message)}}}')

    def metric(self, name, value):
        """Reports a named measurement."""
        value = float(value)
        shown = format_float(value) if math.isfinite(value) else "null"
        _emit(f'{{"event":"metric","name":{json_string(name)},"value":{shown}}}')


def _emit(json):
    # Best effort: a full or closed stderr must not fail the job.
    try:
        sys.stderr.write(EVENT_PREFIX + json + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _stem(path):
    base = os.path.basename(path)
    return base[:-3] if base.endswith(".py") and len(base) > 3 else (base or "algorithm")


def json_string(s):
    """A JSON string literal for `s`, escaped as the Rust SDK escapes it (non-ASCII kept)."""
    out = ['"']
    for c in s:
        if c == '"':
            out.append('\\"')
        elif c == "\\":
            out.append("\\\\")
        elif c == "\n":
            out.append("\\n")
        elif c == "\r":
            out.append("\\r")
        elif c == "\t":
            out.append("\\t")
        elif ord(c) < 0x20:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


def format_float(x):
    """`x` as Rust's `f64` Display writes it: the shortest digits that read back as `x`, never
    an exponent (`8.0` is `8`, `1e21` is `1000000000000000000000`, `1.5e-7` is `0.00000015`)."""
    x = float(x)
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    text = repr(x)  # the shortest round-trip digits, perhaps with an exponent
    sign = "-" if text.startswith("-") else ""
    mantissa, _, exponent = text.lstrip("-").partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = whole + fraction
    point = len(whole) + (int(exponent) if exponent else 0)
    stripped = digits.lstrip("0")
    point -= len(digits) - len(stripped)
    digits = stripped.rstrip("0")
    if not digits:
        return sign + "0"
    digits, point = _round_ties_up(abs(x), digits, point)
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return sign + digits + "0" * (point - len(digits))
    return f"{sign}{digits[:point]}.{digits[point:]}"


def _round_ties_up(x, digits, point):
    """Python's shortest digits break an exact tie between two candidates toward an even last
    digit; Rust's toward the larger one. Returns Rust's digits for `x` (positive)."""
    n, d = x.as_integer_ratio()
    exponent = point - len(digits)  # the value of the digits is int(digits) * 10**exponent
    low = int(digits)
    # Is x exactly halfway between low and low + 1 (in units of 10**exponent)?
    if exponent >= 0:
        tie = 2 * n == (2 * low + 1) * 10**exponent * d
    else:
        tie = 2 * n * 10**-exponent == (2 * low + 1) * d
    if not tie:
        return digits, point
    up = str(low + 1)
    candidate = float(f"{up}e{exponent}")
    if candidate != x:
        return digits, point
    point += len(up) - len(digits)
    return up.rstrip("0"), point


class Dataset:
    """One mounted dataset."""

    def __init__(self, name, path):
        self.name = name
        self.path = path

    def __repr__(self):
        return f"Dataset({self.name!r})"

    def files(self):
        """Every regular file in the dataset, recursively, sorted by relative path. Symlinks are
        followed when they stay inside the mount (the sandbox refuses the others)."""
        out = []
        _walk(self.path, "", self.name, out)
        out.sort(key=lambda f: f.relative_path)
        return out


def _walk(directory, prefix, dataset, out):
    try:
        with os.scandir(directory) as it:
            entries = list(it)
    except OSError as e:
        raise Error(f"listing {directory}: {e.strerror or e}") from None
    for entry in entries:
        relative = f"{prefix}/{entry.name}" if prefix else entry.name
        try:
            st = os.stat(entry.path)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            _walk(entry.path, relative, dataset, out)
        elif stat.S_ISREG(st.st_mode):
            out.append(InputFile(dataset, relative, entry.path, st.st_size))


class InputFile:
    """A file of a dataset."""

    def __init__(self, dataset, relative_path, path, size):
        self.dataset = dataset
        self.relative_path = relative_path
        self.path = path
        self.size = size

    def __repr__(self):
        return f"InputFile({self.dataset!r}, {self.relative_path!r})"

    @property
    def extension(self):
        """The lowercase (ASCII) extension, or None: `csv` for `a/b.CSV`, None for `.profile`."""
        base = os.path.basename(self.path)
        stem, dot, ext = base.rpartition(".")
        if not dot or not stem:
            return None
        return ext.translate(_ASCII_LOWER)

    def open(self):
        """Opens the file for reading bytes, buffered. Use it in a `with` block."""
        try:
            return open(self.path, "rb", buffering=_BUFFER)
        except OSError as e:
            raise Error(f"opening {self.dataset}/{self.relative_path}: {e.strerror or e}") from None

    def read(self):
        """The whole file, as bytes."""
        with self.open() as f:
            return f.read()

    def read_to_string(self):
        """The whole file, as text (it must be UTF-8)."""
        try:
            return self.read().decode("utf-8")
        except UnicodeDecodeError:
            raise Error(f"{self.dataset}/{self.relative_path} is not UTF-8") from None


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def run_main(run):
    """Runs `run(job)` as the job's body; returns the exit code (0, or 1 after printing a
    `tidepool.Error` as `error: ...`). Other exceptions propagate, with their traceback."""
    try:
        run(Job.from_env())
    except Error as e:
        _emit_error(e)
        return 1
    return 0


def _emit_error(e):
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        pass
    sys.stderr.write(f"error: {e}\n")
    sys.stderr.flush()


def main(run):
    """Runs an algorithm: `tidepool.main(run)` at the end of `main.py`, with
    `def run(job): ...`. Exits with the code `run_main` gives."""
    code = run_main(run)
    if code != 0:
        sys.exit(code)
