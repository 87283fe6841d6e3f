//! Build details for `volbridge --version` (and `volbridge::build_info`): the git commit the
//! binary was built from (or `VOLBRIDGE_BUILD_COMMIT`, for builds outside a checkout such as
//! a source tarball), the target triple, the cargo profile and the compiler. Written to
//! `OUT_DIR/build_info.rs`; nothing here fails the build.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("manifest"));
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=VOLBRIDGE_BUILD_COMMIT");
    let commit = std::env::var("VOLBRIDGE_BUILD_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .map(|c| c.trim().to_owned())
        .or_else(|| git_commit(&manifest))
        .unwrap_or_default();
    let target = std::env::var("TARGET").unwrap_or_default();
    let profile = std::env::var("PROFILE").unwrap_or_default();
    let rustc = std::env::var_os("RUSTC")
        .and_then(|r| Command::new(r).arg("--version").output().ok())
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let code = format!(
        "/// The git commit (12 hex digits), or empty when the build did not know it.\n\
         pub const COMMIT: &str = {commit:?};\n\
         /// The target triple.\n\
         pub const TARGET: &str = {target:?};\n\
         /// The cargo profile (`debug`, `release`).\n\
         pub const PROFILE: &str = {profile:?};\n\
         /// `rustc --version` of the compiler.\n\
         pub const RUSTC: &str = {rustc:?};\n"
    );
    std::fs::write(out.join("build_info.rs"), code).expect("write build_info.rs");
}

/// `git rev-parse --short=12 HEAD` in the checkout, and the files whose change means a new
/// HEAD (watched only when they exist: a missing one would rerun this on every build).
fn git_commit(dir: &Path) -> Option<String> {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
    let mut watched = vec![git(&["rev-parse", "--git-path", "HEAD"])];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(git(&["rev-parse", "--git-path", &branch]));
    }
    watched.push(git(&["rev-parse", "--git-path", "packed-refs"]));
    for path in watched.into_iter().flatten() {
        let path = dir.join(path);
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    Some(commit)
}
