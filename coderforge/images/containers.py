"""Run one container to its end through the Docker API, always removing it.

The docker SDK's ``containers.run`` cannot unmask ``/proc``: ``docker run --security-opt
systempaths=unconfined`` is a CLI spelling for the API's empty ``MaskedPaths``/``ReadonlyPaths``, which
the SDK does not expose. :func:`run_container` takes the same settings as ``containers.run`` (those used
here) plus ``unmask_proc`` and builds the host configuration itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def host_config(client, *, volumes: dict | None = None, shm_size: int | str | None = None,
                security_opt: list[str] | None = None, cap_add: list[str] | None = None, privileged: bool = False,
                unmask_proc: bool = False) -> dict[str, Any]:
    hc = client.api.create_host_config(binds=volumes or None, shm_size=shm_size, security_opt=security_opt,
                                       cap_add=cap_add, privileged=privileged)
    if unmask_proc:
        hc["MaskedPaths"] = []
        hc["ReadonlyPaths"] = []
    return hc


def run_container(client, image: str, command: list[str], *, environment: dict[str, str] | None = None,
                  labels: dict[str, str] | None = None, user: str | None = None,
                  on_output: Callable[[str], None] | None = None, timeout_s: float | None = None,
                  **settings: Any) -> tuple[int, str, str]:
    """Create, start and follow a container to its end; returns (exit status, stdout, stderr). ``on_output``
    gets the combined output as it comes. The container is removed whatever happens."""
    container = client.api.create_container(image, command, environment=environment or {}, labels=labels or {},
                                            user=user or "", host_config=host_config(client, **settings))
    cid = container["Id"]
    try:
        client.api.start(cid)
        if on_output is not None:
            for chunk in client.api.logs(cid, stream=True, follow=True):
                on_output(chunk.decode(errors="replace"))
        code = client.api.wait(cid, timeout=timeout_s)["StatusCode"]
        out = client.api.logs(cid, stdout=True, stderr=False).decode(errors="replace")
        err = client.api.logs(cid, stdout=False, stderr=True).decode(errors="replace")
        return code, out, err
    finally:
        client.api.remove_container(cid, force=True)
