"""The Kubernetes API side of RayJob management: reading the submitter pod's log without repeating lines.
(The client's calls themselves run over HTTP against the API-server stand-in in tests/k8s/test_rayjob.py
and tests/k8s/test_chart.py.)"""

from __future__ import annotations

from coderforge.k8s import kuberay_api as api


def test_log_timestamps_with_variable_fraction_digits_are_ordered():
    text = ("2026-11-23T12:00:02Z a\n2026-11-23T12:00:02.000001Z b\n2026-11-23T12:00:02.5Z c\n"
            "2026-11-23T12:00:03Z d\n")
    assert api.new_log_lines(text, None) == text.splitlines()
    assert [line[-1] for line in api.new_log_lines(text, "2026-11-23T12:00:02Z")] == ["b", "c", "d"]
    assert [line[-1] for line in api.new_log_lines(text, "2026-11-23T12:00:02.4999Z")] == ["c", "d"]
    assert api.timestamp_key("2026-11-23T12:00:02.5+00:00") == api.timestamp_key("2026-11-23T12:00:02.500Z")
