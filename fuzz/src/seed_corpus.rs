//! Writes the fuzzer's seed inputs into a directory: the JSON documents of the simulator's
//! valid and invalid submissions and of the hostile-input catalogue (bodies up to 4 KiB).
//!
//! A seed is the JSON itself: the target tries every input both as a body and as the document
//! a base64 body carries.

use std::path::PathBuf;
use std::process::ExitCode;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use telemetry_fleet::generate;

use telemetry_testkit::hostile;

const MAX_SEED_BYTES: usize = 4096;

/// The document a body carries when it is base64, else the body itself.
fn document(body: &str) -> Vec<u8> {
    if body.trim_ascii_start().starts_with('{') {
        return body.as_bytes().to_vec();
    }
    STANDARD
        .decode(body.trim_ascii())
        .unwrap_or_else(|_| body.as_bytes().to_vec())
}

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: seed-corpus DIR");
        return ExitCode::from(2);
    };
    let mut seeds: Vec<(String, Vec<u8>)> = Vec::new();
    for (n, (processes, connections, connections_first)) in
        [(1, 1, false), (2, 3, true), (0, 0, false), (5, 0, false), (0, 4, true)]
            .into_iter()
            .enumerate()
    {
        let (body, _) = generate::valid(n as u64, processes, connections, connections_first);
        seeds.push((format!("valid-{n}"), document(&body)));
    }
    for (label, body, _) in generate::invalid_of_every_class(1) {
        seeds.push((format!("invalid-{label}"), document(&body)));
    }
    for (n, case) in hostile::catalogue().iter().enumerate() {
        seeds.push((format!("hostile-{n:03}"), document(&case.body)));
    }
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("seed-corpus: {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    let mut written = 0;
    for (name, bytes) in seeds.iter().filter(|(_, b)| b.len() <= MAX_SEED_BYTES) {
        if let Err(e) = std::fs::write(dir.join(name), bytes) {
            eprintln!("seed-corpus: {name}: {e}");
            return ExitCode::FAILURE;
        }
        written += 1;
    }
    println!("{written} seeds in {}", dir.display());
    ExitCode::SUCCESS
}
