//! Path resolution: from a directory descriptor, never above it, following symlinks inside
//! the tree only.

use super::super::abi::errno;
use super::super::mem::Errno;
use super::{DirRef, MAX_SYMLINKS, NAME_MAX, Node, PATH_MAX, Vfs};

/// The result of resolving a path.
pub(crate) enum Lookup {
    /// The path names an existing node. `link` is the directory and name it is reached by,
    /// absent when the last component was `.` or `..` (or the path named the start itself).
    Found { node: Node, link: Option<(DirRef, String)>, must_be_dir: bool },
    /// Everything but the last component exists; the last does not.
    Missing { parent: DirRef, name: String, must_be_dir: bool },
}

impl Vfs {
    /// Resolves `path` relative to `start`. Intermediate symlinks are always followed; the
    /// last component's only when `follow` is set or the path ends with `/`.
    pub(crate) fn lookup(&self, start: &DirRef, path: &str, follow: bool) -> Result<Lookup, Errno> {
        if path.is_empty() {
            return Err(errno::NOENT);
        }
        if path.len() > PATH_MAX {
            return Err(errno::NAMETOOLONG);
        }
        if path.contains('\0') {
            return Err(errno::INVAL);
        }
        if path.starts_with('/') {
            return Err(errno::NOTCAPABLE);
        }
        // Components still to walk, last first, so symlink targets can be pushed in front.
        let mut rest: Vec<String> = path.split('/').filter(|c| !c.is_empty()).rev().map(String::from).collect();
        let mut must_be_dir = path.ends_with('/');
        let mut stack: Vec<DirRef> = vec![start.clone()];
        let mut links = 0;
        loop {
            let Some(comp) = rest.pop() else {
                // Only reachable when the path is made of `/` alone, refused above, or when a
                // symlink target had no components: it names the directory it sits in.
                let top = stack.last().cloned().ok_or(errno::NOENT)?;
                return Ok(Lookup::Found { node: Node::Dir(top), link: None, must_be_dir });
            };
            let last = rest.is_empty();
            let cur = stack.last().cloned().ok_or(errno::NOENT)?;
            if cur.removed.get() {
                return Err(errno::NOENT);
            }
            match comp.as_str() {
                "." => {
                    if last {
                        return Ok(Lookup::Found { node: Node::Dir(cur), link: None, must_be_dir });
                    }
                }
                ".." => {
                    if stack.len() == 1 {
                        return Err(errno::NOTCAPABLE);
                    }
                    stack.pop();
                    if last {
                        let top = stack.last().cloned().ok_or(errno::NOENT)?;
                        return Ok(Lookup::Found { node: Node::Dir(top), link: None, must_be_dir });
                    }
                }
                name => {
                    if name.len() > NAME_MAX {
                        return Err(errno::NAMETOOLONG);
                    }
                    match cur.get(name) {
                        None if last => {
                            return Ok(Lookup::Missing { parent: cur, name: comp, must_be_dir });
                        }
                        None => return Err(errno::NOENT),
                        Some(Node::Dir(d)) => {
                            if last {
                                return Ok(Lookup::Found { node: Node::Dir(d), link: Some((cur, comp)), must_be_dir });
                            }
                            stack.push(d);
                        }
                        Some(Node::File(f)) => {
                            if last && !must_be_dir {
                                return Ok(Lookup::Found { node: Node::File(f), link: Some((cur, comp)), must_be_dir });
                            }
                            return Err(errno::NOTDIR);
                        }
                        Some(Node::Symlink(l)) => {
                            if last && !follow && !must_be_dir {
                                return Ok(Lookup::Found {
                                    node: Node::Symlink(l),
                                    link: Some((cur, comp)),
                                    must_be_dir,
                                });
                            }
                            links += 1;
                            if links > MAX_SYMLINKS {
                                return Err(errno::LOOP);
                            }
                            if l.target.starts_with('/') {
                                // Absolute targets would leave the sandbox: never followed.
                                return Err(errno::NOTCAPABLE);
                            }
                            if l.target.is_empty() {
                                return Err(errno::NOENT);
                            }
                            if last && l.target.ends_with('/') {
                                must_be_dir = true;
                            }
                            let expanded: Vec<String> =
                                l.target.split('/').filter(|c| !c.is_empty()).map(String::from).collect();
                            if expanded.is_empty() {
                                return Err(errno::NOENT);
                            }
                            rest.extend(expanded.into_iter().rev());
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;
    use std::sync::Arc;

    use super::super::Mount;
    use super::*;
    use crate::wasi::vfs::tests::found;

    #[test]
    fn lookups_never_climb_above_the_start_directory() {
        let vfs = Vfs::read_only();
        let root = vfs.new_root(Mount::Inputs);
        let a = vfs.stage_dir(&root, "a");
        vfs.stage_dir(&a, "b");
        assert!(matches!(found(vfs.lookup(&root, "a/b/..", false)), Node::Dir(d) if Rc::ptr_eq(&d, &a)));
        assert_eq!(vfs.lookup(&root, "..", false).err(), Some(errno::NOTCAPABLE));
        assert_eq!(vfs.lookup(&root, "a/../..", false).err(), Some(errno::NOTCAPABLE));
        assert_eq!(vfs.lookup(&a, "../a", false).err(), Some(errno::NOTCAPABLE), "the start dir is the sandbox");
        assert_eq!(vfs.lookup(&root, "/a", false).err(), Some(errno::NOTCAPABLE));
        assert_eq!(vfs.lookup(&root, "", false).err(), Some(errno::NOENT));
    }

    #[test]
    fn symlinks_are_followed_inside_and_refused_outside() {
        let vfs = Vfs::read_only();
        let root = vfs.new_root(Mount::Inputs);
        let a = vfs.stage_dir(&root, "a");
        vfs.stage_memory_file(&a, "f", Arc::from(&b"hi"[..]));
        vfs.stage_symlink(&root, "inside", "a/f");
        vfs.stage_symlink(&root, "escape", "../etc/passwd");
        vfs.stage_symlink(&root, "absolute", "/etc/passwd");
        vfs.stage_symlink(&root, "loop", "loop");
        vfs.stage_symlink(&root, "dirlink", "a/");
        assert!(matches!(found(vfs.lookup(&root, "inside", true)), Node::File(_)));
        assert!(matches!(found(vfs.lookup(&root, "inside", false)), Node::Symlink(_)));
        assert!(matches!(found(vfs.lookup(&root, "dirlink/f", false)), Node::File(_)));
        assert!(matches!(found(vfs.lookup(&root, "dirlink/", false)), Node::Dir(_)), "trailing slash follows");
        assert_eq!(vfs.lookup(&root, "escape", true).err(), Some(errno::NOTCAPABLE));
        assert_eq!(vfs.lookup(&root, "absolute", true).err(), Some(errno::NOTCAPABLE));
        assert_eq!(vfs.lookup(&root, "loop", true).err(), Some(errno::LOOP));
        assert_eq!(vfs.lookup(&root, "inside/", false).err(), Some(errno::NOTDIR));
        assert_eq!(vfs.lookup(&root, "a/f/x", false).err(), Some(errno::NOTDIR));
        assert_eq!(vfs.lookup(&root, "nope/x", false).err(), Some(errno::NOENT));
    }

    #[test]
    fn listings_are_sorted_with_dots_first_and_stable_inodes() {
        let vfs = Vfs::read_only();
        let root = vfs.new_root(Mount::Inputs);
        for name in ["zeta", "Alpha", "beta", "ä"] {
            vfs.stage_memory_file(&root, name, Arc::from(&b""[..]));
        }
        let listing = |from| {
            let mut out = Vec::new();
            root.visit(from, |n, i, _| {
                out.push((n.to_string(), i));
                true
            });
            out
        };
        let names: Vec<String> = listing(0).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, [".", "..", "Alpha", "beta", "zeta", "ä"]);
        let from_3: Vec<String> = listing(3).into_iter().map(|(n, _)| n).collect();
        assert_eq!(from_3, ["beta", "zeta", "ä"], "cookies index the sorted listing");
        let inos: Vec<u64> = listing(2).into_iter().map(|(_, i)| i).collect();
        // Created zeta, Alpha, beta, ä (inodes 2..=5); listed by name.
        assert_eq!(inos, [3, 4, 2, 5], "inodes follow creation order, not the host");
    }
}
