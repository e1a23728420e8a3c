"""One process of the multi-process test: ``optorth.muon`` steps of the tiny FSDP model
(``_sharded_model.py``) on meshes over every device of every process.

Run by ``test_multiprocess.py`` as a script, either as one of several processes joined by
``jax.distributed`` on 127.0.0.1 (``--port``, ``--num-processes``, ``--process-id``) with
``--local-devices`` CPU devices each, or as the single-process reference (no ``--port``).

Under a 1-D FSDP mesh: STEPS steps, an Orbax checkpoint in ``--checkpoint``, STEPS more steps
(``uninterrupted``). Then the checkpoint restored under an HSDP mesh (replica 2 × fsdp, the
restored arrays checked to carry its shardings) and STEPS steps there (``restored``). Process 0
writes both final parameters and optimizer states, gathered from every process, to ``--out``
(``.npz``, leaves keyed by ``uninterrupted`` or ``restored`` and their path).

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
    parser.add_argument("--checkpoint", required=True)
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
    import _sharded_model as model
    import numpy as np
    from jax.experimental import multihost_utils

    n_global = args.local_devices * args.num_processes
    assert jax.device_count() == n_global, (jax.device_count(), n_global)
    auto = jax.sharding.AxisType.Auto
    fsdp = jax.make_mesh((n_global,), ("fsdp",), axis_types=(auto,))
    hsdp = jax.make_mesh((2, n_global // 2), ("replica", "fsdp"), axis_types=(auto, auto))
    tx = model.optimizer()

    params, state = model.train(*model.fresh(tx, fsdp), tx, fsdp, 0, STEPS)
    model.save(args.checkpoint, params, state)
    uninterrupted = model.train(params, state, tx, fsdp, STEPS, STEPS)
    restored, fresh = model.restore(args.checkpoint, tx, hsdp)
    model.assert_sharded_like(restored, fresh, hsdp)
    restored = model.train(*restored, tx, hsdp, STEPS, STEPS)

    result = _flat({"uninterrupted": uninterrupted, "restored": restored})
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
