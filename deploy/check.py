"""Checks deploy/ without a cluster or a Docker engine.

  check.py validate   render every kustomization (base/ and each overlay) and
                      validate the result with kubernetes-validate in strict
                      mode against Kubernetes 1.37; validate the KServe files;
                      lint the Dockerfiles with hadolint (no warnings allowed)
  check.py render DIR print DIR's kustomization, rendered, as one JSON array
  check.py entry-points  print the kustomizations `validate` checks, as JSON

The kustomizations use `resources` only (no patches or generators), so
rendering is following `resources` recursively, as kustomize does; anything
else is refused here, so a future patch cannot slip past validation. Custom
resources (ServiceMonitor, KServe) have no schema in kubernetes-validate: they
are checked to be the expected kinds and otherwise left to the cluster.
"""

import json
import pathlib
import shutil
import subprocess
import sys
import tempfile

import yaml

DEPLOY = pathlib.Path(__file__).resolve().parent
KUBERNETES = "1.37.0"
ENTRY_POINTS = [
    "k8s/base",
    "k8s/overlays/blue-green",
    "k8s/overlays/bucket",
    "k8s/overlays/canary",
    "k8s/overlays/gpu",
    "k8s/overlays/http-probes",
    "k8s/overlays/servicemonitor",
]
CUSTOM_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("serving.kserve.io/v1alpha1", "ClusterServingRuntime"),
    ("serving.kserve.io/v1beta1", "InferenceService"),
}
DOCKERFILES = ["Dockerfile", "Dockerfile.cuda"]


def render(directory: pathlib.Path) -> list:
    """The objects a resources-only kustomization in `directory` produces."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unsupported = set(kustomization) - {"apiVersion", "kind", "resources"}
    if unsupported:
        sys.exit(f"{directory}/kustomization.yaml uses {sorted(unsupported)}: check.py renders `resources` only")
    objects = []
    for resource in kustomization["resources"]:
        path = (directory / resource).resolve()
        if path.is_dir():
            objects += render(path)
        else:
            objects += [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    seen = set()
    for obj in objects:
        key = (obj["kind"], obj["metadata"]["name"])
        if key in seen:
            sys.exit(f"{directory}: {key[0]} `{key[1]}` appears twice once rendered")
        seen.add(key)
    return objects


def kubernetes_validate(objects: list, label: str) -> None:
    standard = [o for o in objects if (o["apiVersion"], o["kind"]) not in CUSTOM_KINDS]
    with tempfile.TemporaryDirectory() as tmp:
        rendered = pathlib.Path(tmp) / f"{label.replace('/', '_')}.yaml"
        rendered.write_text(yaml.safe_dump_all(standard))
        tool = shutil.which("kubernetes-validate") or str(pathlib.Path(sys.executable).parent / "kubernetes-validate")
        result = subprocess.run([tool, "--strict", "--quiet", "-k", KUBERNETES, str(rendered)],
                                capture_output=True, text=True)
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0 or output:
        sys.exit(f"kubernetes-validate rejected {label}:\n{output}")
    print(f"check.py: {label}: {len(standard)} objects valid for Kubernetes {KUBERNETES}"
          f" (+{len(objects) - len(standard)} custom resources)")


def validate() -> None:
    for entry in ENTRY_POINTS:
        kubernetes_validate(render(DEPLOY / entry), entry)
    for path in sorted((DEPLOY / "kserve").glob("*.yaml")):
        for obj in yaml.safe_load_all(path.read_text()):
            if (obj["apiVersion"], obj["kind"]) not in CUSTOM_KINDS:
                sys.exit(f"{path}: unexpected {obj['apiVersion']} {obj['kind']}")
        print(f"check.py: {path.relative_to(DEPLOY)}: KServe resources of the expected kinds")
    hadolint = shutil.which("hadolint") or str(pathlib.Path(sys.executable).parent / "hadolint")
    for dockerfile in DOCKERFILES:
        result = subprocess.run([hadolint, "--failure-threshold", "info", str(DEPLOY / dockerfile)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            sys.exit(f"hadolint on {dockerfile}:\n{result.stdout}{result.stderr}")
        print(f"check.py: {dockerfile}: hadolint clean")


def main(argv: list) -> None:
    if argv[1:] == ["validate"]:
        validate()
    elif argv[1:] == ["entry-points"]:
        print(json.dumps(ENTRY_POINTS))
    elif len(argv) == 3 and argv[1] == "render":
        print(json.dumps(render(DEPLOY / argv[2])))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
