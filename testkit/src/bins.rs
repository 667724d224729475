//! The workspace's binaries as a test finds them: in the directory its own
//! binaries are built in (`<target>/<profile>`, or
//! `<target>/<triple>/<profile>`), built there once with `cargo build` when
//! missing.
//!
//! A library cannot see `CARGO_BIN_EXE_*`, so a test names the directory:
//! [`BinDir::containing`] with the path of one of its package's binaries
//! (`env!("CARGO_BIN_EXE_tessera-sim")`), or [`BinDir::of_test`], from the
//! running test executable. A workspace-wide `cargo test` builds every
//! package's binaries there. Binaries that are present are used as they
//! are: after changing the coordinator or the participant, run the tests
//! from the workspace root (as CI does) or build the binaries first.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// A directory of built binaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinDir {
    dir: PathBuf,
}

impl BinDir {
    /// The directory that holds the binary `exe`.
    ///
    /// # Panics
    /// If `exe` has no parent directory.
    pub fn containing(exe: impl AsRef<Path>) -> Self {
        let dir = exe
            .as_ref()
            .parent()
            .expect("a binary lives in a directory")
            .to_path_buf();
        Self { dir }
    }

    /// The directory the running test's package binaries are built in: the
    /// parent of the test executable's `deps` directory.
    ///
    /// # Panics
    /// If the running executable cannot be located.
    pub fn of_test() -> Self {
        let exe = std::env::current_exe().expect("locating the test executable");
        let mut dir = exe
            .parent()
            .expect("the test executable lives in a directory")
            .to_path_buf();
        if dir.file_name().is_some_and(|n| n == "deps") {
            dir.pop();
        }
        Self { dir }
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Where the binary `name` is (or would be) in this directory.
    pub fn exe(&self, name: &str) -> PathBuf {
        self.dir
            .join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
    }

    /// The binaries `names`, built once into this directory (same profile
    /// and target directory) if any is missing.
    ///
    /// # Panics
    /// If the build fails or a binary is still missing after it.
    pub fn require(&self, names: &[&str]) -> Vec<PathBuf> {
        // One build at a time per test process; the next caller finds them.
        static BUILDING: Mutex<()> = Mutex::new(());
        let _one = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
        let paths: Vec<PathBuf> = names.iter().map(|n| self.exe(n)).collect();
        if !paths.iter().all(|p| p.is_file()) {
            self.build(names);
        }
        for p in &paths {
            assert!(p.is_file(), "{} is missing after building it", p.display());
        }
        paths
    }

    /// Builds `names` into this directory with `cargo build --bin …`.
    fn build(&self, names: &[&str]) {
        let dir = &self.dir;
        let profile_dir = dir
            .file_name()
            .expect("a profile directory")
            .to_string_lossy()
            .into_owned();
        let profile = if profile_dir == "debug" {
            "dev".to_owned()
        } else {
            profile_dir
        };
        let mut target_dir = dir.parent().expect("a target directory").to_path_buf();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.arg("build");
        for name in names {
            cmd.args(["--bin", name]);
        }
        cmd.args(["--profile", &profile]);
        // Cargo marks the root of a target directory with CACHEDIR.TAG; without
        // it, `dir` is `<target>/<triple>/<profile>`.
        if !target_dir.join("CACHEDIR.TAG").exists() {
            let triple = target_dir
                .file_name()
                .expect("a target triple directory")
                .to_string_lossy()
                .into_owned();
            cmd.args(["--target", &triple]);
            target_dir = target_dir
                .parent()
                .expect("a target directory")
                .to_path_buf();
        }
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        eprintln!(
            "building {} ({profile}) into {}",
            names.join(" and "),
            target_dir.display()
        );
        let status = cmd
            .env("CARGO_TARGET_DIR", &target_dir)
            .current_dir(workspace)
            .status()
            .expect("running cargo build");
        assert!(
            status.success(),
            "cargo build of {} failed: {status}",
            names.join(" and ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binaries_are_looked_for_next_to_the_test() {
        let dir = BinDir::containing("/t/debug/tessera-sim");
        assert_eq!(dir.path(), Path::new("/t/debug"));
        assert_eq!(
            dir.exe("tessera-coordinator"),
            Path::new(&format!(
                "/t/debug/tessera-coordinator{}",
                std::env::consts::EXE_SUFFIX
            ))
        );
        let here = BinDir::of_test();
        assert!(here.path().file_name().is_some_and(|n| n != "deps"));
        assert!(here.path().is_dir());
    }
}
