//! Every cap on what a mission may contain, in one place.
//!
//! The mission validator refuses a mission past any of these with a
//! one-line error naming the cap, and the worker checks the path and limit
//! caps again before it materializes a task (a task committed by another
//! node's build must not be able to hurt this one). Each number is chosen so
//! that a legitimate mission never meets it while a hostile or broken one
//! cannot make a node allocate, store or replicate without bound.

/// Most tasks in one mission. A large mission is staged over several Raft
/// entries and every voter keeps it in memory (about 2.5 KiB a task,
/// measured on a 50,000-task mission of pending tasks); the
/// largest seed tasklist has a few hundred tasks, generated sweeps tens of
/// thousands.
pub const MAX_TASKS_PER_MISSION: usize = 50_000;

/// Most tasks of unfinished missions the mesh holds at once (two missions
/// of the largest size). Every voter keeps them in memory until their
/// missions end, and a mission whose tasks need what no node offers never
/// does, so without this a client could fill the voters' memory with
/// missions that wait forever. A submission past it is refused with 503
/// (nothing committed; try again once missions finish, or cancel some).
pub const MAX_UNFINISHED_TASKS: usize = 100_000;

/// Whether a mission of `adding` tasks fits next to `unfinished` tasks of
/// unfinished missions: `Err` names both numbers and the cap.
pub fn room_for(unfinished: usize, adding: usize) -> Result<(), String> {
    if unfinished.saturating_add(adding) > MAX_UNFINISHED_TASKS {
        return Err(format!(
            "the mesh holds {unfinished} tasks of unfinished missions and this mission adds {adding}, over the cap of {MAX_UNFINISHED_TASKS}; wait for missions to finish or cancel some"
        ));
    }
    Ok(())
}

/// Longest chain of not-done tasks each waiting on the one before: a
/// chain runs one task at a time, so past this it is a loop written as a
/// graph (a spec-kit tasklist of sequential tasks is a few hundred long).
pub const MAX_DEPENDENCY_DEPTH: usize = 2_000;

/// Most `needs` entries of one task (repeats included): the scheduler walks
/// them on every completion, and a fan-in wider than this is better split.
pub const MAX_NEEDS_PER_TASK: usize = 1_000;

/// Most `inputs` entries of one task once uploaded (a folder becomes one
/// entry per file); each one is a file the worker writes under `/input`.
pub const MAX_INPUTS_PER_TASK: usize = 10_000;

/// Most `args` of one task (a guest's argv after its program name).
pub const MAX_ARGS_PER_TASK: usize = 256;

/// Longest single argument, in bytes.
pub const MAX_ARG_BYTES: usize = 4096;

/// Most `requires` tags of one task.
pub const MAX_REQUIRES_PER_TASK: usize = 64;

/// Longest `requires` tag, in bytes (`llm.model=<name>` fits comfortably).
pub const MAX_TAG_BYTES: usize = 256;

/// Most `expect.files` entries of one task.
pub const MAX_EXPECTED_FILES: usize = 1_000;

/// Longest task id, in bytes: ids appear in URLs, in every task record and
/// as a folder name under `/input/deps/`.
pub const MAX_TASK_ID_BYTES: usize = 128;

/// Longest mission name, in bytes; it is a human label shown in listings.
pub const MAX_MISSION_NAME_BYTES: usize = 256;

/// Longest task title, in bytes: a human label shown in listings (a
/// markdown task's title is fitted to it; its whole text stays the input).
pub const MAX_TASK_TITLE_BYTES: usize = 512;

/// Longest path under `/input` or `/output`, in bytes. Well under Linux's
/// PATH_MAX (4096) even after the node's work directory and
/// `deps/<task id>/` are put in front of it.
pub const MAX_PATH_BYTES: usize = 1024;

/// Longest single component of such a path, in bytes: NAME_MAX of ext4,
/// xfs, btrfs and tmpfs.
pub const MAX_COMPONENT_BYTES: usize = 255;

/// Largest `fuel` a task may ask for; see [`coditect_sandbox::MAX_FUEL`].
pub const MAX_FUEL: u64 = coditect_sandbox::MAX_FUEL;

/// Largest `memory_mb` a task may ask for: what a wasm32 guest can address;
/// see [`coditect_sandbox::WASM32_MAX_MEMORY_MB`].
pub const MAX_MEMORY_MB: u64 = coditect_sandbox::WASM32_MAX_MEMORY_MB;

/// Largest `timeout_ms` a task may ask for (24 h); see
/// [`coditect_sandbox::MAX_TIMEOUT_MS`].
pub const MAX_TIMEOUT_MS: u64 = coditect_sandbox::MAX_TIMEOUT_MS;

/// Largest `output_mb` a task may ask for; see
/// [`coditect_sandbox::MAX_OUTPUT_MB`].
pub const MAX_OUTPUT_MB: u64 = coditect_sandbox::MAX_OUTPUT_MB;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_for_unfinished_tasks_is_the_cap_exactly() {
        assert!(room_for(0, MAX_UNFINISHED_TASKS).is_ok());
        assert!(room_for(MAX_UNFINISHED_TASKS - 10, 10).is_ok());
        let error = room_for(MAX_UNFINISHED_TASKS - 10, 11).unwrap_err();
        assert!(
            error.contains("99990 tasks") && error.contains("adds 11"),
            "{error}"
        );
        assert!(error.contains(&MAX_UNFINISHED_TASKS.to_string()), "{error}");
        assert!(room_for(usize::MAX, 1).is_err(), "no overflow");
        // Two of the largest missions fit, a third does not.
        assert!(room_for(MAX_TASKS_PER_MISSION, MAX_TASKS_PER_MISSION).is_ok());
        assert!(room_for(2 * MAX_TASKS_PER_MISSION, 1).is_err());
    }
}
