//! The binary's start-up contract: a bad setting stops it at once with one line.

use std::process::Command;

fn run_with(vars: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_telemetry-collector"))
        .env_clear()
        .envs(vars.iter().copied())
        .output()
        .expect("run telemetry-collector");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_bad_setting_stops_the_program_with_one_line_naming_it() {
    for (name, value, expected) in [
        ("QUEUE_WAIT_TIME_SEC", "21", "expected an integer from 0 to 20"),
        (
            "QUEUE_MAX_NUMBER_OF_MESSAGE_PER_REQUEST",
            "0",
            "expected an integer from 1 to 10",
        ),
        (
            "DATA_STREAM_MAX_BUFFER_SIZE",
            "1000",
            "expected an integer from 1 to 500",
        ),
        (
            "DATA_STREAM_FLUSH_INTERVAL_SEC",
            "soon",
            "expected a number of seconds from 0.01 to 300",
        ),
    ] {
        let (code, stdout, stderr) = run_with(&[(name, value)]);
        assert_eq!(code, Some(2), "{name}={value}");
        assert!(stdout.is_empty(), "nothing on stdout: {stdout}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert_eq!(
            stderr.trim_end(),
            format!("telemetry-collector: configuration error: {name}=\"{value}\" is invalid: {expected}")
        );
    }
}
