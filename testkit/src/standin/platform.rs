//! What the platform's pages say the stand-in must look like from outside: endpoint paths, limits
//! and error codes. Written from the platform's public pages (open.feishu.cn, attendance v1 and
//! authentication), independently of the product's client: a mistake in one is not copied into the
//! other.

use std::time::Duration;

/// `POST`: a tenant access token for an app's id and secret ("自建应用获取 tenant_access_token").
pub const TOKEN_PATH: &str = "/open-apis/auth/v3/tenant_access_token/internal";
/// `POST ?employee_type=…`: import punches ("导入打卡流水", `user_flows/batch_create`).
pub const BATCH_CREATE_PATH: &str = "/open-apis/attendance/v1/user_flows/batch_create";
/// `POST ?employee_type=…`: write approval results ("写入审批结果", `user_approvals`).
pub const USER_APPROVALS_PATH: &str = "/open-apis/attendance/v1/user_approvals";
/// `POST ?employee_type=…`: write archived report results ("写入归档报表结果").
pub const UPLOAD_REPORT_PATH: &str = "/open-apis/attendance/v1/archive_rule/upload_report";
/// `GET {USER_FLOWS_PATH}/:user_flow_id?employee_type=…`: read one punch record by its id ("查询打卡
///流水"). Also the prefix of [`BATCH_CREATE_PATH`] (a `POST`).
pub const USER_FLOWS_PATH: &str = "/open-apis/attendance/v1/user_flows";
/// `POST ?employee_type=…`: the valid punches of up to 50 users in a time range ("批量查询打卡流水",
/// `user_flows/query`).
pub const QUERY_PATH: &str = "/open-apis/attendance/v1/user_flows/query";
/// Most `user_ids` one `user_flows/query` call may name ("长度不超过 50").
pub const MAX_USERS_PER_QUERY: usize = 50;
/// `PATCH {LEAVE_ACCRUAL_PATH}/:leave_id?user_id_type=…`: update a leave granting record
/// ("修改发放记录").
pub const LEAVE_ACCRUAL_PATH: &str = "/open-apis/attendance/v1/leave_accrual_record";

/// Largest request body accepted (bigger ones are refused with HTTP 400, never buffered).
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Most records one batch_create call may carry.
pub const MAX_RECORDS_PER_BATCH: usize = 50;
/// Earliest accepted `check_time`: 2022-01-01 00:00:00 +08:00, in Unix seconds.
pub const MIN_CHECK_TIME: u64 = 1_640_966_400;
/// A token with less than this left is replaced by a new one when a token is asked for.
pub(super) const TOKEN_REUSE_MIN_LEFT: Duration = Duration::from_secs(30 * 60);

/// The scope of every attendance write ("写入打卡数据").
pub const SCOPE_TASK: &str = "attendance:task";
/// The read-only attendance scope ("导出打卡数据").
pub const SCOPE_TASK_READONLY: &str = "attendance:task:readonly";
/// The scope of leave accrual updates ("写入打卡管理规则").
pub const SCOPE_RULE: &str = "attendance:rule";

/// The stand-in's attendance endpoints (for faults, rate windows, scopes and recorded bodies): the
/// four writes and the one read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Api {
    UserFlows,
    UserApprovals,
    UploadReport,
    LeaveAccrual,
    /// `GET user_flows/:user_flow_id`.
    UserFlowGet,
    /// `POST user_flows/query`.
    UserFlowQuery,
}

impl Api {
    /// The scopes that let an app call the endpoint, any one of them (each page's "权限要求"): the
    /// read accepts the write scope or the read-only one; leave accruals need `attendance:rule`.
    pub fn scopes(self) -> &'static [&'static str] {
        match self {
            Api::UserFlows | Api::UserApprovals | Api::UploadReport => &[SCOPE_TASK],
            Api::LeaveAccrual => &[SCOPE_RULE],
            Api::UserFlowGet => &[SCOPE_TASK, SCOPE_TASK_READONLY],
            // its page names the read-only scope alone ("导出打卡数据")
            Api::UserFlowQuery => &[SCOPE_TASK_READONLY],
        }
    }
}

/// Platform error codes used by the stand-in.
pub mod codes {
    /// Success.
    pub const OK: i64 = 0;
    /// Parameter validation failed.
    pub const PARAM_INVALID: i64 = 1_220_001;
    /// No data permission.
    pub const NO_PERMISSION: i64 = 1_220_005;
    /// Generic attendance error (too many flows, duplicate, no row affected).
    pub const GENERIC: i64 = 1_220_600;
    /// Internal server error.
    pub const INTERNAL: i64 = 1_225_000;
    /// Rate limit exceeded.
    pub const RATE_LIMITED: i64 = 99_991_400;
    /// app_id or app_secret wrong.
    pub const BAD_CREDENTIALS: i64 = 99_991_543;
    /// Authorization header missing.
    pub const TOKEN_MISSING: i64 = 99_991_661;
    /// Tenant access token invalid (unknown, expired or revoked).
    pub const TOKEN_INVALID: i64 = 99_991_663;
    /// Required scope not enabled for the app.
    pub const SCOPE_MISSING: i64 = 99_991_672;
    /// The caller's IP address is not in the app's IP allow-list.
    pub const IP_NOT_ALLOWED: i64 = 99_991_401;
    /// Malformed token request.
    pub const INVALID_PARAM: i64 = 10_003;
    /// batch_create: a user id refused at validation (whole batch).
    pub const USER_INVALID: i64 = 1_220_004;
}
