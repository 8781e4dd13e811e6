//! Admission, black-box: real `coditect node` processes on 127.0.0.1 that
//! found a guarded mesh (no `--open`), nodes that join with and without a
//! join token, spent and expired tokens, revocation, and a hand-made libp2p
//! peer that speaks the node protocol to check that every request is
//! checked against who sent it.
#![allow(clippy::disallowed_methods)] // black-box tests run real processes on the wall clock

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use coditect_gossip::{Identity, Libp2pNetwork, Network, NetworkConfig, NetworkMetrics};
use coditect_memory::codec;
use coditect_node::admission::JoinToken;
use coditect_node::datadir::node_id_for;
use coditect_node::messages::{NodeRequest, NodeResponse};
use coditect_tests::{coditect_output, http_request, string_list, wait_for, NodeProcess};
use serde_json::Value;

fn flags(bootstrap: Option<&str>, extra: &[&str]) -> Vec<String> {
    coditect_tests::mesh_flags(100, bootstrap, extra)
}

/// `coditect token create` against `node`; returns (exit code, stdout, stderr).
fn token_create(node: &NodeProcess, extra: &[&str]) -> (i32, String, String) {
    token_command(node, "create", extra)
}

/// `coditect token <command>` against `node`, with its credentials;
/// returns (exit code, trimmed stdout, stderr).
fn token_command(node: &NodeProcess, command: &str, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec![
        "token".to_string(),
        command.into(),
        "--api".into(),
        node.api(),
    ];
    args.extend(node.auth_args());
    args.extend(extra.iter().map(|s| s.to_string()));
    let (status, stdout, stderr) = coditect_output(&args, Duration::from_secs(30));
    (
        status.code().unwrap_or(-1),
        stdout.trim().to_string(),
        stderr,
    )
}

fn token(node: &NodeProcess, extra: &[&str]) -> String {
    let (code, token, stderr) = token_create(node, extra);
    assert_eq!(code, 0, "token create failed: {stderr}");
    assert!(
        token.starts_with("cdt1.") && !token.contains('\n'),
        "stdout is the token alone: {token:?}"
    );
    token
}

fn peer_ids(status: &Value) -> BTreeSet<String> {
    status["peers"]
        .as_array()
        .map(|peers| {
            peers
                .iter()
                .filter_map(|p| p["peer_id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn members(status: &Value) -> BTreeSet<String> {
    string_list(status, "voters")
        .into_iter()
        .chain(string_list(status, "learners"))
        .collect()
}

fn busy_wat(n: u64) -> String {
    format!(
        "(module (memory (export \"memory\") 1)\n  (func (export \"_start\") (local $i i64)\n    (loop $l (local.set $i (i64.add (local.get $i) (i64.const 1)))\n      (br_if $l (i64.lt_u (local.get $i) (i64.const {n}))))))\n"
    )
}

fn flat_mission(dir: &Path, count: usize, spin: u64) -> std::path::PathBuf {
    std::fs::write(dir.join("busy.wat"), busy_wat(spin)).expect("write module");
    let mut text = String::from("name = \"admission\"\n");
    for i in 0..count {
        text.push_str(&format!(
            "[[task]]\nid = \"t{i}\"\nmodule = \"busy.wat\"\n[task.limits]\nfuel = 1_000_000_000_000\ntimeout_ms = 120_000\n"
        ));
    }
    let path = dir.join("mission.toml");
    std::fs::write(&path, text).expect("write mission");
    path
}

fn submit(node: &NodeProcess, file: &Path) -> String {
    let mut args = vec![
        "submit".to_string(),
        file.display().to_string(),
        "--api".into(),
        node.api(),
    ];
    args.extend(node.auth_args());
    let (status, stdout, stderr) = coditect_output(&args, Duration::from_secs(60));
    assert!(status.success(), "submit failed: {stderr}");
    stdout.trim().to_string()
}

/// A node founding a guarded mesh, once it has committed its join secret;
/// and its bootstrap address.
fn guarded_founder(dir: &Path, extra: &[&str]) -> (NodeProcess, String) {
    let founder = NodeProcess::start_guarded(&dir.join("n0"), "n0", &flags(None, extra));
    wait_for(
        Duration::from_secs(20),
        "the founder to guard its mesh",
        || (founder.status()?["admission"] == "token").then_some(()),
    );
    let boot = founder.bootstrap_addr();
    (founder, boot)
}

/// Node `name` joining through `boot`, with `token` when given.
fn join_node(
    dir: &Path,
    name: &str,
    boot: &str,
    token: Option<&str>,
    extra: &[&str],
) -> NodeProcess {
    let mut flags = flags(Some(boot), extra);
    if let Some(token) = token {
        flags.extend(["--join-token".to_string(), token.to_string()]);
    }
    NodeProcess::start_guarded(&dir.join(name), name, &flags)
}

/// Waits for `node` to report why the mesh refused its token.
fn refusal(node: &NodeProcess, what: &str) -> String {
    wait_for(Duration::from_secs(30), what, || {
        node.status()?["admission_error"]
            .as_str()
            .map(str::to_string)
    })
}

fn wait_succeeded(node: &NodeProcess, id: &str, limit: Duration) -> Value {
    wait_for(limit, "the mission to succeed", || {
        let mission = node.mission(id)?;
        assert_ne!(mission["state"], "failed", "{mission}");
        (mission["state"] == "succeeded").then_some(mission)
    })
}

#[test]
fn only_a_node_with_a_token_joins_a_guarded_mesh() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (founder, boot) = guarded_founder(dir.path(), &[]);

    let token = token(&founder, &["--ttl", "1h"]);
    let joiner = join_node(dir.path(), "n1", &boot, Some(&token), &[]);
    let stranger = join_node(dir.path(), "n2", &boot, None, &[]);

    // The joiner is listed, joins the Raft group and sees the mesh as guarded.
    wait_for(
        Duration::from_secs(30),
        "the joiner to be listed and a member",
        || {
            let status = founder.status()?;
            (peer_ids(&status).contains(&joiner.peer_id)
                && members(&status).contains(&joiner.peer_id))
            .then_some(())
        },
    );
    assert_eq!(
        joiner.status().expect("joiner status")["admission"],
        "token"
    );

    // Work runs on admitted nodes only, however long the stranger waits.
    let mission = submit(&founder, &flat_mission(dir.path(), 12, 1_000_000));
    let done = wait_succeeded(&founder, &mission, Duration::from_secs(60));
    let ran_on: BTreeSet<String> = done["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .filter_map(|t| t["result"]["node"].as_str().map(str::to_string))
        .collect();
    assert!(
        !ran_on.contains(&stranger.peer_id),
        "a task ran on the stranger: {ran_on:?}"
    );

    let status = founder.status().expect("founder status");
    assert!(!peer_ids(&status).contains(&stranger.peer_id), "{status}");
    assert!(!members(&status).contains(&stranger.peer_id), "{status}");
    let stranger_status = stranger.status().expect("stranger status");
    assert_eq!(stranger_status["role"], "worker", "{stranger_status}");
    assert!(
        stranger.log_text().contains("--join-token"),
        "the stranger's log says what to do"
    );
    let refused = founder
        .metric("coditect_requests_refused_total{kind=\"heartbeat\",reason=\"not_admitted\"}");
    assert!(
        refused >= 1.0,
        "the stranger's heartbeats are counted as refused"
    );

    // A blob reaches admitted nodes and never the stranger.
    let (code, body) = founder
        .request("POST", "/api/blobs", b"admitted eyes only")
        .expect("upload");
    assert_eq!(code, 201, "{body}");
    let digest = serde_json::from_str::<Value>(&body).expect("json")["digest"]
        .as_str()
        .expect("digest")
        .to_string();
    let path = format!("/api/blobs/{digest}");
    assert_eq!(joiner.get_code(&path), Some(200));
    let hex = digest.rsplit(':').next().unwrap_or(&digest).to_string();
    assert!(
        !stranger
            .data_dir
            .join("blobs")
            .join(&hex[..2])
            .join(&hex)
            .exists(),
        "the blob reached the stranger"
    );
    // The stranger knows no API token and serves nothing but its status.
    assert!(stranger.api_token().is_none());
    assert_eq!(stranger.get_code(&path), Some(503));
    assert_eq!(stranger.get_code("/api/missions"), Some(503));

    // Restarted on its data dir without a token, the joiner stays admitted.
    let mut joiner = joiner;
    joiner.kill();
    let joiner = join_node(dir.path(), "n1", &boot, None, &[]);
    wait_for(
        Duration::from_secs(30),
        "the restarted joiner to be listed again",
        || {
            let status = joiner.status()?;
            (status["admission"] == "token" && status["leader"].is_string()).then_some(())?;
            peer_ids(&founder.status()?)
                .contains(&joiner.peer_id)
                .then_some(())
        },
    );
    assert!(joiner.status().expect("status")["admission_error"].is_null());
}

#[test]
fn spent_expired_and_malformed_tokens_are_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (founder, boot) = guarded_founder(dir.path(), &[]);

    let once = token(&founder, &["--uses", "1"]);
    let first = join_node(dir.path(), "n1", &boot, Some(&once), &[]);
    wait_for(Duration::from_secs(30), "the first use to admit", || {
        peer_ids(&founder.status()?)
            .contains(&first.peer_id)
            .then_some(())
    });
    let second = join_node(dir.path(), "n2", &boot, Some(&once), &[]);
    let error = refusal(&second, "the reused token to be refused");
    assert!(error.contains("used up"), "{error}");

    let short = token(&founder, &["--ttl", "1s"]);
    std::thread::sleep(Duration::from_millis(1_500));
    let late = join_node(dir.path(), "n3", &boot, Some(&short), &[]);
    let error = refusal(&late, "the expired token to be refused");
    assert!(error.contains("expired"), "{error}");

    // A token of another mesh proves nothing here.
    let foreign = JoinToken::derive(&[9; 32], 1, "abc").to_text();
    let outsider = join_node(dir.path(), "n4", &boot, Some(&foreign), &[]);
    let error = refusal(&outsider, "the foreign token to be refused");
    assert!(error.contains("not valid"), "{error}");
    let status = founder.status().expect("status");
    for node in [&second, &late, &outsider] {
        assert!(!peer_ids(&status).contains(&node.peer_id), "{status}");
    }

    // Bad input is a one-line error and exit 2, before anything starts.
    for (bad, expected) in [
        ("cdt1.abc", "cdt1.<id>.<key>"),
        ("xyz.abc.00", "starts with cdt1"),
    ] {
        let args: Vec<String> = [
            "node",
            "--data-dir",
            &dir.path().join("bad").display().to_string(),
            "--http",
            "127.0.0.1:0",
            "--join-token",
            bad,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let (status, _, stderr) = coditect_output(&args, Duration::from_secs(30));
        assert_eq!(status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(expected) && stderr.trim().lines().count() == 1,
            "{stderr}"
        );
    }
    for bad in [["--ttl", "soon"], ["--uses", "0"]] {
        let (code, stdout, stderr) = token_create(&founder, &bad);
        assert_eq!(code, 2, "{stderr}");
        assert!(stdout.is_empty(), "{stdout}");
    }

    // Rotating the secret voids unused tokens and keeps admitted peers.
    let unused = token(&founder, &[]);
    let (status, _, stderr) = coditect_output(
        &[
            &[
                "token".into(),
                "rotate".into(),
                "--api".into(),
                founder.api(),
            ][..],
            &founder.auth_args(),
        ]
        .concat(),
        Duration::from_secs(30),
    );
    assert!(status.success(), "{stderr}");
    let after = join_node(dir.path(), "n5", &boot, Some(&unused), &[]);
    let error = refusal(&after, "the rotated-out token to be refused");
    assert!(error.contains("not valid"), "{error}");
    assert!(peer_ids(&founder.status().expect("status")).contains(&first.peer_id));
}

#[test]
fn a_revoked_peer_is_cut_off_and_its_running_task_runs_elsewhere() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (founder, boot) = guarded_founder(dir.path(), &["--slots", "1"]);
    let token = token(&founder, &[]);
    let nodes: Vec<NodeProcess> = (1..3)
        .map(|i| {
            join_node(
                dir.path(),
                &format!("n{i}"),
                &boot,
                Some(&token),
                &["--slots", "1"],
            )
        })
        .collect();
    wait_for(Duration::from_secs(30), "both joiners listed", || {
        let status = founder.status()?;
        nodes
            .iter()
            .all(|n| peer_ids(&status).contains(&n.peer_id))
            .then_some(())
    });
    // Tasks of about two seconds each, more than the slots.
    let mission = submit(&founder, &flat_mission(dir.path(), 6, 2_000_000_000));
    let leader = founder.status().expect("status")["leader"]
        .as_str()
        .expect("leader")
        .to_string();
    let (victim, task) = wait_for(
        Duration::from_secs(30),
        "a task running on a follower",
        || {
            let view = founder.mission(&mission)?;
            view["tasks"].as_array()?.iter().find_map(|t| {
                let owner = t["owner"].as_str()?;
                let node = nodes
                    .iter()
                    .position(|n| n.peer_id == owner && owner != leader)?;
                (t["state"] == "running")
                    .then(|| (node, t["id"].as_str().unwrap_or_default().to_string()))
            })
        },
    );
    let victim_peer = nodes[victim].peer_id.clone();
    let (status, _, stderr) = coditect_output(
        &[
            &[
                "peer".into(),
                "revoke".into(),
                victim_peer.clone(),
                "--api".into(),
                founder.api(),
            ][..],
            &founder.auth_args(),
        ]
        .concat(),
        Duration::from_secs(30),
    );
    assert!(status.success(), "{stderr}");

    // Every node stops hearing it within seconds.
    wait_for(
        Duration::from_secs(10),
        "the revoked peer to be cut off",
        || {
            let status = founder.status()?;
            (!peer_ids(&status).contains(&victim_peer) && !members(&status).contains(&victim_peer))
                .then_some(())
        },
    );
    let other = &nodes[1 - victim];
    wait_for(
        Duration::from_secs(10),
        "the other joiner to drop it too",
        || (!peer_ids(&other.status()?).contains(&victim_peer)).then_some(()),
    );

    let done = wait_succeeded(&founder, &mission, Duration::from_secs(90));
    for t in done["tasks"].as_array().expect("tasks") {
        assert_ne!(
            t["result"]["node"].as_str(),
            Some(victim_peer.as_str()),
            "{t}"
        );
        assert_eq!(t["results_committed"], 1, "{t}");
    }
    let moved = done["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .find(|t| t["id"] == task.as_str())
        .expect("the task");
    assert!(moved["attempts"].as_u64().unwrap_or(0) >= 2, "{moved}");

    // Its node says it is no longer served.
    let victim_node = &nodes[victim];
    wait_for(
        Duration::from_secs(10),
        "the revoked node to be refused",
        || {
            (victim_node.status()?["leader"].is_null()
                || victim_node.log_text().contains("does not admit this node"))
            .then_some(())
        },
    );
}

/// A libp2p peer of our own, speaking the node protocol.
struct Rogue {
    runtime: tokio::runtime::Runtime,
    network: Libp2pNetwork,
}

impl Rogue {
    fn new() -> Rogue {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let network = runtime.block_on(async {
            let registry = prometheus::Registry::new();
            let (network, mut events, driver) = Libp2pNetwork::start(
                NetworkConfig {
                    identity: Identity::generate(),
                    listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
                    external: vec![],
                    topics: vec![],
                    max_discovered_peers: 0,
                    inbound: Default::default(),
                    busy_answer: coditect_node::messages::busy_answer,
                },
                NetworkMetrics::register(&registry).expect("metrics"),
            )
            .expect("network");
            tokio::spawn(driver);
            // Requests to us go unanswered; events are drained.
            tokio::spawn(async move { while events.recv().await.is_some() {} });
            network
        });
        Rogue { runtime, network }
    }

    fn ask(&self, node: &NodeProcess, request: &NodeRequest) -> NodeResponse {
        let bytes = codec::encode(request).expect("encode");
        let addrs = Self::addrs(node);
        let answer = self
            .runtime
            .block_on(
                self.network
                    .request(&node.peer_id, &addrs, bytes, Duration::from_secs(10)),
            )
            .expect("an answer");
        codec::decode(&answer).expect("decode")
    }

    /// Sends `count` copies of `request` to `node` at once; the answers.
    fn ask_many(
        &self,
        node: &NodeProcess,
        request: &NodeRequest,
        count: usize,
    ) -> Vec<NodeResponse> {
        let bytes = codec::encode(request).expect("encode");
        let addrs = Self::addrs(node);
        let calls = (0..count).map(|_| {
            self.network.request(
                &node.peer_id,
                &addrs,
                bytes.clone(),
                Duration::from_secs(20),
            )
        });
        self.runtime
            .block_on(futures::future::join_all(calls))
            .into_iter()
            .map(|answer| codec::decode(&answer.expect("an answer")).expect("decode"))
            .collect()
    }

    fn addrs(node: &NodeProcess) -> Vec<String> {
        node.listen
            .iter()
            .map(|addr| {
                addr.rsplit_once("/p2p/")
                    .map(|(a, _)| a.to_string())
                    .unwrap_or_default()
            })
            .collect()
    }

    fn peer(&self) -> String {
        self.network.local_peer()
    }
}

fn forbidden(answer: &NodeResponse) -> &str {
    match answer {
        NodeResponse::Forbidden(reason) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// A guarded founder and a follower admitted with a join token, once the
/// follower is a Raft member; the data dir and the token used.
fn founder_and_member() -> (tempfile::TempDir, NodeProcess, NodeProcess, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (founder, boot) = guarded_founder(dir.path(), &[]);
    let text = token(&founder, &[]);
    let follower = join_node(dir.path(), "n1", &boot, Some(&text), &[]);
    wait_for(
        Duration::from_secs(30),
        "the follower to be a member",
        || {
            members(&founder.status()?)
                .contains(&follower.peer_id)
                .then_some(())
        },
    );
    (dir, founder, follower, text)
}

#[test]
fn every_request_is_checked_against_its_sender() {
    let (_dir, founder, follower, text) = founder_and_member();

    // A stranger gets nothing but the join exchange.
    let rogue = Rogue::new();
    let blob = NodeRequest::GetBlob {
        digest: format!("sha256:{}", "0".repeat(64)),
        offset: 0,
        len: 16,
    };
    assert_eq!(forbidden(&rogue.ask(&founder, &blob)), "not_admitted");
    assert_eq!(forbidden(&rogue.ask(&follower, &blob)), "not_admitted");
    assert_eq!(
        forbidden(&rogue.ask(
            &founder,
            &NodeRequest::ListMissions {
                after: 0,
                limit: 10
            }
        )),
        "not_admitted"
    );
    assert_eq!(
        forbidden(&rogue.ask(&follower, &NodeRequest::Raft(vec![1, 2, 3]))),
        "not_admitted"
    );

    // A proof made for another peer, or a spent challenge, admits no one.
    let token = JoinToken::parse(&text).expect("token");
    let NodeResponse::Challenge(challenge) = rogue.ask(&founder, &NodeRequest::AdmitChallenge)
    else {
        panic!("no challenge");
    };
    let stolen = NodeRequest::AdmitProve {
        token: token.id.clone(),
        challenge: challenge.clone(),
        proof: token.prove(&challenge, &follower.peer_id),
    };
    assert!(forbidden(&rogue.ask(&founder, &stolen)).contains("not valid"));
    let honest = NodeRequest::AdmitProve {
        token: token.id.clone(),
        challenge: challenge.clone(),
        proof: token.prove(&challenge, &rogue.peer()),
    };
    assert!(
        forbidden(&rogue.ask(&founder, &honest)).contains("challenge"),
        "spent"
    );
    let NodeResponse::Challenge(fresh) = rogue.ask(&founder, &NodeRequest::AdmitChallenge) else {
        panic!("no challenge");
    };
    let honest = NodeRequest::AdmitProve {
        token: token.id.clone(),
        challenge: fresh.clone(),
        proof: token.prove(&fresh, &rogue.peer()),
    };
    assert!(matches!(rogue.ask(&founder, &honest), NodeResponse::Ack));

    // Admitted now, it still may not act as the leader or as another node.
    wait_for(
        Duration::from_secs(10),
        "the follower to learn the admission",
        || match rogue.ask(&follower, &blob) {
            NodeResponse::BlobChunk(None) => Some(()),
            _ => None,
        },
    );
    assert_eq!(
        forbidden(&rogue.ask(&follower, &NodeRequest::Assign(Vec::new()))),
        "not_leader"
    );
    assert_eq!(
        forbidden(&rogue.ask(&follower, &NodeRequest::Revoke(Vec::new()))),
        "not_leader"
    );
    let leave = NodeRequest::Leave {
        node_id: node_id_for(&follower.peer_id),
    };
    assert_eq!(forbidden(&rogue.ask(&founder, &leave)), "wrong_node");
    assert_eq!(
        follower.metric("coditect_requests_refused_total{kind=\"assign\",reason=\"not_leader\"}"),
        1.0
    );
    assert_eq!(
        founder.metric("coditect_requests_refused_total{kind=\"leave\",reason=\"wrong_node\"}"),
        1.0
    );
    // The follower is still a member: the forged leave did nothing.
    std::thread::sleep(Duration::from_millis(500));
    assert!(members(&founder.status().expect("status")).contains(&follower.peer_id));
    assert_eq!(founder.get_code("/api/status"), Some(200));
}

#[test]
fn a_stranger_flooding_requests_is_answered_busy_while_members_are_served() {
    let (_dir, founder, follower, _) = founder_and_member();
    // 300 join challenges at once from one peer id that is not admitted:
    // a few are served, the rest answered busy at once, not queued.
    let refused_so_far = |node: &NodeProcess| -> f64 {
        ["rate_limited", "in_flight", "strangers_full", "queue_full"]
            .iter()
            .map(|reason| {
                node.metric(&format!(
                    "coditect_rpc_refused_total{{reason=\"{reason}\"}}"
                ))
            })
            .sum()
    };
    let before = refused_so_far(&founder);
    let rogue = Rogue::new();
    let started = std::time::Instant::now();
    let answers = rogue.ask_many(&founder, &NodeRequest::AdmitChallenge, 300);
    let elapsed = started.elapsed();
    let served = answers
        .iter()
        .filter(|answer| matches!(answer, NodeResponse::Challenge(_)))
        .count();
    let busy = answers
        .iter()
        .filter(|answer| matches!(answer, NodeResponse::Error(text) if text.contains("busy")))
        .count();
    assert_eq!(served + busy, answers.len(), "{answers:?}");
    assert!((1..=20).contains(&served), "served {served} of 300");
    assert!(
        elapsed < Duration::from_secs(15),
        "refusals are answered at once ({elapsed:?})"
    );
    let refused = refused_so_far(&founder) - before;
    assert_eq!(refused as usize, busy, "every busy answer is counted");
    // The mesh is unaffected: the member still follows the same leader, and
    // after a pause the stranger may run the join exchange again.
    assert!(members(&founder.status().expect("status")).contains(&follower.peer_id));
    assert_eq!(
        follower.status().expect("status")["leader"].as_str(),
        Some(founder.peer_id.as_str())
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(matches!(
        rogue.ask(&founder, &NodeRequest::AdmitChallenge),
        NodeResponse::Challenge(_)
    ));
}

/// `GET /api/missions` on `node` with `token` as the bearer; the status code.
fn code_with(node: &NodeProcess, token: &str) -> u16 {
    let bearer = format!("Bearer {token}");
    coditect_tests::http_exchange_with(
        "GET",
        &node.http,
        "/api/missions",
        &[("Authorization", bearer.as_str())],
        b"",
    )
    .map(|(code, _)| code)
    .unwrap_or(0)
}

#[test]
fn the_api_token_rotates_for_the_whole_mesh() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (founder, boot) = guarded_founder(dir.path(), &[]);
    let text = token(&founder, &[]);
    let follower = join_node(dir.path(), "n1", &boot, Some(&text), &[]);
    let old = founder.api_token().expect("a token");
    wait_for(
        Duration::from_secs(30),
        "the follower to keep the mesh's token",
        || (follower.api_token().as_deref() == Some(old.as_str())).then_some(()),
    );
    assert_eq!(code_with(&follower, &old), 200);

    // Asked of the follower (it goes to the leader), with the old token.
    let (code, new, stderr) = token_command(&follower, "rotate-api", &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        new.len() >= 32 && !new.contains('\n') && new != old,
        "stdout is the new token alone: {new:?}"
    );
    assert!(stderr.contains("refused from now on"), "{stderr}");

    // Every node takes the new token, keeps it in its file, and refuses the old.
    for node in [&founder, &follower] {
        wait_for(
            Duration::from_secs(15),
            "the old token to be refused",
            || (code_with(node, &old) == 401).then_some(()),
        );
        assert_eq!(code_with(node, &new), 200);
        wait_for(Duration::from_secs(15), "the new token in the file", || {
            (node.api_token().as_deref() == Some(new.as_str())).then_some(())
        });
    }
    // A client that reads the token file follows without being told.
    let (code, stderr) = cli_status(&founder, &founder.auth_args(), &[]);
    assert_eq!(code, 0, "{stderr}");
    // Without any token the rotation itself is refused.
    let (code, _) = coditect_tests::http_exchange(
        "POST",
        &founder.http,
        "/api/admission/api-token/rotate",
        b"",
    )
    .unwrap();
    assert_eq!(code, 401);
    assert_eq!(founder.api_token().as_deref(), Some(new.as_str()));
}

/// Runs `coditect status --api` against `node` with `extra` flags and
/// environment; returns (exit code, stderr).
fn cli_status(node: &NodeProcess, extra: &[String], env: &[(&str, &str)]) -> (i32, String) {
    let output = std::process::Command::new(coditect_tests::coditect_bin())
        .args(["status", "--api", &node.api()])
        .args(extra)
        .env_remove("CODITECT_API_TOKEN")
        .envs(env.iter().copied())
        .current_dir(&node.data_dir)
        .output()
        .expect("run coditect status");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

#[test]
fn the_http_api_needs_the_mesh_token_and_refuses_foreign_origins_and_hosts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (founder, boot) = guarded_founder(dir.path(), &[]);
    let file = founder.data_dir.join("api-token");
    let token = founder.api_token().expect("the founder made an API token");
    assert!(token.len() >= 32, "{token}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file)
            .expect("token file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the token file is the owner's only");
    }
    assert!(
        !founder.log_text().contains(&token),
        "the token is never logged"
    );
    let bearer = format!("Bearer {token}");
    let call = |method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]| {
        let (code, body) =
            coditect_tests::http_exchange_with(method, &founder.http, path, headers, body)
                .expect("request");
        (code, String::from_utf8_lossy(&body).to_string())
    };

    // Without the token: 401 everywhere but health, readiness and the page.
    for path in [
        "/api/status",
        "/api/missions",
        "/metrics",
        "/api/blobs/sha256:00",
    ] {
        let (code, body) = call("GET", path, &[], b"");
        assert_eq!(code, 401, "{path}: {body}");
        assert!(body.contains("API token"), "{body}");
        let (code, _) = call(
            "GET",
            path,
            &[("Authorization", "Bearer not-the-token")],
            b"",
        );
        assert_eq!(code, 401, "{path}");
        let (code, _) = call("GET", path, &[("Authorization", &bearer)], b"");
        assert_ne!(code, 401, "{path}");
    }
    for path in ["/healthz", "/readyz", "/"] {
        assert_eq!(call("GET", path, &[], b"").0, 200, "{path}");
    }
    let (code, _) = call("POST", "/api/missions", &[], b"name = \"x\"\n");
    assert_eq!(code, 401);
    assert!(
        founder.metric("coditect_http_refused_total{reason=\"missing_token\"}") >= 5.0,
        "refusals are counted"
    );

    // A page of another origin cannot submit (CSRF), even with the token;
    // a name the node does not answer to is refused (DNS rebinding).
    let mission = b"name = \"csrf\"\n[[task]]\nid = \"a\"\nmodule = \"builtin:noop\"\n";
    let (code, body) = call(
        "POST",
        "/api/missions",
        &[
            ("Origin", "http://attacker.example"),
            ("Content-Type", "text/plain"),
            ("Authorization", &bearer),
        ],
        mission,
    );
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("cross-origin"), "{body}");
    let list: Value =
        serde_json::from_str(&call("GET", "/api/missions", &[("Authorization", &bearer)], b"").1)
            .expect("mission list");
    assert_eq!(list["missions"].as_array().map(Vec::len), Some(0), "{list}");
    let mut stream = std::net::TcpStream::connect(&founder.http).expect("connect");
    std::io::Write::write_all(
        &mut stream,
        format!("GET /api/status HTTP/1.1\r\nHost: attacker.example\r\nAuthorization: {bearer}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .expect("send");
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut stream, &mut answer).expect("answer");
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(answer.contains("--http-host"), "{answer}");
    // The page's own origin works.
    let own = format!("http://{}", founder.http);
    let (code, _) = call(
        "GET",
        "/api/status",
        &[("Origin", &own), ("Authorization", &bearer)],
        b"",
    );
    assert_eq!(code, 200);

    // The CLI: without a token it says what is missing; --api-token-file,
    // --api-token and CODITECT_API_TOKEN work; a wrong one is refused.
    let (code, stderr) = cli_status(&founder, &[], &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("API token"), "{stderr}");
    let file_flag = vec!["--api-token-file".to_string(), file.display().to_string()];
    assert_eq!(cli_status(&founder, &file_flag, &[]).0, 0);
    assert_eq!(
        cli_status(&founder, &["--api-token".to_string(), token.clone()], &[]).0,
        0
    );
    assert_eq!(
        cli_status(&founder, &[], &[("CODITECT_API_TOKEN", &token)]).0,
        0
    );
    let (code, stderr) = cli_status(&founder, &[], &[("CODITECT_API_TOKEN", "wrong-token")]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("wrong API token"), "{stderr}");
    let missing = vec![
        "--api-token-file".to_string(),
        "/nonexistent/api-token".to_string(),
    ];
    let (code, stderr) = cli_status(&founder, &missing, &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("/nonexistent/api-token"), "{stderr}");

    // A joiner learns the mesh's token once admitted and asks for it too.
    let joiner = join_node(
        dir.path(),
        "n1",
        &boot,
        Some(&self::token(&founder, &[])),
        &[],
    );
    wait_for(
        Duration::from_secs(30),
        "the joiner to learn the API token",
        || (joiner.api_token()? == token).then_some(()),
    );
    let (code, _) = http_request("GET", &joiner.http, "/api/missions").expect("joiner");
    assert_eq!(code, 401);
    assert_eq!(joiner.get_code("/api/missions"), Some(200));

    // Restarted, the founder keeps the same token.
    let mut founder = founder;
    founder.kill();
    let founder = NodeProcess::start_guarded(&dir.path().join("n0"), "n0", &flags(None, &[]));
    assert_eq!(founder.api_token().as_deref(), Some(token.as_str()));
    wait_for(
        Duration::from_secs(30),
        "the restarted founder to answer",
        || founder.status().map(|_| ()),
    );
    assert_eq!(
        http_request("GET", &founder.http, "/api/status")
            .expect("status")
            .0,
        401
    );
}

#[test]
fn the_cli_speaks_tls_to_the_pinned_certificate_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("n0");
    let node = NodeProcess::start_guarded(&data, "n0", &flags(None, &["--tls-self-signed"]));
    let info: Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("node.json")).expect("node.json"))
            .expect("json");
    let fingerprint = info["tls_fingerprint"]
        .as_str()
        .expect("node.json names the certificate's fingerprint")
        .to_string();
    assert!(
        fingerprint.starts_with("sha256:") && fingerprint.len() == 71,
        "{fingerprint}"
    );
    assert!(node.log_text().contains(&fingerprint), "the log prints it");
    let https = format!("https://{}", node.http);
    let run = |extra: &[&str]| {
        let mut args: Vec<String> = ["status", "--api", &https, "--json"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(node.auth_args());
        args.extend(extra.iter().map(|s| s.to_string()));
        let (status, stdout, stderr) = coditect_output(&args, Duration::from_secs(30));
        (status.code().unwrap_or(-1), stdout, stderr)
    };
    let status: Value = wait_for(Duration::from_secs(30), "status over TLS", || {
        let (code, stdout, _) = run(&["--tls-fingerprint", &fingerprint]);
        (code == 0)
            .then(|| serde_json::from_str(&stdout).ok())
            .flatten()
    });
    assert_eq!(status["peer_id"], node.peer_id.as_str());
    // openssl's spelling of the same fingerprint works too.
    let colons: Vec<String> = fingerprint.as_bytes()["sha256:".len()..]
        .chunks(2)
        .map(|pair| String::from_utf8_lossy(pair).to_uppercase())
        .collect();
    assert_eq!(run(&["--tls-fingerprint", &colons.join(":")]).0, 0);

    let wrong = format!("sha256:{}", "0".repeat(64));
    let (code, _, stderr) = run(&["--tls-fingerprint", &wrong]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("not the one --tls-fingerprint pins"),
        "{stderr}"
    );
    let (code, _, stderr) = run(&[]);
    assert_eq!(
        code, 1,
        "a self-signed certificate is not trusted unpinned: {stderr}"
    );
    let (code, _, stderr) = run(&["--tls-fingerprint", "sha256:xyz"]);
    assert_eq!(code, 2, "{stderr}");
    // Plain HTTP gets no answer from the TLS port.
    assert!(!matches!(
        http_request("GET", &node.http, "/healthz"),
        Ok((200, _))
    ));

    // Restarted, the node keeps its certificate.
    let mut node = node;
    node.kill();
    let node = NodeProcess::start_guarded(&data, "n0", &flags(None, &["--tls-self-signed"]));
    let again: Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("node.json")).expect("node.json"))
            .expect("json");
    assert_eq!(again["tls_fingerprint"], fingerprint.as_str());
    drop(node);

    // Half a TLS configuration, or a file that is no certificate, is bad input.
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello").expect("write");
    for extra in [
        vec!["--tls-cert", not_pem.to_str().expect("path")],
        vec![
            "--tls-cert",
            not_pem.to_str().expect("path"),
            "--tls-key",
            not_pem.to_str().expect("path"),
        ],
    ] {
        let mut args: Vec<String> = vec![
            "node".into(),
            "--data-dir".into(),
            dir.path().join("bad").display().to_string(),
            "--http".into(),
            "127.0.0.1:0".into(),
            "--listen".into(),
            "/ip4/127.0.0.1/udp/0/quic-v1".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let (status, _, stderr) = coditect_output(&args, Duration::from_secs(30));
        assert_eq!(status.code(), Some(2), "{extra:?}: {stderr}");
        assert!(stderr.to_lowercase().contains("tls"), "{stderr}");
    }
}

#[test]
fn a_client_over_the_rate_limit_gets_429_and_the_node_keeps_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = NodeProcess::start(
        &dir.path().join("n0"),
        "n0",
        &flags(None, &["--http-rate-limit", "5"]),
    );
    // A burst of 10 (twice the rate) passes, then 429 with Retry-After.
    let mut codes = Vec::new();
    let mut retry_after = None;
    for _ in 0..30 {
        let mut stream = std::net::TcpStream::connect(&node.http).expect("connect");
        std::io::Write::write_all(
            &mut stream,
            format!(
                "GET /healthz HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                node.http
            )
            .as_bytes(),
        )
        .expect("send");
        let mut answer = String::new();
        std::io::Read::read_to_string(&mut stream, &mut answer).expect("answer");
        let code: u16 = answer[9..12].parse().expect("status code");
        if code == 429 && retry_after.is_none() {
            retry_after = answer.lines().find_map(|line| {
                line.to_ascii_lowercase()
                    .strip_prefix("retry-after: ")
                    .map(str::to_string)
            });
            assert!(answer.contains("too many requests"), "{answer}");
        }
        codes.push(code);
    }
    let served = codes.iter().filter(|c| **c == 200).count();
    assert!(
        (10..=12).contains(&served),
        "served {served} of 30: {codes:?}"
    );
    assert!(codes.iter().all(|c| *c == 200 || *c == 429), "{codes:?}");
    assert_eq!(retry_after.as_deref().map(str::trim), Some("1"));
    // A second later the client is served again.
    std::thread::sleep(Duration::from_millis(1_100));
    assert_eq!(node.get_code("/healthz"), Some(200));
    assert!(node.metric("coditect_http_refused_total{reason=\"rate_limited\"}") >= 18.0);
    let (status, _, stderr) = coditect_output(
        &["node".into(), "--http-rate-limit".into(), "x".into()],
        Duration::from_secs(30),
    );
    assert_eq!(status.code(), Some(2), "{stderr}");
}
