"""The sandbox sees an allow-list, not the host (issue 12, point 7).

Files are planted on the host where a curious program would look (a second checkout beside this one, a
package index under /opt, a Kubernetes service-account token, files in /root and $HOME, /etc) and every
language the sandbox runs tries to list and read them, and this checkout, from several working
directories of the caller; nothing may come back. The programs still run normally: stdout, the standard
library, compilers, CA certificates and time zones. /etc holds only what the allow-list says."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from coderforge.sandbox import available_languages, isolation, probe, run_program
from coderforge.sandbox.allowlist import root_plan
from coderforge.sandbox.host import is_root
from coderforge.sandbox.rootfs import BROAD, RootPlan, etc_files, resolve

pytestmark = pytest.mark.skipif(not probe()[0], reason=f"namespaces unavailable here: {probe()[1]}")

REPO = Path(__file__).resolve().parents[2]
TAG = f"coderforge-planted-{uuid.uuid4().hex[:12]}"  # in the planted files' names
TOKEN = f"secret-{uuid.uuid4().hex}"  # their content
SA_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


def _plant(path: Path, made: list[Path]) -> Path | None:
    """Write TOKEN to ``path``, creating missing parents (recorded in ``made`` for removal)."""
    try:
        missing = [p for p in [*reversed(path.parents), path] if not p.exists() and not p.is_symlink()]
        path.parent.mkdir(parents=True, exist_ok=True)
        made.extend(p for p in missing if p != path)
        path.write_text(TOKEN)
        made.append(path)
        return path
    except OSError:
        return None


@pytest.fixture(scope="module")
def planted():
    """Secrets planted on the host (name -> file), removed afterwards; plus this checkout's own files."""
    made: list[Path] = []
    home = Path(os.path.expanduser("~"))
    wanted = {
        "second checkout": REPO.parent / f"{TAG}-clone" / "pyproject.toml",
        "/opt package index": Path("/opt") / f"{TAG}-index" / "simple" / "index.html",
        "/root": Path("/root") / f"{TAG}.txt",
        "$HOME": home / f".{TAG}-home.txt",
        "/etc": Path("/etc") / f"{TAG}.conf",
    }
    files = {name: _plant(path, made) for name, path in wanted.items()}
    if SA_TOKEN.exists():  # a real cluster's token: not ours to write, only to look for
        files["service-account token"] = SA_TOKEN
    else:
        files["service-account token"] = _plant(SA_TOKEN, made)
    files = {k: v for k, v in files.items() if v is not None}
    files["this checkout"] = REPO / "pyproject.toml"
    files["this checkout's virtualenv"] = Path(os.path.realpath(sys.prefix)) / "pyvenv.cfg"
    assert len(files) >= 4, files
    yield files
    for p in reversed(made):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def _targets(files: dict[str, Path]) -> list[str]:
    """Every planted file and the directory holding it, as the programs try them."""
    out = []
    for f in files.values():
        out += [str(f.parent), str(f)]
    out += ["/work", "/opt", "/root", "/home", "/var/run/secrets", "/run/secrets", "/sys", str(REPO)]
    return list(dict.fromkeys(out))


def _program(lang: str, targets: list[str]) -> str:
    """A program in ``lang`` that, for each target, prints ``LIST path entries`` or ``READ path text`` when it
    succeeds (``DENIED path`` otherwise), then ``ROOT`` and the entries of / and /etc."""
    paths = json.dumps(targets + ["/", "/etc"])
    if lang == "python":
        return f"""
import os
for p in {paths}:
    try:
        print("LIST", p, sorted(os.listdir(p)))
    except OSError:
        try:
            print("READ", p, open(p).read())
        except OSError:
            print("DENIED", p)
"""
    if lang == "javascript":
        return f"""
const fs = require('fs');
for (const p of {paths}) {{
  try {{ console.log('LIST', p, JSON.stringify(fs.readdirSync(p).sort())); continue; }} catch (e) {{}}
  try {{ console.log('READ', p, fs.readFileSync(p, 'utf8')); }} catch (e) {{ console.log('DENIED', p); }}
}}
"""
    if lang == "java":
        items = ", ".join(json.dumps(p) for p in json.loads(paths))
        return f"""
import java.nio.file.*;
import java.util.*;
public class Main {{
  public static void main(String[] a) {{
    for (String p : new String[]{{{items}}}) {{
      try {{
        List<String> names = new ArrayList<>();
        try (var s = Files.list(Paths.get(p))) {{ s.forEach(x -> names.add(x.getFileName().toString())); }}
        Collections.sort(names);
        System.out.println("LIST " + p + " " + names);
      }} catch (Exception e) {{
        try {{ System.out.println("READ " + p + " " + Files.readString(Paths.get(p))); }}
        catch (Exception e2) {{ System.out.println("DENIED " + p); }}
      }}
    }}
  }}
}}
"""
    if lang == "cpp":
        items = ", ".join(json.dumps(p) for p in json.loads(paths))
        return f"""
#include <dirent.h>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>
#include <string>
int main() {{
  for (const char* p : {{{items}}}) {{
    if (DIR* d = opendir(p)) {{
      std::set<std::string> names;
      while (dirent* e = readdir(d)) {{ std::string n = e->d_name; if (n != "." && n != "..") names.insert(n); }}
      closedir(d);
      std::cout << "LIST " << p << " [";
      for (auto& n : names) std::cout << "'" << n << "', ";
      std::cout << "]" << std::endl;
      continue;
    }}
    std::ifstream f(p);
    if (f) {{ std::stringstream ss; ss << f.rdbuf(); std::cout << "READ " << p << " " << ss.str() << std::endl; }}
    else std::cout << "DENIED " << p << std::endl;
  }}
}}
"""
    raise ValueError(lang)


def _lines(stdout: str) -> dict[str, str]:
    """path -> what the program got (``DENIED``, ``LIST [...]``, ``READ ...``)."""
    out = {}
    for line in stdout.splitlines():
        kind, _, rest = line.partition(" ")
        path, _, what = rest.partition(" ")
        if kind in ("LIST", "READ", "DENIED"):
            out[path] = f"{kind} {what}".strip()
    return out


def _names(listing: str) -> set[str]:
    """The entries of a ``LIST [...]`` line, whichever language printed it."""
    inner = listing[len("LIST "):].strip().strip("[]")
    return {n.strip().strip("'\"") for n in inner.split(",") if n.strip()}


def _allowed_top() -> set[str]:
    """The top-level names the root may hold: the allow-list's own, the run's mounts."""
    tree = root_plan().config(())["tree"]
    return {e[1].split("/")[1] for e in tree} | {"proc", "tmp", "dev", "etc"}


def _allowed_etc() -> set[str]:
    tree = root_plan().config(())["tree"]
    names = {e[1].split("/")[2] for e in tree if e[1].startswith("/etc/")}
    return names | {p.split("/")[2] for p in etc_files()}


LANGS = ("python", "javascript", "java", "cpp")


@pytest.mark.parametrize("cwd", ["checkout", "/", "/tmp"])
def test_no_language_sees_the_host(planted, cwd, monkeypatch):
    """Every language, whatever the caller's working directory: the planted files, their directories,
    this checkout, homes, /opt, /work and mounted secrets are neither listable nor readable."""
    monkeypatch.chdir(REPO if cwd == "checkout" else cwd)
    langs = available_languages()
    assert "python" in langs
    targets = _targets(planted)
    for lang in LANGS:
        if lang not in langs:
            continue
        v = run_program(_program(lang, targets), lang=lang, timeout_s=30, memory_mb=1024)
        assert v.verdict == "passed", (lang, v)
        assert TOKEN not in v.stdout and TOKEN not in v.stderr, (lang, v.stdout)
        got = _lines(v.stdout)
        assert set(got) == set(targets) | {"/", "/etc"}, (lang, v.stdout)
        leaked = {p: what for p, what in got.items() if p not in ("/", "/etc") and what != "DENIED"}
        assert leaked == {}, (lang, leaked)
        assert TAG not in got["/"] + got["/etc"]
        top = _names(got["/"])
        assert top <= _allowed_top(), (lang, top - _allowed_top())
        assert not top & {"work", "opt", "home", "srv", "mnt", "media", "sys", "run", "var"}, (lang, top)
        etc = _names(got["/etc"])
        assert etc == _allowed_etc(), (lang, etc ^ _allowed_etc())


def test_etc_holds_only_the_allow_list(planted):
    """/etc: the loader's, time-zone and CA files, the JDK's configuration, and a generated passwd/group/
    hosts/nsswitch.conf naming only the run itself; no host configuration (shadow, resolv.conf, pip.conf,
    hostname, apt ...), no private TLS keys."""
    code = """
import json, os
print(json.dumps({"etc": sorted(os.listdir("/etc")), "ssl": sorted(os.listdir("/etc/ssl")),
                  "passwd": open("/etc/passwd").read(), "group": open("/etc/group").read(), "uid": os.getuid()}))
"""
    v = run_program(code)
    assert v.verdict == "passed", v
    out = json.loads(v.stdout)
    assert set(out["etc"]) == _allowed_etc()
    host_etc = set(os.listdir("/etc"))
    assert len(out["etc"]) < len(host_etc) / 3
    for private in ("shadow", "gshadow", "resolv.conf", "hostname", "pip.conf", "apt", "environment", "sudoers",
                    planted["/etc"].name if "/etc" in planted else "shadow"):
        assert private not in out["etc"], private
    assert "private" not in out["ssl"] and "certs" in out["ssl"]
    users = [line.split(":")[0] for line in out["passwd"].splitlines()]
    assert users == ["root", "nobody"] and [g.split(":")[0] for g in out["group"].splitlines()] == ["root", "nogroup"]
    assert (f":{out['uid']}:" in out["passwd"]) == (out["uid"] == 0)  # a throw-away uid has no name, as on the host


def test_python_runs_normally_with_certificates_and_time_zones():
    code = """
import collections, datetime, decimal, fractions, hashlib, heapq, itertools, json, math, os, re, site, sqlite3
import ssl, statistics, string, subprocess, sys, zoneinfo
ctx = ssl.create_default_context()
print("ca", ctx.cert_store_stats()["x509_ca"] > 0)
print("bundle", "BEGIN CERTIFICATE" in open("/etc/ssl/certs/ca-certificates.crt").read())
paris = datetime.datetime(2024, 7, 1, 12, tzinfo=zoneinfo.ZoneInfo("Europe/Paris"))
print("tz", paris.utcoffset().total_seconds() / 3600)
print("sqlite", sqlite3.connect(":memory:").execute("select 6*7").fetchone()[0])
print("sh", subprocess.run("echo $((6*7))", shell=True, capture_output=True, text=True).stdout.strip())
print("child", subprocess.run([sys.executable, "-c", "print(42)"], capture_output=True, text=True).stdout.strip())
print("site", [p for p in site.getsitepackages() if os.path.isdir(p) and os.listdir(p)])
"""
    v = run_program(code, timeout_s=20)
    assert v.verdict == "passed", v
    assert v.stdout.splitlines() == ["ca True", "bundle True", "tz 2.0", "sqlite 42", "sh 42", "child 42", "site []"]


def test_compiled_and_node_programs_run_with_certificates_and_time_zones():
    langs = available_languages()
    progs = {
        "cpp": """
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>
int main() {
  std::vector<int> v{1, 2, 3};
  std::ifstream ca("/etc/ssl/certs/ca-certificates.crt");
  std::string first; std::getline(ca, first);
  setenv("TZ", "Europe/Paris", 1); tzset();
  std::time_t t = 1719835200; std::tm* tm = std::localtime(&t);
  std::cout << v.size() * 14 << " " << first << " " << tm->tm_hour << " " << tm->tm_zone << std::endl;
}
""",
        "java": """
import java.security.KeyStore;
import java.time.*;
import javax.net.ssl.*;
public class Main {
  public static void main(String[] a) throws Exception {
    TrustManagerFactory f = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
    f.init((KeyStore) null);
    int n = ((X509TrustManager) f.getTrustManagers()[0]).getAcceptedIssuers().length;
    ZonedDateTime z = Instant.ofEpochSecond(1719835200L).atZone(ZoneId.of("Europe/Paris"));
    System.out.println(42 + " " + (n > 0) + " " + z.getHour());
  }
}
""",
        "javascript": """
const fs = require('fs'), tls = require('tls');
const hour = new Intl.DateTimeFormat('en-GB', {timeZone: 'Europe/Paris', hour: 'numeric'})
  .format(new Date(1719835200000));
console.log(42, fs.readFileSync('/etc/ssl/certs/ca-certificates.crt', 'utf8').includes('BEGIN CERTIFICATE'),
            tls.rootCertificates.length > 0, Number(hour));
""",
    }
    expected = {"cpp": "42 -----BEGIN CERTIFICATE----- 14 CEST", "java": "42 true 14",
                "javascript": "42 true true 14"}
    for lang, code in progs.items():
        if lang not in langs:
            continue
        v = run_program(code, lang=lang, timeout_s=30, memory_mb=1024)
        assert v.verdict == "passed", (lang, v)
        assert v.stdout.strip() == expected[lang], (lang, v.stdout)


def test_root_is_read_only_and_only_scratch_is_writable():
    code = """
import os
for p in ["/usr/lib/x86_64-linux-gnu/pwned", "/etc/pwned", "/pwned", "/usr/bin/pwned", "/dev/pwned"]:
    try:
        open(p, "w")
        print("WROTE", p)
    except OSError as exc:
        print("blocked", p, exc.errno)
open("/tmp/ok", "w").write("fine")
open("/dev/null", "w").write("discarded")
print(open("/dev/urandom", "rb").read(4) != b"", os.listdir("/dev") and sorted(os.listdir("/dev")))
"""
    v = run_program(code)
    assert v.verdict == "passed", v
    assert "WROTE" not in v.stdout
    assert v.stdout.splitlines()[-1] == ("True ['fd', 'full', 'null', 'random', 'shm', 'stderr', 'stdin', "
                                         "'stdout', 'urandom', 'zero']")


@pytest.mark.parametrize("compat", [False, True], ids=["pivot_root", "chroot"])
@pytest.mark.parametrize("zygote", [True, False], ids=["zygote", "fresh-init"])
def test_every_way_into_the_root_shows_the_same_allow_list(planted, monkeypatch, compat, zygote):
    """The zygote builds the root once for its jobs, a fresh init for its one job; where pivot_root is
    refused the init chroots into the same root, and without mount_setattr it remounts each mount
    read-only: same view, same programs, same read-only root, every way."""
    if compat:
        monkeypatch.setenv(isolation.COMPAT_ENV, "1")
    if not zygote:
        monkeypatch.setenv("CODERFORGE_SANDBOX_ZYGOTE", "0")
    targets = _targets(planted)
    for lang in ("python", "cpp"):
        if lang not in available_languages():
            continue
        v = run_program(_program(lang, targets), lang=lang, timeout_s=30)
        assert v.verdict == "passed" and TOKEN not in v.stdout, (lang, v)
        got = _lines(v.stdout)
        assert {p for p, what in got.items() if what != "DENIED"} == {"/", "/etc"}, (lang, got)
        assert "'work'" not in got["/"] and "'proc'" in got["/"]
    v = run_program("import os\nprint(os.getcwd(), sorted(os.listdir('.')))")
    assert v.stdout.strip() == "/tmp ['prog.py']", v
    test_root_is_read_only_and_only_scratch_is_writable()


def _inside_any(path: str, tops: list[str]) -> bool:
    return any(path == t or path.startswith(t.rstrip("/") + "/") for t in tops)


def _pyenv_python() -> str | None:
    for cand in sorted(Path(os.path.expanduser("~/.pyenv/versions")).glob("3.1*/bin/python3"), reverse=True):
        if os.access(cand, os.X_OK):
            return str(cand)
    return None


def test_a_pyenv_python_brings_its_prefix_not_its_home(planted, monkeypatch):
    """A Python under /root/.pyenv: only that version's prefix is mounted (its site-packages covered);
    /root holds nothing else, the planted files stay invisible."""
    py = _pyenv_python()
    if py is None or not py.startswith("/root/"):
        pytest.skip("no pyenv Python under /root here")
    monkeypatch.setenv("CODERFORGE_SANDBOX_PYTHON", py)
    prefix = str(Path(os.path.realpath(py)).parents[1])
    code = f"""
import json, os, sys, sysconfig
seen = {{}}
for p in ["/root", "/root/.pyenv", "/root/.pyenv/versions", {str(planted.get('/root', '/root/x'))!r}]:
    try:
        seen[p] = sorted(os.listdir(p))
    except OSError as exc:
        seen[p] = type(exc).__name__
print(json.dumps({{"exe": sys.executable, "prefix": sys.prefix, "seen": seen, "json": json.dumps([1]),
                  "site": os.listdir(sysconfig.get_path("purelib"))}}))
"""
    try:
        v = run_program(code)
        report = root_plan().report()
    finally:
        monkeypatch.delenv("CODERFORGE_SANDBOX_PYTHON")
    assert v.verdict == "passed", v
    out = json.loads(v.stdout)
    assert out["exe"] == py and out["prefix"] == prefix and out["site"] == []
    parts = Path(prefix).relative_to("/root").parts
    assert out["seen"]["/root"] == [parts[0]]
    assert out["seen"]["/root/.pyenv"] == [parts[1]] and out["seen"]["/root/.pyenv/versions"] == [parts[2]]
    assert list(out["seen"].values())[-1] == "FileNotFoundError"
    assert prefix in report["read_only"] and not [p for p in report["read_only"] if _inside_any(p, ["/root"])
                                                   and not _inside_any(p, [prefix])]
    assert run_program("print('back')").stdout == "back\n"  # the system Python again (its own zygote)


def test_check_reports_the_allow_list():
    from typer.testing import CliRunner

    from coderforge.sandbox.cli import app

    res = CliRunner().invoke(app, ["check"])
    out = json.loads(res.output)
    allow = out["allow_list"]
    assert res.exit_code == 0 and set(allow) >= {"read_only", "symlinks", "devices", "generated", "writable"}
    paths = list(allow["read_only"])
    assert paths and all(p not in BROAD for p in paths)
    private = [str(REPO), os.path.realpath(sys.prefix), "/opt/pypi", "/opt/wheels", "/work", "/root", "/home",
               "/var/run/secrets", "/run/secrets", "/sys"]
    assert [p for p in paths if _inside_any(p, private)] == []
    assert [p for p in paths if any(_inside_any(q, [p]) for q in private)] == []  # nor a parent of them
    assert any("python" in why for why in allow["read_only"].values())
    assert "/etc/passwd" in allow["generated"]


def test_derivation_refuses_private_and_top_level_paths(tmp_path):
    """Whatever a toolchain points at: never a top-level directory, this checkout, a home itself or a
    secrets mount; links on the way are recorded; private paths inside allowed ones get covered."""
    plan = RootPlan()
    assert plan.add("/usr", "x") is None and "/usr" in plan.refused
    assert plan.add(str(REPO / "coderforge"), "x") is None
    assert plan.add("/root", "x") is None
    assert plan.add(os.path.dirname(str(REPO)), "x") is None  # the folder holding this checkout
    assert plan.add("/var/run/secrets", "x") is None and plan.binds == {}
    os.symlink("target", tmp_path / "link")
    (tmp_path / "target").mkdir()
    links: dict[str, str] = {}
    assert resolve(str(tmp_path / "link" / "x"), links) == str(tmp_path / "target" / "x")
    assert links == {str(tmp_path / "link"): "target"}
    site = Path(tempfile.mkdtemp(prefix="coderforge-lib-", dir="/usr/local/lib" if is_root() else None))
    try:
        (site / "site-packages").mkdir()
        plan.add(str(site), "x")
        plan.hide.add(str(site / "site-packages"))
        cfg = plan.config(("/var/run/secrets", str(REPO)))
        assert cfg["hide"] == [str(site / "site-packages")]
        assert ["bind", str(site)] in cfg["tree"]
    finally:
        shutil.rmtree(site, ignore_errors=True)


def test_rootless_mode_sees_the_same_allow_list(planted):
    """As an ordinary user (user namespaces instead of a throw-away uid), every language and every way into
    the root (zygote, fresh init, chroot): same root, planted files absent."""
    if not is_root() or not Path("/usr/bin/python3").exists():
        pytest.skip("needs root to switch to an ordinary user, and a system Python")
    tmp = Path(tempfile.mkdtemp(prefix="coderforge-rootless-"))
    script = tmp / "rootless.py"
    programs = {lang: _program(lang, _targets(planted)) for lang in LANGS if lang in available_languages()}
    script.write_text(f"""
import json, os, sys
sys.path.insert(0, {str(REPO)!r})
from coderforge.sandbox import run_program
out = {{}}
for lang, code in {programs!r}.items():
    v = run_program(code, lang=lang, timeout_s=30, memory_mb=1024)
    out[lang] = [v.verdict, v.stdout, v.stderr]
for way, env in (("fresh-init", {{"CODERFORGE_SANDBOX_ZYGOTE": "0"}}), ("chroot", {{"{isolation.COMPAT_ENV}": "1"}})):
    os.environ.update(env)
    v = run_program({programs["python"]!r}, timeout_s=30)
    out[way] = [v.verdict, v.stdout, v.stderr]
print(json.dumps(out))
""")
    os.chmod(tmp, 0o755)
    os.chmod(script, 0o644)
    try:
        res = subprocess.run(["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups", "/usr/bin/python3",
                              str(script)], capture_output=True, text=True, timeout=300,
                             env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if res.returncode != 0 and "Permission denied" in res.stderr:
        pytest.skip(f"uid 1000 cannot read the checkout here: {res.stderr[-200:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert set(out) == set(programs) | {"fresh-init", "chroot"}
    for way, (verdict, stdout, stderr) in out.items():
        assert verdict == "passed", (way, stderr)
        assert TOKEN not in stdout and TAG not in stdout.split("LIST /etc")[-1].split("\n")[0]
        got = _lines(stdout)
        assert {p for p, what in got.items() if what != "DENIED"} == {"/", "/etc"}, (way, got)
        assert _names(got["/"]) <= _allowed_top() and _names(got["/etc"]) == _allowed_etc(), way


def test_a_distributions_node_brings_the_data_directories_it_loads_builtins_from(tmp_path, monkeypatch):
    """Debian's `nodejs` (in the images) loads externalized built-ins (cjs-module-lexer ...) from
    /usr/share/nodejs and aborts without them: a node installed in a system prefix gets the directories its
    build names (process.config's node_prefix + node_relative_path) that exist, and nothing else."""
    from coderforge.sandbox import allowlist

    prefix = tmp_path / "usr"
    (prefix / "share" / "nodejs" / "cjs-module-lexer").mkdir(parents=True)
    (tmp_path / "bin").mkdir()
    node = tmp_path / "bin" / "node"  # answers the derivation's question as Debian's node 18 does
    node.write_text(f"""#!/bin/sh
echo '["{prefix}","lib/x86_64-linux-gnu/nodejs:share/nodejs"]'
""")
    node.chmod(0o755)
    monkeypatch.setattr(allowlist, "BROAD", {*allowlist.BROAD, str(tmp_path)})
    plan = RootPlan()
    allowlist._node(plan, str(node))
    assert str(prefix / "share" / "nodejs") in plan.binds  # lib/.../nodejs does not exist: not added
    assert not [p for p in plan.binds if p.endswith("lib/x86_64-linux-gnu/nodejs")]
    assert plan.binds[str(prefix / "share" / "nodejs")] == {"javascript"}

