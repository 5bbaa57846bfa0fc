"""Word frequency over every file of every mounted dataset: the Python twin of
`examples/wordfreq` (the same words, counts and output files, byte for byte).

A word is a maximal run of ASCII letters and digits and non-ASCII (UTF-8) bytes; ASCII is
lowercased. Writes `wordfreq.csv` (`word,count`, most frequent first, ties by word) and
`summary.json`.

Arguments: `--top N` (default 100; 0 keeps every word), `--min-length N` (default 1).
"""

import re
from collections import Counter

import tidepool

# Bytes that belong to words: ASCII letters and digits, and every non-ASCII byte.
WORD = re.compile(rb"[a-z0-9\x80-\xff]+")
CHUNK = 1 << 20


def count_file(file, counts):
    """Counts the words of one file into `counts`; returns (words, bytes read)."""
    words = size = 0
    partial = b""
    with file.open() as f:
        while True:
            chunk = f.read(CHUNK)
            if not chunk:
                break
            size += len(chunk)
            text = partial + chunk.lower()
            found = WORD.findall(text)
            # A word touching the end of the chunk may go on in the next one.
            partial = found.pop() if WORD.fullmatch(text[-1:]) else b""
            counts.update(found)
            words += len(found)
    if partial:
        counts[partial] += 1
        words += 1
    return words, size


def run(job):
    top = job.arg_or("--top", 100)
    min_length = job.arg_or("--min-length", 1)
    files = job.all_files()
    total = sum(f.size for f in files)
    counts = Counter()
    words = done = 0
    for file in files:
        w, n = count_file(file, counts)
        words += w
        done += n
        job.progress(done, total, f"{file.dataset}/{file.relative_path}")

    ranked = sorted((item for item in counts.items() if len(item[0]) >= min_length), key=lambda wc: (-wc[1], wc[0]))
    if top > 0:
        ranked = ranked[:top]
    with job.create_output("wordfreq.csv") as out:
        out.write("word,count\n")
        for word, count in ranked:
            out.write(f"{word.decode('utf-8', 'replace')},{count}\n")
    job.write_output(
        "summary.json",
        f'{{"files":{len(files)},"bytes":{done},"words":{words},"distinct":{len(counts)}}}\n',
    )
    job.metric("words", words)
    job.metric("distinct_words", len(counts))
    print(f"{len(files)} files, {done} bytes, {words} words, {len(counts)} distinct")


tidepool.main(run)
