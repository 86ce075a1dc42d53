//! The integration tests that need the emulator are built only with the `emulator-tests`
//! feature (script/test turns it on). This test runs either way: it lists them, so that a plain
//! `cargo test` says what it did not run, and it fails if a test that needs the emulator is
//! missing the gate (it would panic on a machine without one).

use std::path::Path;

const GATE: &str = "#![cfg(feature = \"emulator-tests\")]";

/// The integration-test directories of every crate of the workspace.
fn test_dirs() -> Vec<std::path::PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut dirs = vec![root.join("tests")];
    for entry in std::fs::read_dir(root.join("crates"))
        .expect("crates directory")
        .flatten()
    {
        let tests = entry.path().join("tests");
        if tests.is_dir() {
            dirs.push(tests);
        }
    }
    dirs
}

#[test]
fn every_test_that_needs_the_emulator_is_behind_the_feature() {
    let mut gated = Vec::new();
    for entry in test_dirs()
        .iter()
        .flat_map(|dir| std::fs::read_dir(dir).expect("tests directory"))
    {
        let path = entry.expect("directory entry").path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("test file");
        // Spelt in two pieces so that this file does not match itself.
        let needs_emulator = text.contains(concat!("TestEnv", "::new"));
        let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
        if needs_emulator {
            assert!(text.contains(GATE), "{name} needs the emulator but lacks `{GATE}`");
            gated.push(name);
        }
    }
    gated.sort();
    assert!(!gated.is_empty(), "no emulator tests found: the check proves nothing");
    if cfg!(not(feature = "emulator-tests")) {
        eprintln!(
            "not run here: {} (they need the emulator; script/test starts one and runs them)",
            gated.join(", ")
        );
    }
}
