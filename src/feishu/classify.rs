//! Classification of every platform reply into what the sender must do with the batch: the shared
//! tables every write endpoint follows. An endpoint whose page gives codes a meaning of its own
//! classifies in its lane (`lanes/*.rs`) and falls back to [`classify`].
//!
//! Sources: the `user_flows/batch_create` error table (1220001, 1220002, 1220004, 1220005, 1225000,
//! 1220600), the integration guide's table of `msg` texts (`no row affected` → retry, `the object already
//! exists` → idempotency conflict, `param invalid`, `auth no permission`...), and the platform notes
//! (token codes 9999166x/99991671, credential codes 99991543/99991662/99991672, 99991400 rate limiting).

use std::time::Duration;

use super::token::is_token_error;
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

/// Whether the reply is the integration guide's "no row affected" (a failed update or an
/// optimistic-lock conflict: retried on every endpoint, see [`crate::feishu::lanes::verdict`]). A
/// 429 is a rate limit whatever its message.
pub fn no_row_affected(reply: &Reply) -> bool {
    reply.http_status != 429
        && reply.code != Some(0)
        && reply.msg.to_ascii_lowercase().contains("no row affected")
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
    if is_token_error(reply.code) {
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

/// A reply with this HTTP status, code and message (for the classification tests of every lane).
#[cfg(test)]
pub(crate) fn reply(status: u16, code: Option<i64>, msg: &str) -> Reply {
    Reply {
        http_status: status,
        code,
        msg: msg.into(),
        ..Reply::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn failed_list_parsing() {
        assert_eq!(parse_failed_list("success"), None);
        assert_eq!(
            parse_failed_list(" [a-b,c-d] "),
            Some(vec!["a-b".to_string(), "c-d".to_string()])
        );
    }
}
