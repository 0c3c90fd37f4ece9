//! Failures of the environment, not of the data: a store this user may not write and a full
//! disk. Each exits 1 ("could not run") and says what to do; neither is called damage (exit 3)
//! nor sent to salvage.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

/// Sets the mode of `dir` and of every file in it.
fn set_modes(dir: &Path, dir_mode: u32, file_mode: u32) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(file_mode)).unwrap();
        }
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(dir_mode)).unwrap();
}

/// Runs the tool without the power to ignore file modes: as root, through `setpriv` with the
/// DAC capabilities dropped; `None` when that is not possible here.
fn replay_without_dac_override(args: &[&str], probe_dir: &Path) -> Option<(i32, String, String)> {
    let probe = probe_dir.join("owner-probe");
    std::fs::write(&probe, b"").unwrap();
    let root = std::fs::metadata(&probe).unwrap().uid() == 0;
    let mut command = if root {
        const DROP: &str = "--bounding-set=-dac_override,-dac_read_search";
        match Command::new("setpriv").args([DROP, "--", "true"]).status() {
            Ok(status) if status.success() => {}
            other => {
                eprintln!("skipped: running as root and `setpriv {DROP}` is not usable here ({other:?})");
                return None;
            }
        }
        let mut command = Command::new("setpriv");
        command.args([DROP, "--", env!("CARGO_BIN_EXE_replay-tool")]);
        command
    } else {
        Command::new(env!("CARGO_BIN_EXE_replay-tool"))
    };
    let output = command.args(args).env("RUST_LOG", "error").output().unwrap();
    Some((
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

#[test]
fn a_store_this_user_may_not_write_is_not_called_damaged() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = busy_node(&tmp.path().join("office"), 3, 1).close();
    let db = dir.join("db");
    set_modes(&db, 0o500, 0o400);
    let ran = replay_without_dac_override(&["verify", "--data", s(&dir)], tmp.path());
    set_modes(&db, 0o700, 0o600);
    let Some((code, stdout, stderr)) = ran else { return };
    assert_eq!(code, 1, "stdout {stdout}\nstderr {stderr}");
    assert!(stderr.contains("permission denied"), "{stderr}");
    assert!(stderr.contains(s(&db)), "names what is out of reach: {stderr}");
    assert!(!stderr.contains("is damaged") && !stderr.contains("salvage"), "{stderr}");
    // Readable again, the same store verifies.
    let (code, report) = replay_json(&["verify", "--data", s(&dir)]);
    assert_eq!(code, 0, "{report:#}");
}

/// A small tmpfs, unmounted on drop.
struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    /// Mounts one, or says why not (mounting needs root and a system that allows it).
    fn mount(path: PathBuf, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(&path).unwrap();
        let options = format!("size={size}");
        match Command::new("mount").args(["-t", "tmpfs", "-o", &options, "casesync-test"]).arg(&path).output() {
            Ok(output) if output.status.success() => Some(SmallDisk { path }),
            Ok(output) => {
                eprintln!("skipped: cannot mount a tmpfs: {}", String::from_utf8_lossy(&output.stderr).trim());
                None
            }
            Err(e) => {
                eprintln!("skipped: cannot run mount: {e}");
                None
            }
        }
    }

    /// Writes a file of zeros until the disk is full.
    fn fill(&self) {
        use std::io::Write;
        let mut filler = std::fs::File::create(self.path.join("filler")).unwrap();
        let chunk = vec![0u8; 1 << 20];
        loop {
            match filler.write_all(&chunk) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => return,
                Err(e) => panic!("filling the disk: {e}"),
            }
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

#[test]
fn a_full_disk_is_not_called_damaged() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(disk) = SmallDisk::mount(tmp.path().join("disk"), "64m") else { return };
    let dir = busy_node(&disk.path.join("office"), 20, 2).close();
    disk.fill();
    for command in ["verify", "rebuild"] {
        let (code, stdout, stderr) = replay(&[command, "--data", s(&dir)]);
        assert_eq!(code, 1, "{command}: stdout {stdout}\nstderr {stderr}");
        assert!(stderr.contains("disk full: free space"), "{command}: {stderr}");
        assert!(!stderr.contains("is damaged") && !stderr.contains("salvage"), "{command}: {stderr}");
    }
    // With space again, the same store verifies.
    std::fs::remove_file(disk.path.join("filler")).unwrap();
    let (code, report) = replay_json(&["verify", "--data", s(&dir)]);
    assert_eq!(code, 0, "{report:#}");
}
