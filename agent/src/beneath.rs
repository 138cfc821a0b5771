//! Files beneath a directory, reached without following a link on any part of their path.
//!
//! The agent places a task's inputs and reads its outputs as root, in a directory the task can
//! write to. A link the task planted there (`x -> /etc`, `out.txt -> /etc/shadow`) must never be
//! followed, on the last component or any before it, and whatever is swapped in between a check and
//! a use must not matter. So there is no check then use by path: every lookup is `openat2(2)` from
//! a descriptor of the directory with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_MAGICLINKS` (no `..` out, no absolute paths, no links at all), and what was opened is
//! checked on its descriptor (`fstat`) and read or written through it.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

fn resolve() -> ResolveFlags {
    ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS
}

/// An open directory; paths below it are lists of plain names (see [`crate::files::sandbox_path`]).
#[derive(Debug)]
pub struct Dir(OwnedFd);

impl Dir {
    /// Opens the directory at `path`, which the agent made (it must not itself be a link).
    pub fn open(path: &Path) -> std::io::Result<Dir> {
        let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        Ok(Dir(rustix::fs::open(path, flags, Mode::empty())?))
    }

    /// The directory `parts` below this one, each missing one created with `mode`.
    fn make_dirs(&self, parts: &[String], mode: u32) -> Result<Dir, Errno> {
        let mut dir = self.0.try_clone().map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO))?;
        for part in parts {
            match rustix::fs::mkdirat(&dir, part.as_str(), Mode::from_raw_mode(mode)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(e),
            }
            // RESOLVE_NO_SYMLINKS refuses a link here too (ELOOP; O_NOFOLLOW would say ENOTDIR).
            let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC;
            dir = rustix::fs::openat2(&dir, part.as_str(), flags, Mode::empty(), resolve())?;
        }
        Ok(Dir(dir))
    }

    /// Writes a new file at `parts` with `mode`, making the directories on its way (0755). The file
    /// must not exist yet, as anything at all: nothing is written through what is already there.
    pub fn create_file(&self, parts: &[String], bytes: &[u8], mode: u32) -> Result<(), String> {
        let (name, dirs) = parts.split_last().ok_or("an empty path")?;
        let dir = self.make_dirs(dirs, 0o755).map_err(|e| why(e, "a directory on its path"))?;
        let flags = OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat2(&dir.0, name.as_str(), flags, Mode::from_raw_mode(0o600), resolve())
            .map_err(|e| why(e, "the file"))?;
        let mut file = std::fs::File::from(fd);
        file.write_all(bytes).map_err(|e| e.to_string())?;
        rustix::fs::fchmod(&file, Mode::from_raw_mode(mode)).map_err(|e| e.to_string())?;
        Ok(())
    }

    /// The bytes of the regular file at `parts`, refused if it is anything else (a link, a FIFO, a
    /// device, a directory), has other hard links, or is over `max` bytes.
    pub fn read_regular(&self, parts: &[String], max: u64) -> Result<Vec<u8>, String> {
        let path = parts.join("/");
        // NONBLOCK: opening a FIFO must not wait for a writer; fstat then refuses it.
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
        let fd = rustix::fs::openat2(&self.0, path.as_str(), flags, Mode::empty(), resolve()).map_err(|e| match e {
            Errno::NOENT => "the task did not write it".to_owned(),
            e => why(e, "it"),
        })?;
        let stat = rustix::fs::fstat(&fd).map_err(|e| e.to_string())?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            return Err("not a regular file in the sandbox".into());
        }
        if stat.st_nlink != 1 {
            return Err(format!("it has {} hard links: only a file with one is collected", stat.st_nlink));
        }
        let size = stat.st_size as u64;
        if size > max {
            return Err(format!("{size} bytes, over the {max} byte limit"));
        }
        let mut bytes = Vec::with_capacity(size as usize);
        // The file may grow after fstat (a writer it shared with someone): never past `max`.
        std::fs::File::from(fd).take(max + 1).read_to_end(&mut bytes).map_err(|e| e.to_string())?;
        if bytes.len() as u64 > max {
            return Err(format!("over the {max} byte limit"));
        }
        Ok(bytes)
    }
}

/// What an error of opening `what` means here.
fn why(e: Errno, what: &str) -> String {
    match e {
        Errno::LOOP => format!("{what} is a link, which is never followed"),
        Errno::XDEV => format!("{what} leads out of the directory"),
        Errno::EXIST => format!("{what} exists already"),
        Errno::NOTDIR => format!("{what} is not a directory"),
        e => format!("{what}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(path: &str) -> Vec<String> {
        path.split('/').map(str::to_owned).collect()
    }

    #[test]
    fn files_are_created_and_read_beneath_the_directory() {
        let root = tempfile::tempdir().unwrap();
        let dir = Dir::open(root.path()).unwrap();
        dir.create_file(&parts("a/b/c.txt"), b"hello", 0o444).unwrap();
        let meta = std::fs::metadata(root.path().join("a/b/c.txt")).unwrap();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777, 0o444);
        assert_eq!(dir.read_regular(&parts("a/b/c.txt"), 100).unwrap(), b"hello");
        assert_eq!(dir.read_regular(&parts("a/b/c.txt"), 4).unwrap_err(), "5 bytes, over the 4 byte limit");
        assert_eq!(dir.read_regular(&parts("nope"), 100).unwrap_err(), "the task did not write it");
        let again = dir.create_file(&parts("a/b/c.txt"), b"x", 0o644).unwrap_err();
        assert!(again.contains("exists already"), "{again}");
    }

    #[test]
    fn planted_links_are_never_followed() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "secret").unwrap();
        let sandbox = root.path();
        std::os::unix::fs::symlink(outside.path(), sandbox.join("x")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), sandbox.join("out.txt")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("new"), sandbox.join("dangling")).unwrap();
        std::os::unix::fs::symlink("../..", sandbox.join("up")).unwrap();
        let dir = Dir::open(sandbox).unwrap();

        // Placing through a directory link, onto a file link, onto a dangling link: refused.
        for (path, err) in [
            ("x/anything", "a directory on its path is a link"),
            ("x/deeper/anything", "a directory on its path is a link"),
            ("out.txt", "exists already"),
            ("dangling", "exists already"),
            ("up/escaped", "a directory on its path is a link"),
        ] {
            let got = dir.create_file(&parts(path), b"root wrote this", 0o666).unwrap_err();
            assert!(got.contains(err), "{path}: {got}");
        }
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 1, "nothing was written outside");
        assert_eq!(std::fs::read_to_string(outside.path().join("secret")).unwrap(), "secret");

        // Reading through a file link, a directory link, `..`: refused.
        for path in ["out.txt", "x/secret", "up/secret", ".."] {
            let got = dir.read_regular(&parts(path), 100).unwrap_err();
            assert!(got.contains("is a link") || got.contains("leads out"), "{path}: {got}");
        }
    }

    #[test]
    fn fifos_devices_directories_and_hard_links_are_not_read() {
        let root = tempfile::tempdir().unwrap();
        let sandbox = root.path();
        nix::unistd::mkfifo(&sandbox.join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        std::fs::create_dir(sandbox.join("d")).unwrap();
        std::fs::write(sandbox.join("f"), "x").unwrap();
        std::fs::hard_link(sandbox.join("f"), sandbox.join("g")).unwrap();
        let dir = Dir::open(sandbox).unwrap();
        // A FIFO with no writer would block a plain open: it is refused at once.
        assert_eq!(dir.read_regular(&parts("fifo"), 100).unwrap_err(), "not a regular file in the sandbox");
        assert_eq!(dir.read_regular(&parts("d"), 100).unwrap_err(), "not a regular file in the sandbox");
        assert!(dir.read_regular(&parts("g"), 100).unwrap_err().contains("2 hard links"));
        let null = Dir::open(Path::new("/dev")).unwrap();
        assert_eq!(null.read_regular(&parts("null"), 100).unwrap_err(), "not a regular file in the sandbox");
    }

    #[test]
    fn the_directory_itself_may_not_be_a_link() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("real")).unwrap();
        std::os::unix::fs::symlink(root.path().join("real"), root.path().join("link")).unwrap();
        assert!(Dir::open(&root.path().join("real")).is_ok());
        assert!(Dir::open(&root.path().join("link")).is_err());
    }
}
