//! Black-box test of a voter whose disk fills up, with real processes and a
//! real full file system: a small tmpfs mounted as the voter's data dir
//! (this needs root, as CI and the development machines have). The voter's
//! Raft core dies on the failed append; the node must say so (not ready),
//! stop, be replaced in the voter set, and come back once space returns.
#![allow(clippy::disallowed_methods)] // black-box tests run real processes on the wall clock

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use coditect_tests::{mesh_flags, string_list, wait_for, NodeProcess};

/// A tmpfs mounted at a directory, unmounted when dropped (even on a panic).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size_mb: u64) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mb}m"), "tmpfs"])
            .arg(at)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a tmpfs needs root (this test fills a real file system): {status}"
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system holding `dir` with one file until a write fails.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let block = vec![0u8; 1024 * 1024];
    while file.write_all(&block).is_ok() {}
    // Whatever partial block is left: fill it byte by byte.
    while file.write_all(&[0]).is_ok() {}
    path
}

#[test]
fn a_voter_whose_disk_fills_goes_unready_is_replaced_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let flags = |boot: Option<&str>| mesh_flags(100, boot, &[]);
    let founder = NodeProcess::start(&dir.path().join("n0"), "n0", &flags(None));
    let boot = founder.bootstrap_addr();
    // n1 joins second, so it becomes the second voter; its data dir is a tmpfs.
    let disk = dir.path().join("n1");
    let tmpfs = Tmpfs::mount(&disk, 96);
    let mut full = NodeProcess::start(&disk, "n1", &flags(Some(&boot)));
    let full_peer = full.peer_id.clone();
    let mut nodes = vec![founder];
    // With two nodes the autopilot makes n1 a voter as soon as it caught up.
    wait_for(Duration::from_secs(60), "n1 a voter", || {
        let status = nodes[0].status()?;
        string_list(&status, "voters")
            .contains(&full_peer)
            .then_some(())
    });
    for i in 2..5 {
        let name = format!("n{i}");
        nodes.push(NodeProcess::start(
            &dir.path().join(&name),
            &name,
            &flags(Some(&boot)),
        ));
    }
    wait_for(Duration::from_secs(60), "n1 among three voters", || {
        let status = nodes[0].status()?;
        let voters = string_list(&status, "voters");
        (voters.len() == 3 && voters.contains(&full_peer)).then_some(())
    });

    let filler = fill(&tmpfs.0);
    // The next append fails: the node says why and stops being ready...
    let reason = wait_for(Duration::from_secs(60), "n1 unready or gone", || {
        if !full.is_running() {
            return Some("exited".to_string());
        }
        let status = full.status()?;
        status["fatal"].as_str().map(str::to_string)
    });
    assert!(!reason.is_empty());
    // ...then exits non-zero, so a supervisor would restart it.
    wait_for(Duration::from_secs(30), "n1 to exit", || {
        (!full.is_running()).then_some(())
    });
    let log = full.log_text();
    assert!(
        log.to_ascii_lowercase().contains("raft core"),
        "the log says the Raft core died:\n{}",
        &log[log.len().saturating_sub(3000)..]
    );
    // The leader replaces it: three voters again, n1 not among them.
    wait_for(
        Duration::from_secs(60),
        "n1 replaced in the voter set",
        || {
            let status = nodes[0].status()?;
            let voters = string_list(&status, "voters");
            (voters.len() == 3 && !voters.contains(&full_peer)).then_some(())
        },
    );

    // Space returns; restarted on its data dir (no --bootstrap), it rejoins.
    std::fs::remove_file(&filler).unwrap();
    full = NodeProcess::start(&disk, "n1", &mesh_flags(100, None, &[]));
    let leader = nodes[0].status().unwrap()["leader"]
        .as_str()
        .unwrap()
        .to_string();
    wait_for(Duration::from_secs(60), "n1 back and ready", || {
        let status = full.status()?;
        let ready = full.get_code("/readyz") == Some(200);
        (ready && status["fatal"].is_null() && status["leader"].as_str() == Some(leader.as_str()))
            .then_some(())
    });
    drop(full);
    drop(tmpfs);
}
