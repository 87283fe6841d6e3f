#!/usr/bin/env python3
"""Strict schema validation of rendered manifests, for tests/chart.rs.

Every document must match a schema, and a missing schema is an error (the
kubernetes-validate command only warns). Kinds of the Kubernetes API are checked
against the -strict schemas kubernetes-validate bundles for exactly the requested
minor version (a fallback to an older bundled version is an error too); other kinds
(CRDs such as snapshot.storage.k8s.io/v1 VolumeSnapshotClass) against the JSON
schemas shipped in --schemas, named <kind>-<apiVersion with / as ->.json.

Usage: validate.py --kube-version 1.35 --schemas DIR [--dump OUT.json] FILE...
Prints one line per document; exits 1 when anything failed. --dump writes every
document as a JSON list (tests/chart.rs inspects the rendered objects through it).
"""

import argparse
import json
import os
import sys

import jsonschema
import yaml
from kubernetes_validate import utils


def shipped_schema(schemas, doc):
    name = "%s-%s.json" % (doc["kind"].lower(), doc["apiVersion"].replace("/", "-"))
    path = os.path.join(schemas, name)
    if not os.path.exists(path):
        return None, None
    with open(path) as f:
        schema = json.load(f)
    jsonschema.Draft202012Validator.check_schema(schema)
    return path, schema


def check(doc, version, schemas):
    """Returns (ok, message) for one document."""
    if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
        return False, "not a Kubernetes object (no kind/apiVersion)"
    path, schema = shipped_schema(schemas, doc)
    if schema is not None:
        validator = jsonschema.Draft202012Validator(schema)
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
        if errors:
            e = errors[0]
            where = ".".join(str(p) for p in e.path) or "(root)"
            return False, "%s: %s (schema %s)" % (where, e.message, os.path.basename(path))
        return True, "schema %s" % os.path.basename(path)
    try:
        used = utils.validate(doc, version, strict=True)
    except utils.SchemaNotFoundError as e:
        return False, "no schema: %s; ship one in %s" % (e.message, schemas)
    except utils.VersionNotSupportedError:
        return False, "kubernetes-validate %s has no schemas for Kubernetes %s" % (
            utils.__version__, version)
    except jsonschema.ValidationError as e:
        where = ".".join(str(p) for p in e.path) or "(root)"
        return False, "%s: %s (Kubernetes %s strict)" % (where, e.message, version)
    if utils.major_minor(used) != utils.major_minor(version):
        return False, "validated against Kubernetes %s schemas, not %s" % (used, version)
    return True, "Kubernetes %s strict" % used


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kube-version", required=True)
    parser.add_argument("--schemas", required=True)
    parser.add_argument("--dump")
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    version = args.kube_version.lstrip("v")
    failed = 0
    docs = []
    for filename in args.files:
        with open(filename) as f:
            for doc in yaml.safe_load_all(f):
                if doc is None:
                    continue
                docs.append(doc)
                ok, message = check(doc, version, args.schemas)
                meta = doc.get("metadata") or {} if isinstance(doc, dict) else {}
                what = "%s/%s" % (doc.get("kind", "?") if isinstance(doc, dict) else "?",
                                  meta.get("name", "?"))
                print("%s %s: %s" % ("ok" if ok else "FAILED", what, message))
                failed += 0 if ok else 1
    if not docs:
        print("FAILED: no documents to validate")
        failed += 1
    if args.dump:
        with open(args.dump, "w") as f:
            json.dump(docs, f)
    print("%d documents, %d failed (Kubernetes %s, strict)" % (len(docs), failed, version))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
