//! The HTTP client for the open platform: one `reqwest` client (rustls, kept-alive connections),
//! a timeout on every request, the tenant token added to every call, and every reply read into a
//! [`Reply`] whatever its HTTP status.
//!
//! Guarantees:
//! - Every request has a timeout (`feishu.request_timeout_secs`); the body's `code` is read whatever
//!   the HTTP status; the `X-Tt-Logid` header (or the body's `error.log_id`) is kept with the reply.
//! - On a token error the cached token is dropped, a new one fetched and the request re-sent once
//!   ([`FeishuClient::send`]).
//! - The app secret and tokens never appear in an error, a log line or `Debug` output.

use std::time::Duration;

use serde::de::{DeserializeOwned, IgnoredAny};
use serde::Deserialize;

use super::net::{self, Network};
use super::token::{is_token_error, TokenCache, TOKEN_PATH};
use crate::config::{EmployeeType, FeishuConfig, Secret};

/// A failure to get an answer from the platform at all (no classification possible from a body).
#[derive(Debug, thiserror::Error)]
pub enum FeishuError {
    /// Timeout, refused connection, reset, TLS failure...
    #[error("feishu {url}: request failed: {reason}")]
    Transport { url: String, reason: String },
}

/// One reply of the platform, raw but parsed.
#[derive(Debug, Clone, Default)]
pub struct Reply {
    pub http_status: u16,
    /// The body's `code` (None when the body was not JSON with a code).
    pub code: Option<i64>,
    pub msg: String,
    /// From `X-Tt-Logid`, or the body's `error.log_id`.
    pub log_id: Option<String>,
    /// `x-ogw-ratelimit-reset`, seconds.
    pub ratelimit_reset: Option<u64>,
    /// `x-ogw-ratelimit-limit`: the requests the refused window admits (50 per second for the
    /// attendance writes).
    pub ratelimit_limit: Option<u64>,
    /// The body's `data`.
    pub data: serde_json::Value,
    /// No answer came within `feishu.request_timeout_secs` (a transport failure: `code` is `None`).
    pub timed_out: bool,
    /// Why no answer of the platform came: a transport failure, or an answer that is not the
    /// platform's JSON ([`Network::NotPlatform`]). `None` when the platform answered.
    pub network: Option<Network>,
    /// The title of an HTML page that came instead of the platform's JSON (a proxy's page...).
    pub page_title: Option<String>,
}

impl Reply {
    /// `log id X` for messages, or `no log id`.
    pub fn log_id_text(&self) -> String {
        self.log_id.clone().unwrap_or_else(|| "none".to_string())
    }
}

#[derive(Deserialize)]
struct Envelope {
    code: Option<i64>,
    #[serde(default)]
    msg: String,
    #[serde(default)]
    data: serde_json::Value,
    #[serde(default)]
    error: Option<EnvelopeError>,
    #[serde(default)]
    tenant_access_token: Option<String>,
    #[serde(default)]
    expire: Option<u64>,
}

#[derive(Deserialize)]
struct EnvelopeError {
    #[serde(default)]
    log_id: Option<String>,
}

/// The client. Cheap to share behind an `Arc`.
pub struct FeishuClient {
    http: reqwest::Client,
    base_url: String,
    app_id: String,
    app_secret: Secret,
    employee_type: EmployeeType,
    token: TokenCache,
}

impl std::fmt::Debug for FeishuClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeishuClient")
            .field("base_url", &self.base_url)
            .field("app_id", &self.app_id)
            .finish_non_exhaustive()
    }
}

impl FeishuClient {
    /// A client for `cfg`, keeping up to `max_idle` connections open.
    pub fn new(cfg: &FeishuConfig, max_idle: usize) -> Result<FeishuClient, FeishuError> {
        let http = reqwest::Client::builder()
            .timeout(cfg.request_timeout())
            .connect_timeout(Duration::from_secs(10).min(cfg.request_timeout()))
            .pool_max_idle_per_host(max_idle)
            .pool_idle_timeout(Duration::from_secs(50))
            .tcp_keepalive(Duration::from_secs(30))
            .user_agent(concat!("clockbridge/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| FeishuError::Transport {
                url: cfg.base_url.clone(),
                reason: format!("cannot build the HTTP client: {e}"),
            })?;
        Ok(FeishuClient {
            http,
            base_url: cfg.base_url.trim_end_matches('/').to_string(),
            app_id: cfg.app_id.clone(),
            app_secret: cfg.app_secret.clone(),
            employee_type: cfg.employee_type,
            token: TokenCache::default(),
        })
    }

    /// The configured `feishu.employee_type` (the `employee_type` query parameter of the attendance
    /// write calls).
    pub fn employee_type(&self) -> EmployeeType {
        self.employee_type
    }

    /// How many times a token was fetched (for tests and status).
    pub fn token_fetches(&self) -> u64 {
        self.token.fetches()
    }

    /// A valid tenant token: the cached one, or a fresh one when it is near expiry.
    pub async fn token(&self) -> Result<String, Reply> {
        self.token.get(|| self.fetch_token()).await
    }

    async fn fetch_token(&self) -> Result<(String, u64), Reply> {
        let url = format!("{}{}", self.base_url, TOKEN_PATH);
        let body = serde_json::json!({
            "app_id": self.app_id,
            "app_secret": self.app_secret.expose(),
        });
        let resp = self
            .http
            .post(&url)
            .header("Content-Type", "application/json; charset=utf-8")
            .json(&body)
            .send()
            .await;
        let (reply, env) = match read_reply(resp).await {
            Ok(x) => x,
            Err(t) => {
                return Err(Reply {
                    msg: format!("tenant token request failed: {}", t.reason),
                    timed_out: t.network == Network::Timeout,
                    network: Some(t.network),
                    ..Reply::default()
                })
            }
        };
        match (
            reply.code,
            env.and_then(|e| e.tenant_access_token.zip(e.expire)),
        ) {
            (Some(0), Some(token)) => Ok(token),
            _ => Err(reply),
        }
    }

    /// Drops the cached token if it is still `bad` (another task may have refreshed it already).
    pub async fn drop_token(&self, bad: &str) {
        self.token.drop_if(bad).await
    }

    /// Sends one write request: `method` to `path_and_query` (appended to `feishu.base_url`) with the
    /// JSON `body`. Handles token errors (drop, refetch, re-send once). Returns the reply of the last
    /// attempt, a token failure as a reply, or a transport failure as a reply with no code.
    pub async fn send(&self, method: reqwest::Method, path_and_query: &str, body: String) -> Reply {
        self.call::<IgnoredAny>(method, path_and_query, Some(body), false)
            .await
            .0
    }

    /// Sends one request like [`FeishuClient::send`], reading a successful reply's `data` straight
    /// into `T` (typed, no `serde_json::Value` in between; unknown fields skipped). A body larger
    /// than [`PARSE_OFF_RUNTIME`] is read on the blocking pool, so that a large read (a month of
    /// flows) does not hold a runtime thread while other replies come in. The reply's `data` is left
    /// `Null`; `T` is `None` when the body is not the envelope with a `data` of that shape (the
    /// reply then says why, as [`FeishuClient::send`]'s does).
    pub async fn send_typed<T>(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
        body: String,
    ) -> (Reply, Option<T>)
    where
        T: DeserializeOwned + Send + 'static,
    {
        self.call(method, path_and_query, Some(body), true).await
    }

    /// Sends one `GET` (a read: no body), like [`FeishuClient::send`] in every other way (the token,
    /// its re-send once, the timeouts, the classification of failures).
    pub async fn get(&self, path_and_query: &str) -> Reply {
        self.call::<IgnoredAny>(reqwest::Method::GET, path_and_query, None, false)
            .await
            .0
    }

    async fn call<T: DeserializeOwned + Send + 'static>(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
        body: Option<String>,
        typed: bool,
    ) -> (Reply, Option<T>) {
        let url = format!("{}{}", self.base_url, path_and_query);
        let mut retried = false;
        loop {
            let token = match self.token().await {
                Ok(t) => t,
                Err(reply) => return (reply, None),
            };
            let mut request = self.http.request(method.clone(), &url).bearer_auth(&token);
            if let Some(body) = &body {
                request = request
                    .header("Content-Type", "application/json; charset=utf-8")
                    .body(body.clone());
            }
            let read = if typed {
                read_typed::<T>(request.send().await).await
            } else {
                read_reply(request.send().await)
                    .await
                    .map(|(r, _)| (r, None))
            };
            let (reply, data) = match read {
                Ok(x) => x,
                Err(t) => (
                    Reply {
                        msg: t.reason,
                        timed_out: t.network == Network::Timeout,
                        network: Some(t.network),
                        ..Reply::default()
                    },
                    None,
                ),
            };
            if is_token_error(reply.code) && !retried {
                tracing::warn!(
                    code = reply.code,
                    log_id = %reply.log_id_text(),
                    "feishu: tenant token rejected; fetching a new one and re-sending once"
                );
                self.drop_token(&token).await;
                retried = true;
                continue;
            }
            return (reply, data);
        }
    }
}

/// A failure below HTTP: no reply (or a broken one) at all.
struct Transport {
    reason: String,
    network: Network,
}

/// Bodies larger than this are parsed on the blocking pool ([`FeishuClient::send_typed`]).
pub const PARSE_OFF_RUNTIME: usize = 64 * 1024;

/// The envelope with its `data` read as `T`.
#[derive(Deserialize)]
#[serde(bound = "T: DeserializeOwned")]
struct TypedEnvelope<T> {
    code: Option<i64>,
    #[serde(default)]
    msg: String,
    #[serde(default = "none")]
    data: Option<T>,
    #[serde(default)]
    error: Option<EnvelopeError>,
}

fn none<T>() -> Option<T> {
    None
}

/// Reads an HTTP reply with its `data` as `T` (see [`FeishuClient::send_typed`]).
async fn read_typed<T: DeserializeOwned + Send + 'static>(
    resp: Result<reqwest::Response, reqwest::Error>,
) -> Result<(Reply, Option<T>), Transport> {
    let (head, bytes) = read_body(resp).await?;
    if bytes.len() <= PARSE_OFF_RUNTIME {
        return Ok(parse_typed(head, &bytes));
    }
    tokio::task::spawn_blocking(move || parse_typed(head, &bytes))
        .await
        .map_err(|e| Transport {
            reason: format!("reading the reply failed: {e}"),
            network: Network::NotPlatform,
        })
}

fn parse_typed<T: DeserializeOwned>(head: Head, bytes: &[u8]) -> (Reply, Option<T>) {
    match serde_json::from_slice::<TypedEnvelope<T>>(bytes) {
        Ok(env) => {
            let log_id = head
                .log_id
                .clone()
                .or_else(|| env.error.and_then(|e| e.log_id));
            let reply = Reply {
                http_status: head.status,
                code: env.code,
                msg: env.msg,
                log_id,
                ratelimit_reset: head.reset,
                ..Reply::default()
            };
            (reply, env.data)
        }
        // not the envelope, or a `data` of another shape: what the untyped read makes of it
        Err(_) => (parse_envelope(head, bytes).0, None),
    }
}

/// What an HTTP reply says before its body.
struct Head {
    status: u16,
    log_id: Option<String>,
    reset: Option<u64>,
    limit: Option<u64>,
    content_type: Option<String>,
}

/// The head and the whole body of an HTTP reply; Err is a transport-level failure.
async fn read_body(
    resp: Result<reqwest::Response, reqwest::Error>,
) -> Result<(Head, bytes::Bytes), Transport> {
    let resp = resp.map_err(describe_reqwest)?;
    let status = resp.status().as_u16();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let log_id = header("x-tt-logid");
    let reset = header("x-ogw-ratelimit-reset").and_then(|v| v.trim().parse::<u64>().ok());
    let limit = header("x-ogw-ratelimit-limit").and_then(|v| v.trim().parse::<u64>().ok());
    let content_type = header("content-type");
    let bytes = resp.bytes().await.map_err(describe_reqwest)?;
    let head = Head {
        status,
        log_id,
        reset,
        limit,
        content_type,
    };
    Ok((head, bytes))
}

/// Reads an HTTP reply into a [`Reply`]; Err is a transport-level failure.
async fn read_reply(
    resp: Result<reqwest::Response, reqwest::Error>,
) -> Result<(Reply, Option<Envelope>), Transport> {
    let (head, bytes) = read_body(resp).await?;
    Ok(parse_envelope(head, &bytes))
}

/// The envelope of a body, its `data` as a `serde_json::Value`.
fn parse_envelope(head: Head, bytes: &[u8]) -> (Reply, Option<Envelope>) {
    let status = head.status;
    let content_type = head.content_type;
    let mut env: Option<Envelope> = serde_json::from_slice(bytes).ok();
    let mut reply = Reply {
        http_status: status,
        log_id: head.log_id,
        ratelimit_reset: head.reset,
        ratelimit_limit: head.limit,
        ..Reply::default()
    };
    match &mut env {
        Some(e) => {
            reply.code = e.code;
            reply.msg = e.msg.clone();
            // moved, not copied: a read's data can be megabytes (user_flows/query)
            reply.data = std::mem::take(&mut e.data);
            if reply.log_id.is_none() {
                reply.log_id = e.error.as_ref().and_then(|e| e.log_id.clone());
            }
        }
        None => {
            let text = String::from_utf8_lossy(bytes);
            let short: String = text.chars().take(200).collect();
            reply.msg =
                format!("HTTP {status} with a body that is not the platform's JSON: {short:?}");
            reply.network = Some(Network::NotPlatform);
            if net::is_html(content_type.as_deref(), bytes) {
                reply.page_title = net::page_title(bytes);
            }
        }
    }
    (reply, env)
}

fn describe_reqwest(e: reqwest::Error) -> Transport {
    // without the URL (it carries no secret, but keep lines short) and with the source chain
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_body() || e.is_decode() {
        "reply broken off"
    } else {
        "request failed"
    };
    let mut msg = kind.to_string();
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    Transport {
        reason: msg,
        network: Network::of(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feishu::lanes::user_flows::batch_create;
    use crate::feishu::{classify, AppProblem, Verdict};
    use clockbridge_testkit::standin::{Standin, StandinConfig};

    fn cfg(base: &str, secret: &str) -> FeishuConfig {
        FeishuConfig {
            base_url: base.into(),
            app_id: "cli_standin".into(),
            app_secret: Secret::new(secret),
            app_secret_file: None,
            employee_type: EmployeeType::EmployeeId,
            request_timeout_secs: 5,
        }
    }

    const RECORD: &str = r#"{"user_id":"u1","creator_id":"u1","location_name":"HQ","check_time":"1772413199","comment":"c","idempotent_id":"k1"}"#;

    #[tokio::test]
    async fn token_is_cached_and_refreshed_ahead_of_expiry() {
        let s = Standin::start(StandinConfig {
            token_ttl_secs: 1,
            ..StandinConfig::default()
        })
        .await
        .unwrap();
        let c = FeishuClient::new(&cfg(&s.base_url(), "standin-secret"), 4).unwrap();
        let t1 = c.token().await.unwrap();
        assert_eq!(c.token().await.unwrap(), t1);
        assert_eq!(c.token_fetches(), 1);
        // a 1 s token is refreshed 0.1 s before it expires: after 0.95 s the client asks again
        tokio::time::sleep(Duration::from_millis(950)).await;
        let reply = batch_create(&c, &[RECORD]).await;
        assert_eq!(reply.code, Some(0), "{reply:?}");
        assert_eq!(c.token_fetches(), 2);
    }

    #[tokio::test]
    async fn a_revoked_token_is_dropped_and_the_request_resent_once() {
        let s = Standin::start(StandinConfig::default()).await.unwrap();
        let c = FeishuClient::new(&cfg(&s.base_url(), "standin-secret"), 4).unwrap();
        assert_eq!(batch_create(&c, &[RECORD]).await.code, Some(0));
        s.revoke_tokens();
        let reply = batch_create(&c, &[RECORD]).await;
        assert_eq!(reply.code, Some(0), "{reply:?}");
        assert_eq!(c.token_fetches(), 2);
        assert_eq!(s.stats().batch_requests, 3);
    }

    #[tokio::test]
    async fn replies_carry_the_log_id_and_the_secret_never_shows() {
        let s = Standin::start(StandinConfig::default()).await.unwrap();
        let c = FeishuClient::new(&cfg(&s.base_url(), "wrong-secret-123"), 4).unwrap();
        let reply = batch_create(&c, &[RECORD]).await;
        assert_eq!(reply.code, Some(99991543));
        assert!(reply.log_id.is_some());
        assert_eq!(
            classify(&reply),
            Verdict::AppBlocked(AppProblem::Credentials)
        );
        let text = format!("{reply:?} {c:?}");
        assert!(!text.contains("wrong-secret-123"), "{text}");
    }

    #[test]
    fn a_typed_read_gives_the_data_or_says_why_not() {
        #[derive(Deserialize, Debug, PartialEq)]
        struct D {
            n: u32,
        }
        let head = || Head {
            status: 200,
            log_id: None,
            reset: None,
            limit: None,
            content_type: None,
        };
        // unknown fields are skipped; the error's log id is kept
        let (r, d) = parse_typed::<D>(
            head(),
            br#"{"code":0,"msg":"success","data":{"n":3,"other":[1,2]},"error":{"log_id":"L1"}}"#,
        );
        assert_eq!(
            (r.code, r.log_id.as_deref(), d),
            (Some(0), Some("L1"), Some(D { n: 3 }))
        );
        assert_eq!(r.data, serde_json::Value::Null);
        // a data of another shape: the code is read, the data is not
        let (r, d) = parse_typed::<D>(head(), br#"{"code":0,"msg":"success","data":{"n":"x"}}"#);
        assert_eq!((r.code, d), (Some(0), None));
        // a refusal without data
        let (r, d) = parse_typed::<D>(
            head(),
            br#"{"code":99991400,"msg":"request trigger frequency limit"}"#,
        );
        assert_eq!(
            (r.code, d, r.msg.as_str()),
            (Some(99991400), None, "request trigger frequency limit")
        );
        // not the platform's JSON: said as the untyped read says it
        let (r, d) = parse_typed::<D>(head(), b"<html><title>Bad gateway</title></html>");
        assert_eq!((r.code, d), (None, None));
        assert_eq!(r.network, Some(Network::NotPlatform));
    }

    #[tokio::test]
    async fn a_rate_limit_reply_carries_the_windows_limit_and_reset() {
        // the stand-in's own window, over its limit: what adaptive pacing judges a refusal by
        let s = Standin::start(StandinConfig {
            rate_limit_per_sec: 2,
            ..StandinConfig::default()
        })
        .await
        .unwrap();
        let c = FeishuClient::new(&cfg(&s.base_url(), "standin-secret"), 4).unwrap();
        let mut refused = None;
        for _ in 0..4 {
            let reply = batch_create(&c, &[RECORD]).await;
            if reply.http_status == 429 {
                refused = Some(reply);
                break;
            }
        }
        let reply = refused.expect("no refusal from a window of 2 requests a second");
        assert_eq!(reply.ratelimit_limit, Some(2));
        assert_eq!(reply.ratelimit_reset, Some(1));
        assert!(matches!(classify(&reply), Verdict::RateLimited { .. }));
    }

    #[tokio::test]
    async fn a_dead_endpoint_is_a_transport_failure_to_retry() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let c = FeishuClient::new(&cfg(&format!("http://{addr}"), "x"), 4).unwrap();
        let reply = batch_create(&c, &[RECORD]).await;
        assert_eq!(reply.code, None);
        assert!(reply.msg.contains("cannot connect"), "{}", reply.msg);
        assert_eq!(classify(&reply), Verdict::Retry);
    }
}
