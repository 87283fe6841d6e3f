//! Identity service: GetPluginInfo, GetPluginCapabilities (with the capabilities of every
//! other service, exactly as listed) and Probe.

use crate::common;
use crate::csi_support::*;
use crate::sorted;
use std::time::{Duration, Instant};

#[tokio::test]
async fn plugin_info_and_capabilities_exactly_as_listed() {
    if !common::require_root_and_tools("identity::plugin_info_and_capabilities_exactly_as_listed") {
        return;
    }
    let Some(r) = Rig::start("caps").await else {
        return;
    };
    let mut c = Checks::new();
    let info = ok(
        t(r.ident().get_plugin_info(csi::GetPluginInfoRequest {})).await,
        "GetPluginInfo",
    );
    c.eq(info.name.as_str(), DRIVER, "driver name");
    c.eq(
        info.vendor_version.as_str(),
        env!("CARGO_PKG_VERSION"),
        "vendor_version",
    );

    use csi::plugin_capability::Type as P;
    let caps = ok(
        t(r.ident()
            .get_plugin_capabilities(csi::GetPluginCapabilitiesRequest {}))
        .await,
        "GetPluginCapabilities",
    );
    let got: Vec<String> = caps
        .capabilities
        .iter()
        .map(|cap| match &cap.r#type {
            Some(P::Service(s)) => format!("service:{}", s.r#type().as_str_name()),
            Some(P::VolumeExpansion(e)) => format!("expansion:{}", e.r#type().as_str_name()),
            None => "none".into(),
        })
        .collect();
    let want = [
        "expansion:OFFLINE",
        "expansion:ONLINE",
        "service:CONTROLLER_SERVICE",
        "service:GROUP_CONTROLLER_SERVICE",
        // The embedded CSP serves the snapshot-metadata extension.
        "service:SNAPSHOT_METADATA_SERVICE",
        "service:VOLUME_ACCESSIBILITY_CONSTRAINTS",
    ];
    c.eq(
        sorted(got),
        want.map(String::from).to_vec(),
        "plugin capabilities",
    );

    use csi::controller_service_capability::Type as C;
    let caps = ok(
        t(r.ctrl()
            .controller_get_capabilities(csi::ControllerGetCapabilitiesRequest {}))
        .await,
        "ControllerGetCapabilities",
    );
    let got: Vec<String> = caps
        .capabilities
        .iter()
        .map(|cap| match &cap.r#type {
            Some(C::Rpc(rpc)) => rpc.r#type().as_str_name().to_owned(),
            None => "none".into(),
        })
        .collect();
    let want = [
        "CLONE_VOLUME",
        "CREATE_DELETE_SNAPSHOT",
        "CREATE_DELETE_VOLUME",
        "EXPAND_VOLUME",
        "GET_CAPACITY",
        "GET_SNAPSHOT",
        "GET_VOLUME",
        "LIST_SNAPSHOTS",
        "LIST_VOLUMES",
        "LIST_VOLUMES_PUBLISHED_NODES",
        "MODIFY_VOLUME",
        "PUBLISH_READONLY",
        "PUBLISH_UNPUBLISH_VOLUME",
        "SINGLE_NODE_MULTI_WRITER",
        "VOLUME_CONDITION",
    ];
    c.eq(
        sorted(got),
        want.map(String::from).to_vec(),
        "controller capabilities",
    );

    use csi::node_service_capability::Type as N;
    let caps = ok(
        t(r.node()
            .node_get_capabilities(csi::NodeGetCapabilitiesRequest {}))
        .await,
        "NodeGetCapabilities",
    );
    let got: Vec<String> = caps
        .capabilities
        .iter()
        .map(|cap| match &cap.r#type {
            Some(N::Rpc(rpc)) => rpc.r#type().as_str_name().to_owned(),
            None => "none".into(),
        })
        .collect();
    let want = [
        "EXPAND_VOLUME",
        "GET_VOLUME_STATS",
        "SINGLE_NODE_MULTI_WRITER",
        "STAGE_UNSTAGE_VOLUME",
        "VOLUME_CONDITION",
    ];
    c.eq(
        sorted(got),
        want.map(String::from).to_vec(),
        "node capabilities",
    );

    use csi::group_controller_service_capability::Type as G;
    let caps = ok(
        t(r.group()
            .group_controller_get_capabilities(csi::GroupControllerGetCapabilitiesRequest {}))
        .await,
        "GroupControllerGetCapabilities",
    );
    let got: Vec<String> = caps
        .capabilities
        .iter()
        .map(|cap| match &cap.r#type {
            Some(G::Rpc(rpc)) => rpc.r#type().as_str_name().to_owned(),
            None => "none".into(),
        })
        .collect();
    c.eq(
        got,
        vec!["CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT".to_owned()],
        "group controller capabilities",
    );

    let probe = ok(t(r.ident().probe(csi::ProbeRequest {})).await, "Probe");
    c.check(
        probe.ready != Some(false),
        format!("Probe with the embedded CSP up: ready = {:?}", probe.ready),
    );
    drop(r);

    // The driver name is configurable.
    let Some(r) = Rig::start_with(
        "caps-name",
        RigOptions {
            extra: &["--csi-driver-name", "block.example.com"],
            ..Default::default()
        },
    )
    .await
    else {
        c.finish();
        return;
    };
    let info = ok(
        t(r.ident().get_plugin_info(csi::GetPluginInfoRequest {})).await,
        "GetPluginInfo",
    );
    c.eq(
        info.name.as_str(),
        "block.example.com",
        "driver name with --csi-driver-name",
    );
    c.finish();
}

#[tokio::test]
async fn probe_not_ready_while_default_backend_unreachable() {
    if !common::require_root_and_tools("probe_unreachable") {
        return;
    }
    // A config whose default backend is a CSP nobody listens for.
    let port = free_port();
    let Some(r) = Rig::start_with(
        "probe",
        RigOptions {
            default_csp: Some(("dead", port, "p")),
            ..Default::default()
        },
    )
    .await
    else {
        return;
    };
    let started = Instant::now();
    let probe = ok(t(r.ident().probe(csi::ProbeRequest {})).await, "Probe");
    assert_eq!(
        probe.ready,
        Some(false),
        "Probe must say not ready while the default backend is unreachable"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "Probe must be cheap; it took {:?}",
        started.elapsed()
    );
}
