//! Word frequency over every file of every mounted dataset.
//!
//! A word is a maximal run of ASCII letters and digits and non-ASCII (UTF-8) bytes; ASCII is
//! lowercased. Writes `wordfreq.csv` (`word,count`, most frequent first, ties by word) and
//! `summary.json`.
//!
//! Arguments: `--top N` (default 100; 0 keeps every word), `--min-length N` (default 1).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{Read, Write};

use tidepool_guest::{Job, Result};

tidepool_guest::main!(run);

fn run(job: &Job) -> Result<()> {
    let top: usize = job.arg_or("--top", 100)?;
    let min_length: usize = job.arg_or("--min-length", 1)?;
    let files = job.all_files()?;
    let total: u64 = files.iter().map(|f| f.size()).sum();
    let mut counter = WordCounter::default();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    for file in &files {
        let mut reader = file.open()?;
        loop {
            let n = reader.read(&mut buf)?;
            if n == 0 {
                break;
            }
            counter.feed(&buf[..n]);
            done += n as u64;
        }
        counter.end_word();
        job.progress(done, Some(total), &format!("{}/{}", file.dataset(), file.relative_path()));
    }

    let words = counter.total;
    let mut ranked: Vec<(&[u8], u64)> =
        counter.counts.iter().filter(|(w, _)| w.len() >= min_length).map(|(w, c)| (&w[..], *c)).collect();
    ranked.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    if top > 0 {
        ranked.truncate(top);
    }
    let mut out = job.create_output("wordfreq.csv")?;
    writeln!(out, "word,count")?;
    for (word, count) in &ranked {
        writeln!(out, "{},{count}", String::from_utf8_lossy(word))?;
    }
    out.flush()?;
    job.write_output(
        "summary.json",
        format!(
            "{{\"files\":{},\"bytes\":{},\"words\":{},\"distinct\":{}}}\n",
            files.len(),
            done,
            words,
            counter.counts.len()
        ),
    )?;
    job.metric("words", words as f64);
    job.metric("distinct_words", counter.counts.len() as f64);
    println!("{} files, {} bytes, {} words, {} distinct", files.len(), done, words, counter.counts.len());
    Ok(())
}

/// FxHash: fast, and the same on every platform (no random keys).
#[derive(Default)]
struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(b)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[derive(Default)]
struct WordCounter {
    counts: HashMap<Box<[u8]>, u64, BuildHasherDefault<FxHasher>>,
    word: Vec<u8>,
    total: u64,
}

impl WordCounter {
    fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b.is_ascii_alphanumeric() || b >= 0x80 {
                self.word.push(b.to_ascii_lowercase());
            } else if !self.word.is_empty() {
                self.end_word();
            }
        }
    }

    fn end_word(&mut self) {
        if self.word.is_empty() {
            return;
        }
        self.total += 1;
        match self.counts.get_mut(&self.word[..]) {
            Some(c) => *c += 1,
            None => {
                self.counts.insert(self.word.clone().into_boxed_slice(), 1);
            }
        }
        self.word.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_span_chunks_and_are_lowercased() {
        let mut c = WordCounter::default();
        c.feed(b"The cat; the ca");
        c.feed(b"t. THE end");
        c.end_word();
        assert_eq!(c.counts[&b"the"[..]], 3);
        assert_eq!(c.counts[&b"cat"[..]], 2);
        assert_eq!(c.total, 6);
    }
}
