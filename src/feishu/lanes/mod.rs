//! Lanes: one file per platform endpoint, and the list of them ([`ALL`]).
//!
//! A lane is everything that is particular to one write endpoint: the queue kind it carries, its path
//! and request body, how many rows one request carries and which rows may share one, how its stored
//! payload is read, its own reading of the platform's error table, whether its values overwrite each
//! other (and so must go out in order), and how a row gets a new user id. The sender
//! ([`crate::sender`]) is generic over [`Lane`]; the queue learns what it needs through
//! [`KindRules`]. Neither names an endpoint.
//!
//! Adding a platform call: a new file here with a unit struct implementing [`KindRules`] and
//! [`Lane`], its `pub mod` line and its entry in [`ALL`] (the checklist is in
//! `docs/architecture.md`, "Adding a platform call"). The daemon starts one sender per entry; `status`
//! and `/metrics` list every entry's kind.

pub mod accruals;
pub mod approvals;
pub mod reports;
pub mod user_flows;

use std::future::Future;
use std::pin::Pin;

use crate::config::SenderConfig;
use crate::feishu::{FeishuClient, Reply, Verdict};
use crate::queue::{Claimed, KindRules};

/// Every lane. The daemon starts one sender per lane, in this order; `status` (`kinds`, `senders`)
/// and `/metrics` (`clockbridge_queue_records`, `clockbridge_hr_*`) list every lane's kind.
pub static ALL: &[&dyn Lane] = &[
    &user_flows::UserFlows,
    &approvals::Approvals,
    &reports::Reports,
    &accruals::Accruals,
];

/// The lane of punches: fed by the ingest writer; its figures are `status`'s `sender` and the
/// `clockbridge_sender_*` metrics (every other lane's are under `senders` and `clockbridge_hr_*`).
pub static PUNCHES: &dyn Lane = &user_flows::UserFlows;

/// What a reply means for a request of `lane`: what the sender acts on.
///
/// The integration guide's error table says that "no row affected" (a failed update, or an
/// optimistic-lock conflict with a concurrent write) is to be retried, whatever the endpoint and the
/// code it comes with (1220600 is also a page's "param invalid"). So it is retried, with the
/// sender's back-off, on every lane before the lane's own table is read: a lane cannot turn it into a
/// dead letter. A retry is harmless: every record carries its idempotent key, or sets an absolute
/// value.
pub fn verdict(lane: &dyn Lane, reply: &Reply) -> Verdict {
    if crate::feishu::classify::no_row_affected(reply) {
        return Verdict::Retry;
    }
    lane.classify(reply)
}

/// The lane that sends records of `kind`.
pub fn get(kind: &str) -> Option<&'static dyn Lane> {
    ALL.iter().copied().find(|l| l.kind() == kind)
}

/// What the queue must know of records of `kind` (for [`crate::queue::Queue::retry_dead_selected`]).
pub fn rules(kind: &str) -> Option<&'static dyn KindRules> {
    get(kind).map(|l| l as &dyn KindRules)
}

/// A request on its way: what [`Lane::send`] returns.
pub type Sending<'a> = Pin<Box<dyn Future<Output = Reply> + Send + 'a>>;

/// Claimed rows as the requests that carry them.
#[derive(Debug, Default)]
pub struct Plan {
    /// The first requests (each is split further if the platform refuses it as invalid).
    pub requests: Vec<Vec<Claimed>>,
    /// Rows whose stored payload this lane cannot read (changed outside clockbridge): dead letters.
    pub unreadable: Vec<Claimed>,
}

impl Plan {
    /// Every row in one request.
    pub fn one(rows: Vec<Claimed>) -> Plan {
        Plan {
            requests: vec![rows],
            unreadable: Vec::new(),
        }
    }

    /// Rows `readable` accepts in one request, the others unreadable.
    pub fn readable(rows: Vec<Claimed>, readable: impl Fn(&str) -> bool) -> Plan {
        let (ok, unreadable) = rows.into_iter().partition(|r| readable(&r.payload));
        Plan {
            requests: vec![ok],
            unreadable,
        }
    }
}

/// How to settle a request the platform applied except for the members and field codes its reply
/// listed ([`Verdict::ReportInvalid`]).
#[derive(Debug, Default)]
pub struct Exceptions {
    /// Rows to keep as dead letters, each group with its reason and the detail added to the reply's
    /// message.
    pub dead: Vec<(Vec<Claimed>, &'static str, String)>,
    /// The rest: delivered.
    pub delivered: Vec<Claimed>,
}

/// One platform write endpoint (see the module doc). Implemented by a unit struct per file.
pub trait Lane: KindRules {
    /// Most rows one request carries.
    fn batch_limit(&self, cfg: &SenderConfig) -> usize;

    /// The claimed rows (at most [`Lane::batch_limit`], in id order) as first requests. Default: all
    /// in one, every payload readable.
    fn plan(&self, rows: Vec<Claimed>) -> Plan {
        Plan::one(rows)
    }

    /// Sends one request carrying `rows` (from [`Lane::plan`], or a half of a refused one).
    fn send<'a>(&'a self, client: &'a FeishuClient, rows: &'a [Claimed]) -> Sending<'a>;

    /// What the reply means for the request.
    fn classify(&self, reply: &Reply) -> Verdict;

    /// Detail added to the message kept with the rows when the reply failed. Default: a failed
    /// reply's `data` (e.g. the error records of a 1225001), when it has any.
    fn failure_detail(&self, reply: &Reply) -> Option<String> {
        let has_data = reply
            .data
            .as_object()
            .map(|o| !o.is_empty())
            .unwrap_or(false)
            || reply.data.is_array();
        (reply.code != Some(0) && has_data).then(|| reply.data.to_string())
    }

    /// The rows a [`Verdict::ReportInvalid`] reply names. Default (lanes whose classification never
    /// gives that verdict): none, every row delivered.
    fn exceptions(&self, rows: Vec<Claimed>, members: &[String], codes: &[String]) -> Exceptions {
        let _ = (members, codes);
        Exceptions {
            dead: Vec::new(),
            delivered: rows,
        }
    }

    /// Whether each delivered request is logged (at debug level). Default: yes.
    fn logs_deliveries(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feishu::classify::reply;

    #[test]
    fn no_row_affected_is_retried_on_every_lane_whatever_its_code() {
        // the codes each page lists for good (accruals: 1220600; approvals: 1225001) and the
        // general ones must not turn the integration guide's "retry" into a dead letter
        let replies = [
            reply(400, Some(1220600), "no row affected"),
            reply(200, Some(1220600), "No Row Affected"),
            reply(400, Some(1225001), "no row affected"),
            reply(400, Some(1220005), "update failed: no row affected"),
            reply(500, Some(1229999), "no row affected"),
        ];
        for lane in ALL {
            for r in &replies {
                assert_eq!(verdict(*lane, r), Verdict::Retry, "{} {r:?}", lane.kind());
            }
            // a rate limit stays a rate limit, and the lane's own table reads everything else
            assert!(matches!(
                verdict(*lane, &reply(429, Some(99991400), "no row affected")),
                Verdict::RateLimited { .. }
            ));
            assert_eq!(
                verdict(*lane, &reply(400, Some(1220600), "param invalid")),
                lane.classify(&reply(400, Some(1220600), "param invalid")),
                "{}",
                lane.kind()
            );
        }
        assert_eq!(
            verdict(
                &accruals::Accruals,
                &reply(400, Some(1220600), "param invalid")
            ),
            Verdict::Invalid
        );
    }
}
