//! `contrib/`: the Grafana dashboard is valid JSON, and it and the Prometheus rules name only
//! metrics a running daemon exports (read from its live `/metrics`, not from a list kept by hand).

use std::collections::BTreeSet;

use clockbridge_testkit::standin::StandinConfig;

use crate::util::*;

const WITH_HTTP: &str = r#"
[http]
listen = "127.0.0.1:0"

[[devices]]
id = "door-1"
kind = "tcp"
mode = "listen"
address = "127.0.0.1:0"
timezone = "Asia/Shanghai"
"#;

/// Every name a scrape of this text can be queried by: each sample's name, and each family of
/// a `# TYPE` line with the suffixes its type gives its samples (so that a family with no sample
/// now, e.g. the clock skew of a kind with no device here, still counts).
fn exported_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            let (Some(name), Some(kind)) = (it.next(), it.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total", "_created"],
                "histogram" => &["_bucket", "_sum", "_count", "_created"],
                "info" => &["_info"],
                _ => &[""],
            };
            for s in suffixes {
                names.insert(format!("{name}{s}"));
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_string());
        }
    }
    names
}

/// The metric names (`clockbridge_...`) a PromQL text refers to: recording rules' names
/// (`instance:clockbridge_...:sum`) and labels are not metric names.
fn referenced(promql: &str) -> BTreeSet<String> {
    let re = regex::Regex::new(r"(^|[^A-Za-z0-9_:])(clockbridge_[A-Za-z0-9_]+)").unwrap();
    re.captures_iter(promql)
        .filter_map(|c| {
            let m = c.get(2)?;
            // `..._name:rule` would be part of a recording rule's name
            (!promql[m.end()..].starts_with(':')).then(|| m.as_str().to_string())
        })
        .collect()
}

/// Every `expr` of the dashboard's panels (and its variables' queries).
fn dashboard_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr" | "definition", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => dashboard_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| dashboard_exprs(v, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_and_the_alert_rules_use_only_metrics_the_daemon_exports() {
    let env = Env::new(StandinConfig::default()).await;
    let running = env.start(WITH_HTTP).await;
    let addr = running.http_addr().expect("the endpoint is on");
    let text = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    running.stop().await;
    let exported = exported_names(&text);
    assert!(exported.contains("clockbridge_lane_pacing_rate"), "{text}");

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dashboard = std::fs::read_to_string(root.join("contrib/grafana/clockbridge.json")).unwrap();
    let dashboard: serde_json::Value =
        serde_json::from_str(&dashboard).expect("the dashboard is valid JSON");
    assert!(
        dashboard["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["name"] == "gateway"),
        "the dashboard has a variable per gateway"
    );
    let mut exprs = Vec::new();
    dashboard_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() > 20, "{exprs:?}");
    let rules =
        std::fs::read_to_string(root.join("contrib/prometheus/clockbridge.rules.yml")).unwrap();
    let rules: String = rules
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");

    for (what, text) in exprs
        .iter()
        .map(|e| ("contrib/grafana/clockbridge.json", e.as_str()))
        .chain([("contrib/prometheus/clockbridge.rules.yml", rules.as_str())])
    {
        let names = referenced(text);
        let unknown: Vec<&String> = names.iter().filter(|n| !exported.contains(*n)).collect();
        assert!(
            unknown.is_empty(),
            "{what} refers to metrics the daemon does not export: {unknown:?} (in {text:?})"
        );
    }
    // the rules watch what the issue asks for
    let used = referenced(&rules);
    for name in [
        "clockbridge_device_online",
        "clockbridge_device_punches_read_total",
        "clockbridge_queue_oldest_outstanding_age_seconds",
        "clockbridge_queue_records",
        "clockbridge_sender_blocked",
        "clockbridge_device_clock_skew_seconds",
        "clockbridge_queue_disk_free_bytes",
        "clockbridge_lane_rate_limited_total",
    ] {
        assert!(used.contains(name), "the rules do not use {name}");
    }
}

#[test]
fn names_are_read_from_promql_as_prometheus_would() {
    let r = referenced(
        "sum by (instance) (rate(clockbridge_lane_requests_total{lane=\"user_flow\"}[5m])) / instance:clockbridge_punch_backlog:sum",
    );
    assert_eq!(
        r.into_iter().collect::<Vec<_>>(),
        ["clockbridge_lane_requests_total"]
    );
    let e = exported_names(
        "# TYPE clockbridge_sender_requests counter\nclockbridge_sender_requests_total 5\n# TYPE clockbridge_device_clock_skew_seconds gauge\n",
    );
    assert!(e.contains("clockbridge_sender_requests_total"));
    assert!(e.contains("clockbridge_device_clock_skew_seconds"));
    assert!(!e.contains("clockbridge_sender_requests_count"));
}
