"""The fresh-project install test: every package `make packages` put in dist/, installed into a
new project outside the repository the way its ecosystem installs it, then the same small
program (consumers/: Estimate, then Stream, of one file) run against one live server.

The server itself comes from dist/ too: its wheel in a new virtualenv (with --find-links dist
for the client wheel it depends on), checked (`longread --help`, `import longread_server`),
measured (packages, installed size), then given the sandbox wheel and started as the
conformance suite starts a server (tests/conformance/run.py). Prints a table: language,
install command, seconds, result; exits non-zero when a step fails or the languages disagree.

    .venv/bin/python tests/packages/run.py [--languages python,ts,go,java] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from longread_sandbox.sample import generate_report  # noqa: E402

from tests.conformance.run import Keys, Server  # noqa: E402

DIST = ROOT / "dist"
CONSUMERS = Path(__file__).resolve().parent / "consumers"
LANGUAGES = ("python", "ts", "go", "java")
GO_MODULE = "github.com/longread-dev/longread/client/go"
QUESTION = "Why was the Northfield plant delayed?"
STEP_TIMEOUT_S = 600.0
RESULT = re.compile(r"^fit=\d+ chunks=\d+ calls=\d+ answer=\d+$")


class StepFailed(Exception):
    pass


def run(cmd: Sequence[str | Path], cwd: Path, env: dict[str, str] | None = None) -> str:
    """Runs one step; its stdout, or StepFailed with the command and the end of its output."""
    try:
        proc = subprocess.run(
            [str(c) for c in cmd],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=STEP_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise StepFailed(f"{' '.join(map(str, cmd))}: timed out") from None
    if proc.returncode != 0:
        tail = (proc.stderr + proc.stdout)[-2500:]
        raise StepFailed(f"{' '.join(map(str, cmd))}: exit {proc.returncode}\n{tail}")
    return proc.stdout


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without the repository's virtualenv and the gateway's settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LONGREAD_", "PYTHON", "PIP_REQUIRE", "GO", "NODE_PATH"))
        and k != "VIRTUAL_ENV"
    }
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(str(ROOT))
    )
    env.update(extra)
    return env


def version() -> str:
    """The one version every package carries (a mismatch is a failure of its own)."""
    found = {
        "pyproject.toml": tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
            "version"
        ],
        "client/python/pyproject.toml": tomllib.loads(
            (ROOT / "client/python/pyproject.toml").read_text()
        )["project"]["version"],
        "client/ts/package.json": json.loads((ROOT / "client/ts/package.json").read_text())[
            "version"
        ],
    }
    pom = (ROOT / "client/java/pom.xml").read_text()
    m = re.search(r"<artifactId>longread-client</artifactId>\s*<version>([^<]+)</version>", pom)
    found["client/java/pom.xml"] = m.group(1) if m else "?"
    if len(set(found.values())) != 1:
        raise SystemExit(f"the packages' versions differ: {found}")
    return str(found["pyproject.toml"])


def artifact(pattern: str) -> Path:
    matches = sorted(DIST.glob(pattern))
    if len(matches) != 1:
        raise SystemExit(f"dist/{pattern}: found {len(matches)} (run `make packages`)")
    return matches[0]


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


@dataclass
class Row:
    language: str
    command: str
    seconds: float = 0.0
    result: str = ""
    ok: bool = False


@dataclass
class ServerInstall:
    venv: Path
    row: Row
    packages: int = 0
    size_bytes: int = 0


def timed(row: Row, steps: Callable[[], object]) -> None:
    start = time.monotonic()
    steps()
    row.seconds += time.monotonic() - start


def install_server(work: Path, v: str) -> ServerInstall:
    """The server wheel in a new virtualenv, as a user would install it; then the sandbox."""
    venv = work / "server-venv"
    wheel = artifact(f"longread-{v}-py3-none-any.whl")
    inst = ServerInstall(venv, Row("server (pip)", f"pip install --find-links dist {wheel.name}"))
    run([sys.executable, "-m", "venv", venv], work, clean_env())
    py = venv / "bin" / "python"
    site = Path(
        run([py, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], work).strip()
    )
    before = du(site)
    pip: list[str | Path] = [py, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    timed(inst.row, lambda: run([*pip, "--find-links", DIST, wheel], work, clean_env()))
    help_text = run([venv / "bin" / "longread", "--help"], work, clean_env())
    run([py, "-c", "import longread_server, longread.client"], work, clean_env())
    listed = json.loads(run([py, "-m", "pip", "list", "--format=json"], work, clean_env()))
    inst.packages = len([p for p in listed if p["name"].lower() not in ("pip", "setuptools")])
    inst.size_bytes = du(site) - before
    inst.row.ok = "serve" in help_text
    inst.row.result = (
        f"`longread --help` ok; {inst.packages} packages, {inst.size_bytes / 2**20:.0f} MB"
    )
    # No vendor key: the gateway serves from the sandbox, a distribution of its own.
    sandbox = artifact(f"longread_sandbox-{v}-py3-none-any.whl")
    run([*pip, "--no-index", "--find-links", DIST, sandbox], work, clean_env())
    missing_extra(venv, work)
    inst.row.result += "; without [prometheus], /metrics refused naming the extra"
    return inst


def missing_extra(venv: Path, work: Path) -> None:
    """Without the prometheus extra, asking for /metrics stops `longread serve` with exit 2
    and a line naming the extra."""
    env = clean_env(
        LONGREAD_LISTEN="127.0.0.1:0",
        LONGREAD_TELEMETRY__METRICS="true",
        LONGREAD_TELEMETRY__PROMETHEUS="true",
        LONGREAD_TELEMETRY__PROMETHEUS_PORT="0",
    )
    proc = subprocess.run(
        [venv / "bin" / "longread", "serve"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 2 or "longread[prometheus]" not in proc.stderr:
        raise StepFailed(
            f"serve without the prometheus extra: exit {proc.returncode}, {proc.stderr[-1500:]}"
        )


def python_client(work: Path, v: str, target: str, doc: Path, key: str) -> Row:
    wheel = artifact(f"longread_client-{v}-py3-none-any.whl")
    row = Row("Python", f"pip install {wheel.name}")
    proj = work / "python"
    proj.mkdir()
    shutil.copy(CONSUMERS / "python" / "main.py", proj)
    py = proj / ".venv" / "bin" / "python"

    def install() -> None:
        run([sys.executable, "-m", "venv", proj / ".venv"], proj, clean_env())
        run(
            [py, "-m", "pip", "install", "-q", "--disable-pip-version-check", wheel],
            proj,
            clean_env(),
        )

    timed(row, install)
    row.result = run([py, "main.py", target, doc, QUESTION], proj, clean_env(LONGREAD_API_KEY=key))
    listed = json.loads(run([py, "-m", "pip", "list", "--format=json"], proj, clean_env()))
    n = len([p for p in listed if p["name"].lower() not in ("pip", "setuptools")])
    row.result = f"{row.result.strip()} ({n} packages with the client)"
    return row


def ts_client(work: Path, v: str, target: str, doc: Path, key: str) -> Row:
    tarball = artifact(f"longread-client-{v}.tgz")
    row = Row("TypeScript", f"npm install {tarball.name}")
    proj = work / "ts"
    proj.mkdir()
    for name in ("main.mjs", "main.cjs", "types.mts", "types.cts", "tsconfig.json"):
        shutil.copy(CONSUMERS / "ts" / name, proj)
    npm = ["npm", "--no-audit", "--no-fund", "--loglevel=error"]

    def install() -> None:
        run([*npm, "init", "-y"], proj, clean_env())
        run([*npm, "install", tarball], proj, clean_env())

    timed(row, install)
    env = clean_env(LONGREAD_API_KEY=key)
    esm = run(["node", "main.mjs", target, doc, QUESTION], proj, env).strip()
    cjs = run(["node", "main.cjs", target, doc, QUESTION], proj, env).strip()
    if esm != cjs:
        raise StepFailed(f"import and require disagree: {esm!r} vs {cjs!r}")
    # The types each condition resolves to, as a TypeScript project would check them; the
    # compiler is the one the client is built with (its devDependency).
    typescript = json.loads((ROOT / "client/ts/package.json").read_text())["devDependencies"][
        "typescript"
    ]
    run([*npm, "install", "--save-dev", f"typescript@{typescript}"], proj, clean_env())
    run(["npx", "--no-install", "tsc", "-p", "."], proj, clean_env())
    row.result = esm + " (import and require; types of both checked)"
    return row


def go_client(work: Path, v: str, target: str, doc: Path, key: str) -> Row:
    proxy = DIST / "goproxy"
    if not (proxy / GO_MODULE / "@v" / f"v{v}.zip").exists():
        raise SystemExit("dist/goproxy has no client module: run `make packages`")
    row = Row("Go", f"go get {GO_MODULE}@v{v}")
    proj = work / "go"
    proj.mkdir()
    shutil.copy(CONSUMERS / "go" / "main.go", proj)
    gomodcache = work / "gomodcache"
    upstream = run(["go", "env", "GOPROXY"], proj).strip()
    # A module cache of its own, so the client always comes from dist/ (never a copy an
    # earlier run cached); the other modules come from the machine's module cache, which has
    # a proxy's layout, before any proxy configured.
    shared = Path(run(["go", "env", "GOMODCACHE"], proj).strip()) / "cache" / "download"
    env = clean_env(
        GOPROXY=f"file://{proxy},file://{shared},{upstream}",
        GONOSUMDB=GO_MODULE,
        GOMODCACHE=str(gomodcache),
        GOFLAGS="-modcacherw",
        GOWORK="off",
        GOTOOLCHAIN="local",
    )
    for name in ("GOCACHE", "GOPATH"):
        env[name] = run(["go", "env", name], proj).strip()

    def install() -> None:
        run(["go", "mod", "init", "example.com/consumer"], proj, env)
        run(["go", "get", f"{GO_MODULE}@v{v}"], proj, env)
        run(["go", "mod", "tidy"], proj, env)
        run(["go", "build", "-o", "consumer", "."], proj, env)

    timed(row, install)
    row.result = run(
        [proj / "consumer", target, doc, QUESTION], proj, clean_env(LONGREAD_API_KEY=key)
    )
    return row


def java_client(work: Path, v: str, target: str, doc: Path, key: str) -> Row:
    repo = DIST / "maven"
    if not (repo / "dev/longread/longread-client" / v).is_dir():
        raise SystemExit("dist/maven has no client: run `make packages`")
    row = Row("Java", "mvn package (<repository> file://.../dist/maven)")
    proj = work / "java"
    shutil.copytree(CONSUMERS / "java", proj)
    pom = proj / "pom.xml"
    pom.write_text(pom.read_text().replace("@REPOSITORY@", repo.as_uri()).replace("@VERSION@", v))
    # The local repository caches what it resolved: a copy of the client from an earlier run
    # would stand in for dist/'s.
    cached = Path.home() / ".m2" / "repository" / "dev" / "longread" / "longread-client"
    shutil.rmtree(cached, ignore_errors=True)
    cp = proj / "classpath.txt"

    def install() -> None:
        run(
            [
                "mvn",
                "-B",
                "-q",
                "package",
                "dependency:build-classpath",
                "-Dmdep.includeScope=runtime",
                f"-Dmdep.outputFile={cp}",
            ],
            proj,
            clean_env(),
        )

    timed(row, install)
    classpath = os.pathsep.join([str(proj / "target" / "classes"), cp.read_text().strip()])
    row.result = run(
        ["java", "-cp", classpath, "Main", target, doc, QUESTION],
        proj,
        clean_env(LONGREAD_API_KEY=key),
    )
    return row


INSTALLERS = {"python": python_client, "ts": ts_client, "go": go_client, "java": java_client}


def table(rows: Sequence[Row]) -> str:
    lines = ["| language | install command | seconds | result |", "| --- | --- | ---: | --- |"]
    for r in rows:
        result = r.result if r.ok else f"FAILED: {r.result.splitlines()[0] if r.result else ''}"
        lines.append(f"| {r.language} | `{r.command}` | {r.seconds:.1f} | {result} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--languages", default=",".join(LANGUAGES))
    ap.add_argument("--keep", action="store_true", help="keep the projects (printed)")
    args = ap.parse_args()
    languages = [lang for lang in args.languages.split(",") if lang]
    v = version()
    work = Path(tempfile.mkdtemp(prefix="longread-install-"))
    rows: list[Row] = []
    failed: list[str] = []
    try:
        try:
            inst = install_server(work, v)
        except StepFailed as e:
            print(f"the server from dist/ failed a check:\n{e}", file=sys.stderr)
            return 1
        rows.append(inst.row)
        doc = work / "report.md"
        doc.write_text(generate_report(12_000), encoding="utf-8")
        keys = Keys()
        server = Server(work, keys, exe=inst.venv / "bin" / "longread")
        server.start()
        try:
            for lang in languages:
                row = Row(lang, "")
                try:
                    row = INSTALLERS[lang](work, v, server.target, doc, keys.valid)
                    row.result = row.result.strip()
                    row.ok = bool(RESULT.match(row.result.split(" (")[0]))
                except StepFailed as e:
                    row.result = str(e)
                rows.append(row)
                if not row.ok:
                    failed.append(f"{lang}: {row.result}")
        finally:
            server.stop()
        results = {r.result.split(" (")[0] for r in rows[1:] if r.ok}
        if len(results) > 1:
            failed.append(f"the languages' programs disagree: {sorted(results)}")
        print(table(rows))
        for f in failed:
            print(f"\nFAILED {f}", file=sys.stderr)
        return 1 if failed else 0
    finally:
        if args.keep:
            print(f"projects kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
