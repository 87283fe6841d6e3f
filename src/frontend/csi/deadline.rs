//! The caller's deadline: gRPC sends it as the `grpc-timeout` header (PROTOCOL-HTTP2:
//! 1 to 8 digits and a unit, `H` `M` `S` `m` `u` `n`). A call that waits for a copy answers
//! a little before it, so that the caller gets our answer (ABORTED: retry with the same
//! name) rather than its own DEADLINE_EXCEEDED with no word on what is pending.

use super::status::status;
use crate::Error;
use std::future::Future;
use std::time::{Duration, Instant};
use tokio_util::task::TaskTracker;
use tonic::metadata::MetadataMap;
use tonic::Status;
use tracing::Instrument;

/// `grpc-timeout` as a duration; `None` when absent or malformed.
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let value = value.trim();
    let (digits, unit) = value.split_at_checked(value.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// When the answer is due: the caller's deadline less a margin; `None` when it set none.
/// The margin is a tenth of the timeout, but never under 250 ms (the answer's own trip
/// through a loaded host) unless that is more than half of a short timeout, and never
/// over 2 s.
pub fn answer_deadline(metadata: &MetadataMap) -> Option<Instant> {
    let now = Instant::now();
    metadata
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
        .map(|t| now + t.saturating_sub(margin(t)))
}

/// Runs `work` on its own task (kept in `tasks`, which shutdown waits for) and answers by
/// `until` whatever happens: `pending` as ABORTED when the work is not done. The work goes
/// on to its end (or its next safe stop), so a slow step on a loaded host is never cut at
/// an arbitrary await, and the retry finds what it made by name; how it ended is logged.
/// Without this the server's own deadline drops the call mid-way and the caller hears
/// CANCELLED, with no word on what is pending. No `until`: the answer waits for the work.
pub async fn answer_by<T: Send + 'static>(
    tasks: &TaskTracker,
    until: Option<Instant>,
    what: String,
    pending: String,
    work: impl Future<Output = Result<T, Error>> + Send + 'static,
) -> Result<T, Status> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let object = what.clone();
    tasks.spawn(
        async move {
            if let Err(unheard) = tx.send(work.await) {
                match unheard {
                    Ok(_) => {
                        tracing::info!(object = %object, "done after the caller's deadline; its retry finds it")
                    }
                    // Still pending (a copy): the retry waits on; routine.
                    Err(e) if e.kind == crate::ErrorKind::Aborted => {
                        tracing::info!(object = %object, "{e}")
                    }
                    Err(e) => {
                        tracing::warn!(object = %object, error = %e, "failed after the caller's deadline; its retry tries again")
                    }
                }
            }
        }
        .instrument(tracing::Span::current()),
    );
    let answer = match until {
        Some(t) => tokio::time::timeout_at(t.into(), rx).await,
        None => Ok(rx.await),
    };
    match answer {
        Ok(Ok(done)) => done.map_err(status),
        // The task ended without an answer: it panicked (tokio logged it).
        Ok(Err(_)) => Err(Status::internal(format!(
            "{what}: the call failed inside the daemon; see its log, then retry"
        ))),
        Err(_) => Err(Status::aborted(pending)),
    }
}

fn margin(timeout: Duration) -> Duration {
    (timeout / 10)
        .max(Duration::from_millis(250).min(timeout / 2))
        .min(Duration::from_secs(2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_past_the_deadline_answers_aborted_and_runs_on() {
        let tasks = TaskTracker::new();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (go, wait) = tokio::sync::oneshot::channel::<()>();
        let answer = answer_by(
            &tasks,
            Some(Instant::now() + Duration::from_millis(50)),
            "volume 'v'".into(),
            "volume 'v': retry with the same name".into(),
            async move {
                let _ = wait.await;
                let _ = tx.send(());
                Ok(())
            },
        )
        .await;
        let st = answer.unwrap_err();
        assert_eq!(st.code(), tonic::Code::Aborted);
        assert!(st.message().contains("retry with the same name"));
        // The work was still running when the answer came, and goes on after it.
        tasks.close();
        assert!(!tasks.is_empty());
        go.send(()).unwrap();
        rx.await.expect("the work went on after the answer");
        tasks.wait().await;
    }

    #[tokio::test]
    async fn without_a_deadline_the_answer_waits_for_the_work() {
        let tasks = TaskTracker::new();
        let slow = answer_by(&tasks, None, "v".into(), String::new(), async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok(7)
        });
        assert_eq!(slow.await.unwrap(), 7);
        let failed = answer_by::<()>(&tasks, None, "volume 'v'".into(), String::new(), async {
            Err(Error::not_found("volume 'v' does not exist"))
        });
        assert_eq!(failed.await.unwrap_err().code(), tonic::Code::NotFound);
        let panicked = answer_by::<()>(&tasks, None, "volume 'v'".into(), String::new(), async {
            panic!("a bug")
        });
        let st = panicked.await.unwrap_err();
        assert_eq!(st.code(), tonic::Code::Internal);
        assert!(st.message().starts_with("volume 'v': "), "{}", st.message());
    }

    #[test]
    fn timeouts_parse() {
        assert_eq!(parse_grpc_timeout("15S"), Some(Duration::from_secs(15)));
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(
            parse_grpc_timeout("99999999u"),
            Some(Duration::from_micros(99_999_999))
        );
        assert_eq!(parse_grpc_timeout("7n"), Some(Duration::from_nanos(7)));
        for bad in ["", "S", "15", "15s", "123456789S", "-1S", "1.5S", "x1S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_answer_comes_before_the_deadline() {
        let mut m = MetadataMap::new();
        let before = Instant::now();
        assert_eq!(answer_deadline(&m), None);
        m.insert("grpc-timeout", "10S".parse().unwrap());
        let d = answer_deadline(&m).unwrap();
        assert!(d <= Instant::now() + Duration::from_secs(9));
        assert!(d >= before + Duration::from_millis(8_900));
        m.insert("grpc-timeout", "60S".parse().unwrap());
        let d = answer_deadline(&m).unwrap();
        assert!(d <= Instant::now() + Duration::from_secs(58));
    }

    #[test]
    fn a_short_deadline_keeps_room_for_the_answer() {
        let ms = Duration::from_millis;
        assert_eq!(margin(ms(600)), ms(250));
        assert_eq!(margin(ms(300)), ms(150));
        assert_eq!(margin(ms(5_000)), ms(500));
        assert_eq!(margin(Duration::from_secs(120)), Duration::from_secs(2));
        assert_eq!(margin(Duration::ZERO), Duration::ZERO);
    }
}
