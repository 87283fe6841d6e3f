//! ListVolumes / ListSnapshots paging. Entries are sorted by name and a token names the
//! last entry of its page, so a page boundary survives creates and deletes between calls.
//! A token we did not make is ABORTED (the spec's answer for an invalid token).
//!
//! A walk through a long list would otherwise fetch the whole list from the CSP once per
//! page (20 fetches of 10,000 volumes for pages of 500). So the first page's listing is
//! kept ([`Listings`]) and the token also names it: `page:<listing id>/<last name>`. Later
//! pages are cut from it while it is fresh, which means all of: younger than [`KEEP`],
//! made by the same query, and no change went through the backend's client since it was
//! fetched ([`crate::provider::CspClient::write_generation`]). Otherwise the next page is
//! cut from a new listing after the token's name, exactly as without a kept listing (and
//! that one is kept in turn). A listing is dropped when its last page is served, when it
//! expires, or when newer ones push it out ([`MAX_KEPT`]).

use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::Status;

/// The stateless form: `after:<last name>`.
const AFTER: &str = "after:";
/// The form naming a kept listing: `page:<16 hex>/<last name>`.
const PAGE: &str = "page:";
/// How long a listing serves later pages.
pub const KEEP: Duration = Duration::from_secs(30);
/// Listings kept at once (walks running side by side); the oldest goes first.
pub const MAX_KEPT: usize = 4;
/// A listing at least this long is worth handing its memory back when dropped.
const LARGE: usize = 1000;

/// Where a request starts.
#[derive(Debug, PartialEq, Eq)]
pub enum Start<'a> {
    First,
    /// After this name, preferably from the listing with this id.
    After {
        listing: Option<u64>,
        name: &'a str,
    },
}

/// Reads a `starting_token`; one this module did not make → ABORTED.
pub fn parse_token(token: &str) -> Result<Start<'_>, Status> {
    let invalid = || Status::aborted(format!("starting_token '{token}' is not valid"));
    if token.is_empty() {
        return Ok(Start::First);
    }
    if let Some(name) = token.strip_prefix(AFTER) {
        return match name.is_empty() {
            true => Err(invalid()),
            false => Ok(Start::After {
                listing: None,
                name,
            }),
        };
    }
    let rest = token.strip_prefix(PAGE).ok_or_else(invalid)?;
    let (id, name) = rest.split_once('/').ok_or_else(invalid)?;
    if id.len() != 16 || name.is_empty() {
        return Err(invalid());
    }
    let id = u64::from_str_radix(id, 16).map_err(|_| invalid())?;
    Ok(Start::After {
        listing: Some(id),
        name,
    })
}

/// The window of `items` (sorted by `key`) a page covers: after `after`, at most
/// `max_entries` (0: no limit); and whether more remain behind it.
pub fn window<T>(
    items: &[T],
    key: impl Fn(&T) -> &str,
    max_entries: i32,
    after: Option<&str>,
) -> (Range<usize>, bool) {
    let start = after.map_or(0, |last| items.partition_point(|i| key(i) <= last));
    let limit = if max_entries > 0 {
        max_entries as usize
    } else {
        usize::MAX
    };
    let end = start.saturating_add(limit).min(items.len());
    (start..end, end < items.len())
}

/// The page of `items` (sorted by `key`) that `starting_token` and `max_entries` ask for,
/// and the stateless token of the page after it ("" at the end).
pub fn page<T>(
    items: Vec<T>,
    key: impl Fn(&T) -> &str,
    max_entries: i32,
    starting_token: &str,
) -> Result<(Vec<T>, String), Status> {
    let after = match parse_token(starting_token)? {
        Start::First => None,
        Start::After { name, .. } => Some(name),
    };
    let (range, more) = window(&items, &key, max_entries, after);
    let next = match more {
        true => format!("{AFTER}{}", key(&items[range.end - 1])),
        false => String::new(),
    };
    let end = range.end;
    let mut items = items;
    items.truncate(end);
    let page = items.split_off(range.start);
    Ok((page, next))
}

struct Kept<T> {
    id: u64,
    /// What was listed (a backend, a filter): a token is only good for the same query.
    query: String,
    generation: u64,
    made: Instant,
    items: Arc<Vec<T>>,
}

/// Listings kept between the pages of a walk (see the module notes).
pub struct Listings<T> {
    kept: Mutex<Vec<Kept<T>>>,
}

impl<T> Default for Listings<T> {
    fn default() -> Self {
        Listings {
            kept: Mutex::new(Vec::new()),
        }
    }
}

/// A listing to cut pages from, with the id under which it is kept (if it is).
pub struct Listing<T> {
    pub id: Option<u64>,
    pub items: Arc<Vec<T>>,
}

impl<T> Listings<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Kept<T>>> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The kept listing `id`, if it is still fresh for `query` at `generation`.
    pub fn fresh(&self, id: u64, query: &str, generation: u64) -> Option<Listing<T>> {
        let mut kept = self.lock();
        expire(&mut kept);
        kept.iter()
            .find(|k| k.id == id && k.query == query && k.generation == generation)
            .map(|k| Listing {
                id: Some(k.id),
                items: k.items.clone(),
            })
    }

    /// Keeps `items` (fetched at `generation` for `query`) for the next pages; returns the
    /// listing id.
    pub fn keep(&self, query: &str, generation: u64, items: Arc<Vec<T>>) -> u64 {
        let id = crate::random::u64();
        let mut kept = self.lock();
        expire(&mut kept);
        if kept.len() >= MAX_KEPT {
            kept.remove(0);
        }
        kept.push(Kept {
            id,
            query: query.to_owned(),
            generation,
            made: Instant::now(),
            items,
        });
        id
    }

    /// Drops listing `id` (its walk ended).
    pub fn drop_listing(&self, id: u64) {
        let gone = {
            let mut kept = self.lock();
            let at = kept.iter().position(|k| k.id == id);
            at.map(|i| kept.remove(i))
        };
        if let Some(k) = gone {
            release(k);
        }
    }

    /// Drops every expired listing (a walk abandoned halfway).
    pub fn expire(&self) {
        let gone: Vec<Kept<T>> = {
            let mut kept = self.lock();
            let (old, young) = std::mem::take(&mut *kept)
                .into_iter()
                .partition(|k| k.made.elapsed() >= KEEP);
            *kept = young;
            old
        };
        for k in gone {
            release(k);
        }
    }
}

fn expire<T>(kept: &mut Vec<Kept<T>>) {
    kept.retain(|k| k.made.elapsed() < KEEP);
}

/// Frees a dropped listing; a large one also hands the freed memory back to the system
/// (the allocator keeps it otherwise, see [`crate::memory`]).
fn release<T>(k: Kept<T>) {
    let large = k.items.len() >= LARGE;
    drop(k);
    if large {
        crate::memory::release_free_memory();
    }
}

/// The token of the page after one that ended at `last`, from listing `id` if kept.
pub fn next_token(listing: Option<u64>, last: &str) -> String {
    match listing {
        Some(id) => format!("{PAGE}{id:016x}/{last}"),
        None => format!("{AFTER}{last}"),
    }
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

    #[test]
    fn tokens_round_trip_and_garbage_is_aborted() {
        assert_eq!(parse_token("").unwrap(), Start::First);
        let t = next_token(Some(0xabc), "pvc-1/x");
        assert_eq!(t, "page:0000000000000abc/pvc-1/x");
        assert_eq!(
            parse_token(&t).unwrap(),
            Start::After {
                listing: Some(0xabc),
                name: "pvc-1/x"
            }
        );
        assert_eq!(
            parse_token(&next_token(None, "v")).unwrap(),
            Start::After {
                listing: None,
                name: "v"
            }
        );
        for bad in [
            "garbage",
            "after:",
            "page:",
            "page:0000000000000abc",
            "page:0000000000000abc/",
            "page:xyz0000000000abc/v",
            "page:abc/v",
        ] {
            assert_eq!(
                parse_token(bad).unwrap_err().code(),
                tonic::Code::Aborted,
                "{bad}"
            );
        }
    }

    #[test]
    fn windows_start_after_the_name_even_if_it_is_gone() {
        let names = ["a", "c", "e"];
        assert_eq!(window(&names, |s| s, 2, None), (0..2, true));
        assert_eq!(window(&names, |s| s, 2, Some("b")), (1..3, false));
        assert_eq!(window(&names, |s| s, 0, Some("a")), (1..3, false));
        assert_eq!(window(&names, |s| s, 5, Some("z")), (3..3, false));
    }

    #[test]
    fn kept_listings_are_fresh_for_one_query_and_generation() {
        let l: Listings<u32> = Listings::default();
        let id = l.keep("vol", 7, Arc::new(vec![1, 2, 3]));
        assert!(l.fresh(id, "vol", 7).is_some());
        assert!(l.fresh(id, "vol", 8).is_none());
        assert!(l.fresh(id, "snap", 7).is_none());
        assert!(l.fresh(id ^ 1, "vol", 7).is_none());
        l.drop_listing(id);
        assert!(l.fresh(id, "vol", 7).is_none());
        let ids: Vec<u64> = (0..MAX_KEPT + 1)
            .map(|i| l.keep("vol", i as u64, Arc::new(vec![])))
            .collect();
        assert!(
            l.fresh(ids[0], "vol", 0).is_none(),
            "the oldest is pushed out"
        );
        assert!(l.fresh(ids[MAX_KEPT], "vol", MAX_KEPT as u64).is_some());
    }
}
