"""Runs the Dockerfile's stages without a container runtime, for machines that have none or cannot
pull the base image: the build context as .dockerignore leaves it, then every instruction of every
stage in a directory of its own standing for the stage's root filesystem, with a virtualenv of this
machine's Python standing for the base image's (the same minor version is required). RUN lines are
the Dockerfile's own, run by /bin/sh with the stage's ARGs and ENVs, their absolute paths moved
under the stage's directory; the ones that change the system's users (groupadd, useradd) are
reported and skipped. Then the runtime stage's ENTRYPOINT is run as the image would run it: its
version, `health --help`, and a gateway started, asked for its health and stopped with SIGTERM,
on a read-only root filesystem but for a temporary directory (as the Helm chart runs it) where
this machine allows a mount namespace.

It reports the context's size before and after .dockerignore and what the runtime stage installed.
What it cannot check: the base image itself (its Python patch release, its system libraries),
the layers, the user and the labels as an image builder writes them.

    python deploy/image/check_build.py [--build-arg NAME=VALUE]... [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Absolute paths in the Dockerfile that name the base image's own system, left as they are;
# every other absolute path is the stage's and is moved under its directory.
SYSTEM_DIRS = ("usr", "bin", "sbin", "lib", "lib64", "etc", "dev", "proc", "sys", "var", "run")
_SYSTEM = "|".join(SYSTEM_DIRS)
ABS_PATH = re.compile(rf"(?<![^\s=:'\"(])/(?!(?:{_SYSTEM})(?:/|\b))(?=[\w.])")
VAR = re.compile(r"\$(?:\{(\w+)\}|(\w+))")
# The base image's PATH (python:3.11-slim's), for ENV lines that extend it.
BASE_PATH = "/usr/local/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Instructions that change the image's system users: root on the image, not here.
SYSTEM_COMMANDS = ("groupadd", "useradd", "adduser", "apt-get", "chown")
OCI_LABELS = (
    "title",
    "description",
    "version",
    "revision",
    "created",
    "source",
    "licenses",
    "base.name",
    "base.digest",
)


# ---- .dockerignore, as the builders' pattern matcher reads it ----


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[" and "]" in pattern[i:]:
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def read_dockerignore(path: Path) -> list[tuple[bool, re.Pattern[str]]]:
    """(is an exception, pattern) per line; a later line wins over an earlier one."""
    rules = []
    for line in path.read_text().splitlines() if path.exists() else []:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keep = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        rules.append((keep, _pattern_regex(pattern)))
    return rules


def ignored(rel: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """A pattern matches a path or any of its parent directories."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    verdict = False
    for keep, rx in rules:
        if any(rx.match(p) for p in prefixes):
            verdict = not keep
    return verdict


@dataclass
class Context:
    files: list[str]
    size: int
    all_files: int
    all_size: int


def build_context(src: Path, dest: Path) -> Context:
    rules = read_dockerignore(src / ".dockerignore")
    files, size, all_files, all_size = [], 0, 0, 0
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.is_symlink() or not path.is_file():
                continue
            n = path.stat().st_size
            all_files, all_size = all_files + 1, all_size + n
            rel = path.relative_to(src).as_posix()
            # The builder always reads these two, whatever the file says.
            if rel in ("Dockerfile", ".dockerignore") or not ignored(rel, rules):
                files.append(rel)
                size += n
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, dest / rel)
    return Context(files, size, all_files, all_size)


# ---- the Dockerfile ----


@dataclass
class Instruction:
    op: str
    args: str
    line: int


def parse_dockerfile(text: str) -> list[Instruction]:
    out, buf, start = [], "", 0
    for n, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not buf):
            continue  # comments go, inside a continued instruction too
        if not buf:
            start = n
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        op, _, args = buf.strip().partition(" ")
        out.append(Instruction(op.upper(), args.strip(), start))
        buf = ""
    return out


def substitute(text: str, env: dict[str, str]) -> str:
    return VAR.sub(lambda m: env.get(m.group(1) or m.group(2), ""), text)


@dataclass
class Stage:
    name: str
    root: Path
    base_python: Path
    env: dict[str, str] = field(default_factory=dict)  # the stage's ARGs and ENVs
    image_env: dict[str, str] = field(default_factory=dict)  # ENV only: what the image keeps
    workdir: str = "/"
    labels: dict[str, str] = field(default_factory=dict)
    entrypoint: list[str] = field(default_factory=list)
    user: str = ""
    skipped: list[str] = field(default_factory=list)

    def path(self, p: str) -> Path:
        p = p if p.startswith("/") else f"{self.workdir.rstrip('/')}/{p}"
        return self.root / p.lstrip("/")

    def move(self, text: str) -> str:
        """The text's absolute paths, moved under the stage's directory."""
        return ABS_PATH.sub(str(self.root) + "/", text)

    def process_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.env)
        # The base image's python and pip come first, as in the image.
        env["PATH"] = f"{self.base_python}/bin:" + self.env.get("PATH", os.environ["PATH"])
        env.pop("VIRTUAL_ENV", None)
        env.pop("PYTHONHOME", None)
        # pip's progress and its own version warnings stay out of the report.
        env.update(PIP_QUIET="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
        return env


def make_base(where: Path) -> Path:
    """The base image's Python: a virtualenv of this machine's, which must be 3.11 as the tag."""
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True)
    return where


def run_stages(
    instructions: list[Instruction], context: Path, work: Path, build_args: dict[str, str]
) -> dict[str, Stage]:
    global_args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    stage: Stage | None = None
    for ins in instructions:
        if stage is None and ins.op == "ARG":
            name, _, default = ins.args.partition("=")
            global_args[name] = build_args.get(name, default.strip('"'))
            continue
        if ins.op == "FROM":
            words = substitute(ins.args, global_args).split()
            name = words[2] if len(words) > 2 and words[1].upper() == "AS" else str(len(stages))
            root = work / f"stage-{name}"
            root.mkdir(parents=True)
            base = make_base(work / f"base-{name}")
            stage = Stage(name, root, base, env={"PATH": f"{base}/bin:{BASE_PATH}"})
            stages[name] = stage
            print(f"== stage {name} (FROM {words[0]}: this machine's Python in a virtualenv)")
            continue
        if stage is None:
            raise SystemExit(f"Dockerfile line {ins.line}: {ins.op} before FROM")
        run_instruction(stage, ins, context, stages, global_args, build_args)
    return stages


def run_instruction(
    stage: Stage,
    ins: Instruction,
    context: Path,
    stages: dict[str, Stage],
    global_args: dict[str, str],
    build_args: dict[str, str],
) -> None:
    op, args = ins.op, ins.args
    if op == "ARG":
        name, eq, default = args.partition("=")
        value = build_args.get(name, default.strip('"') if eq else global_args.get(name, ""))
        stage.env[name] = value
    elif op == "ENV":
        for pair in shlex.split(stage.move(args)):
            name, _, value = pair.partition("=")
            value = substitute(value, stage.env)
            stage.env[name] = stage.image_env[name] = value
    elif op == "WORKDIR":
        stage.workdir = substitute(args, stage.env)
        stage.path(".").mkdir(parents=True, exist_ok=True)
    elif op == "COPY":
        words = shlex.split(substitute(args, stage.env))
        source_root = context
        for flag in [w for w in words if w.startswith("--")]:
            if flag.startswith("--from="):
                source_root = stages[flag.split("=", 1)[1]].root
            words.remove(flag)
        *sources, dest = words
        for s in sources:
            copy(source_root / s.lstrip("/"), stage.path(dest), dest.endswith("/"))
    elif op == "RUN":
        first = args.split()[0]
        if first in SYSTEM_COMMANDS:
            stage.skipped.append(f"line {ins.line}: {args[:70]}...")
            print(f"-- skipped (changes the image's system): {args[:70]}...")
            return
        # The pip cache is this machine's to keep; the image keeps none (its --no-cache-dir).
        command = stage.move(args).replace("--no-cache-dir ", "")
        began = time.monotonic()
        done = subprocess.run(
            ["/bin/sh", "-c", command],
            cwd=stage.path("."),
            env=stage.process_env(),
            capture_output=True,
            text=True,
        )
        took = time.monotonic() - began
        print(f"-- RUN {args[:80]}{'...' if len(args) > 80 else ''} ({took:.1f} s)", flush=True)
        if done.returncode != 0:
            print(done.stdout + done.stderr, file=sys.stderr)
            raise SystemExit(f"Dockerfile line {ins.line}: exit {done.returncode}")
    elif op == "LABEL":
        for pair in shlex.split(args):
            name, _, value = pair.partition("=")
            stage.labels[name] = substitute(value, stage.env)
    elif op == "ENTRYPOINT":
        stage.entrypoint = json.loads(args)
    elif op == "USER":
        stage.user = substitute(args, stage.env)
    elif op in ("EXPOSE", "HEALTHCHECK", "CMD"):
        pass  # nothing to run; HEALTHCHECK's command is the smoke test's health check below
    else:
        raise SystemExit(f"Dockerfile line {ins.line}: {op} is not handled by this check")


def copy(src: Path, dest: Path, into_dir: bool) -> None:
    if src.is_dir():
        shutil.copytree(src, dest, dirs_exist_ok=True)
    elif src.exists():
        target = dest / src.name if into_dir or dest.is_dir() else dest
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
    else:
        raise SystemExit(f"COPY: {src} is not in the build context (see .dockerignore)")


# ---- the image as it would run ----


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def smoke(stage: Stage, version: str) -> None:
    env = dict(os.environ)
    for name in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"):
        env.pop(name, None)
    env.update(stage.image_env)
    program = stage.entrypoint[0]

    def run(*args: str) -> str:
        out = subprocess.run(
            [program, *args], env=env, capture_output=True, text=True, check=True, timeout=60
        )
        return out.stdout.strip()

    got = run("--version")
    assert got == f"longread {version}", f"--version says {got!r}, pyproject.toml {version}"
    print(f"-- {program} --version: {got}")
    run("health", "--help")
    print(f"-- {program} health --help: ok")
    # A gateway from the installed image, with a vendor key (never called) so it has an upstream.
    port = free_port()
    serve_env = env | {
        "LONGREAD_LISTEN": f"127.0.0.1:{port}",
        "OPENAI_API_KEY": "sk-image-check",
        "LONGREAD_TELEMETRY__METRICS": "true",
        "LONGREAD_TELEMETRY__PROMETHEUS": "true",
        "LONGREAD_TELEMETRY__PROMETHEUS_HOST": "127.0.0.1",
        "LONGREAD_TELEMETRY__PROMETHEUS_PORT": str(free_port()),
        "HOME": str(stage.path("/app")),  # the image user's home, not writable
    }
    with tempfile.TemporaryDirectory() as writable:
        # The only writable place, as in the Helm chart's pods: an emptyDir at /tmp.
        serve_env["TMPDIR"] = writable
        command = read_only_root(writable) + stage.entrypoint
        log = Path(writable) / "serve.log"  # a file: a pipe nobody reads could fill and block
        with log.open("w") as out:
            proc = subprocess.Popen(
                command, env=serve_env, cwd=stage.path("/app"), stdout=out, stderr=out
            )
        try:
            deadline = time.monotonic() + 60
            while True:
                health = subprocess.run(
                    [program, "health", "--target", f"127.0.0.1:{port}", "--timeout", "2"],
                    env=env,
                    capture_output=True,
                    text=True,
                )
                if health.returncode == 0:
                    break
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the gateway did not become healthy: {log.read_text()}")
                time.sleep(0.5)
            where = "a read-only root filesystem" if command != stage.entrypoint else "a root"
            print(f"-- {' '.join(stage.entrypoint)} on {where}: health {health.stdout.strip()}")
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=60)
        assert code == 0, f"the gateway exited {code} after SIGTERM: {log.read_text()}"
        print("-- SIGTERM: drained and exited 0")
        wrote = [p for p in Path(writable).iterdir() if p != log]
        size = sum(du(p)[1] if p.is_dir() else p.stat().st_size for p in wrote)
        names = ", ".join(sorted(p.name for p in wrote)) or "nothing"
        print(f"-- written to its /tmp (the chart's emptyDir): {names}, {mib(size)}")


def read_only_root(writable: str) -> list[str]:
    """A prefix that runs a command with the whole filesystem read-only but ``writable``, in a
    mount namespace of its own (as root, where namespaces are allowed); [] where that cannot be
    had, and the run is then on a writable root."""
    prefix = [
        "unshare",
        "--mount",
        "sh",
        "-c",
        'mount --make-rprivate / && mount --bind "$0" "$0" && mount -o remount,bind,ro / '
        '&& exec "$@"',
        writable,
    ]
    try:
        # access(2) says EROFS for / inside, even to root: the remount took.
        probe = subprocess.run(
            [*prefix, "sh", "-c", "test ! -w /"], capture_output=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    if probe.returncode != 0:
        print("-- no mount namespace here: the gateway runs on a writable root")
        return []
    return prefix


def du(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file() and not p.is_symlink()]
    return len(files), sum(p.stat().st_size for p in files)


def mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build-arg", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--keep", type=Path, help="build here and keep it (default: a temp dir)")
    opts = parser.parse_args()
    if sys.version_info[:2] != (3, 11):
        raise SystemExit("the base image is Python 3.11: run this with a Python 3.11")
    build_args = dict(a.split("=", 1) for a in opts.build_arg)
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    started = time.monotonic()
    work = opts.keep or Path(tempfile.mkdtemp(prefix="longread-image-"))
    try:
        context = work / "context"
        ctx = build_context(ROOT, context)
        print(
            f"build context: {len(ctx.files)} files, {mib(ctx.size)} "
            f"(the directory: {ctx.all_files} files, {mib(ctx.all_size)}; .dockerignore "
            f"leaves out {100 * (1 - ctx.size / max(ctx.all_size, 1)):.1f} %)"
        )
        instructions = parse_dockerfile((context / "Dockerfile").read_text())
        stages = run_stages(instructions, context, work, build_args)
        final = list(stages.values())[-1]
        missing = [k for k in OCI_LABELS if f"org.opencontainers.image.{k}" not in final.labels]
        assert not missing, f"OCI labels missing: {missing}"
        label_version = final.labels["org.opencontainers.image.version"]
        assert label_version == version, f"label version {label_version}, pyproject {version}"
        digest = final.labels["org.opencontainers.image.base.digest"]
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), f"base digest {digest!r}"
        assert final.image_env.get("LONGREAD_TELEMETRY__PROMETHEUS_HOST") == "0.0.0.0"
        assert final.user and not final.user.startswith(("0", "root")), final.user
        print(f"-- labels: {len(final.labels)} OCI labels, version {label_version}")
        smoke(final, version)
        n, size = du(final.root)
        venv_files, venv_size = du(final.path("/app/venv"))
        print(
            f"installed by the runtime stage: {mib(size)} in {n} files "
            f"(/app/venv {mib(venv_size)}, {venv_files} files), above the base image's own"
        )
        left = [p.relative_to(final.root).as_posix() for p in final.path("/tmp").glob("*")]
        assert not left, f"the runtime stage leaves files in /tmp: {left}"
        print(f"image check passed in {time.monotonic() - started:.0f} s")
    finally:
        if not opts.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
