//! Usage errors exit 2, as `--help` and docs/backup-format.md say; a bad argument value that
//! parses is a failure to run (exit 1).

use crate::support::*;

fn assert_usage_error(args: &[&str]) {
    let (code, stdout, stderr) = replay(args);
    assert_eq!(code, 2, "{args:?}: stdout {stdout}\nstderr {stderr}");
    // An error line, or (no command at all) the help, on stderr; nothing on stdout.
    assert!(stderr.starts_with("error:") || stderr.contains("Usage: replay-tool"), "{args:?}: {stderr}");
    assert!(stdout.is_empty(), "{args:?}: {stdout}");
}

#[test]
fn usage_errors_exit_2() {
    assert_usage_error(&["verify", "--data", "/nonexistent", "--no-such-flag"]);
    assert_usage_error(&["verify"]); // --data missing
    assert_usage_error(&["at", "--data", "/nonexistent"]); // neither --time nor --vector
    assert_usage_error(&["no-such-command"]);
    assert_usage_error(&[]);
    assert_usage_error(&["--json", "verify", "--data"]); // a flag without its value
}

#[test]
fn help_and_version_exit_0() {
    let (code, stdout, _) = replay(&["--help"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("2  usage error"), "{stdout}");
    assert_eq!(replay(&["--version"]).0, 0);
}

#[test]
fn a_bad_value_is_a_failure_to_run() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = busy_node(&tmp.path().join("office"), 2, 1).close();
    let (code, _, stderr) = replay(&["audit", "--data", s(&dir), "--since", "yesterday"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("is not a time"), "{stderr}");
}
