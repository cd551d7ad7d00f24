//! File descriptors: how many the daemon may open, and how many of them clock connections may take.
//!
//! Every connection a clock opens to a listening device is a descriptor, and so is every upload's
//! socket, the queue's files, each `[http]` request and each inbox file. With the usual soft limit of
//! 1,024 and nothing else in the way, about 1,010 idle connections to one listening port once stopped
//! accepts, every upload ("Too many open files") and `/healthz`.
//!
//! Guarantees:
//! - [`raise_nofile`] (at the start of `clockbridge run`) raises the soft `RLIMIT_NOFILE` to the hard
//!   limit; the shipped unit sets both with `LimitNOFILE=` (its system-call filter does not let the
//!   daemon raise them itself).
//! - The connections accepted by all listening devices together never exceed
//!   [`clock_connections`]: `[limits] max_clock_connections`, but never more than the soft limit
//!   minus a reserve ([`reserve`]), so uploads, the queue and `/healthz` always find descriptors.
//!   Each listening device has its own `max_connections` as well (`sources::tcp`).
//! - A connection beyond either cap is accepted and closed at once (so the clock sees a close, not
//!   a hang), counted, and logged at most once a minute (`sources::tcp::source`).

use std::sync::{Arc, OnceLock};

use nix::sys::resource::{getrlimit, setrlimit, Resource};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// `[limits] max_clock_connections` when the configuration does not set it.
pub const DEFAULT_MAX_CLOCK_CONNECTIONS: usize = 1024;

/// Descriptors kept for everything but clock connections, out of a soft limit of `soft`: a quarter
/// of it, at least 64 and at most 1,024. With 1,024 that is 256: the uploads of four lanes at 16
/// requests each, the queue's files, `/healthz` and `/metrics` scrapes, inbox files, and a socket
/// or port per connect-mode, `zk` and serial device.
pub fn reserve(soft: u64) -> u64 {
    (soft / 4).clamp(64, 1024)
}

/// What [`raise_nofile`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nofile {
    /// The soft limit found at start.
    pub before: u64,
    /// The soft limit now.
    pub soft: u64,
    /// The hard limit.
    pub hard: u64,
    /// Why the soft limit could not be raised to the hard one (it stays at `before`).
    pub error: Option<String>,
}

/// Raises the soft limit of open files to the hard limit.
pub fn raise_nofile() -> Nofile {
    let (before, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(l) => l,
        Err(e) => {
            return Nofile {
                before: 1024,
                soft: 1024,
                hard: 1024,
                error: Some(format!("cannot read the limit: {e}")),
            }
        }
    };
    if before >= hard {
        return Nofile {
            before,
            soft: before,
            hard,
            error: None,
        };
    }
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => Nofile {
            before,
            soft: hard,
            hard,
            error: None,
        },
        Err(e) => Nofile {
            before,
            soft: before,
            hard,
            error: Some(e.to_string()),
        },
    }
}

/// The soft limit of open files now.
pub fn soft_nofile() -> u64 {
    getrlimit(Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024)
}

/// The cap on clock connections for a configured `max` and a soft limit `soft`.
pub fn clock_connection_cap(max: usize, soft: u64) -> usize {
    let room = soft.saturating_sub(reserve(soft)).max(1);
    max.min(usize::try_from(room).unwrap_or(usize::MAX)).max(1)
}

/// The connections every listening device of the process takes from: one permit per open connection.
#[derive(Debug, Clone)]
pub struct ConnectionBudget {
    permits: Arc<Semaphore>,
    cap: usize,
}

impl ConnectionBudget {
    /// A budget of `cap` connections.
    pub fn new(cap: usize) -> ConnectionBudget {
        ConnectionBudget {
            permits: Arc::new(Semaphore::new(cap)),
            cap,
        }
    }

    /// A permit for one more connection, held while it is open; `None` at the cap.
    pub fn try_take(&self) -> Option<OwnedSemaphorePermit> {
        self.permits.clone().try_acquire_owned().ok()
    }

    /// The cap.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.cap - self.permits.available_permits()
    }
}

static CLOCK_CONNECTIONS: OnceLock<ConnectionBudget> = OnceLock::new();

/// Sets the process's budget of clock connections (once, before the sources start): `max`
/// (`[limits] max_clock_connections`) within the soft limit `soft` less its reserve. A budget already
/// set (or already used) stays.
pub fn set_clock_connections(max: usize, soft: u64) -> &'static ConnectionBudget {
    CLOCK_CONNECTIONS.get_or_init(|| ConnectionBudget::new(clock_connection_cap(max, soft)))
}

/// The process's budget of clock connections (the default cap within the current soft limit, when
/// [`set_clock_connections`] was not called: in tests and the demo).
pub fn clock_connections() -> &'static ConnectionBudget {
    CLOCK_CONNECTIONS.get_or_init(|| {
        ConnectionBudget::new(clock_connection_cap(
            DEFAULT_MAX_CLOCK_CONNECTIONS,
            soft_nofile(),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_grows_with_the_limit_within_bounds() {
        assert_eq!(reserve(128), 64);
        assert_eq!(reserve(1024), 256);
        assert_eq!(reserve(65_536), 1024);
        assert_eq!(reserve(1 << 20), 1024);
    }

    #[test]
    fn the_cap_is_the_configured_one_within_the_limit_less_the_reserve() {
        // the usual soft limit without the unit: 1,024 - 256
        assert_eq!(clock_connection_cap(1024, 1024), 768);
        // the unit's LimitNOFILE=65536: the configuration decides
        assert_eq!(clock_connection_cap(1024, 65_536), 1024);
        assert_eq!(clock_connection_cap(100_000, 65_536), 64_512);
        // a tiny limit still leaves one connection, never zero
        assert_eq!(clock_connection_cap(1024, 64), 1);
        assert_eq!(clock_connection_cap(150, 256), 150);
    }

    #[test]
    fn a_budget_gives_permits_up_to_its_cap_and_takes_them_back() {
        let b = ConnectionBudget::new(2);
        let one = b.try_take().unwrap();
        let _two = b.try_take().unwrap();
        assert_eq!(b.open(), 2);
        assert!(b.try_take().is_none());
        drop(one);
        assert_eq!(b.open(), 1);
        assert!(b.try_take().is_some());
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one_or_says_why_not() {
        // this process's own limit: raising to the hard limit is allowed to every process
        let n = raise_nofile();
        assert!(n.soft <= n.hard);
        match &n.error {
            None => assert_eq!((n.soft, soft_nofile()), (n.hard, n.hard)),
            Some(e) => assert_eq!(n.soft, n.before, "{e}"),
        }
    }
}
