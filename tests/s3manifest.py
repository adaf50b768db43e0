"""deploy/kubernetes/mreg-s3.yml, loaded once for the tests that check it."""

from __future__ import annotations

from pathlib import Path

import yaml

MANIFEST = Path(__file__).resolve().parents[1] / "deploy" / "kubernetes" / "mreg-s3.yml"
DOCS = [doc for doc in yaml.safe_load_all(MANIFEST.read_text()) if doc]


def only(kind: str) -> dict:
    (doc,) = [d for d in DOCS if d["kind"] == kind]
    return doc


DEPLOYMENT = only("Deployment")
POD = DEPLOYMENT["spec"]["template"]["spec"]
CONTAINERS = {c["name"]: c for c in POD["containers"]}
CRONJOB_POD = only("CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def env_of(container: dict) -> dict[str, str]:
    """The plain ``value`` variables of a container (those from Secrets are the operator's)."""
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
