//! End to end through `execute`: a tiny Identity server of our own on a unix socket.

use super::args::{CsiCommand, IdentityCommand};
use super::{execute, Block, CsiArgs};
use crate::cli::args::Command;
use crate::cli::Cli;
use crate::error::ErrorKind;
use clap::Parser;
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;
use volbridge_proto::csi as pb;

/// A tiny Identity plugin. Probe answers by the call's grpc-timeout: 300ms hangs, 61s fails
/// with NOT_FOUND, anything else says "not ready".
struct FakeIdentity;

#[tonic::async_trait]
impl pb::identity_server::Identity for FakeIdentity {
    async fn get_plugin_info(
        &self,
        _: tonic::Request<pb::GetPluginInfoRequest>,
    ) -> Result<tonic::Response<pb::GetPluginInfoResponse>, tonic::Status> {
        Ok(tonic::Response::new(pb::GetPluginInfoResponse {
            name: "csi.example.io".into(),
            vendor_version: "1.2.3".into(),
            manifest: HashMap::from([("commit".into(), "abc".into())]),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _: tonic::Request<pb::GetPluginCapabilitiesRequest>,
    ) -> Result<tonic::Response<pb::GetPluginCapabilitiesResponse>, tonic::Status> {
        use pb::plugin_capability::{service, volume_expansion, Service, Type, VolumeExpansion};
        let caps = vec![
            pb::PluginCapability {
                r#type: Some(Type::Service(Service {
                    r#type: service::Type::ControllerService as i32,
                })),
            },
            pb::PluginCapability {
                r#type: Some(Type::VolumeExpansion(VolumeExpansion {
                    r#type: volume_expansion::Type::Online as i32,
                })),
            },
        ];
        Ok(tonic::Response::new(pb::GetPluginCapabilitiesResponse {
            capabilities: caps,
        }))
    }

    async fn probe(
        &self,
        request: tonic::Request<pb::ProbeRequest>,
    ) -> Result<tonic::Response<pb::ProbeResponse>, tonic::Status> {
        match request.metadata().get("grpc-timeout").map(|v| v.as_bytes()) {
            // The "slow" test's 300ms: never answer in time.
            Some(t) if t.starts_with(b"300") => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok(tonic::Response::new(pb::ProbeResponse { ready: None }))
            }
            // The "fail" test's 61s.
            Some(t) if t.starts_with(b"61") => Err(tonic::Status::not_found("no such plugin")),
            _ => Ok(tonic::Response::new(pb::ProbeResponse {
                ready: Some(false),
            })),
        }
    }
}

#[tokio::test]
async fn identity_end_to_end_over_a_unix_socket() {
    let dir = std::env::temp_dir().join(format!(
        "vb-cli-csi-{}-{}",
        std::process::id(),
        crate::random::hex(4)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("csi.sock");
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(pb::identity_server::IdentityServer::new(FakeIdentity))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::UnixListenerStream::new(listener),
                async {
                    let _ = stopped.await;
                },
            ),
    );
    let endpoint = format!("unix://{}", sock.display());
    let run = |extra: &[&str]| {
        let mut argv = vec!["volbridge", "csi", "--endpoint", endpoint.as_str()];
        argv.extend_from_slice(extra);
        let Command::Csi(args) = Cli::try_parse_from(argv).unwrap().command else {
            panic!()
        };
        execute(args)
    };

    let info = run(&["identity", "info"]).await.unwrap();
    assert_eq!(
        info.json,
        json!({"name": "csi.example.io", "vendor_version": "1.2.3", "manifest": {"commit": "abc"}})
    );
    assert!(matches!(&info.human[0], Block::Fields(rows)
        if rows.contains(&("name".to_owned(), "csi.example.io".to_owned()))));

    let caps = run(&["identity", "caps"]).await.unwrap();
    assert_eq!(
        caps.json,
        json!({"capabilities": [
            {"service": {"type": "CONTROLLER_SERVICE"}},
            {"volume_expansion": {"type": "ONLINE"}},
        ]})
    );
    assert_eq!(
        caps.human,
        [Block::Table(
            vec!["KIND", "TYPE"],
            vec![
                vec!["service".into(), "CONTROLLER_SERVICE".into()],
                vec!["volume_expansion".into(), "ONLINE".into()],
            ]
        )]
    );

    let probe = run(&["identity", "probe"]).await.unwrap();
    assert_eq!(probe.json, json!({"ready": false}));

    let e = run(&["--timeout", "61s", "identity", "probe"])
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert_eq!(e.message, "Probe: NotFound: no such plugin");

    let e = run(&["--timeout", "300ms", "identity", "probe"])
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::DeadlineExceeded, "{e}");
    assert!(e.message.starts_with("Probe: DeadlineExceeded: "), "{e}");

    // A service the plugin does not serve.
    let e = run(&["node", "info"]).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unimplemented, "{e}");
    assert!(e.message.starts_with("NodeGetInfo: Unimplemented: "), "{e}");

    let _ = stop.send(());
    let _ = server.await;

    // Nothing listening any more: Unavailable, and the message says where it looked.
    std::fs::remove_file(&sock).ok();
    let e = run(&["identity", "info"]).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unavailable, "{e}");
    assert!(e.message.starts_with("GetPluginInfo: Unavailable: "), "{e}");
    assert!(e.message.contains(&endpoint), "{e}");
    std::fs::remove_dir_all(&dir).ok();

    // No endpoint at all is a usage error before any connection.
    let args = CsiArgs {
        endpoint: None,
        timeout: Duration::from_secs(1),
        command: CsiCommand::Identity {
            command: IdentityCommand::Probe,
        },
    };
    let e = execute(args).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    assert!(e.message.contains("CSI_ENDPOINT"), "{e}");
}
