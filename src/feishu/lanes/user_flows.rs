//! The punch lane: `POST /open-apis/attendance/v1/user_flows/batch_create`, up to
//! `sender.batch_size` punches per call.

use crate::feishu::{FeishuClient, Reply};

/// Path of punch import.
pub const PATH: &str = "/open-apis/attendance/v1/user_flows/batch_create";

/// Sends one `user_flows/batch_create` request with `records` (JSON texts of user_flow objects).
pub async fn batch_create(client: &FeishuClient, records: &[&str]) -> Reply {
    let mut body = String::with_capacity(records.iter().map(|r| r.len() + 1).sum::<usize>() + 20);
    body.push_str("{\"flow_records\":[");
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(r);
    }
    body.push_str("]}");
    let path = format!("{PATH}?employee_type={}", client.employee_type().as_str());
    client.send(reqwest::Method::POST, &path, body).await
}
