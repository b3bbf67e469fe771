//! Event scripts: a mock host drives the engine through the lifecycle (the
//! first token arriving while requests wait, give-up, refresh failures, a
//! policy swap mid-burst, a stream ending while it waits, a reload), and
//! each script checks what every request got and what was counted.

use super::*;
use crate::metrics::Value;
use core::cell::RefCell;

/// The host's log, kept.
#[derive(Default)]
struct Logged(RefCell<Vec<(Level, String)>>);

impl Log for Logged {
    fn log(&self, level: Level, message: &str) {
        self.0.borrow_mut().push((level, message.to_string()));
    }
}

/// One request as the mock host holds it.
struct MockRequest {
    id: u32,
    headers: HeaderList,
    records: Vec<String>,
    unreadable: bool,
}

impl RequestHost for MockRequest {
    type Waker = u32;
    fn request_headers(&mut self, into: &mut HeaderList) -> bool {
        for (name, value) in self.headers.iter() {
            into.push(name, value);
        }
        !self.unreadable
    }
    fn remove_header(&mut self, name: &[u8]) -> bool {
        let kept = self.headers.iter().filter(|(n, _)| *n != name);
        self.headers = HeaderList::from_pairs(kept);
        true
    }
    fn add_header(&mut self, name: &[u8], value: &[u8]) -> bool {
        self.headers.push(name, value);
        true
    }
    fn set_access_record(&mut self, record: &str) {
        self.records.push(record.to_string());
    }
    fn waker(&mut self) -> u32 {
        self.id
    }
}

/// A pod, its files, the requests in flight and the clock.
struct Script {
    engine: Engine<u32, u32>,
    files: Vec<(&'static str, Vec<u8>)>,
    in_flight: Vec<FileRead>,
    requests: Vec<MockRequest>,
    /// What each woken request got: (stream, step).
    woken: Vec<(u32, Step)>,
    log: Logged,
    metrics: Vec<(String, Value)>,
    now_ms: u64,
}

const POD_FILES: &[(&str, &[u8])] = &[
    ("/serviceaccount/token", b"token-1"),
    ("/podinfo/labels", b"app=\"web\""),
];

impl Script {
    fn new(config: &str) -> Script {
        let log = Logged::default();
        let env = [("POD_NAME", "web-0"), ("POD_NAMESPACE", "team-a")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .to_vec();
        let engine = Engine::configure(config.as_bytes(), env, Start::OnFirstRequest, &log)
            .expect("a valid config");
        Script {
            engine,
            files: Vec::new(),
            in_flight: Vec::new(),
            requests: Vec::new(),
            woken: Vec::new(),
            log,
            metrics: Vec::new(),
            now_ms: 0,
        }
    }

    fn write(&mut self, path: &'static str, content: &[u8]) {
        self.files.retain(|(p, _)| *p != path);
        self.files.push((path, content.to_vec()));
    }

    fn write_pod_files(&mut self) {
        for (path, content) in POD_FILES {
            self.write(path, content);
        }
    }

    /// A request arrives; the engine's answer.
    fn arrive(&mut self, id: u32, method: &str, path: &str) -> Step {
        let pairs: [(&[u8], &[u8]); 3] = [
            (b":method", method.as_bytes()),
            (b":path", path.as_bytes()),
            (b":authority", b"localhost"),
        ];
        let mut request = MockRequest {
            id,
            headers: HeaderList::from_pairs(pairs),
            records: Vec::new(),
            unreadable: false,
        };
        let answer = self
            .engine
            .on_request_headers(id, self.now_ms, &mut request);
        self.in_flight.extend(answer.read);
        self.requests.push(request);
        answer.step
    }

    fn wake(&mut self, ids: Vec<u32>) {
        for id in ids {
            let Some(request) = self.requests.iter_mut().find(|r| r.id == id) else {
                continue;
            };
            let step = self.engine.on_wake(id, self.now_ms, request);
            self.woken.push((id, step));
        }
    }

    /// Every read in flight finishes with what the files hold now, and the
    /// host ticks as the engine asks until every request it released is woken.
    fn finish_reads(&mut self) {
        self.complete_reads();
        self.settle();
    }

    /// Every read in flight finishes with what the files hold now; nothing
    /// is woken yet.
    fn complete_reads(&mut self) {
        for read in core::mem::take(&mut self.in_flight) {
            let result = self
                .files
                .iter()
                .find(|(path, _)| *path == read.path)
                .map(|(_, content)| content.clone())
                .ok_or_else(|| "HTTP 404".to_string());
            self.engine
                .on_read_done(&read, result, self.now_ms, &self.log);
        }
    }

    /// Ticks at the short period for as long as the engine asks for it;
    /// returns how many requests each tick woke.
    fn settle(&mut self) -> Vec<usize> {
        let mut batches = Vec::new();
        while self.engine.tick_interval_ms() == BATCH_TICK_MS {
            let before = self.woken.len();
            self.tick(self.now_ms + BATCH_TICK_MS);
            batches.push(self.woken.len() - before);
        }
        batches
    }

    fn tick(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
        let tick = self.engine.on_tick(now_ms, &self.log);
        self.in_flight.extend(tick.read);
        self.wake(tick.wake);
    }

    fn end(&mut self, id: u32, code: u64) {
        self.engine.on_stream_end(id, || Some(code));
    }

    /// The sum of what was counted under a tagged name so far.
    fn counted(&mut self, name: &str) -> u64 {
        let metrics = &mut self.metrics;
        self.engine
            .flush_metrics(|sample| metrics.push((sample.tagged_name(), sample.value)));
        metrics
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, value)| match value {
                Value::Add(n) => *n,
                Value::Set(_) => 0,
            })
            .sum()
    }

    fn request(&self, id: u32) -> &MockRequest {
        self.requests.iter().find(|r| r.id == id).expect("known")
    }

    fn woken(&self, id: u32) -> Vec<&Step> {
        self.woken
            .iter()
            .filter(|(woken, _)| *woken == id)
            .map(|(_, step)| step)
            .collect()
    }
}

const PODS: &str = "/api/v1/namespaces/team-a/pods";
const EXEC: &str = "/api/v1/namespaces/team-a/pods/web-0/exec";
const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/team-a/deployments";
const NO_TOKEN: &str = "reason=.=no_token;.;podward_local_replies_total";

fn status_of(step: &Step) -> (u32, serde_json::Value) {
    match step {
        Step::Reply(reply) => (reply.code, serde_json::from_str(&reply.body).unwrap()),
        other => panic!("expected a reply, got {other:?}"),
    }
}

#[test]
fn the_first_token_releases_every_waiting_request() {
    let mut script = Script::new("");
    assert_eq!(script.arrive(1, "GET", PODS), Step::Wait);
    let first_reads: Vec<&str> = script.in_flight.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        first_reads,
        [
            "/serviceaccount/token",
            "/podinfo/labels",
            "/podinfo/annotations"
        ],
        "the first request starts the reading"
    );
    assert_eq!(script.arrive(2, "GET", PODS), Step::Wait);
    assert_eq!(script.in_flight.len(), 3, "reads start once");
    script.write_pod_files();
    script.finish_reads();
    for id in [1, 2] {
        assert_eq!(script.woken(id), [&Step::Forward], "request {id}");
        assert_eq!(
            script.request(id).headers.get_str("authorization"),
            Some("Bearer token-1")
        );
    }
    assert_eq!(script.arrive(3, "GET", PODS), Step::Forward);
    assert_eq!(script.counted("podward_token_refreshes_total"), 1);
}

#[test]
fn a_request_given_up_is_answered_with_the_status_it_was_counted_under() {
    let mut script = Script::new(r#"{"startup_wait_ms": 500}"#);
    script.arrive(1, "GET", PODS);
    script.write("/podinfo/labels", b"");
    script.finish_reads();
    script.tick(499);
    assert!(script.woken.is_empty());
    script.tick(500);
    // The token arrives after the give-up but before the host acts on it: the
    // request counted as no_token must not be served.
    script.write_pod_files();
    script.finish_reads();
    let steps = script.woken(1);
    assert_eq!(steps.len(), 1);
    let (code, body) = status_of(steps[0]);
    assert_eq!(code, 503);
    assert_eq!(
        body["message"],
        "podward has no service-account token to send: /serviceaccount/token: HTTP 404"
    );
    let Step::Reply(reply) = steps[0] else {
        unreachable!()
    };
    assert!(reply
        .headers
        .contains(&(&b"retry-after"[..], b"1".to_vec())));
    assert_eq!(script.request(1).headers.get("authorization"), None);
    assert_eq!(script.counted(NO_TOKEN), 1);
    assert_eq!(script.arrive(2, "GET", PODS), Step::Forward);
}

#[test]
fn refresh_failures_keep_the_last_good_token() {
    let mut script = Script::new(r#"{"refresh_interval_ms": 10}"#);
    script.write_pod_files();
    script.arrive(1, "GET", PODS);
    script.finish_reads();
    script.write("/serviceaccount/token", b"two words");
    script.tick(1000);
    script.finish_reads();
    script
        .files
        .retain(|(path, _)| *path != "/serviceaccount/token");
    script.tick(2000);
    script.finish_reads();
    assert_eq!(script.arrive(2, "GET", PODS), Step::Forward);
    assert_eq!(
        script.request(2).headers.get_str("authorization"),
        Some("Bearer token-1")
    );
    assert_eq!(script.counted("podward_token_refresh_failures_total"), 2);
    let warnings = script.log.0.borrow();
    assert!(warnings
        .iter()
        .any(|(level, m)| *level == Level::Warn && m.contains("keeping the last good content")));
    assert!(!warnings.iter().any(|(_, m)| m.contains("two words")));
}

#[test]
fn a_policy_swap_mid_burst_applies_from_the_next_request() {
    let mut script =
        Script::new(r#"{"policy_file": "/policy/policy.json", "refresh_interval_ms": 10}"#);
    script.write_pod_files();
    script.write("/policy/policy.json", br#"{"preset": "read-only"}"#);
    script.arrive(1, "GET", PODS);
    script.arrive(2, "POST", DEPLOYMENTS);
    script.finish_reads();
    assert_eq!(script.woken(1), [&Step::Forward]);
    assert_eq!(status_of(script.woken(2)[0]).0, 403);
    assert_eq!(status_of(&script.arrive(3, "POST", DEPLOYMENTS)).0, 403);
    script.write("/policy/policy.json", br#"{"preset": "kubectl-proxy"}"#);
    script.tick(1000);
    script.finish_reads();
    assert_eq!(script.arrive(4, "POST", DEPLOYMENTS), Step::Forward);
    assert_eq!(status_of(&script.arrive(5, "POST", EXEC)).0, 403);
    assert_eq!(script.counted("podward_policy_reloads_total"), 2);
}

#[test]
fn a_request_that_ends_while_it_waits_is_forgotten() {
    let mut script = Script::new(r#"{"startup_wait_ms": 500}"#);
    script.arrive(1, "GET", PODS);
    script.arrive(2, "GET", PODS);
    script.end(1, 0);
    script.write_pod_files();
    script.finish_reads();
    assert!(script.woken(1).is_empty());
    assert_eq!(script.woken(2), [&Step::Forward]);
    script.tick(10_000);
    assert_eq!(script.woken.len(), 1, "nothing is given up");
    assert_eq!(script.counted(NO_TOKEN), 0);
}

#[test]
fn a_request_is_woken_once_whichever_comes_first() {
    let mut script = Script::new(r#"{"startup_wait_ms": 500}"#);
    script.arrive(1, "GET", PODS);
    script.write_pod_files();
    // Released by the token, but its batch comes at the next tick, after
    // the deadline has passed.
    script.complete_reads();
    assert!(script.woken.is_empty());
    assert_eq!(script.engine.tick_interval_ms(), BATCH_TICK_MS);
    script.tick(600);
    assert_eq!(
        script.woken(1),
        [&Step::Forward],
        "not given up once released"
    );
    // A wake the host reports again (the native build's scheduler) finds
    // nothing to do.
    script.wake(vec![1]);
    assert_eq!(script.woken(1), [&Step::Forward, &Step::Wait]);
    assert_eq!(script.counted(NO_TOKEN), 0);
    assert_ne!(script.engine.tick_interval_ms(), BATCH_TICK_MS);
}

/// A crowd of `size` requests, alternately allowed and denied, held for the
/// first token.
fn held_crowd(config: &str, size: u32) -> Script {
    let mut script = Script::new(config);
    for id in 1..=size {
        let path = if id % 2 == 0 { EXEC } else { PODS };
        let method = if id % 2 == 0 { "POST" } else { "GET" };
        assert_eq!(script.arrive(id, method, path), Step::Wait);
    }
    script
}

#[test]
fn a_crowd_released_by_the_token_is_woken_a_batch_per_tick() {
    let mut script = held_crowd("", 2000);
    script.write_pod_files();
    script.complete_reads();
    let batches = script.settle();
    assert_eq!(batches.len(), 2000 / WAKE_BATCH + 1);
    assert!(
        batches.iter().all(|woken| *woken <= WAKE_BATCH),
        "{batches:?}"
    );
    for id in 1..=2000 {
        let steps = script.woken(id);
        match id % 2 {
            0 => assert_eq!(status_of(steps[0]).0, 403, "request {id}"),
            _ => assert_eq!(steps, [&Step::Forward], "request {id}"),
        }
        script.end(id, if id % 2 == 0 { 403 } else { 200 });
    }
    assert_eq!(
        script.counted("reason=.=policy_denied;.;podward_local_replies_total"),
        1000
    );
    assert_eq!(
        script.counted(
            "verb=.=list;.;group=.=core;.;resource=.=pods;.;code=.=2xx;.;podward_requests_total"
        ),
        1000
    );
    assert_eq!(
        script.engine.tick_interval_ms(),
        100,
        "back to the usual period"
    );
}

#[test]
fn a_crowd_given_up_is_answered_a_batch_per_tick() {
    let mut script = held_crowd(r#"{"startup_wait_ms": 500}"#, 2000);
    script.complete_reads();
    script.tick(500);
    assert_eq!(script.woken.len(), WAKE_BATCH);
    let batches = script.settle();
    assert!(
        batches.iter().all(|woken| *woken <= WAKE_BATCH),
        "{batches:?}"
    );
    assert_eq!(script.woken.len(), 2000);
    assert!(script
        .woken
        .iter()
        .all(|(_, step)| status_of(step).0 == 503));
    // Counted when given up, not when woken.
    assert_eq!(script.counted(NO_TOKEN), 2000);
}

#[test]
fn a_served_request_is_counted_even_if_it_ends_inside_the_reply() {
    let mut script = Script::new("");
    script.arrive(1, "POST", EXEC);
    script.write_pod_files();
    script.finish_reads();
    assert_eq!(status_of(script.woken(1)[0]).0, 403);
    // The host's reply completes the stream at once (Envoy does, for a held
    // request answered locally), and reports the end twice.
    script.end(1, 403);
    script.end(1, 403);
    assert_eq!(
        script.counted(
            "verb=.=create;.;group=.=core;.;resource=.=pods/exec;.;code=.=4xx;.;podward_requests_total"
        ),
        1
    );
    assert_eq!(
        script.counted("reason=.=policy_denied;.;podward_local_replies_total"),
        1
    );
}

#[test]
fn a_reload_keeps_held_requests_and_reads_again_under_the_new_config() {
    let mut script = Script::new("");
    script.arrive(1, "POST", DEPLOYMENTS);
    assert!(!script
        .engine
        .reconfigure(br#"{"startup_wait_ms": -1}"#, &script.log));
    assert!(script
        .log
        .0
        .borrow()
        .iter()
        .any(|(level, m)| *level == Level::Error
            && m.contains("invalid podward config")
            && m.contains("startup_wait_ms")));
    assert!(script
        .engine
        .reconfigure(br#"{"policy": {"preset": "read-only"}}"#, &script.log));
    script.write_pod_files();
    // Reads started under the old configuration are dropped.
    script.finish_reads();
    assert!(script.woken.is_empty());
    script.tick(100);
    assert!(!script.in_flight.is_empty(), "read again at once");
    script.finish_reads();
    assert_eq!(status_of(script.woken(1)[0]).0, 403, "the new policy");
}

#[test]
fn every_series_the_config_tells_is_exported_before_anything_happens() {
    let mut script = Script::new("");
    let gauge = script.counted("podward_token_expiry_seconds");
    assert_eq!(gauge, 0);
    assert!(script
        .metrics
        .iter()
        .any(|(name, value)| name == "podward_token_expiry_seconds" && *value == Value::Set(0)));
    assert!(script
        .metrics
        .iter()
        .any(|(name, value)| name == NO_TOKEN && *value == Value::Add(0)));
}

#[test]
fn a_probe_starts_the_reading_and_tells_what_is_missing() {
    let mut script = Script::new("");
    let (code, body) = status_of(&script.arrive(1, "GET", "/podward/ready"));
    assert_eq!(code, 503);
    assert_eq!(
        body["message"],
        "podward has no service-account token to send: the file source has not answered yet"
    );
    assert_eq!(script.in_flight.len(), 3);
    script.write_pod_files();
    script.finish_reads();
    assert_eq!(status_of(&script.arrive(2, "GET", "/podward/ready")).0, 200);
    script.end(2, 200);
    assert!(
        !script.engine.series.has_pending(),
        "probes are not API requests"
    );
}

#[test]
fn a_host_that_will_not_hand_over_the_headers_gets_a_503() {
    let mut script = Script::new("");
    let mut request = MockRequest {
        id: 1,
        headers: HeaderList::default(),
        records: Vec::new(),
        unreadable: true,
    };
    let answer = script.engine.on_request_headers(1, 0, &mut request);
    assert_eq!(status_of(&answer.step).0, 503);
    assert_eq!(
        script.counted("reason=.=host_error;.;podward_local_replies_total"),
        1
    );
}

#[test]
fn refusals_are_recorded_for_the_access_log() {
    let mut script = Script::new("");
    script.write_pod_files();
    script.arrive(1, "GET", PODS);
    script.finish_reads();
    script.arrive(2, "POST", EXEC);
    assert!(script.request(1).records.is_empty());
    assert!(script.request(2).records[0].contains("policy_denied"));
}

#[test]
fn a_policy_file_in_dry_run_forwards_counts_and_is_enforced_by_deleting_dry_run() {
    let mut script =
        Script::new(r#"{"policy_file": "/policy/policy.json", "refresh_interval_ms": 10}"#);
    script.write_pod_files();
    let rules = r#""default_action": "deny", "rules": [
        {"name": "read-pods", "action": "allow", "verbs": ["list"], "apiGroups": [""],
         "resources": ["pods"], "namespaces": ["$self"]}]"#;
    let policy = |dry_run: &str| format!("{{{dry_run}{rules}}}");
    script.write(
        "/policy/policy.json",
        policy(r#""dryRun": true, "#).as_bytes(),
    );
    script.arrive(1, "GET", PODS);
    script.finish_reads();
    let dry_run_denied = "rule=.=rules/default;.;podward_policy_dry_run_denied_total";
    // Declared at zero as soon as the policy file is taken.
    assert_eq!(script.counted(dry_run_denied), 0);
    assert!(script
        .metrics
        .iter()
        .any(|(name, value)| name == dry_run_denied && *value == Value::Add(0)));
    assert_eq!(script.woken(1), [&Step::Forward]);
    assert_eq!(script.arrive(2, "POST", DEPLOYMENTS), Step::Forward);
    assert!(script.request(2).records[0].contains(r#""dry_run_rule":"rules/default""#));
    assert_eq!(script.counted(dry_run_denied), 1);
    // The same policy without `dryRun`: enforced.
    script.write("/policy/policy.json", policy("").as_bytes());
    script.tick(1000);
    script.finish_reads();
    assert_eq!(script.arrive(3, "GET", PODS), Step::Forward);
    assert_eq!(status_of(&script.arrive(4, "POST", DEPLOYMENTS)).0, 403);
    assert_eq!(
        script.counted("rule=.=rules/default;.;podward_policy_denied_total"),
        1
    );
}

#[test]
fn counts_are_flushed_when_some_wait_and_at_most_once_an_interval() {
    let mut script = Script::new("");
    // The series the configuration tells wait to be exported at zero.
    assert!(script.engine.flush_due(10_000));
    script.counted(NO_TOKEN);
    assert!(
        !script.engine.flush_due(10_000 + FLUSH_INTERVAL_MS),
        "none waiting"
    );
    script.write_pod_files();
    assert_eq!(script.arrive(1, "GET", PODS), Step::Wait);
    script.finish_reads();
    assert_eq!(script.woken(1), [&Step::Forward]);
    script.end(1, 200);
    script.counted(NO_TOKEN);
    assert_eq!(script.arrive(2, "GET", PODS), Step::Forward);
    script.end(2, 200);
    let now = 10_000 + FLUSH_INTERVAL_MS;
    assert!(script.engine.flush_due(now), "a request counted");
    assert!(!script.engine.flush_due(now + 1), "told once");
    assert!(!script.engine.flush_due(now + FLUSH_INTERVAL_MS - 1));
    assert!(script.engine.flush_due(now + FLUSH_INTERVAL_MS));
}
