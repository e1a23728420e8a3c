"""``Distribution``: how whole-matrix work is divided over a device mesh, as one config object.

Newton–Schulz multiplies whole matrices, so on a mesh optorth moves equally shaped matrices
into stacks sharded on their *stack* axis (each device iterates on whole matrices, with no
communication inside the loop) and moves the results back to the parameters' layout. This
object says which mesh axes may carry those stacks, whether matrices a device already holds
whole stay where they are, and how many bytes of matrices one device iterates on at once.
It is frozen, validated where it is built and hashable, so it is static under ``jax.jit`` and
``optax.inject_hyperparams``; off a mesh it costs nothing.
"""

from __future__ import annotations

import dataclasses

from optorth._checks import check_bool, check_choice, check_positive_int

MODES = ("auto", "always", "never")
_WHO = "Distribution"


def _axis_names(name: str, value) -> tuple[str, ...] | None:
    if value is None:
        return None
    names = (value,) if isinstance(value, str) else value
    try:
        names = tuple(names)
    except TypeError:
        names = (value,)
    if not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"{_WHO}: {name} must be mesh axis names (strings), e.g. "
                         f"{name}=('fsdp',); got {value!r}.")
    if len(set(names)) != len(names):
        raise ValueError(f"{_WHO}: {name}={value!r} repeats an axis; list each axis once.")
    return names


@dataclasses.dataclass(frozen=True)
class Distribution:
    """Which mesh axes carry the stacks of whole matrices, and what stays local.

    Attributes:
      mode: ``"auto"`` distributes a stack when it helps: under explicit mesh axes
        (``jax.sharding.AxisType.Explicit``) only stacks holding sharded leaves, under
        automatic axes every stack; ``"always"`` every stack; ``"never"`` none (XLA then
        partitions the products itself, with collectives inside the iteration).
      axes: the mesh axes that may carry a stack, in the order they split it. ``None``: under
        explicit axes, the axes the stack's parameters are actually sharded on; under
        automatic axes (layouts are not visible while tracing) the axes the parameters were
        sharded on when ``init`` saw them placed outside ``jax.jit``, else every axis of
        size > 1. When ``init`` runs under ``jax.jit``, name the axes or use `for_params`.
      replica_axes: axes that never carry a stack (the slow cross-slice link of an HSDP mesh);
        the work is repeated on each replica instead, which costs no communication.
      keep_local: a leaf that holds whole matrices on each device already (sharded only on a
        batch axis: experts, layers) is orthogonalized where it lies, with no collective, and
        a leaf whose matrices divide evenly over the devices is moved as its own stack instead
        of being concatenated with other leaves.
      layouts: the parameters' layouts, ``((path, PartitionSpec entries), ...)`` as
        `for_params` records them; under automatic axes they stand in for the layouts
        that tracing hides (a leaf whose path is not listed leaves the plan as without them).
      memory_budget: bytes of matrices (counted in float32, the iteration's precision, or the
        parameters' dtype if wider) that one device gathers and iterates on at once; a larger
        stack runs as pieces. Under a budget every piece, of every shape, waits for the one
        before it (moved, iterated and moved back), so the working set is one piece; the
        pieces no longer overlap their communication with each other's compute. It bounds
        the gathered working set, not below one matrix per device. ``None``: no limit.
      max_imbalance: when whole matrices leave devices idle (more devices than matrices of a
        shape, or a count that does not divide evenly), single matrices are split over
        groups of devices, each holding a block of columns (partial Gram matrices summed,
        m×m products split by rows), until the planned work of the busiest device is at most
        this multiple of an even split. Splitting adds collectives inside the iteration, so
        the default tolerates 15%. ``None``: never split a matrix.

    Raises:
      ValueError: at construction, for an unknown mode, axis names that are not strings, an
        axis both in ``axes`` and ``replica_axes``, or a budget that is not a positive int;
        while tracing, for an axis the mesh does not have.

    Example:
      >>> import optorth
      >>> ns = optorth.NewtonSchulz(distribute=optorth.Distribution(replica_axes="replica"))
      >>> ns.distribute.replica_axes
      ('replica',)

    References:
      Liu et al., "Muon is Scalable for LLM Training" (arXiv 2502.16982).
      Xu et al., "GSPMD: General and Scalable Parallelization for ML Computation Graphs"
      (arXiv 2105.04663).
    """

    mode: str = "auto"
    axes: tuple[str, ...] | None = None
    replica_axes: tuple[str, ...] = ()
    keep_local: bool = True
    memory_budget: int | None = None
    layouts: tuple[tuple[str, tuple], ...] | None = None
    max_imbalance: float | None = 1.15

    def __post_init__(self):
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        check_choice(_WHO, "mode", self.mode, MODES)
        set_("axes", _axis_names("axes", self.axes))
        set_("replica_axes", _axis_names("replica_axes", self.replica_axes) or ())
        both = set(self.axes or ()) & set(self.replica_axes)
        if both:
            raise ValueError(f"{_WHO}: axes {sorted(both)} are named both in axes and in "
                             f"replica_axes; a replica axis never carries a stack.")
        set_("keep_local", check_bool(_WHO, "keep_local", self.keep_local))
        set_("memory_budget", check_positive_int(_WHO, "memory_budget", self.memory_budget,
                                                 allow_none=True))
        if self.layouts is not None:
            set_("layouts", _checked_layouts(self.layouts))
        if self.max_imbalance is not None:
            set_("max_imbalance", _checked_imbalance(self.max_imbalance))

    def layout_of(self, path: str) -> tuple | None:
        """The recorded ``PartitionSpec`` entries of the leaf at ``path`` (``None``: none)."""
        return None if self.layouts is None else dict(self.layouts).get(path)

    @classmethod
    def for_params(cls, params, **settings) -> "Distribution":
        """The policy that knows how ``params`` are laid out on their mesh.

        Reads the concrete shardings of placed arrays (call it outside ``jax.jit``) and records
        each leaf's ``PartitionSpec`` by path, and as ``axes`` the mesh axes some parameter is
        sharded on. Under automatic mesh axes, whose layouts tracing hides, the plan then is
        the one explicit axes give: no replica axis carries a stack, locally held matrices
        stay local, matrices sharded over two axes move one axis at a time, and the updates
        come back in the parameters' layouts. ``settings`` are the other fields.

        Example:
          >>> import jax.numpy as jnp, optorth
          >>> optorth.Distribution.for_params({"w": jnp.ones((4, 8))}).axes
          ()
        """
        import jax

        used, layouts = [], []
        for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
            spec = getattr(getattr(leaf, "sharding", None), "spec", None)
            if spec is None:
                continue
            entries = _entries(spec, getattr(leaf, "ndim", len(spec)))
            layouts.append((_leaf_path(jax.tree_util.keystr(path)), entries))
            used += [a for e in entries for a in entry_axes(e) if a not in used]
        return cls(axes=tuple(used), layouts=tuple(layouts), **settings)


def _leaf_path(path: str) -> str:
    """The path of a parameter as the updates' matrix leaves are named: an NNX variable or a
    Linen metadata box is one leaf, so the ``.value`` of its array is dropped."""
    return path[:-len(".value")] if path.endswith(".value") else path


def entry_axes(entry) -> tuple[str, ...]:
    """The mesh axes of one ``PartitionSpec`` entry (``None``, a name or a tuple of names)."""
    return () if entry is None else ((entry,) if isinstance(entry, str) else tuple(entry))


def _entries(spec, ndim: int) -> tuple:
    """``PartitionSpec`` entries as plain hashable values, padded with ``None`` to ``ndim``."""
    entries = tuple(e if e is None or isinstance(e, str) else tuple(e) for e in spec)
    return entries + (None,) * (ndim - len(entries))


def _checked_layouts(layouts) -> tuple:
    try:
        checked = tuple((str(path), tuple(entries)) for path, entries in layouts)
        hash(checked)
    except (TypeError, ValueError):
        raise ValueError(f"{_WHO}: layouts must be ((path, PartitionSpec entries), ...) as "
                         f"Distribution.for_params(params) records them; got "
                         f"{type(layouts).__name__}.") from None
    return checked


def _checked_imbalance(value) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 1
    if not ok or value != value or value == float("inf"):
        raise ValueError(f"{_WHO}: max_imbalance={value!r}; expected a finite number >= 1 (the "
                         f"busiest device's work as a multiple of an even split), or None to "
                         f"never split a matrix over devices.")
    return float(value)


def observing(policy: Distribution, params) -> Distribution:
    """``policy`` knowing the layouts of ``params`` (as `Distribution.for_params` records
    them) when it names neither axes nor layouts and ``params`` are placed arrays on one mesh
    whose axes are automatic (tracing would hide their layouts); else ``policy`` itself.

    Called by ``init`` on the parameters it is given, so that the default policy plans an
    HSDP or FSDP × TP mesh as it does under explicit axes when ``init`` runs outside
    ``jax.jit`` (as ``nnx.Optimizer`` and most training loops call it).
    """
    import jax

    if policy.mode == "never" or policy.axes is not None or policy.layouts is not None:
        return policy
    placed = [x for x in jax.tree.leaves(params)
              if isinstance(x, jax.Array) and not isinstance(x, jax.core.Tracer)]
    meshes = {getattr(x.sharding, "mesh", None) for x in placed}
    if not placed or len(meshes) != 1 or None in meshes:
        return policy
    mesh = meshes.pop()
    if not isinstance(mesh, jax.sharding.Mesh) or mesh.size < 2 or any(
            t != jax.sharding.AxisType.Auto for t in mesh.axis_types):
        return policy
    settings = {f.name: getattr(policy, f.name) for f in dataclasses.fields(policy)
                if f.name not in ("axes", "layouts")}
    return Distribution.for_params(params, **settings)


def as_distribution(value, who: str) -> Distribution:
    """A `Distribution` from itself or the shorthand ``None`` / ``True`` / ``False``."""
    if isinstance(value, Distribution):
        return value
    if value is None or isinstance(value, bool):
        return Distribution(mode={None: "auto", True: "always", False: "never"}[value])
    raise ValueError(f"{who}: distribute={value!r}; expected an optorth.Distribution (or None, "
                     f"True, False as shorthand for its modes 'auto', 'always', 'never').")
