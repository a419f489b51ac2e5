"""A search on a two-node Ray cluster (`ray.cluster_utils.Cluster`: head + one node, 1 CPU each).

The features are extracted once for the whole cluster (one extraction task on each node) and put in
the object store once; the two concurrent 1-CPU trials can only fit one on each node, so both nodes
train trials from that one copy of the features.
"""

from __future__ import annotations

import io
import socket

import pytest
from rich.console import Console

from automl.data.dataset import Dataset
from automl.recipe import parse_recipe
from automl.runs import TrialTable
from automl.search.driver import run_search

pytestmark = pytest.mark.slow


@pytest.fixture
def two_node_cluster():
    import ray
    from ray.cluster_utils import Cluster

    # a free dashboard port of its own: another Ray on the machine (a user's, a search) may hold 8265, and without
    # its dashboard the head cannot answer the state API this test reads
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "dashboard_port": port})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def test_a_two_node_cluster_trains_trials_on_both_nodes_from_one_cache(tmp_path, cats_and_dogs, two_node_cluster):
    import ray

    recipe = parse_recipe(
        f"data: {{folder: {cats_and_dogs}}}\n"
        "search: {backbones: efficientnet_lite0, cuts: all, heads: softmax, epochs: 3, scheduler: fifo}\n"
        "budget: {time: 5m, trials: 6}\n"
        "resources: {cpus_per_trial: 1, concurrent_trials: 2}\n"
        f"output: {{folder: {tmp_path / 'runs'}}}\n"
        f"cache: {tmp_path / 'cache'}\n",
        source="cluster.yaml",
    )
    outcome = run_search(recipe, address=two_node_cluster.address, console=Console(file=io.StringIO()))
    summary = outcome.summary.model_dump()
    assert summary["ray"]["nodes"] == 2
    dataset = Dataset.from_recipe(recipe.data)
    photos = len(dataset.split("train")) + len(dataset.split("val"))  # a search extracts no test photo
    assert summary["cache"]["cache_misses"] == photos and summary["cache"]["cache_hits"] == 0

    nodes = {node["NodeID"] for node in ray.nodes() if node["Alive"]}
    from ray.util.state import list_tasks

    extraction = list_tasks(
        address=two_node_cluster.address, filters=[("func_or_class_name", "=", "_extract_shard")], detail=True
    )
    assert {task.node_id for task in extraction} == nodes, "the features were extracted on both nodes"
    trials = TrialTable.read(outcome.run_dir / "trials.parquet").to_frame()
    tune_trials = trials[~trials["baseline"]]
    assert len(tune_trials) == 6 and (tune_trials["status"] == "complete").all()
    assert set(tune_trials["node_id"]) == nodes, "trials ran on both nodes"
    assert (tune_trials["cache_hits"] == tune_trials["cache_hits"].iloc[0]).all()
    assert (outcome.run_dir / "model" / "model.keras").is_file()
