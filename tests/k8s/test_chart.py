"""helm/coderforge rendered by Helm's own library (helm-python-sdk → libhelm_c, the Go SDK) with several
value sets; every manifest validated against the Kubernetes JSON schemas (kubernetes-validate, strict);
no plaintext default credentials; non-root everywhere; resource requests everywhere; RBAC exactly what
RayJob management uses."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from coderforge.config import K8sSection
from coderforge.k8s.kuberay_api import RBAC_RULES, KubeRayApi
from coderforge.k8s.rayjob import follow_rayjob
from coderforge.k8s.rayjob_manifest import build_rayjob
from tests.k8s.apiserver import ApiServerStandIn, status

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm/coderforge"
K8S_VERSIONS = ("1.29.0", "1.33.0")
# The sandbox's MutatingAdmissionPolicy and binding (cluster-scoped): validated against the Kubernetes versions
# whose schemas have their admissionregistration.k8s.io version.
CLUSTER_SCOPED = ("MutatingAdmissionPolicy", "MutatingAdmissionPolicyBinding")
POLICY_K8S_VERSIONS = {"admissionregistration.k8s.io/v1": ("1.36.0", "1.37.0"),
                       "admissionregistration.k8s.io/v1beta1": ("1.34.0", "1.35.0"),
                       "admissionregistration.k8s.io/v1alpha1": ("1.32.0", "1.33.0")}
NS = "ml-platform"
TINY = "run:\n  name: tiny\ndata:\n  sources:\n    - uri: ${stdlib}\n"

VALUE_SETS = {
    "default": {},
    "postgresql": {"mlflow": {"backend": "postgresql"}},
    "external-db": {"mlflow": {"backend": "postgresql"}, "postgresql": {"externalUriSecret": "mlflow-db-uri"}},
    "existing-secrets": {"credentials": {"s3ExistingSecret": "team-s3"}, "mlflow": {"backend": "postgresql"},
                         "postgresql": {"existingSecret": "team-pg"}},
    "external-s3": {"minio": {"enabled": False}, "externalS3": {"endpoint": "https://s3.eu-west-1.amazonaws.com"},
                    "credentials": {"s3ExistingSecret": "aws-creds"}, "mlflow": {"enabled": False}},
    "gitops": {"submission": {"enabled": True, "recipes": ["tiny", "ablation-no-fim"]},
               "recipes": {"tiny": TINY, "ablation-no-fim": TINY + "pack:\n  seq_len: 64\n"},
               "rbac": {"pipelineServiceAccounts": ["pipeline-runner", "default-editor"]},
               "images": {"registry": "registry.example.com/ml", "tag": "abc1234",
                          "pullSecrets": ["regcred"]},
               "fullnameOverride": "forge"},
    "vllm": {"vllm": {"enabled": True, "model": {"uri": "s3://coderforge/models/teacher"}, "replicas": 2,
                      "tensorParallelSize": 4, "gpuMemoryUtilization": 0.9}},
}


def render(values: dict, name: str = "cf", namespace: str = NS) -> dict[str, str]:
    with helm.Chart.load(str(CHART)) as chart:
        return chart.render(values=values, name=name, namespace=namespace, is_install=True)


def manifests(values: dict, **kw) -> list[dict]:
    docs = []
    for path, text in render(values, **kw).items():
        if path.endswith("NOTES.txt"):
            continue
        docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def validate(doc: dict, versions: tuple[str, ...] = K8S_VERSIONS) -> None:
    """kubernetes-validate (strict) against ``versions``, or, for the sandbox policy, the versions serving it."""
    if doc["kind"] in CLUSTER_SCOPED:
        versions = POLICY_K8S_VERSIONS[doc["apiVersion"]]
    for version in versions:
        kubernetes_validate.validate(doc, version, strict=True)


def pod_specs(docs):
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet", "Job", "DaemonSet"):
            yield d, d["spec"]["template"]["spec"]


@pytest.fixture(scope="module", params=sorted(VALUE_SETS))
def rendered(request):
    return request.param, manifests(VALUE_SETS[request.param])


def test_every_manifest_validates_against_kubernetes_schemas(rendered):
    name, docs = rendered
    assert docs
    for d in docs:
        validate(d)
        if d["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in d["metadata"] and NS in d["metadata"]["name"]
            continue
        assert d["metadata"]["namespace"] == NS, (name, d["kind"], d["metadata"]["name"])
        assert len(d["metadata"]["name"]) <= 63


def test_pods_are_non_root_and_request_resources(rendered):
    name, docs = rendered
    specs = list(pod_specs(docs))
    assert specs or name == "external-s3"  # external S3, no MLflow: the chart runs no pod at all
    for d, spec in specs:
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] >= 1000, (name, d["metadata"]["name"])
        assert psc["seccompProfile"]["type"] == "RuntimeDefault"
        assert spec.get("automountServiceAccountToken") is False  # nothing here talks to the API server
        for c in spec["containers"] + spec.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
            assert sc["runAsNonRoot"] is True and sc["readOnlyRootFilesystem"] is True
            req = c["resources"]["requests"]
            assert req.get("cpu") and req.get("memory"), (name, c["name"])
            assert c["resources"]["limits"].get("memory")


def _walk_env(docs):
    for _, spec in pod_specs(docs):
        for c in spec["containers"]:
            for e in c.get("env", []):
                yield c["name"], e


def test_no_plaintext_default_credentials(rendered):
    name, docs = rendered
    text = yaml.safe_dump_all(docs)
    for default in ("minioadmin", "minio123", "changeme", "password123", "admin:admin", "mlflow:mlflow@"):
        assert default not in text.lower(), (name, default)
    for container, e in _walk_env(docs):
        if re.search(r"PASSWORD|SECRET|ACCESS_KEY|TOKEN|ROOT_USER", e["name"]) and "PATH" not in e["name"]:
            assert "valueFrom" in e and "secretKeyRef" in e["valueFrom"], (name, container, e)
        if "value" in e:
            assert not re.search(r"://[^/@\s]+:[^/@\s]+@", e["value"]) or "$(" in e["value"], (name, e)
    for d in docs:
        if d["kind"] == "Secret":
            assert "stringData" not in d
            assert d["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        if d["kind"] == "Deployment" and "mlflow" in d["metadata"]["name"]:
            args = " ".join(d["spec"]["template"]["spec"]["containers"][0]["args"])
            assert not re.search(r"postgresql://[^@/]*:[^@/]*@", args)  # no password in the DB URI


def test_generated_credentials_are_random_per_install():
    def secrets():
        return {d["metadata"]["name"]: d["data"] for d in manifests(VALUE_SETS["postgresql"]) if d["kind"] == "Secret"}

    a, b = secrets(), secrets()
    assert set(a) == {"coderforge-s3", "cf-coderforge-postgresql"}
    for name in a:
        for key, value in a[name].items():
            raw = base64.b64decode(value).decode()
            assert len(raw) >= 20 and raw.isalnum()
            assert value != b[name][key]  # not a fixed default: `helm template` has no cluster for lookup


def test_existing_secrets_mean_no_generated_secret():
    docs = manifests(VALUE_SETS["existing-secrets"])
    assert not [d for d in docs if d["kind"] == "Secret"]
    refs = {e["valueFrom"]["secretKeyRef"]["name"] for _, e in _walk_env(docs) if "valueFrom" in e}
    assert refs == {"team-s3", "team-pg"}


def test_rbac_grants_exactly_what_rayjob_management_uses():
    docs = manifests(VALUE_SETS["gitops"])
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    (role,) = [d for d in docs if d["kind"] == "Role"]
    granted = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
               for v in rule["verbs"]}
    expected = {(g, r, v) for g, r, verbs in RBAC_RULES for v in verbs}
    assert granted == expected
    assert all("*" not in x for triple in granted for x in triple)
    (binding,) = [d for d in docs if d["kind"] == "RoleBinding"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert [(s["name"], s["namespace"]) for s in binding["subjects"]] == [("pipeline-runner", NS),
                                                                        ("default-editor", NS)]


def _rbac_triple(method: str, path: str) -> tuple[str, str, str]:
    url, _, query = path.partition("?")
    m = re.match(r"^/apis/([^/]+)/[^/]+/namespaces/[^/]+/([^/]+)(/[^/]+)?(/[^/]+)?$", url) or \
        re.match(r"^/api/v1()/namespaces/[^/]+/([^/]+)(/[^/]+)?(/[^/]+)?$", url)
    group, resource, name, sub = m.groups()
    if sub:
        resource += sub
    verb = {"POST": "create", "DELETE": "delete", "PUT": "update", "PATCH": "patch"}.get(method)
    if method == "GET":
        verb = "get" if name else ("watch" if "watch=true" in query else "list")
    return group, resource, verb


def test_rayjob_client_uses_only_the_granted_permissions():
    """Drive KubeRayApi through create → follow (with logs) → delete over HTTP; map every request to
    the RBAC (group, resource, verb) the API server would check; it must equal RBAC_RULES."""
    with ApiServerStandIn() as server:
        server.script("cf-rbac", [status("RUNNING", "Running"), status("SUCCEEDED", "Complete")],
                      [["hello"], ["done"]])
        m = build_rayjob(name="cf-rbac", namespace=NS, step="pretrain", recipe_text=TINY, k8s=K8sSection(),
                         module="coderforge.cli", args=[], image="img:1", ray_version="2.60.0")
        t = {"now": 0.0}
        follow_rayjob(KubeRayApi(api_client=server.client()), m, start_timeout_s=100, run_timeout_s=100,
                      poll_interval_s=1, delete_timeout_s=10, clock=lambda: t["now"],
                      sleep=lambda s: t.__setitem__("now", t["now"] + s), emit=lambda line: None)
        used = {_rbac_triple(method, path) for method, path, _ in server.requests}
    assert used == {(g, r, v) for g, r, verbs in RBAC_RULES for v in verbs}


def test_endpoints_configmap_matches_platform_keys():
    from pipelines.platform import ENDPOINT_KEYS

    (cm,) = [d for d in manifests({}) if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "coderforge-endpoints"]
    assert set(cm["data"]) == set(ENDPOINT_KEYS)
    assert cm["data"]["S3_ENDPOINT_URL"] == f"http://cf-coderforge-minio.{NS}.svc:9000"
    assert cm["data"]["MLFLOW_TRACKING_URI"] == f"http://cf-coderforge-mlflow.{NS}.svc:5000"
    # and the recipe defaults name what the chart creates
    k8s = K8sSection()
    assert k8s.endpoints_config_map == "coderforge-endpoints"
    assert k8s.secrets[0].name == "coderforge-s3" and set(k8s.secrets[0].keys) == {"accessKey", "secretKey"}


def test_minio_buckets_created_at_install():
    docs = manifests({"minio": {"buckets": ["coderforge", "mlflow", "extra-bucket"]}})
    (job,) = [d for d in docs if d["kind"] == "Job" and d["metadata"]["name"].endswith("minio-buckets")]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    script = job["spec"]["template"]["spec"]["containers"][0]["args"][0]
    assert "for b in coderforge mlflow extra-bucket; do mc mb --ignore-existing" in script
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MC_HOST_cf"]["value"].startswith("http://$(ACCESS_KEY):$(SECRET_KEY)@")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_mlflow_backend_and_proxied_artifacts(backend):
    docs = manifests({"mlflow": {"backend": backend}})
    (dep,) = [d for d in docs if d["kind"] == "Deployment"]
    c = dep["spec"]["template"]["spec"]["containers"][0]
    args = c["args"]
    assert "--serve-artifacts" in args and "--artifacts-destination=s3://mlflow/" in args
    assert c["image"] == "ghcr.io/coderforge/coderforge-data:0.1.0"
    store = next(a for a in args if a.startswith("--backend-store-uri="))
    kinds = {d["kind"] for d in docs}
    if backend == "sqlite":
        assert store == "--backend-store-uri=sqlite:////data/mlflow.db"
        assert any(d["kind"] == "PersistentVolumeClaim" for d in docs) and "StatefulSet" in kinds
        assert not [d for d in docs if "postgresql" in d["metadata"]["name"]]
    else:
        assert store == "--backend-store-uri=postgresql://mlflow@cf-coderforge-postgresql:5432/mlflow"
        assert "PGPASSWORD" in {e["name"] for e in c["env"]}
        assert [d for d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"].endswith("postgresql")]


def test_submission_jobs_are_keyed_by_recipe_content():
    def jobs(values):
        return {d["metadata"]["labels"]["coderforge.dev/recipe"]: d for d in manifests(values)
                if d["kind"] == "Job" and d["metadata"]["labels"]["app.kubernetes.io/component"] == "submission"}

    base = VALUE_SETS["gitops"]
    a = jobs(base)
    assert set(a) == {"tiny", "ablation-no-fim"}
    job = a["tiny"]
    c = job["spec"]["template"]["spec"]["containers"][0]
    assert c["command"] == ["coderforge", "submit"]
    assert c["args"][0] == "/recipes/tiny.yaml" and "--experiment=coderforge" in c["args"]
    assert c["image"] == "registry.example.com/ml/coderforge-data:abc1234"
    assert job["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    # unchanged recipe → same Job name; edited recipe → a new name for that recipe only
    again = jobs(base)
    assert {k: v["metadata"]["name"] for k, v in again.items()} == {k: v["metadata"]["name"] for k, v in a.items()}
    edited = dict(base, recipes=dict(base["recipes"], tiny=TINY + "train:\n  steps: 5\n"))
    b = jobs(edited)
    assert b["tiny"]["metadata"]["name"] != a["tiny"]["metadata"]["name"]
    assert b["ablation-no-fim"]["metadata"]["name"] == a["ablation-no-fim"]["metadata"]["name"]
    # the recipes ConfigMap carries the text the Job mounts
    (cm,) = [d for d in manifests(base) if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "forge-recipes"]
    assert yaml.safe_load(cm["data"]["tiny.yaml"]) == yaml.safe_load(TINY)


def test_invalid_values_fail_rendering():
    with pytest.raises(helm.HelmError, match="externalS3.endpoint"):
        render({"minio": {"enabled": False}})
    with pytest.raises(helm.HelmError, match="mlflow.backend"):
        render({"mlflow": {"backend": "mysql"}})
    with pytest.raises(helm.HelmError, match="no recipe"):
        render({"submission": {"enabled": True, "recipes": ["missing"]}})


def test_kuberay_operator_is_a_declared_dependency():
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    (dep,) = meta["dependencies"]
    assert dep["name"] == "kuberay-operator" and dep["condition"] == "kuberay-operator.enabled"
    assert dep["repository"].startswith("https://ray-project.github.io/kuberay-helm")
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["kuberay-operator"]["enabled"] is True
    assert values["kuberay-operator"]["resources"]["requests"]


def test_chart_lints_clean():
    result = helm.lint(str(CHART), namespace=NS)
    assert not result["errors"]
    assert not [m for m in result["messages"] if m["severity"] >= 3], result
    # the one warning: the KubeRay subchart is declared but not vendored (no Helm repository reachable here)
    warnings = [m["error"] for m in result["messages"] if m["severity"] == 2]
    assert warnings == ["chart directory is missing these dependencies: kuberay-operator"], warnings


def test_argocd_application_example():
    (app,) = list(yaml.safe_load_all((ROOT / "examples/argocd/coderforge-application.yaml").read_text()))
    assert app["apiVersion"] == "argoproj.io/v1alpha1" and app["kind"] == "Application"
    src = app["spec"]["source"]
    assert (ROOT / src["path"] / "Chart.yaml").is_file()
    values = src["helm"]["valuesObject"]
    # Argo CD renders without cluster access (lookup is empty): credentials must come from existing Secrets
    assert values["credentials"]["s3ExistingSecret"] and values["postgresql"]["existingSecret"]
    for fp in src["helm"]["fileParameters"]:
        assert (ROOT / src["path"] / fp["path"]).resolve().is_relative_to(ROOT)
    docs = manifests({**values, "recipes": {"tiny": TINY}})
    assert not [d for d in docs if d["kind"] == "Secret"]
    for d in docs:
        validate(d, K8S_VERSIONS[-1:])
