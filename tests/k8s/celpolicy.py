"""Evaluate a MutatingAdmissionPolicy's CEL on a pod with cel-python (celpy), as the API server would for a
CREATE: match conditions, then variables, then each JSONPatch mutation, applied to the pod.

Kubernetes' CEL environment has names cel-python lacks; these stand-ins give them the API server's meaning:
``Object.<field path>{...}`` object initialisers (which must be named by their field path, the check the API
server makes before it serialises a patch value), ``JSONPatch{op, path, value}`` and the Kubernetes list
library's ``indexOf``. Only the ``add`` operation is applied (the only one the chart writes), per RFC 6902."""

from __future__ import annotations

import copy
import re

import celpy
from celpy import celtypes


class _Typed(celtypes.MapType):
    """An object initialiser's result: its fields, plus the type it was built as."""

    type_name = ""


class _K8sType(celtypes.MapType):
    """``Object`` / ``JSONPatch`` and their field types: ``T.field`` selects a nested type, ``T{...}`` builds."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def __getitem__(self, key):
        return _K8sType(f"{self.path}.{key}")

    def __call__(self, fields):
        out = _Typed(fields or {})
        out.type_name = self.path
        return out


def _index_of(items, item):
    return celtypes.IntType(next((i for i, v in enumerate(items) if v == item), -1))


def to_python(value, type_name: str | None = None):
    """A CEL result as plain JSON-able Python; object initialisers must be named ``type_name`` (their path)."""
    if isinstance(value, _Typed):
        assert type_name is None or value.type_name == type_name, (value.type_name, type_name)
        return {str(k): to_python(v, f"{value.type_name}.{k}") for k, v in value.items()}
    if isinstance(value, celtypes.MapType):
        return {str(k): to_python(v) for k, v in value.items()}
    if isinstance(value, celtypes.ListType):
        return [to_python(v, type_name) for v in value]
    if isinstance(value, celtypes.BoolType):
        return bool(value)
    if isinstance(value, celtypes.IntType):
        return int(value)
    if isinstance(value, str):
        return str(value)
    raise TypeError(f"unexpected CEL value {value!r}")


def _add(doc: dict, path: str, value) -> None:
    """RFC 6902 ``add``: set an object member (replacing it), or insert into an array at an index or ``-``."""
    *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]
    target = doc
    for p in parents:
        target = target[int(p)] if isinstance(target, list) else target[p]
    if isinstance(target, list):
        index = len(target) if last == "-" else int(last)
        assert 0 <= index <= len(target), path
        target.insert(index, value)
    else:
        target[last] = value


class PolicyEvaluator:
    def __init__(self, policy: dict):
        self.spec = policy["spec"]
        self.env = celpy.Environment()
        self.functions = {"indexOf": _index_of}

    def _eval(self, expression: str, activation: dict):
        program = self.env.program(self.env.compile(expression), functions=self.functions)
        result = program.evaluate(activation)
        if isinstance(result, celpy.CELEvalError):
            raise result
        return result

    def matches(self, pod: dict) -> bool:
        act = {"object": celpy.json_to_cel(pod)}
        return all(bool(self._eval(c["expression"], act)) for c in self.spec.get("matchConditions", []))

    def patches(self, pod: dict) -> list[dict]:
        """The JSON patch operations the mutations produce for ``pod`` (values type-checked and plain)."""
        act = {"object": celpy.json_to_cel(pod), "Object": _K8sType("Object"), "JSONPatch": _K8sType("JSONPatch")}
        variables: dict = {}
        for v in self.spec.get("variables", []):
            act["variables"] = celtypes.MapType(variables)
            variables[celtypes.StringType(v["name"])] = self._eval(v["expression"], act)
        act["variables"] = celtypes.MapType(variables)
        ops = []
        for mutation in self.spec["mutations"]:
            assert mutation["patchType"] == "JSONPatch", mutation["patchType"]
            for op in self._eval(mutation["jsonPatch"]["expression"], act):
                assert isinstance(op, _Typed) and op.type_name == "JSONPatch", op
                path = str(op[celtypes.StringType("path")])
                field_type = "Object" + re.sub(r"/(\d+|-)(?=/|$)", "", path).replace("/", ".")
                ops.append({"op": str(op[celtypes.StringType("op")]), "path": path,
                            "value": to_python(op[celtypes.StringType("value")], field_type)})
        return ops

    def admit(self, pod: dict) -> dict:
        """``pod`` after this policy (unchanged when the match conditions say no)."""
        if not self.matches(pod):
            return pod
        out = copy.deepcopy(pod)
        for op in self.patches(pod):
            assert op["op"] == "add", op
            _add(out, op["path"], op["value"])
        return out
