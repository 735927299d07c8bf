"""A local stand-in for the Kubeflow Pipelines v2beta1 REST endpoints ``kfp.Client`` uses to find or
create an experiment and to list and create runs; it records every request. The real ``kfp.Client``
(and its generated ``kfp_server_api``) talks to it over HTTP."""

from __future__ import annotations

import json
import uuid
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlparse

from .httpstandin import HttpStandIn


class KfpApiStandIn(HttpStandIn):
    def __init__(self):
        self.experiments: list[dict] = []
        self.runs: list[dict] = []
        self.requests: list[tuple[str, str, dict | None]] = []
        self._serve()

    def _handler(self):
        api = self

        def matches(item: dict, flt: str | None) -> bool:
            if not flt:
                return True
            for p in json.loads(flt).get("predicates", []):
                value = p.get("string_value", p.get("stringValue"))
                if p["operation"] in ("EQUALS", 1) and item.get(p["key"]) != value:
                    return False
            return True

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code, body):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                url = urlparse(self.path)
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                api.requests.append(("GET", self.path, None))
                if url.path == "/apis/v2beta1/healthz":
                    return self._send(200, {"multi_user": False})
                if url.path == "/apis/v2beta1/experiments":
                    return self._send(200, {"experiments": [e for e in api.experiments if matches(e, q.get("filter"))],
                                            "total_size": len(api.experiments)})
                if url.path == "/apis/v2beta1/runs":
                    runs = [r for r in api.runs if r["experiment_id"] == q.get("experiment_id")
                            and matches(r, q.get("filter"))]
                    return self._send(200, {"runs": runs, "total_size": len(runs)})
                return self._send(404, {"error": url.path, "code": 5})

            def do_POST(self):
                url = urlparse(self.path)
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n)) if n else None
                api.requests.append(("POST", self.path, body))
                if url.path == "/apis/v2beta1/experiments":
                    exp = {"experiment_id": str(uuid.uuid4()), "display_name": body["display_name"]}
                    api.experiments.append(exp)
                    return self._send(200, exp)
                if url.path == "/apis/v2beta1/runs":
                    run = {"run_id": str(uuid.uuid4()), "display_name": body["display_name"],
                           "experiment_id": body["experiment_id"], "state": "PENDING"}
                    api.runs.append(run)
                    return self._send(200, run)
                return self._send(404, {"error": url.path, "code": 5})

        return Handler
