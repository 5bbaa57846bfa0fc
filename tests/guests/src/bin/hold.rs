//! A small job that holds memory: allocates argv\[3\] MiB (default 8), writes every byte,
//! sweeps over it argv\[4\] times (default 1) and prints a checksum. The daemon memory
//! benchmark runs a hundred of these at once.
tidepool_test_guests::entry!();

#[cfg(target_os = "wasi")]
mod guest {
    pub fn main() {
        let args = tidepool_test_guests::args();
        let arg = |i: usize, default: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
        let (mib, sweeps) = (arg(3, 8), arg(4, 1));
        let mut held = vec![0u8; mib << 20];
        let mut sum = 0u64;
        for sweep in 0..sweeps {
            for (i, b) in held.iter_mut().enumerate() {
                *b = b.wrapping_add((i ^ sweep) as u8);
            }
            sum = held.iter().fold(sum, |acc, &b| acc.wrapping_mul(31).wrapping_add(u64::from(b)));
        }
        println!("{sum}");
    }
}
