#!/usr/bin/env python3
"""Writes an image archive from a rootfs tar and files laid on top (scripts/image).

The archive is an OCI image layout (oci-layout, index.json, blobs/sha256/...) that also has
Docker's manifest.json, the form `docker save` writes since Docker 25: `docker load` of any
version and `ctr images import` both read it. Layers are gzip-compressed with a zero mtime,
so the same inputs give the same digests; the base layer's blob is cached beside its tar.
"""
import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile

CHUNK = 1 << 20


class Hashing:
    """A write-only stream that hashes and counts what passes through it."""

    def __init__(self, inner):
        self.inner, self.sha, self.size = inner, hashlib.sha256(), 0

    def write(self, b):
        self.sha.update(b)
        self.size += len(b)
        return self.inner.write(b) if self.inner else len(b)

    def flush(self):
        if self.inner:
            self.inner.flush()


def compress(src_tar, dest):
    """gzip `src_tar` into `dest`; (diff_id, digest, size) of the uncompressed and the blob."""
    with open(dest, "wb") as f:
        blob = Hashing(f)
        with gzip.GzipFile(fileobj=blob, mode="wb", mtime=0) as gz:
            plain = Hashing(gz)
            with open(src_tar, "rb") as src:
                while chunk := src.read(CHUNK):
                    plain.write(chunk)
    return "sha256:" + plain.sha.hexdigest(), "sha256:" + blob.sha.hexdigest(), blob.size


def cached_base_layer(base):
    """The base tar's compressed blob, made once per base tar."""
    blob, meta = base + ".gz", base + ".layer.json"
    if os.path.exists(blob) and os.path.exists(meta):
        with open(meta) as f:
            m = json.load(f)
        if os.path.getsize(blob) == m["size"]:
            return m["diff_id"], m["digest"], m["size"], blob
    diff_id, digest, size = compress(base, blob + ".partial")
    os.replace(blob + ".partial", blob)
    with open(meta, "w") as f:
        json.dump({"diff_id": diff_id, "digest": digest, "size": size}, f)
    return diff_id, digest, size, blob


def files_layer(pairs, dest):
    """A layer holding each `host_path:image_path` file (mode kept, owner root, mtime 0)."""
    plain = dest + ".tar"
    with tarfile.open(plain, "w", format=tarfile.PAX_FORMAT) as t:
        dirs = set()
        for pair in pairs:
            src, _, target = pair.partition(":")
            rel = target.lstrip("/")
            parts = rel.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.add(d)
                    info = tarfile.TarInfo(d)
                    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
                    t.addfile(info)
            info = tarfile.TarInfo(rel)
            info.size, info.mode, info.mtime = os.path.getsize(src), 0o755, 0
            with open(src, "rb") as f:
                t.addfile(info, f)
    diff_id, digest, size = compress(plain, dest)
    os.remove(plain)
    return diff_id, digest, size, dest


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--base", required=True, help="the rootfs tar (bottom layer)")
    p.add_argument("--out", required=True)
    p.add_argument("--tag", required=True, help="REPO:TAG")
    p.add_argument("--version", required=True)
    p.add_argument("--revision", default="unknown")
    p.add_argument("files", nargs="+", help="HOST_PATH:IMAGE_PATH, laid on top")
    a = p.parse_args()

    work = a.out + ".work"
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    layers = [cached_base_layer(a.base), files_layer(a.files, os.path.join(work, "files.gz"))]

    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Entrypoint": ["/usr/bin/volbridge"],
            "Cmd": ["--help"],
            "WorkingDir": "/",
            "Labels": {
                "org.opencontainers.image.title": "volbridge",
                "org.opencontainers.image.version": a.version,
                "org.opencontainers.image.revision": a.revision,
            },
        },
        "rootfs": {"type": "layers", "diff_ids": [layer[0] for layer in layers]},
        "history": [
            {"created": "1970-01-01T00:00:00Z", "created_by": "mmdebstrap (scripts/image)"},
            {"created": "1970-01-01T00:00:00Z", "created_by": "volbridge binaries (scripts/image)"},
        ],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_digest = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": len(config_bytes),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": digest,
                "size": size,
            }
            for _, digest, size, _ in layers
        ],
    }
    manifest_bytes = json.dumps(manifest, sort_keys=True).encode()
    manifest_digest = "sha256:" + hashlib.sha256(manifest_bytes).hexdigest()
    repo, _, tag = a.tag.rpartition(":")
    full = repo if "/" in repo and "." in repo.split("/")[0] else "docker.io/" + repo
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": len(manifest_bytes),
                "annotations": {
                    "io.containerd.image.name": f"{full}:{tag}",
                    "org.opencontainers.image.ref.name": tag,
                },
            }
        ],
    }
    blob = lambda d: "blobs/sha256/" + d.split(":", 1)[1]
    docker_manifest = [
        {
            "Config": blob(config_digest),
            "RepoTags": [a.tag],
            "Layers": [blob(digest) for _, digest, _, _ in layers],
        }
    ]

    partial = a.out + ".partial"
    with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as t:

        def add_bytes(name, data):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            t.addfile(info, io.BytesIO(data))

        add_bytes("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add_bytes("index.json", json.dumps(index, sort_keys=True).encode())
        add_bytes("manifest.json", json.dumps(docker_manifest).encode())
        add_bytes(blob(config_digest), config_bytes)
        add_bytes(blob(manifest_digest), manifest_bytes)
        for _, digest, _, path in layers:
            info = t.gettarinfo(path, arcname=blob(digest))
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            with open(path, "rb") as f:
                t.addfile(info, f)
    os.replace(partial, a.out)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
