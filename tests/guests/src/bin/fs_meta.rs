//! fd_fdstat_get, fd_fdstat_set_flags, fd_fdstat_set_rights, fd_filestat_get,
//! fd_filestat_set_times, path_filestat_get, path_filestat_set_times, fd_renumber, fd_close,
//! fd_prestat_get, fd_prestat_dir_name: descriptor metadata and the descriptor table.
tidepool_test_guests::entry!();

#[cfg(target_os = "wasi")]
mod guest {
    use tidepool_test_guests::*;

    pub fn main() {
        preopens();
        let dir = scratch(outputs(), "meta");
        fdstats(dir);
        times(dir);
        renumbering(dir);
    }

    fn preopens() {
        // Descriptors 3, 4, 5, in this order, then nothing.
        for (fd, name) in [(3, "/algorithm"), (4, "/data/inputs"), (5, "/data/outputs")] {
            let p = unsafe { fd_prestat_get(fd) }.unwrap();
            assert_eq!(p.tag, PREOPENTYPE_DIR.raw());
            let len = unsafe { p.u.dir.pr_name_len };
            assert_eq!(len, name.len());
            let mut buf = vec![0u8; len + 1];
            unsafe { fd_prestat_dir_name(fd, buf.as_mut_ptr(), len + 1) }.unwrap();
            assert_eq!(&buf[..len], name.as_bytes());
            assert_errno!(unsafe { fd_prestat_dir_name(fd, buf.as_mut_ptr(), 0) }, ERRNO_NAMETOOLONG);
            assert_eq!(fdstat(fd).unwrap().fs_filetype, FILETYPE_DIRECTORY);
        }
        assert_errno!(unsafe { fd_prestat_get(6) }, ERRNO_BADF);
        assert_errno!(unsafe { fd_prestat_get(0) }, ERRNO_BADF);
        // Writable and read-only mounts advertise different rights.
        let w = fdstat(outputs()).unwrap();
        let r = fdstat(inputs()).unwrap();
        for right in
            [RIGHTS_PATH_CREATE_FILE, RIGHTS_PATH_CREATE_DIRECTORY, RIGHTS_PATH_UNLINK_FILE, RIGHTS_PATH_SYMLINK]
        {
            assert_ne!(w.fs_rights_base & right, 0);
            assert_eq!(r.fs_rights_base & right, 0);
        }
        assert_eq!(w.fs_rights_base & RIGHTS_FD_WRITE, 0, "a directory is never writable as a file");
        assert_ne!(w.fs_rights_inheriting & RIGHTS_FD_WRITE, 0);
        assert_eq!(r.fs_rights_inheriting & RIGHTS_FD_WRITE, 0);
        assert_eq!(w.fs_flags, 0);
    }

    fn fdstats(dir: Fd) {
        let f = create(dir, "f");
        let st = fdstat(f).unwrap();
        assert_eq!(st.fs_filetype, FILETYPE_REGULAR_FILE);
        assert_eq!(st.fs_rights_base, FILE_RIGHTS);
        // fd_fdstat_set_flags: needs the right, validates the flags.
        assert_errno!(unsafe { fd_fdstat_set_flags(f, 1 << 9) }, ERRNO_INVAL);
        unsafe { fd_fdstat_set_flags(f, FDFLAGS_APPEND | FDFLAGS_NONBLOCK) }.unwrap();
        assert_eq!(fdstat(f).unwrap().fs_flags, FDFLAGS_APPEND | FDFLAGS_NONBLOCK);
        // fd_fdstat_set_rights: rights can be dropped, never regained.
        unsafe { fd_fdstat_set_rights(f, st.fs_rights_base & !(RIGHTS_FD_READ | RIGHTS_FD_WRITE), 0) }.unwrap();
        let dropped = fdstat(f).unwrap();
        assert_eq!(dropped.fs_rights_base & (RIGHTS_FD_READ | RIGHTS_FD_WRITE), 0);
        assert_ne!(dropped.fs_rights_base & RIGHTS_FD_SEEK, 0);
        assert_errno!(read(f, &mut [0; 1]), ERRNO_BADF);
        assert_errno!(write(f, b"x"), ERRNO_BADF);
        assert_errno!(unsafe { fd_fdstat_set_rights(f, st.fs_rights_base, 0) }, ERRNO_NOTCAPABLE);
        close(f);
        // fd_filestat_get needs its right.
        let bare = open(dir, false, "f", 0, 0, 0).unwrap();
        assert_errno!(filestat(bare), ERRNO_NOTCAPABLE);
        close(bare);
        // Directories: size 0; dev differs between mounts.
        let s = filestat(dir).unwrap();
        assert_eq!((s.filetype, s.size, s.nlink), (FILETYPE_DIRECTORY, 0, 1));
        assert_ne!(filestat(inputs()).unwrap().dev, s.dev);
        assert_errno!(stat(dir, false, "absent"), ERRNO_NOENT);
        // Without PATH_FILESTAT_GET on the directory.
        let limited = open(outputs(), false, "meta", OFLAGS_DIRECTORY, RIGHTS_PATH_OPEN, 0).unwrap();
        assert_errno!(stat(limited, false, "f"), ERRNO_NOTCAPABLE);
        close(limited);
    }

    fn times(dir: Fd) {
        let f = create(dir, "t");
        let before = filestat(f).unwrap();
        assert_eq!(before.mtim, before.atim);
        assert!(before.mtim >= 1_700_000_000_000_000_000, "a fixed, plausible date");
        // Only the flagged time changes, exactly.
        unsafe { fd_filestat_set_times(f, 1, before.mtim - 100, FSTFLAGS_MTIM) }.unwrap();
        let after = filestat(f).unwrap();
        assert_eq!(after.mtim, before.mtim - 100);
        assert_eq!(after.atim, before.atim, "the atim argument is ignored without FSTFLAGS_ATIM");
        // Writes do not touch times.
        write(f, b"data").unwrap();
        assert_eq!(filestat(f).unwrap().mtim, before.mtim - 100);
        // Set and set-to-now together is EINVAL.
        assert_errno!(unsafe { fd_filestat_set_times(f, 1, 2, FSTFLAGS_MTIM | FSTFLAGS_MTIM_NOW) }, ERRNO_INVAL);
        assert_errno!(unsafe { fd_filestat_set_times(f, 1, 2, FSTFLAGS_ATIM | FSTFLAGS_ATIM_NOW) }, ERRNO_INVAL);
        // NOW means the virtual clock.
        let now = unsafe { clock_time_get(CLOCKID_REALTIME, 1) }.unwrap();
        unsafe { fd_filestat_set_times(f, 0, 0, FSTFLAGS_ATIM_NOW) }.unwrap();
        let atim = filestat(f).unwrap().atim;
        assert!(atim >= now && atim - now < 1_000_000_000, "{atim} vs {now}");
        // path_filestat_set_times, and its validation.
        unsafe { path_filestat_set_times(dir, 0, "t", 0, 42, FSTFLAGS_MTIM) }.unwrap();
        assert_eq!(stat(dir, false, "t").unwrap().mtim, 42);
        assert_errno!(
            unsafe { path_filestat_set_times(dir, 0, "t", 0, 0, FSTFLAGS_MTIM | FSTFLAGS_MTIM_NOW) },
            ERRNO_INVAL
        );
        assert_errno!(unsafe { path_filestat_set_times(dir, 0, "absent", 0, 0, FSTFLAGS_MTIM) }, ERRNO_NOENT);
        assert_errno!(unsafe { path_filestat_set_times(inputs(), 0, ".", 0, 0, FSTFLAGS_MTIM) }, ERRNO_NOTCAPABLE);
        close(f);
    }

    fn renumbering(dir: Fd) {
        let a = create(dir, "a");
        let b = create(dir, "b");
        let before = fdstat(a).unwrap();
        unsafe { fd_renumber(a, b) }.unwrap();
        assert_errno!(unsafe { fd_close(a) }, ERRNO_BADF);
        let moved = fdstat(b).unwrap();
        assert_eq!(
            (moved.fs_filetype, moved.fs_flags, moved.fs_rights_base, moved.fs_rights_inheriting),
            (before.fs_filetype, before.fs_flags, before.fs_rights_base, before.fs_rights_inheriting)
        );
        assert_errno!(unsafe { fd_renumber(b, a) }, ERRNO_BADF); // the target must be open
        assert_errno!(unsafe { fd_renumber(99, b) }, ERRNO_BADF);
        unsafe { fd_renumber(b, b) }.unwrap();
        write(b, b"renumbered").unwrap();
        close(b);
        assert_eq!(get(dir, "a"), b"renumbered", "b now refers to what a was");

        // Renumbering over a preopen, and closing one.
        let copy = open_dir(outputs(), "meta");
        let ino = filestat(copy).unwrap().ino;
        unsafe { fd_renumber(copy, 3) }.unwrap();
        assert_eq!(filestat(3).unwrap().ino, ino);
        assert_errno!(unsafe { fd_prestat_get(3) }, ERRNO_BADF); // no longer a preopen
        close(3);
        assert_errno!(fdstat(3), ERRNO_BADF);

        // Stdio can be renumbered onto a file, closing the file.
        let f = create(dir, "s");
        unsafe { fd_renumber(2, f) }.unwrap();
        assert_errno!(fdstat(2), ERRNO_BADF);
        assert_eq!(fdstat(f).unwrap().fs_filetype, FILETYPE_UNKNOWN);
    }
}
