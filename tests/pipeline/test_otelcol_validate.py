"""Every shipped OpenTelemetry Collector config passes the real collector's ``validate``.

The collector is the distribution of ``collector/builder-config.yaml`` (built once,
cached outside the repo). ``validate`` unmarshals every component's config with
the component's own code, so an unknown type, a misspelt key or a bad value
fails here, the way it would fail on a user's machine.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from .gobuild import MANIFEST, REPO

pytestmark = pytest.mark.timeout(3600)  # the first run builds the collector (minutes)

COLLECTOR = REPO / "collector"
OTELCOL_CONFIGS = sorted(str(p.relative_to(COLLECTOR)) for p in COLLECTOR.glob("**/otelcol-*.yaml"))
SECTIONS = ("receivers", "processors", "exporters", "extensions", "connectors")


def _validate(binary: Path, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary), "validate", "--config", str(config)], capture_output=True, text=True, timeout=120
    )


def test_otelcol_configs_are_found() -> None:
    assert OTELCOL_CONFIGS == [
        "kubernetes/otelcol-loadbalancing.yaml",
        "otelcol-config.yaml",
        "otelcol-loadbalancing.yaml",
    ]


@pytest.mark.parametrize("name", OTELCOL_CONFIGS)
def test_shipped_otelcol_config_validates(otelcol_bin: Path, name: str) -> None:
    result = _validate(otelcol_bin, COLLECTOR / name)
    assert result.returncode == 0, f"{name} does not validate:\n{result.stdout}\n{result.stderr}"


def test_validate_rejects_a_broken_config(otelcol_bin: Path, tmp_path: Path) -> None:
    """The check can fail: a misspelt key in the shipped config is refused."""
    config = yaml.safe_load((COLLECTOR / "otelcol-config.yaml").read_text())
    config["processors"]["batch"]["send_batch_sizes"] = 512
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(config))
    result = _validate(otelcol_bin, broken)
    assert result.returncode != 0
    assert "send_batch_sizes" in result.stdout + result.stderr


def _types_used() -> dict[str, set[str]]:
    used: dict[str, set[str]] = {s: set() for s in SECTIONS}
    for name in OTELCOL_CONFIGS:
        config: dict[str, Any] = yaml.safe_load((COLLECTOR / name).read_text())
        for section in SECTIONS:
            used[section] |= {cid.split("/", 1)[0] for cid in config.get(section) or {}}
    return used


def _types_built(binary: Path) -> dict[str, set[str]]:
    out = subprocess.run([str(binary), "components"], capture_output=True, text=True, timeout=60, check=True)
    listing = yaml.safe_load(out.stdout)
    built: dict[str, set[str]] = {s: set() for s in SECTIONS}
    for section in SECTIONS:
        for entry in listing.get(section) or []:
            built[section].add(entry["name"])
    return built


def test_distribution_has_exactly_the_components_the_configs_use(otelcol_bin: Path) -> None:
    """The manifest is minimal: each built component is used by a shipped config, and vice versa.

    Deprecated aliases (``otlp`` for ``otlp_grpc``) are accepted by validate but are
    not listed by ``components``; every type a config names must be built.
    """
    used, built = _types_used(), _types_built(otelcol_bin)
    for section in SECTIONS:
        assert built[section] == used[section], (
            f"{section}: manifest builds {sorted(built[section])}, configs use {sorted(used[section])}"
        )


def test_manifest_pins_one_collector_release() -> None:
    manifest = yaml.safe_load(MANIFEST.read_text())
    versions = {
        entry["gomod"].split()[1]
        for section in ("receivers", "processors", "exporters", "extensions")
        for entry in manifest.get(section) or []
    }
    assert versions == {"v" + manifest["dist"]["version"]}, versions


def test_shipped_jaeger_config_validates(jaeger_bin: Path) -> None:
    result = _validate(jaeger_bin, COLLECTOR / "jaeger.yaml")
    assert result.returncode == 0, f"jaeger.yaml does not validate:\n{result.stdout}\n{result.stderr}"
