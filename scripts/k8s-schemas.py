#!/usr/bin/env python3
"""Turns published schemas into the JSON-schema files kubeconform reads offline.

Called by scripts/k8s-schemas.sh (which fetches the inputs); writes under kustomize/schemas/.

  k8s-schemas.py crd  OUT_DIR CRD.yaml...         CRD openAPIV3Schema -> OUT_DIR/<group>/<kind>_<version>.json
  k8s-schemas.py k8s  OUT_DIR SRC_DIR KIND...     kubernetes-validate's "-local-strict" files -> standalone files
  k8s-schemas.py dapr-metadata OUT_DIR metadata.yaml...
                                                  components-contrib metadata.yaml -> allowed metadata names

CRD schemas are made strict the way `kubeconform -strict` treats the Kubernetes ones: an
object that lists its properties gets `additionalProperties: false` unless it says
`x-kubernetes-preserve-unknown-fields`, so a misspelt or misindented field fails the check
instead of being dropped silently by the API server.
"""

import copy
import json
import re
import sys
from pathlib import Path

import yaml


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


# ---------------------------------------------------------------------------------------
# CRDs


def strictify(node, strict=True):
    """Returns a JSON-schema version of one openAPIV3Schema node."""
    if isinstance(node, list):
        return [strictify(n, strict) for n in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if node.pop("x-kubernetes-int-or-string", False) or node.get("format") == "int-or-string":
        keep = {k: v for k, v in node.items() if k in ("description", "default")}
        keep["anyOf"] = [{"type": "string"}, {"type": "integer"}]
        return keep
    nullable = node.pop("nullable", False)
    preserve = node.get("x-kubernetes-preserve-unknown-fields", False)
    combinators = [k for k in ("oneOf", "anyOf", "allOf") if k in node]
    out = {}
    for key, value in node.items():
        if key == "description" and isinstance(value, str):
            continue  # not needed to validate; keeps the vendored files small
        if key == "properties":
            out[key] = {k: strictify(v, True) for k, v in value.items()}
        elif key in ("items", "additionalProperties", "not"):
            out[key] = strictify(value, True) if isinstance(value, dict) else value
        elif key in ("oneOf", "anyOf", "allOf"):
            # Branches often list a subset of the parent's properties: never closed.
            out[key] = [strictify(b, False) for b in value]
        else:
            out[key] = value
    if (
        strict
        and "properties" in out
        and "additionalProperties" not in out
        and not preserve
        and not combinators
    ):
        out["additionalProperties"] = False
    if nullable and "type" in out:
        out["type"] = [out["type"], "null"] if isinstance(out["type"], str) else out["type"] + ["null"]
    return out


def crd(out_dir: Path, files) -> None:
    for f in files:
        for doc in yaml.safe_load_all(Path(f).read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            group, kind = spec["group"], spec["names"]["kind"].lower()
            for version in spec["versions"]:
                schema = (version.get("schema") or {}).get("openAPIV3Schema")
                if schema is None:
                    continue
                out = strictify(copy.deepcopy(schema))
                out["$schema"] = "http://json-schema.org/draft-07/schema#"
                # A served but deprecated version still validates; say so in the file.
                if version.get("deprecated"):
                    out["x-deprecated"] = version.get("deprecationWarning", True)
                target = out_dir / group / f"{kind}_{version['name']}.json"
                write_json(target, out)
                print(f"  {target}")


# ---------------------------------------------------------------------------------------
# Kubernetes core kinds

REF = re.compile(r"^(?:[^#]*_definitions\.json)?#/\$defs/(.+)$")


def k8s(out_dir: Path, src: Path, kinds) -> None:
    defs = json.loads((src / "_definitions.json").read_text())["$defs"]
    for kind in kinds:
        root = json.loads((src / f"{kind}.json").read_text())
        root.pop("$id", None)
        needed = {}

        def walk(node):
            if isinstance(node, dict):
                if isinstance(node.get("description"), str):
                    del node["description"]  # not needed to validate
                ref = node.get("$ref")
                if isinstance(ref, str):
                    m = REF.match(ref)
                    if not m:
                        raise SystemExit(f"{kind}: unexpected $ref {ref}")
                    name = m.group(1)
                    node["$ref"] = f"#/$defs/{name}"
                    if name not in needed:
                        needed[name] = copy.deepcopy(defs[name])
                        walk(needed[name])
                for v in node.values():
                    walk(v)
            elif isinstance(node, list):
                for v in node:
                    walk(v)

        walk(root)
        root["$defs"] = needed
        target = out_dir / f"{kind}.json"
        write_json(target, root)
        print(f"  {target} ({len(needed)} definitions)")


# ---------------------------------------------------------------------------------------
# Dapr component metadata names


def dapr_metadata(out_dir: Path, files) -> None:
    for f in files:
        doc = yaml.safe_load(Path(f).read_text())
        names = set()
        for m in doc.get("metadata") or []:
            names.add(m["name"])
        for profile in doc.get("authenticationProfiles") or []:
            for m in profile.get("metadata") or []:
                names.add(m["name"])
        builtin = [p["name"] for p in doc.get("builtinAuthenticationProfiles") or []]
        ident = f"{doc['type']}.{doc['name']}-{doc['version']}"
        target = out_dir / f"{ident}.json"
        write_json(
            target,
            {
                "component": f"{doc['type']}.{doc['name']}",
                "version": doc["version"],
                "metadata": sorted(names),
                "builtinAuthenticationProfiles": sorted(builtin),
            },
        )
        print(f"  {target} ({len(names)} names)")


def main(argv) -> None:
    if len(argv) < 3:
        raise SystemExit(__doc__)
    cmd, out = argv[1], Path(argv[2])
    if cmd == "crd":
        crd(out, argv[3:])
    elif cmd == "k8s":
        k8s(out, Path(argv[3]), argv[4:])
    elif cmd == "dapr-metadata":
        dapr_metadata(out, argv[3:])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
