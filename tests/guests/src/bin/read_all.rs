//! Reads every file under /data/inputs with 1 MiB reads and prints how many bytes it read:
//! the I/O benchmark guest.
use std::io::Read;

fn main() {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    let mut stack = vec![std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "/data/inputs".into()))];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(mut f) = std::fs::File::open(&path) {
                while let Ok(n) = f.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    total += n as u64;
                }
            }
        }
    }
    println!("{total}");
}
