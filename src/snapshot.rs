//! What the running daemon writes every few seconds into the queue's `runtime` table for `clockbridge
//! status`, which runs in another process (and for `/status`): its figures and its health verdict.
//! The daemon writes it ([`crate::daemon`]); [`crate::status`] reads it.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::health::Condition;
use crate::inbox::InboxSnapshot;
use crate::sender::SenderSnapshot;
use crate::sources::DeviceSnapshot;

/// Key of the daemon's snapshot in the queue's `runtime` table.
pub const RUNTIME_KEY: &str = "daemon";

/// What the daemon writes for `status` every few seconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RuntimeSnapshot {
    pub pid: u32,
    pub version: String,
    pub started_at: i64,
    pub devices: HashMap<String, DeviceSnapshot>,
    pub sender: SenderSnapshot,
    pub mapping_rows: Option<usize>,
    /// The senders of every lane but the punch lane (`sender`), by queue kind (`user_approval`,
    /// `archive_report`, `leave_accrual`).
    #[serde(default)]
    pub senders: BTreeMap<String, SenderSnapshot>,
    /// The inbox directories, by `[inbox]` key.
    #[serde(default)]
    pub inbox: BTreeMap<String, InboxSnapshot>,
    /// The health model's conditions when the snapshot was taken (none: healthy); see
    /// [`crate::health`].
    #[serde(default)]
    pub conditions: Vec<Condition>,
}
