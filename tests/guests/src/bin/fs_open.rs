//! path_open: lookups (`.`, `..`, `//`, trailing slashes, NUL, absolute paths, escapes), the
//! oflags (CREAT, EXCL, TRUNC, DIRECTORY), rights given to the new descriptor, descriptor
//! numbering and the descriptor limit.
tidepool_test_guests::entry!();

#[cfg(target_os = "wasi")]
mod guest {
    use tidepool_test_guests::*;

    pub fn main() {
        let out = outputs();
        let dir = scratch(out, "open");
        mkdir(dir, "d").unwrap();
        mkdir(dir, "d/nested").unwrap();
        put(dir, "d/nested/file", b"content");

        // Lookups.
        assert_errno!(open(dir, false, "absent", 0, 0, 0), ERRNO_NOENT);
        assert_errno!(open(dir, false, "absent/x", OFLAGS_CREAT, 0, 0), ERRNO_NOENT);
        let fd = open(dir, false, "d/.//nested/../../d/nested/../nested///./file", 0, RIGHTS_FD_READ, 0).unwrap();
        assert_eq!(read_all(fd), b"content");
        close(fd);
        assert_errno!(open(dir, false, "/d/nested/file", 0, 0, 0), ERRNO_NOTCAPABLE);
        assert_errno!(open(dir, false, "d/nested/../../../open/d/nested/file", 0, 0, 0), ERRNO_NOTCAPABLE);
        assert_errno!(open(dir, false, "..", OFLAGS_DIRECTORY, 0, 0), ERRNO_NOTCAPABLE);
        assert_errno!(open(dir, false, "d/nested/file\0", 0, 0, 0), ERRNO_INVAL);
        assert_errno!(open(dir, false, "d/nested/file/", 0, 0, 0), ERRNO_NOTDIR);
        assert_errno!(open(dir, false, "d/nested/file///", 0, 0, 0), ERRNO_NOTDIR);
        close(open(dir, false, "d/nested/", 0, 0, 0).unwrap());
        close(open(dir, false, "d/nested///", 0, 0, 0).unwrap());
        let sub = open_dir(dir, "d");
        assert_errno!(open(sub, false, "../d", OFLAGS_DIRECTORY, 0, 0), ERRNO_NOTCAPABLE);
        close(sub);

        // oflags.
        let f = open(dir, false, "new", OFLAGS_CREAT, 0, 0).unwrap();
        assert!(f > 5, "descriptors 0-5 are stdio and the three preopens");
        close(f);
        assert_errno!(open(dir, false, "new", OFLAGS_CREAT | OFLAGS_EXCL, 0, 0), ERRNO_EXIST);
        assert_errno!(open(dir, false, "new", OFLAGS_DIRECTORY, 0, 0), ERRNO_NOTDIR);
        assert_errno!(open(dir, false, "d", OFLAGS_TRUNC, 0, 0), ERRNO_ISDIR);
        assert_errno!(open(dir, false, "newdir/", OFLAGS_CREAT, 0, 0), ERRNO_ISDIR);
        assert_errno!(open(dir, false, "x", OFLAGS_CREAT | OFLAGS_DIRECTORY, 0, 0), ERRNO_INVAL);
        put(dir, "t", b"0123456789");
        close(open(dir, false, "t", OFLAGS_TRUNC, RIGHTS_FD_WRITE, 0).unwrap());
        assert_eq!(stat(dir, false, "t").unwrap().size, 0, "O_TRUNC empties the file");
        let f = create(dir, "d/nested/file");
        assert_errno!(open(f, false, "x", OFLAGS_CREAT, 0, 0), ERRNO_NOTDIR);
        close(f);

        // Directories: write access is EISDIR; rights that make no sense for a directory are
        // dropped, not refused.
        assert_errno!(open(dir, false, ".", OFLAGS_DIRECTORY, RIGHTS_FD_READ | RIGHTS_FD_WRITE, 0), ERRNO_ISDIR);
        close(open(dir, false, ".", OFLAGS_DIRECTORY, RIGHTS_FD_READ, 0).unwrap());
        let d = open(dir, false, "d", OFLAGS_DIRECTORY, RIGHTS_FD_SEEK | RIGHTS_FD_READDIR, 0).unwrap();
        let st = fdstat(d).unwrap();
        assert_eq!(st.fs_filetype, FILETYPE_DIRECTORY);
        assert_eq!(st.fs_rights_base & RIGHTS_FD_SEEK, 0, "FD_SEEK is stripped from directories");
        assert_ne!(st.fs_rights_base & RIGHTS_FD_READDIR, 0);
        assert_errno!(seek(d, 0, WHENCE_CUR), ERRNO_ISDIR, ERRNO_NOTCAPABLE);
        close(d);

        // The new descriptor has what was asked for, and no more.
        let r = open(dir, false, "t", 0, RIGHTS_FD_READ, 0).unwrap();
        let st = fdstat(r).unwrap();
        assert_ne!(st.fs_rights_base & RIGHTS_FD_READ, 0);
        assert_eq!(st.fs_rights_base & RIGHTS_FD_WRITE, 0);
        assert_errno!(write(r, b"no"), ERRNO_BADF);
        close(r);
        let w = open(dir, false, "t", 0, RIGHTS_FD_WRITE, 0).unwrap();
        assert_errno!(read(w, &mut [0; 4]), ERRNO_BADF);
        assert_eq!(write(w, b"abc").unwrap(), 3);
        close(w);
        let p = open(dir, false, "t", 0, RIGHTS_FD_READ | RIGHTS_PATH_OPEN, 0).unwrap();
        assert_eq!(fdstat(p).unwrap().fs_rights_base & RIGHTS_PATH_OPEN, 0, "path rights are not file rights");
        close(p);

        // Without the directory's rights: no create, no truncate.
        let ro = open(out, false, "open", OFLAGS_DIRECTORY, RIGHTS_PATH_OPEN, 0).unwrap();
        assert_errno!(open(ro, false, "c", OFLAGS_CREAT, 0, 0), ERRNO_NOTCAPABLE);
        assert_errno!(open(ro, false, "t", OFLAGS_TRUNC, 0, 0), ERRNO_NOTCAPABLE);
        close(open(ro, false, "t", 0, RIGHTS_FD_READ, 0).unwrap());
        close(ro);

        // Descriptors are numbered lowest-free, and bounded.
        let a = create(dir, "t");
        let b = create(dir, "t");
        close(a);
        let c = create(dir, "t");
        assert_eq!(c, a, "the lowest free number is reused");
        close(b);
        close(c);
        let mut held = Vec::new();
        let err = loop {
            match open(dir, false, "t", 0, RIGHTS_FD_READ, 0) {
                Ok(fd) => held.push(fd),
                Err(e) => break e,
            }
            assert!(held.len() <= 1024, "the descriptor table must be bounded");
        };
        assert_eq!(err, ERRNO_MFILE);
        assert_eq!(held.len(), 1024 - 7, "stdio, three preopens and `dir` were already open");
        for fd in held {
            close(fd);
        }
        // Nonblocking and sync flags are accepted.
        close(open(dir, false, "t", 0, RIGHTS_FD_READ, FDFLAGS_NONBLOCK | FDFLAGS_SYNC).unwrap());
    }
}
