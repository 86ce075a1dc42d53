//! The fleet tools' command lines, without any AWS endpoint: usage on `--help`, and a usage
//! error as one line with exit code 2 before anything is sent or read.

use std::process::Command;

fn run(program: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::new(program)
        .args(args)
        .env_clear()
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

const TOOLS: [(&str, &str); 2] = [
    (env!("CARGO_BIN_EXE_sensor-fleet"), "sensor-fleet"),
    (env!("CARGO_BIN_EXE_stream-reader"), "stream-reader"),
];

#[test]
fn help_prints_the_usage_and_exits_0() {
    for (program, name) in TOOLS {
        let (code, stdout, stderr) = run(program, &["--help"]);
        assert_eq!(code, Some(0), "{name} --help: {stderr}");
        assert!(
            stdout.starts_with(&format!("{name}: ")),
            "{name} --help printed:\n{stdout}"
        );
        assert!(stdout.contains("USAGE:"), "{name} --help printed:\n{stdout}");
    }
}

#[test]
fn an_unknown_option_is_one_line_and_exit_code_2() {
    for (program, name) in TOOLS {
        let (code, stdout, stderr) = run(program, &["--no-such-option"]);
        assert_eq!(code, Some(2), "{name}: {stdout}{stderr}");
        assert!(stdout.is_empty(), "{name} printed on stdout:\n{stdout}");
        let first = stderr.lines().next().unwrap_or_default();
        assert!(first.starts_with(&format!("{name}: ")), "{name}: {stderr}");
        assert!(first.contains("no-such-option"), "{name}: {stderr}");
    }
}
