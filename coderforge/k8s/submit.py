"""Submit a recipe to Kubeflow Pipelines, at most once per recipe content.

The run's display name is ``<run.name>-<fingerprint>``, where the fingerprint is the hash of the
validated recipe (``RecipeConfig.fingerprint``). Before creating a run, the experiment's runs are
searched for that name: if one exists (in any state), it is reported and nothing is created. So
re-submitting the same commit — a CI re-run, an Argo CD re-sync re-creating the submission Job —
starts no second run; changing any recipe value changes the name and starts exactly one new run.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from coderforge.config import RecipeConfig

RUN_LABEL = "coderforge.dev/recipe-fingerprint"


def run_name_for(cfg: RecipeConfig) -> str:
    slug = re.sub(r"[^a-z0-9-]+", "-", cfg.run.name.lower()).strip("-")[:40] or "recipe"
    return f"{slug}-{cfg.fingerprint()}"


@dataclass
class Submission:
    recipe: str
    host: str
    experiment: str
    run_name: str
    fingerprint: str
    pipeline: str
    package: str
    package_sha256: str
    parameters: dict[str, str]
    service_account: str | None = None
    namespace: str | None = None


def prepare(cfg: RecipeConfig, recipe_path: str, host: str, experiment: str, package_path: Path,
            pipeline: str = "recipe", service_account: str | None = None,
            namespace: str | None = None) -> Submission:
    """Compile the pipeline for the cluster (Kubernetes settings included) and describe the submission."""
    from pipelines.recipe import compile_recipe

    compile_recipe(cfg, package_path, pipeline=pipeline)
    blob = Path(package_path).read_bytes()
    return Submission(recipe=recipe_path, host=host, experiment=experiment, run_name=run_name_for(cfg),
                      fingerprint=cfg.fingerprint(), pipeline=pipeline, package=str(package_path),
                      package_sha256=hashlib.sha256(blob).hexdigest(), parameters={"recipe": cfg.to_json()},
                      service_account=service_account, namespace=namespace)


def describe(sub: Submission) -> dict[str, Any]:
    """What would be sent: the request plus the Kubernetes settings the compiled pipeline carries."""
    docs = list(yaml.safe_load_all(Path(sub.package).read_text()))
    spec = docs[0]
    platform = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"] if len(docs) > 1 else {}
    tasks = {}
    for name, ex in spec["deploymentSpec"]["executors"].items():
        c = ex["container"]
        res = c.get("resources", {})
        k8s = platform.get(name, {})
        tasks[name] = {
            "image": c["image"],
            "cpu": res.get("resourceCpuRequest"), "memory": res.get("resourceMemoryRequest"),
            "gpu": (res.get("accelerator") or {}).get("resourceCount"),
            "gpu_type": (res.get("accelerator") or {}).get("resourceType"),
            "secrets": sorted(s["secretName"] for s in k8s.get("secretAsEnv", [])),
            "node_selector": (k8s.get("nodeSelector") or {}).get("labels", {}),
            "tolerations": k8s.get("tolerations", []),
        }
    out = asdict(sub)
    out["parameters"] = {k: f"<{len(v)} chars of recipe JSON, sha256 {hashlib.sha256(v.encode()).hexdigest()[:12]}>"
                         for k, v in sub.parameters.items()}
    out["pipeline_name"] = spec["pipelineInfo"]["name"]
    out["tasks"] = tasks
    return out


@dataclass
class SubmitResult:
    run_id: str
    run_name: str
    created: bool
    experiment_id: str
    state: str | None = None


def _runs(client, experiment_id: str, run_name: str, namespace: str | None) -> list:
    flt = json.dumps({"predicates": [{"key": "display_name", "operation": "EQUALS", "stringValue": run_name}]})
    out, token = [], ""
    while True:
        resp = client.list_runs(experiment_id=experiment_id, filter=flt, page_size=100, page_token=token,
                                namespace=namespace)
        out += [r for r in (resp.runs or []) if r.display_name == run_name]  # the filter is advisory
        token = resp.next_page_token or ""
        if not token:
            return out


def _experiment_id(client, name: str, namespace: str | None) -> str:
    try:
        return client.get_experiment(experiment_name=name, namespace=namespace).experiment_id
    except ValueError:  # kfp raises ValueError when no experiment has that name
        return client.create_experiment(name, namespace=namespace).experiment_id


def submit(sub: Submission, client=None) -> SubmitResult:
    """Create the run unless one with this recipe's content name already exists in the experiment."""
    if client is None:
        import kfp

        client = kfp.Client(host=sub.host, namespace=sub.namespace)
    exp_id = _experiment_id(client, sub.experiment, sub.namespace)
    existing = _runs(client, exp_id, sub.run_name, sub.namespace)
    if existing:
        run = existing[0]
        return SubmitResult(run_id=run.run_id, run_name=sub.run_name, created=False, experiment_id=exp_id,
                            state=str(run.state) if run.state else None)
    result = client.create_run_from_pipeline_package(
        sub.package, arguments=sub.parameters, run_name=sub.run_name, experiment_id=exp_id,
        namespace=sub.namespace, service_account=sub.service_account)
    return SubmitResult(run_id=result.run_id, run_name=sub.run_name, created=True, experiment_id=exp_id)
