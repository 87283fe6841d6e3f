//! ListVolumes / ListSnapshots paging. Entries are sorted by name and a token names the
//! first entry of the next page, so a page boundary survives creates and deletes between
//! calls. A token we did not make is ABORTED (the spec's answer for an invalid token).

use tonic::Status;

const PREFIX: &str = "after:";

/// The page of `items` (sorted by `key`) that `starting_token` and `max_entries` ask for,
/// and the token of the page after it ("" at the end).
pub fn page<T>(
    items: Vec<T>,
    key: impl Fn(&T) -> &str,
    max_entries: i32,
    starting_token: &str,
) -> Result<(Vec<T>, String), Status> {
    let start = if starting_token.is_empty() {
        0
    } else {
        let last = starting_token
            .strip_prefix(PREFIX)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                Status::aborted(format!("starting_token '{starting_token}' is not valid"))
            })?;
        items.partition_point(|i| key(i) <= last)
    };
    let limit = if max_entries > 0 {
        max_entries as usize
    } else {
        usize::MAX
    };
    let mut rest: Vec<T> = items.into_iter().skip(start).collect();
    let next = if rest.len() > limit {
        rest.truncate(limit);
        format!("{PREFIX}{}", key(&rest[limit - 1]))
    } else {
        String::new()
    };
    Ok((rest, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_walk_the_list() {
        let names: Vec<String> = (0..5).map(|i| format!("v{i}")).collect();
        let (p1, t1) = page(names.clone(), |s| s, 2, "").unwrap();
        assert_eq!(p1, ["v0", "v1"]);
        let (p2, t2) = page(names.clone(), |s| s, 2, &t1).unwrap();
        assert_eq!(p2, ["v2", "v3"]);
        let (p3, t3) = page(names.clone(), |s| s, 2, &t2).unwrap();
        assert_eq!(p3, ["v4"]);
        assert_eq!(t3, "");
        let (all, t) = page(names.clone(), |s| s, 0, "").unwrap();
        assert_eq!((all.len(), t.as_str()), (5, ""));
        assert_eq!(
            page(names, |s| s, 2, "garbage").unwrap_err().code(),
            tonic::Code::Aborted
        );
    }
}
