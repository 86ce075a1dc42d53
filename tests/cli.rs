//! The binary's start-up contract: `--help` and `--version` print and exit; a bad setting, a
//! missing region or missing credentials stop it at once with one line.

use std::process::Command;

fn run_with(vars: &[(&str, &str)]) -> (Option<i32>, String, String) {
    run_args(&[], vars)
}

/// Runs the binary with `args` and only `vars` (plus a HOME without AWS profile files), so that
/// nothing of the machine's own AWS setup leaks in.
fn run_args(args: &[&str], vars: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let home = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-empty-home");
    std::fs::create_dir_all(&home).expect("empty HOME");
    let output = Command::new(env!("CARGO_BIN_EXE_telemetry-collector"))
        .args(args)
        .env_clear()
        .env("HOME", &home)
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

#[test]
fn help_prints_the_usage_and_exits_0_without_starting() {
    for flag in ["--help", "-h"] {
        // No region, no credentials: anything that started would complain on stderr.
        let (code, stdout, stderr) = run_args(&[flag], &[]);
        assert_eq!(code, Some(0), "{flag}");
        assert!(stdout.starts_with("telemetry-collector: "), "{stdout}");
        for topic in ["USAGE:", "--version", "AWS_REGION", "/healthz"] {
            assert!(stdout.contains(topic), "{flag} mentions {topic}: {stdout}");
        }
        assert!(stderr.is_empty(), "nothing on stderr: {stderr}");
    }
}

#[test]
fn version_prints_the_crate_version_and_commit_and_exits_0() {
    for flag in ["--version", "-V"] {
        let (code, stdout, stderr) = run_args(&[flag], &[]);
        assert_eq!(code, Some(0), "{flag}");
        let expected_start = format!("telemetry-collector {} (commit ", env!("CARGO_PKG_VERSION"));
        assert!(stdout.starts_with(&expected_start), "{stdout}");
        assert_eq!(stdout.lines().count(), 1, "{stdout}");
        let commit = stdout
            .trim_end()
            .trim_start_matches(&expected_start)
            .trim_end_matches(')');
        assert!(
            commit == "unknown" || (commit.len() >= 7 && commit.chars().all(|c| c.is_ascii_hexdigit())),
            "commit {commit:?}"
        );
        assert!(stderr.is_empty(), "nothing on stderr: {stderr}");
    }
}

#[test]
fn an_unknown_argument_is_a_usage_error() {
    let (code, stdout, stderr) = run_args(&["--frobnicate"], &[]);
    assert_eq!(code, Some(2));
    assert!(stdout.is_empty(), "{stdout}");
    assert_eq!(
        stderr.trim_end(),
        "telemetry-collector: invalid option '--frobnicate' (see telemetry-collector --help)"
    );
}

#[test]
fn without_a_region_it_stops_at_once_with_one_line_naming_what_to_set() {
    let started = std::time::Instant::now();
    let (code, stdout, stderr) = run_with(&[("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test")]);
    assert_eq!(code, Some(2));
    assert!(stdout.is_empty(), "no logs: {stdout}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.starts_with("telemetry-collector: no AWS region configured: set AWS_REGION"),
        "{stderr}"
    );
    // Instance metadata is not asked: its timeouts alone would take seconds.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_region_from_the_profile_file_is_enough() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-profile");
    std::fs::create_dir_all(&dir).expect("profile dir");
    let config = dir.join("config");
    std::fs::write(&config, "[profile collector]\nregion = eu-west-1\n").expect("write AWS config");
    // A port in use: the collector gets past the region and stops at the next step, binding
    // its HTTP listener, without reaching for AWS.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("address").to_string();
    let (code, _, stderr) = run_with(&[
        ("AWS_CONFIG_FILE", config.to_str().expect("UTF-8 path")),
        ("AWS_PROFILE", "collector"),
        ("HTTP_LISTEN_ADDRESS", &addr),
    ]);
    assert_eq!(code, Some(2));
    assert!(!stderr.contains("region"), "the region was found: {stderr}");
    assert!(
        stderr.starts_with(&format!(
            "telemetry-collector: configuration error: HTTP_LISTEN_ADDRESS=\"{addr}\" cannot be listened on"
        )),
        "{stderr}"
    );
}

#[test]
fn without_credentials_the_daemon_and_check_stop_with_one_line_naming_what_to_set() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-no-credentials");
    let (config, credentials) = (dir.join("no-config"), dir.join("no-credentials"));
    // run_args clears the environment: no AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    // AWS_SESSION_TOKEN or AWS_PROFILE; the profile files are paths that do not exist.
    let vars = [
        ("AWS_REGION", "eu-west-1"),
        ("AWS_CONFIG_FILE", config.to_str().expect("UTF-8 path")),
        ("AWS_SHARED_CREDENTIALS_FILE", credentials.to_str().expect("UTF-8 path")),
        // Off EC2 the metadata service would only be one more source that fails, slowly.
        ("AWS_EC2_METADATA_DISABLED", "true"),
        // The SDK's warnings (here: the two missing files) would be log lines on stdout.
        ("RUST_LOG", "info"),
        ("HTTP_LISTEN_ADDRESS", "127.0.0.1:0"),
    ];
    for args in [&[][..], &["check"][..]] {
        let (code, stdout, stderr) = run_args(args, &vars);
        assert_eq!(code, Some(2), "{args:?}: stdout:\n{stdout}\nstderr:\n{stderr}");
        let lines: Vec<&str> = stdout
            .lines()
            .chain(stderr.lines())
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert_eq!(lines.len(), 1, "{args:?}: one line in all: {lines:#?}");
        assert!(
            stderr.starts_with("telemetry-collector: no AWS credentials found: set AWS_ACCESS_KEY_ID"),
            "{args:?}: {stderr}"
        );
        for named in ["AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "IAM role"] {
            assert!(stderr.contains(named), "{args:?}: {named} in {stderr}");
        }
    }
}

/// A one-shot HTTP server on loopback answering every request with `status_line` and `body`,
/// for as long as the test runs.
fn answering(status_line: &'static str, body: &'static str) -> std::net::SocketAddr {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request);
            let _ = write!(
                stream,
                "HTTP/1.1 {status_line}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

#[test]
fn healthcheck_exits_0_only_when_healthz_answers_200() {
    let healthy = answering("200 OK", "ok\n");
    let stalled = answering("503 Service Unavailable", "stalled: deleter has had work\n");
    // An unspecified address, as the image sets it, is asked on loopback.
    let unspecified = format!("0.0.0.0:{}", healthy.port());
    let (status, _, stderr) = run_args(&["healthcheck"], &[("HTTP_LISTEN_ADDRESS", &unspecified)]);
    assert_eq!(status, Some(0), "{stderr}");

    let (status, _, stderr) = run_args(&["healthcheck"], &[("HTTP_LISTEN_ADDRESS", &stalled.to_string())]);
    assert_eq!(status, Some(1));
    assert!(
        stderr.contains("\"503\"") && stderr.contains("stalled: deleter"),
        "{stderr}"
    );

    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a port");
    let (status, _, stderr) = run_args(&["healthcheck"], &[("HTTP_LISTEN_ADDRESS", &closed.to_string())]);
    assert_eq!(status, Some(1));
    assert!(stderr.contains("cannot connect"), "{stderr}");

    // Other settings do not matter to it; a bad address is a configuration error.
    let (status, _, stderr) = run_args(&["healthcheck"], &[("HTTP_LISTEN_ADDRESS", "8080")]);
    assert_eq!(status, Some(2));
    assert!(stderr.contains("HTTP_LISTEN_ADDRESS=\"8080\" is invalid"), "{stderr}");
}
