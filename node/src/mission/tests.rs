//! Cross-module tests: the seeds' own tasklists and one tasklist of each
//! family people write (spec-kit, Kiro and cc-sdd, openprd-style ids and
//! fields) parsed end to end, and property tests of DAG validation.
//!
//! The seed files are copied under `node/tests/fixtures/missions/` so these
//! tests never depend on `../shared` at run time; when the real seeds are
//! present beside the repository, one extra test checks that the copies
//! still parse to the same missions. The other families are under
//! `node/tests/fixtures/tasklists/`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;

use proptest::prelude::*;

use super::*;

const SEED_000: &str = include_str!("../../tests/fixtures/missions/seed_000_tasklist.md");
const SEED_001: &str = include_str!("../../tests/fixtures/missions/seed_001_plan.md");
const SEED_002: &str = include_str!("../../tests/fixtures/missions/seed_002_project_plan.md");
const SEED_003: &str = include_str!("../../tests/fixtures/missions/seed_003_phase1.md");
const SEED_004: &str = include_str!("../../tests/fixtures/missions/seed_004_tasklist.md");
const SPECKIT: &str = include_str!("../../tests/fixtures/tasklists/speckit_tasks.md");
const KIRO: &str = include_str!("../../tests/fixtures/tasklists/kiro_tasks.md");
const CC_SDD: &str = include_str!("../../tests/fixtures/tasklists/cc_sdd_tasks.md");
const OPENPRD: &str = include_str!("../../tests/fixtures/tasklists/openprd_tasks.md");

fn parse(text: &str) -> MissionSpec {
    parse_markdown(text, &AgentConfig::default()).unwrap()
}

fn by_id<'a>(spec: &'a MissionSpec, id: &str) -> &'a TaskSpec {
    spec.tasks
        .iter()
        .find(|t| t.id == id)
        .unwrap_or_else(|| panic!("no task {id}"))
}

/// The innermost heading of a markdown task, from its input's context line.
fn innermost_heading(task: &TaskSpec) -> Option<&str> {
    let input = task.input.as_deref()?;
    let context = input.lines().last()?.strip_prefix("Context: ")?;
    context.rsplit(" > ").next()
}

/// Checks that a validated mission's order puts every task after what it needs.
fn assert_order_respects_needs(v: &ValidatedMission) {
    let position: HashMap<usize, usize> = v
        .order()
        .iter()
        .enumerate()
        .map(|(at, &i)| (i, at))
        .collect();
    assert_eq!(position.len(), v.spec().tasks.len());
    for (i, task) in v.spec().tasks.iter().enumerate() {
        for &d in v.needs_of(i) {
            if !task.done && !v.spec().tasks[d].done {
                assert!(
                    position[&d] < position[&i],
                    "{} before {}",
                    v.spec().tasks[d].id,
                    task.id
                );
            }
        }
    }
}

#[test]
fn seed_000_tasklist() {
    let spec = parse(SEED_000);
    assert_eq!(
        spec.name,
        "TASKLIST.md - CODITECT Next Generation Implementation Tasks"
    );
    assert_eq!(spec.tasks.len(), 227, "every checkbox of the file");
    assert!(spec
        .tasks
        .iter()
        .all(|t| !t.done && t.priority == Priority::P2));
    assert!(
        spec.tasks.iter().all(|t| t.needs.is_empty()),
        "the file names no dependency"
    );

    // Each "(N tasks)" heading of the seed holds exactly N checkboxes.
    let mut per_heading: BTreeMap<&str, usize> = BTreeMap::new();
    for task in &spec.tasks {
        *per_heading
            .entry(innermost_heading(task).unwrap())
            .or_default() += 1;
    }
    let mut checked = 0;
    for line in SEED_000.lines().filter(|l| l.starts_with('#')) {
        let heading = line.trim_start_matches('#').trim();
        if let Some(count) = heading
            .strip_suffix(" tasks)")
            .and_then(|h| h.rsplit('(').next())
            .and_then(|n| n.parse::<usize>().ok())
        {
            assert_eq!(per_heading.get(heading), Some(&count), "{heading}");
            checked += 1;
        }
    }
    assert_eq!(checked, 20);

    let first = &spec.tasks[0];
    assert_eq!(
        first.id,
        "day-1-project-setup-4-tasks.1-initialize-python-project-structure-with"
    );
    assert_eq!(
        first.title.as_deref(),
        Some("Initialize Python project structure with Poetry")
    );
    let tests = by_id(
        &spec,
        "day-2-3-layer-1-orchestrator-12-tasks.12-write-unit-tests-for-layer-1",
    );
    assert_eq!(tests.agent.as_deref(), Some("tester"));
    assert_eq!(tests.module, ModuleRef::Path("builtin:tester".into()));
    let present = by_id(&spec, "next-actions.1-present-executive-summary-to");
    assert_eq!(
        present.title.as_deref(),
        Some("Present EXECUTIVE-SUMMARY to stakeholders")
    );
    let audit = by_id(
        &spec,
        "security-audit-3-tasks.1-perform-security-vulnerability-scan",
    );
    assert_eq!(audit.agent.as_deref(), Some("analyzer"));
    assert_eq!(audit.requires, ["wasm"]);

    let v = validate(&spec, None).unwrap();
    assert_eq!(v.ready().len(), 227);
}

#[test]
fn seed_001_plan_with_nested_outline() {
    let spec = parse(SEED_001);
    assert_eq!(
        spec.name,
        "CODITECT Next Generation - Project Implementation Plan"
    );
    assert_eq!(spec.tasks.len(), 430);

    let setup = by_id(&spec, "1.1");
    assert_eq!(setup.title.as_deref(), Some("Project Setup"));
    assert_eq!(
        setup.needs,
        [
            "1.1.1-initialize-rust-workspace-with-cargo",
            "1.1.2-configure-build-dependencies-tokio-tonic",
            "1.1.3-setup-linting-clippy-rustfmt",
            "1.1.4-create-ci-cd-pipeline-template",
            "1.1.5-setup-local-redis-instance",
            "1.1.6-setup-local-nats-instance",
        ]
    );
    assert!(setup
        .input
        .as_deref()
        .unwrap()
        .contains("Time: 4 hours | Owner: DevOps | Status: Pending"));
    // Phase 2 numbers its work 1.1, 1.2, ... again.
    assert_eq!(
        by_id(&spec, "1.1-2").title.as_deref(),
        Some("Redis Cluster Setup")
    );
    assert_eq!(
        by_id(&spec, "1.1-3").title.as_deref(),
        Some("Peer Discovery Service")
    );
    assert_eq!(by_id(&spec, "6.3").title.as_deref(), Some("Documentation"));
    let child = by_id(&spec, "1.1-2.1-setup-redis-3-node-cluster-for");
    assert!(child.needs.is_empty());
    assert!(by_id(&spec, "1.1-2").needs.contains(&child.id));

    let v = validate(&spec, None).unwrap();
    assert_order_respects_needs(&v);
    let position: HashMap<&str, usize> = v
        .ordered_tasks()
        .enumerate()
        .map(|(at, t)| (t.id.as_str(), at))
        .collect();
    assert!(position["1.1.6-setup-local-nats-instance"] < position["1.1"]);
}

#[test]
fn seed_002_quality_gates() {
    let spec = parse(SEED_002);
    assert_eq!(
        spec.name,
        "PROJECT-PLAN.md - CODITECT Next Generation Implementation Roadmap"
    );
    assert_eq!(spec.tasks.len(), 25);
    assert_eq!(
        spec.tasks[0].id,
        "phase-1-quality-gate.1-all-unit-tests-pass-85-coverage"
    );
    assert_eq!(spec.tasks[0].agent.as_deref(), Some("tester"));
    let docs = by_id(
        &spec,
        "phase-1-quality-gate.6-documentation-complete-api-docs-runbooks",
    );
    assert_eq!(docs.agent.as_deref(), Some("docs"));
    let sections: HashSet<&str> = spec.tasks.iter().filter_map(innermost_heading).collect();
    assert_eq!(sections.len(), 4, "{sections:?}");
    validate(&spec, None).unwrap();
}

#[test]
fn seed_003_phase_plan() {
    let spec = parse(SEED_003);
    assert_eq!(spec.name, "CODITECT Phase 1 Execution Plan");
    assert_eq!(spec.tasks.len(), 157);
    for id in ["FR1", "FR5", "QR3", "PR3", "1.2", "6.3"] {
        by_id(&spec, id);
    }
    assert_eq!(
        by_id(&spec, "FR2").title.as_deref(),
        Some("Task Queue Manager distributes tasks to agents")
    );
    // "2.2 ... - complete" continues work package 2.2 under a new line.
    assert_eq!(
        by_id(&spec, "2.2-2").title.as_deref(),
        Some("Consistency Violation Detection - complete (6h) - Day 6")
    );
    let v = validate(&spec, None).unwrap();
    assert_eq!(v.order().len(), 157);
}

#[test]
fn seed_004_format_tasklist() {
    let spec = parse(SEED_004);
    assert_eq!(spec.name, "CODITECT V2 Autonomous Task Execution");
    let ids: Vec<&str> = spec.tasks.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "T001.001",
            "T001.002",
            "T001.003",
            "T001.009",
            "T001.010",
            "T001.011",
            "T001.014",
            "T003.002",
            "T008.001",
            "T008.002",
            "T008.006",
            "T008.009",
            "T010.009",
            "T010.011",
            "e010-rollout.3-write-the-autonomous-orchestration-guide",
        ]
    );
    let done: Vec<&str> = spec
        .tasks
        .iter()
        .filter(|t| t.done)
        .map(|t| t.id.as_str())
        .collect();
    assert_eq!(done, ["T001.001", "T001.002", "T001.003"]);

    let needs = |id: &str| by_id(&spec, id).needs.clone();
    assert_eq!(needs("T001.003"), ["T001.002"]);
    assert_eq!(needs("T001.010"), ["T001.009"], "from the description line");
    assert_eq!(needs("T001.011"), ["T001.009"]);
    assert_eq!(needs("T001.014"), ["T001.009", "T001.010", "T001.011"]);
    assert!(needs("T003.002").is_empty(), "blocked by prose, not a task");
    assert_eq!(needs("T008.002"), ["T008.001"]);
    assert_eq!(needs("T008.006"), ["T008.002"]);
    assert_eq!(needs("T008.009"), ["T008.006", "T008.002"]);
    assert_eq!(needs("T010.009"), ["T008.009"]);
    assert_eq!(needs("T010.011"), ["T010.009"]);
    assert_eq!(
        needs("e010-rollout.3-write-the-autonomous-orchestration-guide"),
        ["T010.011"]
    );

    let priority = |id: &str| by_id(&spec, id).priority;
    assert_eq!(priority("T001.009"), Priority::P0, "from the phase heading");
    assert_eq!(priority("T001.010"), Priority::P1, "the line wins");
    assert_eq!(priority("T003.002"), Priority::P0);
    assert_eq!(priority("T008.001"), Priority::P1);
    assert_eq!(priority("T008.009"), Priority::P3);
    assert_eq!(priority("T010.011"), Priority::P2, "no priority anywhere");

    let agent = |id: &str| by_id(&spec, id).agent.clone().unwrap();
    assert_eq!(agent("T001.010"), "coder");
    assert_eq!(agent("T001.014"), "tester");
    assert_eq!(agent("T008.009"), "analyzer");
    assert_eq!(agent("T003.002"), "coder");
    // No keyword in its own line, so the phase heading ("Validation") decides.
    assert_eq!(agent("T010.011"), "tester");
    assert_eq!(agent("T008.001"), "general");
    assert_eq!(
        agent("e010-rollout.3-write-the-autonomous-orchestration-guide"),
        "docs"
    );
    assert_eq!(by_id(&spec, "T001.010").requires, ["wasm", "llm"]);
    assert_eq!(by_id(&spec, "T010.011").requires, ["wasm"]);

    let v = validate(&spec, None).unwrap();
    assert_order_respects_needs(&v);
    let ready: Vec<&str> = v.ready().iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ready, ["T001.009", "T003.002", "T008.001"]);
}

/// Reads a fixture with the default routing; the graph must validate.
fn read(text: &str) -> MarkdownMission {
    let mission = read_markdown(text, &AgentConfig::default()).unwrap();
    let v = validate(&mission.spec, None).unwrap();
    assert_order_respects_needs(&v);
    mission
}

/// Every task's needs, by id, in file order.
fn graph(spec: &MissionSpec) -> Vec<(&str, Vec<&str>)> {
    spec.tasks
        .iter()
        .map(|t| (t.id.as_str(), t.needs.iter().map(String::as_str).collect()))
        .collect()
}

#[test]
fn speckit_phases_run_in_order_and_p_tasks_in_parallel() {
    let mission = read(SPECKIT);
    let spec = &mission.spec;
    assert_eq!(spec.name, "Tasks: Photo Album Organizer");
    assert!(mission.implied_order);
    let expected: Vec<(&str, Vec<&str>)> = vec![
        ("T001", vec![]),
        // Done tasks still show the order they were written in.
        ("T002", vec!["T001"]),
        ("T003", vec!["T002"]),
        ("T004", vec!["T002"]),
        // Phase 2 waits for all of phase 1: its last tasks, the [P] pair.
        ("T005", vec!["T003", "T004"]),
        ("T006", vec!["T005"]),
        ("T007", vec!["T005"]),
        ("T008", vec!["T006", "T007"]),
        ("T009", vec!["T008"]),
        ("T010", vec!["T009"]),
        ("T011", vec!["T009"]),
        ("T012", vec!["T009"]),
        ("T013", vec!["T009"]),
        // Written "(depends on T012, T013)" first, then the run of [P] tasks before it.
        ("T014", vec!["T012", "T013", "T010", "T011"]),
        ("T015", vec!["T014"]),
        ("T016", vec!["T015"]),
        ("T017", vec!["T016"]),
        ("T018", vec!["T017"]),
        ("T019", vec!["T018"]),
        ("T020", vec!["T019"]),
        ("T021", vec!["T020"]),
        // "Depends on T018–T021": a range of declared ids.
        ("T022", vec!["T018", "T019", "T020", "T021"]),
        ("T023", vec!["T022"]),
    ];
    assert_eq!(
        graph(spec),
        expected,
        "T998 and T999 are in a fence and a comment"
    );
    let done: Vec<&str> = spec
        .tasks
        .iter()
        .filter(|t| t.done)
        .map(|t| t.id.as_str())
        .collect();
    assert_eq!(done, ["T001", "T002"], "[X] is done");

    let t010 = by_id(spec, "T010");
    assert_eq!(
        t010.title.as_deref(),
        Some("Contract test for POST /albums in backend/tests/contract/test_albums_post.py"),
        "[P] and [US1] are metadata, not title"
    );
    assert_eq!(t010.agent.as_deref(), Some("tester"));
    assert_eq!(
        t010.priority,
        Priority::P1,
        "from (Priority: P1) in the phase heading"
    );
    assert!(t010
        .input
        .as_deref()
        .unwrap()
        .starts_with("T010 [P] [US1] Contract test"));
    assert_eq!(by_id(spec, "T019").priority, Priority::P2);
    assert_eq!(by_id(spec, "T022").priority, Priority::P2);
    assert_eq!(by_id(spec, "T014").agent.as_deref(), Some("coder"));
    assert_eq!(by_id(spec, "T021").agent.as_deref(), Some("docs"));
    // JPEG2000, (P50, P99) and the story labels are text; only the stale
    // reference to a T id that does not exist is worth a warning.
    assert_eq!(
        mission.warnings,
        ["line 101: task `T023` names `T024` as a dependency, but no task declares that id; ignored"]
    );
}

#[test]
fn kiro_groups_follow_each_other_and_requirements_are_not_dependencies() {
    let mission = read(KIRO);
    let spec = &mission.spec;
    assert_eq!(spec.name, "Implementation Plan");
    assert!(mission.implied_order);
    let expected: Vec<(&str, Vec<&str>)> = vec![
        ("1", vec![]),
        // Group 2 (a header only, not a task) starts after task 1.
        ("2.1", vec!["1"]),
        ("2.2", vec!["2.1"]),
        ("2.3", vec!["2.2"]),
        // Nothing waits for the optional 2.3.
        ("2.4", vec!["2.2"]),
        // Group 3 (nested sub-steps) follows group 2.
        ("3.1", vec!["2.4"]),
        ("3.2", vec!["3.1"]),
        ("3.3", vec!["3.2"]),
        ("4", vec!["3.2"]),
        // Group 5's header has work of its own: it is the group's first task.
        ("5", vec!["4"]),
        ("5.1", vec!["3.2", "5"]),
        // "after task 5" names the group: its last member.
        ("6", vec!["5.1"]),
    ];
    assert_eq!(graph(spec), expected);
    let done: Vec<&str> = spec
        .tasks
        .iter()
        .filter(|t| t.done)
        .map(|t| t.id.as_str())
        .collect();
    assert_eq!(done, ["1", "2.1"], "[-] is in progress, not done");
    assert!(mission.warnings.is_empty(), "{:?}", mission.warnings);

    let user = by_id(spec, "2.2");
    assert_eq!(
        user.title.as_deref(),
        Some("Implement User model with validation")
    );
    assert_eq!(by_id(spec, "3.2").agent.as_deref(), Some("coder"));
    let input = user.input.as_deref().unwrap();
    assert!(input.contains("_Requirements: 1.2_"), "{input}");
    assert!(
        input.contains("\nPart of: 2. Implement data models and validation"),
        "{input}"
    );
    assert_eq!(by_id(spec, "2.3").agent.as_deref(), Some("tester"));
    assert_eq!(by_id(spec, "4").agent.as_deref(), Some("tester"));
    assert_eq!(by_id(spec, "3.1").agent.as_deref(), Some("coder"));
}

#[test]
fn cc_sdd_parallel_markers_and_depends_fields_inside_groups() {
    let mission = read(CC_SDD);
    let expected: Vec<(&str, Vec<&str>)> = vec![
        ("1.1", vec![]),
        ("1.2", vec![]),
        ("1.3", vec!["1.1", "1.2"]),
        ("2.1", vec!["1.3"]),
        ("2.2", vec!["1.3"]),
        ("2.3", vec!["2.2", "2.1"]),
        ("2.4", vec!["2.3"]),
        ("3", vec!["1.3", "2.4"]),
    ];
    assert_eq!(graph(&mission.spec), expected);
    assert_eq!(
        by_id(&mission.spec, "2.2").title.as_deref(),
        Some("Generate the filter graph and the codec matrix"),
        "(P) is a marker"
    );
    assert!(mission.warnings.is_empty(), "{:?}", mission.warnings);
}

#[test]
fn openprd_fields_ids_and_marks() {
    let mission = read(OPENPRD);
    let spec = &mission.spec;
    assert!(!mission.implied_order, "only the written dependencies");
    let expected: Vec<(&str, Vec<&str>)> = vec![
        ("T001.00", vec![]),
        ("T001.01", vec!["T001.00"]),
        ("T001.02", vec!["T001.01"]),
        ("T001.03", vec!["T001.02"]),
        ("T001.04", vec!["T001.03", "TASK-001"]),
        ("T040.1", vec!["T001.03"]),
        ("T040.2a", vec!["T040.1"]),
        ("T040.2b", vec!["T040.2a"]),
        ("I-1.1", vec![]),
        ("I-1.2", vec!["I-1.1"]),
        ("TASK-001", vec!["I-1.2", "I-1.1"]),
        ("TASK-002", vec!["T001.04", "T040.2b", "TASK-001"]),
    ];
    assert_eq!(graph(spec), expected);
    let done: Vec<&str> = spec
        .tasks
        .iter()
        .filter(|t| t.done)
        .map(|t| t.id.as_str())
        .collect();
    assert_eq!(
        done,
        ["T001.00", "T001.01"],
        "[~], [/] and [-] are not done"
    );
    assert_eq!(by_id(spec, "TASK-002").priority, Priority::P1);
    assert_eq!(
        mission.warnings,
        ["line 36: task `TASK-002` names `T050.1` as a dependency, but no task declares that id; ignored"]
    );
}

#[test]
fn ordered_formats_keep_done_tasks_from_carrying_the_order() {
    // T002 is done but T001 is not: T003 must still wait for T001.
    let mission = read("## Phase 1: Setup\n- [ ] T001 a\n- [x] T002 b\n## Phase 2: Core\n- [ ] T003 [P] c\n- [ ] T004 [P] d\n- [ ] T005 e\n");
    assert_eq!(
        graph(&mission.spec),
        vec![
            ("T001", vec![]),
            ("T002", vec!["T001"]),
            ("T003", vec!["T002", "T001"]),
            ("T004", vec!["T002", "T001"]),
            ("T005", vec!["T003", "T004"]),
        ]
    );
}

#[test]
fn a_written_dependency_on_a_later_task_takes_it_out_of_file_order() {
    // Task 2 waits for task 4, which file order puts after it: nothing
    // waits for 2 by position, so 4 can follow 3 without a cycle.
    let mission = read(
        "# Plan\n- [ ] 1. Schema\n- [ ] 2. Migrate the old tests\n  - Depends on task 4 (the fixture)\n\
         - [ ] 3. Service\n- [ ] 4. Test fixture\n- [ ] 5. Docs\n",
    );
    assert_eq!(
        graph(&mission.spec),
        vec![
            ("1", vec![]),
            ("2", vec!["4", "1"]),
            ("3", vec!["1"]),
            ("4", vec!["3"]),
            ("5", vec!["4"]),
        ]
    );
    assert_eq!(mission.warnings.len(), 1, "{:?}", mission.warnings);
    assert!(mission.warnings[0].starts_with("line 3: task `2` is written to wait for `4`"));
}

#[test]
fn heads_take_ids_and_tags_in_any_order() {
    let mission = read(
        "- [ ] T003 [Story 2] Label\n\
         - [ ] [T001] [P] [US1] [deps: T003] Bracketed id\n\
         - [ ] [P] T002 Marker first\n\
         - [ ] Task 4: Prefixed id, after task 2\n\
         - [ ] [Fix the parser](https://example.com/issue) link stays the title\n",
    );
    let spec = &mission.spec;
    assert!(mission.implied_order);
    assert_eq!(
        graph(spec),
        vec![
            ("T003", vec![]),
            ("T001", vec!["T003"]),
            ("T002", vec!["T003"]),
            ("4", vec!["T001", "T002"]),
            ("task.5-fix-the-parser-https-example-com", vec!["4"]),
        ]
    );
    assert_eq!(by_id(spec, "T001").title.as_deref(), Some("Bracketed id"));
    assert_eq!(by_id(spec, "T003").title.as_deref(), Some("Label"));
    assert_eq!(
        by_id(spec, "4").title.as_deref(),
        Some("Prefixed id, after task 2")
    );
    assert!(
        mission.warnings.is_empty(),
        "a plain number nobody declares is text"
    );
}

#[test]
fn formats_are_chosen_by_file_name_and_content_type() {
    use std::path::Path;
    assert_eq!(
        MissionFormat::from_path(Path::new("m.md")),
        MissionFormat::Markdown
    );
    assert_eq!(
        MissionFormat::from_path(Path::new("m.MARKDOWN")),
        MissionFormat::Markdown
    );
    assert_eq!(
        MissionFormat::from_path(Path::new("m.toml")),
        MissionFormat::Toml
    );
    assert_eq!(
        MissionFormat::from_content_type(Some("text/markdown; charset=utf-8")),
        MissionFormat::Markdown
    );
    assert_eq!(MissionFormat::from_content_type(None), MissionFormat::Toml);
    let agents = AgentConfig::default();
    let md = parse_mission("- [ ] T1 x\n", MissionFormat::Markdown, &agents).unwrap();
    assert_eq!(md.tasks[0].id, "T1");
    let toml = parse_mission(
        "[[task]]\nid = \"a\"\nmodule = \"a.wat\"\n",
        MissionFormat::Toml,
        &agents,
    );
    assert_eq!(toml.unwrap().tasks[0].id, "a");
}

#[test]
fn markdown_errors_surface_in_validation() {
    // An undeclared id is a warning of the parser, not a refusal (it used
    // to be kept and refused here as an unknown dependency).
    let unknown = read_markdown("- [ ] T1 after T9\n", &AgentConfig::default()).unwrap();
    assert!(unknown.spec.tasks[0].needs.is_empty());
    assert_eq!(unknown.warnings.len(), 1);
    assert!(
        unknown.warnings[0].contains("`T9`"),
        "{:?}",
        unknown.warnings
    );
    validate(&unknown.spec, None).unwrap();
    let duplicate = parse("- [ ] T1 a\n- [ ] T1 b\n");
    assert_eq!(
        validate(&duplicate, None).unwrap_err(),
        MissionError::DuplicateId("T1".into())
    );
    let cycle = parse("- [ ] T1 after T3\n- [ ] T2 after T1\n- [ ] T3 after T2\n");
    assert_eq!(
        validate(&cycle, None).unwrap_err().to_string(),
        "dependency cycle: T1 -> T3 -> T2 -> T1"
    );
    // The parent gathers its subtasks, so a subtask waiting on it is a cycle.
    let nested = parse("- [ ] T1 epic\n  - [ ] T2 part, after T1\n");
    assert_eq!(
        validate(&nested, None).unwrap_err().to_string(),
        "dependency cycle: T1 -> T2 -> T1"
    );
    let broken_by_done = parse("- [ ] T1 after T2\n- [x] T2 after T1\n");
    validate(&broken_by_done, None).unwrap();
    let nothing = parse_markdown(
        "# Nothing to do\n\n- a bullet, no checkbox\n",
        &AgentConfig::default(),
    );
    assert_eq!(nothing, Err(MissionError::NoMarkdownTasks));
    let message = nothing.unwrap_err().to_string();
    for format in ["spec-kit", "Kiro", "seed"] {
        assert!(message.contains(format), "{message}");
    }
    assert!(!message.contains('\n'));
}

#[test]
fn toml_errors_surface_in_validation() {
    let spec = parse_toml(
        "name = \"m\"\n[[task]]\nid = \"a\"\nmodule = \"a.wat\"\nneeds = [\"c\"]\n\
         [[task]]\nid = \"b\"\nmodule = \"b.wat\"\nneeds = [\"a\"]\n\
         [[task]]\nid = \"c\"\nmodule = \"c.wat\"\nneeds = [\"b\"]\n",
    )
    .unwrap();
    assert_eq!(
        validate(&spec, None).unwrap_err().to_string(),
        "dependency cycle: a -> c -> b -> a"
    );
    let spec =
        parse_toml("[[task]]\nid = \"a\"\nmodule = \"a.wat\"\n[task.limits]\nfuel = 0\n").unwrap();
    assert!(matches!(
        validate(&spec, None),
        Err(MissionError::InvalidLimits { .. })
    ));
}

fn chain(length: usize, done: usize) -> MissionSpec {
    let mut text = String::from("name = \"chain\"\n");
    for i in 0..length {
        text.push_str(&format!(
            "[[task]]\nid = \"t{i}\"\nmodule = \"builtin:noop\"\n"
        ));
        if i > 0 {
            text.push_str(&format!("needs = [\"t{}\"]\n", i - 1));
        }
        if i < done {
            text.push_str("done = true\n");
        }
    }
    parse_toml(&text).unwrap()
}

#[test]
fn a_chain_longer_than_the_cap_is_refused_naming_its_last_task() {
    let max = caps::MAX_DEPENDENCY_DEPTH;
    assert!(validate(&chain(max, 0), None).is_ok());
    let error = validate(&chain(max + 1, 0), None).unwrap_err();
    assert!(
        matches!(&error, MissionError::TooDeep { task, depth, .. } if task == &format!("t{max}") && *depth == max + 1),
        "{error}"
    );
    assert!(error.to_string().contains("cap of 2000"), "{error}");
    // Done tasks wait for nothing: they do not count.
    assert!(validate(&chain(max + 10, 10), None).is_ok());
    // Wide is fine: the same number of tasks side by side.
    let mut text = String::from("name = \"wide\"\n");
    for i in 0..max + 1 {
        text.push_str(&format!(
            "[[task]]\nid = \"w{i}\"\nmodule = \"builtin:noop\"\n"
        ));
    }
    assert!(validate(&parse_toml(&text).unwrap(), None).is_ok());
}

/// The real seeds, when the shared folder sits beside the repository as in
/// CI: the copies must still parse to the same missions as the originals.
#[test]
fn real_seeds_match_the_copies_when_present() {
    let dir = PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../../shared/seeds");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!("skipping: {} is not there", dir.display());
        return;
    };
    let copies: HashMap<&str, &str> = HashMap::from([
        ("000", SEED_000),
        ("001", SEED_001),
        ("002", SEED_002),
        ("003", SEED_003),
    ]);
    let mut seen = 0;
    for entry in entries {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !name.ends_with(".txt") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let parsed = parse_markdown(&text, &AgentConfig::default());
        match copies.get(&name[..3]) {
            Some(copy) => {
                let spec = parsed.unwrap();
                assert_eq!(spec, parse(copy), "{name} drifted from its copy");
                validate(&spec, None).unwrap();
            }
            // Seed 004 describes the format in prose and has no checkbox.
            None => assert_eq!(parsed, Err(MissionError::NoMarkdownTasks), "{name}"),
        }
        seen += 1;
    }
    assert!(seen >= 5, "expected the five seeds in {}", dir.display());
}

/// A random DAG: `n` tasks, each needing some of the tasks of lower rank,
/// listed in a shuffled order so file order is no hint.
fn dag() -> impl Strategy<Value = MissionSpec> {
    (1usize..24)
        .prop_flat_map(|n| {
            (
                Just(n),
                proptest::collection::vec(proptest::bool::weighted(0.25), n * n),
                Just((0..n).collect::<Vec<usize>>()).prop_shuffle(),
                proptest::collection::vec(0usize..4, n),
            )
        })
        .prop_map(|(n, edges, shuffled, priorities)| {
            let tasks = shuffled
                .iter()
                .map(|&rank| {
                    let mut task =
                        TaskSpec::new(format!("t{rank}"), ModuleRef::Path("builtin:noop".into()));
                    task.needs = (0..rank)
                        .filter(|&lower| edges[rank * n + lower])
                        .map(|lower| format!("t{lower}"))
                        .collect();
                    task.priority = Priority::ALL[priorities[rank]];
                    task
                })
                .collect();
            MissionSpec {
                max_fix_rounds: None,
                name: "dag".into(),
                tasks,
                workspace: None,
            }
        })
}

/// Pairs `(a, b)` where `a` reaches `b` by following needs (a != b).
fn reachable_pairs(spec: &MissionSpec) -> Vec<(String, String)> {
    let needs: HashMap<&str, &Vec<String>> = spec
        .tasks
        .iter()
        .map(|t| (t.id.as_str(), &t.needs))
        .collect();
    let mut pairs = Vec::new();
    for task in &spec.tasks {
        let mut seen: HashSet<&str> = HashSet::new();
        let mut stack: Vec<&str> = task.needs.iter().map(String::as_str).collect();
        while let Some(node) = stack.pop() {
            if seen.insert(node) {
                stack.extend(needs[node].iter().map(String::as_str));
            }
        }
        let mut reached: Vec<&str> = seen.into_iter().collect();
        reached.sort_unstable();
        pairs.extend(
            reached
                .into_iter()
                .map(|b| (task.id.clone(), b.to_string())),
        );
    }
    pairs
}

proptest! {
    #[test]
    fn random_dags_validate_in_an_order_that_respects_every_edge(spec in dag()) {
        let v = validate(&spec, None).unwrap();
        let position: HashMap<&str, usize> = v
            .ordered_tasks()
            .enumerate()
            .map(|(at, t)| (t.id.as_str(), at))
            .collect();
        prop_assert_eq!(position.len(), spec.tasks.len());
        for task in &spec.tasks {
            for dep in &task.needs {
                prop_assert!(position[dep.as_str()] < position[task.id.as_str()]);
            }
        }
        // The first task in order is a most urgent one among those needing nothing.
        let first = v.ordered_tasks().next().unwrap();
        let best = spec.tasks.iter().filter(|t| t.needs.is_empty()).map(|t| t.priority).min();
        prop_assert_eq!(Some(first.priority), best);
    }

    #[test]
    fn a_back_edge_is_reported_as_a_real_cycle(spec in dag(), pick in any::<prop::sample::Index>()) {
        let mut spec = spec;
        let pairs = reachable_pairs(&spec);
        // Without any path, the back edge is a task needing itself.
        let (a, b) = if pairs.is_empty() {
            let id = spec.tasks[pick.index(spec.tasks.len())].id.clone();
            (id.clone(), id)
        } else {
            pairs[pick.index(pairs.len())].clone()
        };
        spec.tasks.iter_mut().find(|t| t.id == b).unwrap().needs.push(a.clone());

        let Err(MissionError::Cycle(members)) = validate(&spec, None) else {
            panic!("no cycle reported after {b} -> {a}");
        };
        prop_assert!(members.len() >= 2);
        prop_assert_eq!(members.first(), members.last());
        let inner = &members[..members.len() - 1];
        let distinct: HashSet<&String> = inner.iter().collect();
        prop_assert_eq!(distinct.len(), inner.len(), "{:?}", members);
        let needs: HashMap<&str, &Vec<String>> =
            spec.tasks.iter().map(|t| (t.id.as_str(), &t.needs)).collect();
        for pair in members.windows(2) {
            prop_assert!(
                needs[pair[0].as_str()].contains(&pair[1]),
                "{} does not need {} in {:?}", pair[0], pair[1], members
            );
        }
    }
}

/// Pieces of markdown, mixed at random to look for panics and bad ids.
fn markdown_fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("- [ ] ".to_string()),
        Just("- [x] ".to_string()),
        Just("1. [ ] ".to_string()),
        Just("  ".to_string()),
        Just("\n".to_string()),
        Just("# ".to_string()),
        Just("### ".to_string()),
        Just("```\n".to_string()),
        Just("T1 ".to_string()),
        Just("T2.3 ".to_string()),
        Just("1.1 ".to_string()),
        Just("P0 ".to_string()),
        Just("(T1, T2.3) ".to_string()),
        Just("depends on ".to_string()),
        Just("after ".to_string()),
        Just("and ".to_string()),
        Just("**".to_string()),
        Just("é→ ".to_string()),
        Just("[P] ".to_string()),
        Just("[US1] ".to_string()),
        Just("(P) ".to_string()),
        Just("- [ ]* ".to_string()),
        Just("- [~] ".to_string()),
        Just("2. ".to_string()),
        Just("2.1 ".to_string()),
        Just("T001-T003 ".to_string()),
        Just("\n  - _Requirements: 1.1_\n".to_string()),
        Just("\n  - Depends: 2, T1\n".to_string()),
        Just("\n  - Blocks: T2.3\n".to_string()),
        Just("<!-- ".to_string()),
        Just("## Phase 1\n".to_string()),
        "[a-zA-Z0-9 .,()]{0,12}",
    ]
}

proptest! {
    #[test]
    fn any_markdown_parses_to_valid_ids_without_panicking(
        parts in proptest::collection::vec(markdown_fragment(), 0..80)
    ) {
        let text = parts.concat();
        let spec = match parse_markdown(&text, &AgentConfig::default()) {
            Ok(spec) => spec,
            Err(MissionError::NoMarkdownTasks) => return Ok(()),
            Err(other) => return Err(TestCaseError::fail(other.to_string())),
        };
        for task in &spec.tasks {
            prop_assert!(check_id(&task.id).is_ok(), "{:?}", task.id);
        }
        // Whatever the verdict, validation must reach one without panicking.
        let _ = validate(&spec, None);
        prop_assert_eq!(parse(&text), spec, "parsing is deterministic");
    }
}

#[test]
fn deep_nesting_stays_cheap() {
    // Each level is indented one more column; quadratic work per item would
    // show here as a test that takes minutes instead of milliseconds.
    let mut text = String::from("# Deep\n- [ ] R1 root\n");
    for level in 0..1500 {
        text.push_str(&" ".repeat(level));
        text.push_str(&format!("- [ ] T{level} step after R1\n"));
    }
    let spec = parse(&text);
    assert_eq!(spec.tasks.len(), 1501);
    assert_eq!(spec.tasks[1].needs, ["R1", "T1"]);
    assert_eq!(spec.tasks[2].needs, ["R1", "T2"]);
    assert_eq!(spec.tasks[1500].needs, ["R1"]);
    validate(&spec, None).unwrap();
}
