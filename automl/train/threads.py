"""TensorFlow's thread pools sized to a trial's CPUs.

Ray sets OMP_NUM_THREADS for a trial, but TensorFlow sizes its own pools from the machine's cores, so
two 1-CPU trials on 2 cores would each use both. The pools can only be set before TensorFlow's runtime
starts (its first op); a reused Ray actor has already started it, so the size stays what it was.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def configure_threads(cpus: float) -> bool:
    """Size TF's intra- and inter-op pools to `cpus` (at least 1); False when a running TF keeps other sizes."""
    import tensorflow as tf

    threads = max(1, round(cpus))
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        current = (
            tf.config.threading.get_intra_op_parallelism_threads(),
            tf.config.threading.get_inter_op_parallelism_threads(),
        )
        log.warning(
            "TensorFlow already runs with intra/inter-op pools %s; cannot resize them to %d thread(s) in this process",
            current,
            threads,
        )
        return False
    return True
