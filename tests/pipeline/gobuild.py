"""Build the real Go programs the pipeline tests run, once, into a cache outside the repo.

* ``otelcol-agentwatch``: the OpenTelemetry Collector distribution that
  ``collector/builder-config.yaml`` describes, built with the pinned OpenTelemetry
  Collector Builder (ocb). Cached by a hash of the manifest and the Go version.
* ``jaeger``: Jaeger v2 (``github.com/jaegertracing/jaeger/cmd/jaeger``, a pinned
  release, built as a Go tool of a throw-away module).

The cache lives in ``$AGENTWATCH_CACHE_DIR`` or ``~/.cache/agentwatch`` (``go/``
below it): a cold build takes minutes on two cores, a warm one is a stat. A file
lock keeps two test runs from building the same thing at once. Nothing is
downloaded except Go modules through the Go toolchain's own module proxy.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
MANIFEST = REPO / "collector" / "builder-config.yaml"

# One collector release for every module (see collector/builder-config.yaml).
BUILDER_MODULE = "go.opentelemetry.io/collector/cmd/builder"
BUILDER_VERSION = "v0.161.0"
JAEGER_MODULE = "github.com/jaegertracing/jaeger"
JAEGER_VERSION = "v1.75.0"  # the Go module tag of the Jaeger v2 line; cmd/jaeger is the v2 binary
BUILD_TIMEOUT_S = 45 * 60
INSTALL_HINT = (
    "install Go 1.25 or newer (https://go.dev/doc/install, or `apt-get install golang-go` if new enough) "
    "and make `go` reachable on PATH; the first run then builds otelcol and Jaeger (minutes, cached)"
)


class BuildUnavailable(RuntimeError):
    """No Go toolchain: the caller skips (or fails under CI)."""


def cache_dir() -> Path:
    root = os.environ.get("AGENTWATCH_CACHE_DIR")
    if root:
        base = Path(root)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".cache") / "agentwatch"
    path = base / "go"
    path.mkdir(parents=True, exist_ok=True)
    return path


def go_executable() -> str:
    go = shutil.which("go") or next(
        (str(p) for p in (Path("/usr/local/go/bin/go"), Path.home() / "go" / "bin" / "go") if p.is_file()), None
    )
    if not go:
        raise BuildUnavailable(f"no Go toolchain: {INSTALL_HINT}")
    return go


def _go_version(go: str) -> str:
    out = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.strip()


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    lock_path = cache_dir() / f".{name}.lock"
    with open(lock_path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _run(cmd: list[str], cwd: Path, log: Path, env: dict[str, str]) -> None:
    started = time.monotonic()
    with open(log, "a") as out:
        out.write(f"+ {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.run(
            ["nice", "-n", "10", *cmd], cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=BUILD_TIMEOUT_S
        )
        out.write(f"(exit {proc.returncode} after {time.monotonic() - started:.0f}s)\n")
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise RuntimeError(f"`{' '.join(cmd)}` failed (log: {log}):\n{tail}")


def _env(go: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(go).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("GOFLAGS", "-buildvcs=false")
    env["CGO_ENABLED"] = "0"
    return env


def _builder(go: str, log: Path) -> Path:
    target = cache_dir() / f"builder-{BUILDER_VERSION}"
    binary = target / "builder"
    if binary.is_file():
        return binary
    env = _env(go)
    env["GOBIN"] = str(target)
    _run([go, "install", f"{BUILDER_MODULE}@{BUILDER_VERSION}"], cache_dir(), log, env)
    return binary


def otelcol_key(go: str) -> str:
    digest = hashlib.sha256(MANIFEST.read_bytes() + _go_version(go).encode()).hexdigest()[:12]
    version = yaml.safe_load(MANIFEST.read_text())["dist"]["version"]
    return f"otelcol-agentwatch-{version}-{digest}"


def _cached_build(key: str, name: str, lock: str, build: Callable[[Path, Path], Path]) -> Path:
    """``cache_dir()/key/name``, built once by ``build(work, log)`` (which returns the binary's path in work).

    Two processes never build at once (a lock), a half-written binary is never seen
    (copied to a temporary name, then renamed), and the build log is kept beside it.
    """
    final = cache_dir() / key / name
    if final.is_file():
        return final
    with _locked(lock):
        if final.is_file():
            return final
        work = cache_dir() / f"{key}.build"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        log = work / "build.log"
        built = build(work, log)
        final.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(built, final.with_suffix(".tmp"))
        shutil.copy2(log, final.parent / "build.log")
        os.replace(final.with_suffix(".tmp"), final)
        shutil.rmtree(work, ignore_errors=True)
    return final


def build_otelcol() -> Path:
    """The ``otelcol-agentwatch`` binary of collector/builder-config.yaml, built on first use."""
    go = go_executable()

    def build(work: Path, log: Path) -> Path:
        builder = _builder(go, log)
        manifest = yaml.safe_load(MANIFEST.read_text())
        manifest["dist"]["output_path"] = str(work / "src")
        (work / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
        _run([str(builder), "--config", str(work / "manifest.yaml")], work, log, _env(go))
        return work / "src" / "otelcol-agentwatch"

    return _cached_build(otelcol_key(go), "otelcol-agentwatch", "otelcol", build)


def build_jaeger() -> Path:
    """Jaeger v2 (all-in-one, OTLP in, in-memory storage available), built on first use."""
    go = go_executable()
    key = f"jaeger-{JAEGER_VERSION}-{hashlib.sha256(_go_version(go).encode()).hexdigest()[:8]}"

    def build(work: Path, log: Path) -> Path:
        env = _env(go)
        _run([go, "mod", "init", "agentwatch.invalid/jaegerbuild"], work, log, env)
        _run([go, "get", "-tool", f"{JAEGER_MODULE}/cmd/jaeger@{JAEGER_VERSION}"], work, log, env)
        _run([go, "build", "-trimpath", "-o", str(work / "jaeger"), f"{JAEGER_MODULE}/cmd/jaeger"], work, log, env)
        return work / "jaeger"

    return _cached_build(key, "jaeger", "jaeger", build)
