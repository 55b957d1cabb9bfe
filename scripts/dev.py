#!/usr/bin/env python3
"""One entry point for people and CI, needing only Python 3.10+ on the machine.

    python3 scripts/dev.py demo    # install into .venv and run the example agent
    python3 scripts/dev.py demo incident   # seed 003's incident: trace, forensics, postmortem, replay test
    python3 scripts/dev.py test    # install test extras, lint, type-check, run every test
    python3 scripts/dev.py bench   # run the benchmark scripts and print their tables

Each command creates ``.venv`` (and for ``test`` a second ``.venv-compat`` with the
oldest supported client libraries) and installs what it needs; re-runs skip
installs whose inputs did not change.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAIN_VENV = ROOT / ".venv"
COMPAT_VENV = ROOT / ".venv-compat"
# The oldest client lines the instrumentation supports; tested on every CI run.
COMPAT_PINS = ["openai==1.40.8", "anthropic==0.40.0", "httpx<0.28"]
TEST_EXTRAS = "test,frameworks"


def _python(env_dir: Path) -> Path:
    return env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _run(*cmd: object, check: bool = True) -> int:
    printable = " ".join(str(c) for c in cmd)
    print(f"+ {printable}", flush=True)
    return subprocess.run([str(c) for c in cmd], cwd=ROOT, check=check).returncode


def _ensure(env_dir: Path, requirements: list[str]) -> Path:
    """Create ``env_dir`` if needed and install ``requirements`` unless already done."""
    py = _python(env_dir)
    if not py.exists():
        print(f"creating {env_dir.name} ...", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
        _run(py, "-m", "pip", "install", "-q", "--upgrade", "pip")
    stamp = env_dir / ".agentwatch-installed"
    key = hashlib.sha256(
        (ROOT / "pyproject.toml").read_bytes() + "\n".join(requirements).encode()
    ).hexdigest()
    if not stamp.exists() or stamp.read_text() != key:
        _run(py, "-m", "pip", "install", "-q", *requirements)
        stamp.write_text(key)
    return py


def demo(args: list[str]) -> int:
    py = _ensure(MAIN_VENV, ["-e", f"{ROOT}[demo]"])
    if args[:1] == ["incident"]:
        return _incident(py, args[1:])
    return _run(py, ROOT / "examples" / "demo_agent.py", *args, check=False)


def _under_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _ensure_system_tools() -> None:
    """Under CI as root, install the Debian packages the pipeline tests need (skip-is-failure there).

    promtool (Debian's ``prometheus``) checks and unit-tests the alert rules, and the
    end-to-end run starts a real Prometheus. Go is not installed here: the pipeline tests
    need Go 1.25+, newer than Debian's; without it they fail under CI with what to install.
    """
    if not _under_ci() or shutil.which("promtool") or os.name == "nt" or os.geteuid() != 0:
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    print("+ apt-get install prometheus (promtool, for the alert-rule and pipeline tests)", flush=True)
    if subprocess.run(["apt-get", "update", "-q"], check=False, env=env).returncode == 0:
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", "prometheus"], check=False, env=env
        )


def _incident(py: Path, args: list[str]) -> int:
    """Seed 003's walkthrough: record the incident to a trace file, then forensics and the postmortem draft."""
    out = ROOT / "incident-demo"
    out.mkdir(exist_ok=True)
    trace = out / "incident.jsonl"
    status = _run(py, ROOT / "examples" / "incident_walkthrough.py", "-o", trace, *args, check=False)
    agentwatch = [py, "-m", "agentwatch.cli"]
    status |= _run(*agentwatch, "forensics", trace, check=False)
    status |= _run(*agentwatch, "postmortem", trace, "-o", out / "postmortem.md", check=False)
    status |= _run(*agentwatch, "postmortem", trace, "--format", "html", "-o", out / "postmortem.html", check=False)
    # The regression test, against the agent as it was and after the fix; the first must fail.
    env = {**os.environ, "PYTHONPATH": str(ROOT / "examples")}
    outcome = {}
    for entry in ("support_agent", "support_agent_fixed"):
        test_file = out / f"test_{entry}.py"
        status |= _run(*agentwatch, "replay", "test", trace, "--entry", f"incident_walkthrough:{entry}",
                       "-o", test_file, check=False)  # fmt: skip
        print(f"+ pytest {test_file}", flush=True)
        outcome[entry] = subprocess.run(
            [str(py), "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test_file)], cwd=out, env=env, check=False
        ).returncode
    if outcome != {"support_agent": 1, "support_agent_fixed": 0}:
        status = 1
    print(f"\nregression test: {'fails' if outcome['support_agent'] else 'PASSES (unexpected)'} on the buggy agent, "
          f"{'passes' if outcome['support_agent_fixed'] == 0 else 'FAILS (unexpected)'} after the fix", flush=True)
    print(f"written: {trace}, {out / 'postmortem.md'}, {out / 'postmortem.html'}, {out}/test_*.py", flush=True)
    return 1 if status else 0


def _ensure_browser() -> None:
    """Under CI=true, install Debian's chromium for the postmortem page's browser test when it is missing."""
    import shutil

    if os.environ.get("CI", "").lower() != "true" or any(
        shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")
    ):
        return
    sudo = [] if hasattr(os, "geteuid") and os.geteuid() == 0 else ["sudo"]
    _run(*sudo, "apt-get", "update", "-qq", check=False)
    _run(*sudo, "apt-get", "install", "-y", "-qq", "chromium", check=False)


def test(args: list[str]) -> int:
    py = _ensure(MAIN_VENV, ["-e", f"{ROOT}[{TEST_EXTRAS}]"])
    _ensure_system_tools()
    _ensure_browser()
    status = 0
    status |= _run(py, "-m", "ruff", "check", "src", "tests", "benchmarks", "examples", "scripts", check=False)
    status |= _run(py, "-m", "mypy", check=False)
    status |= _run(py, "-m", "pytest", *args, check=False)
    if not args:
        # The same instrumentation tests against the oldest supported client libraries.
        compat = _ensure(COMPAT_VENV, ["-e", str(ROOT), "pytest>=8", "pytest-asyncio>=0.23",
                                       "pytest-timeout>=2.3", *COMPAT_PINS])
        status |= _run(compat, "-m", "pytest", "tests/instrumentation", "tests/testing", check=False)
    print("\nall checks passed" if status == 0 else "\nsome checks FAILED", flush=True)
    return 1 if status else 0


_PRINTED_BY_REAL_DATA = {"tau_bench.py", "who_and_when.py"}  # benchmarks/quality/real_data.py runs both


def bench(args: list[str]) -> int:
    py = _ensure(MAIN_VENV, ["-e", f"{ROOT}[{TEST_EXTRAS},bench]"])
    status = 0
    for script in sorted((ROOT / "benchmarks").glob("*.py")) + sorted((ROOT / "benchmarks" / "quality").glob("*.py")):
        if script.name.startswith("_") or script.name in _PRINTED_BY_REAL_DATA:
            continue
        status |= _run(py, script, *args, check=False)
    return 1 if status else 0


COMMANDS = {"demo": demo, "test": test, "bench": bench}


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(__doc__)
        return 2
    if sys.version_info < (3, 10):  # noqa: UP036  (a user may run it with an older python3)
        print("agentwatch needs Python 3.10 or newer", file=sys.stderr)
        return 2
    return COMMANDS[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
