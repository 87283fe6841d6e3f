#!/usr/bin/env python3
"""What a kubelet would run for the chart's volbridge containers, as JSON (tests/image.rs).

Reads `helm template` output on stdin and prints, for each Deployment, DaemonSet and Pod
(`helm test` hooks) container whose image is IMAGE: its workload, kind, command and args, environment (secretKeyRef
values looked up in the rendered Secrets), privilege, and bind mounts. hostPath volumes keep
their path, emptyDir volumes and Secret items get a directory under SCRATCH (Secret items
written there); `mountPropagation: Bidirectional` is kept so the caller can make it rshared.

    pods.py IMAGE SCRATCH < manifest.yaml
"""
import base64
import json
import os
import sys

import yaml


def secret_values(docs):
    out = {}
    for d in docs:
        if d.get("kind") != "Secret":
            continue
        values = dict(d.get("stringData") or {})
        for k, v in (d.get("data") or {}).items():
            values[k] = base64.b64decode(v).decode()
        out[d["metadata"]["name"]] = values
    return out


def main():
    image, scratch = sys.argv[1], sys.argv[2]
    docs = [d for d in yaml.safe_load_all(sys.stdin) if d]
    secrets = secret_values(docs)
    containers = []
    for d in docs:
        if d.get("kind") not in ("Deployment", "DaemonSet", "Pod"):
            continue
        workload = d["metadata"]["name"]
        pod = d["spec"] if d["kind"] == "Pod" else d["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes") or []}
        for c in pod["containers"]:
            if c["image"] != image:
                continue
            env = {}
            for e in c.get("env") or []:
                if "value" in e:
                    env[e["name"]] = e["value"]
                else:
                    ref = e["valueFrom"]["secretKeyRef"]
                    env[e["name"]] = secrets[ref["name"]][ref["key"]]
            mounts = []
            for m in c.get("volumeMounts") or []:
                v = volumes[m["name"]]
                if "hostPath" in v:
                    source = v["hostPath"]["path"]
                    os.makedirs(source, exist_ok=True)
                elif "emptyDir" in v:
                    source = os.path.join(scratch, workload, c["name"], m["name"])
                    os.makedirs(source, exist_ok=True)
                elif "secret" in v:
                    source = os.path.join(scratch, workload, c["name"], m["name"])
                    os.makedirs(source, exist_ok=True)
                    values = secrets[v["secret"]["secretName"]]
                    items = v["secret"].get("items") or [{"key": k, "path": k} for k in values]
                    for item in items:
                        with open(os.path.join(source, item["path"]), "w") as f:
                            f.write(values[item["key"]])
                else:
                    sys.exit(f"pods.py: {workload}: volume {m['name']} of an unknown kind")
                mounts.append(
                    {
                        "source": source,
                        "target": m["mountPath"],
                        "read_only": bool(m.get("readOnly")),
                        "bidirectional": m.get("mountPropagation") == "Bidirectional",
                    }
                )
            containers.append(
                {
                    "workload": workload,
                    "kind": d["kind"],
                    "command": c.get("command") or [],
                    "args": c.get("args") or [],
                    "env": env,
                    "privileged": bool((c.get("securityContext") or {}).get("privileged")),
                    "mounts": mounts,
                }
            )
    json.dump(containers, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
