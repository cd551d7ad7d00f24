//! The HTTP side of ISAPI: the product's reqwest client (rustls, no OpenSSL) with HTTP Digest
//! authentication (RFC 7616 / 2617, computed by the `digest_auth` crate), and the calls a reader
//! makes: one `AcsEvent` or `UserInfo/Search` page, the device's identity and time, and the alert
//! stream's response.
//!
//! Digest: the last challenge is kept and answered pre-emptively (`nc` counting up), so a page costs
//! one round trip. A 401 with a new nonce, or `stale=true`, is a nonce that expired: the request is
//! sent again once with the new challenge, transparently. A 401 to a response computed from a
//! challenge of this very call, or to one whose nonce the terminal still gives, is a wrong user or
//! password: [`HikError::Auth`], "check the device user and password", and never retried by the
//! client (the source backs off: terminals lock an account after a few failed logins). Only when
//! the terminal accepted the password within the last 10 minutes is such a refusal (a 401 storm)
//! tried once more, a tenth of a second later: so a wrong password costs at most two failed logins per
//! try, and a right one survives a short storm.
//!
//! Guarantees: every request has a timeout (the stream's silence is watched by its reader); the
//! password never appears in an error, a log line or a `Debug` output.

use std::time::Duration;

use digest_auth::{AuthContext, HttpMethod, WwwAuthenticateHeader};
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};

use super::isapi::{self, IsapiError};
use super::spec::{HikSpec, Password};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum HikError {
    /// The terminal refused the user or the password.
    #[error("{label}: check the device user and password: the terminal refused user {user:?} (HTTP 401 to a fresh digest challenge); clockbridge waits before trying again, because terminals lock an account after a few failed logins")]
    Auth { label: String, user: String },
    /// A 401 without a digest challenge clockbridge can answer.
    #[error("{label}: {what}: HTTP 401 without a usable digest challenge ({reason}): check that ISAPI digest authentication is on")]
    Challenge {
        label: String,
        what: &'static str,
        reason: String,
    },
    /// The terminal answered with an error status.
    #[error("{label}: {what}: HTTP {status}{detail}")]
    Status {
        label: String,
        what: &'static str,
        status: u16,
        detail: String,
    },
    /// No answer (refused, unreachable, timed out) or a broken transfer.
    #[error("{label}: {what}: {reason}: check that the terminal is on and reachable")]
    Net {
        label: String,
        what: &'static str,
        reason: String,
    },
    /// The terminal's HTTPS certificate is not trusted (terminals ship a self-signed one).
    #[error("{label}: {what}: {reason}: the terminal's HTTPS certificate is not trusted: add its CA to the gateway's trust store, or set accept_invalid_certs = true for the terminal's own self-signed certificate (the link stays encrypted, but the terminal is not authenticated)")]
    Certificate {
        label: String,
        what: &'static str,
        reason: String,
    },
    /// An answer that is not the document asked for.
    #[error("{label}: {what}: {source}")]
    Isapi {
        label: String,
        what: &'static str,
        source: IsapiError,
    },
}

impl HikError {
    pub fn is_auth(&self) -> bool {
        matches!(self, HikError::Auth { .. })
    }
}

/// The error's causes, joined (reqwest's own message is often only "error sending request").
fn causes(e: &reqwest::Error) -> String {
    let mut s = if e.is_timeout() {
        "timed out".to_string()
    } else {
        e.to_string()
    };
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = c.source();
    }
    s
}

/// One terminal's ISAPI client.
pub struct HikClient {
    http: reqwest::Client,
    base: String,
    user: String,
    password: Password,
    label: String,
    timeout: Duration,
    challenge: Option<WwwAuthenticateHeader>,
    /// Failed logins since the client was made (401 to a fresh challenge).
    pub auth_failures: u64,
    /// Challenges answered again (nonce expired).
    pub rechallenges: u64,
    /// When the terminal last accepted a request (the password was right then).
    last_ok: Option<std::time::Instant>,
}

/// How long after an accepted request a refusal of a fresh challenge is taken for a hiccup of the
/// terminal (a 401 storm) and tried once more, rather than for a wrong password.
const TRUSTED_FOR: Duration = Duration::from_secs(600);

impl HikClient {
    pub fn new(spec: &HikSpec, label: &str) -> Result<HikClient, HikError> {
        let timeout = Duration::from_secs(spec.io_timeout_secs);
        let http = reqwest::Client::builder()
            .connect_timeout(timeout)
            .danger_accept_invalid_certs(spec.accept_invalid_certs)
            .pool_max_idle_per_host(2)
            .build()
            .map_err(|e| HikError::Net {
                label: label.to_string(),
                what: "building the HTTP client",
                reason: causes(&e),
            })?;
        Ok(HikClient {
            http,
            base: spec.base_url().unwrap_or_default(),
            user: spec.username.clone().unwrap_or_default(),
            password: spec.password.clone().unwrap_or_default(),
            label: label.to_string(),
            timeout,
            challenge: None,
            auth_failures: 0,
            rechallenges: 0,
            last_ok: None,
        })
    }

    fn net(&self, what: &'static str, e: &reqwest::Error) -> HikError {
        let reason = causes(e);
        let label = self.label.clone();
        // rustls's refusals of the peer's certificate ("invalid peer certificate: UnknownIssuer")
        if reason.contains("peer certificate") {
            return HikError::Certificate {
                label,
                what,
                reason,
            };
        }
        HikError::Net {
            label,
            what,
            reason,
        }
    }

    fn authorization(&mut self, method: &Method, uri: &str) -> Option<HeaderValue> {
        let c = self.challenge.as_mut()?;
        let ctx = AuthContext::new_with_method(
            self.user.as_str(),
            self.password.expose(),
            uri,
            Option::<&[u8]>::None,
            HttpMethod::from(method.as_str()),
        );
        let h = c.respond(&ctx).ok()?;
        HeaderValue::from_str(&h.to_header_string()).ok()
    }

    /// Sends one request with digest authentication; `timeout` `None` for the stream.
    pub async fn send(
        &mut self,
        what: &'static str,
        method: Method,
        uri: &str,
        body: Option<(&'static str, Vec<u8>)>,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response, HikError> {
        let url = format!("{}{uri}", self.base);
        let mut fresh = false;
        // refusals of a fresh challenge tolerated: one more when the password was accepted lately
        let mut tolerated = u32::from(self.last_ok.is_some_and(|t| t.elapsed() < TRUSTED_FOR));
        loop {
            let mut req = self.http.request(method.clone(), &url);
            if let Some(t) = timeout {
                req = req.timeout(t);
            }
            if let Some((ct, b)) = &body {
                req = req.header(CONTENT_TYPE, *ct).body(b.clone());
            }
            let sent_nonce = self.challenge.as_ref().map(|c| c.nonce.clone());
            if let Some(h) = self.authorization(&method, uri) {
                req = req.header(AUTHORIZATION, h);
            }
            let resp = req.send().await.map_err(|e| self.net(what, &e))?;
            if resp.status() != StatusCode::UNAUTHORIZED {
                if sent_nonce.is_some() {
                    self.last_ok = Some(std::time::Instant::now());
                }
                return Ok(resp);
            }
            let challenge = resp
                .headers()
                .get_all(WWW_AUTHENTICATE)
                .iter()
                // `to_str` keeps visible ASCII only: digest_auth 0.3.1 can panic on other text
                // (found by the hikvision fuzz target)
                .filter_map(|v| v.to_str().ok())
                .find(|v| v.trim_start().to_ascii_lowercase().starts_with("digest"))
                .map(WwwAuthenticateHeader::parse);
            let c = match challenge {
                Some(Ok(c)) => c,
                Some(Err(e)) => {
                    return Err(HikError::Challenge {
                        label: self.label.clone(),
                        what,
                        reason: e.to_string(),
                    })
                }
                None => {
                    return Err(HikError::Challenge {
                        label: self.label.clone(),
                        what,
                        reason: "no Digest WWW-Authenticate header".into(),
                    })
                }
            };
            let same_nonce = sent_nonce.as_deref() == Some(c.nonce.as_str());
            if fresh && tolerated > 0 {
                tolerated -= 1;
                self.rechallenges += 1;
                self.challenge = Some(c);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            if fresh || (sent_nonce.is_some() && same_nonce && !c.stale) {
                self.auth_failures += 1;
                self.challenge = Some(c);
                return Err(HikError::Auth {
                    label: self.label.clone(),
                    user: self.user.clone(),
                });
            }
            if sent_nonce.is_some() {
                self.rechallenges += 1;
            }
            self.challenge = Some(c);
            fresh = true;
        }
    }

    /// A request whose whole reply is read (with the request timeout); an error status is an error.
    async fn call(
        &mut self,
        what: &'static str,
        method: Method,
        uri: &str,
        body: Option<(&'static str, Vec<u8>)>,
    ) -> Result<Vec<u8>, HikError> {
        let resp = self
            .send(what, method, uri, body, Some(self.timeout))
            .await?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| self.net(what, &e))?;
        if !status.is_success() {
            let detail = isapi::response_status(&bytes)
                .map(|s| format!(" ({})", crate::logging::visible(&s)))
                .unwrap_or_default();
            return Err(HikError::Status {
                label: self.label.clone(),
                what,
                status: status.as_u16(),
                detail,
            });
        }
        Ok(bytes.to_vec())
    }

    fn isapi(&self, what: &'static str, source: IsapiError) -> HikError {
        HikError::Isapi {
            label: self.label.clone(),
            what,
            source,
        }
    }

    /// `GET /ISAPI/System/deviceInfo`.
    pub async fn device_info(&mut self) -> Result<isapi::DeviceInfo, HikError> {
        const WHAT: &str = "reading the device information";
        let b = self
            .call(WHAT, Method::GET, "/ISAPI/System/deviceInfo", None)
            .await?;
        isapi::parse_device_info(&b).map_err(|e| self.isapi(WHAT, e))
    }

    /// `GET /ISAPI/System/time`.
    pub async fn time(&mut self) -> Result<isapi::DeviceTime, HikError> {
        const WHAT: &str = "reading the device's clock";
        let b = self
            .call(WHAT, Method::GET, "/ISAPI/System/time", None)
            .await?;
        isapi::parse_time(&b).map_err(|e| self.isapi(WHAT, e))
    }

    /// `PUT /ISAPI/System/time`.
    pub async fn set_time(&mut self, doc: Vec<u8>) -> Result<(), HikError> {
        self.call(
            "setting the device's clock",
            Method::PUT,
            "/ISAPI/System/time",
            Some(("application/xml", doc)),
        )
        .await
        .map(|_| ())
    }

    /// One page of the event log.
    pub async fn acs_events(&mut self, body: Vec<u8>) -> Result<isapi::AcsEventPage, HikError> {
        const WHAT: &str = "reading the event log (AcsEvent)";
        let b = self
            .call(
                WHAT,
                Method::POST,
                "/ISAPI/AccessControl/AcsEvent?format=json",
                Some(("application/json", body)),
            )
            .await?;
        isapi::parse_acs_event_page(&b).map_err(|e| self.isapi(WHAT, e))
    }

    /// One page of the user list.
    pub async fn users(&mut self, body: Vec<u8>) -> Result<isapi::UserPage, HikError> {
        const WHAT: &str = "reading the user list (UserInfo/Search)";
        let b = self
            .call(
                WHAT,
                Method::POST,
                "/ISAPI/AccessControl/UserInfo/Search?format=json",
                Some(("application/json", body)),
            )
            .await?;
        isapi::parse_user_page(&b).map_err(|e| self.isapi(WHAT, e))
    }

    /// Opens the alert stream: the response, whose body the caller reads, and its boundary.
    pub async fn alert_stream(&mut self) -> Result<(reqwest::Response, String), HikError> {
        const WHAT: &str = "opening the alert stream";
        let resp = self
            .send(
                WHAT,
                Method::GET,
                "/ISAPI/Event/notification/alertStream",
                None,
                None,
            )
            .await?;
        if !resp.status().is_success() {
            return Err(HikError::Status {
                label: self.label.clone(),
                what: WHAT,
                status: resp.status().as_u16(),
                detail: String::new(),
            });
        }
        let ct = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let boundary = super::multipart::boundary_of(&ct).ok_or_else(|| {
            self.isapi(
                WHAT,
                IsapiError::Missing("multipart boundary in the Content-Type"),
            )
        })?;
        Ok((resp, boundary))
    }

    /// The next bytes of a stream, `None` at its end.
    pub async fn chunk(
        &self,
        resp: &mut reqwest::Response,
    ) -> Result<Option<bytes::Bytes>, HikError> {
        resp.chunk()
            .await
            .map_err(|e| self.net("reading the alert stream", &e))
    }
}

impl std::fmt::Debug for HikClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HikClient")
            .field("base", &self.base)
            .field("user", &self.user)
            .field("password", &self.password)
            .finish()
    }
}
