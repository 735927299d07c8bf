"""The chart's MutatingAdmissionPolicy that gives KFP task pods of the sandbox steps the measured least privilege
(templates/sandbox-policy.yaml): it selects exactly the steps that run the sandbox (needs_sandbox over the step
table), the compiled pipeline labels their pods so, and what it applies equals
DOCKER_SANDBOX.k8s_security_context() plus hostUsers: false. Rendered offline by Helm's library and validated
against the Kubernetes schemas of the versions that serve each API version; the mutation's CEL object literal is
read back here (a Kubernetes API server type-checks the same names: Object.<field path>), and the whole policy's
CEL is evaluated with cel-python on a KFP executor pod (tests/k8s/celpolicy.py)."""

from __future__ import annotations

import copy
import json
import re

import helm_python as helm
import pytest
import yaml

from coderforge.config import load_recipe
from coderforge.images.privileges import DOCKER_SANDBOX, needs_sandbox
from coderforge.steps.table import STEP_BY_NAME, steps_of
from pipelines.recipe import compile_recipe
from tests.k8s.test_chart import NS, POLICY_K8S_VERSIONS, manifests, render, validate

SANDBOX_STEPS = {s for s in STEP_BY_NAME if needs_sandbox(s)}
STEP_LABEL = "coderforge.dev/step"
CTX_TYPE = "Object.spec.containers.securityContext"


def policy_docs(values: dict | None = None, **kw) -> tuple[dict, dict] | None:
    docs = [d for d in manifests(values or {}, **kw) if d["kind"].startswith("MutatingAdmissionPolicy")]
    if not docs:
        return None
    (policy,) = [d for d in docs if d["kind"] == "MutatingAdmissionPolicy"]
    (binding,) = [d for d in docs if d["kind"] == "MutatingAdmissionPolicyBinding"]
    return policy, binding


def parse_cel_literal(text: str, expected_type: str):
    """Read back the subset of CEL the chart writes (object initialisers, lists, strings, ints, bools) as Python
    values, checking that every initialiser's type name is its field path (``T.field``), as the API server does."""
    tokens = re.findall(r'"(?:[^"\\]|\\.)*"|-?\d+|[A-Za-z_][\w.]*|[{}\[\]:,]', text)
    assert "".join(tokens) == re.sub(r"\s+", "", text), f"unexpected characters in {text!r}"
    pos = 0

    def take(expected: str | None = None) -> str:
        nonlocal pos
        tok = tokens[pos]
        assert expected is None or tok == expected, (expected, tok, pos)
        pos += 1
        return tok

    def value(typ: str):
        tok = take()
        if tok == "[":
            items = []
            while tokens[pos] != "]":
                items.append(value(typ))
                if tokens[pos] == ",":
                    take(",")
            take("]")
            return items
        if tok.startswith('"'):
            return json.loads(tok)
        if tok in ("true", "false"):
            return tok == "true"
        if re.fullmatch(r"-?\d+", tok):
            return int(tok)
        assert tok == typ, f"initialiser {tok} where the field path is {typ}"
        take("{")
        out = {}
        while tokens[pos] != "}":
            key = take()
            take(":")
            out[key] = value(f"{typ}.{key}")
            if tokens[pos] == ",":
                take(",")
        take("}")
        return out

    result = value(expected_type)
    assert pos == len(tokens), f"trailing tokens {tokens[pos:]}"
    return result


def applied(policy: dict) -> tuple[object, dict, list[str]]:
    """The mutation's hostUsers value, the container securityContext it writes, and the containers it targets."""
    (mutation,) = policy["spec"]["mutations"]
    assert mutation["patchType"] == "JSONPatch"
    expr = mutation["jsonPatch"]["expression"]
    m = re.fullmatch(r'\[JSONPatch\{op: "add", path: "/spec/hostUsers", value: (\w+)\}\] \+ '
                     r'variables\.targets\.map\(n, JSONPatch\{op: "add", '
                     r'path: "/spec/containers/" \+ string\(variables\.names\.indexOf\(n\)\) \+ "/securityContext", '
                     r"value: (.*)\}\)", expr)
    assert m, expr
    variables = {v["name"]: v["expression"] for v in policy["spec"]["variables"]}
    assert variables["names"] == "object.spec.containers.map(c, c.name)"
    t = re.fullmatch(r"(\[.*\])\.filter\(n, n in variables\.names\)", variables["targets"])
    assert t, variables["targets"]
    return parse_cel_literal(m.group(1), ""), parse_cel_literal(m.group(2), CTX_TYPE), json.loads(t.group(1))


def test_policy_selects_exactly_the_sandbox_steps_in_the_release_namespace():
    assert SANDBOX_STEPS == {"verify", "dpo_pairs", "evaluate"}  # the step table's sandbox sections
    policy, binding = policy_docs()
    spec = policy["spec"]
    (rule,) = spec["matchConstraints"]["resourceRules"]
    assert rule == {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}
    (sel,) = spec["matchConstraints"]["objectSelector"]["matchExpressions"]
    assert (sel["key"], sel["operator"]) == (STEP_LABEL, "In") and set(sel["values"]) == SANDBOX_STEPS
    assert len(sel["values"]) == len(SANDBOX_STEPS)
    assert spec["failurePolicy"] == "Fail"
    assert binding["spec"]["policyName"] == policy["metadata"]["name"] == binding["metadata"]["name"]
    (ns,) = binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"]
    assert ns == {"key": "kubernetes.io/metadata.name", "operator": "In", "values": [NS]}
    # cluster-scoped: one policy per release and namespace
    assert policy["metadata"]["name"] == f"cf-coderforge-{NS}-sandbox" and "namespace" not in policy["metadata"]
    other = policy_docs(name="cf", namespace="team-b")[0]
    assert other["metadata"]["name"] != policy["metadata"]["name"]


def test_policy_applies_exactly_the_measured_least_privilege():
    host_users, ctx, targets = applied(policy_docs()[0])
    assert host_users is False  # Kubernetes grants procMount: Unmasked only in a pod's own user namespace
    assert ctx == DOCKER_SANDBOX.k8s_security_context()
    # only KFP's user container; Argo's init/wait and KFP's launcher init container keep what KFP gives them
    assert targets == ["main"]
    policy = policy_docs()[0]
    (cond,) = policy["spec"]["matchConditions"]
    assert cond["expression"] == 'object.spec.containers.exists(c, c.name in ["main"])'
    assert "initContainers" not in json.dumps(policy["spec"])


def test_policy_follows_the_values():
    values = {"sandbox": {"admissionPolicy": {"containers": ["main", "sidecar"], "namespaces": ["kubeflow-user-a"],
                                              "failurePolicy": "Ignore"},
                          "containerSecurityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True,
                                                       "capabilities": {"drop": ["ALL"], "add": ["SYS_ADMIN"]},
                                                       "procMount": "Unmasked"}}}
    policy, binding = policy_docs(values)
    _, ctx, targets = applied(policy)
    assert targets == ["main", "sidecar"] and ctx["capabilities"] == {"drop": ["ALL"], "add": ["SYS_ADMIN"]}
    assert policy["spec"]["failurePolicy"] == "Ignore"
    assert binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"][0]["values"] == [
        "kubeflow-user-a"]
    assert policy_docs({"sandbox": {"admissionPolicy": {"enabled": False}}}) is None
    for key in ("steps", "containers"):
        with pytest.raises(helm.HelmError, match=f"sandbox.admissionPolicy.{key} lists no"):
            render({"sandbox": {"admissionPolicy": {key: []}}})


@pytest.mark.parametrize("api", sorted(POLICY_K8S_VERSIONS))
def test_policy_validates_against_the_kubernetes_versions_serving_it(api):
    """Offline, Helm's library reports Kubernetes 1.36 and no served kinds: the default is v1 (GA in 1.36);
    v1beta1 (1.34-1.35) and v1alpha1 (1.32-1.33) when pinned."""
    pinned = {"sandbox": {"admissionPolicy": {"apiVersion": api}}} if not api.endswith("/v1") else {}
    for d in policy_docs(pinned):
        assert d["apiVersion"] == api
        validate(d)
    assert "NOT configured" not in render(pinned)["coderforge/templates/NOTES.txt"]


def _executor_labels(path) -> dict[str, dict[str, str]]:
    """Task name → the pod labels KFP puts on that task's executor pod (the platform spec's podMetadata)."""
    spec, platform = yaml.safe_load_all(path.read_text())
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    out = {}
    for task, t in spec["root"]["dag"]["tasks"].items():
        executor = spec["components"][t["componentRef"]["name"]]["executorLabel"]
        out[task] = executors[executor].get("podMetadata", {}).get("labels", {})
    return out


@pytest.mark.parametrize("pipeline", ["recipe", "posttrain"])
def test_compiled_pipeline_labels_every_sandbox_step_for_the_policy(tmp_path, pipeline):
    overrides = ["posttrain.model=s3://models/base", "posttrain.docs=/data/docs"] if pipeline == "posttrain" else []
    cfg = load_recipe("configs/tiny.yaml", overrides=overrides)
    labels = _executor_labels(compile_recipe(cfg, tmp_path / f"{pipeline}.yaml", pipeline=pipeline))
    selected = set(policy_docs()[0]["spec"]["matchConstraints"]["objectSelector"]["matchExpressions"][0]["values"])
    running = steps_of(pipeline, cfg)
    assert SANDBOX_STEPS <= set(running)
    for step in running:
        value = labels[step.replace("_", "-")].get(STEP_LABEL)
        assert value == step
        assert (value in selected) == needs_sandbox(step), step  # the policy touches the sandbox steps only
    assert not {labels[t].get(STEP_LABEL) for t in ("start-run", "finish-run")} & selected


# A KFP v2 executor pod as Argo creates it (KFP's backend gives every container seccomp RuntimeDefault and
# drops capabilities; Argo's `init`/`wait` run argoexec; the task's code runs in `main`).
RUNTIME_DEFAULT = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                   "seccompProfile": {"type": "RuntimeDefault"}}


def kfp_pod(step: str, order: tuple[str, ...] = ("wait", "main")) -> dict:
    image = {"wait": "quay.io/argoproj/argoexec:v3.7", "main": "ghcr.io/coderforge/coderforge-data:0.1.0",
             "driver": "ghcr.io/kubeflow/kfp-driver:2.17.0"}

    def ctx(**extra) -> dict:
        return {**copy.deepcopy(RUNTIME_DEFAULT), **extra}

    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"coderforge-recipe-x-system-container-impl-{step}", "namespace": NS,
                     "labels": {STEP_LABEL: step, "app.kubernetes.io/part-of": "coderforge",
                                "pipelines.kubeflow.org/v2_component": "true"}},
        "spec": {
            "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
            "initContainers": [
                {"name": "init", "image": image["wait"], "securityContext": ctx(runAsNonRoot=True)},
                {"name": "kfp-launcher", "image": "ghcr.io/kubeflow/kfp-launcher:2.17.0",
                 "command": ["launcher-v2", "--copy", "/kfp-launcher/launch"],
                 "securityContext": ctx(runAsNonRoot=True)}],
            "containers": [{"name": n, "image": image[n], "securityContext": ctx()} for n in order],
            "volumes": [{"name": "kfp-launcher", "emptyDir": {}}, {"name": "var-run-argo", "emptyDir": {}}],
        },
    }


@pytest.fixture()
def evaluator():
    pytest.importorskip("celpy")
    from tests.k8s.celpolicy import PolicyEvaluator

    return lambda values=None: PolicyEvaluator(policy_docs(values)[0])


@pytest.mark.parametrize("order", [("wait", "main"), ("main", "wait")])
def test_policy_cel_gives_a_kfp_pod_exactly_the_measured_privileges(evaluator, order):
    """The policy's CEL evaluated (cel-python) on a KFP executor pod of a sandbox step."""
    pod = kfp_pod("evaluate", order)
    admitted = evaluator().admit(pod)
    assert admitted["spec"]["hostUsers"] is False
    containers = {c["name"]: c for c in admitted["spec"]["containers"]}
    assert containers["main"]["securityContext"] == DOCKER_SANDBOX.k8s_security_context()
    assert [c["name"] for c in admitted["spec"]["containers"]] == list(order)
    # nothing else changes: Argo's and KFP's own containers, the pod's security context, the image, the volumes
    expected = kfp_pod("evaluate", order)
    expected["spec"]["hostUsers"] = False
    next(c for c in expected["spec"]["containers"] if c["name"] == "main")["securityContext"] = \
        DOCKER_SANDBOX.k8s_security_context()
    assert admitted == expected
    assert pod == kfp_pod("evaluate", order)  # the input is not modified in place


def test_policy_cel_leaves_pods_without_the_step_container_alone(evaluator):
    policy = evaluator()
    pod = kfp_pod("evaluate", ("wait", "driver"))
    assert not policy.matches(pod) and policy.admit(pod) == pod
    # several containers named: only those the pod has are patched
    two = evaluator({"sandbox": {"admissionPolicy": {"containers": ["main", "sidecar"]}}})
    ops = two.patches(kfp_pod("verify"))
    assert [o["path"] for o in ops] == ["/spec/hostUsers", "/spec/containers/1/securityContext"]
