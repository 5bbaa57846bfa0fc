//! Word frequency over every file of every mounted dataset.
//!
//! A word is a maximal run of ASCII letters and digits and non-ASCII (UTF-8) bytes; ASCII is
//! lowercased. Writes `wordfreq.csv` (`word,count`, most frequent first, ties by word) and
//! `summary.json`.
//!
//! Arguments: `--top N` (default 100; 0 keeps every word), `--min-length N` (default 1).
//!
//! The library holds the algorithm ([`run`]) and its kernel ([`WordCounter`]), so the
//! benchmarks can run the same code natively; `src/main.rs` is the command.

#![warn(missing_docs)]

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{Read, Write};

use tidepool_guest::{Job, Result};

/// The algorithm: count the words of every input file, write the ranking.
pub fn run(job: &Job) -> Result<()> {
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
    let ranked = counter.ranked(top, min_length);
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
            counter.distinct()
        ),
    )?;
    job.metric("words", words as f64);
    job.metric("distinct_words", counter.distinct() as f64);
    println!("{} files, {} bytes, {} words, {} distinct", files.len(), done, words, counter.distinct());
    Ok(())
}

/// FxHash: fast, and the same on every platform (no random keys).
#[derive(Default)]
struct FxHasher(u64);

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(b));
        }
    }

    fn write_u128(&mut self, i: u128) {
        self.add(i as u64);
        self.add((i >> 64) as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Which bytes belong to words: ASCII letters and digits, and every non-ASCII byte.
const WORD_BYTE: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = (b as u8).is_ascii_alphanumeric() || b >= 0x80;
        b += 1;
    }
    t
};

/// Words of up to this many bytes are counted under a packed integer key: hashing and
/// comparing them is a couple of integer operations, not a hash over bytes and a `memcmp`.
const SHORT: usize = 15;

/// `word` (at most [`SHORT`] bytes, ASCII lowercased) as a key: its bytes, zero padded, and
/// its length in the top byte, so different words never share a key. Reads the bytes eight at
/// a time and lowercases them eight at a time.
fn pack(word: &[u8]) -> u128 {
    let n = word.len();
    debug_assert!(n <= SHORT);
    let (lo, hi) = if n >= 8 {
        // Bytes 8.. are the top `n - 8` bytes of the last eight.
        let tail = le_u64(&word[n - 8..]);
        (le_u64(&word[..8]), if n > 8 { tail >> (8 * (16 - n)) } else { 0 })
    } else if n >= 4 {
        let (head, tail) = (u64::from(le_u32(&word[..4])), u64::from(le_u32(&word[n - 4..])));
        (head | (tail >> (8 * (8 - n)) << 32), 0)
    } else {
        (word.iter().rev().fold(0u64, |k, &b| (k << 8) | u64::from(b)), 0)
    };
    u128::from(to_lower(lo)) | (u128::from(to_lower(hi) | ((n as u64) << 56)) << 64)
}

fn le_u64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b[..8].try_into().expect("eight bytes"))
}

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes(b[..4].try_into().expect("four bytes"))
}

/// ASCII lowercase of eight bytes at once (bytes from 0x80 up are left as they are).
fn to_lower(x: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let low7 = x & (0x7f * ONES);
    // The top bit of each byte: set where the byte is at least `A`, and where it is past `Z`
    // (no carries cross bytes: 0x7f + 0x3f < 0x100).
    let from_a = low7 + (0x80 - u64::from(b'A')) * ONES;
    let past_z = low7 + (0x80 - u64::from(b'Z') - 1) * ONES;
    let upper = from_a & !past_z & !x & (0x80 * ONES);
    x | (upper >> 2)
}

/// Where the word starting at `i` ends: the first separator from `i` on, or the end.
fn word_end(bytes: &[u8], i: usize) -> usize {
    find(bytes, i, |words| !words)
}

/// The first word byte from `i` on, or the end. Byte by byte: words are mostly one separator
/// apart, and a step of eight costs more than one byte's.
fn separators_end(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() && !WORD_BYTE[usize::from(bytes[i])] {
        i += 1;
    }
    i
}

/// The first byte from `i` on that `wanted` marks, or the end. `wanted` turns the word bytes
/// of eight (as [`word_bytes`] marks them) into the ones sought: eight bytes per step, so a
/// word or a run of separators takes a step or two, not a step per byte.
#[inline(always)]
fn find(bytes: &[u8], mut i: usize, wanted: impl Fn(u64) -> u64) -> usize {
    while i + 8 <= bytes.len() {
        let found = wanted(word_bytes(le_u64(&bytes[i..]))) & HIGH_BITS;
        if found != 0 {
            return i + (found.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    let words = |b: &u8| wanted(if WORD_BYTE[usize::from(*b)] { HIGH_BITS } else { 0 }) & HIGH_BITS != 0;
    bytes[i..].iter().position(words).map_or(bytes.len(), |k| i + k)
}

const HIGH_BITS: u64 = 0x8080_8080_8080_8080;

/// The top bit of each of the eight bytes of `x` (little-endian) set where the byte belongs to
/// a word ([`WORD_BYTE`]): an ASCII letter or digit, or any byte from 0x80 up.
#[inline(always)]
fn word_bytes(x: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let low7 = x & (0x7f * ONES);
    // The top bit of each byte of `low7 + (0x80 - lo)` is set where the byte is at least `lo`
    // (no carries cross bytes: 0x7f + 0x80 - 0x30 < 0x100).
    let from = |lo: u8| low7 + (0x80 - u64::from(lo)) * ONES;
    let range = |lo: u8, hi: u8| from(lo) & !from(hi + 1);
    let alnum = range(b'0', b'9') | range(b'A', b'Z') | range(b'a', b'z');
    (alnum & !x | x) & HIGH_BITS
}

fn unpack(key: u128) -> Vec<u8> {
    let b = key.to_le_bytes();
    b[..usize::from(b[15])].to_vec()
}

/// The kernel: counts words in a byte stream fed in chunks of any size.
#[derive(Default)]
pub struct WordCounter {
    short: HashMap<u128, u64, BuildHasherDefault<FxHasher>>,
    long: HashMap<Box<[u8]>, u64, BuildHasherDefault<FxHasher>>,
    /// The start of a word that may continue in the next chunk.
    partial: Vec<u8>,
    total: u64,
}

impl std::fmt::Debug for WordCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WordCounter").field("total", &self.total).field("distinct", &self.distinct()).finish()
    }
}

impl WordCounter {
    /// Counts the words in `bytes`; a word may continue in the next chunk.
    ///
    /// The loops that look at every byte hold no call: a call in a byte loop makes a
    /// compiler keep the loop's values on the stack around it (Cranelift reloads them for
    /// every byte), so words are counted between the loops, once per word.
    pub fn feed(&mut self, bytes: &[u8]) {
        let mut i = 0;
        if !self.partial.is_empty() {
            // The word the last chunk ended in goes on here.
            i = word_end(bytes, 0);
            self.partial.extend_from_slice(&bytes[..i]);
            if i == bytes.len() {
                return;
            }
            self.end_word();
        }
        loop {
            let start = separators_end(bytes, i);
            i = word_end(bytes, start);
            if i == bytes.len() {
                self.partial.extend_from_slice(&bytes[start..]);
                return;
            }
            self.count(&bytes[start..i]);
        }
    }

    /// Ends the current word (at the end of a file).
    pub fn end_word(&mut self) {
        let partial = std::mem::take(&mut self.partial);
        if !partial.is_empty() {
            self.count(&partial);
        }
        self.partial = partial;
        self.partial.clear();
    }

    fn count(&mut self, word: &[u8]) {
        self.total += 1;
        if word.len() <= SHORT {
            *self.short.entry(pack(word)).or_insert(0) += 1;
        } else {
            let lower = word.to_ascii_lowercase();
            match self.long.get_mut(&lower[..]) {
                Some(c) => *c += 1,
                None => {
                    self.long.insert(lower.into_boxed_slice(), 1);
                }
            }
        }
    }

    /// Words counted.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Distinct words counted.
    pub fn distinct(&self) -> usize {
        self.short.len() + self.long.len()
    }

    /// The count of `word` (as counted: ASCII lowercase).
    pub fn count_of(&self, word: &[u8]) -> u64 {
        let found = if word.len() <= SHORT { self.short.get(&pack(word)) } else { self.long.get(word) };
        found.copied().unwrap_or(0)
    }

    /// Words of at least `min_length` bytes, most frequent first, ties by word; the first
    /// `top` of them (all when `top` is 0).
    pub fn ranked(&self, top: usize, min_length: usize) -> Vec<(Vec<u8>, u64)> {
        let mut ranked: Vec<(Vec<u8>, u64)> = self
            .short
            .iter()
            .map(|(k, c)| (unpack(*k), *c))
            .chain(self.long.iter().map(|(w, c)| (w.to_vec(), *c)))
            .filter(|(w, _)| w.len() >= min_length)
            .collect();
        ranked.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        if top > 0 {
            ranked.truncate(top);
        }
        ranked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_keys_are_the_lowercased_bytes_and_the_length() {
        let all: Vec<u8> = (0..=255u8).collect();
        for n in 0..=SHORT {
            for start in 0..all.len() - n {
                let word = &all[start..start + n];
                let mut expected = [0u8; 16];
                for (e, b) in expected.iter_mut().zip(word) {
                    *e = b.to_ascii_lowercase();
                }
                expected[15] = n as u8;
                assert_eq!(pack(word), u128::from_le_bytes(expected), "{word:?}");
                assert_eq!(unpack(pack(word)), word.to_ascii_lowercase());
            }
        }
    }

    #[test]
    fn word_bytes_are_found_eight_at_a_time_as_one_at_a_time() {
        for b in 0..=255u8 {
            for lane in 0..8 {
                // The byte in each lane, among neighbours of both kinds.
                let mut eight = [b'a', b' ', 0xc3, b'.', b'Z', b'\n', b'5', b','];
                eight[lane] = b;
                let marks = word_bytes(u64::from_le_bytes(eight));
                for (k, byte) in eight.iter().enumerate() {
                    let marked = marks >> (8 * k) & 0x80 != 0;
                    assert_eq!(marked, WORD_BYTE[usize::from(*byte)], "byte {byte:#x} in lane {k}");
                }
            }
        }
        let text = b"ab  cd\xc3\xbc, 12345678901 ..,,;;:: x";
        for i in 0..text.len() {
            let slow_end = (i..text.len()).find(|&k| !WORD_BYTE[usize::from(text[k])]).unwrap_or(text.len());
            let slow_sep = (i..text.len()).find(|&k| WORD_BYTE[usize::from(text[k])]).unwrap_or(text.len());
            assert_eq!((word_end(text, i), separators_end(text, i)), (slow_end, slow_sep), "from {i}");
        }
    }

    #[test]
    fn any_chunking_counts_the_same() {
        let text = b"Tide pools,  tide POOLS; a\nb-c 123 \xc3\xbcber \xc3\xbcBER incomprehensibilities. Tide!";
        let mut whole = WordCounter::default();
        whole.feed(text);
        whole.end_word();
        assert_eq!((whole.total(), whole.count_of(b"tide"), whole.count_of("über".as_bytes())), (12, 3, 2));
        for size in 1..=9 {
            let mut chunked = WordCounter::default();
            for chunk in text.chunks(size) {
                chunked.feed(chunk);
            }
            chunked.end_word();
            assert_eq!(chunked.ranked(0, 1), whole.ranked(0, 1), "chunks of {size}");
            assert_eq!(chunked.total(), whole.total());
        }
    }

    #[test]
    fn words_span_chunks_and_are_lowercased() {
        let mut c = WordCounter::default();
        c.feed(b"The cat; the ca");
        c.feed(b"t. THE end");
        c.end_word();
        assert_eq!(c.count_of(b"the"), 3);
        assert_eq!(c.count_of(b"cat"), 2);
        assert_eq!(c.total, 6);
    }

    #[test]
    fn short_and_long_words_rank_together() {
        let long = "incomprehensibilities"; // 21 bytes: counted under the long map
        let mut c = WordCounter::default();
        for chunk in format!("{long} a {long} b a {} ü-ü a", long.to_uppercase()).as_bytes().chunks(5) {
            c.feed(chunk);
        }
        c.end_word();
        assert_eq!(c.count_of(long.as_bytes()), 3);
        assert_eq!(c.count_of("ü".as_bytes()), 2);
        let ranked = c.ranked(0, 1);
        assert_eq!(ranked[0], (b"a".to_vec(), 3), "ties broken by the word's bytes: {ranked:?}");
        assert_eq!(ranked[1], (long.as_bytes().to_vec(), 3));
        assert_eq!(c.distinct(), 4);
        assert_eq!(c.ranked(1, 2), vec![(long.as_bytes().to_vec(), 3)]);
    }
}
