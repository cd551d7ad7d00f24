//! The stand-in's HR endpoints, each with the rules of its page: approval results
//! ([`approvals`]), archived report results ([`reports`]) and leave accrual updates ([`accruals`]).
//! The bodies are checked with the product's own validators (`clockbridge::hr`): the stand-in's
//! independence stops there, so a rule the product gets wrong is not caught by these endpoints;
//! the tests of `clockbridge::hr` check those rules against the pages.
//!
//! Like batch_create, each endpoint has its own fault queue ([`Standin::push_fault_on`]; the sticky
//! fault applies too), its own sliding one-second rate limit, and can record the raw request bodies.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::Value;

use super::platform::Api;
use super::reply::Reply;
use super::server::{lock, Shared};
use super::Standin;

mod accruals;
mod approvals;
mod reports;
#[cfg(test)]
mod tests;

/// One approval item written.
#[derive(Debug, Clone)]
pub struct StoredApproval {
    /// `leave`, `out`, `overtime` or `trip`.
    pub item_type: String,
    pub user_id: String,
    pub date: String,
    pub item: Value,
    pub log_id: String,
}

impl StoredApproval {
    pub fn idempotent_id(&self) -> Option<&str> {
        self.item.get("idempotent_id").and_then(Value::as_str)
    }
}

/// A leave granting record the stand-in knows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AccrualRecord {
    pub id: String,
    pub employment_id: String,
    pub leave_type_id: String,
    pub quantity: String,
    pub expiration_date: String,
    /// 1 system, 2 manual, 3 external system: records granted by the system cannot be edited.
    pub granted_by: i64,
    /// PATCH requests applied to it.
    pub patches: u64,
}

/// `(archive_rule_id, month, member_id, start_time, end_time)`.
pub type ReportKey = (String, String, String, String, String);

/// What the HR endpoints store, behind the stand-in's one lock.
#[derive(Default)]
pub(super) struct HrState {
    approvals: Vec<StoredApproval>,
    approval_counts: HashMap<String, usize>,
    reports: BTreeMap<ReportKey, BTreeMap<String, String>>,
    report_rows_written: u64,
    archive_rules: Option<HashSet<String>>,
    report_codes: Option<HashSet<String>>,
    accruals: HashMap<String, AccrualRecord>,
}

impl Standin {
    /// Every approval item written, in order.
    pub fn approvals(&self) -> Vec<StoredApproval> {
        lock(&self.shared.inner).hr.approvals.clone()
    }

    /// `TYPE:IDEMPOTENT_ID` -> times an approval item with it was written.
    pub fn approval_write_counts(&self) -> HashMap<String, usize> {
        lock(&self.shared.inner).hr.approval_counts.clone()
    }

    /// The archived report values stored, per row.
    pub fn report_values(&self) -> BTreeMap<ReportKey, BTreeMap<String, String>> {
        lock(&self.shared.inner).hr.reports.clone()
    }

    /// Report rows written (a row written twice counts twice).
    pub fn report_rows_written(&self) -> u64 {
        lock(&self.shared.inner).hr.report_rows_written
    }

    /// `None`: every archive rule exists; `Some(set)`: only these.
    pub fn set_archive_rules(&self, rules: Option<HashSet<String>>) {
        lock(&self.shared.inner).hr.archive_rules = rules;
    }

    /// `None`: every field code exists; `Some(set)`: only these.
    pub fn set_report_codes(&self, codes: Option<HashSet<String>>) {
        lock(&self.shared.inner).hr.report_codes = codes;
    }

    /// Adds (or replaces) a granting record.
    pub fn add_accrual_record(&self, r: AccrualRecord) {
        lock(&self.shared.inner).hr.accruals.insert(r.id.clone(), r);
    }

    /// A granting record as it is now.
    pub fn accrual_record(&self, id: &str) -> Option<AccrualRecord> {
        lock(&self.shared.inner).hr.accruals.get(id).cloned()
    }
}

/// Applies a request to one of the HR endpoints (after its fault, token and rate limit).
pub(super) fn apply(
    shared: &Shared,
    api: Api,
    parts: &hyper::http::request::Parts,
    body: &[u8],
    log_id: &str,
) -> Reply {
    match api {
        Api::UserApprovals => approvals::approvals(shared, parts, body, log_id),
        Api::UploadReport => reports::report(shared, parts, body),
        Api::LeaveAccrual | Api::UserFlows | Api::UserFlowGet | Api::UserFlowQuery => {
            accruals::accrual(shared, parts, body)
        }
    }
}
