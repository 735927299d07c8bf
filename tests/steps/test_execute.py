"""`coderforge step`: one step with s3:// inputs and outputs (what a KubeRay RayJob runs)."""

import json
import subprocess
import sys

from coderforge import records, storage
from coderforge.ledger import read_summary
from coderforge.records import Document, document_id


def test_filter_step_reads_and_writes_s3(s3_env, tmp_path, mlflow_uri, monkeypatch):
    docs = [Document(document_id("t", "r", f"f{i}.py"), "r", f"f{i}.py", "python",
                     f"def func_{i}(value):\n    return value + {i}\n", "t")
            for i in range(5)]
    docs.append(Document(document_id("t", "r", "long.py"), "r", "long.py", "python", "y = '" + "a" * 3000 + "'\n", "t"))
    records.write_documents(f"{s3_env}/in", docs)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"run:\n  workdir: {tmp_path}\ndata:\n  sources:\n    - uri: /unused\n"
                      f"tracking:\n  uri: {mlflow_uri}\n")
    import os

    proc = subprocess.run([sys.executable, "-m", "coderforge.cli", "step", "filter", "--recipe", str(recipe),
                           "--in", f"in_dir={s3_env}/in", "--out", f"{s3_env}/out"],
                          capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["ledger"]["in"] == 6 and report["ledger"]["kept"] == 5
    assert report["ledger"]["reasons"] == {"max_line_length": 1}
    assert len(list(records.read_documents(f"{s3_env}/out"))) == 5
    assert read_summary(f"{s3_env}/out")["dropped"] == 1
    assert storage.exists(f"{s3_env}/out/step.json")


def test_step_rejects_unknown_inputs(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data:\n  sources:\n    - uri: /unused\n")
    proc = subprocess.run([sys.executable, "-m", "coderforge.cli", "step", "filter", "--recipe", str(recipe),
                           "--in", "bogus=/x", "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert proc.returncode == 2 and "in_dir" in proc.stderr
