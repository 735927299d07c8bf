"""A local stand-in for the few Kubernetes API server endpoints RayJob management uses, so the real
``kubernetes`` Python client (URLs, verbs, bodies, 404 handling, log reads) is exercised over HTTP.

There is no cluster and no KubeRay operator here; instead each RayJob follows a *script*: the list of
``status`` objects KubeRay would write (jobStatus / jobDeploymentStatus / reason), one per GET, the
last one repeating. Every request is recorded so tests can assert what the client sent.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlparse

from .httpstandin import HttpStandIn

RAYJOB = re.compile(r"^/apis/ray\.io/v1/namespaces/([^/]+)/rayjobs(?:/([^/]+))?$")
PODS = re.compile(r"^/api/v1/namespaces/([^/]+)/pods$")
POD_LOG = re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)/log$")


def status(job: str = "", deployment: str = "", reason: str = "", message: str = "") -> dict:
    st = {"jobStatus": job, "jobDeploymentStatus": deployment}
    if reason:
        st["reason"] = reason
    if message:
        st["message"] = message
    return st


@dataclass
class Stored:
    obj: dict
    script: list[dict]
    logs: list[list[str]]
    gets: int = 0
    deleting: int = 0  # GETs left before a deleted object disappears (finalizers, foreground deletion)
    log_lines: list[str] = field(default_factory=list)


class ApiServerStandIn(HttpStandIn):
    def __init__(self, default_script: list[dict] | None = None, delete_lag: int = 1):
        self.scripts: dict[str, list[dict]] = {}
        self.logs: dict[str, list[list[str]]] = {}
        self.default_script = default_script or [status("RUNNING", "Running")]
        self.delete_lag = delete_lag
        self.objects: dict[tuple[str, str], Stored] = {}
        self.requests: list[tuple[str, str, dict | None]] = []
        self.fail_gets = 0  # answer this many RayJob GETs with 500
        self.lock = threading.Lock()
        self.t0 = datetime(2026, 11, 23, 12, 0, 0, tzinfo=timezone.utc)
        self._serve()

    # -- control -------------------------------------------------------------------------------------

    def script(self, name: str, statuses: list[dict], logs: list[list[str]] | None = None):
        self.scripts[name] = statuses
        self.logs[name] = logs or []

    def client(self):
        from kubernetes import client

        cfg = client.Configuration()
        cfg.host = self.url
        return client.ApiClient(cfg)

    def exists(self, ns: str, name: str) -> bool:
        return (ns, name) in self.objects

    def verbs(self, name: str) -> list[str]:
        return [m for m, path, _ in self.requests if path.split("?")[0].endswith(f"/rayjobs/{name}")
                or (m == "POST" and path.endswith("/rayjobs"))]

    # -- HTTP ----------------------------------------------------------------------------------------
    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, code: int, body: dict | str, ctype: str = "application/json"):
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _status(self, code: int, reason: str, msg: str):
                self._send(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                  "reason": reason, "message": msg, "code": code})

            def _body(self):
                n = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(n)) if n else None

            def do_POST(self):
                body = self._body()
                url = urlparse(self.path)
                server.requests.append(("POST", self.path, body))
                m = RAYJOB.match(url.path)
                if not m or m.group(2):
                    return self._status(404, "NotFound", url.path)
                ns, name = m.group(1), body["metadata"]["name"]
                with server.lock:
                    if (ns, name) in server.objects:
                        return self._status(409, "AlreadyExists", f"rayjobs {name} already exists")
                    obj = json.loads(json.dumps(body))
                    obj["metadata"].update(uid=f"uid-{name}", resourceVersion="1")
                    obj["status"] = {}
                    server.objects[(ns, name)] = Stored(obj, server.scripts.get(name, server.default_script),
                                                        server.logs.get(name, []))
                return self._send(201, obj)

            def do_GET(self):
                url = urlparse(self.path)
                server.requests.append(("GET", self.path, None))
                if m := RAYJOB.match(url.path):
                    ns, name = m.groups()
                    with server.lock:
                        if server.fail_gets > 0:
                            server.fail_gets -= 1
                            return self._status(500, "InternalError", "etcd is having a bad day")
                        st = server.objects.get((ns, name))
                        if st is None:
                            return self._status(404, "NotFound", f'rayjobs.ray.io "{name}" not found')
                        if st.obj["metadata"].get("deletionTimestamp"):
                            if st.deleting <= 0:
                                del server.objects[(ns, name)]
                                return self._status(404, "NotFound", f'rayjobs.ray.io "{name}" not found')
                            st.deleting -= 1
                            return self._send(200, st.obj)
                        i = min(st.gets, len(st.script) - 1)
                        st.obj["status"] = st.script[i]
                        if i < len(st.logs):
                            for j, line in enumerate(st.logs[i]):
                                ts = (server.t0 + timedelta(seconds=st.gets, microseconds=j)).isoformat()
                                st.log_lines.append(ts.replace("+00:00", "Z") + " " + line)
                        st.gets += 1
                        return self._send(200, st.obj)
                if m := PODS.match(url.path):
                    ns = m.group(1)
                    sel = parse_qs(url.query).get("labelSelector", [""])[0]
                    job = sel.removeprefix("job-name=")
                    items = []
                    if (ns, job) in server.objects and server.objects[(ns, job)].log_lines:
                        items.append({"metadata": {"name": f"{job}-submit", "namespace": ns,
                                                   "labels": {"job-name": job},
                                                   "creationTimestamp": server.t0.isoformat()}})
                    return self._send(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items})
                if m := POD_LOG.match(url.path):
                    ns, pod = m.groups()
                    job = pod.removesuffix("-submit")
                    st = server.objects.get((ns, job))
                    if st is None:
                        return self._status(404, "NotFound", pod)
                    return self._send(200, "".join(line + "\n" for line in st.log_lines), "text/plain")
                return self._status(404, "NotFound", url.path)

            def do_DELETE(self):
                url = urlparse(self.path)
                body = self._body()
                server.requests.append(("DELETE", self.path, body))
                m = RAYJOB.match(url.path)
                if not m or not m.group(2):
                    return self._status(404, "NotFound", url.path)
                with server.lock:
                    st = server.objects.get((m.group(1), m.group(2)))
                    if st is None:
                        return self._status(404, "NotFound", f'rayjobs.ray.io "{m.group(2)}" not found')
                    if not st.obj["metadata"].get("deletionTimestamp"):
                        st.obj["metadata"]["deletionTimestamp"] = server.t0.isoformat()
                        st.deleting = server.delete_lag
                    return self._send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})

        return Handler
