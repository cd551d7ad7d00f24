//! One file per platform endpoint ("lane"): its path, request body, batch limit, grouping and its own
//! reading of the platform's error table.

pub mod accruals;
pub mod approvals;
pub mod reports;
pub mod user_flows;
