//! The read-only mounts: `/data/inputs` (datasets) and `/algorithm` (the module itself).
//!
//! The host mounts a dataset `docs` holding `a.txt` ("alpha"), `sub/b.txt` ("beta"), and the
//! symlinks `inside -> sub/b.txt`, `escape -> ../../../etc/passwd`,
//! `absolute -> /etc/passwd`, `other -> ../more/c.txt`; and a dataset `more` with `c.txt`
//! ("gamma"). argv\[3\] is the size of the module.
tidepool_test_guests::entry!();

#[cfg(target_os = "wasi")]
mod guest {
    use tidepool_test_guests::*;

    pub fn main() {
        let args = args();
        let inputs = inputs();
        assert_eq!(names(inputs), [".", "..", "docs", "more"], "one directory per dataset, sorted");
        assert_eq!(get(inputs, "docs/a.txt"), b"alpha");
        assert_eq!(get(inputs, "docs/sub/b.txt"), b"beta");
        assert_eq!(get(inputs, "more/c.txt"), b"gamma");
        assert_eq!(
            names(open_dir(inputs, "docs")),
            [".", "..", "a.txt", "absolute", "escape", "inside", "other", "sub"]
        );

        // Symlinks inside the mount are followed; ones that leave it never are.
        assert_eq!(get(inputs, "docs/inside"), b"beta");
        assert_eq!(get(inputs, "docs/other"), b"gamma", "a link may cross datasets inside /data/inputs");
        let docs = open_dir(inputs, "docs");
        assert_errno!(open(docs, true, "other", 0, RIGHTS_FD_READ, 0), ERRNO_NOTCAPABLE);
        assert_errno!(open(inputs, true, "docs/escape", 0, RIGHTS_FD_READ, 0), ERRNO_NOTCAPABLE);
        assert_errno!(open(inputs, true, "docs/absolute", 0, RIGHTS_FD_READ, 0), ERRNO_NOTCAPABLE);
        let mut buf = [0u8; 64];
        let n = readlink(inputs, "docs/escape", &mut buf).unwrap();
        assert_eq!(&buf[..n], b"../../../etc/passwd", "the link itself is visible");

        // Nothing can be changed.
        assert_errno!(open(inputs, false, "docs/new", OFLAGS_CREAT, RIGHTS_FD_WRITE, 0), ERRNO_NOTCAPABLE);
        assert_errno!(open(inputs, false, "docs/a.txt", OFLAGS_TRUNC, 0, 0), ERRNO_NOTCAPABLE);
        let ro = open(inputs, false, "docs/a.txt", 0, RIGHTS_FD_READ | RIGHTS_FD_WRITE, 0).unwrap();
        assert_eq!(fdstat(ro).unwrap().fs_rights_base & RIGHTS_FD_WRITE, 0, "write was not granted");
        assert_errno!(write(ro, b"x"), ERRNO_BADF);
        assert_errno!(unsafe { fd_filestat_set_size(ro, 0) }, ERRNO_NOTCAPABLE);
        close(ro);
        assert_errno!(unlink(inputs, "docs/a.txt"), ERRNO_NOTCAPABLE);
        assert_errno!(mkdir(inputs, "docs/d"), ERRNO_NOTCAPABLE);
        assert_errno!(rmdir(inputs, "docs/sub"), ERRNO_NOTCAPABLE);
        assert_errno!(rename(inputs, "docs/a.txt", inputs, "docs/z.txt"), ERRNO_NOTCAPABLE);
        assert_errno!(symlink("a.txt", inputs, "docs/l"), ERRNO_NOTCAPABLE);
        assert_errno!(rename(inputs, "docs/a.txt", outputs(), "stolen"), ERRNO_NOTCAPABLE);
        let sub = open_dir(inputs, "docs/sub");
        assert_errno!(mkdir(sub, "x"), ERRNO_NOTCAPABLE); // subdirectories inherit read-only rights

        // Sizes are the staged sizes; stat is answered from the staged tree.
        assert_eq!(stat(inputs, false, "docs/a.txt").unwrap().size, 5);
        assert_eq!(stat(inputs, false, "docs/inside").unwrap().filetype, FILETYPE_SYMBOLIC_LINK);

        // The module is readable at /algorithm/<argv[0]>.wasm.
        let alg = preopen("/algorithm");
        let module = format!("{}.wasm", args[0]);
        assert_eq!(names(alg), [".", "..", module.as_str()]);
        let size: u64 = args[3].parse().unwrap();
        assert_eq!(stat(alg, false, &module).unwrap().size, size);
        let bytes = get(alg, &module);
        assert_eq!(bytes.len() as u64, size);
        assert_eq!(&bytes[..4], b"\0asm");
        assert_errno!(open(alg, false, "x", OFLAGS_CREAT, 0, 0), ERRNO_NOTCAPABLE);
    }
}
