//! path_create_directory, path_remove_directory, fd_readdir: errno per failure case, sorted
//! listings with `.` and `..`, cookies, truncated buffers, inode agreement with filestat.
tidepool_test_guests::entry!();

#[cfg(target_os = "wasi")]
mod guest {
    use tidepool_test_guests::*;

    pub fn main() {
        let out = outputs();
        let dir = scratch(out, "dirs");

        // path_create_directory
        mkdir(dir, "a").unwrap();
        assert_errno!(mkdir(dir, "a"), ERRNO_EXIST);
        assert_errno!(mkdir(dir, "."), ERRNO_EXIST);
        assert_errno!(mkdir(dir, "missing/b"), ERRNO_NOENT);
        assert_errno!(mkdir(dir, "../escape"), ERRNO_NOTCAPABLE);
        assert_errno!(mkdir(dir, "/abs"), ERRNO_NOTCAPABLE);
        assert_errno!(mkdir(dir, ""), ERRNO_NOENT);
        mkdir(dir, "trailing/").unwrap();
        put(dir, "file", b"x");
        assert_errno!(mkdir(dir, "file/sub"), ERRNO_NOTDIR);
        assert_errno!(mkdir(dir, &"n".repeat(256)), ERRNO_NAMETOOLONG);
        mkdir(dir, &"n".repeat(255)).unwrap();
        rmdir(dir, &"n".repeat(255)).unwrap();
        assert_errno!(mkdir(inputs(), "nope"), ERRNO_NOTCAPABLE);

        // path_remove_directory
        mkdir(dir, "a/inner").unwrap();
        assert_errno!(rmdir(dir, "a"), ERRNO_NOTEMPTY);
        assert_errno!(rmdir(dir, "file"), ERRNO_NOTDIR);
        assert_errno!(rmdir(dir, "file/"), ERRNO_NOTDIR);
        assert_errno!(rmdir(dir, "absent"), ERRNO_NOENT);
        assert_errno!(rmdir(dir, "."), ERRNO_INVAL);
        rmdir(dir, "a/inner/").unwrap();
        rmdir(dir, "a").unwrap();
        rmdir(dir, "trailing").unwrap();
        unlink(dir, "file").unwrap();

        // fd_readdir on an empty directory: exactly `.` and `..`.
        let entries = readdir_all(dir, 256);
        assert_eq!(entries.len(), 2, "{entries:?}");
        assert_eq!(entries[0].0, ".");
        assert_eq!(entries[1].0, "..");
        assert_eq!(entries[0].1.d_type, FILETYPE_DIRECTORY);
        assert_eq!(entries[0].1.d_ino, filestat(dir).unwrap().ino, "`.` is the directory itself");
        assert_eq!(entries[1].1.d_ino, filestat(out).unwrap().ino, "`..` is the parent");

        // Sorted by name whatever the creation order; d_ino matches filestat.
        for name in ["zeta", "Alpha", "beta", "_under", "é"] {
            put(dir, name, name.as_bytes());
        }
        mkdir(dir, "mid").unwrap();
        let entries = readdir_all(dir, 4096);
        let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, [".", "..", "Alpha", "_under", "beta", "mid", "zeta", "é"]);
        for (name, d) in &entries[2..] {
            let s = stat(dir, false, name).unwrap();
            assert_eq!(d.d_ino, s.ino, "{name}");
            assert_eq!(d.d_type, s.filetype, "{name}");
            assert_eq!(d.d_namlen as usize, name.len());
        }

        // Cookies: d_next of entry i resumes at entry i+1.
        let (from_2, _) = readdir_once(dir, entries[1].1.d_next, 4096).unwrap();
        assert_eq!(from_2[0].0, "Alpha");
        assert_eq!(from_2.len(), entries.len() - 2);
        let (past_end, full) = readdir_once(dir, 1000, 4096).unwrap();
        assert!(past_end.is_empty() && !full);

        // A buffer too small for one entry comes back full, with a truncated record.
        let (partial, full) = readdir_once(dir, 2, 26).unwrap();
        assert!(partial.is_empty() && full, "a 26-byte buffer holds a 24-byte header and part of `Alpha`");

        // Many entries, read with small buffers: each exactly once.
        let bulk = scratch(dir, "bulk");
        for i in 0..300 {
            put(bulk, &format!("file.{i:03}"), b"");
        }
        for buf_len in [64, 100, 256, 4096] {
            let all = readdir_all(bulk, buf_len);
            assert_eq!(all.len(), 302, "buffer {buf_len}");
            let mut names: Vec<&String> = all.iter().map(|(n, _)| n).collect();
            let sorted = {
                let mut s = names.clone();
                s.sort();
                s
            };
            assert_eq!(names, sorted, "listing order is sorted (buffer {buf_len})");
            names.dedup();
            assert_eq!(names.len(), 302);
        }

        // readdir needs a directory and the FD_READDIR right.
        let f = create(dir, "zeta");
        assert_errno!(readdir_once(f, 0, 256), ERRNO_NOTDIR);
        close(f);
        let restricted = open(out, false, "dirs", OFLAGS_DIRECTORY, RIGHTS_PATH_OPEN, 0).unwrap();
        assert_errno!(readdir_once(restricted, 0, 256), ERRNO_NOTCAPABLE);

        // Nesting is bounded: 128 directories below a mount root (here /data/outputs/dirs is
        // level 1). The whole chain is left in place: the host must materialize and hash it.
        mkdir(dir, "a").unwrap();
        mkdir(dir, "a/b").unwrap();
        let mut cur = scratch(dir, "deep");
        let mut level = 2;
        let err = loop {
            match mkdir(cur, "d") {
                Ok(()) => {
                    let next = open_dir(cur, "d");
                    close(cur);
                    cur = next;
                    level += 1;
                }
                Err(e) => break e,
            }
        };
        assert_eq!((err, level), (ERRNO_NAMETOOLONG, 128));
        assert_errno!(rename(dir, "a", cur, "a"), ERRNO_NAMETOOLONG); // renames too
        put(cur, "bottom.txt", b"128 levels down");
        close(cur);

        // Listing a directory that was removed while open: nothing.
        let gone = scratch(dir, "gone");
        rmdir(dir, "gone").unwrap();
        assert!(readdir_all(gone, 256).is_empty());
        assert_errno!(mkdir(gone, "x"), ERRNO_NOENT);
    }
}
