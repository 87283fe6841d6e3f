//! How this binary was built (`volbridge --version`): the package version, and what
//! `build.rs` found: the git commit, target, profile and compiler.

include!(concat!(env!("OUT_DIR"), "/build_info.rs"));

/// The package version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `--version`'s text after the program's name: the version, then one line per detail.
pub fn long_version() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| {
        let commit = if COMMIT.is_empty() {
            "unknown (built outside a git checkout; set VOLBRIDGE_BUILD_COMMIT)"
        } else {
            COMMIT
        };
        format!(
            "{VERSION}\ncommit:  {commit}\ntarget:  {TARGET}\nprofile: {PROFILE}\nrustc:   {}",
            if RUSTC.is_empty() { "unknown" } else { RUSTC }
        )
    })
}
