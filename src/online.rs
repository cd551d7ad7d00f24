//! `clockbridge check-config --online`: the check before go-live. After the offline checks passed,
//! it asks the platform, with the daemon's own client ([`FeishuClient`]: the same timeouts, the same
//! proxy of the environment, the same token code), two things, and says of each what is wrong and
//! what to do:
//!
//! 1. **token**: a tenant access token for `feishu.app_id` and the app secret (the app id and
//!    secret, and the IP allow-list where the platform applies it to the token call);
//! 2. **attendance**: one harmless read of the attendance API, `GET
//!    /open-apis/attendance/v1/user_flows/0?employee_type=...` ("查询打卡流水", the read of one
//!    punch record by its id). Its page lets either `attendance:task` (the scope of every write the
//!    daemon makes) or `attendance:task:readonly` call it, so an app set up as the README says
//!    passes it, and one without either scope is refused with 99991672. The id `0` names no record:
//!    nothing is read, nothing is written. The open platform's gateway checks the token, the IP
//!    allow-list and the scope (its general codes, 9999xxxx) before the attendance service sees the
//!    request, so code 0 or any answer of that service (a code 12xxxxx, such as "record not found")
//!    means that those three are right; a general code is a refusal, known or not. Why not `user_flows/query`: its page accepts `attendance:task:readonly` only, so an
//!    app with exactly the scope the daemon needs could be refused there, and it needs a real user
//!    id.
//!
//! A failure is one of two classes, with its own exit code: the platform refused the app
//! ([`EXIT_REFUSED`]: credentials, scope, IP allow-list, app not published, data permission), or no
//! usable answer came ([`EXIT_UNREACHABLE`]: DNS, a refused connection, a timeout, TLS, a proxy, a
//! page that is not the platform's, a platform error or its rate limit). A configuration error is
//! exit 1 as before; the online steps run only after the offline checks passed.
//!
//! The secret and the token never appear in what this prints: the messages name where the secret
//! was read ([`crate::config::SecretSource::describe`]), never its value, and the token is kept
//! inside the client.

use crate::config::{Config, EmployeeType};
use crate::feishu::classify::{classify, AppProblem, Verdict};
use crate::feishu::token::is_token_error;
use crate::feishu::{FeishuClient, Network, Reply};

/// Exit code: the platform refused the app (credentials, scope, IP allow-list...).
pub const EXIT_REFUSED: u8 = 4;
/// Exit code: the platform could not be reached, or gave no usable answer (network, DNS, TLS,
/// proxy, timeout, platform error).
pub const EXIT_UNREACHABLE: u8 = 5;

/// The path of the harmless read, before the record id.
pub const READ_PATH: &str = "/open-apis/attendance/v1/user_flows/";
/// The record id the read asks for: one no punch record has.
pub const READ_RECORD_ID: &str = "0";

/// What one step found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Passed; what it proved.
    Ok(String),
    /// The platform refused the app: what is wrong and what to do.
    Refused(String),
    /// No usable answer: what failed and what to do.
    Unreachable(String),
    /// Not tried, and why.
    NotTried(String),
}

/// One step: `token` or `attendance`.
#[derive(Debug, Clone)]
pub struct Step {
    pub name: &'static str,
    pub outcome: Outcome,
}

/// What `check-config --online` found.
#[derive(Debug, Clone)]
pub struct Report {
    pub steps: Vec<Step>,
}

impl Report {
    /// 0 when every step passed, else the code of the first that failed: [`EXIT_REFUSED`] or
    /// [`EXIT_UNREACHABLE`].
    pub fn exit_code(&self) -> u8 {
        self.steps
            .iter()
            .find_map(|s| match s.outcome {
                Outcome::Refused(_) => Some(EXIT_REFUSED),
                Outcome::Unreachable(_) => Some(EXIT_UNREACHABLE),
                Outcome::Ok(_) | Outcome::NotTried(_) => None,
            })
            .unwrap_or(0)
    }

    /// One line per step (`token: ok: ...`), then the verdict.
    pub fn lines(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .steps
            .iter()
            .map(|s| {
                let (word, text) = match &s.outcome {
                    Outcome::Ok(t) => ("ok", t),
                    Outcome::Refused(t) => ("refused", t),
                    Outcome::Unreachable(t) => ("unreachable", t),
                    Outcome::NotTried(t) => ("not tried", t),
                };
                format!("{}: {word}: {text}", s.name)
            })
            .collect();
        out.push(match self.exit_code() {
            0 => "ready to go live: the platform accepts this app's credentials, this gateway's IP and the attendance scope".to_string(),
            EXIT_REFUSED => format!("the platform refused this app (exit {EXIT_REFUSED}): fix what the lines above say in the developer console or the configuration, then run check-config --online again"),
            _ => format!("the platform could not be reached (exit {EXIT_UNREACHABLE}): fix what the lines above say on this gateway or its network, then run check-config --online again"),
        });
        out
    }
}

/// What the messages need to know of the configuration and the environment.
struct Context {
    /// `feishu.base_url`, without a trailing slash.
    base_url: String,
    /// `HOST:PORT` of the base URL.
    host: String,
    app_id: String,
    /// Where the secret was read.
    secret_from: String,
    timeout_secs: u64,
    /// The environment variable of the proxy the client uses for the base URL, if one is set.
    proxy: Option<&'static str>,
    /// `NO_PROXY` (or `no_proxy`) is set: the proxy may not be used for this host.
    no_proxy: bool,
}

impl Context {
    fn new(cfg: &Config, env: impl Fn(&str) -> Option<String>) -> Context {
        let base_url = cfg.feishu.base_url.trim_end_matches('/').to_string();
        let url = reqwest::Url::parse(&base_url).ok();
        let host = url
            .as_ref()
            .and_then(|u| {
                let port = u.port_or_known_default()?;
                Some(format!("{}:{port}", u.host_str()?))
            })
            .unwrap_or_else(|| base_url.clone());
        let https = url.as_ref().is_some_and(|u| u.scheme() == "https");
        Context {
            host,
            app_id: cfg.feishu.app_id.clone(),
            secret_from: cfg
                .secret_source()
                .map(|s| s.describe())
                .unwrap_or_else(|| "the app secret".to_string()),
            timeout_secs: cfg.feishu.request_timeout_secs,
            proxy: proxy_variable(https, &env),
            no_proxy: ["NO_PROXY", "no_proxy"].iter().any(|n| env(n).is_some()),
            base_url,
        }
    }

    /// `" through the proxy in HTTPS_PROXY"`, or nothing. Never the proxy's address: it may hold
    /// a password.
    fn via(&self) -> String {
        match self.proxy {
            Some(var) if self.no_proxy => {
                format!(" (through the proxy in {var}, unless NO_PROXY exempts the host)")
            }
            Some(var) => format!(" (through the proxy in {var})"),
            None => String::new(),
        }
    }
}

/// The proxy variable the client takes for a base URL of this scheme, as reqwest reads the
/// environment: the scheme's own variable, else `ALL_PROXY` (upper case first; set but empty means
/// none). `HTTP_PROXY` is ignored when `REQUEST_METHOD` is set (a CGI script), as reqwest does.
fn proxy_variable(https: bool, env: &impl Fn(&str) -> Option<String>) -> Option<&'static str> {
    let first = |names: [&'static str; 2]| names.into_iter().find(|n| env(n).is_some());
    let own = if https {
        first(["HTTPS_PROXY", "https_proxy"])
    } else if env("REQUEST_METHOD").is_some() {
        None
    } else {
        first(["HTTP_PROXY", "http_proxy"])
    };
    own.or_else(|| first(["ALL_PROXY", "all_proxy"]))
        .filter(|n| env(n).is_some_and(|v| !v.trim().is_empty()))
}

/// Runs the online steps for `cfg` (already checked offline).
pub async fn check(cfg: &Config) -> Report {
    let cx = Context::new(cfg, |name| std::env::var(name).ok());
    let mut steps = Vec::new();
    let client = match FeishuClient::new(&cfg.feishu, 1) {
        Ok(c) => c,
        Err(e) => {
            steps.push(Step {
                name: "token",
                outcome: Outcome::Unreachable(format!("{e}")),
            });
            return Report { steps };
        }
    };
    let token = client.token().await;
    let token_ok = token.is_ok();
    steps.push(Step {
        name: "token",
        outcome: match token {
            Ok(_) => Outcome::Ok(format!(
                "{} issued a tenant access token to app {:?}{}",
                cx.base_url,
                cx.app_id,
                cx.via()
            )),
            Err(reply) => token_outcome(&reply, &cx),
        },
    });
    steps.push(Step {
        name: "attendance",
        outcome: if token_ok {
            let path = read_path(cfg.feishu.employee_type);
            read_outcome(&client.get(&path).await, &cx)
        } else {
            Outcome::NotTried("it needs a tenant access token".to_string())
        },
    });
    Report { steps }
}

/// The path and query of the harmless read.
fn read_path(employee_type: EmployeeType) -> String {
    format!(
        "{READ_PATH}{READ_RECORD_ID}?employee_type={}",
        employee_type.as_str()
    )
}

/// `code 99991543 "msg", log id X` (the log id is what Feishu support asks for).
fn said(reply: &Reply) -> String {
    let mut s = format!(
        "HTTP {}, code {}",
        reply.http_status,
        reply.code.map(|c| c.to_string()).unwrap_or_default()
    );
    if !reply.msg.is_empty() {
        s.push_str(&format!(" {:?}", reply.msg));
    }
    if let Some(id) = &reply.log_id {
        s.push_str(&format!(", log id {id}"));
    }
    s
}

/// What a refusal of the app means and what to do, for the problems a reply can show.
fn refusal(problem: AppProblem, reply: &Reply, cx: &Context) -> String {
    let said = said(reply);
    match problem {
        AppProblem::Credentials => format!(
            "app_id or app_secret is wrong ({said}): check feishu.app_id ({:?}) and the secret in {} against the developer console (Credentials & Basic Info)",
            cx.app_id, cx.secret_from
        ),
        AppProblem::ScopeMissing => format!(
            "scope attendance:task missing ({said}): add it in the developer console (Permissions & Scopes) and publish a new version of the app"
        ),
        AppProblem::IpNotAllowed => format!(
            "IP not allowed ({said}): add this gateway's public IP (the address the platform sees, after NAT or a proxy) to the app's IP allow-list under Security Settings in the developer console"
        ),
        AppProblem::NoPermission => format!(
            "the app has no data permission in attendance ({said}): widen the app's data permission range in the attendance admin console"
        ),
        other => format!("{} ({said})", other.fix()),
    }
}

/// The step `token`, failed: what the reply says is wrong.
fn token_outcome(reply: &Reply, cx: &Context) -> Outcome {
    if let Some(n) = reply.network {
        return Outcome::Unreachable(network(n, reply, cx));
    }
    match classify(reply) {
        Verdict::AppBlocked(p) => Outcome::Refused(refusal(p, reply, cx)),
        Verdict::RateLimited { .. } => Outcome::Unreachable(busy(reply)),
        Verdict::Retry if reply.code.is_some() && !is_token_error(reply.code) => {
            Outcome::Unreachable(platform_error(reply))
        }
        _ if reply.code.is_none() || reply.code == Some(0) => Outcome::Unreachable(format!(
            "{} answered the token request without a token ({}): it is not the platform's token endpoint: check feishu.base_url",
            cx.base_url,
            said(reply)
        )),
        _ => Outcome::Refused(format!(
            "the platform refused the token request ({}): check feishu.app_id ({:?}) and the secret in {} against the developer console (Credentials & Basic Info)",
            said(reply),
            cx.app_id,
            cx.secret_from
        )),
    }
}

/// The step `attendance`: the reply to the harmless read.
fn read_outcome(reply: &Reply, cx: &Context) -> Outcome {
    if let Some(n) = reply.network {
        return Outcome::Unreachable(network(n, reply, cx));
    }
    if reply.code.is_none() {
        return Outcome::Unreachable(format!(
            "{} answered without the platform's code ({}): check feishu.base_url",
            cx.base_url,
            said(reply)
        ));
    }
    if is_token_error(reply.code) {
        return Outcome::Refused(format!(
            "the attendance API refused the tenant token the platform had just issued, twice ({}): check that feishu.base_url is the platform of this app (Feishu and Lark are separate)",
            said(reply)
        ));
    }
    let what = format!("GET {READ_PATH}{READ_RECORD_ID}");
    match classify(reply) {
        Verdict::AppBlocked(p) => Outcome::Refused(refusal(p, reply, cx)),
        Verdict::RateLimited { .. } => Outcome::Unreachable(busy(reply)),
        Verdict::Retry => Outcome::Unreachable(platform_error(reply)),
        // a general code of the open platform this table does not know: its gateway said no
        _ if reply.code.is_some_and(|c| (99_990_000..=99_999_999).contains(&c)) => {
            Outcome::Refused(format!(
                "the open platform refused the read ({}): look the code up in the open platform's general error codes, and quote the log id to Feishu support",
                said(reply)
            ))
        }
        _ if reply.code == Some(0) => Outcome::Ok(format!(
            "{what} was answered ({}): the platform accepts this app's token, this gateway's IP and the attendance scope",
            said(reply)
        )),
        // the attendance service itself answered (the record id names no record): the gateway
        // in front of it accepted the token, the IP and the scope
        _ => Outcome::Ok(format!(
            "{what} was answered by the attendance service ({}; the id names no punch record on purpose): the platform accepts this app's token, this gateway's IP and the attendance scope",
            said(reply)
        )),
    }
}

fn busy(reply: &Reply) -> String {
    format!(
        "the platform's rate limit was hit ({}): another program may use this app: wait a minute and try again",
        said(reply)
    )
}

fn platform_error(reply: &Reply) -> String {
    format!(
        "the platform answered with an error of its own ({}): nothing says the configuration is wrong: try again later",
        said(reply)
    )
}

/// What went wrong on the way to the platform, and where to look.
fn network(n: Network, reply: &Reply, cx: &Context) -> String {
    let host = &cx.host;
    let via = cx.via();
    let detail = &reply.msg;
    let proxy_hint = match cx.proxy {
        Some(var) => format!(", and the proxy in {var}"),
        None => String::new(),
    };
    match n {
        Network::Dns => format!(
            "DNS failure: the name in {}{via} cannot be resolved ({detail}): check the gateway's DNS servers (/etc/resolv.conf, resolvectl status){proxy_hint} and the spelling of feishu.base_url",
            cx.base_url
        ),
        Network::Refused => format!(
            "connection refused by {host}{via} ({detail}): nothing listens there or a firewall rejects it: check feishu.base_url{proxy_hint} and that the gateway may open outbound HTTPS connections"
        ),
        Network::Timeout => format!(
            "timeout: no answer from {host}{via} within feishu.request_timeout_secs = {} s ({detail}): a firewall may drop the packets, or the network is slow: check outbound HTTPS to {host}{proxy_hint}, or raise feishu.request_timeout_secs",
            cx.timeout_secs
        ),
        Network::Tls => format!(
            "TLS error with {host}{via} ({detail}): a firewall or proxy may intercept HTTPS with its own certificate, the gateway's clock may be wrong, or feishu.base_url says https:// for a server that does not speak TLS: check feishu.base_url and the date"
        ),
        Network::Proxy => format!(
            "proxy error: the proxy{} would not open a tunnel to {host} ({detail}): check the proxy's address and credentials, and that it allows {host}",
            cx.proxy.map(|v| format!(" in {v}")).unwrap_or_default()
        ),
        Network::Unreachable => format!(
            "network unreachable: no route to {host}{via} ({detail}): check the gateway's network connection, default route and firewall"
        ),
        Network::Broken => format!(
            "connection closed without a reply by {host}{via} ({detail}): a firewall or proxy may cut the connection: check outbound HTTPS to {host}{proxy_hint}, then try again"
        ),
        Network::NotPlatform => {
            let page = match &reply.page_title {
                Some(t) => format!("an HTML page titled {t:?}"),
                None => "a body that is not the platform's JSON".to_string(),
            };
            format!(
                "not the platform: HTTP {} from {host}{via} with {page}: a proxy, captive portal or firewall answered instead of the platform, or feishu.base_url is not the platform's address: open {} from this gateway (curl -v) to see who answers",
                reply.http_status, cx.base_url
            )
        }
        Network::Other => format!(
            "request to {host}{via} failed ({detail}): check feishu.base_url and the gateway's network"
        ),
    }
}

#[cfg(test)]
mod tests;
