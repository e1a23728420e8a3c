"""One process of the multi-process test: a few ``optorth.muon`` steps of the tiny FSDP model
(``_sharded_model.py``) on a mesh over every device of every process.

Run by ``test_multiprocess.py`` as a script, either as one of several processes joined by
``jax.distributed`` on 127.0.0.1 (``--port``, ``--num-processes``, ``--process-id``) with
``--local-devices`` CPU devices each, or as the single-process reference (no ``--port``). The
process that holds process id 0 writes the final parameters and optimizer state, gathered from
every process, to ``--out`` (``.npz``, leaves keyed by their path).

The process stops itself after ``--deadline`` seconds (a traceback of every thread, then exit
code 1), so a peer that dies never leaves it waiting on a collective.
"""

import argparse
import faulthandler
import sys

STEPS = 3


def _parse():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--local-devices", type=int, required=True)
    parser.add_argument("--port", type=int)
    parser.add_argument("--num-processes", type=int, default=1)
    parser.add_argument("--process-id", type=int, default=0)
    parser.add_argument("--deadline", type=float, default=240.0)
    return parser.parse_args()


def _start_jax(args):
    import jax

    jax.config.update("jax_num_cpu_devices", args.local_devices)
    jax.config.update("jax_platforms", "cpu")
    if args.port is not None:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        timeout = max(1, int(args.deadline) - 10)
        jax.distributed.initialize(
            coordinator_address=f"127.0.0.1:{args.port}", num_processes=args.num_processes,
            process_id=args.process_id, initialization_timeout=timeout,
            heartbeat_timeout_seconds=timeout, shutdown_timeout_seconds=timeout)
    return jax


def _flat(tree) -> dict:
    import jax

    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {jax.tree_util.keystr(path): leaf for path, leaf in flat}


def main():
    args = _parse()
    faulthandler.dump_traceback_later(args.deadline, exit=True)
    jax = _start_jax(args)
    import numpy as np
    from jax.experimental import multihost_utils

    import _sharded_model as model

    n_global = args.local_devices * args.num_processes
    assert jax.device_count() == n_global, (jax.device_count(), n_global)
    mesh = jax.make_mesh((n_global,), ("fsdp",), axis_types=(jax.sharding.AxisType.Auto,))
    tx = model.optimizer()
    params = model.place(model.host_params(), mesh)
    state = model.init_state(tx, params, mesh)
    params, state = model.train(params, state, tx, mesh, 0, STEPS)
    result = _flat({"params": params, "state": state})
    host = {key: np.asarray(multihost_utils.process_allgather(x, tiled=True))
            for key, x in result.items()}
    if jax.process_index() == 0:
        np.savez(args.out, **host)
    if args.port is not None:
        jax.distributed.shutdown()
    faulthandler.cancel_dump_traceback_later()
    return 0


if __name__ == "__main__":
    sys.exit(main())
