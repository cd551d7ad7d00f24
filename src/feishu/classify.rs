//! Classification of every platform reply into what the sender must do with the batch.
//!
//! Sources: the `user_flows/batch_create` error table (1220001, 1220002, 1220004, 1220005, 1225000,
//! 1220600), the integration guide's table of `msg` texts (`no row affected` → retry, `the object already
//! exists` → idempotency conflict, `param invalid`, `auth no permission`...), and the platform notes
//! (token codes 9999166x/99991671, credential codes 99991543/99991662/99991672, 99991400 rate limiting).

use std::time::Duration;

use super::Reply;

/// Why the whole app is blocked: no record can get through until the operator fixes this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppProblem {
    Credentials,
    AppDisabled,
    ScopeMissing,
    NoPermission,
    IpNotAllowed,
    EditionRequired,
    TenantMissing,
    /// Leave accrual updates need the scope `attendance:rule`.
    RuleScopeMissing,
}

impl AppProblem {
    /// What the operator must do.
    pub fn fix(self) -> &'static str {
        match self {
            AppProblem::Credentials => {
                "the app credentials were refused: check feishu.app_id and the app secret against the developer console (Credentials & Basic Info)"
            }
            AppProblem::AppDisabled => {
                "the app is disabled or not installed in this tenant: publish a version of the app and have a tenant admin approve it"
            }
            AppProblem::ScopeMissing => {
                "the app lacks the permission attendance:task (write attendance punches): enable it under Permissions & Scopes and publish a new version"
            }
            AppProblem::NoPermission => {
                "the app has no data permission for these users: widen the app's data permission range in the attendance admin console"
            }
            AppProblem::IpNotAllowed => {
                "this gateway's public IP is not in the app's IP whitelist: add it under Security Settings"
            }
            AppProblem::EditionRequired => {
                "this API needs the Feishu People enterprise edition: ask the tenant admin"
            }
            AppProblem::RuleScopeMissing => {
                "the app lacks the permission attendance:rule (needed for leave accrual updates): enable it under Permissions & Scopes and publish a new version"
            }
            AppProblem::TenantMissing => {
                "the platform found no tenant in the access token (1220002): use a self-built app's App ID and secret, installed in the tenant (not a marketplace or user token)"
            }
        }
    }
}

/// What to do with a batch after a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every record accepted.
    Delivered,
    /// Accepted except the records listed (`userid-creatorid` entries of the reply's `msg`).
    PartialFailure { failed: Vec<String> },
    /// Idempotency conflict: the record (or one of the batch) is already there.
    AlreadyExists,
    /// The batch was refused as invalid: split it to find the bad records; a single one is dead.
    Invalid,
    /// Transient: retry later with back-off, never give up.
    Retry,
    /// An archived report upload was applied except for the members and field codes listed in the
    /// reply's `invalid_member_id` and `invalid_code`.
    ReportInvalid {
        members: Vec<String>,
        codes: Vec<String>,
    },
    /// Over the rate limit: wait this long, then retry (the attempt does not count).
    RateLimited { wait: Duration },
    /// The app itself is refused: keep everything queued, tell the operator, retry slowly.
    AppBlocked(AppProblem),
}

/// `Some(true)` when the reply is a tenant-token error that a fresh token fixes.
pub(crate) fn classify_token(reply: &Reply) -> Option<bool> {
    match reply.code {
        Some(99991661) | Some(99991663) | Some(99991664) | Some(99991671) => Some(true),
        _ => None,
    }
}

/// Parses the per-record failure list of a batch_create reply: `[u1-c1, u2-c2]`. Returns `None` when
/// `msg` is not such a list.
pub fn parse_failed_list(msg: &str) -> Option<Vec<String>> {
    let m = msg.trim();
    let inner = m.strip_prefix('[')?.strip_suffix(']')?;
    Some(
        inner
            .split([',', ' ', '\n', '\t'])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
    )
}

/// Classifies a reply to a write request.
pub fn classify(reply: &Reply) -> Verdict {
    let msg = reply.msg.to_ascii_lowercase();
    if reply.http_status == 429 || reply.code == Some(99991400) {
        let wait = Duration::from_secs(reply.ratelimit_reset.unwrap_or(1).clamp(1, 60));
        return Verdict::RateLimited { wait };
    }
    match reply.code {
        Some(0) => {
            return match parse_failed_list(&reply.msg) {
                Some(list) if !list.is_empty() => Verdict::PartialFailure { failed: list },
                _ => Verdict::Delivered,
            }
        }
        // no answer from the platform at all: timeout, reset, refused, or a proxy's page
        None => return Verdict::Retry,
        Some(_) => {}
    }
    let code = reply.code.unwrap_or_default();
    // token errors left after the client's own refresh-and-retry: transient
    if classify_token(reply).is_some() {
        return Verdict::Retry;
    }
    match code {
        99991543 | 10014 | 10003 => return Verdict::AppBlocked(AppProblem::Credentials),
        99991662 => return Verdict::AppBlocked(AppProblem::AppDisabled),
        99991672 | 99991679 => return Verdict::AppBlocked(AppProblem::ScopeMissing),
        99991401 => return Verdict::AppBlocked(AppProblem::IpNotAllowed),
        1220005 => return Verdict::AppBlocked(AppProblem::NoPermission),
        1220002 => return Verdict::AppBlocked(AppProblem::TenantMissing),
        1225000 | 1226500 => return Verdict::Retry,
        _ => {}
    }
    // the integration guide's msg table, whatever the code
    if msg.contains("no row affected") {
        return Verdict::Retry;
    }
    if msg.contains("the object already exists") {
        return Verdict::AlreadyExists;
    }
    if msg.contains("auth no permission") {
        return Verdict::AppBlocked(AppProblem::NoPermission);
    }
    if msg.contains("feishu people enterprise edition") {
        return Verdict::AppBlocked(AppProblem::EditionRequired);
    }
    if msg.contains("internal server error") || msg.contains("the object in tos not found") {
        return Verdict::Retry;
    }
    if reply.http_status >= 500 {
        return Verdict::Retry;
    }
    if matches!(code, 1220001 | 1220004 | 1220600)
        || msg.contains("param")
        || msg.contains("time is invalid")
        || msg.contains("time calculation failed")
        || msg.contains("name or employee_no invalid")
        || msg.contains("operate too much flow")
        || msg.contains("sealed")
    {
        return Verdict::Invalid;
    }
    if reply.http_status >= 400 {
        // an unlisted refusal of the request: treat as invalid so the split isolates the culprit;
        // the records end as dead letters with the platform's code, never silently dropped
        return Verdict::Invalid;
    }
    Verdict::Retry
}

/// Classifies a reply to `user_approvals`: 1225001 (the item failed the platform's checks; the reply
/// carries `{TripErrorRecords, OvertimeWorkErrorRecords, LeaveErrorRecords, OutErrorRecords}`) is
/// invalid; the rest as [`classify`].
pub fn classify_approval(reply: &Reply) -> Verdict {
    match reply.code {
        Some(1225001) => Verdict::Invalid,
        _ => classify(reply),
    }
}

fn string_list(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Classifies a reply to `archive_rule/upload_report`: code 0 with `invalid_member_id` or
/// `invalid_code` is [`Verdict::ReportInvalid`]; the rest as [`classify`].
pub fn classify_report(reply: &Reply) -> Verdict {
    if reply.code == Some(0) {
        let members = string_list(&reply.data["invalid_member_id"]);
        let codes = string_list(&reply.data["invalid_code"]);
        if !members.is_empty() || !codes.is_empty() {
            return Verdict::ReportInvalid { members, codes };
        }
        return Verdict::Delivered;
    }
    classify(reply)
}

/// Codes of the leave accrual page that refuse the update for good (HTTP 400 in its table).
pub const ACCRUAL_PERMANENT: [i64; 22] = [
    1220016, 1220003, 1220006, 1220002, 1220004, 1220005, 1220007, 1220008, 1220009, 1220024,
    1220025, 1220026, 1220027, 1220029, 1220030, 1220017, 1220020, 1220021, 1220022, 1220031,
    1220032, 1220600,
];

/// Classifies a reply to the leave accrual PATCH. Its page gives its own meaning to codes the other
/// APIs use differently (1220001 "no tenant ID", 1220002 "invalid granting unit", 1220005 "data
/// object not found"): 1220010 "granting record already exists" counts as delivered; 1220001 blocks
/// the app; the 400 codes of its table are permanent; its 500 codes are retried. Rate limits,
/// tokens and credentials as [`classify`]; a missing scope is `attendance:rule`.
pub fn classify_accrual(reply: &Reply) -> Verdict {
    if reply.http_status == 429 || matches!(reply.code, None | Some(0) | Some(99991400)) {
        return classify(reply);
    }
    if reply
        .msg
        .to_ascii_lowercase()
        .contains("feishu people enterprise edition")
    {
        return Verdict::AppBlocked(AppProblem::EditionRequired);
    }
    let code = reply.code.unwrap_or_default();
    match code {
        1220010 => Verdict::AlreadyExists,
        1220001 => Verdict::AppBlocked(AppProblem::TenantMissing),
        99991672 | 99991679 => Verdict::AppBlocked(AppProblem::RuleScopeMissing),
        c if ACCRUAL_PERMANENT.contains(&c) => Verdict::Invalid,
        1220011..=1220015 | 1220018 | 1220019 | 1220028 | 1229999 => Verdict::Retry,
        _ => classify(reply),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, code: Option<i64>, msg: &str) -> Reply {
        Reply {
            http_status: status,
            code,
            msg: msg.into(),
            ..Reply::default()
        }
    }

    #[test]
    fn success_and_per_record_failures() {
        assert_eq!(
            classify(&reply(200, Some(0), "success")),
            Verdict::Delivered
        );
        assert_eq!(classify(&reply(200, Some(0), "[]")), Verdict::Delivered);
        assert_eq!(
            classify(&reply(200, Some(0), "[u1-u1, u2-u2]")),
            Verdict::PartialFailure {
                failed: vec!["u1-u1".into(), "u2-u2".into()]
            }
        );
    }

    #[test]
    fn transient_failures_retry_whatever_the_http_status() {
        assert_eq!(
            classify(&reply(400, Some(1220600), "no row affected")),
            Verdict::Retry
        );
        assert_eq!(
            classify(&reply(200, Some(1220600), "No Row Affected")),
            Verdict::Retry
        );
        assert_eq!(
            classify(&reply(500, Some(1225000), "internal server error")),
            Verdict::Retry
        );
        assert_eq!(classify(&reply(502, None, "bad gateway")), Verdict::Retry);
        assert_eq!(classify(&reply(0, None, "timed out")), Verdict::Retry);
        assert_eq!(classify(&reply(503, Some(123), "whatever")), Verdict::Retry);
    }

    #[test]
    fn rate_limit_waits_for_the_reset_header() {
        let mut r = reply(429, Some(99991400), "request trigger frequency limit");
        r.ratelimit_reset = Some(3);
        assert_eq!(
            classify(&r),
            Verdict::RateLimited {
                wait: Duration::from_secs(3)
            }
        );
        // older APIs answer 400 with the code
        assert!(matches!(
            classify(&reply(400, Some(99991400), "x")),
            Verdict::RateLimited { .. }
        ));
    }

    #[test]
    fn already_exists_and_invalid() {
        assert_eq!(
            classify(&reply(400, Some(1220600), "the object already exists")),
            Verdict::AlreadyExists
        );
        assert_eq!(
            classify(&reply(400, Some(1220001), "param is invalid: check_time")),
            Verdict::Invalid
        );
        assert_eq!(
            classify(&reply(
                400,
                Some(1220004),
                "user_id is not exist or does not have permission"
            )),
            Verdict::Invalid
        );
        assert_eq!(
            classify(&reply(
                400,
                Some(1220600),
                "the attendance result has been sealed and can not modify"
            )),
            Verdict::Invalid
        );
    }

    #[test]
    fn application_level_failures_block_the_app() {
        assert_eq!(
            classify(&reply(400, Some(99991543), "app secret invalid")),
            Verdict::AppBlocked(AppProblem::Credentials)
        );
        assert_eq!(
            classify(&reply(400, Some(99991672), "scope")),
            Verdict::AppBlocked(AppProblem::ScopeMissing)
        );
        assert_eq!(
            classify(&reply(400, Some(1220005), "没有权限")),
            Verdict::AppBlocked(AppProblem::NoPermission)
        );
        assert_eq!(
            classify(&reply(400, Some(1220600), "auth no permission")),
            Verdict::AppBlocked(AppProblem::NoPermission)
        );
    }

    #[test]
    fn token_errors_left_after_the_refresh_are_transient() {
        assert_eq!(
            classify(&reply(400, Some(99991663), "invalid token")),
            Verdict::Retry
        );
    }

    #[test]
    fn approval_error_records_are_invalid() {
        assert_eq!(
            classify_approval(&reply(400, Some(1225001), "param is invalis")),
            Verdict::Invalid
        );
        assert_eq!(
            classify_approval(&reply(500, Some(1225000), "internal server error")),
            Verdict::Retry
        );
        assert_eq!(
            classify_approval(&reply(400, Some(1220600), "the object already exists")),
            Verdict::AlreadyExists
        );
    }

    #[test]
    fn report_replies_list_invalid_members_and_codes() {
        let mut r = reply(200, Some(0), "success");
        assert_eq!(classify_report(&r), Verdict::Delivered);
        r.data = serde_json::json!({"invalid_code": ["c9"], "invalid_member_id": ["m2"]});
        assert_eq!(
            classify_report(&r),
            Verdict::ReportInvalid {
                members: vec!["m2".into()],
                codes: vec!["c9".into()]
            }
        );
        assert_eq!(
            classify_report(&reply(400, Some(1220600), "archive_rule_id not exist")),
            Verdict::Invalid
        );
    }

    #[test]
    fn accrual_codes_follow_their_own_table() {
        assert_eq!(
            classify_accrual(&reply(400, Some(1220010), "Granting record already exists")),
            Verdict::AlreadyExists
        );
        for c in [1220025, 1220026, 1220027, 1220005, 1220002, 1220031] {
            assert_eq!(
                classify_accrual(&reply(400, Some(c), "x")),
                Verdict::Invalid,
                "{c}"
            );
        }
        for c in [1220012, 1220015, 1229999] {
            assert_eq!(
                classify_accrual(&reply(500, Some(c), "x")),
                Verdict::Retry,
                "{c}"
            );
        }
        assert_eq!(
            classify_accrual(&reply(400, Some(1220001), "No tenant ID")),
            Verdict::AppBlocked(AppProblem::TenantMissing)
        );
        assert_eq!(
            classify_accrual(&reply(400, Some(99991672), "scope")),
            Verdict::AppBlocked(AppProblem::RuleScopeMissing)
        );
        assert!(matches!(
            classify_accrual(&reply(429, Some(99991400), "limit")),
            Verdict::RateLimited { .. }
        ));
        assert_eq!(
            classify_accrual(&reply(400, Some(99991663), "token")),
            Verdict::Retry
        );
    }

    #[test]
    fn failed_list_parsing() {
        assert_eq!(parse_failed_list("success"), None);
        assert_eq!(
            parse_failed_list(" [a-b,c-d] "),
            Some(vec!["a-b".to_string(), "c-d".to_string()])
        );
    }
}
