"""``coderforge run RECIPE --runner docker``: the recipe DAG on kfp.local's ``DockerRunner``, every step in
the image the compiled pipeline names for it (``components._images.IMAGE_OF_RESOURCES``), in its CPU
build (``coderforge/k8s/images.yaml`` variant ``cpu``).

kfp.local gives every task the same ``docker run`` settings and mounts only the pipeline root. Each
step here gets its own (:class:`StepContainers`, through a task handler installed for the run):

- paths: the pipeline root ``WORKDIR/pipeline_root`` is the steps' work directory too, so their MLflow
  SQLite store (``mlflow.db``, artifacts in ``mlartifacts``), Ray results and models lie inside it;
  ``WORKDIR/logs`` and ``WORKDIR/status`` (the live view) are mounted at the same paths; every other
  host path the recipe names (a data directory, ``${recipe_dir}/...``) is mounted read-only at its own
  path; ``${stdlib}`` is left to the step to expand, so it names the image's standard library;
- permissions: as root, those directories are handed to the image's uid (10001); as another user, the
  containers run as that user;
- shared memory: ``/dev/shm`` as large as Ray's object store wants (30 % of memory, and some);
- the sandbox: steps that run untrusted code get exactly the privileges of
  :data:`coderforge.images.privileges.DOCKER_SANDBOX` (measured there), the others none;
- ``CODERFORGE_IMAGE``: the image (reference and id) each step ran in, which the step's MLflow run records.

Every container is labelled with the session; the engine (:mod:`.engine`) removes them and stops a
daemon it started when the run ends, also on failure.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coderforge.config import RecipeConfig
from coderforge.images.privileges import DOCKER_SANDBOX, needs_sandbox
from coderforge.k8s.images import variant_of_ref

IMAGE_UID = 10001
IMAGE_ENV, PIPELINE_IMAGE_ENV = "CODERFORGE_IMAGE", "CODERFORGE_PIPELINE_IMAGE"
# the environment every step gets from the driver (the live view's, and services' endpoints/credentials)
PASS_ENV = ("CODERFORGE_STATUS_DIR", "CODERFORGE_LOG_DIR", "CODERFORGE_VERBOSE", "MLFLOW_TRACKING_URI",
            "S3_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION",
            "CODERFORGE_SANDBOX_ZYGOTE", "RAY_ADDRESS")
DEFERRED = ("stdlib",)  # recipe variables the step expands in its container
# an image's own system paths: a host path there would hide the image's files
SYSTEM_PREFIXES = ("/usr", "/lib", "/lib64", "/bin", "/sbin", "/etc", "/opt/venv", "/proc", "/sys", "/dev", "/var/lib",
                   "/home/coderforge")
RAY_OBJECT_STORE_FRACTION = 0.30  # Ray's default object store: 30 % of the memory it sees


class DockerRunError(RuntimeError):
    """The docker run cannot start (a missing image, a recipe path a container cannot see)."""


def setup_errors() -> tuple[type[Exception], ...]:
    """The errors that mean a docker run could not start (for a one-line message instead of a traceback)."""
    from coderforge.images.engine import EngineError

    return DockerRunError, EngineError


def step_of_command(command: list[str]) -> str | None:
    """The step (component function) a KFP task command runs: the value after ``--function_to_execute``."""
    for i, arg in enumerate(command[:-1]):
        if arg == "--function_to_execute":
            return command[i + 1]
    return None


def memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def ray_shm_bytes(memory: int | None = None) -> int:
    """``/dev/shm`` for a container that may start Ray: Ray puts its object store there only when it holds
    30 % of memory (else it falls back to /tmp, slowly, or refuses); 10 % more for what else uses it."""
    return int((memory or memory_bytes()) * (RAY_OBJECT_STORE_FRACTION + 0.10)) // (1 << 20) << 20


def recipe_host_paths(cfg: RecipeConfig, inside: tuple[Path, ...] = ()) -> list[Path]:
    """Existing absolute host paths the recipe names (its values, at any depth), outside ``inside``
    (already mounted); a path under an image's system directories is refused (it would hide them)."""
    found: set[Path] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, str) and value.startswith("/") and "\n" not in value and Path(value).exists():
            found.add(Path(value).resolve())

    walk(cfg.model_dump(mode="json"))
    out = []
    for path in sorted(found):
        if any(path == d or d in path.parents for d in inside):
            continue
        if any(str(path) == p or str(path).startswith(p + "/") for p in SYSTEM_PREFIXES) or path == Path("/"):
            raise DockerRunError(f"the recipe names {path}, which a container cannot be shown without hiding the "
                                 f"image's own files there; copy it elsewhere (for the running Python's standard "
                                 f"library write ${{stdlib}}: the step expands it in its container)")
        out.append(path)
    return [p for p in out if not any(q in p.parents for q in out)]  # a parent's mount covers its children


@dataclass
class DockerLayout:
    """Where a docker run's files live on the host (the same paths inside every container)."""

    workdir: Path
    pipeline_root: Path
    logs: Path
    status: Path
    inputs: list[Path] = field(default_factory=list)  # host paths the recipe names, mounted read-only

    def volumes(self) -> dict[str, dict[str, str]]:
        vols = {str(p): {"bind": str(p), "mode": "rw"} for p in (self.pipeline_root, self.logs, self.status)}
        vols.update({str(p): {"bind": str(p), "mode": "ro"} for p in self.inputs})
        return vols


def step_config(cfg: RecipeConfig, workdir: Path) -> RecipeConfig:
    """The recipe the steps get: their work directory is the pipeline root (so the MLflow store, Ray
    results and models a step writes lie inside the one directory the containers share)."""
    out = cfg.model_copy(deep=True)
    out.run.workdir = str(workdir / "pipeline_root")
    return out


def layout(step_cfg: RecipeConfig, workdir: Path) -> DockerLayout:
    """The layout of a run in ``workdir`` whose steps get ``step_cfg`` (:func:`step_config`)."""
    root = Path(step_cfg.run.workdir)
    lay = DockerLayout(workdir, root, workdir / "logs", workdir / "status")
    lay.inputs = recipe_host_paths(step_cfg, inside=(root, lay.logs, lay.status))
    return lay


def container_user() -> str | None:
    """None (the image's uid) when we are root and hand the files to it; else our own uid:gid."""
    return None if os.geteuid() == 0 else f"{os.getuid()}:{os.getgid()}"


def make_writable(lay: DockerLayout, uid: int = IMAGE_UID) -> None:
    """Create the shared directories and, as root, give them (and what is already in them, e.g. the MLflow
    store the driver created) to the image's uid; as another user they stay ours (containers run as us)."""
    for d in (lay.pipeline_root, lay.logs, lay.status):
        d.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            (lay.pipeline_root / ".home").mkdir(exist_ok=True)  # the containers' HOME (they run as us)
            continue
        for path in [d, *d.rglob("*")]:
            with contextlib.suppress(FileNotFoundError):
                os.lchown(path, uid, uid)


class StepContainers:
    """The ``docker run`` settings of each step's container."""

    def __init__(self, lay: DockerLayout, labels: dict[str, str], variant: str = "cpu",
                 image_ids: dict[str, str] | None = None):
        self.layout, self.labels, self.variant = lay, labels, variant
        self.image_ids = image_ids or {}
        self.shm = ray_shm_bytes()

    def image(self, pipeline_image: str) -> str:
        return variant_of_ref(pipeline_image, self.variant)

    def run_args(self, step: str | None, pipeline_image: str) -> dict[str, Any]:
        image = self.image(pipeline_image)
        env = {k: os.environ[k] for k in PASS_ENV if os.environ.get(k)}
        env[IMAGE_ENV] = f"{image}@{self.image_ids[image]}" if image in self.image_ids else image
        env[PIPELINE_IMAGE_ENV] = pipeline_image
        args: dict[str, Any] = {"labels": {**self.labels, "dev.coderforge.step": step or ""},
                                "shm_size": self.shm, "environment": env}
        user = container_user()
        if user:
            args["user"] = user
            env["HOME"] = str(self.layout.pipeline_root / ".home")
        if step and needs_sandbox(step):
            args.update(DOCKER_SANDBOX.run_args())
        return args


@contextlib.contextmanager
def task_handler(containers: StepContainers, host: str) -> Iterator[None]:
    """Install, for the block, kfp.local's Docker task handler with per-step settings."""
    import docker
    from kfp.local import docker_task_handler as dth
    from kfp.local import status

    from coderforge.images.containers import run_container

    class StepTaskHandler(dth.DockerTaskHandler):
        def run(self) -> status.Status:
            step = step_of_command(self.full_command)
            args = containers.run_args(step, self.image)
            args["environment"] = {**self.env_vars, **args["environment"]}
            client = docker.DockerClient(base_url=host, timeout=None)
            try:
                volumes = {**self.get_volumes_to_mount(client), **containers.layout.volumes()}
                code, _, _ = run_container(client, containers.image(self.image), self.full_command, volumes=volumes,
                                           on_output=lambda text: print(text, end="", flush=True), **args)
            finally:
                client.close()
            return status.Status.SUCCESS if code == 0 else status.Status.FAILURE

    original = dth.DockerTaskHandler
    dth.DockerTaskHandler = StepTaskHandler
    try:
        yield
    finally:
        dth.DockerTaskHandler = original


def needed_images(cfg: RecipeConfig, pipeline: str, variant: str = "cpu") -> list[str]:
    """The images the steps of ``pipeline`` run in (``variant`` builds), in step order."""
    from coderforge.steps.table import STEP_BY_NAME, steps_of
    from components._images import DATA_IMAGE, IMAGE_OF_RESOURCES

    refs = [DATA_IMAGE] + [IMAGE_OF_RESOURCES[STEP_BY_NAME[s].resources] for s in steps_of(pipeline, cfg)]
    return list(dict.fromkeys(variant_of_ref(r, variant) for r in refs))


@contextlib.contextmanager
def docker_session(cfg: RecipeConfig, pipeline: str, workdir: Path, variant: str = "cpu") -> Iterator[dict]:
    """Everything a docker run needs, for the block: an engine (started if none runs, stopped after), the
    layout, the steps' recipe, and ``runner()`` giving kfp.local's runner once the driver has created the
    MLflow parent run (the shared directories are then handed to the image's uid)."""
    from kfp import local

    from coderforge.images.base import image_exists
    from coderforge.images.engine import engine

    step_cfg = step_config(cfg, workdir)
    lay = layout(step_cfg, workdir)
    for d in (lay.pipeline_root, lay.logs, lay.status):  # the driver's MLflow store goes there first
        d.mkdir(parents=True, exist_ok=True)
    with engine() as eng:
        client = eng.client()
        try:
            missing = [ref for ref in needed_images(cfg, pipeline, variant) if not image_exists(client, ref)]
            if missing:
                raise DockerRunError(f"images not built: {', '.join(missing)}; run `coderforge images build`")
            ids = {ref: client.images.get(ref).id for ref in needed_images(cfg, pipeline, variant)}
        finally:
            client.close()
        containers = StepContainers(lay, eng.labels, variant, ids)

        def runner():
            make_writable(lay)
            return local.DockerRunner()

        with task_handler(containers, eng.host):
            yield {"cfg": step_cfg, "layout": lay, "runner": runner, "engine": eng}
