#!/usr/bin/env python3
"""A CSI session through Python grpcio with its default channel options (which send the
socket path as the HTTP/2 :authority), against a running volbridge daemon.

    csi_client.py --endpoint unix:///dir/csi.sock --proto proto/csi.proto --dir DIR
    csi_client.py ... --scenario slow-backend


Identity (GetPluginInfo, GetPluginCapabilities, Probe), an error answer, CreateVolume, then
the node cycle on that mount volume (NodeGetInfo, ControllerPublishVolume, NodeStageVolume,
NodePublishVolume, a file written and read back, NodeGetVolumeStats, a snapshot read through
the SnapshotMetadata stream in several messages, GetSnapshot, a refused
ControllerModifyVolume, NodeUnpublishVolume, NodeUnstageVolume,
ControllerUnpublishVolume) and DeleteVolume, all on one channel. The stubs are generated
from the proto with grpc_tools.protoc into a temporary directory. Prints one line per step;
on a failure, the step and the answer on stderr, and exit 1. Run by tests/csi_grpcio.rs.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

TIMEOUT = 120
MIB = 1 << 20


class Failed(Exception):
    pass


def generate_stubs(proto, out):
    proto = os.path.abspath(proto)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I" + os.path.dirname(proto),
            "--python_out=" + out,
            "--grpc_python_out=" + out,
            proto,
        ],
        check=True,
    )
    sys.path.insert(0, out)


def session(args, grpc, pb, rpc, cleanup):
    # Default channel options: no grpc.default_authority, no ssl_target_name_override.
    channel = grpc.insecure_channel(args.endpoint)
    ident = rpc.IdentityStub(channel)
    ctrl = rpc.ControllerStub(channel)
    node = rpc.NodeStub(channel)

    def call(step, method, request):
        try:
            answer = method(request, timeout=TIMEOUT)
        except grpc.RpcError as e:
            raise Failed("%s: %s: %s" % (step, e.code().name, e.details()))
        print("ok", step, flush=True)
        return answer

    def expect(cond, what):
        if not cond:
            raise Failed(what)

    info = call("GetPluginInfo", ident.GetPluginInfo, pb.GetPluginInfoRequest())
    expect(info.name == args.driver, "GetPluginInfo: name %r, wanted %r" % (info.name, args.driver))
    caps = call(
        "GetPluginCapabilities", ident.GetPluginCapabilities, pb.GetPluginCapabilitiesRequest()
    )
    services = {c.service.type for c in caps.capabilities if c.HasField("service")}
    expect(
        pb.PluginCapability.Service.CONTROLLER_SERVICE in services,
        "GetPluginCapabilities: no CONTROLLER_SERVICE in %s" % caps,
    )
    probe = call("Probe", ident.Probe, pb.ProbeRequest())
    expect(not probe.HasField("ready") or probe.ready.value, "Probe: not ready")

    # A failure reaches grpcio with its code and message.
    try:
        ctrl.CreateVolume(pb.CreateVolumeRequest(name=""), timeout=TIMEOUT)
        raise Failed("CreateVolume without a name: answered OK")
    except grpc.RpcError as e:
        expect(
            e.code() == grpc.StatusCode.INVALID_ARGUMENT and "name" in e.details(),
            "CreateVolume without a name: %s: %s" % (e.code().name, e.details()),
        )
    print("ok CreateVolume without a name: INVALID_ARGUMENT", flush=True)

    cap = pb.VolumeCapability(
        mount=pb.VolumeCapability.MountVolume(fs_type="ext4"),
        access_mode=pb.VolumeCapability.AccessMode(
            mode=pb.VolumeCapability.AccessMode.SINGLE_NODE_WRITER
        ),
    )
    vol = call(
        "CreateVolume",
        ctrl.CreateVolume,
        pb.CreateVolumeRequest(
            name=args.volume,
            capacity_range=pb.CapacityRange(required_bytes=64 * MIB),
            volume_capabilities=[cap],
        ),
    ).volume
    cleanup.append(
        lambda: ctrl.DeleteVolume(
            pb.DeleteVolumeRequest(volume_id=vol.volume_id), timeout=TIMEOUT
        )
    )
    expect(vol.capacity_bytes >= 64 * MIB, "CreateVolume: capacity %d" % vol.capacity_bytes)

    node_id = call("NodeGetInfo", node.NodeGetInfo, pb.NodeGetInfoRequest()).node_id
    expect(node_id != "", "NodeGetInfo: empty node_id")
    publish_context = call(
        "ControllerPublishVolume",
        ctrl.ControllerPublishVolume,
        pb.ControllerPublishVolumeRequest(
            volume_id=vol.volume_id,
            node_id=node_id,
            volume_capability=cap,
            readonly=False,
            volume_context=vol.volume_context,
        ),
    ).publish_context
    cleanup.append(
        lambda: ctrl.ControllerUnpublishVolume(
            pb.ControllerUnpublishVolumeRequest(volume_id=vol.volume_id, node_id=node_id),
            timeout=TIMEOUT,
        )
    )

    # kubelet makes the staging directory and the target's parent; the plugin the target.
    staging = os.path.join(args.dir, "plugins", "globalmount")
    parent = os.path.join(args.dir, "pods", "p1", "volumes", "kubernetes.io~csi", vol.volume_id)
    os.makedirs(staging, exist_ok=True)
    os.makedirs(parent, exist_ok=True)
    target = os.path.join(parent, "mount")

    call(
        "NodeStageVolume",
        node.NodeStageVolume,
        pb.NodeStageVolumeRequest(
            volume_id=vol.volume_id,
            publish_context=publish_context,
            staging_target_path=staging,
            volume_capability=cap,
            volume_context=vol.volume_context,
        ),
    )
    cleanup.append(
        lambda: node.NodeUnstageVolume(
            pb.NodeUnstageVolumeRequest(volume_id=vol.volume_id, staging_target_path=staging),
            timeout=TIMEOUT,
        )
    )
    call(
        "NodePublishVolume",
        node.NodePublishVolume,
        pb.NodePublishVolumeRequest(
            volume_id=vol.volume_id,
            publish_context=publish_context,
            staging_target_path=staging,
            target_path=target,
            volume_capability=cap,
            readonly=False,
            volume_context=vol.volume_context,
        ),
    )
    cleanup.append(
        lambda: node.NodeUnpublishVolume(
            pb.NodeUnpublishVolumeRequest(volume_id=vol.volume_id, target_path=target),
            timeout=TIMEOUT,
        )
    )

    payload = os.urandom(MIB)
    path = os.path.join(target, "payload")
    with open(path, "wb") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    with open(path, "rb") as f:
        expect(f.read() == payload, "the file written at %s reads back different" % path)
    print("ok wrote and read 1 MiB at the target", flush=True)

    stats = call(
        "NodeGetVolumeStats",
        node.NodeGetVolumeStats,
        pb.NodeGetVolumeStatsRequest(volume_id=vol.volume_id, volume_path=target),
    )
    used = [u.used for u in stats.usage if u.unit == pb.VolumeUsage.BYTES]
    expect(used and used[0] >= MIB, "NodeGetVolumeStats: usage %s" % stats.usage)

    # Changed-block tracking: a server stream, read message by message.
    expect(
        pb.PluginCapability.Service.SNAPSHOT_METADATA_SERVICE in services,
        "GetPluginCapabilities: no SNAPSHOT_METADATA_SERVICE in %s" % caps,
    )
    snap = call(
        "CreateSnapshot",
        ctrl.CreateSnapshot,
        pb.CreateSnapshotRequest(source_volume_id=vol.volume_id, name=args.volume + "-snap"),
    ).snapshot
    cleanup.append(
        lambda: ctrl.DeleteSnapshot(
            pb.DeleteSnapshotRequest(snapshot_id=snap.snapshot_id), timeout=TIMEOUT
        )
    )
    meta = rpc.SnapshotMetadataStub(channel)
    try:
        answers = list(
            meta.GetMetadataAllocated(
                pb.GetMetadataAllocatedRequest(snapshot_id=snap.snapshot_id, max_results=2),
                timeout=TIMEOUT,
            )
        )
    except grpc.RpcError as e:
        raise Failed("GetMetadataAllocated: %s: %s" % (e.code().name, e.details()))
    ranges = [(b.byte_offset, b.size_bytes) for a in answers for b in a.block_metadata]
    expect(
        len(answers) >= 2 and all(0 < len(a.block_metadata) <= 2 for a in answers),
        "GetMetadataAllocated: wanted several messages of at most 2 ranges, got %s" % answers,
    )
    expect(
        all(
            a.volume_capacity_bytes == vol.capacity_bytes
            and a.block_metadata_type == pb.VARIABLE_LENGTH
            for a in answers
        ),
        "GetMetadataAllocated: capacity or type wrong in %s" % answers,
    )
    expect(
        all(x[0] + x[1] <= y[0] for x, y in zip(ranges, ranges[1:]))
        and sum(n for _, n in ranges) >= MIB,
        "GetMetadataAllocated: ranges out of order or fewer than the 1 MiB written: %s" % ranges,
    )
    print("ok GetMetadataAllocated: %d ranges in %d messages" % (len(ranges), len(answers)))

    # Spec 1.12: GetSnapshot, and ControllerModifyVolume refusing an unsupported key with
    # nothing applied.
    got = call(
        "GetSnapshot", ctrl.GetSnapshot, pb.GetSnapshotRequest(snapshot_id=snap.snapshot_id)
    ).snapshot
    expect(
        got.snapshot_id == snap.snapshot_id and got.source_volume_id == vol.volume_id,
        "GetSnapshot: answered %s for %s" % (got, snap.snapshot_id),
    )
    try:
        ctrl.ControllerModifyVolume(
            pb.ControllerModifyVolumeRequest(
                volume_id=vol.volume_id, mutable_parameters={"noSuchKey": "1"}
            ),
            timeout=TIMEOUT,
        )
        raise Failed("ControllerModifyVolume with an unsupported key succeeded")
    except grpc.RpcError as e:
        expect(
            e.code() == grpc.StatusCode.INVALID_ARGUMENT and "noSuchKey" in e.details(),
            "ControllerModifyVolume: %s: %s" % (e.code().name, e.details()),
        )
    after = call(
        "ControllerGetVolume",
        ctrl.ControllerGetVolume,
        pb.ControllerGetVolumeRequest(volume_id=vol.volume_id),
    ).volume
    expect(
        after.capacity_bytes == vol.capacity_bytes
        and dict(after.volume_context) == dict(vol.volume_context),
        "ControllerModifyVolume refused but the volume changed: %s" % after,
    )
    print("ok ControllerModifyVolume refused noSuchKey, nothing applied", flush=True)
    call(
        "DeleteSnapshot",
        ctrl.DeleteSnapshot,
        pb.DeleteSnapshotRequest(snapshot_id=snap.snapshot_id),
    )
    cleanup.pop()

    # The way back, in the order kubelet and the attacher use.
    for step in reversed(cleanup[1:]):
        step()
        cleanup.pop()
    print("ok NodeUnpublishVolume, NodeUnstageVolume, ControllerUnpublishVolume", flush=True)
    expect(not os.path.exists(target), "NodeUnpublishVolume left %s behind" % target)
    call("DeleteVolume", ctrl.DeleteVolume, pb.DeleteVolumeRequest(volume_id=vol.volume_id))
    cleanup.pop()
    listed = call("ListVolumes", ctrl.ListVolumes, pb.ListVolumesRequest())
    expect(
        all(e.volume.volume_id != vol.volume_id for e in listed.entries),
        "ListVolumes still lists %s" % vol.volume_id,
    )
    channel.close()


def slow_backend_session(args, grpc, pb, rpc):
    """Deadlines as grpcio enforces them (C-core ends the call at its deadline), against a
    default backend whose create and delete take 6 s: CreateVolume with 4 s gets the
    daemon's ABORTED in time, not its own DEADLINE_EXCEEDED; a DeleteVolume the client gave
    up on still deletes; retries with the same name answer as a CO expects."""
    channel = grpc.insecure_channel(args.endpoint)
    ctrl = rpc.ControllerStub(channel)
    ident = rpc.IdentityStub(channel)

    def expect(cond, what):
        if not cond:
            raise Failed(what)

    # Calls are held until the daemon's start-up reconciliation is done, and the deadlines
    # below are about the backend, not the start: wait for Probe's ready first.
    give_up = time.monotonic() + 60
    while not ident.Probe(pb.ProbeRequest(), timeout=TIMEOUT).ready.value:
        expect(time.monotonic() < give_up, "Probe never answered ready")
        time.sleep(0.1)

    def until_done(step, method, request):
        # What the external-provisioner does: retry while the operation is pending.
        give_up = time.monotonic() + 60
        while True:
            try:
                return method(request, timeout=10)
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.ABORTED or time.monotonic() > give_up:
                    raise Failed("%s: %s: %s" % (step, e.code().name, e.details()))
                time.sleep(0.2)

    cap = pb.VolumeCapability(
        mount=pb.VolumeCapability.MountVolume(fs_type="ext4"),
        access_mode=pb.VolumeCapability.AccessMode(
            mode=pb.VolumeCapability.AccessMode.SINGLE_NODE_WRITER
        ),
    )
    req = pb.CreateVolumeRequest(
        name=args.volume,
        capacity_range=pb.CapacityRange(required_bytes=1 << 30),
        volume_capabilities=[cap],
    )
    started = time.monotonic()
    try:
        ctrl.CreateVolume(req, timeout=4.0)
        raise Failed("CreateVolume slower than its 4 s deadline answered OK")
    except grpc.RpcError as e:
        expect(
            e.code() == grpc.StatusCode.ABORTED
            and "retry CreateVolume with the same name" in e.details(),
            "CreateVolume past its deadline: %s: %s" % (e.code().name, e.details()),
        )
    print("ok CreateVolume past its deadline: ABORTED after %.2f s" % (time.monotonic() - started), flush=True)
    vol = until_done("CreateVolume retried", ctrl.CreateVolume, req).volume
    expect(vol.capacity_bytes == 1 << 30, "the retried CreateVolume: %s" % vol)
    print("ok CreateVolume retried with the same name:", vol.volume_id, flush=True)

    delete = pb.DeleteVolumeRequest(volume_id=vol.volume_id)
    try:
        ctrl.DeleteVolume(delete, timeout=4.0)
        raise Failed("DeleteVolume slower than its 4 s deadline answered OK")
    except grpc.RpcError as e:
        expect(
            e.code() == grpc.StatusCode.DEADLINE_EXCEEDED,
            "DeleteVolume past its deadline: %s: %s" % (e.code().name, e.details()),
        )
    print("ok DeleteVolume past its deadline: the client's DEADLINE_EXCEEDED", flush=True)
    until_done("DeleteVolume retried", ctrl.DeleteVolume, delete)
    listed = until_done("ListVolumes", ctrl.ListVolumes, pb.ListVolumesRequest())
    expect(
        all(e.volume.volume_id != vol.volume_id for e in listed.entries),
        "ListVolumes still lists %s" % vol.volume_id,
    )
    print("ok DeleteVolume retried; not listed", flush=True)
    channel.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", required=True, help="a grpcio target: unix:///path")
    parser.add_argument("--proto", required=True, help="the repository's proto/csi.proto")
    parser.add_argument("--dir", required=True, help="where staging and target paths go")
    parser.add_argument("--driver", default="csi.volbridge.io")
    parser.add_argument("--volume", default="grpcio-vol")
    parser.add_argument("--scenario", choices=["node-cycle", "slow-backend"], default="node-cycle")
    args = parser.parse_args()

    import grpc  # noqa: E402  (missing: the test says how to install it)

    print("grpcio", grpc.__version__, flush=True)
    with tempfile.TemporaryDirectory(prefix="csi-stubs-") as stubs:
        generate_stubs(args.proto, stubs)
        import csi_pb2 as pb
        import csi_pb2_grpc as rpc

        cleanup = []
        try:
            if args.scenario == "slow-backend":
                slow_backend_session(args, grpc, pb, rpc)
            else:
                session(args, grpc, pb, rpc, cleanup)
        except Failed as e:
            print("FAILED:", e, file=sys.stderr, flush=True)
            for undo in reversed(cleanup):
                try:
                    undo()
                except grpc.RpcError as err:
                    print("clean-up: %s: %s" % (err.code().name, err.details()), file=sys.stderr)
            sys.exit(1)
    print("grpcio session ok", flush=True)


if __name__ == "__main__":
    main()
