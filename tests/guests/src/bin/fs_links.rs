//! path_symlink, path_readlink, path_link, path_rename, path_unlink_file, and how lookups treat
//! symlinks (follow flags, loops, dangling links, trailing slashes).
tidepool_test_guests::entry!();

#[cfg(target_os = "wasi")]
mod guest {
    use tidepool_test_guests::*;

    pub fn main() {
        let dir = scratch(outputs(), "links");
        symlinks(dir);
        hard_links(dir);
        renames(dir);
        unlinks(dir);
    }

    fn symlinks(dir: Fd) {
        put(dir, "target", b"data");
        mkdir(dir, "tdir").unwrap();
        symlink("target", dir, "link").unwrap();
        symlink("tdir", dir, "dlink").unwrap();
        symlink("missing", dir, "dangling").unwrap();
        symlink("loop", dir, "loop").unwrap();

        // Creation errors.
        assert_errno!(symlink("/", dir, "abs"), ERRNO_NOTCAPABLE);
        assert_errno!(symlink("../../../etc", dir, "escape"), ERRNO_NOTCAPABLE);
        assert_errno!(symlink("x", dir, "new/"), ERRNO_NOENT);
        assert_errno!(symlink("x", dir, "tdir"), ERRNO_EXIST);
        assert_errno!(symlink("x", dir, "tdir/"), ERRNO_EXIST);
        assert_errno!(symlink("x", dir, "target"), ERRNO_EXIST);
        assert_errno!(symlink("x", dir, "target/"), ERRNO_NOTDIR);
        assert_errno!(symlink("x", dir, "dangling"), ERRNO_EXIST);

        // path_readlink: the target, silently truncated to the buffer, no NUL.
        let mut buf = [0u8; 10];
        assert_eq!(readlink(dir, "link", &mut buf).unwrap(), 6);
        assert_eq!(&buf, b"target\0\0\0\0");
        let mut small = [0u8; 4];
        assert_eq!(readlink(dir, "link", &mut small).unwrap(), 4);
        assert_eq!(&small, b"targ");
        assert_errno!(readlink(dir, "target", &mut buf), ERRNO_INVAL);
        assert_errno!(readlink(dir, "absent", &mut buf), ERRNO_NOENT);

        // Following, or not.
        assert_eq!(stat(dir, false, "link").unwrap().filetype, FILETYPE_SYMBOLIC_LINK);
        assert_eq!(stat(dir, false, "link").unwrap().size, 6, "a symlink's size is its target's length");
        assert_eq!(stat(dir, true, "link").unwrap().filetype, FILETYPE_REGULAR_FILE);
        assert_eq!(stat(dir, true, "dlink").unwrap().filetype, FILETYPE_DIRECTORY);
        assert_eq!(get(dir, "link"), b"data");
        assert_errno!(open(dir, false, "link", 0, RIGHTS_FD_READ, 0), ERRNO_LOOP);
        assert_errno!(open(dir, false, "dlink", OFLAGS_DIRECTORY, 0, 0), ERRNO_LOOP, ERRNO_NOTDIR);
        close(open(dir, true, "dlink", OFLAGS_DIRECTORY, 0, 0).unwrap());
        assert_errno!(open(dir, true, "link", OFLAGS_DIRECTORY, 0, 0), ERRNO_NOTDIR);
        close(open(dir, false, "dlink/", OFLAGS_DIRECTORY, 0, 0).unwrap());
        put(dir, "dlink/through", b"via link");
        assert_eq!(get(dir, "tdir/through"), b"via link");
        assert_errno!(open(dir, true, "dangling", 0, 0, 0), ERRNO_NOENT);
        assert_errno!(open(dir, false, "dangling", 0, 0, 0), ERRNO_LOOP);
        assert_errno!(open(dir, true, "loop", 0, 0, 0), ERRNO_LOOP);
        assert_errno!(stat(dir, true, "loop"), ERRNO_LOOP);
        // Creating through a dangling link creates its target.
        put(dir, "dangling", b"now here");
        assert_eq!(get(dir, "missing"), b"now here");
        unlink(dir, "missing").unwrap();

        // Links the guest makes point down: no `..`, so a link stays inside the outputs
        // wherever it is moved (renaming `d/l -> ../x` to the top would otherwise make it
        // leave them). Climbing links are refused from a descriptor below them: fs_inputs.
        mkdir(dir, "sub").unwrap();
        assert_errno!(symlink("../target", dir, "sub/up"), ERRNO_NOTCAPABLE);
        assert_errno!(symlink("x/../../target", dir, "sub/up"), ERRNO_NOTCAPABLE);
        assert_errno!(symlink("..", dir, "up"), ERRNO_NOTCAPABLE);
        symlink("./deeper/x", dir, "sub/down").unwrap();
        let mut buf = [0u8; 16];
        let n = readlink(dir, "sub/down", &mut buf).unwrap();
        assert_eq!(&buf[..n], b"./deeper/x");

        // Timestamps of the link itself, not its target (nofollow), and of the target (follow).
        let file_mtim = stat(dir, false, "target").unwrap().mtim;
        let link_mtim = stat(dir, false, "link").unwrap().mtim;
        unsafe { path_filestat_set_times(dir, 0, "link", 0, link_mtim - 200, FSTFLAGS_MTIM) }.unwrap();
        assert_eq!(stat(dir, false, "link").unwrap().mtim, link_mtim - 200);
        assert_eq!(stat(dir, false, "target").unwrap().mtim, file_mtim);
        unsafe { path_filestat_set_times(dir, LOOKUPFLAGS_SYMLINK_FOLLOW, "link", 0, 5, FSTFLAGS_MTIM) }.unwrap();
        assert_eq!(stat(dir, false, "target").unwrap().mtim, 5);

        for l in ["link", "dlink", "dangling", "loop", "sub/down"] {
            unlink(dir, l).unwrap();
        }
        rmdir(dir, "sub").unwrap();
    }

    fn hard_links(dir: Fd) {
        put(dir, "h", b"shared");
        link(dir, false, "h", dir, "h2").unwrap();
        let (a, b) = (stat(dir, false, "h").unwrap(), stat(dir, false, "h2").unwrap());
        assert_eq!((a.ino, a.dev, a.size, a.mtim), (b.ino, b.dev, b.size, b.mtim));
        assert_eq!(a.nlink, 2);
        let fd = create(dir, "h2");
        write(fd, b"SH").unwrap();
        close(fd);
        assert_eq!(get(dir, "h"), b"SHared", "both names are one file");
        assert_errno!(link(dir, false, "h", dir, "h2"), ERRNO_EXIST);
        assert_errno!(link(dir, false, "h", dir, "h"), ERRNO_EXIST);
        assert_errno!(link(dir, false, "h", dir, "tdir"), ERRNO_EXIST);
        assert_errno!(link(dir, false, "tdir", dir, "dl"), ERRNO_PERM);
        assert_errno!(link(dir, false, "h", dir, "new/"), ERRNO_NOENT);
        assert_errno!(link(dir, false, "absent", dir, "x"), ERRNO_NOENT);
        // Links across mounts are refused.
        assert_errno!(link(dir, false, "h", inputs(), "x"), ERRNO_NOTCAPABLE, ERRNO_XDEV);
        // Linking a dangling symlink links the symlink; following it finds nothing.
        symlink("nowhere", dir, "dl").unwrap();
        link(dir, false, "dl", dir, "dl2").unwrap();
        assert_eq!(stat(dir, false, "dl2").unwrap().filetype, FILETYPE_SYMBOLIC_LINK);
        assert_errno!(link(dir, true, "dl", dir, "dl3"), ERRNO_NOENT);
        unlink(dir, "h2").unwrap();
        assert_eq!(stat(dir, false, "h").unwrap().nlink, 1);
        for n in ["h", "dl", "dl2"] {
            unlink(dir, n).unwrap();
        }
    }

    fn renames(dir: Fd) {
        // Directory to a new name, then onto an empty directory.
        mkdir(dir, "src").unwrap();
        rename(dir, "src", dir, "dst").unwrap();
        assert_errno!(stat(dir, false, "src"), ERRNO_NOENT);
        mkdir(dir, "empty").unwrap();
        rename(dir, "dst", dir, "empty").unwrap();
        assert_errno!(stat(dir, false, "dst"), ERRNO_NOENT);
        // Onto a non-empty directory, onto a file, into itself.
        mkdir(dir, "full").unwrap();
        put(dir, "full/f", b"");
        assert_errno!(rename(dir, "empty", dir, "full"), ERRNO_NOTEMPTY);
        assert_errno!(rename(dir, "empty", dir, "full/f"), ERRNO_NOTDIR);
        assert_errno!(rename(dir, "full", dir, "full/inside"), ERRNO_INVAL);
        // A file to a new name, onto a file (replaced), onto a directory.
        put(dir, "a", b"A");
        put(dir, "b", b"B");
        rename(dir, "a", dir, "b").unwrap();
        assert_eq!(get(dir, "b"), b"A");
        assert_errno!(stat(dir, false, "a"), ERRNO_NOENT);
        assert_errno!(rename(dir, "b", dir, "empty"), ERRNO_ISDIR);
        // Trailing slashes: fine on directories, not on files.
        rename(dir, "empty/", dir, "e2").unwrap();
        rename(dir, "e2", dir, "e3/").unwrap();
        assert_errno!(rename(dir, "b/", dir, "c"), ERRNO_NOTDIR);
        assert_errno!(rename(dir, "b", dir, "c/"), ERRNO_NOTDIR);
        // Missing source, renaming onto itself, a descriptor's own directory.
        assert_errno!(rename(dir, "absent", dir, "x"), ERRNO_NOENT);
        rename(dir, "b", dir, "b").unwrap();
        assert_errno!(rename(dir, ".", dir, "x"), ERRNO_BUSY);
        // An open file keeps working across its rename; a moved directory keeps its `..`.
        let fd = create(dir, "b");
        rename(dir, "b", dir, "full/b").unwrap();
        write(fd, b"moved").unwrap();
        close(fd);
        assert_eq!(get(dir, "full/b"), b"moved");
        mkdir(dir, "e3/deep").unwrap();
        rename(dir, "e3/deep", dir, "full/deep").unwrap();
        let deep = open_dir(dir, "full/deep");
        let dotdot = readdir_all(deep, 256)[1].1.d_ino;
        assert_eq!(dotdot, stat(dir, false, "full").unwrap().ino);
        close(deep);
        // Into a read-only mount.
        assert_errno!(rename(dir, "full/b", inputs(), "b"), ERRNO_NOTCAPABLE);
        for f in ["full/f", "full/b"] {
            unlink(dir, f).unwrap();
        }
        for d in ["full/deep", "full", "e3"] {
            rmdir(dir, d).unwrap();
        }
    }

    fn unlinks(dir: Fd) {
        mkdir(dir, "d").unwrap();
        put(dir, "f", b"still readable");
        assert_errno!(unlink(dir, "d"), ERRNO_ISDIR);
        assert_errno!(unlink(dir, "d/"), ERRNO_ISDIR);
        assert_errno!(unlink(dir, "f/"), ERRNO_NOTDIR);
        assert_errno!(unlink(dir, "absent"), ERRNO_NOENT);
        assert_errno!(unlink(dir, "."), ERRNO_ISDIR);
        // An unlinked file stays readable through an open descriptor.
        let fd = open(dir, false, "f", 0, RIGHTS_FD_READ, 0).unwrap();
        unlink(dir, "f").unwrap();
        assert_errno!(stat(dir, false, "f"), ERRNO_NOENT);
        assert_eq!(read_all(fd), b"still readable");
        close(fd);
        // And the name can be used again at once.
        put(dir, "f", b"new");
        assert_eq!(get(dir, "f"), b"new");
        unlink(dir, "f").unwrap();
        rmdir(dir, "d").unwrap();
    }
}
