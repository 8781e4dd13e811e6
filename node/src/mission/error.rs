//! Why a mission was refused. Each message is one line that names the
//! problem (and the task, where there is one), because it becomes an HTTP 400
//! body and the CLI's exit-2 error as it is.

/// A mission that cannot be accepted, from parsing or from validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MissionError {
    /// The file is not valid TOML; `line` is 1-based when the parser knows it.
    #[error("invalid mission TOML{}: {message}", line.map(|l| format!(" at line {l}")).unwrap_or_default())]
    Syntax {
        /// Where the parser stopped.
        line: Option<usize>,
        /// The parser's message, on one line.
        message: String,
    },
    /// A key the mission format does not define, in `place` (the mission, a task, its limits or expect).
    #[error("unknown field `{field}` in {place}")]
    UnknownField {
        /// The unknown key.
        field: String,
        /// Where it appeared, such as "task `build`".
        place: String,
    },
    /// A field that must be present is absent.
    #[error("missing field `{field}` in {place}")]
    MissingField {
        /// The missing key.
        field: String,
        /// Where it is missing, such as "task #2".
        place: String,
    },
    /// A field has a value of the wrong type or outside its range.
    #[error("invalid `{field}` in {place}: {message}")]
    InvalidField {
        /// The offending key.
        field: String,
        /// Where it appeared.
        place: String,
        /// What is wrong with it.
        message: String,
    },
    /// The mission lists no task at all.
    #[error("mission has no tasks")]
    NoTasks,
    /// A markdown file without a single checkbox task; names the formats understood.
    #[error(
        "no checkbox tasks in the markdown: expected list items such as `- [ ] T001 [P] [US1] Title` \
         (spec-kit tasks.md), `- [ ] 1.1 Title` (Kiro tasks.md) or `- [ ] T001.010 Title ... depends on \
         T001.009` (seed tasklist), checked `[x]` when done"
    )]
    NoMarkdownTasks,
    /// The mission lists more tasks than [`super::caps::MAX_TASKS_PER_MISSION`].
    #[error("mission has {count} tasks, more than the cap of {max}")]
    TooManyTasks {
        /// How many it lists.
        count: usize,
        /// The cap.
        max: usize,
    },
    /// A chain of dependencies is longer than [`super::caps::MAX_DEPENDENCY_DEPTH`].
    #[error("task `{task}` ends a chain of {depth} dependent tasks, more than the cap of {max}: run such a sequence as one task or in stages")]
    TooDeep {
        /// The task at the end of the longest chain.
        task: String,
        /// The chain's length, in tasks.
        depth: usize,
        /// The cap.
        max: usize,
    },
    /// A task lists more entries of `field` than its cap in [`super::caps`].
    #[error("task `{task}` has {count} `{field}` entries, more than the cap of {max}")]
    TooManyEntries {
        /// The task.
        task: String,
        /// The list: `needs`, `inputs`, `requires` or `expect.files`.
        field: String,
        /// How many it lists.
        count: usize,
        /// The cap.
        max: usize,
    },
    /// A task id is empty, too long or uses characters outside `[A-Za-z0-9._-]`.
    #[error("invalid task id {id:?}: {reason}")]
    InvalidId {
        /// The id as written.
        id: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Two tasks share an id.
    #[error("duplicate task id `{0}`")]
    DuplicateId(String),
    /// A task needs an id that no task of the mission has.
    #[error("task `{task}` depends on unknown task `{missing}`")]
    UnknownDependency {
        /// The task that names the dependency.
        task: String,
        /// The id nobody has.
        missing: String,
    },
    /// Tasks need each other in a circle; each arrow points from a task to
    /// one it needs, and the list ends where it started.
    #[error("dependency cycle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
    /// A priority other than P0, P1, P2 or P3.
    #[error("task `{task}`: invalid priority {value} (expected P0, P1, P2 or P3)")]
    InvalidPriority {
        /// The task.
        task: String,
        /// The value as written.
        value: String,
    },
    /// Sandbox limits no task can run under (zero fuel, memory beyond wasm32, ...).
    #[error("task `{task}`: invalid limits: {message}")]
    InvalidLimits {
        /// The task.
        task: String,
        /// The sandbox's explanation.
        message: String,
    },
    /// A module path that does not exist on disk.
    #[error("task `{task}`: module {module:?} not found ({path})")]
    MissingModule {
        /// The task.
        task: String,
        /// The module as written.
        module: String,
        /// Where it was looked for.
        path: String,
    },
    /// A module reference that cannot name a module (bad digest, not `.wasm`/`.wat`, empty).
    #[error("task `{task}`: invalid module {module:?}: {reason}")]
    InvalidModule {
        /// The task.
        task: String,
        /// The module as written.
        module: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An input path that does not exist on disk.
    #[error("task `{task}`: input {input:?} not found ({path})")]
    MissingInput {
        /// The task.
        task: String,
        /// The input as written.
        input: String,
        /// Where it was looked for.
        path: String,
    },
    /// An input that cannot be placed under `/input`: outside the path
    /// grammar of [`super::grammar`], reserved, a duplicate, inside another
    /// input, or a bad digest.
    #[error("task `{task}`: invalid input {input:?}: {reason}")]
    InvalidInput {
        /// The task.
        task: String,
        /// The input as written.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The `[agents]` configuration used to route markdown tasks is inconsistent.
    #[error("invalid agents config: {0}")]
    InvalidAgents(String),
}

/// Folds a possibly multi-line message into one line, so every error stays
/// a single line whatever a dependency's message looks like.
pub(crate) fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
