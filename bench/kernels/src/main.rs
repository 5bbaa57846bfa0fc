//! `kernels --kernel NAME [--reps N]`: generates the kernel's input, runs the kernel N times
//! (default 1; 0 measures the generation alone) and prints the checksum. Under Tidepool the
//! usual inputs and outputs directories come first; they are ignored.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1));
    let Some(workload) = value("--kernel").and_then(|k| tidepool_bench_kernels::prepare(k)) else {
        eprintln!("usage: kernels --kernel {} [--reps N]", tidepool_bench_kernels::KERNELS.join("|"));
        return ExitCode::from(2);
    };
    let Ok(reps) = value("--reps").map_or(Ok(1), |r| r.parse::<u32>()) else {
        eprintln!("--reps must be a number");
        return ExitCode::from(2);
    };
    let mut checksum = 0u64;
    for _ in 0..reps {
        checksum = std::hint::black_box(workload.run());
    }
    println!("{} {checksum:016x}", workload.kernel());
    ExitCode::SUCCESS
}
