//! A guest that does one bad thing, chosen by argv\[3\]:
//!
//! `spin` (loops forever), `alloc` (allocates until refused), `stdout` (prints forever),
//! `file` (writes one output file forever), `files` (creates output files forever), `sparse`
//! (seeks far and writes one byte), `exit N`, `panic`, `oob` (an out-of-bounds load), `sleep` (one hour),
//! `clock-spin` (busy-waits one virtual second).
tidepool_test_guests::entry!();

#[cfg(target_os = "wasi")]
mod guest {
    use std::hint::black_box;
    use std::io::Write;

    use tidepool_test_guests::*;

    pub fn main() {
        let args = args();
        match args.get(3).map(String::as_str).unwrap_or("") {
            "spin" => {
                let mut x = 0u64;
                loop {
                    x = black_box(x.wrapping_add(1));
                }
            }
            "alloc" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    black_box(&hoard);
                }
            }
            "stdout" => {
                let line = [b'x'; 1023];
                let mut out = std::io::stdout().lock();
                loop {
                    out.write_all(&line).unwrap();
                    out.write_all(b"\n").unwrap();
                }
            }
            "file" => {
                let fd = create(outputs(), "flood.bin");
                let chunk = vec![7u8; 64 * 1024];
                loop {
                    write(fd, &chunk).unwrap();
                }
            }
            "files" => {
                for i in 0.. {
                    put(outputs(), &format!("f{i:06}"), b"x");
                }
            }
            "sparse" => {
                let fd = create(outputs(), "sparse.bin");
                seek(fd, 1 << 40, WHENCE_SET).unwrap();
                write(fd, b"!").unwrap();
            }
            "exit" => std::process::exit(args[4].parse().unwrap()),
            "panic" => panic!("the algorithm gave up"),
            "oob" => {
                // SAFETY: none; the point is a wasm out-of-bounds trap, which ends the guest.
                let v = unsafe { std::ptr::read_volatile(black_box(0xffff_fff0usize) as *const u64) };
                println!("{v}");
            }
            "sleep" => {
                std::thread::sleep(std::time::Duration::from_secs(3600));
                println!("slept an hour");
            }
            "clock-spin" => {
                let start = std::time::Instant::now();
                let mut spins = 0u64;
                while start.elapsed() < std::time::Duration::from_secs(1) {
                    spins += 1;
                }
                println!("one virtual second after {spins} spins");
            }
            other => panic!("unknown mode {other:?}"),
        }
    }
}
