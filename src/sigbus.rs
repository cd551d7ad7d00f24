//! A bus error (SIGBUS) says why before the process dies.
//!
//! SQLite maps the queue's shared-memory file (`QUEUE-shm`, the WAL index) into memory. When that file
//! can no longer be backed (truncated under the daemon, its disk full for a sparse page, its
//! filesystem gone read-only or away), the next access to the mapping raises SIGBUS, whose default
//! action kills the process without a word: the log ends, and nothing says what to look at.
//!
//! Guarantees:
//! - [`install`] (called by every command that opens the queue, before it opens it) prepares one
//!   message naming the queue's `-shm` file and what to check, and installs a handler for SIGBUS.
//! - The handler does only what is safe in a signal handler: one `write(2)` of the prepared bytes to
//!   standard error (the journal, under systemd), then the default action again (`SA_RESETHAND`) and
//!   the signal raised anew, so the process still dies of SIGBUS (a core dump where enabled, and
//!   systemd's `Restart=` starts it again). Nothing committed is lost: the queue's transactions are
//!   durable, and rows in flight are sent again after the restart.

use std::path::Path;
use std::sync::OnceLock;

use nix::sys::signal::{raise, sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

/// The message the handler writes, prepared before the handler is installed (a handler may not
/// allocate).
static MESSAGE: OnceLock<Box<[u8]>> = OnceLock::new();

/// The line written on SIGBUS for the queue at `queue`.
pub fn message(queue: &Path) -> String {
    let shm = crate::queue::side_file(queue, "-shm");
    let dir = match queue.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.display().to_string(),
        _ => ".".into(),
    };
    format!(
        "clockbridge: SIGBUS (bus error): a memory-mapped file could not be read or written; it is almost certainly the queue's shared-memory file {shm}, which SQLite maps: check that the disk is not full (df {dir}), that {shm} and {dir} are still writable by the user clockbridge runs as, and that the filesystem did not go read-only or away (dmesg, findmnt -T {dir}); the process stops now: nothing committed to the queue is lost, and rows in flight are sent again after the restart\n",
        shm = shm.display(),
    )
}

/// Installs the SIGBUS handler for the queue at `queue` (once per process: a later call keeps the
/// first message).
pub fn install(queue: &Path) -> nix::Result<()> {
    MESSAGE.get_or_init(|| message(queue).into_bytes().into_boxed_slice());
    let action = SigAction::new(
        SigHandler::Handler(on_sigbus),
        // the default action back on entry; the signal not blocked inside, so raising it kills at
        // once; on the alternate stack where the thread has one
        SaFlags::SA_RESETHAND | SaFlags::SA_NODEFER | SaFlags::SA_ONSTACK,
        SigSet::empty(),
    );
    // SAFETY: `on_sigbus` only calls async-signal-safe functions (write(2), raise(3)) and reads
    // `MESSAGE`, which is initialised above, before the handler can run, and never changes again.
    unsafe { sigaction(Signal::SIGBUS, &action) }.map(|_| ())
}

extern "C" fn on_sigbus(_: nix::libc::c_int) {
    if let Some(message) = MESSAGE.get() {
        // `stderr()` takes no lock and allocates nothing; the write is one system call
        let _ = nix::unistd::write(std::io::stderr(), message);
    }
    // SA_RESETHAND restored the default action: die of SIGBUS, as without this handler
    let _ = raise(Signal::SIGBUS);
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_message_names_the_shm_file_and_what_to_check() {
        let m = super::message(std::path::Path::new("/var/lib/clockbridge/queue.db"));
        assert!(m.contains("/var/lib/clockbridge/queue.db-shm"), "{m}");
        assert!(m.contains("df /var/lib/clockbridge"), "{m}");
        assert!(m.contains("writable") && m.contains("read-only"), "{m}");
        assert!(m.ends_with('\n') && m.lines().count() == 1, "{m}");
    }
}
