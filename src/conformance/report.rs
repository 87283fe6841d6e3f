//! Result types of a conformance run and their one-line rendering.

use std::fmt;

/// The verdict on one check. S-level checks never produce `Fail`: their failures warn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    Fail,
    Warn,
    Skip,
}

impl Outcome {
    /// The label printed in front of a check line; upper case for the one that fails a run.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "FAIL",
            Outcome::Warn => "warn",
            Outcome::Skip => "skip",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckResult {
    /// `C01` … `C40`, as numbered in csp-api.md §9.
    pub id: &'static str,
    /// `M` (must) or `S` (should).
    pub level: char,
    pub title: &'static str,
    pub outcome: Outcome,
    /// Why it did not pass, or a note on a pass; never holds a password or token.
    pub detail: String,
}

impl fmt::Display for CheckResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<4}  {} {}  {}",
            self.outcome.label(),
            self.id,
            self.level,
            self.title
        )?;
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    pub results: Vec<CheckResult>,
}

impl Report {
    fn count(&self, outcome: Outcome) -> usize {
        self.results.iter().filter(|r| r.outcome == outcome).count()
    }

    pub fn passed(&self) -> usize {
        self.count(Outcome::Pass)
    }

    /// M-level failures: the ones that fail the run.
    pub fn failed(&self) -> usize {
        self.results
            .iter()
            .filter(|r| r.outcome == Outcome::Fail && r.level == 'M')
            .count()
    }

    pub fn warned(&self) -> usize {
        self.count(Outcome::Warn)
    }

    pub fn skipped(&self) -> usize {
        self.count(Outcome::Skip)
    }

    pub fn ok(&self) -> bool {
        self.failed() == 0
    }

    /// `N passed, M failed`, plus the warned and skipped counts when there are any.
    pub fn summary(&self) -> String {
        let mut s = format!("{} passed, {} failed", self.passed(), self.failed());
        if self.warned() > 0 {
            s.push_str(&format!(", {} warned", self.warned()));
        }
        if self.skipped() > 0 {
            s.push_str(&format!(", {} skipped", self.skipped()));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(outcome: Outcome, level: char, detail: &str) -> CheckResult {
        CheckResult {
            id: "C07",
            level,
            title: "lookup of an unused name",
            outcome,
            detail: detail.to_owned(),
        }
    }

    #[test]
    fn lines_follow_the_cli_format() {
        let fail = result(Outcome::Fail, 'M', "got 200 [] (want 404)");
        assert_eq!(
            fail.to_string(),
            "FAIL  C07 M  lookup of an unused name: got 200 [] (want 404)"
        );
        let pass = result(Outcome::Pass, 'M', "");
        assert_eq!(pass.to_string(), "pass  C07 M  lookup of an unused name");
    }

    #[test]
    fn only_m_level_failures_fail_the_run() {
        let report = Report {
            results: vec![
                result(Outcome::Pass, 'M', ""),
                result(Outcome::Warn, 'S', "x"),
                result(Outcome::Skip, 'S', "y"),
            ],
        };
        assert!(report.ok());
        assert_eq!(report.summary(), "1 passed, 0 failed, 1 warned, 1 skipped");
        let mut bad = report.clone();
        bad.results.push(result(Outcome::Fail, 'M', "z"));
        assert_eq!((bad.failed(), bad.ok()), (1, false));
    }
}
