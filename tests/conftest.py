"""Shared fixtures: the real photo sets beside the checkout, a run folder laid out as a search leaves it, local Ray."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("AUTOML_TEST_DATASETS", REPO.parent / "shared" / "datasets"))


# Session fixtures that run a whole search (minutes): every test that uses them, directly or through
# another fixture, is slow, so `make test-fast` (-m "not slow") skips it without each test saying so.
SEARCH_FIXTURES = frozenset({"built_run", "exported_run"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests of a search-built run slow; run the tests on `local_ray` last (see that fixture)."""
    for item in items:
        if SEARCH_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    items.sort(key=lambda item: "local_ray" in getattr(item, "fixturenames", ()))  # stable: order kept otherwise


def _dataset(name: str) -> Path:
    path = DATASETS / name
    if not path.is_dir():
        pytest.fail(f"{path} is missing: the tests need ../shared/datasets beside the checkout")
    return path


@pytest.fixture(scope="session")
def animals10() -> Path:
    return _dataset("animals10")


@pytest.fixture(scope="session")
def natural_images() -> Path:
    return _dataset("natural_images")


@pytest.fixture(scope="session")
def built_run(tmp_path_factory: pytest.TempPathFactory, animals10: Path):
    """A run folder as a search leaves it, its recipe and warm bottleneck cache (see tests/run_builder.py)."""
    from run_builder import build_run

    return build_run(tmp_path_factory.mktemp("runs") / "animals10-test", animals10)


@pytest.fixture(scope="session")
def exported_run(built_run) -> Path:
    """The run folder of `built_run`: model/, metrics.json, trials.parquet, summary.json, recipe.yaml."""
    return built_run.root


@pytest.fixture(scope="session")
def cats_and_dogs(tmp_path_factory: pytest.TempPathFactory, animals10: Path) -> Path:
    """A small real dataset for searches: the first 30 photos of animals10's cat and dog classes (copies)."""
    import shutil

    root = tmp_path_factory.mktemp("data") / "cats_and_dogs"
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for photo in sorted(p for p in (animals10 / name).iterdir() if p.is_file())[:30]:
            shutil.copy(photo, root / name / photo.name)
    return root


@pytest.fixture(scope="session")
def local_ray():
    """One local Ray for every test that runs the Tune experiment directly (starting one takes 4-5 s).

    Those tests run last (see `pytest_collection_modifyitems`): while this Ray is up, a search in this process
    would reuse it instead of the Ray or cluster it asks for. Token auth is off for its lifetime only.
    """
    import ray

    from automl.search.cluster import connect

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_AUTH_MODE", "disabled")
        try:
            yield connect(None)
        finally:
            ray.shutdown()
