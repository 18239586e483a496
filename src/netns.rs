//! Network namespaces: open, create, enter and delete them.
//!
//! Owns the `ip netns` conventions vipgate relies on: named namespaces are
//! files under `/run/netns` on which a namespace is bind-mounted, and
//! `/run/netns` itself is a shared mount point so that the mounts show in
//! every mount namespace. A [`NetNs`] holds an open fd on the namespace; one
//! made by [`NetNs::create`] also owns the name and removes it on drop.
//!
//! Work inside a namespace runs on a fresh thread that `setns()`ed into it
//! ([`NetNs::run`]) or in a child process ([`NetNs::command`]); the calling
//! thread's namespace is never changed. This module does not configure
//! links or addresses (the netlink module does; it only brings `lo` up in a
//! namespace it creates) and never touches namespaces it did not create,
//! except through [`delete_named`] when asked by name.

use std::ffi::{CString, OsStr};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where `ip netns` keeps named namespaces.
pub const NETNS_RUN_DIR: &str = "/run/netns";
/// The calling thread's network namespace.
const THREAD_SELF_NET: &str = "/proc/thread-self/ns/net";
/// Longest file name Linux accepts (NAME_MAX).
const NAME_MAX: usize = 255;
/// Index the kernel gives the loopback device of every namespace.
const LOOPBACK_IFINDEX: u32 = 1;

/// An open network namespace, optionally owning a name under `/run/netns`.
#[derive(Debug)]
pub struct NetNs {
    file: File,
    name: Option<String>,
    path: PathBuf,
    /// Created by us: removed on drop unless [`NetNs::keep`] is called.
    owned: bool,
}

impl NetNs {
    /// The calling thread's network namespace.
    pub fn current() -> io::Result<NetNs> {
        let file = File::open(THREAD_SELF_NET).map_err(|e| context("open own netns", e))?;
        // /proc/thread-self is a symlink to "<pid>/task/<tid>": keep a path
        // that still names this namespace when read from another thread.
        let task = fs::read_link("/proc/thread-self").map_err(|e| context("open own netns", e))?;
        Ok(NetNs {
            file,
            name: None,
            path: Path::new("/proc").join(task).join("ns/net"),
            owned: false,
        })
    }

    /// Opens the existing named namespace `name` (not owned: never deleted
    /// by this handle).
    pub fn open(name: &str) -> io::Result<NetNs> {
        let op = format!("open netns {name}");
        check_name(&op, name)?;
        let path = Path::new(NETNS_RUN_DIR).join(name);
        let file = File::open(&path).map_err(|e| context(&op, e))?;
        Ok(NetNs {
            file,
            name: Some(name.to_string()),
            path,
            owned: false,
        })
    }

    /// Creates the named namespace `name` as `ip netns add` does, with `lo`
    /// up. Fails if the name exists. The namespace is removed when the
    /// returned handle is dropped, unless [`NetNs::keep`] is called.
    pub fn create(name: &str) -> io::Result<NetNs> {
        let op = format!("create netns {name}");
        check_name(&op, name)?;
        prepare_run_dir().map_err(|e| context(&op, e))?;
        let path = Path::new(NETNS_RUN_DIR).join(name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o444)
            .open(&path)
            .map_err(|e| context(&op, e))?;
        // From here on the handle owns the file: every error path below
        // drops it, which unmounts (if needed) and unlinks.
        let mut ns = NetNs {
            file,
            name: Some(name.to_string()),
            path,
            owned: true,
        };
        let target = ns.path.clone();
        std::thread::scope(|s| s.spawn(|| mount_new_netns(&target)).join())
            .map_err(|_| context(&op, io::Error::other("netns thread panicked")))?
            .map_err(|e| context(&op, e))?;
        ns.file = File::open(&ns.path).map_err(|e| context(&op, e))?;
        ns.set_loopback_up().map_err(|e| context(&op, e))?;
        Ok(ns)
    }

    /// The name under `/run/netns`, if this is a named namespace.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// A path that names this namespace (`/run/netns/<name>` or a `/proc`
    /// path for [`NetNs::current`]).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Another handle on the same namespace; it never owns the name.
    pub fn try_clone(&self) -> io::Result<NetNs> {
        Ok(NetNs {
            file: self.file.try_clone()?,
            name: self.name.clone(),
            path: self.path.clone(),
            owned: false,
        })
    }

    /// Runs `f` on a fresh thread that entered this namespace and returns
    /// its result. A panic in `f` is passed on to the caller.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> io::Result<T> {
        let fd = self.file.as_fd();
        let joined = std::thread::scope(|s| {
            s.spawn(move || -> io::Result<T> {
                setns_net(fd.as_raw_fd())?;
                Ok(f())
            })
            .join()
        });
        match joined {
            Ok(result) => result.map_err(|e| context("enter netns", e)),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// A [`Command`] whose child enters this namespace before `exec`.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(program);
        // A dup of our fd moves into the closure, so it stays open as long
        // as the Command lives even if `self` is dropped first; it is
        // O_CLOEXEC, so the program itself does not inherit it.
        match self.file.try_clone() {
            Ok(file) => {
                let fd = OwnedFd::from(file);
                // SAFETY: the hook runs in the child between fork and exec
                // and only makes the setns(2) syscall, which is
                // async-signal-safe; it allocates nothing.
                #[allow(unsafe_code)]
                unsafe {
                    cmd.pre_exec(move || setns_net(fd.as_raw_fd()));
                }
            }
            Err(e) => {
                // Fail the spawn rather than run the program in the wrong
                // namespace.
                let errno = e.raw_os_error().unwrap_or(libc::EMFILE);
                // SAFETY: as above; the hook only returns an error.
                #[allow(unsafe_code)]
                unsafe {
                    cmd.pre_exec(move || Err(io::Error::from_raw_os_error(errno)));
                }
            }
        }
        cmd
    }

    /// Removes a namespace this handle created: unmounts and unlinks its
    /// name. The namespace itself lives on while anything still holds it.
    pub fn delete(mut self) -> io::Result<()> {
        if !self.owned {
            let what = self.name.as_deref().unwrap_or("(unnamed)");
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("delete netns {what}: not created by this handle"),
            ));
        }
        self.owned = false;
        remove_mount(&self.path)
    }

    /// Removes this handle's name under `/run/netns` whoever created it,
    /// as `ip netns delete` does (for `lab down`). Fails for unnamed ones.
    pub fn delete_named(mut self) -> io::Result<()> {
        self.owned = false;
        let Some(name) = self.name.take() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "delete netns: namespace has no name",
            ));
        };
        remove_mount(&self.path).map_err(|e| context(&format!("delete netns {name}"), e))
    }

    /// Gives up ownership: the namespace stays after this handle is gone
    /// (for `lab up`; [`delete_named`] removes it later).
    pub fn keep(mut self) {
        self.disown();
    }

    /// Like [`NetNs::keep`], for a handle the caller cannot move out of.
    pub fn disown(&mut self) {
        self.owned = false;
    }

    /// Names of the namespaces under `/run/netns`, sorted (same as the
    /// module's [`list_named`]).
    pub fn list_named() -> io::Result<Vec<String>> {
        list_named()
    }

    /// Brings `lo` up, from a thread inside the namespace.
    fn set_loopback_up(&self) -> io::Result<()> {
        let mut rtnl = crate::netlink::RtNetlink::open_in(self)?;
        rtnl.set_link_up(LOOPBACK_IFINDEX, true)
    }
}

impl AsRawFd for NetNs {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

impl AsFd for NetNs {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        if let Err(e) = remove_mount(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot delete netns");
        }
    }
}

/// Names of the namespaces under `/run/netns`, sorted.
pub fn list_named() -> io::Result<Vec<String>> {
    let entries = match fs::read_dir(NETNS_RUN_DIR) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(context("list netns", e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| context("list netns", e))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

/// Removes the named namespace `name` as `ip netns delete` does, whoever
/// created it (for `lab down`).
pub fn delete_named(name: &str) -> io::Result<()> {
    NetNs::open(name)?.delete_named()
}

/// iproute2's rule: a name is one path component.
fn check_name(op: &str, name: &str) -> io::Result<()> {
    let bad = name.is_empty()
        || name.len() > NAME_MAX
        || name == "."
        || name == ".."
        || name.bytes().any(|b| b == b'/' || b == 0);
    if bad {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{op}: invalid netns name {name:?}"),
        ));
    }
    Ok(())
}

/// Creates `/run/netns` and makes it a shared mount point, bind-mounting it
/// on itself first if it is not a mount point yet (iproute2 does the same).
fn prepare_run_dir() -> io::Result<()> {
    // Serialised so that two threads creating namespaces at once cannot
    // both bind-mount /run/netns on itself (a stacked mount). Poisoning is
    // harmless: the lock guards no data.
    static PREPARE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _serial = PREPARE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    fs::create_dir_all(NETNS_RUN_DIR)?;
    let dir = c_path(Path::new(NETNS_RUN_DIR))?;
    for _ in 0..2 {
        match mount(None, &dir, libc::MS_SHARED | libc::MS_REC) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                mount(Some(&dir), &dir, libc::MS_BIND | libc::MS_REC)?;
            }
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other(
        "cannot make /run/netns a shared mount point",
    ))
}

/// On a throw-away thread: unshare a new network namespace and bind-mount
/// it on `target`. The thread's namespace is gone with the thread; the
/// mount keeps the namespace alive.
fn mount_new_netns(target: &Path) -> io::Result<()> {
    let target = c_path(target)?;
    let source = c_path(Path::new(THREAD_SELF_NET))?;
    // SAFETY: plain syscall; it only changes this (scoped, soon-ending)
    // thread's network namespace.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    mount(Some(&source), &target, libc::MS_BIND)
}

/// Detaches the bind mount at `path` (if any) and unlinks it.
fn remove_mount(path: &Path) -> io::Result<()> {
    let c = c_path(path)?;
    // SAFETY: plain syscall on a NUL-terminated path that outlives it.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        // EINVAL: not a mount point (creation failed half-way).
        if !matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOENT)) {
            return Err(context(&format!("unmount {}", path.display()), e));
        }
    }
    fs::remove_file(path).map_err(|e| context(&format!("remove {}", path.display()), e))
}

/// mount(2) with no file system type and no data.
fn mount(source: Option<&CString>, target: &CString, flags: libc::c_ulong) -> io::Result<()> {
    let none = c"none";
    let source = source.map_or(none.as_ptr(), |s| s.as_ptr());
    // SAFETY: every pointer is a NUL-terminated string that outlives the
    // call; the data argument may be NULL.
    #[allow(unsafe_code)]
    let rc = unsafe {
        libc::mount(
            source,
            target.as_ptr(),
            none.as_ptr(),
            flags,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// setns(2) into the network namespace behind `fd`, for this thread.
fn setns_net(fd: RawFd) -> io::Result<()> {
    // SAFETY: plain syscall; an invalid fd makes it fail with EBADF.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::setns(fd, libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

fn context(op: &str, err: io::Error) -> io::Error {
    io::Error::new(err.kind(), format!("{op}: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_one_path_component() {
        for good in ["a", "vgt-123-a", "x.y_z", &"n".repeat(NAME_MAX)] {
            assert!(check_name("t", good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "/a",
            "a\0b",
            &"n".repeat(NAME_MAX + 1),
        ] {
            assert!(check_name("t", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn current_has_a_stable_proc_path() {
        let ns = NetNs::current().unwrap();
        assert_eq!(ns.name(), None);
        assert!(ns.path().starts_with("/proc"), "{}", ns.path().display());
        // The path names the same namespace from another thread.
        let here = fs::metadata(THREAD_SELF_NET).unwrap();
        let there = std::thread::scope(|s| s.spawn(|| fs::metadata(ns.path())).join())
            .unwrap()
            .unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!((here.dev(), here.ino()), (there.dev(), there.ino()));
    }

    #[test]
    fn open_rejects_bad_names_and_missing_ones() {
        assert_eq!(
            NetNs::open("../etc").unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        let missing = format!("vgt-{}-missing", std::process::id());
        assert_eq!(
            NetNs::open(&missing).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }

    #[test]
    fn delete_refuses_unowned() {
        let ns = NetNs::current().unwrap();
        assert_eq!(ns.delete().unwrap_err().kind(), io::ErrorKind::InvalidInput);
    }
}
