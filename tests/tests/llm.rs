//! Black-box tests of the `llm` capability with real `coditect node`
//! processes and a local OpenAI-compatible TEST DOUBLE
//! (`coditect_tests::llm_double`, not a model): a node offers `llm` and
//! `llm.model=<name>` only while its provider answers and lists the
//! model, tasks that need `llm` go only to such a node and wait with that
//! reason otherwise, and the API key is sent to the provider but never
//! appears in the node's log, status or metrics.
#![allow(clippy::disallowed_methods)] // black-box tests run real processes on the wall clock

use std::time::Duration;

use coditect_tests::llm_double::LlmDouble;
use coditect_tests::{coditect_output, mesh_flags, wait_for, NodeProcess};
use serde_json::Value;

const KEY: &str = "sk-test-double-key-5f1c0e";

fn tags(node: &NodeProcess) -> Value {
    node.status()
        .map(|s| s["capabilities"]["tags"].clone())
        .unwrap_or(Value::Null)
}

#[test]
fn a_node_offers_llm_only_while_its_provider_answers_and_never_shows_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let double = LlmDouble::start("coder-test");
    std::fs::write(dir.path().join("llm.toml"), "[llm]\nprobe_ms = 300\n").unwrap();
    let config = dir.path().join("llm.toml");
    let flags = mesh_flags(
        100,
        None,
        &[
            "--llm-url",
            &double.base_url,
            "--llm-model",
            "coder-test",
            "--llm-api-key-env",
            "CODITECT_TEST_LLM_KEY",
            "--config",
            config.to_str().unwrap(),
        ],
    );
    let with_llm = NodeProcess::start_with_env(
        &dir.path().join("n0"),
        "n0",
        &flags,
        &[("CODITECT_TEST_LLM_KEY", KEY)],
    );
    let boot = with_llm.bootstrap_addr();
    let without = NodeProcess::start(
        &dir.path().join("n1"),
        "n1",
        &mesh_flags(100, Some(&boot), &[]),
    );
    let offered = wait_for(Duration::from_secs(30), "llm offered", || {
        let tags = tags(&with_llm);
        (tags["llm.model"] == "coder-test").then_some(tags)
    });
    assert_eq!(offered["llm"], "openai", "{offered}");
    let status = with_llm.status().unwrap();
    assert_eq!(status["runtimes"]["llm"]["state"], "available", "{status}");
    assert!(
        tags(&without)["llm"].is_null(),
        "a node without [llm] offers none"
    );
    // The key went to the provider, and nowhere else.
    assert!(double
        .authorizations()
        .iter()
        .any(|a| a == &format!("Bearer {KEY}")));
    assert!(double
        .requests()
        .iter()
        .all(|r| r.starts_with("GET /v1/models")));

    // A task that needs `llm` runs only on the node that offers it (this
    // coder task has no text, so the coder refuses it with exit 2; where
    // it ran is what counts here).
    std::fs::write(
        dir.path().join("needs-llm.toml"),
        "name = \"llm\"\n[[task]]\nid = \"code\"\nmodule = \"builtin:coder\"\nrequires = [\"wasm\", \"llm\"]\n",
    )
    .unwrap();
    let args: Vec<String> = [
        "submit",
        dir.path().join("needs-llm.toml").to_str().unwrap(),
        "--api",
        &without.api(),
        "--wait",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (_, stdout, _) = coditect_output(&args, Duration::from_secs(120));
    let id = stdout.lines().next().unwrap().trim().to_string();
    let mission = without.mission(&id).unwrap();
    let violations = mission["tasks"][0]["violations"]
        .as_array()
        .unwrap()
        .clone();
    assert!(!violations.is_empty(), "{mission}");
    for violation in &violations {
        assert_eq!(violation["node"], with_llm.peer_id.as_str(), "{mission}");
    }

    // The provider fails: the capability is withdrawn with the reason, and
    // a task needing it waits saying so.
    double.set_status(503);
    wait_for(Duration::from_secs(15), "llm withdrawn", || {
        tags(&with_llm)["llm"].is_null().then_some(())
    });
    let status = with_llm.status().unwrap();
    assert_eq!(
        status["runtimes"]["llm"]["state"], "unavailable",
        "{status}"
    );
    assert!(
        status["runtimes"]["llm"]["reason"]
            .as_str()
            .unwrap()
            .contains("503"),
        "{status}"
    );
    let args: Vec<String> = [
        "submit",
        dir.path().join("needs-llm.toml").to_str().unwrap(),
        "--api",
        &without.api(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (_, stdout, _) = coditect_output(&args, Duration::from_secs(60));
    let waiting = stdout.lines().next().unwrap().trim().to_string();
    let reason = wait_for(Duration::from_secs(15), "the waiting reason", || {
        let mission = without.mission(&waiting)?;
        let task = &mission["tasks"][0];
        let reason = task["reason"].as_str()?.to_string();
        (task["state"] == "ready" && reason.contains("llm")).then_some(reason)
    });
    assert!(reason.contains("llm"), "{reason}");
    // Back again: offered again, and the waiting task is placed.
    double.set_status(200);
    wait_for(Duration::from_secs(15), "llm offered again", || {
        (tags(&with_llm)["llm.model"] == "coder-test").then_some(())
    });
    wait_for(Duration::from_secs(60), "the waiting task placed", || {
        let mission = without.mission(&waiting)?;
        (mission["tasks"][0]["state"] != "ready").then_some(())
    });

    // The key is in no log, status or metrics.
    for node in [&with_llm, &without] {
        assert!(!node.log_text().contains(KEY), "the key is in a log");
        let (_, status) = coditect_tests::http_request("GET", &node.http, "/api/status").unwrap();
        assert!(!status.contains(KEY));
        let (_, metrics) = coditect_tests::http_request("GET", &node.http, "/metrics").unwrap();
        assert!(!metrics.contains(KEY));
        let (_, mission) =
            coditect_tests::http_request("GET", &node.http, &format!("/api/missions/{id}"))
                .unwrap();
        assert!(!mission.contains(KEY));
    }
}

#[test]
fn a_bad_llm_config_is_refused_with_exit_two() {
    let dir = tempfile::tempdir().unwrap();
    for (flags, expected) in [
        (vec!["--llm-url", "ftp://x", "--llm-model", "m"], "http"),
        (vec!["--llm-url", "http://127.0.0.1:9/v1"], "model"),
        (
            vec![
                "--llm-url",
                "http://127.0.0.1:9/v1",
                "--llm-model",
                "m",
                "--llm-api-key-env",
                "CODITECT_UNSET_KEY_VAR",
            ],
            "CODITECT_UNSET_KEY_VAR",
        ),
    ] {
        let mut args: Vec<String> = vec!["node".into(), "--data-dir".into()];
        args.push(dir.path().join("n").display().to_string());
        args.extend(["--http".to_string(), "127.0.0.1:0".to_string()]);
        args.extend(flags.iter().map(|s| s.to_string()));
        let (status, _, stderr) = coditect_output(&args, Duration::from_secs(30));
        assert_eq!(status.code(), Some(2), "{flags:?}: {stderr}");
        assert!(
            stderr.contains(expected) && stderr.lines().count() <= 2,
            "{flags:?}: {stderr}"
        );
    }
}
