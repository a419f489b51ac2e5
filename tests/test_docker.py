"""The Docker files, checked without a Docker engine: what the docs promise is what compose declares, and
the image installs what `make setup` installs."""

from __future__ import annotations

import re
import shlex
import subprocess
from fnmatch import fnmatch
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "docker" / "Dockerfile"
COMPOSE = REPO / "docker" / "compose.yaml"
ENV_EXAMPLE = REPO / "docker" / "env.example"
README = REPO / "README.md"
SERVICES = {"ray-head", "ray-worker", "api"}
SHARED_MOUNTS = {"cache": "/cache", "runs": "/work/runs"}


def docker_docs() -> str:
    """The README's section on clusters, Ray Jobs, Docker and the API (what the compose file must match)."""
    text = README.read_text()
    start = text.index("## Running on a Ray cluster")
    end = text.index("\n## ", start + 1)
    return text[start:end]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(maxsplit=1)[0].upper(), line.split(maxsplit=1)[1]) for line in lines]


def command_text(service: dict) -> str:
    command = service["command"]
    return " ".join(command) if isinstance(command, list) else command


def local_install_targets(words: list[str]) -> set[str]:
    """The local paths a `pip install` command installs, extras and `./` stripped ('.[dev]' -> '.')."""
    targets = set()
    for word in words[words.index("install") + 1 :]:
        if word.startswith("-"):
            continue
        path = re.sub(r"\[.*\]$", "", word)
        targets.add(path.removeprefix("./") or ".")
    return targets


def test_compose_declares_the_services_the_docs_promise(compose: dict) -> None:
    assert set(compose["services"]) == SERVICES
    documented = set(re.findall(r"^\| `([a-z-]+)` \|", docker_docs(), re.MULTILINE))
    assert documented == SERVICES


def test_ray_head_and_workers_form_one_cluster(compose: dict) -> None:
    head, worker = compose["services"]["ray-head"], compose["services"]["ray-worker"]
    head_command, worker_command = command_text(head), command_text(worker)
    assert "ray start --head" in head_command and "--block" in head_command
    assert "--dashboard-port=8265" in head_command and "--dashboard-host=0.0.0.0" in head_command
    gcs_port = re.search(r"--port=(\d+)", head_command).group(1)  # type: ignore[union-attr]
    assert f"--address=ray-head:{gcs_port}" in worker_command and "--block" in worker_command
    assert worker["depends_on"]["ray-head"]["condition"] == "service_healthy"
    # scalable with --scale: no fixed container name, no host port that two replicas would fight over
    assert "container_name" not in worker and "ports" not in worker
    for service in (head, worker):
        assert service["environment"]["RAY_AUTH_MODE"] == "token"
        assert service["environment"]["RAY_AUTH_TOKEN"].startswith("${RAY_AUTH_TOKEN:?")


def test_published_ports_are_the_documented_ones_on_loopback(compose: dict) -> None:
    published = {
        name: [str(port) for port in service.get("ports", [])] for name, service in compose["services"].items()
    }
    assert published == {"ray-head": ["127.0.0.1:8265:8265"], "ray-worker": [], "api": ["127.0.0.1:8000:8000"]}
    documented_ports = set(re.findall(r"127\.0\.0\.1:(\d+)", docker_docs()))
    assert documented_ports == {"8265", "8000"}
    api = compose["services"]["api"]
    assert command_text(api).startswith("automl serve ") and "--port 8000" in command_text(api)
    assert "AUTOML_API_KEY" in api["environment"]


def test_every_service_shares_the_cache_and_runs_volumes(compose: dict, instructions: list) -> None:
    assert set(compose["volumes"]) == set(SHARED_MOUNTS)
    for name, service in compose["services"].items():
        mounts = dict(volume.split(":")[:2] for volume in service["volumes"])
        for volume, target in SHARED_MOUNTS.items():
            assert mounts.get(volume) == target, f"{name} does not mount {volume} at {target}"
    doc = docker_docs()
    assert all(f"`{target}`" in doc for target in SHARED_MOUNTS.values())
    env = " ".join(args for op, args in instructions if op == "ENV")
    assert "AUTOML_CACHE=/cache/" in env and "XDG_CACHE_HOME=/cache" in env  # both caches on the volume
    assert ("WORKDIR", "/work") in instructions  # recipes' default output folder `runs` -> /work/runs


def test_every_variable_compose_reads_is_in_the_env_example(compose: dict) -> None:
    used = set(re.findall(r"\$\{([A-Z_]+)", COMPOSE.read_text()))
    example = {line.split("=", 1)[0] for line in ENV_EXAMPLE.read_text().splitlines() if "=" in line[:40]}
    assert used <= example, f"compose reads {used - example} that env.example does not show"


def test_image_is_slim_non_root_and_installs_what_make_setup_installs(instructions: list) -> None:
    assert instructions[0] == ("FROM", "python:3.11-slim")
    pyproject = (REPO / "pyproject.toml").read_text()
    assert 'requires-python = ">=3.11,<3.12"' in pyproject and '"tensorflow-cpu' in pyproject
    assert not re.search(r'"tensorflow[=<>]', pyproject), "the image must not pull the GPU tensorflow wheel"
    users = [args for op, args in instructions if op == "USER"]
    assert users and users[-1] not in ("root", "0")

    # what `make setup` would run (make expands its variables; -n runs nothing, -B ignores what is installed)
    dry_run = subprocess.run(["make", "-n", "-B", "setup"], cwd=REPO, capture_output=True, text=True, check=True)
    make_installs = [shlex.split(line) for line in dry_run.stdout.splitlines() if "pip install" in line]
    docker_installs = [shlex.split(args) for op, args in instructions if op == "RUN" and "pip install" in args]
    assert len(make_installs) == len(docker_installs) == 1
    plugins = {str(path.parent.relative_to(REPO)) for path in REPO.glob("plugins/*/pyproject.toml")}
    assert plugins, "the repository's plugins are missing"
    assert local_install_targets(make_installs[0]) == {".", *plugins}
    assert local_install_targets(docker_installs[0]) == {".", *plugins}


def test_every_copied_path_exists_and_is_in_the_build_context(instructions: list) -> None:
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()]
    patterns = [p for p in patterns if p and not p.startswith("#")]

    def excluded(path: str) -> bool:
        verdict = False
        for pattern in patterns:
            keep = pattern.startswith("!")
            bare = pattern.lstrip("!").rstrip("/")
            if fnmatch(path, bare):
                verdict = not keep
        return verdict

    copies = [shlex.split(args) for op, args in instructions if op == "COPY"]
    sources = [word for words in copies for word in words[:-1] if not word.startswith("--")]
    assert sources
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: not in the repository"
        assert not excluded(source.rstrip("/")), f"COPY {source}: excluded by .dockerignore"
