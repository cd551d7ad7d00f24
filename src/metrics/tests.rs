use super::*;
use crate::feishu::lanes::user_flows::KIND as KIND_USER_FLOW;

fn sample() -> Scrape {
    let mut counts = Counts::default();
    let c = StateCounts {
        pending: 2,
        in_flight: 1,
        delivered: 40,
        dead: 3,
        unmapped: 4,
    };
    counts.total = c;
    counts.by_kind.insert(KIND_USER_FLOW.into(), c);
    counts.by_device.insert("door-1".into(), c);
    counts.pruned_delivered = 7;
    let mut devices = BTreeMap::new();
    devices.insert(
        "door-1".to_string(),
        DeviceSnapshot {
            online: true,
            connections: 1,
            connects: 2,
            lines_read: 51,
            punches_read: 50,
            malformed: 1,
            queued: 49,
            duplicates: 1,
            acks_written: 0,
            last_line_at: Some(1_772_413_199),
            last_punch_at: Some(1_772_413_190),
            last_error: None,
            figures:
                serde_json::json!({"clock_skew_secs": -3, "device_records": 120, "watermark": 118})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
        },
    );
    // a label value that needs escaping
    devices.insert("lobby \"b\"".to_string(), DeviceSnapshot::default());
    Scrape {
        reconcile: None,
        version: "9.9.9".into(),
        started_at: 1_772_400_000,
        queue: Some(QueueFigures {
            counts,
            oldest_outstanding_age_secs: Some(12.5),
        }),
        sender: SenderFigures {
            snapshot: SenderSnapshot {
                state: "ok".into(),
                requests: 5,
                delivered: 40,
                dead: 3,
                retries: 6,
                retries_by_reason: [("network".to_string(), 6)].into_iter().collect(),
                splits: 1,
                rate_limited: 2,
                ..SenderSnapshot::default()
            },
            app_blocked: 0,
            heartbeat_age_secs: Some(0.25),
            // 1 answer <= 25 ms, 3 <= 100 ms, 1 slower than 30 s
            latency_cumulative: vec![1, 1, 4, 4, 4, 4, 4, 4, 4, 4, 5],
            latency_sum_ms: 31_200,
        },
        devices,
        lanes: [
            (
                "archive_report".to_string(),
                SenderSnapshot {
                    requests: 3,
                    dead: 2,
                    blocked_reason: Some("x".into()),
                    ..SenderSnapshot::default()
                },
            ),
            ("user_approval".to_string(), SenderSnapshot::default()),
        ]
        .into_iter()
        .collect(),
        conditions: vec![crate::health::Condition {
            kind: ConditionKind::StorageFailing,
            subject: None,
            since: Some(1_772_400_000),
            message: "storage: ...".into(),
            restart: false,
        }],
        disk: Some(DiskFigures {
            free_bytes: 1_000_000,
            size_bytes: 8_000_000,
        }),
    }
}

#[test]
fn every_lane_shows_its_pacing_and_the_fleet_figures_are_there() {
    let mut scrape = sample();
    scrape.sender.snapshot.pacing = "adaptive".into();
    scrape.sender.snapshot.pacing_rate_per_sec = 12.5;
    scrape.sender.snapshot.pacing_ceiling_per_sec = 49.0;
    scrape.sender.snapshot.paused_secs = 3.25;
    let text = render(scrape).unwrap();
    let l = lines(&text);
    for expected in [
        "clockbridge_lane_requests_total{lane=\"user_flow\"} 5",
        "clockbridge_lane_requests_total{lane=\"archive_report\"} 3",
        "clockbridge_lane_rate_limited_total{lane=\"user_flow\"} 2",
        "clockbridge_lane_paused_seconds_total{lane=\"user_flow\"} 3.25",
        "clockbridge_lane_pacing_rate{lane=\"user_flow\"} 12.5",
        "clockbridge_lane_pacing_ceiling{lane=\"user_flow\"} 49.0",
        "clockbridge_lane_adaptive{lane=\"user_flow\"} 1",
        "clockbridge_lane_adaptive{lane=\"user_approval\"} 0",
        "clockbridge_queue_disk_free_bytes 1000000.0",
        "clockbridge_queue_disk_size_bytes 8000000.0",
        "clockbridge_device_last_punch_timestamp_seconds{device=\"door-1\"} 1772413190",
    ] {
        assert!(l.contains(&expected), "missing {expected}:\n{text}");
    }
    // a device without a punch since the start has no last-punch sample
    assert!(!text.contains("clockbridge_device_last_punch_timestamp_seconds{device=\"lobby"));
}

#[test]
fn hr_senders_are_labelled_by_kind() {
    let text = render(sample()).unwrap();
    let l = lines(&text);
    for expected in [
        "clockbridge_hr_requests_total{kind=\"archive_report\"} 3",
        "clockbridge_hr_dead_records_total{kind=\"archive_report\"} 2",
        "clockbridge_hr_dead_records_total{kind=\"user_approval\"} 0",
        "clockbridge_hr_sender_blocked{kind=\"archive_report\"} 1",
        "clockbridge_hr_sender_blocked{kind=\"user_approval\"} 0",
    ] {
        assert!(l.contains(&expected), "missing {expected}:\n{text}");
    }
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().collect()
}

/// A sample line (not a comment) of the metric `name`, without labels.
fn has_sample(text: &str, name: &str) -> bool {
    text.lines().any(|l| l.starts_with(&format!("{name} ")))
}

#[test]
fn renders_every_family_with_the_right_values() {
    let text = render(sample()).unwrap();
    let l = lines(&text);
    for expected in [
        "clockbridge_build_info{version=\"9.9.9\"} 1",
        "clockbridge_start_time_seconds 1772400000",
        "clockbridge_queue_up 1",
        "clockbridge_queue_records{kind=\"user_flow\",state=\"pending\"} 2",
        "clockbridge_queue_records{kind=\"user_flow\",state=\"in_flight\"} 1",
        "clockbridge_queue_records{kind=\"user_flow\",state=\"delivered\"} 40",
        "clockbridge_queue_records{kind=\"user_flow\",state=\"dead\"} 3",
        "clockbridge_queue_records{kind=\"user_flow\",state=\"unmapped\"} 4",
        "clockbridge_queue_oldest_outstanding_age_seconds 12.5",
        "clockbridge_queue_pruned_records_total 7",
        "clockbridge_device_queue_records{device=\"door-1\",state=\"dead\"} 3",
        "clockbridge_device_queue_records{device=\"lobby \\\"b\\\"\",state=\"pending\"} 0",
        "clockbridge_sender_requests_total 5",
        "clockbridge_sender_delivered_records_total 40",
        "clockbridge_sender_dead_records_total 3",
        "clockbridge_sender_retried_records_total{reason=\"network\"} 6",
        "clockbridge_sender_splits_total 1",
        "clockbridge_sender_rate_limited_total 2",
        "clockbridge_sender_app_blocked_total 0",
        "clockbridge_sender_blocked 0",
        "clockbridge_sender_heartbeat_age_seconds 0.25",
        "clockbridge_upstream_latency_seconds_sum 31.2",
        "clockbridge_upstream_latency_seconds_count 5",
        "clockbridge_upstream_latency_seconds_bucket{le=\"0.025\"} 1",
        "clockbridge_upstream_latency_seconds_bucket{le=\"0.1\"} 4",
        "clockbridge_upstream_latency_seconds_bucket{le=\"30.0\"} 4",
        "clockbridge_upstream_latency_seconds_bucket{le=\"+Inf\"} 5",
        "clockbridge_device_online{device=\"door-1\"} 1",
        "clockbridge_device_online{device=\"lobby \\\"b\\\"\"} 0",
        "clockbridge_device_connections{device=\"door-1\"} 1",
        "clockbridge_device_connects_total{device=\"door-1\"} 2",
        "clockbridge_device_lines_read_total{device=\"door-1\"} 51",
        "clockbridge_device_punches_read_total{device=\"door-1\"} 50",
        "clockbridge_device_malformed_lines_total{device=\"door-1\"} 1",
        "clockbridge_device_queued_punches_total{device=\"door-1\"} 49",
        "clockbridge_device_duplicate_punches_total{device=\"door-1\"} 1",
        "clockbridge_device_acks_written_total{device=\"door-1\"} 0",
        "clockbridge_device_last_line_timestamp_seconds{device=\"door-1\"} 1772413199",
        "clockbridge_device_clock_skew_seconds{device=\"door-1\"} -3",
        "clockbridge_device_log_records{device=\"door-1\"} 120",
        "clockbridge_device_watermark_records{device=\"door-1\"} 118",
        "# TYPE clockbridge_upstream_latency_seconds histogram",
        "# UNIT clockbridge_upstream_latency_seconds seconds",
        "# TYPE clockbridge_sender_requests counter",
    ] {
        assert!(l.contains(&expected), "missing {expected:?} in\n{text}");
    }
    assert_eq!(l.last(), Some(&"# EOF"));
    // a device that never sent a line has no last-line sample; no success yet: no sample either
    assert!(!text.contains("clockbridge_device_last_line_timestamp_seconds{device=\"lobby"));
    // zk figures only for zk devices
    assert!(!text.contains("clockbridge_device_clock_skew_seconds{device=\"lobby"));
    assert!(!has_sample(
        &text,
        "clockbridge_sender_last_success_timestamp_seconds"
    ));
    // every family is described once
    let mut types: Vec<&str> = l
        .iter()
        .filter(|x| x.starts_with("# TYPE "))
        .copied()
        .collect();
    let n = types.len();
    types.dedup();
    assert_eq!(types.len(), n);
}

#[test]
fn a_queue_that_did_not_answer_leaves_its_figures_out() {
    let text = render(Scrape {
        queue: None,
        ..sample()
    })
    .unwrap();
    assert!(lines(&text).contains(&"clockbridge_queue_up 0"), "{text}");
    assert!(!text.contains("clockbridge_queue_records{"), "{text}");
    assert!(
        !text.contains("clockbridge_device_queue_records{"),
        "{text}"
    );
    // the rest is still there
    assert!(
        text.contains("clockbridge_sender_requests_total 5"),
        "{text}"
    );
}

#[test]
fn an_empty_queue_still_reports_the_punch_kind_and_a_zero_age() {
    let mut s = sample();
    s.queue = Some(QueueFigures::default());
    s.sender.latency_cumulative = vec![0; LATENCY_BUCKETS_MS.len() + 1];
    s.sender.latency_sum_ms = 0;
    s.sender.heartbeat_age_secs = None;
    let text = render(s).unwrap();
    let l = lines(&text);
    assert!(l.contains(&"clockbridge_queue_records{kind=\"user_flow\",state=\"delivered\"} 0"));
    assert!(l.contains(&"clockbridge_queue_oldest_outstanding_age_seconds 0.0"));
    assert!(l.contains(&"clockbridge_upstream_latency_seconds_count 0"));
    assert!(l.contains(&"clockbridge_upstream_latency_seconds_bucket{le=\"+Inf\"} 0"));
    assert!(!has_sample(
        &text,
        "clockbridge_sender_heartbeat_age_seconds"
    ));
}

#[test]
fn heartbeat_age_is_none_before_the_first_turn() {
    assert_eq!(heartbeat_age(0), None);
    let age = heartbeat_age(now_ms() - 2_000).unwrap();
    assert!((2.0..10.0).contains(&age), "{age}");
    // a clock step backwards never gives a negative age
    assert_eq!(heartbeat_age(now_ms() + 60_000), Some(0.0));
}
