//! A long-running fuzzer for every decoder that reads bytes from outside,
//! recorded in BENCHMARKS.md:
//!
//!     cargo run -p coditect-tests --example fuzz -- TARGET --iterations N [--seed S]
//!
//! TARGET is one of `codec` (the node protocol's messages as the codec
//! reads them), `wire` (a request frame body, then its payload), `toml` and
//! `markdown` (missions, parsed and validated), `tree` (workspace tree
//! manifests), `http-auth` (the API guard over random headers),
//! `join-token` (token text), or `all`. Inputs are random bytes and
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
        other => panic!("unknown target {other}"),
    }
}

fn peak_rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                line.strip_prefix("VmHWM:").and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
            })
        })
        .map(|kib| kib / 1024)
        .unwrap_or(0)
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
        let finding = match outcome {
            Err(_) => Some("panicked"),
            Ok(()) if took > HANG => Some("took longer than 2 s"),
            Ok(()) => None,
        };
        if let Some(what) = finding {
            let file = format!("fuzz-{target}-{iteration}.bin");
            let _ = std::fs::write(&file, &input);
            eprintln!("{target}: input {iteration} {what} (after {took:?}); saved to {file}");
            return false;
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!("{target}: {iteration} of {iterations}...");
            last_report = Instant::now();
        }
    }
    let secs = started.elapsed().as_secs_f64();
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
        Some(target) if targets.contains(&target) => vec![target],
        _ => {
            eprintln!(
                "usage: fuzz {}|all --iterations N [--seed S]",
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
