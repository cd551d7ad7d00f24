//! `clockbridge check-config --online`, on the real binary: against the stand-in (a good app, a
//! wrong secret, a missing scope, an IP not allowed) and against loopback servers that fail the way
//! networks do (a closed port, a server that never answers, an HTML page, plain HTTP where TLS was
//! expected, a proxy that refuses the tunnel). Every address is on loopback; the proxy variables of
//! the environment the tests run in are removed.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Output;

use clockbridge_testkit::standin::{Api, StandinConfig, SCOPE_RULE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::util::*;

const PROXY_VARS: [&str; 7] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
];

/// `clockbridge check-config [--online] --config CONFIG` with `env` added to an environment without
/// proxies (nor `no_proxy`).
async fn check_config(args: &[&str], config: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_clockbridge"));
    cmd.arg("check-config")
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("CLOCKBRIDGE__FEISHU__APP_SECRET")
        .env_remove("no_proxy")
        .env_remove("REQUEST_METHOD");
    for v in PROXY_VARS {
        cmd.env_remove(v);
    }
    cmd.envs(env.iter().copied());
    cmd.output().await.unwrap()
}

async fn online(config: &Path) -> Output {
    check_config(&["--online"], config, &[]).await
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The `clockbridge: online: STEP: ...` line of a step.
fn step<'a>(err: &'a str, name: &str) -> &'a str {
    let head = format!("clockbridge: online: {name}: ");
    err.lines()
        .find(|l| l.starts_with(&head))
        .unwrap_or_else(|| panic!("no {name} line in: {err}"))
}

/// A config for `base_url` (the stand-in's queue path and sender keys), with `timeout` seconds.
fn config_for(env: &Env, base_url: &str, timeout: u64) -> PathBuf {
    let text = config_toml(base_url, &env.queue_path(), "").replace(
        "request_timeout_secs = 5",
        &format!("request_timeout_secs = {timeout}"),
    );
    let p = env.dir.path().join("online.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// A port on loopback where nothing listens.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A loopback server that answers every request (a `CONNECT` too) with HTTP 403 and an HTML page,
/// as a filtering proxy or a captive portal does.
async fn html_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                // read the head and the body the client sends, so that closing sends no reset
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let head_end = loop {
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while buf.len() < head_end + length {
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let page = "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">\n<title>Access Denied - Web Filter</title></head><body>This site is blocked by policy.</body></html>";
                let reply = format!(
                    "HTTP/1.1 403 Forbidden\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                    page.len()
                );
                let _ = conn.write_all(reply.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    port
}

fn assert_never_shows(out: &Output, secrets: &[&str]) {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for s in secrets {
        assert!(!text.contains(s), "{s:?} shown in: {text}");
    }
    // every token the stand-in issues starts so
    assert!(!text.contains("t-standin-"), "a token shown in: {text}");
}

#[tokio::test]
async fn check_config_online_passes_a_good_app_with_one_token_and_one_read_and_no_write() {
    let env = Env::new(StandinConfig::default()).await;
    let out = online(&env.write_config("")).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(step(&err, "token").contains("token: ok: "), "{err}");
    let read = step(&err, "attendance");
    assert!(
        read.contains("attendance: ok: GET /open-apis/attendance/v1/user_flows/0"),
        "{err}"
    );
    assert!(
        read.contains("1220600"),
        "the attendance service answered: {err}"
    );
    assert!(
        err.contains("clockbridge: online: ready to go live"),
        "{err}"
    );
    // the offline part is unchanged: the masked configuration on stdout
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("app_secret = \"***\""), "{stdout}");
    assert_never_shows(&out, &["standin-secret"]);

    let s = &env.standin;
    assert_eq!(s.stats().token_requests, 1);
    assert_eq!(s.requests_to(Api::UserFlowGet), 1);
    for write in [
        Api::UserFlows,
        Api::UserApprovals,
        Api::UploadReport,
        Api::LeaveAccrual,
    ] {
        assert_eq!(s.requests_to(write), 0, "{write:?}");
    }
    assert!(s.stored().is_empty());
}

#[tokio::test]
async fn check_config_online_names_the_wrong_secret_and_exits_4() {
    let env = Env::new(StandinConfig::default()).await;
    // the secret in a file, as the README advises, and not the one the platform has
    let secret_file = env.dir.path().join("app_secret");
    std::fs::write(&secret_file, "wrong-secret-4242\n").unwrap();
    std::fs::set_permissions(
        &secret_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let text = std::fs::read_to_string(env.write_config(""))
        .unwrap()
        .replace(
            "app_secret = \"standin-secret\"",
            &format!("app_secret_file = \"{}\"", secret_file.display()),
        );
    let cfg = env.dir.path().join("secret-file.toml");
    std::fs::write(&cfg, text).unwrap();

    let out = online(&cfg).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "{err}");
    let token = step(&err, "token");
    assert!(
        token.contains("token: refused: app_id or app_secret is wrong"),
        "{token}"
    );
    assert!(token.contains("code 99991543"), "{token}");
    assert!(token.contains("log id "), "{token}");
    assert!(token.contains("feishu.app_id (\"cli_standin\")"), "{token}");
    assert!(
        token.contains(&format!(
            "the file feishu.app_secret_file ({})",
            secret_file.display()
        )),
        "{token}"
    );
    assert!(step(&err, "attendance").contains("not tried"), "{err}");
    assert!(err.contains("exit 4"), "{err}");
    assert_never_shows(&out, &["wrong-secret-4242", "standin-secret"]);
    assert_eq!(env.standin.requests_to(Api::UserFlowGet), 0);
}

#[tokio::test]
async fn check_config_online_names_the_missing_attendance_scope_and_exits_4() {
    let env = Env::new(StandinConfig::default()).await;
    // the app has the leave accrual scope only
    env.standin.set_scopes([SCOPE_RULE]);
    let out = online(&env.write_config("")).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(step(&err, "token").contains("token: ok"), "{err}");
    let read = step(&err, "attendance");
    assert!(
        read.contains("attendance: refused: scope attendance:task missing"),
        "{read}"
    );
    assert!(read.contains("code 99991672"), "{read}");
    assert!(read.contains("Permissions & Scopes"), "{read}");
    assert!(read.contains("publish a new version"), "{read}");
    assert_never_shows(&out, &["standin-secret"]);
    assert!(env.standin.stored().is_empty());
}

#[tokio::test]
async fn check_config_online_says_this_gateways_ip_is_not_allowed_and_exits_4() {
    let env = Env::new(StandinConfig::default()).await;
    env.standin
        .set_ip_allow_list(Some(HashSet::from(["192.0.2.10".parse().unwrap()])));
    let out = online(&env.write_config("")).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "{err}");
    let read = step(&err, "attendance");
    assert!(
        read.contains("attendance: refused: IP not allowed"),
        "{read}"
    );
    assert!(read.contains("code 99991401"), "{read}");
    assert!(
        read.contains("public IP") && read.contains("allow-list"),
        "{read}"
    );
}

#[tokio::test]
async fn check_config_online_names_a_refused_connection_and_exits_5() {
    let env = Env::new(StandinConfig::default()).await;
    let port = closed_port();
    let out = online(&config_for(&env, &format!("http://127.0.0.1:{port}"), 5)).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(5), "{err}");
    let token = step(&err, "token");
    assert!(
        token.contains(&format!(
            "token: unreachable: connection refused by 127.0.0.1:{port}"
        )),
        "{token}"
    );
    assert!(step(&err, "attendance").contains("not tried"), "{err}");
    assert!(err.contains("exit 5"), "{err}");
    assert_never_shows(&out, &["standin-secret"]);
}

#[tokio::test]
async fn check_config_online_names_a_server_that_never_answers_as_a_timeout_and_exits_5() {
    let env = Env::new(StandinConfig::default()).await;
    // the kernel accepts the connection into the backlog; nobody ever reads or answers
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let out = online(&config_for(&env, &format!("http://127.0.0.1:{port}"), 1)).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(5), "{err}");
    let token = step(&err, "token");
    assert!(
        token.contains(&format!(
            "token: unreachable: timeout: no answer from 127.0.0.1:{port}"
        )),
        "{token}"
    );
    assert!(
        token.contains("feishu.request_timeout_secs = 1 s"),
        "{token}"
    );
    drop(silent);
}

#[tokio::test]
async fn check_config_online_names_an_html_page_instead_of_the_platform_and_exits_5() {
    let env = Env::new(StandinConfig::default()).await;
    let port = html_server().await;
    let out = online(&config_for(&env, &format!("http://127.0.0.1:{port}"), 5)).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(5), "{err}");
    let token = step(&err, "token");
    assert!(
        token.contains("token: unreachable: not the platform: HTTP 403"),
        "{token}"
    );
    assert!(
        token.contains("an HTML page titled \"Access Denied - Web Filter\""),
        "{token}"
    );
    assert!(token.contains("proxy, captive portal"), "{token}");
    assert_never_shows(&out, &["standin-secret"]);
}

#[tokio::test]
async fn check_config_online_names_a_tls_error_and_exits_5() {
    // https:// to the stand-in, which speaks plain HTTP
    let env = Env::new(StandinConfig::default()).await;
    let base = format!("https://{}", env.standin.addr());
    let out = online(&config_for(&env, &base, 5)).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(5), "{err}");
    let token = step(&err, "token");
    assert!(
        token.contains(&format!(
            "token: unreachable: TLS error with {}",
            env.standin.addr()
        )),
        "{token}"
    );
    assert!(token.contains("does not speak TLS"), "{token}");
    assert_eq!(env.standin.stats().token_requests, 0);
}

#[tokio::test]
async fn check_config_online_names_the_proxy_of_the_environment_and_never_its_password() {
    let env = Env::new(StandinConfig::default()).await;
    let proxy = format!("http://ops:proxy-pa55@127.0.0.1:{}", html_server().await);
    // whatever the proxy, the platform's address is a closed loopback port: were the proxy not
    // used, the connection would be refused, never leave this host
    let port = closed_port();

    // an https base URL: the proxy refuses the tunnel (CONNECT answered 403)
    let cfg = config_for(&env, &format!("https://127.0.0.1:{port}"), 5);
    let out = check_config(&["--online"], &cfg, &[("HTTPS_PROXY", &proxy)]).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(5), "{err}");
    let token = step(&err, "token");
    assert!(
        token.contains(
            "token: unreachable: proxy error: the proxy in HTTPS_PROXY would not open a tunnel"
        ),
        "{token}"
    );
    assert_never_shows(&out, &["proxy-pa55", "standin-secret"]);

    // an http base URL: the proxy answers with its own page
    let cfg = config_for(&env, &format!("http://127.0.0.1:{port}"), 5);
    let out = check_config(&["--online"], &cfg, &[("http_proxy", &proxy)]).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(5), "{err}");
    let token = step(&err, "token");
    assert!(token.contains("not the platform: HTTP 403"), "{token}");
    assert!(
        token.contains("(through the proxy in http_proxy)"),
        "{token}"
    );
    assert!(token.contains("Access Denied - Web Filter"), "{token}");
    assert_never_shows(&out, &["proxy-pa55", "standin-secret"]);
}

#[tokio::test]
async fn check_config_online_with_a_configuration_error_exits_1_and_asks_the_platform_nothing() {
    let env = Env::new(StandinConfig::default()).await;
    let cfg = env.write_config("[mapping]\nmode = \"nonsense\"\n");
    let out = online(&cfg).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("online:"), "{err}");
    assert_eq!(env.standin.stats().token_requests, 0);
}

#[tokio::test]
async fn check_config_without_online_asks_the_platform_nothing() {
    let env = Env::new(StandinConfig::default()).await;
    let out = check_config(&[], &env.write_config(""), &[]).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("online:"), "{err}");
    assert_eq!(env.standin.stats().token_requests, 0);
    assert_eq!(env.standin.requests_to(Api::UserFlowGet), 0);
}
