use super::*;

#[test]
fn rounding() {
    assert_eq!(round_up(1, GIB), GIB);
    assert_eq!(round_up(GIB, GIB), GIB);
    assert_eq!(round_down(GIB + 5, 1 << 20), GIB);
    assert_eq!(reserve(0), 512 << 20);
    assert_eq!(reserve(100 * GIB), 2 * GIB);
}

#[test]
fn a_kept_decision_wins_over_auto_and_conflicts_with_another_mode() {
    let d = std::env::temp_dir().join(format!("vb-pool-{}", crate::ids::new_id()));
    std::fs::create_dir_all(&d).unwrap();
    let m = Marker {
        mode: PoolMode::BtrfsImage,
        reason: "kept".into(),
    };
    files::write_atomic(&d.join(MARKER), &serde_json::to_vec(&m).unwrap()).unwrap();
    assert_eq!(
        decide(&d, PoolChoice::Auto).unwrap(),
        (PoolMode::BtrfsImage, "kept".into())
    );
    let e = decide(&d, PoolChoice::XfsImage).unwrap_err().to_string();
    assert!(
        e.contains("btrfs-image pool") && e.contains("set pool"),
        "{e}"
    );
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_dir_with_images_from_before_pools_keeps_them() {
    let d = std::env::temp_dir().join(format!("vb-pool-{}", crate::ids::new_id()));
    std::fs::create_dir_all(d.join("volumes")).unwrap();
    std::fs::write(d.join("volumes/0123.img"), b"").unwrap();
    assert!(holds_images(&d));
    let e = decide(&d, PoolChoice::XfsImage).unwrap_err().to_string();
    assert!(e.contains("needs a new data dir"), "{e}");
    if !files::reflink_works(&d) {
        let (mode, why) = decide(&d, PoolChoice::Auto).unwrap();
        assert_eq!(mode, PoolMode::Dir);
        assert!(why.contains("from before pools"), "{why}");
    }
    std::fs::remove_dir_all(&d).unwrap();
}
