use super::*;

const SECRET: &str = "s3cr3t-value-never-shown";

fn config(base_url: &str) -> Config {
    let toml = format!(
        "[feishu]\nbase_url = \"{base_url}\"\napp_id = \"cli_a1b2\"\napp_secret = \"{SECRET}\"\nemployee_type = \"employee_no\"\nrequest_timeout_secs = 7\n"
    );
    Config::from_toml_with_env(&toml, "test", std::iter::empty()).unwrap()
}

fn cx_with(base_url: &str, vars: &[(&str, &str)]) -> Context {
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Context::new(&config(base_url), move |name| {
        vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    })
}

fn cx() -> Context {
    cx_with("https://open.feishu.cn", &[])
}

fn reply(status: u16, code: Option<i64>, msg: &str) -> Reply {
    Reply {
        http_status: status,
        code,
        msg: msg.into(),
        log_id: Some("20260302abc".into()),
        ..Reply::default()
    }
}

fn failed(network: Network, msg: &str) -> Reply {
    Reply {
        msg: msg.into(),
        network: Some(network),
        timed_out: network == Network::Timeout,
        ..Reply::default()
    }
}

fn refused(o: Outcome) -> String {
    match o {
        Outcome::Refused(t) => t,
        other => panic!("not refused: {other:?}"),
    }
}

fn unreachable(o: Outcome) -> String {
    match o {
        Outcome::Unreachable(t) => t,
        other => panic!("not unreachable: {other:?}"),
    }
}

fn report(token: Outcome, attendance: Outcome) -> Report {
    Report {
        steps: vec![
            Step {
                name: "token",
                outcome: token,
            },
            Step {
                name: "attendance",
                outcome: attendance,
            },
        ],
    }
}

#[test]
fn wrong_credentials_name_the_app_id_and_where_the_secret_is_never_the_secret() {
    for code in [99991543, 10014, 10003] {
        let t = refused(token_outcome(
            &reply(400, Some(code), "app_id or app_secret is invalid"),
            &cx(),
        ));
        assert!(t.starts_with("app_id or app_secret is wrong"), "{t}");
        assert!(t.contains(&format!("code {code}")), "{t}");
        assert!(t.contains("feishu.app_id (\"cli_a1b2\")"), "{t}");
        assert!(
            t.contains("feishu.app_secret in the configuration file"),
            "{t}"
        );
        assert!(t.contains("log id 20260302abc"), "{t}");
        assert!(!t.contains(SECRET), "{t}");
    }
    // a code the table does not know, on the token call: still the app's credentials to check
    let t = refused(token_outcome(&reply(400, Some(12345), "odd"), &cx()));
    assert!(
        t.contains("refused the token request") && t.contains("feishu.app_id"),
        "{t}"
    );
}

#[test]
fn a_missing_scope_an_ip_not_allowed_and_an_unpublished_app_are_refusals_that_say_what_to_do() {
    let scope = refused(read_outcome(
        &reply(
            400,
            Some(99991672),
            "Access denied. One of the following scopes is required: [attendance:task]",
        ),
        &cx(),
    ));
    assert!(
        scope.starts_with("scope attendance:task missing"),
        "{scope}"
    );
    assert!(scope.contains("code 99991672"), "{scope}");
    assert!(
        scope.contains("Permissions & Scopes") && scope.contains("publish"),
        "{scope}"
    );

    // the IP allow-list, whichever call the platform applies it to
    for o in [
        token_outcome(&reply(400, Some(99991401), "ip not allowed"), &cx()),
        read_outcome(&reply(400, Some(99991401), "ip not allowed"), &cx()),
    ] {
        let ip = refused(o);
        assert!(ip.starts_with("IP not allowed"), "{ip}");
        assert!(
            ip.contains("code 99991401") && ip.contains("public IP"),
            "{ip}"
        );
    }

    let disabled = refused(token_outcome(
        &reply(400, Some(99991662), "app not installed"),
        &cx(),
    ));
    assert!(disabled.contains("publish a version"), "{disabled}");
    let data = refused(read_outcome(&reply(400, Some(1220005), "没有权限"), &cx()));
    assert!(data.contains("data permission"), "{data}");
    // a general code of the platform that no table here knows is still the gateway saying no
    let odd = refused(read_outcome(
        &reply(400, Some(99991999), "something new"),
        &cx(),
    ));
    assert!(
        odd.contains("code 99991999") && odd.contains("log id"),
        "{odd}"
    );
    // a token refused again after the client fetched a fresh one
    let token = refused(read_outcome(
        &reply(400, Some(99991663), "invalid token"),
        &cx(),
    ));
    assert!(token.contains("feishu.base_url"), "{token}");
}

#[test]
fn any_answer_of_the_attendance_service_proves_the_token_the_ip_and_the_scope() {
    for r in [
        reply(200, Some(0), "success"),
        reply(400, Some(1220600), "rule does not exist"),
        reply(400, Some(1220001), "param is invalid"),
    ] {
        match read_outcome(&r, &cx()) {
            Outcome::Ok(t) => assert!(
                t.contains("GET /open-apis/attendance/v1/user_flows/0"),
                "{t}"
            ),
            other => panic!("{r:?}: {other:?}"),
        }
    }
}

#[test]
fn a_platform_error_or_its_rate_limit_is_not_the_configuration() {
    for r in [
        reply(500, Some(1225000), "internal server error"),
        reply(503, Some(1), "unavailable"),
        reply(429, Some(99991400), "request trigger frequency limit"),
    ] {
        let read = unreachable(read_outcome(&r, &cx()));
        let token = unreachable(token_outcome(&r, &cx()));
        assert!(read.contains("try again"), "{read}");
        assert!(token.contains("try again"), "{token}");
    }
    // a token endpoint that answers code 0 without a token is not the platform's
    let t = unreachable(token_outcome(&reply(200, Some(0), "ok"), &cx()));
    assert!(t.contains("feishu.base_url"), "{t}");
}

#[test]
fn each_network_class_is_named_with_where_to_look() {
    let c = cx();
    let cases = [
        (Network::Dns, "DNS failure", "resolv"),
        (
            Network::Refused,
            "connection refused by open.feishu.cn:443",
            "firewall",
        ),
        (
            Network::Timeout,
            "timeout",
            "feishu.request_timeout_secs = 7 s",
        ),
        (
            Network::Tls,
            "TLS error with open.feishu.cn:443",
            "certificate",
        ),
        (Network::Proxy, "proxy error", "credentials"),
        (Network::Unreachable, "network unreachable", "route"),
        (
            Network::Broken,
            "connection closed without a reply by open.feishu.cn:443",
            "try again",
        ),
        (
            Network::Other,
            "request to open.feishu.cn:443 failed",
            "feishu.base_url",
        ),
    ];
    for (n, head, hint) in cases {
        for t in [
            unreachable(token_outcome(&failed(n, "cannot connect: detail"), &c)),
            unreachable(read_outcome(&failed(n, "cannot connect: detail"), &c)),
        ] {
            assert!(t.starts_with(head), "{n:?}: {t}");
            assert!(t.contains(hint), "{n:?}: {t}");
            assert!(t.contains("cannot connect: detail"), "{n:?}: {t}");
        }
    }
    let mut page = failed(Network::NotPlatform, "HTTP 403 ...");
    page.http_status = 403;
    page.page_title = Some("Access denied by policy".into());
    let t = unreachable(read_outcome(&page, &c));
    assert!(t.starts_with("not the platform: HTTP 403"), "{t}");
    assert!(
        t.contains("HTML page titled \"Access denied by policy\""),
        "{t}"
    );
    assert!(t.contains("proxy, captive portal"), "{t}");
}

#[test]
fn the_proxy_is_named_by_its_variable_never_by_its_address() {
    let addr = "http://user:pa55word@proxy.corp:3128";
    let c = cx_with("https://open.feishu.cn", &[("https_proxy", addr)]);
    assert_eq!(c.proxy, Some("https_proxy"));
    let t = unreachable(read_outcome(&failed(Network::Timeout, "timed out"), &c));
    assert!(t.contains("through the proxy in https_proxy"), "{t}");
    assert!(!t.contains("pa55word") && !t.contains("proxy.corp"), "{t}");
    let t = unreachable(read_outcome(
        &failed(Network::Proxy, "tunnel error: unsuccessful"),
        &c,
    ));
    assert!(
        t.starts_with("proxy error: the proxy in https_proxy"),
        "{t}"
    );

    // the scheme's own variable first, then ALL_PROXY; HTTP_PROXY is not for https
    let c = cx_with(
        "https://open.feishu.cn",
        &[("HTTP_PROXY", addr), ("ALL_PROXY", addr)],
    );
    assert_eq!(c.proxy, Some("ALL_PROXY"));
    let c = cx_with("http://127.0.0.1:9", &[("HTTP_PROXY", addr)]);
    assert_eq!(c.proxy, Some("HTTP_PROXY"));
    // set but empty: no proxy; a CGI environment: HTTP_PROXY is ignored
    assert_eq!(
        cx_with("https://open.feishu.cn", &[("HTTPS_PROXY", "")]).proxy,
        None
    );
    assert_eq!(
        cx_with(
            "http://127.0.0.1:9",
            &[("HTTP_PROXY", addr), ("REQUEST_METHOD", "GET")]
        )
        .proxy,
        None
    );
    let c = cx_with(
        "https://open.feishu.cn",
        &[("HTTPS_PROXY", addr), ("NO_PROXY", "x")],
    );
    assert!(c.via().contains("unless NO_PROXY"), "{}", c.via());
    assert_eq!(cx().via(), "");
}

#[test]
fn the_exit_code_is_the_first_failure_and_refusal_differs_from_unreachable() {
    let ok = || Outcome::Ok("fine".into());
    assert_eq!(report(ok(), ok()).exit_code(), 0);
    let r = report(
        Outcome::Refused("bad secret".into()),
        Outcome::NotTried("it needs a tenant access token".into()),
    );
    assert_eq!(r.exit_code(), EXIT_REFUSED);
    assert_eq!(r.lines()[0], "token: refused: bad secret");
    assert_eq!(
        r.lines()[1],
        "attendance: not tried: it needs a tenant access token"
    );
    assert!(r.lines()[2].contains("exit 4"), "{:?}", r.lines());
    let r = report(ok(), Outcome::Unreachable("timeout".into()));
    assert_eq!(r.exit_code(), EXIT_UNREACHABLE);
    assert!(r.lines()[2].contains("exit 5"), "{:?}", r.lines());
    assert_ne!(EXIT_REFUSED, 1);
    assert_ne!(EXIT_UNREACHABLE, 1);
    assert_ne!(EXIT_REFUSED, crate::import::EXIT_NOTHING_READ);
    assert_ne!(EXIT_UNREACHABLE, crate::import::EXIT_NOTHING_READ);
}

#[test]
fn the_read_asks_with_the_configured_employee_type() {
    assert_eq!(
        read_path(EmployeeType::EmployeeNo),
        "/open-apis/attendance/v1/user_flows/0?employee_type=employee_no"
    );
    assert_eq!(cx().host, "open.feishu.cn:443");
}
