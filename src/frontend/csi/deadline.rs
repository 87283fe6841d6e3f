//! The caller's deadline: gRPC sends it as the `grpc-timeout` header (PROTOCOL-HTTP2:
//! 1 to 8 digits and a unit, `H` `M` `S` `m` `u` `n`). A call that waits for a copy answers
//! a little before it, so that the caller gets our answer (ABORTED: retry with the same
//! name) rather than its own DEADLINE_EXCEEDED with no word on what is pending.

use super::status::status;
use crate::Error;
use std::future::Future;
use std::time::{Duration, Instant};
use tonic::metadata::MetadataMap;
use tonic::Status;

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

/// Until when a call may wait for a copy: its deadline less a margin, or `now + fallback`
/// when the caller set none. The margin is a tenth of the timeout, but never under 250 ms
/// (the answer's own trip through a loaded host) unless that is more than half of a short
/// timeout, and never over 2 s.
pub fn copy_deadline(metadata: &MetadataMap, fallback: Duration) -> Instant {
    let now = Instant::now();
    let timeout = metadata
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout);
    match timeout {
        Some(t) => now + t.saturating_sub(margin(t)),
        None => now + fallback,
    }
}

/// Runs `work` on its own task and answers by `until` whatever happens: ABORTED with a hint
/// to retry when the work is not done. The work goes on to its end (or its next safe stop),
/// so a slow step on a loaded host is never cut at an arbitrary await, and the retry finds
/// what it made by name. Without this the server's own deadline drops the call mid-way and
/// the caller hears CANCELLED, with no word on what is pending.
pub async fn answer_by<T: Send + 'static>(
    until: Instant,
    pending: impl FnOnce() -> String,
    work: impl Future<Output = Result<T, Error>> + Send + 'static,
) -> Result<T, Status> {
    let task = tokio::spawn(work);
    match tokio::time::timeout_at(until.into(), task).await {
        Ok(Ok(done)) => done.map_err(status),
        Ok(Err(join)) => {
            tracing::error!(error = %join, "a CSI call's task ended abnormally");
            Err(Status::internal(format!(
                "{}: the call failed inside the daemon; see its log, then retry",
                pending()
            )))
        }
        Err(_) => Err(Status::aborted(pending())),
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
        let (tx, rx) = tokio::sync::oneshot::channel();
        let until = Instant::now() + Duration::from_millis(50);
        let answer = answer_by(
            until,
            || "volume 'v': retry with the same name".to_owned(),
            async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let _ = tx.send(());
                Ok(())
            },
        )
        .await;
        assert!(Instant::now() < until + Duration::from_millis(200));
        let st = answer.unwrap_err();
        assert_eq!(st.code(), tonic::Code::Aborted);
        assert!(st.message().contains("retry with the same name"));
        rx.await.expect("the work went on after the answer");
        let done = answer_by(
            Instant::now() + Duration::from_secs(5),
            String::new,
            async { Ok(7) },
        );
        assert_eq!(done.await.unwrap(), 7);
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
        let d = copy_deadline(&m, Duration::from_secs(300));
        assert!(d >= before + Duration::from_secs(299));
        m.insert("grpc-timeout", "10S".parse().unwrap());
        let d = copy_deadline(&m, Duration::from_secs(300));
        assert!(d <= Instant::now() + Duration::from_secs(9));
        assert!(d >= before + Duration::from_millis(8_900));
        m.insert("grpc-timeout", "60S".parse().unwrap());
        let d = copy_deadline(&m, Duration::from_secs(300));
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
