//! fd_read, fd_write, fd_pread, fd_pwrite, fd_seek, fd_tell, fd_allocate,
//! fd_filestat_set_size, fd_advise, fd_sync, fd_datasync, append mode, and content operations
//! on directory and stdio descriptors.
tidepool_test_guests::entry!();

#[cfg(target_os = "wasi")]
mod guest {
    use tidepool_test_guests::*;

    pub fn main() {
        let dir = scratch(outputs(), "rw");
        let f = create(dir, "f");

        // fd_write / fd_tell / fd_seek / fd_read.
        assert_eq!(unsafe { fd_tell(f) }.unwrap(), 0);
        assert_eq!(write(f, &[0u8; 100]).unwrap(), 100);
        assert_eq!(unsafe { fd_tell(f) }.unwrap(), 100);
        assert_eq!(seek(f, -50, WHENCE_CUR).unwrap(), 50);
        assert_eq!(seek(f, 0, WHENCE_SET).unwrap(), 0);
        assert_eq!(seek(f, 1000, WHENCE_CUR).unwrap(), 1000, "seeking past the end is allowed");
        assert_errno!(seek(f, -2000, WHENCE_CUR), ERRNO_INVAL);
        assert_errno!(seek(f, -1, WHENCE_SET), ERRNO_INVAL);
        assert_eq!(seek(f, -10, WHENCE_END).unwrap(), 90);
        assert_errno!(unsafe { fd_seek(f, 0, std::mem::transmute::<u8, Whence>(3)) }, ERRNO_INVAL);
        seek(f, 0, WHENCE_SET).unwrap();
        assert_eq!(read(f, &mut [9u8; 200]).unwrap(), 100, "short read at end of file");
        assert_eq!(read(f, &mut [9u8; 10]).unwrap(), 0, "then end of file");

        // Scattered reads and gathered writes.
        seek(f, 0, WHENCE_SET).unwrap();
        let (a, b) = (b"hello ", b"world");
        let n = unsafe {
            fd_write(f, &[Ciovec { buf: a.as_ptr(), buf_len: a.len() }, Ciovec { buf: b.as_ptr(), buf_len: b.len() }])
        }
        .unwrap();
        assert_eq!(n, 11);
        let (mut x, mut y) = ([0u8; 4], [0u8; 7]);
        let n = unsafe {
            fd_pread(f, &[Iovec { buf: x.as_mut_ptr(), buf_len: 4 }, Iovec { buf: y.as_mut_ptr(), buf_len: 7 }], 0)
        }
        .unwrap();
        assert_eq!((n, &x, &y), (11, b"hell", b"o world"));

        // pread / pwrite do not move the position.
        let pos = unsafe { fd_tell(f) }.unwrap();
        let data = [1u8, 2, 3, 4];
        assert_eq!(unsafe { fd_pwrite(f, &[Ciovec { buf: data.as_ptr(), buf_len: 4 }], 200) }.unwrap(), 4);
        let mut got = [0u8; 4];
        assert_eq!(unsafe { fd_pread(f, &[Iovec { buf: got.as_mut_ptr(), buf_len: 4 }], 202) }.unwrap(), 2);
        assert_eq!(&got[..2], &[3, 4]);
        assert_eq!(unsafe { fd_tell(f) }.unwrap(), pos);
        assert_eq!(filestat(f).unwrap().size, 204, "pwrite past the end extends the file with zeros");
        let mut hole = [9u8; 4];
        unsafe { fd_pread(f, &[Iovec { buf: hole.as_mut_ptr(), buf_len: 4 }], 150) }.unwrap();
        assert_eq!(hole, [0; 4]);

        // Writes are visible at once through another descriptor.
        let r = open(dir, false, "f", 0, RIGHTS_FD_READ, 0).unwrap();
        seek(f, 0, WHENCE_SET).unwrap();
        write(f, b"Z").unwrap();
        let mut one = [0u8; 1];
        read(r, &mut one).unwrap();
        assert_eq!(&one, b"Z");
        close(r);

        // fd_filestat_set_size and fd_allocate.
        unsafe { fd_filestat_set_size(f, 10) }.unwrap();
        assert_eq!(filestat(f).unwrap().size, 10);
        unsafe { fd_filestat_set_size(f, 100) }.unwrap();
        assert_eq!(filestat(f).unwrap().size, 100);
        unsafe { fd_allocate(f, 90, 20) }.unwrap();
        assert_eq!(filestat(f).unwrap().size, 110);
        unsafe { fd_allocate(f, 10, 10) }.unwrap();
        assert_eq!(filestat(f).unwrap().size, 110, "allocating inside the file changes nothing");
        assert_errno!(unsafe { fd_allocate(f, 0, 0) }, ERRNO_INVAL);

        // fd_advise validates the advice and otherwise has no effect.
        unsafe { fd_advise(f, 0, 10, ADVICE_SEQUENTIAL) }.unwrap();
        assert_errno!(unsafe { fd_advise(f, 0, 10, std::mem::transmute::<u8, Advice>(9)) }, ERRNO_INVAL);
        unsafe { fd_sync(f) }.unwrap();
        unsafe { fd_datasync(f) }.unwrap();
        close(f);

        // Append mode.
        let ap = open(dir, false, "log", OFLAGS_CREAT, FILE_RIGHTS, FDFLAGS_APPEND).unwrap();
        write(ap, &[0u8; 100]).unwrap();
        seek(ap, 0, WHENCE_SET).unwrap();
        write(ap, &[1u8; 100]).unwrap();
        assert_eq!(filestat(ap).unwrap().size, 200, "appends go to the end whatever the position");
        assert_eq!(fdstat(ap).unwrap().fs_flags & FDFLAGS_APPEND, FDFLAGS_APPEND);
        unsafe { fd_fdstat_set_flags(ap, 0) }.unwrap();
        seek(ap, 0, WHENCE_SET).unwrap();
        write(ap, &[2u8; 100]).unwrap();
        assert_eq!(filestat(ap).unwrap().size, 200, "without APPEND the write overwrites");
        close(ap);
        let all = get(dir, "log");
        assert!(all[..100].iter().all(|&b| b == 2) && all[100..].iter().all(|&b| b == 1));

        // Content operations on a directory descriptor (with every directory right).
        let d = open_dir(dir, ".");
        assert_errno!(read(d, &mut [0; 4]), ERRNO_BADF, ERRNO_ISDIR);
        assert_errno!(write(d, b"x"), ERRNO_BADF, ERRNO_ISDIR);
        assert_errno!(unsafe { fd_tell(d) }, ERRNO_ISDIR);
        assert_errno!(seek(d, 0, WHENCE_SET), ERRNO_ISDIR);
        assert_errno!(unsafe { fd_allocate(d, 0, 1) }, ERRNO_ISDIR);
        assert_errno!(unsafe { fd_filestat_set_size(d, 0) }, ERRNO_ISDIR);
        close(d);

        // Stdio: stdin is empty, stdout and stderr are not seekable.
        assert_eq!(read(0, &mut [0u8; 8]).unwrap(), 0);
        assert_errno!(seek(1, 0, WHENCE_CUR), ERRNO_SPIPE);
        assert_errno!(write(0, b"x"), ERRNO_BADF);
        assert_errno!(read(1, &mut [0; 1]), ERRNO_BADF);
        assert_eq!(write(1, b"stdout works\n").unwrap(), 13);
        let st = filestat(1).unwrap();
        assert_eq!((st.size, st.mtim, st.atim, st.ctim), (0, 0, 0, 0));
        assert_eq!(fdstat(1).unwrap().fs_filetype, FILETYPE_UNKNOWN, "not a terminal");

        // Closed descriptors.
        assert_errno!(read(f, &mut [0; 1]), ERRNO_BADF);
        assert_errno!(unsafe { fd_close(f) }, ERRNO_BADF);
    }
}
