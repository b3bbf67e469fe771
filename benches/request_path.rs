//! The request path's pure logic, natively: host check, classification,
//! policy, token freshness and header setting (`filter::handle`), the whole
//! request as a host runs it (the engine's request and stream-end events
//! against a host that only copies), plus the pieces alone. No criterion: a plain timer loop keeps the dev build small.
//!
//! `cargo bench --bench request_path` prints a table, then one `RESULT {json}`
//! line that bench/bench.py reads. The bench profile inherits the release
//! profile (opt-level "z", LTO), the code shape the .wasm is built from; V8's
//! compiled wasm runs slower than this native code, and the host calls podward
//! makes to read and write Envoy's header map are not included.

use podward::config::{Config, PolicySource};
use podward::engine::{Engine, Start, Step};
use podward::filter::{handle, Decision};
use podward::headers::HeaderList;
use podward::host::{Level, Log, RequestHost};
use podward::identity::{build, Identity, Sources};
use podward::policy::Policy;
use podward::request_info::classify;
use podward::token::Token;
use std::collections::HashMap;
use std::hint::black_box;
use std::time::Instant;

/// The pod as the sidecar sees it: Downward API env vars and files.
struct Pod {
    env: HashMap<&'static str, &'static str>,
    files: HashMap<&'static str, &'static [u8]>,
}

impl Sources for Pod {
    fn env(&self, name: &str) -> Option<String> {
        self.env.get(name).map(|value| value.to_string())
    }
    fn file(&self, path: &str) -> Option<&[u8]> {
        self.files.get(path).copied()
    }
}

fn pod() -> Pod {
    let env = [
        ("POD_NAME", "curl-with-ambassador"),
        ("POD_NAMESPACE", "default"),
        ("POD_UID", "0b9c7e3e-5f6a-4c1d-9e2f-3a4b5c6d7e8f"),
        ("POD_IP", "10.244.0.7"),
        ("HOST_IP", "192.168.49.2"),
        ("NODE_NAME", "node-1"),
        ("SERVICE_ACCOUNT", "default"),
        ("CPU_REQUEST", "100"),
        ("CPU_LIMIT", "500"),
        ("MEMORY_REQUEST", "33554432"),
        ("MEMORY_LIMIT", "67108864"),
    ];
    let files: [(&str, &[u8]); 2] = [
        (
            "/podinfo/labels",
            b"app=\"curl-with-ambassador\"\ntier=\"front end\"",
        ),
        (
            "/podinfo/annotations",
            b"example.com/note=\"line one\\nline two\"\nowner=\"team-a\"",
        ),
    ];
    Pod {
        env: env.into_iter().collect(),
        files: files.into_iter().collect(),
    }
}

/// A projected service-account token's shape: a JWT with the kubernetes.io claims.
fn token_file() -> Vec<u8> {
    use base64::Engine;
    let b64 = |text: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text);
    let claims = r#"{"aud":["https://kubernetes.default.svc"],"exp":4102444800,"iat":1700000000,"iss":"https://kubernetes.default.svc.cluster.local","jti":"5f0c2b1e-7f1a-4a57-9a43-2f4b8d1c9e10","kubernetes.io":{"namespace":"default","node":{"name":"node-1","uid":"8e9b0f5c-0f0e-4b59-8a4b-6f5b2b1f6c70"},"pod":{"name":"curl-with-ambassador","uid":"0b9c7e3e-5f6a-4c1d-9e2f-3a4b5c6d7e8f"},"serviceaccount":{"name":"default","uid":"c7b1d2e4-3a5f-4e6d-9c8b-7a6f5e4d3c2b"},"warnafter":1700003607},"nbf":1700000000,"sub":"system:serviceaccount:default:default"}"#;
    let signature = "s".repeat(342); // an RS256 signature's length in base64url
    format!(
        "{}.{}.{signature}",
        b64(r#"{"alg":"RS256","kid":"bench"}"#),
        b64(claims)
    )
    .into_bytes()
}

/// What kubectl sends through a proxy on 127.0.0.1:8001.
fn client_headers(method: &str, path: &str) -> HeaderList {
    let pairs = [
        (":authority", "127.0.0.1:8001"),
        (":method", method),
        (":path", path),
        (":scheme", "http"),
        (
            "user-agent",
            "kubectl/v1.30.0 (linux/amd64) kubernetes/7c48c2b",
        ),
        (
            "accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        ),
        ("accept-encoding", "gzip"),
        ("x-forwarded-proto", "http"),
        ("x-request-id", "4a4e0c2e-3f5d-4bb1-9a6e-0d7f6b1c2a3e"),
    ];
    HeaderList::from_pairs(pairs.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())))
}

/// A host that hands over a copy of its header map and keeps what it is told.
struct CopyingHost<'a> {
    headers: &'a HeaderList,
    edits: usize,
    record: usize,
}

impl RequestHost for CopyingHost<'_> {
    type Waker = ();
    fn request_headers(&mut self, into: &mut HeaderList) -> bool {
        for (name, value) in self.headers.iter() {
            into.push(name, value);
        }
        true
    }
    fn remove_header(&mut self, name: &[u8]) -> bool {
        self.edits += name.len();
        true
    }
    fn add_header(&mut self, name: &[u8], value: &[u8]) -> bool {
        self.edits += name.len() + value.len();
        true
    }
    fn set_access_record(&mut self, record: &str) {
        self.record = record.len();
    }
    fn waker(&mut self) {}
}

struct Silent;

impl Log for Silent {
    fn log(&self, level: Level, message: &str) {
        black_box((level, message));
    }
}

/// An engine that has read the pod's files and serves at once.
fn ready_engine(pod: &Pod) -> Engine<u64, ()> {
    let env = pod
        .env
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
    let mut engine =
        Engine::configure(b"", env, Start::AtOnce, &Silent).expect("the default config");
    let now_ms = NOW_S * 1000;
    for read in engine.on_tick(now_ms, &Silent).read {
        let content = match read.path.as_str() {
            "/serviceaccount/token" => token_file(),
            path => pod.files.get(path).map(|c| c.to_vec()).unwrap_or_default(),
        };
        engine.on_read_done(&read, Ok(content), now_ms, &Silent);
    }
    engine
}

/// Median ns per call of `f` over `repeats` timed batches of `iterations`.
fn time<R>(iterations: u32, repeats: usize, mut f: impl FnMut() -> R) -> f64 {
    for _ in 0..iterations / 10 {
        black_box(f());
    }
    let mut samples: Vec<f64> = (0..repeats)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iterations {
                black_box(f());
            }
            start.elapsed().as_nanos() as f64 / f64::from(iterations)
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

const NOW_S: u64 = 1_700_000_100;

fn main() {
    let quick = std::env::args().any(|arg| arg == "--quick");
    let (iterations, repeats) = if quick { (20_000, 3) } else { (200_000, 7) };

    let config = Config::parse(b"").expect("the default config parses");
    let PolicySource::Inline(policy) = &config.policy else {
        unreachable!("the default policy is inline")
    };
    let token = Token::parse(&token_file()).expect("the bench token parses");
    let pod = pod();
    let (identity, omissions): (Identity, _) = build(&config, token.clone(), &pod);
    assert!(omissions.is_empty(), "{omissions:?}");
    assert_eq!(identity.headers.len(), 13);
    let forward = |method: &'static str, path: &'static str| {
        let base = client_headers(method, path);
        let (config, policy, identity): (&Config, &Policy, &Identity) =
            (&config, policy, &identity);
        let mut user_agent = Vec::new();
        move || match handle(config, policy, identity, NOW_S, &base).decision {
            Decision::Forward(rewrite) => {
                let mut edits = 0;
                rewrite.edit(&base, &mut user_agent, |edit| {
                    black_box(edit);
                    edits += 1;
                    true
                });
                edits
            }
            Decision::Reply(status) => status.to_json().len(),
        }
    };
    let list = "/api/v1/namespaces/default/pods";
    let get = "/api/v1/namespaces/default/pods/curl-with-ambassador";
    let watch = "/api/v1/namespaces/default/pods?watch=true&resourceVersion=12345&fieldSelector=metadata.name%3Dweb-0";
    let exec = "/api/v1/namespaces/default/pods/web-0/exec?command=sh&stdin=true&tty=true";

    let base = client_headers("GET", list);
    // What a host runs per request: the engine's request event (`serve`:
    // handle, the metric series, the header edits) and its stream end (the
    // request counted).
    let mut engine = ready_engine(&pod);
    let mut stream = 0;
    let mut as_served = || {
        let mut host = CopyingHost {
            headers: &base,
            edits: 0,
            record: 0,
        };
        stream += 1;
        let answer = engine.on_request_headers(stream, NOW_S * 1000, &mut host);
        assert_eq!(answer.step, Step::Forward);
        engine.on_stream_end(stream, || Some(200));
        (host.record, host.edits)
    };
    let as_served_ns = time(iterations, repeats, &mut as_served);
    let mut results: Vec<(&str, f64)> = vec![
        (
            "as served: request event + stream end, GET list pods",
            as_served_ns,
        ),
        (
            "handle: GET list pods, forwarded",
            time(iterations, repeats, forward("GET", list)),
        ),
        (
            "handle: GET one pod, forwarded",
            time(iterations, repeats, forward("GET", get)),
        ),
        (
            "handle: watch with field selector, forwarded",
            time(iterations, repeats, forward("GET", watch)),
        ),
        (
            "handle: POST pods/exec, denied (403 Status built)",
            time(iterations, repeats, forward("POST", exec)),
        ),
        (
            "baseline: copying the header list only",
            time(iterations, repeats, || base.clone().iter().count()),
        ),
        (
            "classify: GET list pods",
            time(iterations, repeats, || {
                classify("GET", black_box(list)).is_ok()
            }),
        ),
        (
            "classify + policy: GET list pods",
            time(iterations, repeats, || {
                let request = classify("GET", black_box(list)).expect("classifies");
                policy.decide(&request, "default").effect
            }),
        ),
    ];
    results.push((
        "rotation: token parse + identity rebuild",
        time(iterations / 10, repeats, || {
            let token = Token::parse(black_box(&token_file())).expect("parses");
            build(&config, token, &pod).0.headers.len()
        }),
    ));

    println!("podward request path, native, {iterations} iterations x {repeats} (median):");
    for (name, ns) in &results {
        println!("  {ns:>9.0} ns  {name}");
    }
    let json: Vec<String> = results
        .iter()
        .map(|(name, ns)| format!("{{\"name\": \"{name}\", \"ns\": {ns:.1}}}"))
        .collect();
    println!("RESULT [{}]", json.join(", "));
}
