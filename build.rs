//! Stamps the commit the binaries are built from into `COLLECTOR_GIT_COMMIT`, for `--version`
//! and the `collector_build_info` metric: `GIT_COMMIT` when the build sets it (an image build
//! has no `.git`), else `git rev-parse`, else `unknown`.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=GIT_COMMIT");
    let commit = std::env::var("GIT_COMMIT")
        .ok()
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=COLLECTOR_GIT_COMMIT={commit}");
    // Rebuild when HEAD moves: the HEAD file (a branch switch) and the branch it names (a commit).
    for path in ["HEAD", "packed-refs"] {
        rerun_if_git_path_changed(path);
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        rerun_if_git_path_changed(&branch);
    }
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !text.is_empty()).then_some(text)
}

fn rerun_if_git_path_changed(path: &str) {
    if let Some(file) = git(&["rev-parse", "--git-path", path])
        && std::path::Path::new(&file).exists()
    {
        println!("cargo:rerun-if-changed={file}");
    }
}
