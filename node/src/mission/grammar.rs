//! The one grammar for the names a mission carries: paths under `/input` and
//! `/output`, task ids and mission names. The mission validator and the
//! worker both check with these functions, so a task the validator accepts
//! is never one the worker refuses to materialize (which used to fail on
//! every healthy node and open their circuit breakers).
//!
//! A path is components joined by `/`, relative to `/input` or `/output`:
//! - not empty and at most [`MAX_PATH_BYTES`] bytes;
//! - no NUL, no control characters (C0, DEL, C1, the bidirectional
//!   overrides that make a name display as another), no backslash;
//! - not absolute, and no empty, `.` or `..` component;
//! - each component at most [`MAX_COMPONENT_BYTES`] bytes;
//! - nothing Windows refuses or silently changes: none of `< > : " | ? *`,
//!   no component ending in `.` or a space, no device name (`CON`, `PRN`,
//!   `AUX`, `NUL`, `COM1`-`COM9`, `LPT1`-`LPT9`, with any extension), so
//!   outputs can be downloaded and applied anywhere.
//!
//! An input path additionally must not start with a name the worker's layout
//! reserves ([`RESERVED_INPUT_NAMES`]: `input.txt`, `deps`), and the input
//! paths of one task must be distinct with none inside another (`a` and
//! `a/b` would need `a` to be both a file and a folder).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::caps::{
    MAX_COMPONENT_BYTES, MAX_MISSION_NAME_BYTES, MAX_PATH_BYTES, MAX_TASK_ID_BYTES,
    MAX_TASK_TITLE_BYTES,
};

/// First components of `/input` paths the worker writes itself: the task's
/// `input` text and its dependencies' outputs.
pub const RESERVED_INPUT_NAMES: [&str; 2] = ["input.txt", "deps"];

/// Characters Windows does not allow in a file name (besides `\` and `/`).
const WINDOWS_FORBIDDEN: &[char] = &['<', '>', ':', '"', '|', '?', '*'];

/// Device names Windows resolves whatever the folder and extension.
const WINDOWS_DEVICES: &[&str] = &[
    "CON", "PRN", "AUX", "NUL", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7", "COM8",
    "COM9", "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9",
];

/// Characters of a shown excerpt of a rejected name.
const EXCERPT_CHARS: usize = 40;

/// Why a path cannot be used under `/input` or `/output`. Each message names
/// the class of problem and the offending part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path is the empty string.
    #[error("the path is empty")]
    Empty,
    /// The whole path is longer than [`MAX_PATH_BYTES`].
    #[error("the path is {bytes} bytes long, more than the cap of {MAX_PATH_BYTES}")]
    TooLong {
        /// Its length.
        bytes: usize,
    },
    /// It contains a NUL byte.
    #[error("the path contains a NUL byte")]
    Nul,
    /// It contains a control or bidirectional-override character.
    #[error("the path contains the control character {0:?}")]
    Control(char),
    /// It contains a backslash.
    #[error("the path contains a backslash (separate components with `/`)")]
    Backslash,
    /// It starts with `/`.
    #[error("the path is absolute (it must be relative to /input or /output)")]
    Absolute,
    /// Two `/` in a row, or a trailing `/`.
    #[error("the path has an empty component (a doubled or trailing `/`)")]
    EmptyComponent,
    /// A `.` component.
    #[error("the path has a `.` component")]
    CurrentDir,
    /// A `..` component.
    #[error("the path has a `..` component")]
    ParentDir,
    /// One component is longer than [`MAX_COMPONENT_BYTES`].
    #[error(
        "component {excerpt:?} is {bytes} bytes long, more than the cap of {MAX_COMPONENT_BYTES}"
    )]
    ComponentTooLong {
        /// The start of the component.
        excerpt: String,
        /// Its length.
        bytes: usize,
    },
    /// A character Windows refuses in file names.
    #[error("the path contains {0:?}, which Windows does not allow in file names")]
    WindowsCharacter(char),
    /// A component ending in `.` or a space, which Windows strips.
    #[error("component {0:?} ends with a dot or a space")]
    TrailingDotOrSpace(String),
    /// A Windows device name such as `CON` or `nul.txt`.
    #[error("component {0:?} is a reserved device name on Windows")]
    WindowsDevice(String),
    /// An input path starting with a name the worker writes itself.
    #[error(
        "`{0}` is reserved under /input (the worker writes the task's input.txt and deps/ there)"
    )]
    Reserved(&'static str),
}

/// Why a task's set of input paths cannot all be placed under `/input`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathSetError {
    /// The same path twice.
    #[error("input path {0:?} is listed twice")]
    Duplicate(String),
    /// One path inside another: the outer one would have to be a file and a folder.
    #[error("input path {inner:?} lies inside input path {outer:?}, which cannot be both a file and a folder")]
    Nested {
        /// The shorter path.
        outer: String,
        /// The path inside it.
        inner: String,
    },
}

/// Why a task id or a mission name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The empty string.
    #[error("it is empty")]
    Empty,
    /// Longer than its cap.
    #[error("it is {bytes} bytes long, longer than the cap of {max}")]
    TooLong {
        /// Its length.
        bytes: usize,
        /// The cap.
        max: usize,
    },
    /// A character outside the id alphabet.
    #[error("character {0:?} is not allowed (use A-Z a-z 0-9 . _ -)")]
    Character(char),
    /// An id that does not start with a letter or digit.
    #[error("it must start with a letter or digit")]
    Start,
    /// A control character in a name.
    #[error("it contains the control character {0:?}")]
    Control(char),
}

/// Whether `c` would make a name print as something else: control
/// characters and the bidirectional embeddings, overrides and isolates.
fn is_invisible_control(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// The start of `text`, for messages: at most [`EXCERPT_CHARS`] characters,
/// with `…` when cut, so a 5,000-character name does not become a
/// 5,000-character error line.
pub fn excerpt(text: &str) -> String {
    match text.char_indices().nth(EXCERPT_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// Checks a path relative to `/input` or `/output` against the grammar of
/// the module docs.
pub fn check_path(path: &str) -> Result<(), PathError> {
    if path.is_empty() {
        return Err(PathError::Empty);
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong { bytes: path.len() });
    }
    if path.contains('\0') {
        return Err(PathError::Nul);
    }
    if let Some(c) = path.chars().find(|&c| is_invisible_control(c)) {
        return Err(PathError::Control(c));
    }
    if path.contains('\\') {
        return Err(PathError::Backslash);
    }
    if path.starts_with('/') {
        return Err(PathError::Absolute);
    }
    for component in path.split('/') {
        check_component(component)?;
    }
    Ok(())
}

fn check_component(component: &str) -> Result<(), PathError> {
    match component {
        "" => return Err(PathError::EmptyComponent),
        "." => return Err(PathError::CurrentDir),
        ".." => return Err(PathError::ParentDir),
        _ => {}
    }
    if component.len() > MAX_COMPONENT_BYTES {
        return Err(PathError::ComponentTooLong {
            excerpt: excerpt(component),
            bytes: component.len(),
        });
    }
    if let Some(c) = component.chars().find(|c| WINDOWS_FORBIDDEN.contains(c)) {
        return Err(PathError::WindowsCharacter(c));
    }
    if component.ends_with('.') || component.ends_with(' ') {
        return Err(PathError::TrailingDotOrSpace(component.to_string()));
    }
    let stem = component.split('.').next().unwrap_or(component);
    if WINDOWS_DEVICES
        .iter()
        .any(|device| device.eq_ignore_ascii_case(stem.trim_end()))
    {
        return Err(PathError::WindowsDevice(component.to_string()));
    }
    Ok(())
}

/// Checks a path a task's input is placed at under `/input`: the path
/// grammar, and not under a reserved name.
pub fn check_input_path(path: &str) -> Result<(), PathError> {
    check_path(path)?;
    let first = path.split('/').next().unwrap_or(path);
    match RESERVED_INPUT_NAMES.iter().find(|name| **name == first) {
        Some(name) => Err(PathError::Reserved(name)),
        None => Ok(()),
    }
}

/// Where a mission file's own input entry lands under `/input`: a folder
/// may be written with one trailing `/` (`src/`), which is dropped.
pub fn source_input_target(path: &str) -> &str {
    match path.strip_suffix('/') {
        Some(folder) if !folder.is_empty() => folder,
        _ => path,
    }
}

/// Checks that a task's input paths (already each valid) can all be placed:
/// no duplicates and none inside another. Reports the first problem in list
/// order.
pub fn check_input_set<'a>(paths: impl IntoIterator<Item = &'a str>) -> Result<(), PathSetError> {
    let paths: Vec<&str> = paths.into_iter().collect();
    let mut seen: HashSet<&str> = HashSet::with_capacity(paths.len());
    for path in &paths {
        if !seen.insert(path) {
            return Err(PathSetError::Duplicate(excerpt(path)));
        }
    }
    for path in &paths {
        let outer = path
            .match_indices('/')
            .map(|(at, _)| &path[..at])
            .find(|prefix| seen.contains(prefix));
        if let Some(outer) = outer {
            return Err(PathSetError::Nested {
                outer: excerpt(outer),
                inner: excerpt(path),
            });
        }
    }
    Ok(())
}

/// `base` joined with `relative`, after checking `relative` with
/// [`check_path`]; the result always lies inside `base`.
pub fn join_under(base: &Path, relative: &str) -> Result<PathBuf, PathError> {
    check_path(relative)?;
    Ok(base.join(relative))
}

/// Checks a task id: not empty, at most [`MAX_TASK_ID_BYTES`] bytes, only
/// `A-Z a-z 0-9 . _ -`, and starting with a letter or digit (so `.` and
/// `..` can never be an id in a URL path or a folder under `/input/deps/`).
pub fn check_task_id(id: &str) -> Result<(), NameError> {
    if id.is_empty() {
        return Err(NameError::Empty);
    }
    if id.len() > MAX_TASK_ID_BYTES {
        return Err(NameError::TooLong {
            bytes: id.len(),
            max: MAX_TASK_ID_BYTES,
        });
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(NameError::Character(c));
    }
    if !id.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(NameError::Start);
    }
    Ok(())
}

/// Checks a mission name, a free-form human label: not empty, at most
/// [`MAX_MISSION_NAME_BYTES`] bytes, no control characters.
pub fn check_mission_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_MISSION_NAME_BYTES {
        return Err(NameError::TooLong {
            bytes: name.len(),
            max: MAX_MISSION_NAME_BYTES,
        });
    }
    match name.chars().find(|&c| is_invisible_control(c)) {
        Some(c) => Err(NameError::Control(c)),
        None => Ok(()),
    }
}

/// A heading made into a valid mission name: control characters become
/// spaces and it is cut (on a character boundary) to the cap. Markdown
/// missions take their name from a heading the author did not write as a
/// name, so it is fitted rather than refused.
pub fn fit_mission_name(heading: &str) -> String {
    fit_label(heading, MAX_MISSION_NAME_BYTES)
}

/// A task title made into a valid one, the same way: control characters
/// become spaces and it is cut to [`MAX_TASK_TITLE_BYTES`].
pub fn fit_task_title(title: &str) -> String {
    fit_label(title, MAX_TASK_TITLE_BYTES)
}

/// Checks a task title: at most [`MAX_TASK_TITLE_BYTES`] bytes, no control
/// characters.
pub fn check_task_title(title: &str) -> Result<(), NameError> {
    if title.len() > MAX_TASK_TITLE_BYTES {
        return Err(NameError::TooLong {
            bytes: title.len(),
            max: MAX_TASK_TITLE_BYTES,
        });
    }
    match title.chars().find(|&c| is_invisible_control(c)) {
        Some(c) => Err(NameError::Control(c)),
        None => Ok(()),
    }
}

fn fit_label(text: &str, max: usize) -> String {
    let clean: String = text
        .chars()
        .map(|c| if is_invisible_control(c) { ' ' } else { c })
        .collect();
    let mut end = clean.len().min(max);
    while !clean.is_char_boundary(end) {
        end -= 1;
    }
    clean[..end].trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_relative_paths_are_accepted() {
        for path in [
            "a",
            "src/main.rs",
            "deep/er/still/file.tar.gz",
            ".hidden",
            "..dots-inside..x",
            "_-.x",
            "é/ünïcode",
            "a b/c d.txt",
            "console.log",
            "com10",
        ] {
            assert_eq!(check_path(path), Ok(()), "{path}");
        }
        let longest_component = "c".repeat(MAX_COMPONENT_BYTES);
        assert_eq!(check_path(&longest_component), Ok(()));
        let longest_path = vec!["d".repeat(100); 10].join("/") + "/" + &"e".repeat(14);
        assert_eq!(longest_path.len(), MAX_PATH_BYTES);
        assert_eq!(check_path(&longest_path), Ok(()));
    }

    #[test]
    fn every_class_of_bad_path_is_refused_by_name() {
        let long_component = "x".repeat(MAX_COMPONENT_BYTES + 1);
        let long_path = vec!["y"; MAX_PATH_BYTES / 2 + 1].join("/");
        let cases: Vec<(&str, PathError, &str)> = vec![
            ("", PathError::Empty, "empty"),
            (
                &long_path,
                PathError::TooLong {
                    bytes: long_path.len(),
                },
                "bytes long",
            ),
            ("a\0b", PathError::Nul, "NUL"),
            ("a\nb", PathError::Control('\n'), "control character"),
            ("a\u{7f}", PathError::Control('\u{7f}'), "control character"),
            (
                "a\u{202e}txt.exe",
                PathError::Control('\u{202e}'),
                "control character",
            ),
            ("a\\b", PathError::Backslash, "backslash"),
            ("/etc/passwd", PathError::Absolute, "absolute"),
            ("a//b", PathError::EmptyComponent, "empty component"),
            ("a/", PathError::EmptyComponent, "empty component"),
            ("./x", PathError::CurrentDir, "`.`"),
            ("a/./b", PathError::CurrentDir, "`.`"),
            ("..", PathError::ParentDir, "`..`"),
            ("a/../../b", PathError::ParentDir, "`..`"),
            (
                &long_component,
                PathError::ComponentTooLong {
                    excerpt: excerpt(&long_component),
                    bytes: MAX_COMPONENT_BYTES + 1,
                },
                "256 bytes long",
            ),
            ("a:b", PathError::WindowsCharacter(':'), "Windows"),
            ("what?", PathError::WindowsCharacter('?'), "Windows"),
            ("x/a*", PathError::WindowsCharacter('*'), "Windows"),
            (
                "name.",
                PathError::TrailingDotOrSpace("name.".into()),
                "ends with",
            ),
            (
                "dir /x",
                PathError::TrailingDotOrSpace("dir ".into()),
                "ends with",
            ),
            ("CON", PathError::WindowsDevice("CON".into()), "device"),
            (
                "a/nul.txt",
                PathError::WindowsDevice("nul.txt".into()),
                "device",
            ),
            (
                "Lpt1.x.y",
                PathError::WindowsDevice("Lpt1.x.y".into()),
                "device",
            ),
        ];
        for (path, error, needle) in cases {
            let got = check_path(path);
            assert_eq!(got, Err(error), "{path:?}");
            let message = got.unwrap_err().to_string();
            assert!(message.contains(needle), "{path:?}: {message}");
            assert!(!message.contains('\n') && message.len() < 200, "{message}");
        }
    }

    #[test]
    fn input_paths_keep_off_the_names_the_worker_writes() {
        assert_eq!(
            check_input_path("input.txt"),
            Err(PathError::Reserved("input.txt"))
        );
        assert_eq!(
            check_input_path("deps/up/data.txt"),
            Err(PathError::Reserved("deps"))
        );
        assert_eq!(check_input_path("deps"), Err(PathError::Reserved("deps")));
        assert!(check_input_path("input.txt")
            .unwrap_err()
            .to_string()
            .contains("reserved"));
        assert_eq!(check_input_path("src/input.txt"), Ok(()));
        assert_eq!(check_input_path("my-deps/x"), Ok(()));
        assert_eq!(check_input_path("./x"), Err(PathError::CurrentDir));
        // Outputs may use any name of the grammar.
        assert_eq!(check_path("deps/x"), Ok(()));
    }

    #[test]
    fn folders_may_end_in_one_slash_in_a_mission_file() {
        assert_eq!(source_input_target("src/"), "src");
        assert_eq!(source_input_target("src"), "src");
        assert_eq!(source_input_target("/"), "/");
        assert_eq!(
            check_input_path(source_input_target("src//")),
            Err(PathError::EmptyComponent)
        );
    }

    #[test]
    fn input_sets_refuse_duplicates_and_nesting() {
        assert_eq!(check_input_set(["a", "b", "c/d", "c/e", "a-b/c"]), Ok(()));
        assert_eq!(
            check_input_set(["a", "a/b"]),
            Err(PathSetError::Nested {
                outer: "a".into(),
                inner: "a/b".into()
            })
        );
        assert_eq!(
            check_input_set(["x/y/z", "x"]),
            Err(PathSetError::Nested {
                outer: "x".into(),
                inner: "x/y/z".into()
            })
        );
        assert_eq!(
            check_input_set(["p", "q", "p"]),
            Err(PathSetError::Duplicate("p".into()))
        );
        let message = check_input_set(["a", "a/b"]).unwrap_err().to_string();
        assert!(
            message.contains("\"a/b\" lies inside input path \"a\""),
            "{message}"
        );
    }

    #[test]
    fn ids_and_names_have_a_grammar_and_a_cap() {
        assert_eq!(check_task_id("T001.010"), Ok(()));
        assert_eq!(check_task_id("day-1.2-write_tests"), Ok(()));
        assert_eq!(check_task_id(""), Err(NameError::Empty));
        assert_eq!(check_task_id("a/b"), Err(NameError::Character('/')));
        assert_eq!(check_task_id("a\0"), Err(NameError::Character('\0')));
        assert_eq!(check_task_id(".."), Err(NameError::Start));
        let long = "a".repeat(MAX_TASK_ID_BYTES + 1);
        assert_eq!(
            check_task_id(&long),
            Err(NameError::TooLong {
                bytes: MAX_TASK_ID_BYTES + 1,
                max: MAX_TASK_ID_BYTES
            })
        );
        assert_eq!(check_mission_name("example pipeline: v2 (é)"), Ok(()));
        assert_eq!(check_mission_name(""), Err(NameError::Empty));
        assert_eq!(check_mission_name("a\0b"), Err(NameError::Control('\0')));
        let long = "n".repeat(5000);
        assert!(check_mission_name(&long)
            .unwrap_err()
            .to_string()
            .contains("5000 bytes long, longer than the cap of 256"));
        let fitted = fit_mission_name(&format!("a\tb {}", "é".repeat(300)));
        assert!(fitted.starts_with("a b é"));
        assert!(fitted.len() <= MAX_MISSION_NAME_BYTES);
        assert_eq!(check_mission_name(&fitted), Ok(()));
    }

    #[test]
    fn excerpts_cut_long_names() {
        assert_eq!(excerpt("short"), "short");
        let cut = excerpt(&"z".repeat(5000));
        assert_eq!(cut.chars().count(), EXCERPT_CHARS + 1);
        assert!(cut.ends_with('…'));
    }

    /// A component the grammar accepts: id-like characters, spaces and
    /// dots inside, never a device name.
    fn component() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_-][A-Za-z0-9 ._é-]{0,12}[A-Za-z0-9_-]|[A-Za-z0-9_]"
            .prop_filter("device names are refused", |c| check_component(c).is_ok())
    }

    fn valid_path() -> impl Strategy<Value = String> {
        proptest::collection::vec(component(), 1..6).prop_map(|parts| parts.join("/"))
    }

    /// Ways to break a valid path, each with the class it must be refused as.
    fn breakage() -> impl Strategy<Value = (&'static str, &'static str)> {
        prop_oneof![
            Just((".", "`.`")),
            Just(("..", "`..`")),
            Just(("", "empty component")),
            Just(("a\\b", "backslash")),
            Just(("a\0b", "NUL")),
            Just(("a\u{1}b", "control character")),
            Just(("a|b", "Windows")),
            Just(("aux", "device")),
            Just(("trailing.", "ends with")),
        ]
    }

    proptest! {
        /// A valid path joins under a base and comes back unchanged.
        #[test]
        fn valid_paths_round_trip(path in valid_path()) {
            prop_assert_eq!(check_path(&path), Ok(()));
            let base = Path::new("/work/w0/input");
            let joined = join_under(base, &path).unwrap();
            let back = joined.strip_prefix(base).unwrap();
            prop_assert_eq!(back.to_str().unwrap(), path.as_str());
            let parts: Vec<String> = back
                .components()
                .map(|c| c.as_os_str().to_str().unwrap().to_string())
                .collect();
            prop_assert_eq!(parts.join("/"), path);
        }

        /// Any one bad component anywhere makes the whole path refused,
        /// with a message naming that class of problem.
        #[test]
        fn one_bad_component_is_refused_by_name(
            path in valid_path(),
            (bad, needle) in breakage(),
            at in 0usize..6,
        ) {
            let mut parts: Vec<&str> = path.split('/').collect();
            let at = at.min(parts.len());
            parts.insert(at, bad);
            let broken = parts.join("/");
            // An empty first component is a leading `/`.
            let needle = if bad.is_empty() && at == 0 { "absolute" } else { needle };
            let error = check_path(&broken).expect_err(&broken);
            let message = error.to_string();
            prop_assert!(message.contains(needle), "{:?}: {}", broken, message);
            prop_assert!(join_under(Path::new("/base"), &broken).is_err());
        }

        /// The set check agrees with comparing every pair directly.
        #[test]
        fn input_set_check_agrees_with_pairwise_comparison(
            paths in proptest::collection::vec("[ab]{1,2}(/[ab]{1,2}){0,2}", 0..6)
        ) {
            let mut direct = true;
            for (i, p) in paths.iter().enumerate() {
                for (j, q) in paths.iter().enumerate() {
                    if i != j && (p == q || q.starts_with(&format!("{p}/"))) {
                        direct = false;
                    }
                }
            }
            let got = check_input_set(paths.iter().map(String::as_str));
            prop_assert_eq!(got.is_ok(), direct, "{:?}: {:?}", paths, got);
        }
    }
}
