#!/usr/bin/env python3
"""Prints the value keys of a chart's values.yaml that its documentation must name, as a
JSON list of alternatives: mappings are walked down to their leaves, except the maps users
fill in (resources, selectors, parameters, ...) and the image triples, which are named as a
whole; a key under `sidecars.<name>.` or `serviceAccount.<name>.` may also be named with
`*` for the name (`sidecars.*.image`)."""

import json
import sys

import yaml

WHOLE = {"image", "resources", "nodeSelector", "tolerations", "affinity", "podAnnotations",
         "podLabels", "annotations", "stateVolume", "parameters"}
FOLD = {"sidecars", "serviceAccount"}


def walk(value, path, out):
    if isinstance(value, dict) and value and path and path[-1] not in WHOLE or not path:
        for key, child in value.items():
            walk(child, path + [key], out)
        return
    names = [".".join(path)]
    if len(path) >= 3 and path[0] in FOLD:
        names.append(".".join([path[0], "*"] + path[2:]))
    out.add(tuple(names))


def main():
    keys = set()
    with open(sys.argv[1]) as f:
        walk(yaml.safe_load(f), [], keys)
    print(json.dumps(sorted(keys)))


if __name__ == "__main__":
    main()
