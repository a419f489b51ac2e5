"""Backbone plugins installed for real with pip: the how-to's example, a broken one and a name thief.

The packages are pip-installed into a temporary `--target` folder put on PYTHONPATH for the `automl`
process under test, rather than into the shared virtual environment: the same real dist-info and
entry points, without other processes seeing a half-installed plugin or a leftover after a crash.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HOW_TO = REPO / "README.md"
AUTOML = Path(sys.executable).with_name("automl")


def _code_blocks(markdown: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", markdown, flags=re.DOTALL)


def _pip_install(source: Path, target: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", target, source],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def _write_broken_plugins(root: Path) -> Path:
    """One distribution with an entry point whose module fails to import, and one taking `resnet50`."""
    source = root / "automl-bad-plugins"
    (source / "automl_bad_plugins").mkdir(parents=True)
    (source / "pyproject.toml").write_text(
        textwrap.dedent(
            """
            [build-system]
            requires = ["setuptools>=61"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "automl-bad-plugins"
            version = "0.0.1"

            [project.entry-points."automl.backbones"]
            broken_net = "automl_bad_plugins.broken:factory"
            resnet50 = "automl_bad_plugins.thief:factory"
            """
        )
    )
    (source / "automl_bad_plugins" / "__init__.py").write_text("")
    (source / "automl_bad_plugins" / "broken.py").write_text("import a_module_that_does_not_exist\n")
    (source / "automl_bad_plugins" / "thief.py").write_text(
        "def factory():\n    raise AssertionError('a taken name must be skipped before its plugin is loaded')\n"
    )
    return source


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The how-to's example (its code blocks, verbatim) and the bad plugins, pip-installed into one folder."""
    root = tmp_path_factory.mktemp("plugins")
    example = root / "automl-densenet"
    (example / "automl_densenet").mkdir(parents=True)
    markdown = HOW_TO.read_text()
    (example / "pyproject.toml").write_text(_code_blocks(markdown, "toml")[0])
    (example / "automl_densenet" / "__init__.py").write_text(_code_blocks(markdown, "python")[0])
    target = root / "site"
    _pip_install(example, target)
    _pip_install(_write_broken_plugins(root), target)
    return target


def _automl_backbones(plugin_path: Path, *names: str) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(plugin_path), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([AUTOML, "backbones", "--json", *names], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_installed_plugin_is_listed_and_broken_ones_are_reported_and_skipped(plugin_path: Path) -> None:
    listing = _automl_backbones(plugin_path, "densenet121", "resnet50")
    by_name = {row["name"]: row for row in listing["backbones"]}

    densenet = by_name["densenet121"]
    assert (densenet["distribution"], densenet["version"]) == ("automl-densenet", "1.0.0")
    assert densenet["input_size"] == 224 and densenet["feature_size"] == 1024
    assert densenet["cut_points"]["all"]["output_shape"] == [1024]
    assert densenet["cut_points"]["top"]["output_shape"] == [7, 7, 512]
    assert densenet["cut_points"]["half"]["output_shape"] == [14, 14, 256]
    assert densenet["parameters"] > 7_000_000
    assert densenet["default_weights_offline"] is False

    # The core keeps its name; the thief is skipped without even being loaded.
    assert by_name["resnet50"]["distribution"] == "automl"
    problems = {p["name"]: p for p in listing["problems"]}
    assert problems["resnet50"]["distribution"] == "automl-bad-plugins"
    assert "already registered by automl" in problems["resnet50"]["reason"]
    assert problems["broken_net"]["reason"].startswith("ModuleNotFoundError")
    assert "a_module_that_does_not_exist" in problems["broken_net"]["reason"]


def test_a_skipped_plugin_is_named_when_asked_for(plugin_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(plugin_path)}
    done = subprocess.run([AUTOML, "backbones", "broken_net"], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 2
    assert "unknown backbone 'broken_net'" in done.stderr
    assert "was skipped: ModuleNotFoundError" in done.stderr
    assert "densenet121" in done.stderr  # the available names, the plugin's included


def test_registry_warns_about_each_skipped_plugin(plugin_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from automl.backbones.registry import PluginWarning, discover

    monkeypatch.syspath_prepend(str(plugin_path))
    with pytest.warns(PluginWarning) as warned:
        registry = discover()
    messages = [str(w.message) for w in warned]
    assert any("'broken_net' from automl-bad-plugins 0.0.1 skipped" in m for m in messages)
    assert any("'resnet50' from automl-bad-plugins 0.0.1 skipped" in m for m in messages)
    assert registry.get("densenet121").feature_size == 1024
    assert registry.backbones["resnet50"].distribution == "automl"


def test_the_how_to_conformance_test_passes_on_the_installed_example(plugin_path: Path) -> None:
    """The README's plugin test, verbatim, run by pytest against the pip-installed example."""
    test_file = plugin_path.parent / "test_densenet_conforms.py"
    test_file.write_text(_code_blocks(HOW_TO.read_text(), "python")[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(plugin_path), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test_file.name],
        capture_output=True,
        text=True,
        env=env,
        cwd=test_file.parent,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "1 passed" in done.stdout
