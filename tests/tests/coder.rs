//! Black-box tests of the coder agent and the fix loop with real `coditect
//! node` processes and a local OpenAI-compatible TEST DOUBLE
//! (`coditect_tests::llm_double`, not a model, with scripted answers
//! chosen by what the prompt contains):
//! - "add fib(n) with tests" goes analyze -> code -> test and succeeds,
//!   the change in the mission's diff, every call recorded with its prompt
//!   and completion as blobs;
//! - a first answer that breaks a test is repaired by a fix round;
//! - a malformed answer is `bad_model_output`, and the retry (whose prompt
//!   says what was wrong) succeeds;
//! - provider faults (429 with `Retry-After`, 500, invalid JSON, a hanging
//!   endpoint, the endpoint going away) end with clear reasons and no lost
//!   or duplicated task;
//! - the node without `[llm]` never receives a coder task, and the API key
//!   appears in no log, status, metrics or mission JSON.
#![allow(clippy::disallowed_methods)] // black-box tests run real processes on the wall clock

use std::path::{Path, PathBuf};
use std::time::Duration;

use coditect_tests::llm_double::{Fault, LlmDouble};
use coditect_tests::{coditect_output, http_request, mesh_flags, wait_for, NodeProcess};
use serde_json::Value;

const KEY: &str = "sk-coder-double-key-93b2aa";

/// First compile of the Python runtime on a fresh machine, plus slack.
const READY_LIMIT: Duration = Duration::from_secs(240);

/// A tiny project: one module, one test file.
fn project(at: &Path) {
    std::fs::create_dir_all(at.join("mathx")).unwrap();
    std::fs::create_dir_all(at.join("tests")).unwrap();
    std::fs::write(at.join("mathx/__init__.py"), "").unwrap();
    std::fs::write(
        at.join("mathx/basic.py"),
        "def add(a, b):\n    \"\"\"The sum of a and b.\"\"\"\n    return a + b\n",
    )
    .unwrap();
    std::fs::write(
        at.join("tests/test_basic.py"),
        "import unittest\n\nfrom mathx.basic import add\n\n\nclass AddTest(unittest.TestCase):\n    def test_add(self):\n        self.assertEqual(add(2, 3), 5)\n",
    )
    .unwrap();
}

/// A model answer writing `name(n)` as `body` and a test expecting
/// `name(3) == expected`.
fn answer(name: &str, body: &str, expected: i64) -> String {
    format!(
        "Here is the change.\n\n```python path=mathx/{name}.py\ndef {name}(n):\n    {body}\n```\n\n```python path=tests/test_{name}.py\nimport unittest\n\nfrom mathx.{name} import {name}\n\n\nclass {name}Test(unittest.TestCase):\n    def test_{name}_of_three(self):\n        self.assertEqual({name}(3), {expected})\n```\n"
    )
}

/// A mission: analyze, code (`goal`), test, over `workspace`.
fn mission_file(dir: &Path, name: &str, goal: &str) -> PathBuf {
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(
        &file,
        format!(
            "name = \"{name}\"\nworkspace = \"project\"\n\
             [[task]]\nid = \"analyze\"\nmodule = \"builtin:analyzer\"\n\
             [[task]]\nid = \"code\"\nmodule = \"builtin:coder\"\nneeds = [\"analyze\"]\ninput = \"{goal}\"\n\
             [[task]]\nid = \"test\"\nmodule = \"builtin:tester\"\nneeds = [\"code\"]\n"
        ),
    )
    .unwrap();
    file
}

/// `coditect ARGS --api NODE`: exit code, stdout, stderr.
fn cli(node: &NodeProcess, args: &[&str]) -> (i32, String, String) {
    let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    all.extend(["--api".to_string(), node.api()]);
    let (status, stdout, stderr) = coditect_output(&all, Duration::from_secs(300));
    (status.code().unwrap_or(-1), stdout, stderr)
}

/// Submits and waits: exit code and the mission JSON.
fn run(node: &NodeProcess, file: &Path) -> (i32, Value) {
    let (code, stdout, stderr) = cli(node, &["submit", file.to_str().unwrap(), "--wait"]);
    let id = stdout.lines().next().unwrap_or("").trim().to_string();
    assert!(id.starts_with('m'), "no mission id: {stdout}\n{stderr}");
    (code, node.mission(&id).expect("the mission"))
}

fn task<'a>(mission: &'a Value, id: &str) -> &'a Value {
    mission["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .find(|t| t["id"] == id)
        .unwrap_or_else(|| panic!("no task {id} in {mission}"))
}

fn blob(node: &NodeProcess, digest: &str) -> String {
    let (code, body) = http_request("GET", &node.http, &format!("/api/blobs/{digest}")).unwrap();
    assert_eq!(code, 200, "{digest}: {body}");
    body
}

/// Every coder task ran (and failed, if it did) on `llm_node` only.
fn coders_ran_on(mission: &Value, llm_node: &NodeProcess) {
    for t in mission["tasks"].as_array().unwrap() {
        if !t["id"].as_str().unwrap().starts_with("code") {
            continue;
        }
        if !t["result"].is_null() {
            assert_eq!(t["result"]["node"], llm_node.peer_id.as_str(), "{t}");
        }
        for v in t["violations"].as_array().unwrap() {
            assert_eq!(v["node"], llm_node.peer_id.as_str(), "{t}");
        }
    }
}

#[test]
fn the_coder_changes_code_the_fix_loop_repairs_it_and_faults_end_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let double = LlmDouble::start("coder-test");
    std::fs::write(
        dir.path().join("llm.toml"),
        "[llm]\nprobe_ms = 300\ntimeout_ms = 1500\n",
    )
    .unwrap();
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
    for node in [&with_llm, &without] {
        wait_for(READY_LIMIT, "the Python runtime ready", || {
            let state = node.status()?["runtimes"]["python"].clone();
            assert_ne!(state["state"], "failed", "{state}");
            (state["state"] == "ready").then_some(())
        });
    }
    wait_for(Duration::from_secs(30), "llm offered", || {
        (with_llm.status()?["capabilities"]["tags"]["llm.model"] == "coder-test").then_some(())
    });
    project(&dir.path().join("project"));

    // 1. The goal, end to end, with the diff applied.
    double.set_script(vec![(
        "fib(n) with tests".into(),
        answer(
            "fib",
            "a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a",
            2,
        ),
    )]);
    let file = mission_file(dir.path(), "fib", "Add a function fib(n) with tests");
    let (code, mission) = run(&without, &file);
    assert_eq!(code, 0, "{mission}\n{}", with_llm.log_text());
    assert_eq!(mission["state"], "succeeded");
    let coder = task(&mission, "code");
    let changed: Vec<&str> = coder["result"]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    assert_eq!(changed, ["mathx/fib.py", "tests/test_fib.py"], "{coder}");
    let call = &coder["result"]["llm_calls"][0];
    assert_eq!(call["outcome"], "ok", "{coder}");
    assert_eq!(call["purpose"], "coder");
    assert!(call["tokens_in"].as_u64().unwrap() > 0);
    let prompt = blob(&without, call["prompt"].as_str().unwrap());
    assert!(
        prompt.contains("Add a function fib(n) with tests"),
        "{prompt}"
    );
    assert!(
        prompt.contains("mathx/basic.py"),
        "the prompt shows the code: {prompt}"
    );
    let completion = blob(&without, call["completion"].as_str().unwrap());
    assert!(completion.contains("path=mathx/fib.py"));
    let tests = task(&mission, "test");
    assert_eq!(tests["state"], "succeeded", "{tests}");
    let (code, diff, stderr) = cli(
        &without,
        &["mission", mission["id"].as_str().unwrap(), "--diff"],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(diff.contains("+def fib(n):"), "{diff}");
    coders_ran_on(&mission, &with_llm);

    // The same from a markdown tasklist: the kinds come from the words,
    // a task's text is its line.
    double.set_script(vec![(
        "T2 Implement fib(n) in mathx".into(),
        answer(
            "fib",
            "a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a",
            2,
        ),
    )]);
    std::fs::write(
        dir.path().join("tasks.md"),
        "# Fib\n\n- [ ] T1 Review the code base\n- [ ] T2 Implement fib(n) in mathx (depends on T1)\n- [ ] T3 Test it (depends on T2)\n",
    )
    .unwrap();
    let tasks = dir.path().join("tasks.md");
    let project_dir = dir.path().join("project");
    let (code, stdout, stderr) = cli(
        &without,
        &[
            "submit",
            tasks.to_str().unwrap(),
            "--workspace",
            project_dir.to_str().unwrap(),
            "--wait",
        ],
    );
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let mission = without
        .mission(stdout.lines().next().unwrap().trim())
        .unwrap();
    assert_eq!(task(&mission, "T2")["agent"], "coder", "{mission}");
    assert_eq!(task(&mission, "T3")["agent"], "tester");
    assert_eq!(task(&mission, "T3")["state"], "succeeded", "{mission}");
    assert_eq!(
        task(&mission, "T2")["result"]["node"],
        with_llm.peer_id.as_str()
    );

    // 2. A first answer that breaks its test, repaired by a fix round.
    double.set_script_once("square(n)", &answer("square", "return n * 2", 9));
    double.set_script(vec![(
        "test_square_of_three".into(),
        answer("square", "return n * n", 9),
    )]);
    let file = mission_file(dir.path(), "square", "Add a function square(n) with tests");
    let (code, mission) = run(&without, &file);
    assert_eq!(code, 0, "{mission}");
    assert_eq!(mission["state"], "succeeded", "{mission}");
    let failed = task(&mission, "test");
    assert_eq!(failed["state"], "failed");
    assert_eq!(failed["superseded_by"], "test.fix1", "{failed}");
    assert!(failed["violations"][0]["detail"]
        .as_str()
        .unwrap()
        .contains("test_square_of_three"));
    let fix = task(&mission, "code.fix1");
    assert_eq!(fix["spawned_by"], "test", "{fix}");
    assert_eq!(fix["state"], "succeeded");
    let fix_prompt = blob(
        &without,
        fix["result"]["llm_calls"][0]["prompt"].as_str().unwrap(),
    );
    assert!(
        fix_prompt.contains("test_square_of_three"),
        "the fix round shows the failing test: {fix_prompt}"
    );
    assert_eq!(task(&mission, "test.fix1")["state"], "succeeded");
    let (_, diff, _) = cli(
        &without,
        &["mission", mission["id"].as_str().unwrap(), "--diff"],
    );
    assert!(
        diff.contains("+    return n * n") && !diff.contains("n * 2"),
        "{diff}"
    );
    coders_ran_on(&mission, &with_llm);

    // 3. A malformed answer: bad_model_output, and a retry that succeeds.
    double.set_script_once("cube(n)", "Sorry, I would rather not write code today.");
    double.set_script(vec![(
        "cube(n)".into(),
        answer("cube", "return n ** 3", 27),
    )]);
    let file = mission_file(dir.path(), "cube", "Add a function cube(n) with tests");
    let (code, mission) = run(&without, &file);
    assert_eq!(code, 0, "{mission}");
    let coder = task(&mission, "code");
    assert_eq!(
        coder["violations"][0]["kind"], "bad_model_output",
        "{coder}"
    );
    assert!(coder["violations"][0]["detail"]
        .as_str()
        .unwrap()
        .contains("no fenced block"));
    assert_eq!(coder["violations"][0]["llm_calls"][0]["outcome"], "ok");
    assert_eq!(coder["results_committed"], 1);
    assert!(
        double
            .chat_bodies()
            .last()
            .unwrap()
            .contains("no fenced block"),
        "the retry's prompt says what was wrong"
    );

    // A planner task: the model's fragment joins the running mission after
    // it, and the planner's dependent waits for the fragment too.
    double.set_script(vec![
        (
            "You plan software work".into(),
            "```toml\n[[task]]\nid = \"code\"\nmodule = \"builtin:coder\"\ntitle = \"Write fib\"\ninput = \"Add a function fib(n) with tests\"\n\n[[task]]\nid = \"test\"\nmodule = \"builtin:tester\"\nneeds = [\"code\"]\n```\n".into(),
        ),
        (
            "fib(n) with tests".into(),
            answer("fib", "a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a", 2),
        ),
    ]);
    let file = dir.path().join("planned.toml");
    std::fs::write(
        &file,
        "name = \"planned\"\nworkspace = \"project\"\n\
         [[task]]\nid = \"plan\"\nmodule = \"builtin:planner\"\ninput = \"Add a function fib(n) with tests\"\n\
         [[task]]\nid = \"review\"\nmodule = \"builtin:analyzer\"\nneeds = [\"plan\"]\n",
    )
    .unwrap();
    let (code, mission) = run(&without, &file);
    assert_eq!(code, 0, "{mission}");
    assert_eq!(mission["state"], "succeeded", "{mission}");
    for id in ["code", "test"] {
        assert_eq!(task(&mission, id)["spawned_by"], "plan", "{mission}");
        assert_eq!(task(&mission, id)["state"], "succeeded");
    }
    assert_eq!(task(&mission, "code")["needs"], serde_json::json!(["plan"]));
    assert_eq!(
        task(&mission, "review")["needs"],
        serde_json::json!(["plan", "test"]),
        "the planner's dependent waits for the plan"
    );
    let (_, diff, _) = cli(
        &without,
        &["mission", mission["id"].as_str().unwrap(), "--diff"],
    );
    assert!(diff.contains("+def fib(n):"), "{diff}");
    coders_ran_on(&mission, &with_llm);

    // 4. Transient provider faults are retried inside one call.
    double.set_script(vec![(
        "triple(n)".into(),
        answer("triple", "return 3 * n", 9),
    )]);
    double.push_faults([
        Fault::RateLimited {
            retry_after_secs: 1,
        },
        Fault::Status(500),
        Fault::InvalidJson,
    ]);
    let file = mission_file(dir.path(), "triple", "Add a function triple(n) with tests");
    let (code, mission) = run(&without, &file);
    assert_eq!(code, 0, "{mission}");
    let call = &task(&mission, "code")["result"]["llm_calls"][0];
    assert_eq!(call["tries"], 4, "{call}");
    assert!(
        call["latency_ms"].as_u64().unwrap() >= 1000,
        "Retry-After honoured: {call}"
    );
    assert_eq!(
        with_llm.metric("coditect_llm_requests_total{outcome=\"rate_limited\"}"),
        1.0
    );
    assert_eq!(
        with_llm.metric("coditect_llm_requests_total{outcome=\"server_error\"}"),
        1.0
    );
    assert_eq!(
        with_llm.metric("coditect_llm_requests_total{outcome=\"invalid_answer\"}"),
        1.0
    );

    // 5. A hanging provider: every try times out, the task says so, is
    //    run again and then succeeds, once.
    double.set_script(vec![("half(n)".into(), answer("half", "return n // 2", 1))]);
    double.push_faults([Fault::Hang, Fault::Hang, Fault::Hang, Fault::Hang]);
    let file = mission_file(dir.path(), "half", "Add a function half(n) with tests");
    let (_, mission) = run(&without, &file);
    let coder = task(&mission, "code");
    assert_eq!(coder["violations"][0]["kind"], "llm_unavailable", "{coder}");
    assert!(
        coder["violations"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("did not answer within 1500 ms"),
        "{coder}"
    );
    assert_eq!(coder["state"], "succeeded", "{coder}");
    assert_eq!(coder["results_committed"], 1);
    coders_ran_on(&mission, &with_llm);
    assert!(with_llm.metric("coditect_llm_requests_total{outcome=\"ok\"}") >= 6.0);
    assert!(with_llm.metric("coditect_llm_tokens_total{direction=\"out\"}") > 0.0);

    // The key went to the provider, and nowhere else.
    assert!(double
        .authorizations()
        .iter()
        .any(|a| a == &format!("Bearer {KEY}")));
    let last_mission = mission["id"].as_str().unwrap().to_string();
    for node in [&with_llm, &without] {
        assert!(!node.log_text().contains(KEY), "the key is in a log");
        for path in [
            "/api/status",
            "/metrics",
            &format!("/api/missions/{last_mission}"),
        ] {
            let (_, body) = http_request("GET", &node.http, path).unwrap();
            assert!(!body.contains(KEY), "the key is in {path}");
        }
    }

    // 6. The endpoint goes away: `llm` is withdrawn and a coder task waits
    //    saying why, instead of failing.
    drop(double);
    wait_for(Duration::from_secs(20), "llm withdrawn", || {
        with_llm.status()?["capabilities"]["tags"]["llm"]
            .is_null()
            .then_some(())
    });
    let file = mission_file(dir.path(), "later", "Add a function later(n) with tests");
    let (_, stdout, _) = cli(&without, &["submit", file.to_str().unwrap()]);
    let id = stdout.lines().next().unwrap().trim().to_string();
    let reason = wait_for(Duration::from_secs(60), "the coder waiting for llm", || {
        let mission = without.mission(&id)?;
        let coder = task(&mission, "code").clone();
        let reason = coder["reason"].as_str()?.to_string();
        (coder["state"] == "ready" && reason.contains("llm")).then_some(reason)
    });
    assert!(reason.contains("llm"), "{reason}");
    let mission = without.mission(&id).unwrap();
    assert!(task(&mission, "code")["violations"]
        .as_array()
        .unwrap()
        .is_empty());
}

#[test]
fn plan_asks_a_model_retries_an_invalid_graph_once_and_else_uses_a_playbook() {
    let dir = tempfile::tempdir().unwrap();
    let double = LlmDouble::start("planner");
    let with_llm = NodeProcess::start(
        &dir.path().join("n0"),
        "n0",
        &mesh_flags(
            100,
            None,
            &["--llm-url", &double.base_url, "--llm-model", "planner"],
        ),
    );
    let without = NodeProcess::start(
        &dir.path().join("n1"),
        "n1",
        &mesh_flags(100, Some(&with_llm.bootstrap_addr()), &[]),
    );
    wait_for(Duration::from_secs(30), "llm offered", || {
        (with_llm.status()?["capabilities"]["tags"]["llm.model"] == "planner").then_some(())
    });
    project(&dir.path().join("project"));
    // The first graph has a cycle; the second is good.
    double.set_script_once(
        "Goal:",
        "```toml\nname = \"fib\"\n[[task]]\nid = \"a\"\nmodule = \"builtin:analyzer\"\nneeds = [\"b\"]\n[[task]]\nid = \"b\"\nmodule = \"builtin:coder\"\nneeds = [\"a\"]\ninput = \"x\"\n```",
    );
    double.set_script(vec![(
        "not a valid mission".into(),
        "```toml\nname = \"fib\"\n[[task]]\nid = \"look\"\nmodule = \"builtin:analyzer\"\n[[task]]\nid = \"write\"\nmodule = \"builtin:coder\"\nneeds = [\"look\"]\ninput = \"Add fib(n) to mathx/fib.py\"\n[[task]]\nid = \"check\"\nmodule = \"builtin:tester\"\nneeds = [\"write\"]\n```".into(),
    )]);
    let out = dir.path().join("planned.toml");
    let args: Vec<String> = [
        "plan",
        "add fib(n) with tests",
        "--workspace",
        dir.path().join("project").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--api",
        &with_llm.api(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (status, _, stderr) = coditect_output(&args, Duration::from_secs(120));
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("planned by planner in 2 tries"), "{stderr}");
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.starts_with("workspace = \"project\""), "{text}");
    assert!(text.contains("id = \"write\""), "{text}");
    let bodies = double.chat_bodies();
    assert!(
        bodies[1].contains("cycle"),
        "the retry names the problem: {}",
        bodies[1]
    );
    assert!(
        bodies[0].contains("mathx/basic.py"),
        "the model sees the files"
    );
    let check: Vec<String> = ["submit", out.to_str().unwrap(), "--check"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let (status, stdout, stderr) = coditect_output(&check, Duration::from_secs(60));
    assert!(status.success(), "{stdout}\n{stderr}");

    // A node without a model: the playbook, and the user is told so.
    let mut args = args;
    let last = args.len() - 1;
    args[last] = without.api();
    let (status, _, stderr) = coditect_output(&args, Duration::from_secs(120));
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("no model planned it") && stderr.contains("feature playbook"),
        "{stderr}"
    );
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(
        text.contains("builtin:coder") && text.contains("id = \"analyze\""),
        "{text}"
    );
}

#[test]
fn the_coder_runs_against_the_anthropic_messages_api_too() {
    let dir = tempfile::tempdir().unwrap();
    let double = LlmDouble::start("claude-test");
    std::fs::write(
        dir.path().join("llm.toml"),
        format!(
            "[llm]\napi = \"anthropic\"\nbase_url = \"{}\"\nmodel = \"claude-test\"\napi_key_env = \"CODITECT_TEST_ANTHROPIC_KEY\"\nprobe_ms = 300\n",
            double.base_url
        ),
    )
    .unwrap();
    let config = dir.path().join("llm.toml");
    let node = NodeProcess::start_with_env(
        &dir.path().join("n0"),
        "n0",
        &mesh_flags(100, None, &["--config", config.to_str().unwrap()]),
        &[("CODITECT_TEST_ANTHROPIC_KEY", KEY)],
    );
    wait_for(READY_LIMIT, "python and llm ready", || {
        let status = node.status()?;
        (status["runtimes"]["python"]["state"] == "ready"
            && status["capabilities"]["tags"]["llm"] == "anthropic")
            .then_some(())
    });
    project(&dir.path().join("project"));
    double.set_script(vec![(
        "fib(n) with tests".into(),
        answer(
            "fib",
            "a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a",
            2,
        ),
    )]);
    let file = mission_file(dir.path(), "fib", "Add a function fib(n) with tests");
    let (code, mission) = run(&node, &file);
    assert_eq!(code, 0, "{mission}\nthe double saw {:?}", double.requests());
    let call = &task(&mission, "code")["result"]["llm_calls"][0];
    assert_eq!(call["outcome"], "ok", "{call}");
    assert_eq!(call["model"], "claude-test");
    assert!(double
        .requests()
        .iter()
        .any(|r| r.starts_with("POST /v1/messages")));
    assert!(double
        .authorizations()
        .iter()
        .any(|a| a == &format!("x-api-key {KEY}")));
    let body: Value = serde_json::from_str(double.chat_bodies().last().unwrap()).unwrap();
    assert!(
        body["system"].as_str().unwrap().len() > 20,
        "the system prompt goes to `system`"
    );
    assert!(body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["role"] != "system"));
    assert!(!node.log_text().contains(KEY));
}
