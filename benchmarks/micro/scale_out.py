"""How one jitted optimizer update scales out: compile-only, on simulated CPU devices.

For each model (``_scale_models.py``: GPT-2 small and medium, a layer-stacked GPT-2,
an 8-expert MoE with FSDP or with expert sharding) and mesh (1-D FSDP over N ∈ {2, …, 64}
devices, HSDP ``replica(2) × fsdp(4)``, FSDP × tensor parallel ``fsdp(4) × tensor(2)``), the
update ``tx.update(grads, state, params)`` of ``optorth.muon()``, ``optax.contrib.muon`` (routed
like optorth: hidden matrices to Newton–Schulz, the rest to AdamW) and ``optax.adamw`` is
lowered with the parameters, gradients and state sharded as the model says (state leaves
shaped like a parameter take its sharding; ``jax.eval_shape`` of ``init``, nothing allocated)
and compiled. Each (model, mesh) runs in a fresh subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=N``, bounded by ``--timeout``. From the
compiled program (``benchmarks/micro/_hlo.py``), per device:

* ``work/ideal``: dot FLOPs (while bodies × trip counts; the update's only dots are
  Newton–Schulz's) divided by the ideal, the same update's FLOPs compiled on one device / N;
* collectives executed (all-to-all / all-gather / all-reduce / reduce-scatter /
  collective-permute) and the bytes they move per device, in units of P = the model's total
  parameter bytes (in all and across each mesh axis) and of Pₘ = the bytes of the leaves
  optorth routes to Newton–Schulz (GPT-2 small: 85 of 124 M parameters; the embeddings take
  AdamW). Ratios "× P" quoted from elsewhere may mean either; the table prints both;
* temp memory (``memory_analysis().temp_size_in_bytes``), in MiB and ÷ optax.contrib.muon's;
* ``out = params``: whether the compiled update's output shardings equal the parameters' (and
  the new state's equal the state's); otherwise how many leaves differ (listed under the
  table). The JSON lines also name the JAX operations whose collectives move the most bytes
  (``sources``).

The simulated devices share this machine's cores; nothing runs, so the numbers are what the
compiler planned, not times. Results: a markdown table on stdout and in
``benchmarks/results/scale_out_cpu.md``, one JSON line per row in ``scale_out_cpu.jsonl``.
In ``benchmarks/results/``, ``scale_out_*_before_cpu`` are tables of the library before
``optorth.Distribution`` (whole matrices spread over every mesh axis, leaves always
concatenated); ``scale_out_fsdp_sweep``, ``_meshes_auto``, ``_meshes_explicit``, ``_stacked``
and ``_stacked_first`` are after it.

Run::

    python -m benchmarks.micro.scale_out --quick     # GPT-2 small on 8 devices and HSDP 2x4
    python -m benchmarks.micro.scale_out             # every model × mesh × optimizer
    python -m benchmarks.micro.scale_out --models gpt2_small,moe_ep --meshes 8,64,2x4 \\
        --optimizers optorth.muon,optax.contrib.muon --out /tmp/scale_out.md
    python -m benchmarks.micro.scale_out --jobs 2   # two processes at once
    python -m benchmarks.micro.scale_out \\
        --render benchmarks/results/scale_out_before_cpu.jsonl,new.jsonl

``--fsdp-rule first`` shards each leaf's first divisible axis instead of its largest (a stacked
kernel ``(12, d, out)`` is then sharded on its layer axis at N ≤ 4); ``--axis-types explicit``
uses explicit mesh axes (``optax.contrib.muon`` then fails with ``ShardingTypeError``). The
abstract arguments carry their shardings in their types: under explicit axes an argument
without one is traced as replicated, and the table would count its all-gather at entry. The
whole table (42 processes) is compile-bound: 23 to 43 minutes with ``--jobs 2`` on 2 cores
shared with other work (GPT-2 medium on 64 devices: 2 to 6 minutes for its 3 compiles);
``--quick`` takes 2 to 3 minutes.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

MESHES = {  # name: ((axis names), (sizes))
    **{str(n): (("fsdp",), (n,)) for n in (2, 4, 8, 16, 32, 64)},
    "2x4": (("replica", "fsdp"), (2, 4)),
    "4x2": (("fsdp", "tensor"), (4, 2)),
}
MESH_LABEL = {"2x4": "HSDP replica 2 × fsdp 4", "4x2": "FSDP 4 × tensor 2"}
QUICK = dict(models="gpt2_small", meshes="8,2x4")
RESULTS = os.path.join(ROOT, "benchmarks", "results")


# ----------------------------------------------------------------------------- child process
def _state_specs(state, params_specs, params):
    """State leaves shaped like a parameter get its spec (matched by path suffix), others P()."""
    import jax
    from jax.sharding import PartitionSpec as P

    from benchmarks.micro._scale_models import path_string

    by_path = {path_string(p): (x.shape, s) for (p, x), s in zip(
        jax.tree_util.tree_flatten_with_path(params)[0], jax.tree.leaves(
            params_specs, is_leaf=lambda v: isinstance(v, P)), strict=True)}

    def spec(path, x):
        parts = path_string(path).split("/")
        for start in range(len(parts)):
            shape_spec = by_path.get("/".join(parts[start:]))
            if shape_spec is not None and shape_spec[0] == x.shape:
                return shape_spec[1]
        return P()

    return jax.tree_util.tree_map_with_path(spec, state)


def _mismatches(compiled_shardings, expected_shardings, abstract) -> list[str]:
    """Paths of the leaves whose compiled sharding differs from the expected one."""
    import jax

    from benchmarks.micro._scale_models import path_string

    got = jax.tree.leaves(compiled_shardings)
    want = jax.tree.leaves(expected_shardings)
    leaves = jax.tree_util.tree_flatten_with_path(abstract)[0]
    return [f"{path_string(path)}: {b.spec} -> {a.spec}"
            for a, b, (path, x) in zip(got, want, leaves, strict=True)
            if not a.is_equivalent_to(b, len(x.shape))]


def _sources(collectives, top: int = 6) -> list[tuple[str, int, float]]:
    """``(JAX operation, executions, bytes per device)`` of the collectives, largest first."""
    total: dict[str, list[float]] = {}
    for c in collectives:
        entry = total.setdefault(c.source or "(compiler)", [0, 0.0])
        entry[0] += c.executions
        entry[1] += c.executions * c.bytes
    ranked = sorted(total.items(), key=lambda kv: -kv[1][1])[:top]
    return [(name, int(runs), moved) for name, (runs, moved) in ranked]


def compile_row(model, tx_name, mesh, axis_types, rule):
    """Compiles one update and returns its measurements (a dict)."""
    import jax
    from jax.sharding import NamedSharding

    from benchmarks.micro._hlo import analyze_compiled
    from benchmarks.micro._scale_models import OPTIMIZERS, partition_specs

    params = model.params
    if mesh is None:
        tx = OPTIMIZERS[tx_name](model, None)
        state = jax.eval_shape(tx.init, params)
        start = time.perf_counter()
        compiled = jax.jit(tx.update).lower(params, state, params).compile()
        cost = analyze_compiled(compiled)
        return dict(flops=cost.dot_flops, temp_bytes=cost.temp_bytes,
                    compile_s=time.perf_counter() - start)
    p_specs = partition_specs(model, dict(mesh.shape), rule)

    def named(specs):
        return jax.tree.map(lambda s: NamedSharding(mesh, s), specs,
                            is_leaf=lambda v: isinstance(v, jax.sharding.PartitionSpec))

    def placed(tree, shardings):  # the sharding in the type: explicit axes see it at trace
        return jax.tree.map(lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh),
                            tree, shardings)

    p_sh = named(p_specs)
    params = placed(params, p_sh)
    tx = OPTIMIZERS[tx_name](model, params)
    with jax.set_mesh(mesh):
        state = jax.eval_shape(tx.init, params)
    s_sh = named(_state_specs(state, p_specs, params))
    state = placed(state, s_sh)
    start = time.perf_counter()
    with jax.set_mesh(mesh):
        compiled = jax.jit(tx.update, in_shardings=(p_sh, s_sh, p_sh)).lower(
            placed(params, p_sh), placed(state, s_sh), placed(params, p_sh)).compile()
    compile_s = time.perf_counter() - start
    cost = analyze_compiled(compiled, mesh)
    out_updates, out_state = compiled.output_shardings
    return dict(flops=cost.dot_flops, counts=cost.counts, bytes=cost.bytes,
                axis_bytes=cost.axis_bytes, total_bytes=cost.total_bytes,
                temp_bytes=cost.temp_bytes, unknown_trip_loops=len(cost.unknown_trip_loops),
                sources=_sources(cost.collectives),
                update_mismatches=_mismatches(out_updates, p_sh, params),
                state_mismatches=_mismatches(out_state, s_sh, state), compile_s=compile_s,
                axis_types=axis_types)


def child(args) -> None:
    """Runs in the subprocess: one model on one mesh, every optimizer; JSON lines on stdout."""
    import jax
    from jax.sharding import AxisType

    from benchmarks.micro import _scale_models

    _scale_models.MEMORY_BUDGET = args.budget_mib * 2**20
    model = _scale_models.MODELS[args.child_model]()
    mesh = None
    if args.child_mesh != "1":
        names, sizes = MESHES[args.child_mesh]
        kind = AxisType.Explicit if args.axis_types == "explicit" else AxisType.Auto
        mesh = jax.make_mesh(sizes, names, axis_types=(kind,) * len(names))
    for tx_name in args.optimizers.split(","):
        row = dict(model=model.name, mesh=args.child_mesh, optimizer=tx_name,
                   param_bytes=model.param_bytes, matrix_bytes=model.matrix_bytes,
                   devices=jax.device_count())
        try:
            row.update(compile_row(model, tx_name, mesh, args.axis_types, args.fsdp_rule))
        except Exception as err:  # noqa: BLE001 - reported in the table (e.g. optax, Explicit)
            row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:160]}"
        print("ROW " + json.dumps(row), flush=True)


# ----------------------------------------------------------------------------- parent
def _devices(mesh_name: str) -> int:
    return 1 if mesh_name == "1" else math.prod(MESHES[mesh_name][1])


def run_config(model: str, mesh_name: str, args) -> list[dict]:
    """One (model, mesh) in a fresh process with the right number of simulated devices."""
    flags = os.environ.get("XLA_FLAGS", "")
    env = dict(os.environ, XLA_FLAGS=f"{flags} --xla_force_host_platform_device_count="
                                     f"{_devices(mesh_name)}".strip())
    command = [sys.executable, "-m", "benchmarks.micro.scale_out", "--child-model", model,
               "--child-mesh", mesh_name, "--optimizers", args.optimizers,
               "--axis-types", args.axis_types, "--fsdp-rule", args.fsdp_rule,
               "--budget-mib", str(args.budget_mib)]
    start = time.perf_counter()
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True,
                              timeout=args.timeout, cwd=ROOT)
        out, failure = done.stdout, (done.stderr[-600:] if done.returncode else "")
    except subprocess.TimeoutExpired as err:
        out = err.stdout.decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        failure = f"timed out after {args.timeout} s"
    rows = [json.loads(line[4:]) for line in out.splitlines() if line.startswith("ROW ")]
    seen = {r["optimizer"] for r in rows}
    rows += [dict(model=model, mesh=mesh_name, optimizer=name, error=failure or "no output")
             for name in args.optimizers.split(",") if name not in seen]
    print(f"  {model} on {mesh_name}: {time.perf_counter() - start:.0f} s", file=sys.stderr,
          flush=True)
    return rows


def applicable(model: str, mesh_name: str) -> bool:
    """Expert sharding needs the fsdp axis to divide the 8 experts."""
    if model != "moe_ep":
        return True
    names, sizes = MESHES[mesh_name]
    return 8 % dict(zip(names, sizes, strict=True)).get("fsdp", 1) == 0


def add_ratios(rows: list[dict]) -> None:
    """Work ratio to the one-device ideal and temp memory ÷ optax.contrib.muon's, in place."""
    ideal = {(r["model"], r["optimizer"]): r.get("flops") for r in rows if r["mesh"] == "1"}
    optax_temp = {(r["model"], r["mesh"]): r.get("temp_bytes") for r in rows
                  if r["optimizer"] == "optax.contrib.muon"}
    for r in rows:
        if r["mesh"] == "1" or "error" in r:
            continue
        total = ideal.get((r["model"], r["optimizer"]))
        n = _devices(r["mesh"])
        r["work_ratio"] = r["flops"] / (total / n) if total else None
        base = optax_temp.get((r["model"], r["mesh"]))
        r["temp_ratio"] = r["temp_bytes"] / base if base else None


# ----------------------------------------------------------------------------- report
KIND_SHORT = {"all-to-all": "a2a", "all-gather": "ag", "all-reduce": "ar",
              "reduce-scatter": "rs", "collective-permute": "cp"}


def _fmt(value, spec=".2f", missing="–"):
    return missing if value is None else format(value, spec)


def _collectives_cell(r) -> str:
    parts = [f"{int(round(v))} {KIND_SHORT[k]}" for k, v in r["counts"].items() if v]
    return ", ".join(parts) or "0"


def _axes_cell(r) -> str:
    p = r["param_bytes"]
    return ", ".join(f"{a} {v / p:.3f}" for a, v in r["axis_bytes"].items())


def _count(value) -> int:
    """Mismatched leaves: a list of paths (older rows: the count)."""
    return value if isinstance(value, int) else len(value)


def _out_cell(r) -> str:
    updates, state = _count(r["update_mismatches"]), _count(r["state_mismatches"])
    if not updates and not state:
        return "yes"
    return f"no: {updates} updates, {state} state leaves"


def markdown(rows: list[dict], header: str) -> str:
    cols = ("model", "mesh", "optimizer", "work/ideal", "collectives (executions)",
            "bytes/P", "bytes/Pₘ", "bytes/P across axis", "temp MiB", "temp ÷ optax muon",
            "out = params")
    lines = [header, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        if r["mesh"] == "1":
            continue
        mesh = MESH_LABEL.get(r["mesh"], f"FSDP {r['mesh']}")
        if "error" in r:
            lines.append(f"| {r['model']} | {mesh} | {r['optimizer']} | fails: "
                         f"{r['error'][:120]} |" + " |" * (len(cols) - 4))
            continue
        cells = (r["model"], mesh, r["optimizer"], _fmt(r.get("work_ratio")),
                 _collectives_cell(r), f"{r['total_bytes'] / r['param_bytes']:.3f}",
                 f"{r['total_bytes'] / r['matrix_bytes']:.3f}", _axes_cell(r),
                 f"{r['temp_bytes'] / 2**20:.0f}", _fmt(r.get("temp_ratio")), _out_cell(r))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def mismatch_notes(rows: list[dict]) -> str:
    """The update leaves whose output sharding differs from the parameter's, per row."""
    notes = [f"- {r['model']}, {r['mesh']}, {r['optimizer']}: " + "; ".join(
        r["update_mismatches"][:6]) for r in rows if isinstance(r.get("update_mismatches"), list)
        and r["update_mismatches"]]
    return "\nUpdates not sharded like their parameters (expected -> compiled):\n\n" + \
        "\n".join(notes) + "\n" if notes else ""


def parse_args(argv=None):
    from benchmarks.micro._scale_models import MODELS, OPTIMIZERS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", help=f"comma list of {list(MODELS)} (default: all)")
    p.add_argument("--meshes", help=f"comma list of {list(MESHES)} (N: 1-D FSDP; 2x4: HSDP; "
                   f"4x2: FSDP×TP; default: all)")
    p.add_argument("--optimizers", default=",".join(OPTIMIZERS),
                   help=f"comma list of {list(OPTIMIZERS)}")
    p.add_argument("--quick", action="store_true", help=f"default to {QUICK['models']} on "
                   f"meshes {QUICK['meshes']} (a few minutes)")
    p.add_argument("--jobs", type=int, default=1, help="(model, mesh) processes at once")
    p.add_argument("--axis-types", choices=("auto", "explicit"), default="auto")
    p.add_argument("--fsdp-rule", choices=("largest", "first"), default="largest",
                   help="which axis of a leaf FSDP shards: the largest it divides, or the first")
    p.add_argument("--budget-mib", type=int, default=16,
                   help="the memory budget of the optorth.muon+budget rows, in MiB")
    p.add_argument("--timeout", type=int, default=900, help="seconds per (model, mesh) process")
    p.add_argument("--out", default=os.path.join(RESULTS, "scale_out_cpu.md"),
                   help="markdown file (the JSON lines go next to it, .jsonl)")
    p.add_argument("--render", help="comma list of .jsonl files to rebuild the table from, "
                   "compiling nothing (a later file's row replaces an earlier one of the same "
                   "model, mesh and optimizer)")
    p.add_argument("--child-model", help=argparse.SUPPRESS)
    p.add_argument("--child-mesh", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    defaults = QUICK if args.quick else dict(models=",".join(MODELS), meshes=",".join(MESHES))
    args.models = args.models or defaults["models"]
    args.meshes = args.meshes or defaults["meshes"]
    for name, choices in ((args.models, MODELS), (args.meshes, MESHES),
                          (args.optimizers, OPTIMIZERS)):
        bad = [v for v in name.split(",") if v not in choices]
        if bad and not args.child_model:
            p.error(f"unknown {bad}; choose from {list(choices)}")
    return args


def _jax_version() -> str:
    from importlib.metadata import version

    return version("jax")


def render(args, argv) -> None:
    """Rebuilds the table from earlier JSON lines (e.g. a full run and a partial rerun)."""
    merged: dict[tuple, dict] = {}
    for path in args.render.split(","):
        with open(path) as f:
            for line in f:
                r = json.loads(line)
                merged[(r["model"], r["mesh"], r["optimizer"])] = r
    rows = list(merged.values())
    add_ratios(rows)
    header = (f"Rebuilt from {args.render} (see each file's first run for its settings). "
              f"P = the model's parameter bytes, Pₘ = those of the leaves optorth sends to "
              f"Newton–Schulz. Command: python -m benchmarks.micro.scale_out {' '.join(argv)}")
    write(args, rows, markdown(rows, header) + mismatch_notes(rows))


def write(args, rows: list[dict], table: str) -> None:
    print(table)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(table)
    with open(os.path.splitext(args.out)[0] + ".jsonl", "w") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))


def main(argv=None) -> None:
    args = parse_args(argv)
    argv = argv if argv is not None else sys.argv[1:]
    if args.child_model:
        child(args)
        return
    if args.render:
        render(args, argv)
        return
    start = time.perf_counter()
    configs = [(model, mesh_name) for model in args.models.split(",")
               for mesh_name in ["1"] + args.meshes.split(",")  # "1": the one-device ideal
               if mesh_name == "1" or applicable(model, mesh_name)]
    jsonl = os.path.splitext(args.out)[0] + ".jsonl"
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(jsonl, "w") as partial:  # rows as they come; rewritten with the ratios below

        def run(config):
            rows = run_config(*config, args)
            partial.write("".join(json.dumps(r) + "\n" for r in rows))
            partial.flush()
            return rows

        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            rows = [r for rs in pool.map(run, configs) for r in rs]
    add_ratios(rows)
    wall = time.perf_counter() - start
    header = (f"Compiled per-device cost of one update ({args.axis_types} axes, FSDP shards "
              f"each leaf's {args.fsdp_rule} divisible axis). P = the model's parameter bytes, "
              f"Pₘ = those of the leaves optorth sends to Newton–Schulz. {os.cpu_count()} "
              f"cores, {wall:.0f} s wall, jax {_jax_version()}. Command: python "
              f"benchmarks/micro/scale_out.py {' '.join(argv)}")
    write(args, rows, markdown(rows, header) + mismatch_notes(rows))


if __name__ == "__main__":
    main()
