"""A git repository as a source, read with the ``git`` CLI at ``ref`` (default ``HEAD``).

``git ls-tree -r --long <ref>`` lists blobs with their sizes; ``git cat-file --batch`` streams them;
symlinks and submodules are recorded, not followed. A URL is cloned (bare, shallow) into a temporary
directory first. A repository with no commits yields no entries.
"""

from __future__ import annotations

import logging
import os
import posixpath
import shutil
import subprocess
import tempfile
from collections.abc import Iterator

from coderforge import storage
from coderforge.config import DataSection, SourceSpec
from coderforge.data.sources.entry import Entry, SourceError, refused
from coderforge.data.sources.paths import link_escapes

log = logging.getLogger("coderforge.sources")


def _git(args: list[str], timeout: float, cwd: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true", "GIT_CONFIG_NOSYSTEM": "1"}
    return subprocess.run(["git", *args], capture_output=True, timeout=timeout, cwd=cwd, env=env)


class _CatFile:
    """One ``git cat-file --batch`` process serving blob reads in order."""

    def __init__(self, git_dir: str):
        self.proc = subprocess.Popen(["git", "--git-dir", git_dir, "cat-file", "--batch"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

    def read(self, sha: str, limit: int) -> bytes:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(sha.encode() + b"\n")
        self.proc.stdin.flush()
        header = self.proc.stdout.readline().split()
        if len(header) < 3 or header[1] == b"missing":
            raise OSError(f"git object {sha} missing")
        size = int(header[2])
        data = self.proc.stdout.read(size)
        self.proc.stdout.read(1)  # trailing newline
        return data[:limit]

    def close(self):
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def git_entries(spec: SourceSpec, data: DataSection) -> Iterator[Entry]:
    uri, timeout = spec.uri, data.git_timeout_s
    ref = spec.ref or "HEAD"
    tmp = None
    try:
        local = not uri.startswith(("http://", "https://", "ssh://", "git://", "git@"))
        if local:
            path = storage.local_path(uri)
            proc = _git(["-C", str(path), "rev-parse", "--absolute-git-dir"], timeout)
            if proc.returncode != 0:
                raise SourceError(f"source {uri}: not a git repository: {proc.stderr.decode()[-500:]}")
            git_dir = proc.stdout.decode().strip()
        else:
            tmp = tempfile.mkdtemp(prefix="cf-git-")
            args = ["clone", "--bare", "--depth", "1", "--quiet"]
            if spec.ref:
                args += ["--branch", spec.ref]
            proc = _git([*args, "--", uri, tmp + "/repo.git"], timeout)
            if proc.returncode != 0:
                raise SourceError(f"source {uri}: git clone failed: {proc.stderr.decode()[-500:]}")
            git_dir, ref = tmp + "/repo.git", "HEAD"
        repo = spec.repo_name or posixpath.basename(uri.rstrip("/")).removesuffix(".git") or "repo"
        head = _git(["--git-dir", git_dir, "rev-parse", "--verify", "--quiet", ref + "^{commit}"], timeout)
        if head.returncode != 0:
            log.warning("git source %s: ref %s has no commit (empty repository?): no files", uri, ref)
            return
        commit = head.stdout.decode().strip()
        listing = _git(["--git-dir", git_dir, "ls-tree", "-r", "-z", "--long", "--full-tree", commit],
                       timeout)
        if listing.returncode != 0:
            raise SourceError(f"source {uri}: git ls-tree failed: {listing.stderr.decode()[-500:]}")
        cat = _CatFile(git_dir)
        try:
            for raw in listing.stdout.split(b"\0"):
                if not raw:
                    continue
                info, _, rawpath = raw.partition(b"\t")
                mode, kind, sha, size = info.decode().split()
                path = rawpath.decode("utf-8", "surrogateescape")
                if spec.repos is not None and path.split("/", 1)[0] not in spec.repos and not spec.repo_name:
                    continue
                meta = {"commit": commit}
                if kind == "commit":
                    yield refused(repo, path, "submodule", f"submodule at {sha}")
                elif mode == "120000":
                    target = cat.read(sha, 4096).decode("utf-8", "replace")
                    reason = "symlink_escape" if link_escapes(path, target, False) else "link"
                    yield refused(repo, path, reason, f"symlink -> {target[:300]}")
                elif kind == "blob":
                    yield Entry(repo, path, size=int(size), meta=meta,
                                reader=lambda limit, sha=sha: cat.read(sha, limit))
        finally:
            cat.close()
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
