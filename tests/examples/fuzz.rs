//! A long-running fuzzer for every decoder that reads bytes from outside,
//! recorded in BENCHMARKS.md:
//!
//!     cargo run -p coditect-tests --example fuzz -- TARGET --iterations N [--seed S]
//!
//! TARGET is one of `codec` (the node protocol's messages as the codec
//! reads them), `wire` (a request frame body, then its payload), `toml` and
//! `markdown` (missions, parsed and validated), `tree` (workspace tree
//! manifests), `http-auth` (the API guard over random headers),
//! `join-token` (token text), `http` (request bodies POSTed to a live
//! `coditect node --open` on 127.0.0.1: missions as TOML and markdown, the
//! JSON of `/api/blobs/missing`, `/api/tokens` and `/api/plan`, raw blobs;
//! any 5xx but 503 is a finding, and so is the node not answering), or
//! `all` (every in-process target). Inputs are random bytes and
//! mutations (bit flips, inserted, deleted and repeated runs, splices,
//! truncations) of valid encodings. Each input runs under `catch_unwind`
//! and a clock: a panic, or an input taking longer than 2 s, stops the run
//! with exit 1 and writes the input to `fuzz-<target>-<iteration>.bin`.
//! At the end it prints iterations, speed, the slowest input and the peak
//! RSS (`VmHWM`), which shows that no decoder allocated past its caps.
//!
//! No nightly and no cargo-fuzz: plain `std` and a seeded generator, so a
//! run is reproducible from its seed.
#![allow(clippy::disallowed_methods)] // a fuzzer measures wall time on purpose

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use coditect_memory::codec;
use coditect_node::messages::{
    AdmissionAction, LeaderAdvert, NodeAdvert, NodeRequest, NodeResponse,
};

/// The longest an input may take before it counts as a hang.
const HANG: Duration = Duration::from_secs(2);
/// The same over HTTP, where the node may be busy with earlier inputs.
const HTTP_HANG: Duration = Duration::from_secs(10);

/// Where the `http` target sends an input (its first byte picks one).
const HTTP_ENDPOINTS: [(&str, Option<&str>); 6] = [
    ("/api/missions", Some("application/toml")),
    ("/api/missions", Some("text/markdown")),
    ("/api/blobs/missing", Some("application/json")),
    ("/api/tokens", Some("application/json")),
    ("/api/plan", Some("application/json")),
    ("/api/blobs", None),
];

/// The node the `http` target talks to (started on first use) and its data dir.
static HTTP_NODE: std::sync::Mutex<Option<(tempfile::TempDir, coditect_tests::NodeProcess)>> =
    std::sync::Mutex::new(None);

/// Runs `f` with the `http` target's node, starting it first if need be.
fn with_http_node<T>(f: impl FnOnce(&coditect_tests::NodeProcess) -> T) -> T {
    // A finding panics while the lock is held; the node is still fine.
    let mut held = HTTP_NODE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let (_, node) = held.get_or_insert_with(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let flags: Vec<String> = ["--http-rate-limit", "0", "--heartbeat-ms", "100"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let node = coditect_tests::NodeProcess::start(&dir.path().join("n0"), "n0", &flags);
        coditect_tests::wait_for(Duration::from_secs(60), "the fuzzed node to lead", || {
            node.status()?["leader"].as_str().map(|_| ())
        });
        (dir, node)
    });
    f(node)
}

/// Stops the `http` target's node and removes its data dir.
fn stop_http_node() {
    let mut held = HTTP_NODE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    held.take();
}

/// A memory field of `/proc/PROCESS/status` (a pid, or `self`), MiB.
fn memory_mib(process: &str, field: &str) -> u64 {
    coditect_tests::proc_memory_kib(process, field) / 1024
}

/// splitmix64: small, fast, seeded.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let len = self.below(max + 1);
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// Bytes that decoders care about: length prefixes at their extremes,
/// varint markers, markdown and TOML punctuation.
const INTERESTING: &[&[u8]] = &[
    &[0xff; 8],
    &[0xfb, 0xff, 0xff],
    &[0xfc, 0xff, 0xff, 0xff, 0xff],
    &[0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
    &[0],
    b"\n- [ ] ",
    b"[[task]]\n",
    b"needs = [\"",
    b"\"\"\"",
    b"    ",
    b"**",
    b"`",
    b"\r\n",
    b"[P]",
    b"_Requirements: ",
];

fn mutate(rng: &mut Rng, corpus: &[Vec<u8>]) -> Vec<u8> {
    if corpus.is_empty() || rng.below(8) == 0 {
        return rng.bytes(4096);
    }
    let mut input = corpus[rng.below(corpus.len())].clone();
    for _ in 0..1 + rng.below(8) {
        match rng.below(7) {
            0 if !input.is_empty() => {
                let at = rng.below(input.len());
                input[at] ^= 1 << rng.below(8);
            }
            1 => {
                let at = rng.below(input.len() + 1);
                let run = INTERESTING[rng.below(INTERESTING.len())];
                input.splice(at..at, run.iter().copied());
            }
            2 if !input.is_empty() => {
                let at = rng.below(input.len());
                let len = rng.below(input.len() - at + 1);
                input.drain(at..at + len);
            }
            3 if !input.is_empty() => {
                let at = rng.below(input.len());
                let len = rng.below((input.len() - at).min(64) + 1);
                let run: Vec<u8> = input[at..at + len].to_vec();
                for _ in 0..rng.below(16) {
                    input.splice(at..at, run.iter().copied());
                }
            }
            4 => {
                let other = &corpus[rng.below(corpus.len())];
                let from = rng.below(other.len() + 1);
                let at = rng.below(input.len() + 1);
                input.truncate(at);
                input.extend_from_slice(&other[from..]);
            }
            5 => input.truncate(rng.below(input.len() + 1)),
            _ if !input.is_empty() => {
                let at = rng.below(input.len());
                input[at] = rng.next() as u8;
            }
            _ => {}
        }
    }
    input
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn fixtures(dir: &str) -> Vec<Vec<u8>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut files: Vec<_> = std::fs::read_dir(&root)
        .unwrap_or_else(|error| panic!("read {}: {error}", root.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .collect();
    files.sort();
    files
        .iter()
        .filter_map(|path| std::fs::read(path).ok())
        .collect()
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    match target {
        "codec" | "wire" => {
            let messages = [
                codec::encode(&NodeRequest::AdmitChallenge).unwrap(),
                codec::encode(&NodeRequest::AdmitProve {
                    token: "0123456789abcdef".into(),
                    challenge: vec![7; 32],
                    proof: vec![9; 32],
                })
                .unwrap(),
                codec::encode(&NodeRequest::Admission(AdmissionAction::CreateToken {
                    ttl_ms: Some(3_600_000),
                    uses: Some(3),
                }))
                .unwrap(),
                codec::encode(&NodeResponse::Forbidden("not_admitted".into())).unwrap(),
                codec::encode(&NodeResponse::Challenge(vec![1; 32])).unwrap(),
                codec::encode(&NodeResponse::Ack).unwrap(),
            ];
            if target == "wire" {
                messages
                    .into_iter()
                    .map(|payload| {
                        coditect_gossip::wire::request_body(&coditect_gossip::wire::WireRequest {
                            budget_ms: 3_000,
                            payload,
                        })
                    })
                    .collect()
            } else {
                messages.to_vec()
            }
        }
        "toml" => vec![
            b"name = \"m\"\n[[task]]\nid = \"a\"\nmodule = \"builtin:noop\"\n[[task]]\nid = \"b\"\nmodule = \"builtin:echo\"\nneeds = [\"a\"]\ninput = \"hi\"\n[task.limits]\nfuel = 1000\ntimeout_ms = 500\n[task.expect]\nfiles = [\"out.txt\"]\n".to_vec(),
            b"name = \"w\"\nworkspace = \"sha256:0000000000000000000000000000000000000000000000000000000000000000\"\n[[task]]\nid = \"t\"\nmodule = \"builtin:python\"\nargs = [\"-c\", \"print(1)\"]\nrequires = [\"llm\"]\npriority = \"high\"\n".to_vec(),
        ],
        "markdown" => {
            let mut all = fixtures("../node/tests/fixtures/tasklists");
            all.extend(fixtures("../node/tests/fixtures/missions"));
            all
        }
        "tree" => {
            let mut tree = coditect_memory::tree::Tree::new();
            for (i, path) in ["src/main.py", "src/lib/util.py", "README.md", "tests/test_a.py"]
                .iter()
                .enumerate()
            {
                let entry = coditect_memory::tree::Entry {
                    digest: coditect_memory::Digest::of(path.as_bytes()),
                    size: i as u64 * 1000,
                    exec: i == 2,
                };
                tree.insert(path, entry).unwrap();
            }
            vec![tree.encode()]
        }
        "http-auth" => vec![b"127.0.0.1:7070\0http://127.0.0.1:7070\0Bearer 0123456789abcdef0123456789abcdef".to_vec()],
        "join-token" => vec![coditect_node::admission::JoinToken::derive(&[1; 32], 1, "0123456789abcdef")
            .to_text()
            .into_bytes()],
        "http" => {
            // First byte: the endpoint; the rest: its body.
            let with = |endpoint: u8, body: &[u8]| {
                let mut input = vec![endpoint];
                input.extend_from_slice(body);
                input
            };
            let mut all: Vec<Vec<u8>> = corpus("toml").iter().map(|body| with(0, body)).collect();
            all.extend(corpus("markdown").iter().take(8).map(|body| with(1, body)));
            all.push(with(
                2,
                format!("{{\"digests\": [\"sha256:{}\", \"sha256:{}\"]}}", "0".repeat(64), "a".repeat(64))
                    .as_bytes(),
            ));
            all.push(with(3, br#"{"ttl_secs": 3600, "uses": 2}"#));
            all.push(with(4, br#"{"goal": "Fix the crash in fib(0)", "files": ["src/fib.py"]}"#));
            all.push(with(5, b"some bytes to keep"));
            all
        }
        other => panic!("unknown target {other}"),
    }
}

/// Feeds one input to `target`'s decoders. Results are ignored: only a
/// panic, a hang or a runaway allocation is a finding.
fn run(target: &str, input: &[u8]) {
    match target {
        "codec" => {
            let _ = codec::decode::<NodeRequest>(input);
            let _ = codec::decode::<NodeResponse>(input);
            let _ = codec::decode::<NodeAdvert>(input);
            let _ = codec::decode::<LeaderAdvert>(input);
        }
        "wire" => {
            if let Ok(request) = coditect_gossip::wire::parse_request_body(input.to_vec()) {
                let _ = codec::decode::<NodeRequest>(&request.payload);
            }
        }
        "toml" => {
            if let Ok(spec) = coditect_node::mission::parse_toml(&text(input)) {
                let _ = coditect_node::mission::validate(&spec, None);
            }
        }
        "markdown" => {
            let agents = coditect_node::mission::AgentConfig::default();
            if let Ok(spec) = coditect_node::mission::parse_markdown(&text(input), &agents) {
                let _ = coditect_node::mission::validate(&spec, None);
            }
        }
        "tree" => {
            if let Ok(tree) = coditect_memory::tree::Tree::decode(input) {
                // A decoded tree must encode back to a tree that decodes.
                let again = coditect_memory::tree::Tree::decode(&tree.encode())
                    .expect("a decoded tree re-encodes");
                assert_eq!(again, tree);
            }
        }
        "http-auth" => {
            let fields = text(input);
            let mut parts = fields.split('\0');
            let facts = coditect_node::http_auth::RequestFacts {
                path: "/api/missions",
                host: parts.next(),
                origin: parts.next(),
                fetch_site: None,
                authorization: parts.next(),
            };
            let access = coditect_node::admission::ApiAccess::Token(
                "0123456789abcdef0123456789abcdef".into(),
            );
            let _ = coditect_node::http_auth::decide(
                &facts,
                &access,
                &coditect_node::http_auth::HttpPolicy::default(),
            );
        }
        "join-token" => {
            if let Ok(token) = coditect_node::admission::JoinToken::parse(&text(input)) {
                let again = coditect_node::admission::JoinToken::parse(&token.to_text())
                    .expect("a parsed token's text parses");
                assert_eq!(again.to_text(), token.to_text());
            }
        }
        "http" => {
            let Some((&pick, body)) = input.split_first() else {
                return;
            };
            // FUZZ_HTTP_ENDPOINT=N sends every input to endpoint N.
            let pick = std::env::var("FUZZ_HTTP_ENDPOINT")
                .ok()
                .and_then(|n| n.parse::<u8>().ok())
                .unwrap_or(pick);
            let (path, content_type) = HTTP_ENDPOINTS[pick as usize % HTTP_ENDPOINTS.len()];
            let headers: Vec<(&str, &str)> = content_type
                .map(|t| ("Content-Type", t))
                .into_iter()
                .collect();
            let (code, answer) = with_http_node(|node| {
                coditect_tests::http_exchange_with("POST", &node.http, path, &headers, body)
            })
            .unwrap_or_else(|error| panic!("POST {path}: the node did not answer: {error}"));
            assert!(
                code < 500 || code == 503,
                "POST {path} answered {code}: {}",
                String::from_utf8_lossy(&answer)
            );
        }
        other => panic!("unknown target {other}"),
    }
}

fn peak_rss_mib() -> u64 {
    memory_mib("self", "VmHWM")
}

fn fuzz(target: &str, iterations: u64, seed: u64) -> bool {
    let corpus = corpus(target);
    for input in &corpus {
        run(target, input);
    }
    let mut rng = Rng(seed);
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut last_report = Instant::now();
    for iteration in 0..iterations {
        let input = mutate(&mut rng, &corpus);
        let began = Instant::now();
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| run(target, &input)));
        let took = began.elapsed();
        slowest = slowest.max(took);
        let hang = if target == "http" { HTTP_HANG } else { HANG };
        let finding = match outcome {
            Err(_) => Some("panicked"),
            Ok(()) if took > hang => Some("took too long"),
            Ok(()) => None,
        };
        if let Some(what) = finding {
            if target == "http" {
                stop_http_node();
            }
            let file = format!("fuzz-{target}-{iteration}.bin");
            let _ = std::fs::write(&file, &input);
            eprintln!("{target}: input {iteration} {what} (after {took:?}); saved to {file}");
            return false;
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            if target == "http" {
                let rss = with_http_node(|node| memory_mib(&node.pid().to_string(), "VmRSS"));
                eprintln!("{target}: {iteration} of {iterations}... (node RSS {rss} MiB)");
            } else {
                eprintln!("{target}: {iteration} of {iterations}...");
            }
            last_report = Instant::now();
        }
    }
    let secs = started.elapsed().as_secs_f64();
    if target == "http" {
        let (up, peak) = with_http_node(|node| {
            (
                node.get_code("/healthz") == Some(200),
                memory_mib(&node.pid().to_string(), "VmHWM"),
            )
        });
        stop_http_node();
        if !up {
            eprintln!("http: the node stopped answering /healthz");
            return false;
        }
        println!("http: the node's peak RSS {peak} MiB after {iterations} requests");
    }
    println!(
        "{target}: {iterations} iterations in {secs:.1} s ({:.0}/s), seed {seed}, no panic, no hang; slowest input {:.1} ms; peak RSS {} MiB",
        iterations as f64 / secs.max(1e-9),
        slowest.as_secs_f64() * 1000.0,
        peak_rss_mib(),
    );
    true
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let targets = [
        "codec",
        "wire",
        "toml",
        "markdown",
        "tree",
        "http-auth",
        "join-token",
    ];
    let chosen: Vec<&str> = match args.first().map(String::as_str) {
        Some("all") => targets.to_vec(),
        Some("http") => vec!["http"],
        Some(target) if targets.contains(&target) => vec![target],
        _ => {
            eprintln!(
                "usage: fuzz {}|http|all --iterations N [--seed S]",
                targets.join("|")
            );
            std::process::exit(2);
        }
    };
    let iterations = value("--iterations").unwrap_or(100_000);
    let seed = value("--seed").unwrap_or(1);
    // Panics are findings, reported once with their input, not as traces.
    std::panic::set_hook(Box::new(|info| eprintln!("panic: {info}")));
    let mut clean = true;
    for target in chosen {
        clean &= fuzz(target, iterations, seed);
    }
    std::process::exit(if clean { 0 } else { 1 });
}
