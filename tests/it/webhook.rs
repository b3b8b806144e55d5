//! The writer's alert hand-off (`WRITER_WEBHOOK_URL`) against a webhook receiver run by the
//! test: it fails calls, goes down, refuses alerts, and the writer is SIGKILLed mid-stream and
//! right after a call was accepted. Expectations come from the alerts the test produced (their
//! ids and payloads), counted by the `Idempotency-Key` the receiver saw.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
};
use chrono::{DateTime, DurationRound as _, TimeDelta, Utc};
use log_schema::{Alert, AlertRule, DeadLetter, ErrorKind};
use tokio_util::sync::CancellationToken;

use crate::support::{self, DEADLINE};

const TOKEN: &str = "s3cr3t-webhook-token";

/// One call the receiver answered.
#[derive(Debug, Clone)]
struct Call {
    key: Option<String>,
    authorization: Option<String>,
    content_type: Option<String>,
    body: Bytes,
    status: u16,
}

/// What the receiver does and saw.
#[derive(Debug, Default)]
struct Receiver {
    calls: Mutex<Vec<Call>>,
    /// Per alert id, calls still to fail with 503.
    fail_times: Mutex<BTreeMap<String, usize>>,
    /// Alert ids always answered with this status.
    always: Mutex<BTreeMap<String, u16>>,
}

impl Receiver {
    /// Whether this call of `key` is one of its failing ones (counts it).
    fn fails_now(&self, key: &str) -> bool {
        let mut fail = self.fail_times.lock().expect("fail times");
        match fail.get_mut(key) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    }

    fn accepted_keys(&self) -> BTreeSet<String> {
        self.calls
            .lock()
            .expect("calls")
            .iter()
            .filter(|c| c.status == 200)
            .filter_map(|c| c.key.clone())
            .collect()
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("calls").clone()
    }
}

async fn hook(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let key = header("idempotency-key");
    let authorization = header("authorization");
    let status = if authorization.as_deref() != Some(&format!("Bearer {TOKEN}")) {
        401
    } else if let Some(s) = key
        .as_ref()
        .and_then(|k| r.always.lock().expect("always").get(k).copied())
    {
        s
    } else if key.as_deref().is_some_and(|k| r.fails_now(k)) {
        503
    } else {
        200
    };
    r.calls.lock().expect("calls").push(Call {
        key,
        authorization,
        content_type: header("content-type"),
        body,
        status,
    });
    StatusCode::from_u16(status).expect("status")
}

/// The receiver listening on `addr` until `stop` (graceful: open connections are closed).
async fn serve(receiver: Arc<Receiver>, addr: SocketAddr, stop: CancellationToken) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .expect("bind the webhook receiver");
    let local = listener.local_addr().expect("addr");
    let app = Router::new()
        .route("/hook", post(hook))
        .with_state(receiver);
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
            .expect("serve");
    });
    local
}

/// A record to produce: key and payload.
type Keyed = (Option<Vec<u8>>, Vec<u8>);

/// `n` distinct alerts of the minute five minutes ago (source 198.18.x.y, benchmark range),
/// keyed by source IP as the stream-reader keys them: (key, payload) and the alerts.
fn alerts(n: usize) -> (Vec<Keyed>, Vec<Alert>) {
    let minute: DateTime<Utc> = Utc::now()
        .duration_trunc(TimeDelta::minutes(1))
        .expect("minute")
        - TimeDelta::minutes(5);
    let alerts: Vec<Alert> = (0..n)
        .map(|i| {
            let source = IpAddr::V4(Ipv4Addr::new(198, 18, (i / 250) as u8, (i % 250) as u8 + 1));
            let rule = AlertRule::SOURCE[i % AlertRule::SOURCE.len()];
            let stats_like = log_schema::WindowStats {
                source_ip: source,
                window_start: minute,
                window_end: minute + TimeDelta::minutes(1),
                events: 10_000,
                bytes_sent: 1,
                bytes_received: 1,
                distinct_ports: 1_000,
                distinct_destinations: 1_000,
                denied: 1_000,
                first_seen: minute,
                last_seen: minute,
                distinct_capped: false,
                sources_capped: false,
                source_geo: None,
                source_threats: Vec::new(),
                sweep: None,
            };
            Alert::evaluate(rule, &stats_like, 1).expect("over the threshold")
        })
        .collect();
    let records = alerts
        .iter()
        .map(|a| {
            let key = a.address().map(|ip| ip.to_string().into_bytes());
            (key, a.to_json())
        })
        .collect();
    (records, alerts)
}

struct Setup {
    keyspace: String,
    group: String,
    input: String,
    stats: String,
    alerts: String,
    dlq: String,
    token_file: std::path::PathBuf,
}

async fn setup(name: &str) -> Setup {
    let keyspace = support::fresh_keyspace().await;
    let [input, stats, alerts, dlq] = ["valid", "stats", "alerts", "dlq"]
        .map(|t| support::unique(&format!("it_hook_{name}_{t}")));
    support::fresh_topics(&[&input, &stats, &alerts, &dlq]).await;
    let dir = support::scratch_dir("webhook");
    let token_file = dir.join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token file");
    Setup {
        keyspace,
        group: support::unique(&format!("it_hook_{name}")),
        input,
        stats,
        alerts,
        dlq,
        token_file,
    }
}

impl Setup {
    fn env(&self, url: String) -> Vec<(&'static str, String)> {
        vec![
            ("CASSANDRA_KEYSPACE", self.keyspace.clone()),
            ("WRITER_GROUP_ID", self.group.clone()),
            ("WRITER_WEBHOOK_GROUP_ID", format!("{}_hook", self.group)),
            ("WRITER_INPUT_TOPIC", self.input.clone()),
            ("WRITER_STATS_TOPIC", self.stats.clone()),
            ("WRITER_ALERTS_TOPIC", self.alerts.clone()),
            ("WRITER_DLQ_TOPIC", self.dlq.clone()),
            ("WRITER_WEBHOOK_URL", url),
            (
                "WRITER_WEBHOOK_TOKEN_FILE",
                self.token_file.display().to_string(),
            ),
            ("KAFKA_OPTIONS", "session.timeout.ms=6000".to_owned()),
        ]
    }
}

/// Waits until the hand-off's group committed all `n` alerts of `topic`.
async fn offsets_at_the_end(group: &str, topic: &str, n: usize) {
    support::wait_until(DEADLINE, "the hand-off's offsets at the end", || {
        support::committed(group, topic).values().sum::<i64>() == n as i64
    })
    .await;
}

/// Every call's body is the alert its key names, byte for byte.
fn assert_bodies_match(calls: &[Call], alerts: &[Alert]) {
    let by_id: BTreeMap<String, &Alert> =
        alerts.iter().map(|a| (a.alert_id.to_string(), a)).collect();
    for c in calls {
        let key = c.key.as_deref().expect("every call has an Idempotency-Key");
        let want = by_id
            .get(key)
            .unwrap_or_else(|| panic!("unknown key {key}"));
        assert_eq!(
            c.body.as_ref(),
            want.to_json().as_slice(),
            "the body of {key}"
        );
        assert_eq!(c.content_type.as_deref(), Some("application/json"));
        assert_eq!(
            c.authorization.as_deref(),
            Some(format!("Bearer {TOKEN}").as_str())
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_alert_reaches_a_failing_then_down_webhook_through_kills() {
    let s = setup("kill").await;
    let (records, all) = alerts(400);
    // Every tenth alert of the first half fails 3 calls: it is being retried (0.5 + 1 + 2 s of
    // backoff) while the alerts after it are accepted and their offsets committed.
    let failing: BTreeSet<String> = all[..200]
        .iter()
        .skip(5)
        .step_by(10)
        .map(|a| a.alert_id.to_string())
        .collect();
    let receiver = Arc::new(Receiver {
        fail_times: Mutex::new(failing.iter().map(|k| (k.clone(), 3)).collect()),
        ..Default::default()
    });
    let mut stop = CancellationToken::new();
    let addr = serve(
        receiver.clone(),
        "127.0.0.1:0".parse().expect("addr"),
        stop.clone(),
    )
    .await;
    let env = s.env(format!("http://{addr}/hook"));
    let hook_group = format!("{}_hook", s.group);

    // Half of the alerts; the writer is killed once offsets were committed past some of them
    // while the failing ones are still being retried: a commit past an alert not yet
    // delivered would lose it.
    support::produce(&s.alerts, &records[..200]).await;
    let mut writer = support::spawn_service("cassandra-writer", &hook_group, &env);
    support::wait_until(DEADLINE, "offsets committed", || {
        support::committed(&hook_group, &s.alerts)
            .values()
            .sum::<i64>()
            > 0
    })
    .await;
    support::kill9(&mut writer);
    let accepted = receiver.accepted_keys();
    assert!(
        !failing.is_subset(&accepted),
        "killed while failing alerts were being retried"
    );
    assert!(
        accepted.len() >= 100,
        "killed mid-stream: {}",
        accepted.len()
    );

    // Restarted: killed right after a call was accepted.
    writer = support::spawn_service("cassandra-writer", &hook_group, &env);
    let before = receiver.accepted_keys().len();
    support::wait_until(DEADLINE, "an alert accepted after the restart", || {
        receiver.accepted_keys().len() > before
    })
    .await;
    support::kill9(&mut writer);

    // The webhook goes down; the rest of the alerts arrive meanwhile; the writer restarts.
    stop.cancel();
    support::produce(&s.alerts, &records[200..]).await;
    writer = support::spawn_service("cassandra-writer", &hook_group, &env);
    let down_at = receiver.calls().len();
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(
        receiver.calls().len(),
        down_at,
        "no call reaches a webhook that is down"
    );
    stop = CancellationToken::new();
    serve(receiver.clone(), addr, stop.clone()).await;

    let want: BTreeSet<String> = all.iter().map(|a| a.alert_id.to_string()).collect();
    support::wait_until(DEADLINE * 2, "every alert accepted", || {
        receiver.accepted_keys() == want
    })
    .await;
    offsets_at_the_end(&hook_group, &s.alerts, all.len()).await;
    assert!(support::terminate(&mut writer).success());
    stop.cancel();

    let calls = receiver.calls();
    assert_bodies_match(&calls, &all);
    assert!(
        calls.iter().filter(|c| c.status == 503).count() >= 3 * failing.len(),
        "the failing alerts' calls failed and were retried"
    );
    // At-least-once: what was delivered but not committed before a kill is called again,
    // under the same key with the same body (checked above); every key arrived.
    let delivered: BTreeSet<&str> = calls
        .iter()
        .filter(|c| c.status == 200)
        .filter_map(|c| c.key.as_deref())
        .collect();
    assert_eq!(
        delivered.len(),
        all.len(),
        "every alert delivered, none unknown"
    );
    let dead = support::read_to_end(&s.dlq, Duration::from_secs(5));
    assert!(dead.is_empty(), "no alert dead-lettered: {}", dead.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_alert_the_webhook_refuses_or_keeps_failing_is_dead_lettered_and_redriven() {
    let s = setup("refuse").await;
    let (records, all) = alerts(20);
    let refused = all[3].alert_id.to_string();
    let failing = all[11].alert_id.to_string();
    let receiver = Arc::new(Receiver::default());
    receiver
        .always
        .lock()
        .expect("always")
        .extend([(refused.clone(), 422), (failing.clone(), 500)]);
    let stop = CancellationToken::new();
    let addr = serve(
        receiver.clone(),
        "127.0.0.1:0".parse().expect("addr"),
        stop.clone(),
    )
    .await;
    let mut env = s.env(format!("http://{addr}/hook"));
    env.push(("WRITER_WEBHOOK_MAX_ATTEMPTS", "3".to_owned()));
    let hook_group = format!("{}_hook", s.group);
    support::produce(&s.alerts, &records).await;
    let mut writer = support::spawn_service("cassandra-writer", &hook_group, &env);
    support::wait_until(DEADLINE, "both undeliverable alerts dead-lettered", || {
        support::topic_size(&s.dlq) >= 2
    })
    .await;
    offsets_at_the_end(&hook_group, &s.alerts, all.len()).await;
    let calls = receiver.calls();
    assert_bodies_match(&calls, &all);
    let count = |key: &str| {
        calls
            .iter()
            .filter(|c| c.key.as_deref() == Some(key))
            .count()
    };
    assert_eq!(count(&refused), 1, "a refused alert is not called again");
    assert_eq!(count(&failing), 3, "WRITER_WEBHOOK_MAX_ATTEMPTS calls");
    let want: BTreeSet<String> = all
        .iter()
        .map(|a| a.alert_id.to_string())
        .filter(|k| *k != refused && *k != failing)
        .collect();
    assert_eq!(receiver.accepted_keys(), want);

    let letters: BTreeMap<String, DeadLetter> = support::read_to_end(&s.dlq, DEADLINE)
        .iter()
        .map(|r| {
            let d = DeadLetter::from_json(&r.payload).expect("dead letter");
            let alert = Alert::from_json(d.raw.as_bytes()).expect("the alert, whole");
            (alert.alert_id.to_string(), d)
        })
        .collect();
    assert_eq!(letters.len(), 2);
    for (key, status, calls) in [(&refused, "422", "refused"), (&failing, "500", "3 calls")] {
        let d = &letters[key.as_str()];
        assert_eq!(d.error.kind, ErrorKind::AlertUndelivered);
        assert_eq!(d.source.topic, s.alerts);
        assert!(
            d.error.message.contains(status) && d.error.message.contains(calls),
            "the reason names the answer: {}",
            d.error.message
        );
    }

    // The webhook is fixed; a redrive re-submits both to the alerts topic, and they arrive
    // under their ids.
    receiver.always.lock().expect("always").clear();
    crate::ops::ok(&[
        "dlq",
        "redrive",
        "--dlq-topic",
        &s.dlq,
        "--kind",
        "alert_undelivered",
        "--json",
    ]);
    let all_keys: BTreeSet<String> = all.iter().map(|a| a.alert_id.to_string()).collect();
    support::wait_until(DEADLINE, "the redriven alerts accepted", || {
        receiver.accepted_keys() == all_keys
    })
    .await;
    assert!(support::terminate(&mut writer).success());
    stop.cancel();
    assert_bodies_match(&receiver.calls(), &all);
}
