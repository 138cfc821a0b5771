//! What a native task's child does to shut itself in, between fork and exec: new namespaces, a
//! filesystem view of its own, then a second fork so that the task is pid 1 of its pid namespace.
//!
//! Everything here runs in a forked child of a multi-threaded process: only direct system calls
//! on data the parent prepared ([`Jail`]), no allocation, no locks.
//!
//! The child that `tokio::process` forked (the *waiter*) makes the namespaces and the view, forks
//! the task, closes every descriptor it does not need (the task's exec-error pipe included, so the
//! spawn returns once the task has exec'd) and waits: it exits as the task did. It stays outside
//! the task's pid namespace, dies with the executor (`PR_SET_PDEATHSIG`), and the task dies with
//! it: pid 1 of a pid namespace takes every process in it along when it ends.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::libc;

/// One step of building the task's filesystem view; paths are the host's, under the new root.
#[derive(Debug, Clone)]
pub enum Step {
    /// A directory with this mode.
    Dir { path: CString, mode: u32 },
    /// A directory, unless there is one already (the parents of an operator's host directory).
    DirIfMissing { path: CString },
    /// A symbolic link (as the host's `/bin -> usr/bin`).
    Link { target: CString, path: CString },
    /// A tmpfs that may hold device nodes (no set-uid, no exec): the task's `/dev`.
    DevFs { path: CString },
    /// A character device node (`mode` with its permission bits), as the host's.
    Node { path: CString, mode: u32, dev: u64 },
    /// What is mounted at `path` made read-only (the `/dev` above, once its nodes are made: no
    /// node can be added to it).
    Seal { path: CString },
    /// `from` bound at `path`, read-only, no set-uid, no devices.
    BindRo { from: CString, path: CString },
    /// `from` bound at `path`, read-write, no set-uid, no devices (the sandbox).
    BindRw { from: CString, path: CString },
    /// A tmpfs with these options (`/tmp`).
    Tmpfs { path: CString, options: CString },
}

/// What every task's view shares: prepared once per agent.
#[derive(Debug)]
pub struct Frame {
    /// Host directory the task's root (a tmpfs) is mounted on, in the task's mount namespace only.
    pub root: CString,
    /// Options of the root tmpfs.
    pub root_options: CString,
    /// The host's part of the view, in order.
    pub steps: Vec<Step>,
    /// `<root>/proc`, where the task's own procfs goes.
    pub proc: CString,
    /// `<root>/.old-root` and `/.old-root`: where `pivot_root` puts the host's root, then detached.
    pub old_root: CString,
    pub old_root_inside: CString,
    /// The working directory, inside the view.
    pub workdir: CString,
}

/// A native task's containment, prepared by the parent.
#[derive(Debug)]
pub struct Jail {
    pub frame: std::sync::Arc<Frame>,
    /// The task's own steps, after the frame's (its sandbox).
    pub steps: Vec<Step>,
    pub hostname: CString,
    /// A network namespace of its own (loopback only); `false`: the host's network.
    pub own_network: bool,
    /// That namespace, made ahead of the launch ([`loopback_namespace`]) and joined; `None`: made
    /// by the child itself.
    pub network: Option<OwnedFd>,
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

fn mount(
    source: &CStr,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> io::Result<()> {
    let fstype = fstype.map_or(std::ptr::null(), |f| f.as_ptr());
    let data = data.map_or(std::ptr::null(), |d| d.as_ptr().cast());
    // SAFETY: every pointer is a NUL-terminated string the parent prepared, or null.
    check(unsafe { libc::mount(source.as_ptr(), target.as_ptr(), fstype, flags, data) })
}

fn remount_bind(path: &CStr, flags: libc::c_ulong) -> io::Result<()> {
    // SAFETY: as in `mount`; a remount ignores the source.
    check(unsafe {
        libc::mount(
            c"none".as_ptr(),
            path.as_ptr(),
            std::ptr::null(),
            libc::MS_REMOUNT | libc::MS_BIND | flags,
            std::ptr::null(),
        )
    })
}

fn step(step: &Step) -> io::Result<()> {
    const SAFE: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV;
    // SAFETY (each call): NUL-terminated strings prepared by the parent.
    match step {
        Step::Dir { path, mode } => {
            check(unsafe { libc::mkdir(path.as_ptr(), *mode) })?;
            // mkdir's mode is masked by the umask.
            check(unsafe { libc::chmod(path.as_ptr(), *mode) })
        }
        Step::DirIfMissing { path } => match check(unsafe { libc::mkdir(path.as_ptr(), 0o755) }) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            other => other,
        },
        Step::Link { target, path } => check(unsafe { libc::symlink(target.as_ptr(), path.as_ptr()) }),
        Step::DevFs { path } => mount(
            c"tmpfs",
            path,
            Some(c"tmpfs"),
            libc::MS_NOSUID | libc::MS_NOEXEC,
            Some(c"mode=0755,size=64k,nr_inodes=64"),
        ),
        Step::Node { path, mode, dev } => {
            check(unsafe { libc::mknod(path.as_ptr(), libc::S_IFCHR | (mode & 0o777), *dev) })?;
            // mknod's mode is masked by the umask.
            check(unsafe { libc::chmod(path.as_ptr(), mode & 0o777) })
        }
        Step::Seal { path } => check(unsafe {
            libc::mount(
                c"none".as_ptr(),
                path.as_ptr(),
                std::ptr::null(),
                libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NOEXEC,
                std::ptr::null(),
            )
        }),
        Step::BindRo { from, path } => {
            mount(from, path, None, libc::MS_BIND | libc::MS_REC, None)?;
            remount_bind(path, libc::MS_RDONLY | SAFE)
        }
        Step::BindRw { from, path } => {
            mount(from, path, None, libc::MS_BIND, None)?;
            remount_bind(path, SAFE)
        }
        Step::Tmpfs { path, options } => mount(c"tmpfs", path, Some(c"tmpfs"), SAFE, Some(options)),
    }
}

/// Brings up `lo` in a fresh network namespace.
fn loopback_up() -> io::Result<()> {
    // SAFETY: a datagram socket used for two interface ioctls on a zeroed, NUL-terminated ifreq.
    unsafe {
        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        check(sock)?;
        let mut ifr: libc::ifreq = std::mem::zeroed();
        ifr.ifr_name[0] = b'l' as libc::c_char;
        ifr.ifr_name[1] = b'o' as libc::c_char;
        let got = check(libc::ioctl(sock, libc::SIOCGIFFLAGS as _, &mut ifr));
        let set = got.and_then(|()| {
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            check(libc::ioctl(sock, libc::SIOCSIFFLAGS as _, &ifr))
        });
        libc::close(sock);
        set
    }
}

/// A new network namespace with `lo` up, made on a thread of its own (a namespace is per thread)
/// and kept by the returned descriptor: making one takes most of a launch's containment time,
/// which tasks then spend joining it instead.
pub fn loopback_namespace() -> io::Result<OwnedFd> {
    let make = || -> io::Result<OwnedFd> {
        // SAFETY: unshare of this (short-lived) thread's network namespace; open of a procfs
        // file whose descriptor is owned from here on.
        check(unsafe { libc::unshare(libc::CLONE_NEWNET) })?;
        loopback_up()?;
        let fd = unsafe { libc::open(c"/proc/thread-self/ns/net".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        check(fd)?;
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    };
    std::thread::scope(|s| s.spawn(make).join()).unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))
}

/// In the waiter (the forked child, still root): new namespaces and the view, then the fork of the
/// task. Returns only in the task (pid 1 of its namespace), with the read end of a pipe whose write
/// end only the waiter holds (see [`waiter_alive`]); the waiter never returns.
pub fn enter(jail: &Jail) -> io::Result<libc::c_int> {
    let mut flags = libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
    let make_network = jail.own_network && jail.network.is_none();
    if make_network {
        flags |= libc::CLONE_NEWNET;
    }
    // SAFETY: plain system calls on prepared strings.
    check(unsafe { libc::unshare(flags) })?;
    if let Some(network) = &jail.network {
        check(unsafe { libc::setns(network.as_raw_fd(), libc::CLONE_NEWNET) })?;
    }
    // Nothing mounted from here on reaches the host's namespace. Where the agent runs chrooted
    // into a directory that is no mount point (CI's bare root), `/` cannot be made private
    // (EINVAL): the task's root is then made a private mount of its own before anything is
    // mounted on it (run such an agent in a private mount namespace, as `unshare --mount` gives,
    // so that even this bind stays out of the host's).
    let private = libc::MS_REC | libc::MS_PRIVATE;
    let null = std::ptr::null();
    if let Err(e) = check(unsafe { libc::mount(null, c"/".as_ptr(), null, private, null.cast()) }) {
        if e.raw_os_error() != Some(libc::EINVAL) {
            return Err(e);
        }
        mount(&jail.frame.root, &jail.frame.root, None, libc::MS_BIND, None)?;
        check(unsafe { libc::mount(null, jail.frame.root.as_ptr(), null, private, null.cast()) })?;
    }
    mount(
        c"tmpfs",
        &jail.frame.root,
        Some(c"tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some(&jail.frame.root_options),
    )?;
    for s in jail.frame.steps.iter().chain(&jail.steps) {
        step(s)?;
    }
    check(unsafe { libc::sethostname(jail.hostname.as_ptr(), jail.hostname.as_bytes().len()) })?;
    if make_network {
        loopback_up()?;
    }
    let mut pipe = [0 as libc::c_int; 2];
    check(unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) })?;
    let parent = unsafe { libc::getppid() };
    // SAFETY: this process is single-threaded (a fork's child); both sides go on with direct
    // system calls only.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            unsafe { libc::close(pipe[1]) };
            Ok(pipe[0])
        }
        task => wait_as_task(task, pipe[1], parent),
    }
}

/// The waiter's life: it keeps only stdio and the pipe's write end, dies with its parent, and
/// exits as the task did.
fn wait_as_task(task: libc::pid_t, keep: libc::c_int, parent: libc::pid_t) -> ! {
    // SAFETY: direct system calls; `_exit` never returns.
    unsafe {
        if libc::syscall(libc::SYS_close_range, 3u32, (keep - 1) as u32, 0u32) < 0
            || libc::syscall(libc::SYS_close_range, (keep + 1) as u32, u32::MAX, 0u32) < 0
        {
            for fd in (3..4096).filter(|fd| *fd != keep) {
                libc::close(fd);
            }
        }
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
        if libc::getppid() != parent {
            libc::kill(task, libc::SIGKILL);
            libc::_exit(126);
        }
        let mut status = 0;
        loop {
            let r = libc::waitpid(task, &mut status, 0);
            if r == task {
                break;
            }
            if r < 0 && *libc::__errno_location() != libc::EINTR {
                libc::_exit(126);
            }
        }
        if libc::WIFEXITED(status) {
            libc::_exit(libc::WEXITSTATUS(status));
        }
        let sig = libc::WTERMSIG(status);
        libc::signal(sig, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::kill(libc::getpid(), sig);
        libc::_exit(128 + sig);
    }
}

/// In the task, still root: its procfs, then its root becomes the view (`pivot_root`; where the
/// agent itself runs chrooted, as in CI's bare root, `pivot_root` is refused and the task is
/// chrooted into the view instead, which it cannot leave without `CAP_SYS_CHROOT`).
pub fn pivot(jail: &Jail) -> io::Result<()> {
    mount(c"proc", &jail.frame.proc, Some(c"proc"), libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC, None)?;
    // SAFETY: direct system calls on prepared strings.
    unsafe {
        let pivoted = libc::syscall(libc::SYS_pivot_root, jail.frame.root.as_ptr(), jail.frame.old_root.as_ptr()) == 0;
        if pivoted {
            check(libc::chdir(c"/".as_ptr()))?;
            check(libc::umount2(jail.frame.old_root_inside.as_ptr(), libc::MNT_DETACH))?;
            check(libc::rmdir(jail.frame.old_root_inside.as_ptr()))?;
        } else {
            check(libc::chdir(jail.frame.root.as_ptr()))?;
            check(libc::chroot(c".".as_ptr()))?;
            check(libc::rmdir(jail.frame.old_root_inside.as_ptr()))?;
        }
        check(libc::chdir(jail.frame.workdir.as_ptr()))
    }
}

/// Whether the waiter still holds the write end of the task's pipe (`read_end`): after the task
/// set its own death signal, a waiter already gone would never send it.
pub fn waiter_alive(read_end: libc::c_int) -> bool {
    let mut fd = libc::pollfd { fd: read_end, events: libc::POLLIN, revents: 0 };
    // SAFETY: one pollfd on the stack, no wait.
    let n = unsafe { libc::poll(&mut fd, 1, 0) };
    unsafe { libc::close(read_end) };
    n == 0
}
