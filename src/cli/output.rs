//! Human tables by default, JSON for scripts.

use crate::engine::size::human;
use serde::Serialize;
use volbridge_proto::admin::{BackendInfo, SnapshotInfo, VolumeInfo};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// Prints rows as aligned columns under a header.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  ", w = *w));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

pub fn json<T: Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("volbridge: cannot encode the answer as JSON: {e}"),
    }
}

pub fn volumes(format: Format, list: &[VolumeInfo]) {
    if format == Format::Json {
        return json(&list);
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|v| {
            vec![
                v.name.clone(),
                v.backend.clone(),
                human(v.size_bytes),
                if v.published { "yes" } else { "no" }.to_owned(),
                v.status.clone(),
                v.id.clone(),
            ]
        })
        .collect();
    table(
        &["NAME", "BACKEND", "SIZE", "PUBLISHED", "STATUS", "ID"],
        &rows,
    );
}

pub fn volume(format: Format, v: &VolumeInfo) {
    if format == Format::Json {
        return json(v);
    }
    let mut rows = vec![
        vec!["name".into(), v.name.clone()],
        vec!["id".into(), v.id.clone()],
        vec!["backend".into(), v.backend.clone()],
        vec![
            "size".into(),
            format!("{} ({} bytes)", human(v.size_bytes), v.size_bytes),
        ],
        vec!["published".into(), v.published.to_string()],
        vec!["status".into(), v.status.clone()],
    ];
    if let Some(d) = &v.description {
        rows.push(vec!["description".into(), d.clone()]);
    }
    if let Some(s) = &v.source {
        rows.push(vec!["source".into(), format!("{} {}", s.kind, s.id)]);
    }
    if let Some(u) = v.used_bytes {
        rows.push(vec!["used".into(), human(u)]);
    }
    if let Some(p) = &v.copy_progress {
        rows.push(vec!["copy".into(), copy_progress(p)]);
    }
    if let Some(how) = &v.filesystem_resize {
        rows.push(vec!["filesystem".into(), filesystem_resize(how)]);
    }
    for (k, val) in &v.config {
        rows.push(vec![format!("config.{k}"), val.clone()]);
    }
    table(&["FIELD", "VALUE"], &rows);
}

/// `filesystem_resize` in words: what volbridge did, never a step left to the user.
pub fn filesystem_resize(how: &str) -> String {
    match how {
        "online" => "grown online, while mounted".to_owned(),
        "offline" => "grown offline: the kernel refused to grow it mounted, so volbridge \
                      unmounted it, checked and grew it, and mounted it again"
            .to_owned(),
        "device only" => "none (raw block volume): the device grew".to_owned(),
        "next mount" => "not mounted here: grows at its next mount on this node".to_owned(),
        other => other.to_owned(),
    }
}

pub fn snapshots(format: Format, list: &[SnapshotInfo]) {
    if format == Format::Json {
        return json(&list);
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.volume_name.clone().unwrap_or_else(|| s.volume_id.clone()),
                s.backend.clone(),
                human(s.size_bytes),
                if s.ready_to_use { "yes" } else { "no" }.to_owned(),
                humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH
                        + std::time::Duration::from_secs(s.creation_time.max(0) as u64),
                )
                .to_string(),
                s.id.clone(),
            ]
        })
        .collect();
    table(
        &[
            "NAME", "VOLUME", "BACKEND", "SIZE", "READY", "CREATED", "ID",
        ],
        &rows,
    );
}

pub fn snapshot(format: Format, s: &SnapshotInfo) {
    if format == Format::Json {
        return json(s);
    }
    let mut rows = vec![
        vec!["name".into(), s.name.clone()],
        vec!["id".into(), s.id.clone()],
        vec!["backend".into(), s.backend.clone()],
        vec![
            "volume".into(),
            s.volume_name.clone().unwrap_or_else(|| s.volume_id.clone()),
        ],
        vec![
            "size".into(),
            format!("{} ({} bytes)", human(s.size_bytes), s.size_bytes),
        ],
        vec![
            "created".into(),
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH
                    + std::time::Duration::from_secs(s.creation_time.max(0) as u64),
            )
            .to_string(),
        ],
        vec!["ready".into(), s.ready_to_use.to_string()],
        vec!["in use".into(), s.in_use.to_string()],
    ];
    if let Some(p) = &s.copy_progress {
        rows.push(vec!["copy".into(), copy_progress(p)]);
    }
    table(&["FIELD", "VALUE"], &rows);
}

/// `"120MiB of 500MiB (24%)"`: how far a CSP's background copy has come.
pub fn copy_progress(p: &volbridge_proto::csp::CopyProgress) -> String {
    format!(
        "{} of {} ({}%)",
        human(p.bytes_done),
        human(p.bytes_total),
        p.percent()
    )
}

pub fn backends(format: Format, list: &[BackendInfo]) {
    if format == Format::Json {
        return json(&list);
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|b| {
            let mut name = b.name.clone();
            if b.default {
                name.push_str(" (default)");
            }
            let state = match (&b.error, b.reachable) {
                (_, true) => "reachable".to_owned(),
                (Some(e), false) => format!("unreachable: {e}"),
                (None, false) => "unreachable".to_owned(),
            };
            let free = b
                .capacity
                .map(|c| format!("{} of {}", human(c.free_bytes), human(c.total_bytes)))
                .unwrap_or_else(|| "-".into());
            let provisioned = b
                .capacity
                .and_then(|c| {
                    let p = human(c.provisioned_bytes?);
                    Some(match c.provisioned_limit_bytes {
                        Some(l) => format!("{p} of {}", human(l)),
                        None => p,
                    })
                })
                .unwrap_or_else(|| "-".into());
            let pool = b
                .pool
                .as_ref()
                .map(|p| {
                    format!(
                        "{} ({})",
                        p.mode,
                        if p.reflink { "reflink" } else { "copies" }
                    )
                })
                .unwrap_or_else(|| "-".into());
            vec![
                name,
                if b.embedded { "embedded" } else { "remote" }.to_owned(),
                b.url.clone(),
                free,
                provisioned,
                pool,
                state,
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "KIND",
            "URL",
            "FREE",
            "PROVISIONED",
            "POOL",
            "STATE",
        ],
        &rows,
    );
    for b in list {
        if let Some(p) = b.pool.as_ref().filter(|p| !p.reason.is_empty()) {
            println!("{}: {} pool: {}", b.name, p.mode, p.reason);
        }
    }
}
