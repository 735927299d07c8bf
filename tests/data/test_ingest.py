"""Ingest on real corpora and on a hostile corpus built here: nothing lost, every refusal recorded."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
import zipfile
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from coderforge.data.ingest import run_ingest
from coderforge.data.languages import CODE_LANGUAGES, language_of
from coderforge.ledger import read_ledger, read_summary
from coderforge.records import read_documents
from coderforge.tracking import NullRun
from tests.data.conftest import recipe


def _reasons(out: Path) -> Counter:
    return Counter(r["reason"].split(":")[0] for r in read_ledger(str(out)) if r["status"] != "kept")


def test_language_table_covers_the_92_languages_and_file_names():
    assert len(CODE_LANGUAGES) == 92
    assert language_of("x/Makefile") == "makefile" and language_of("Dockerfile") == "dockerfile"
    assert language_of("src/a.d.ts") == "typescript" and language_of("CMakeLists.txt") == "cmake"
    assert language_of("lib/x.pyc") is None and language_of("README") == "text"


def hostile_tree(root: Path) -> Path:
    corpus = root / "corpus"
    repo = corpus / "repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "ok.py").write_text("def f():\n    return 1\n")
    (repo / "blob.c").write_bytes(b"\x7fELF\x02\x01\x00\x00" + os.urandom(2000))
    (repo / "latin1.py").write_bytes("# caf\u00e9 cr\u00e8me br\u00fbl\u00e9e, d\u00e9j\u00e0 vu\n"
                                     "x = 'na\u00efve'\n"
                                     .encode("latin-1") * 20)
    (repo / "garbage.py").write_bytes(b"x = 1\n" + bytes([0xff, 0xfe, 0x81, 0x90, 0x9d, 0x8d]) * 50)
    with open(repo / "huge.js", "wb") as fh:  # 50 MB on a single line
        fh.write(b"var a = '" + b"x" * (50 * 1024 * 1024) + b"';")
    (repo / "escape.py").symlink_to("/etc/hostname")
    (repo / "dangling.py").symlink_to(root / "missing.py")
    (repo / "inside.py").symlink_to(repo / "pkg" / "ok.py")
    os.mkfifo(repo / "pipe.py")
    (repo / "data.unknownext").write_text("hello")
    (corpus / "empty_repo").mkdir()
    return corpus


def test_hostile_directory_corpus_loses_nothing(tmp_path):
    corpus = hostile_tree(tmp_path)
    cfg = recipe([{"uri": str(corpus), "kind": "dir", "name": "hostile"}], data={"max_file_bytes": 1_000_000})
    out = tmp_path / "out"
    res = run_ingest(cfg, str(out), NullRun())
    s = res.ledger
    assert s.inputs == 10 == s.kept + s.dropped + s.quarantined
    reasons = _reasons(out)
    assert reasons["binary"] == 1 and reasons["too_large"] == 1 and reasons["symlink_escape"] == 1
    assert reasons["unknown_language"] == 1 and reasons["not_regular_file"] == 1
    assert reasons["encoding"] == 1 and reasons["unreadable"] == 1  # garbage bytes, dangling link
    docs = {d.path: d for d in read_documents(str(out))}
    assert set(docs) == {"pkg/ok.py", "latin1.py", "inside.py"}
    assert "café" in docs["latin1.py"].content and docs["latin1.py"].meta["encoding"]
    assert docs["pkg/ok.py"].lang == "python" and docs["pkg/ok.py"].source == "hostile"
    assert read_summary(str(out))["in"] == 10


def _tar_with(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]):
    with tarfile.open(path, "w:gz") as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)


def _info(name: str, data: bytes = b"", kind=tarfile.REGTYPE,
          link: str = "") -> tuple[tarfile.TarInfo, bytes]:
    ti = tarfile.TarInfo(name)
    ti.type, ti.linkname, ti.size = kind, link, len(data) if kind == tarfile.REGTYPE else 0
    return ti, data if kind == tarfile.REGTYPE else None


def test_hostile_tar_and_zip_refusals_are_recorded(tmp_path):
    tar = tmp_path / "evil.tar.gz"
    _tar_with(tar, [
        _info("proj/good.py", b"print('hi')\n"),
        _info("../../etc/evil.py", b"x=1\n"),
        _info("/abs/evil.py", b"x=1\n"),
        _info("proj/link.py", kind=tarfile.SYMTYPE, link="../../../etc/passwd"),
        _info("proj/hard.py", kind=tarfile.LNKTYPE, link="../outside.py"),
        _info("proj/inlink.py", kind=tarfile.SYMTYPE, link="good.py"),
        _info("proj/dev.c", kind=tarfile.CHRTYPE),
    ])
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("proj/readme.md", "# hello\n")
        zf.writestr("proj/bomb.py", b"0" * (20 * 1024 * 1024))
        zf.writestr("../escape.py", "x = 1\n")
    cfg = recipe([{"uri": str(tar), "name": "tar"}, {"uri": str(bomb), "name": "zip"}])
    out = tmp_path / "out"
    s = run_ingest(cfg, str(out), NullRun()).ledger
    assert s.inputs == 10 == s.kept + s.dropped + s.quarantined
    reasons = _reasons(out)
    assert reasons["path_traversal"] == 3
    assert reasons["symlink_escape"] == 1 and reasons["hardlink_escape"] == 1 and reasons["link"] == 1
    assert reasons["not_regular_file"] == 1 and reasons["zip_bomb"] == 1
    assert sorted(d.path for d in read_documents(str(out))) == ["good.py", "readme.md"]


def test_archive_caps_and_corrupt_archive(tmp_path):
    z = tmp_path / "many.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for i in range(5):
            zf.writestr(f"r/f{i}.py", f"x = {i}\n")
    broken = tmp_path / "broken.tar.gz"
    good = tmp_path / "good.tar.gz"
    _tar_with(good, [_info(f"r/f{i}.py", b"y = 2\n" * 2000) for i in range(3)])
    broken.write_bytes(good.read_bytes()[:len(good.read_bytes()) // 2])
    cfg = recipe([{"uri": str(z), "name": "z"}, {"uri": str(broken), "kind": "archive", "name": "b"}],
                 data={"archive_max_members": 3})
    out = tmp_path / "out"
    s = run_ingest(cfg, str(out), NullRun()).ledger
    reasons = _reasons(out)
    assert reasons["archive_member_cap"] == 2
    assert reasons["unreadable"] >= 1  # the truncated tar
    assert s.inputs == s.kept + s.dropped + s.quarantined


def test_stack_layout_parquet_and_jsonl_with_malformed_rows(tmp_path):
    table = pa.table({
        "content": ["def a():\n    return 1\n", None, "int main() { return 0; }\n"],
        "max_stars_repo_path": ["a.py", "b.py", "m.c"],
        "max_stars_repo_name": ["org/one", "org/one", "org/two"],
        "lang": ["Python", "Python", "C"],
        "max_stars_count": [10, 3, 7],
        "license": ["mit", "mit", "apache-2.0"],
    })
    pq.write_table(table, tmp_path / "stack.parquet")
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 this is not parquet")
    lines = [json.dumps({"content": "x = 1\n", "path": "x.py", "repo_name": "j/r", "stars": 1}),
             "{not json", json.dumps([1, 2]), json.dumps({"content": 5, "path": "y.py"}),
             json.dumps({"content": "fn main() {}\n", "path": "src/main.rs", "repo_name": "j/r"})]
    (tmp_path / "rows.jsonl").write_text("\n".join(lines) + "\n")
    cfg = recipe([{"uri": str(tmp_path / "stack.parquet"), "name": "pq"},
                  {"uri": str(tmp_path / "bad.parquet"), "kind": "parquet", "name": "badpq"},
                  {"uri": str(tmp_path / "rows.jsonl"), "name": "jl"}])
    out = tmp_path / "out"
    s = run_ingest(cfg, str(out), NullRun()).ledger
    assert s.inputs == 9 == s.kept + s.dropped + s.quarantined
    assert s.kept == 4 and s.quarantined == 5
    docs = {(d.repo, d.path): d for d in read_documents(str(out))}
    a = docs[("org/one", "a.py")]
    assert a.lang == "python" and a.meta["max_stars_count"] == 10 and a.meta["license"] == "mit"
    assert docs[("org/two", "m.c")].lang == "c" and docs[("j/r", "src/main.rs")].lang == "rust"


def _git(*args, cwd):
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, env=env)


def test_git_repository_and_empty_repository(tmp_path):
    repo = tmp_path / "proj"
    (repo / "src").mkdir(parents=True)
    (repo / "src" / "main.go").write_text("package main\n\nfunc main() {}\n")
    (repo / "Makefile").write_text("all:\n\tgo build\n")
    (repo / "up.py").symlink_to("../../etc/passwd")
    _git("init", "-q", cwd=repo)
    _git("add", "-A", cwd=repo)
    _git("commit", "-qm", "init", cwd=repo)
    (repo / "uncommitted.py").write_text("x = 1\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    _git("init", "-q", cwd=empty)
    cfg = recipe([{"uri": str(repo), "kind": "git", "name": "g"},
                  {"uri": str(empty), "kind": "git", "name": "e"}])
    out = tmp_path / "out"
    s = run_ingest(cfg, str(out), NullRun()).ledger
    assert s.inputs == 3 and s.kept == 2 and _reasons(out)["symlink_escape"] == 1
    docs = {d.path: d for d in read_documents(str(out))}
    assert docs["Makefile"].lang == "makefile" and docs["src/main.go"].repo == "proj"
    assert len(docs["src/main.go"].meta["commit"]) == 40


def test_real_corpora_stdlib_jdk_npm_headers(tmp_path, stdlib_dir, jdk_src_zip):
    cfg = recipe([
        {"uri": str(stdlib_dir), "kind": "dir", "name": "stdlib",
         "repos": ["json", "email", "logging", "http"]},
        {"uri": str(jdk_src_zip), "name": "jdk", "repos": ["java.sql"], "max_files_per_repo": 60},
        {"uri": "/usr/lib/node_modules/npm", "kind": "dir", "name": "npm", "repos": ["lib"],
         "max_files_per_repo": 80},
        {"uri": "/usr/include", "kind": "dir", "name": "headers", "repos": ["linux"],
         "max_files_per_repo": 80},
    ], executor={"shard_size": 100})
    out = tmp_path / "out"
    res = run_ingest(cfg, str(out), NullRun())
    s = res.ledger
    assert s.inputs == s.kept + s.dropped + s.quarantined and s.kept > 250
    langs = Counter(d.lang for d in read_documents(str(out)))
    assert langs["python"] > 40 and langs["java"] == 60 and langs["javascript"] >= 60 and langs["c"] >= 60
    assert res.info["shards"] >= 3
