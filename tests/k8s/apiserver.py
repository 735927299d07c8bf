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
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler
from urllib.parse import ParseResult, parse_qs, urlparse

from .httpstandin import HttpStandIn

RAYJOB = re.compile(r"^/apis/ray\.io/v1/namespaces/([^/]+)/rayjobs(?:/([^/]+))?$")
PODS = re.compile(r"^/api/v1/namespaces/([^/]+)/pods$")
POD_LOG = re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)/log$")

Reply = tuple[int, str, str]  # HTTP status, body text, Content-Type


def _json(code: int, body: dict) -> Reply:
    return code, json.dumps(body), "application/json"


def _failure(code: int, reason: str, msg: str) -> Reply:
    return _json(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason,
                        "message": msg, "code": code})


def _rayjob_not_found(name: str) -> Reply:
    return _failure(404, "NotFound", f'rayjobs.ray.io "{name}" not found')


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
        self.routes: dict[str, list[tuple[re.Pattern, Callable[..., Reply]]]] = {
            "POST": [(RAYJOB, self._create_rayjob)],
            "GET": [(RAYJOB, self._get_rayjob), (PODS, self._list_pods), (POD_LOG, self._read_pod_log)],
            "DELETE": [(RAYJOB, self._delete_rayjob)],
        }
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

    # -- API endpoints: (method, path) → reply --------------------------------------------------------

    def route(self, method: str, url: ParseResult, body: dict | None) -> Reply:
        for pattern, endpoint in self.routes.get(method, ()):
            if m := pattern.match(url.path):
                return endpoint(m, url, body)
        return _failure(404, "NotFound", url.path)

    def _create_rayjob(self, m: re.Match, url: ParseResult, body: dict | None) -> Reply:
        if m.group(2):
            return _failure(404, "NotFound", url.path)
        ns, name = m.group(1), body["metadata"]["name"]
        with self.lock:
            if (ns, name) in self.objects:
                return _failure(409, "AlreadyExists", f"rayjobs {name} already exists")
            obj = json.loads(json.dumps(body))
            obj["metadata"].update(uid=f"uid-{name}", resourceVersion="1")
            obj["status"] = {}
            self.objects[(ns, name)] = Stored(obj, self.scripts.get(name, self.default_script),
                                              self.logs.get(name, []))
            return _json(201, obj)

    def _get_rayjob(self, m: re.Match, url: ParseResult, body: dict | None) -> Reply:
        ns, name = m.groups()
        with self.lock:
            if self.fail_gets > 0:
                self.fail_gets -= 1
                return _failure(500, "InternalError", "etcd is having a bad day")
            st = self.objects.get((ns, name))
            if st is None:
                return _rayjob_not_found(name)
            if st.obj["metadata"].get("deletionTimestamp"):
                if st.deleting <= 0:
                    del self.objects[(ns, name)]
                    return _rayjob_not_found(name)
                st.deleting -= 1
                return _json(200, st.obj)
            self._advance_script(st)
            return _json(200, st.obj)

    def _advance_script(self, st: Stored) -> None:
        """One GET of a live RayJob: its next scripted status, and that step's submitter log lines."""
        i = min(st.gets, len(st.script) - 1)
        st.obj["status"] = st.script[i]
        if i < len(st.logs):
            for j, line in enumerate(st.logs[i]):
                ts = (self.t0 + timedelta(seconds=st.gets, microseconds=j)).isoformat()
                st.log_lines.append(ts.replace("+00:00", "Z") + " " + line)
        st.gets += 1

    def _list_pods(self, m: re.Match, url: ParseResult, body: dict | None) -> Reply:
        ns = m.group(1)
        sel = parse_qs(url.query).get("labelSelector", [""])[0]
        job = sel.removeprefix("job-name=")
        items = []
        if (ns, job) in self.objects and self.objects[(ns, job)].log_lines:
            items.append({"metadata": {"name": f"{job}-submit", "namespace": ns,
                                       "labels": {"job-name": job},
                                       "creationTimestamp": self.t0.isoformat()}})
        return _json(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items})

    def _read_pod_log(self, m: re.Match, url: ParseResult, body: dict | None) -> Reply:
        ns, pod = m.groups()
        job = pod.removesuffix("-submit")
        st = self.objects.get((ns, job))
        if st is None:
            return _failure(404, "NotFound", pod)
        return 200, "".join(line + "\n" for line in st.log_lines), "text/plain"

    def _delete_rayjob(self, m: re.Match, url: ParseResult, body: dict | None) -> Reply:
        if not m.group(2):
            return _failure(404, "NotFound", url.path)
        with self.lock:
            st = self.objects.get((m.group(1), m.group(2)))
            if st is None:
                return _rayjob_not_found(m.group(2))
            if not st.obj["metadata"].get("deletionTimestamp"):
                st.obj["metadata"]["deletionTimestamp"] = self.t0.isoformat()
                st.deleting = self.delete_lag
            return _json(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})

    # -- HTTP ----------------------------------------------------------------------------------------
    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _body(self):
                n = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(n)) if n else None

            def _answer(self, method: str, body: dict | None):
                server.requests.append((method, self.path, body))
                code, text, ctype = server.route(method, urlparse(self.path), body)
                data = text.encode()
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                self._answer("POST", self._body())

            def do_GET(self):
                self._answer("GET", None)

            def do_DELETE(self):
                self._answer("DELETE", self._body())

        return Handler
