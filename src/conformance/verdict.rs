//! What a check concluded, and the step type every check returns: shared by the checks and
//! the raw HTTP layer (a transport failure is a failed check), depending on neither.

/// What a check concluded before its level is applied.
#[derive(Debug)]
pub(crate) enum Verdict {
    Pass(String),
    Fail(String),
    Warn(String),
    Skip(String),
}

impl Verdict {
    pub fn text(&self) -> &str {
        match self {
            Verdict::Pass(t) | Verdict::Fail(t) | Verdict::Warn(t) | Verdict::Skip(t) => t,
        }
    }
}

/// A check body: `Ok(note)` passes; `Err` carries any other verdict, so `?` ends the check.
pub(super) type Step<T = String> = Result<T, Verdict>;

pub(super) fn fail<T>(msg: impl Into<String>) -> Step<T> {
    Err(Verdict::Fail(msg.into()))
}

pub(super) fn ensure(cond: bool, msg: impl FnOnce() -> String) -> Step<()> {
    if cond {
        Ok(())
    } else {
        fail(msg())
    }
}
