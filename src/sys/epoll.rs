//! An epoll set of its own inside the tokio reactor: the set's file
//! descriptor is registered with tokio (one readiness source), the sockets
//! in it are not. The health checker keeps its probe sockets here, so a
//! connection costs one EPOLL_CTL_ADD and leaves the set by being closed,
//! with no registration in tokio's own set to add and delete.
//!
//! Owns the epoll file descriptor. Must not: own or close the sockets
//! added to it (their owners do; closing one removes it from the set).

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use rustix::event::epoll::{self, Event, EventData, EventFlags};
use tokio::io::unix::AsyncFd;

/// An epoll set whose readiness a tokio task can await.
#[derive(Debug)]
pub struct AsyncEpoll {
    fd: AsyncFd<OwnedFd>,
}

impl AsyncEpoll {
    /// A new, empty set, registered with the current tokio runtime's
    /// reactor (panics outside a runtime, as tokio's I/O types do).
    pub fn new() -> io::Result<AsyncEpoll> {
        let fd = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        #[allow(unsafe_code)]
        // SAFETY: `register` needs the descriptor to stay open and to be
        // the same one for the AsyncFd's whole life. The AsyncFd owns the
        // OwnedFd, which closes it only when dropped with it, and
        // OwnedFd::as_raw_fd always returns that one descriptor.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)?;
        Ok(AsyncEpoll { fd })
    }

    /// Adds `source` with `flags`; its events carry `data`.
    pub fn add(&self, source: impl AsFd, data: u64, flags: EventFlags) -> io::Result<()> {
        epoll::add(self.fd.get_ref(), source, EventData::new_u64(data), flags)?;
        Ok(())
    }

    /// Replaces `events` with the events ready now (at most its capacity),
    /// without waiting.
    pub fn take_ready(&self, events: &mut Vec<Event>) -> io::Result<()> {
        events.clear();
        let zero = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        epoll::wait(
            self.fd.get_ref(),
            rustix::buffer::spare_capacity(events),
            Some(&zero),
        )?;
        Ok(())
    }

    /// Waits until the set has events, or may have (a spurious wake-up
    /// then finds none). Edge-triggered: events already there when this is
    /// called are found by [`AsyncEpoll::take_ready`], not by waiting.
    pub async fn ready(&self) {
        match self.fd.readable().await {
            Ok(mut guard) => guard.clear_ready(),
            // The reactor is gone: the runtime is shutting down.
            Err(_) => std::future::pending().await,
        }
    }
}
