"""Ray for the search: a quiet local Ray by default, or an existing cluster; where its dashboard is.

Address precedence: `--address`, then `$RAY_ADDRESS`, then the recipe's `resources.address`; none of
them starts a local Ray on this machine (its dashboard on 127.0.0.1).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

WORKER_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore", "TUNE_FUNCTION_THREAD_TIMEOUT_S": "60"}
"""Environment of trial workers. TensorFlow and warnings would otherwise flood the logs; a reused actor
waits for its previous trial's thread to end (Keras clean-up included) before taking the next trial,
and Tune's default wait (2 s) is shorter than that clean-up under load, which fails the trial."""


@dataclass(frozen=True)
class RaySession:
    address: str | None
    """None for the local Ray this search started."""
    dashboard_url: str | None
    nodes: int
    cpus: float

    @property
    def auth_hint(self) -> str:
        """How to open the dashboard's API under Ray 2.60's token authentication (on by default)."""
        if os.environ.get("RAY_AUTH_MODE", "token").lower() != "token":
            return "token auth is off (RAY_AUTH_MODE=disabled)"
        token_path = os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
        return (
            f"token auth: send 'Authorization: Bearer <token>' with the token in {token_path} "
            "(or start with RAY_AUTH_MODE=disabled)"
        )


def resolve_address(cli_address: str | None, recipe_address: str | None) -> str | None:
    return cli_address or os.environ.get("RAY_ADDRESS") or recipe_address


def connect(address: str | None) -> RaySession:
    """Start a local Ray (dashboard on) or join `address`; a Ray this process already joined is reused as it is
    (its dashboard URL is then not known here)."""
    import ray

    dashboard = None
    if not ray.is_initialized():
        context = ray.init(
            # "local", not None: Ray would otherwise join any Ray already running on this machine (another
            # search's, found through /tmp/ray), and this search would die when that one shuts its Ray down
            address=address or "local",
            include_dashboard=None if address else True,
            logging_level=logging.WARNING,
            log_to_driver=False,
            configure_logging=True,
            runtime_env={"env_vars": WORKER_ENV},
        )
        dashboard = context.dashboard_url
    resources = ray.cluster_resources()
    nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
    url = f"http://{dashboard}" if dashboard and not dashboard.startswith("http") else dashboard
    return RaySession(address=address, dashboard_url=url, nodes=nodes, cpus=resources.get("CPU", 0.0))
