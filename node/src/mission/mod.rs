//! Mission input: the two mission formats of `interfaces.md` ("Mission
//! files") turned into one [`MissionSpec`], and the checks that run before
//! anything is committed.
//!
//! - [`parse_toml`] reads the TOML task graph (`[[task]]`, `[task.limits]`,
//!   `[task.expect]`); only `id` and `module` are required per task.
//! - [`parse_markdown`] reads markdown tasklists as people write them (the
//!   seeds' format, spec-kit's and Kiro's `tasks.md`, plain checklists):
//!   checkboxes, ids, P0-P3, written dependencies in prose and fields, the
//!   order phases, groups and `[P]` markers imply; it routes every task to
//!   an agent kind through an [`AgentConfig`]. [`read_markdown`] also
//!   returns the warnings (references to undeclared ids).
//! - [`validate`] checks ids, dependencies (unknown ones, cycles with their
//!   members in order), limits, modules and inputs, and returns a
//!   [`ValidatedMission`] that carries a topological order.
//! - [`grammar`] is the one grammar for paths under `/input` and `/output`,
//!   task ids and mission names; the worker checks with it too.
//! - [`caps`] holds every cap (tasks per mission, dependencies per task,
//!   name and path lengths, the hard maxima of task limits).
//!
//! Everything here is pure and synchronous; the only IO is [`validate`]
//! looking at the disk when it is given the mission file's folder, which is
//! what the CLI does before uploading. Every error is a [`MissionError`]
//! whose `Display` is one line naming the problem, fit for an HTTP 400 body
//! or a CLI exit-2 message.

mod agents;
pub mod caps;
mod error;
pub mod fragment;
pub mod grammar;
mod markdown;
mod spec;
pub mod submit;
mod toml_format;
mod validate;

#[cfg(test)]
mod tests;

pub use agents::{AgentConfig, AgentKind};
pub use error::MissionError;
pub use markdown::{parse_markdown, read_markdown, MarkdownMission};
pub use spec::{Expect, MissionSpec, ModuleRef, Priority, TaskSpec, BUILTIN_PREFIX};
pub use submit::{check_submissions, to_submissions};
pub use toml_format::parse_toml;
pub(crate) use validate::limits_problem;
pub use validate::{check_id, validate, ValidatedMission, MAX_ID_LEN};

use std::path::Path;

/// Which of the two mission formats a text is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MissionFormat {
    /// The TOML task graph.
    Toml,
    /// The markdown tasklist.
    Markdown,
}

impl MissionFormat {
    /// By file name: `.md` and `.markdown` are markdown, anything else TOML.
    pub fn from_path(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("md") || ext.eq_ignore_ascii_case("markdown") => {
                MissionFormat::Markdown
            }
            _ => MissionFormat::Toml,
        }
    }

    /// By HTTP `Content-Type`: `text/markdown` (with any parameters) is
    /// markdown, anything else (or none) TOML, as `interfaces.md` says.
    pub fn from_content_type(content_type: Option<&str>) -> Self {
        let is_markdown = content_type
            .and_then(|ct| ct.split(';').next())
            .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("text/markdown"));
        if is_markdown {
            MissionFormat::Markdown
        } else {
            MissionFormat::Toml
        }
    }
}

/// Parses `text` in `format`; `agents` only matters for markdown.
pub fn parse_mission(
    text: &str,
    format: MissionFormat,
    agents: &AgentConfig,
) -> Result<MissionSpec, MissionError> {
    match format {
        MissionFormat::Toml => parse_toml(text),
        MissionFormat::Markdown => parse_markdown(text, agents),
    }
}
