"""`ChainOptimizer`: one `torch.optim.Optimizer` for orthogonalized and AdamW groups.

Every param group carries an ``algorithm`` key: ``"orthogonal"`` groups run the preset's chain of
stages (momentum, orthogonalize, adaptive scalings, shape scale, decay), ``"adamw"`` groups run
decoupled weight decay + Adam. Within a group, parameters are bucketed by the shape of their matrix
view and each bucket goes through the chain once as a stack ``(k, m, n)``:

* 2-D weights are used as they are; conv / N-D weights are viewed as ``(out, rest)`` and all shape
  factors are computed from that view;
* with ``batch_3d=True`` a 3-D parameter ``(E, m, n)`` counts as ``E`` matrices ``m x n``
  (e.g. stacked expert weights), otherwise it is viewed as ``(E, m*n)``.

Hyperparameters are read from the groups at every step (LR schedulers and ``add_param_group``
work) and enter the arithmetic as device tensors; nothing in ``step()`` reads a value back from the
device. ``p.grad`` is never modified, parameters with ``grad=None`` are skipped, and all gradients
are checked before anything is written, so a rejected step changes nothing.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.optim import Optimizer

from ..distributed import modes as DM
from ..distributed.engine import Bucket, build_contexts, finite
from ..orth import workspace
from ..orth.workspace import Workspace
from ..stages import Stack, adam, decay_weights, shape_factor
from ..stages.adam import adamw_inplace
from ..stages.adam import fused_applies as adam_fused_applies
from ..stages.error_feedback import enabled as error_feedback_enabled
from ..stages.orthogonalize import auto_schedule, describe_orthogonalizer
from . import validate as V

Stage = Callable[[Stack], None]
#: format of ``state_dict()["muonlab"]`` (bump when the state layout changes)
STATE_VERSION = 1
NONFINITE = ("skip", "raise", "propagate")
#: the mean gradient size (elements) from which the skip gate is applied while stacking, one
#: ``where`` per gradient; smaller ones are concatenated first (one dispatch for all of them).
_GATED_COPY_MIN = 1 << 14
ALGORITHMS = ("orthogonal", "adamw")


def _compute_dtype(p: Tensor) -> torch.dtype:
    # State and update arithmetic in fp32, or in the parameter's dtype when it is wider (fp64 ->
    # exact reference tests).
    return torch.float64 if p.dtype == torch.float64 else torch.float32


class ChainOptimizer(Optimizer):
    """Base class of every muonlab optimizer; a preset sets ``chain`` and its defaults.

    Args:
        params: parameters, or param-group dicts. Groups may set ``algorithm`` to
            ``"orthogonal"`` (default) or ``"adamw"``. A plain iterable of tensors is split:
            tensors with ``ndim >= 2`` are orthogonalized, the rest use AdamW (with a warning: use
            :func:`muonlab.param_groups` to keep embeddings and heads out of the orthogonal part).
        defaults: hyperparameters of orthogonal groups.
        adamw_defaults: hyperparameters of AdamW groups (``lr``, ``betas``, ``eps``,
            ``weight_decay``).
        process_group: for DDP (parameters replicated on every rank): a ``ProcessGroup`` or a 1-D
            ``DeviceMesh``; each rank then orthogonalizes only its share of the matrices. Not
            needed under FSDP2 (the mesh is read from the DTensor parameters); never with
            ``ZeroRedundancyOptimizer``. See docs/distributed.md.
        nonfinite: policy for a step whose gradients hold NaN or Inf (checked over all gradients of
            the step at once): ``"skip"`` (default) leaves every parameter and state value
            unchanged (an exact zero may change sign), decided on the device with no host sync, and counts the step in
            :attr:`skipped_steps`; ``"raise"`` raises ``FloatingPointError`` before anything
            changes (one host sync per step); ``"propagate"`` does what torch.optim does (the
            NaN enters the update and the state).
    """

    #: registry name of the preset (used in messages and tables)
    name: ClassVar[str] = "chain"
    #: stages applied, in order, to orthogonal groups
    chain: ClassVar[tuple[Stage, ...]] = ()
    #: stages applied to AdamW groups
    adamw_chain: ClassVar[tuple[Stage, ...]] = (decay_weights, adam)
    #: algorithm of groups that do not name one (AdamW sets "adamw")
    default_algorithm: ClassVar[str] = "orthogonal"
    #: orthogonal stacks carry a copy of W (``stack.weights``) for updates that read it (Pion)
    needs_weights: ClassVar[bool] = False
    #: step() needs the loss (``step(closure)`` or ``step(loss=...)``), e.g. NGNM's step size
    needs_loss: ClassVar[bool] = False

    def __init__(
        self,
        params: Iterable[Any],
        defaults: dict[str, Any],
        adamw_defaults: dict[str, Any],
        process_group: Any = None,
        nonfinite: str = "skip",
    ):
        V.one_of("nonfinite", nonfinite, NONFINITE)
        self._nonfinite = nonfinite
        self._skipped: Tensor | None = None  # device counter of skipped steps
        self._adamw_defaults = dict(adamw_defaults)
        self._process_group = DM.as_process_group(process_group)
        if self.default_algorithm == "orthogonal":
            self.validate_group(dict(defaults, algorithm="orthogonal", params=[]))
        self.validate_group(dict(adamw_defaults, algorithm="adamw", params=[]))
        # stacked state buffers between steps, one per (group, bucket)
        self._stack_cache: dict[tuple, dict[str, Any]] = {}
        self._workspace = Workspace()  # CPU scratch kept between steps (muonlab.orth.workspace)
        self._compile_kwargs: dict[str, Any] | None = None  # set by compile()
        self._compiled: dict[tuple, Callable] = {}  # bucket key -> its compiled chain
        super().__init__(self._split_plain(params), dict(defaults, algorithm=self.default_algorithm))
        if self._process_group is not None:
            DM.check_symmetric(self.param_groups, self._process_group)

    # ------------------------------------------------------------------ groups
    def _split_plain(self, params: Iterable[Any]) -> list[dict[str, Any]]:
        if isinstance(params, Tensor):
            raise TypeError("params must be an iterable of tensors or dicts, got a single Tensor")
        params = list(params)
        if not params or isinstance(params[0], dict):
            return params
        tensors = [p[1] if isinstance(p, tuple) else p for p in params]
        if self.default_algorithm == "adamw":
            return [{"params": tensors, "algorithm": "adamw"}]
        matrices = [p for p in tensors if p.dim() >= 2]
        others = [p for p in tensors if p.dim() < 2]
        warnings.warn(
            f"{type(self).__name__} got a plain parameter list: every >=2-D tensor is orthogonalized and the "
            "rest uses AdamW. Embeddings and output heads should use AdamW too; build the groups with "
            "muonlab.param_groups(model) to route them correctly.",
            UserWarning,
            stacklevel=4,
        )
        groups = []
        if matrices:
            groups.append({"params": matrices, "algorithm": "orthogonal"})
        if others:
            groups.append({"params": others, "algorithm": "adamw"})
        return groups

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group; missing keys come from the defaults of its ``algorithm``."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, got {type(param_group).__name__}")
        algorithm = param_group.get("algorithm", self.default_algorithm)
        if self.default_algorithm == "adamw":
            algorithm = "adamw"  # plain AdamW: routed groups keep their overrides, all use Adam
        if algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm={algorithm!r}: expected one of {ALGORITHMS}")
        group = dict(param_group, algorithm=algorithm)
        if algorithm == "adamw":
            V.no_copied_kwargs(group, self.defaults, self._adamw_defaults)
            for key, value in self._adamw_defaults.items():
                group.setdefault(key, value)
        else:
            for key, value in self.defaults.items():
                group.setdefault(key, value)
        params = group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        group["params"] = params
        for p in params:
            p = p[1] if isinstance(p, tuple) else p
            if isinstance(p, Tensor):
                if p.is_complex() or not p.is_floating_point():
                    raise ValueError(f"parameter of dtype {p.dtype}: only real floating-point parameters are supported")
                if algorithm == "orthogonal" and p.dim() < 2:
                    raise ValueError(
                        f"parameter of shape {tuple(p.shape)} in an orthogonal group: only >=2-D tensors can be "
                        "orthogonalized; put it in a group with algorithm='adamw'"
                    )
        self.validate_group(group)
        DM.resolve(group, getattr(self, "_process_group", None))  # layout errors now, not at the first step
        super().add_param_group(group)

    def validate_group(self, group: dict[str, Any]) -> None:
        """Raise ``ValueError`` naming the key and value of any invalid hyperparameter."""
        if group["algorithm"] == "adamw":
            V.positive_or_zero("lr", group["lr"])
            V.betas("betas", group["betas"])
            V.divisor_eps("eps", group["eps"])
            V.positive_or_zero("weight_decay", group["weight_decay"])
            V.decoupled_decay(group)
        else:
            self.validate_orthogonal(group)

    def validate_orthogonal(self, group: dict[str, Any]) -> None:
        """Preset-specific checks of an orthogonal group (override and call super)."""
        V.common_orthogonal(group)

    def describe(self) -> str:
        """The routing table as this optimizer sees it: one row per parameter.

        Columns: name, matrix view, algorithm, lr, effective lr (lr times the shape factor of the
        group's ``adjust_lr`` where the preset has one; adaptive presets scale it further at each
        step), weight decay, and the distributed mode (``local``, ``replicated``, or ``sharded``
        with the layout: ``rows`` / ``cols`` / ``batch`` / ``elementwise``).
        """
        rows = [("name", "shape", "view", "algorithm", "lr", "effective lr", "weight_decay", "mode")]
        for i, group in enumerate(self.param_groups):
            names = group.get("param_names") or [f"group{i}.{j}" for j in range(len(group["params"]))]
            mode = DM.resolve(group, self._process_group)
            for name, p in zip(names, group["params"]):
                where = mode
                if mode == "sharded":
                    where += " " + DM.sharding_of(p, group, bool(group.get("batch_3d", False))).kind
                view, count, _ = self.matrix_view(p, group)
                eff = group["lr"]
                # With error feedback lr scales the momentum before the projection (SGD units) and the
                # projection sets the step's size: no shape factor applies.
                if group["algorithm"] != "adamw" and "adjust_lr" in group and not error_feedback_enabled(group):
                    eff *= shape_factor(view[0], view[1], group["adjust_lr"])
                view_text = ("%dx" % count if count > 1 else "") + "x".join(map(str, view))
                if group["algorithm"] != "adamw" and group.get("layout", "out_in") == "in_out":
                    view_text += " (W^T)"
                algorithm = group["algorithm"]
                if algorithm != "adamw" and auto_schedule(group.get("orthogonalizer")) is not None:
                    algorithm += f" ({describe_orthogonalizer(group, view[0], view[1], p)})"  # the per-shape pick
                if algorithm != "adamw" and error_feedback_enabled(group):
                    algorithm += " +EF"
                rows.append((
                    name, "x".join(map(str, p.shape)), view_text,
                    algorithm, f"{group['lr']:.3g}", f"{eff:.3g}", f"{group['weight_decay']:.3g}", where,
                ))
        widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
        lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    # ------------------------------------------------------------------ step
    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None, *, loss: Any = None) -> Any:
        """One optimization step over all groups; returns the loss.

        ``closure`` re-evaluates the loss (under grad mode). ``loss`` passes an already computed loss
        (a tensor; it is not read back) to presets whose update needs it (``needs_loss``: NGNM);
        give one or the other.
        """
        if closure is not None:
            if loss is not None:
                raise ValueError("step(): pass closure or loss, not both")
            with torch.enable_grad():
                loss = closure()
        self._check_gradients()
        buckets = [b for group in self.param_groups for b in self._buckets(group)]
        build_contexts(buckets)
        with self._workspace.session() if self._workspace is not None else contextlib.nullcontext():
            ok = None if self._nonfinite == "propagate" else finite(buckets)  # a 0-D result: nothing escapes
        if ok is not None and self._nonfinite == "raise" and not bool(ok):  # the documented host sync
            raise FloatingPointError(f"{type(self).__name__}: a gradient holds NaN or Inf (nonfinite='raise')")
        gate = ok if self._nonfinite == "skip" else None
        memo: dict[tuple, Tensor] = {}  # this step's small tensors shared by its stacks (Stack.memo)
        for bucket in buckets:
            self._step_bucket(bucket, gate, memo)
        if gate is not None:
            self._skipped = (~gate).long() if self._skipped is None else self._skipped + ~gate
        return loss

    @property
    def skipped_steps(self) -> int:
        """Steps skipped for non-finite gradients (``nonfinite="skip"``). Reading it syncs with the device."""
        return 0 if self._skipped is None else int(self._skipped)

    def _check_gradients(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                g = p.grad
                if g is None:
                    continue
                if g.is_sparse:
                    raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
                if g.is_complex():
                    raise RuntimeError(f"{type(self).__name__} does not support complex gradients")

    @staticmethod
    def matrix_view(p: Tensor, group: dict[str, Any]) -> tuple[tuple[int, ...], int, bool]:
        """(item shape, number of items, squeeze) of ``p`` inside its group's stacks."""
        if group["algorithm"] == "adamw":
            return tuple(p.shape), 1, True
        if p.dim() == 3 and group.get("batch_3d", False):
            return (p.shape[1], p.shape[2]), p.shape[0], False
        if group.get("layout", "out_in") == "in_out":  # stored (in, out), e.g. transformers' Conv1D
            return (p.shape[1], p.shape[0]), 1, True
        return (p.shape[0], math.prod(p.shape[1:])), 1, True

    @staticmethod
    def as_matrices(t: Tensor, group: dict[str, Any], count: int, shape: tuple[int, ...]) -> Tensor:
        """``t`` (a parameter, its gradient or its shard) as ``(count, *shape)``; a view when ``t`` is contiguous."""
        if group["algorithm"] != "adamw" and group.get("layout", "out_in") == "in_out":
            return t.t().unsqueeze(0)
        return t.reshape(count, *shape)

    @staticmethod
    def _merge_for_inplace_adamw(members: dict[tuple, list]) -> dict[tuple, list]:
        """One bucket per dtype and device for AdamW parameters that the fused in-place path takes.

        That path (``stages.adam.adamw_inplace``) runs on the parameters themselves, not on a stack,
        so it needs no common shape: one fused call (one kernel launch on GPUs) instead of one per
        shape. Its key has shape None (the bucket's ``shape`` is then ``()``). Parameters the fused
        kernel cannot run (bf16, non-contiguous) keep their same-shape buckets.
        """
        by_rest: dict[tuple, list[tuple]] = {}
        for key, items in members.items():
            by_rest.setdefault(key[1:], []).append(key)
        out: dict[tuple, list] = {}
        for rest, keys in by_rest.items():
            items = [it for k in keys for it in members[k]]
            if len(keys) > 1 and adam_fused_applies([p for p, _ in items]):
                out[(None, *rest)] = items
            else:
                out.update((k, members[k]) for k in keys)
        return out

    def _buckets(self, group: dict[str, Any]) -> list[Bucket]:
        """The group's parameters bucketed by matrix view, dtype, device (and DTensor layout).

        In the local mode a parameter without a gradient is skipped. In the distributed modes
        membership is static, so every rank issues the same collectives: a parameter without a
        gradient on this rank takes part with a zero gradient.
        """
        mode = DM.resolve(group, self._process_group)
        chain = self.adamw_chain if group["algorithm"] == "adamw" else self.chain
        batch_3d = bool(group.get("batch_3d", False))
        members: dict[tuple, list[tuple[Tensor, Any]]] = {}
        for p in group["params"]:
            if p.grad is None and mode == "local":
                continue
            sharding = DM.sharding_of(p, group, batch_3d) if mode == "sharded" else None
            key = (self.matrix_view(p, group)[0], p.dtype, p.device, sharding.key() if sharding else None)
            members.setdefault(key, []).append((p, sharding))
        if mode == "local" and chain == (decay_weights, adam) and len(members) > 1:
            members = self._merge_for_inplace_adamw(members)
        buckets = []
        for key, items in members.items():
            params = [p for p, _ in items]
            views = [self.matrix_view(p, group) for p in params]
            local_views = [self.matrix_view(DM.local(p), group) for p in params]
            buckets.append(Bucket(
                group=group, params=params, chain=chain, mode=mode, sharding=items[0][1], shape=key[0] or (),
                counts=[c for _, c, _ in views], squeeze=[s for _, _, s in views], local_shape=local_views[0][0],
                local_counts=[c for _, c, _ in local_views], process_group=self._process_group,
                cache_key=(id(group), *key),
            ))
        return buckets

    def _step_bucket(self, b: Bucket, gate: Tensor | None = None, memo: dict[tuple, Tensor] | None = None) -> None:
        if b.chain == (decay_weights, adam) and b.mode != "sharded" and adam_fused_applies(b.params):
            self._step_adamw_inplace(b, gate)  # the AdamW fast path: fused, in place, no stacking
            return
        # The bucket's large temporaries come from the workspace (CPU pages that stay mapped between
        # steps), in the local mode, where nothing outlives the bucket; the distributed modes' async
        # collectives may, so they allocate.
        pooled = b.mode == "local" and self._workspace is not None
        with self._workspace.session() if pooled else contextlib.nullcontext():
            self._step_stack(b, gate, {} if memo is None else memo)

    @property
    def workspace_bytes(self) -> int:
        """Bytes of CPU scratch the optimizer keeps between steps (``muonlab.orth.workspace``; 0 on GPUs)."""
        return 0 if self._workspace is None else self._workspace.nbytes

    @property
    def cpu_workspace(self) -> bool:
        """Whether a CPU step keeps its large temporaries between steps (default True; see ``workspace_bytes``).

        Set it to False where memory is tighter than time: every step then allocates them afresh
        (bitwise the same results, ~17% slower for Muon on the CPU of docs/BENCHMARKS.md).
        """
        return self._workspace is not None

    @cpu_workspace.setter
    def cpu_workspace(self, enabled: bool) -> None:
        if enabled != self.cpu_workspace:
            self._workspace = Workspace() if enabled else None

    def _step_stack(self, b: Bucket, gate: Tensor | None, memo: dict[tuple, Tensor]) -> None:
        params, group, shape, counts = b.params, b.group, b.local_shape, b.local_counts
        dtype = _compute_dtype(params[0])
        # (k, *shape), this rank's part. A single parameter's gradient is used as a view (stages
        # never write into stack.grad); several are concatenated. p.grad itself is never modified.
        grads = [
            torch.zeros((c, *shape), dtype=dtype, device=DM.local(p).device) if p.grad is None
            else self.as_matrices(DM.local(p.grad), group, c, shape)
            for p, c in zip(params, counts)
        ]
        G = _stack_gradients(grads, counts, shape, dtype, gate, memo, owned=params[0].grad is None)
        # One cache per bucket: when the set of parameters with gradients changes, the stacks are
        # rebuilt from the per-parameter state and replace the old ones (nothing stale is kept).
        cache = self._stack_cache.setdefault(b.cache_key, {})
        # Compiled from a bucket's second step (its state exists), in the local mode only: the
        # distributed contexts' collectives stay eager.
        compiled = self._compile_kwargs is not None and b.mode == "local" and "step" in self.state[params[0]]
        stack = Stack(
            grad=G, update=G, group=group, step=None, param_states=[self.state[p] for p in params],
            counts=counts, squeeze=b.squeeze, cache=cache, ctx=b.ctx, gate=gate, fold_gate=not compiled,
            memo=None if compiled else memo,
        )
        stack.param_shapes = [tuple(p.shape) for p in params]
        if self.needs_weights and group["algorithm"] != "adamw":
            stack.weights = torch.cat([self.as_matrices(DM.local(p), group, c, shape) for p, c in zip(params, counts)]).to(dtype)
        steps = stack.buffer("step", "", gated=True)  # (k,) per-parameter step counters, on the device
        stack.step = steps + 1
        stack.step_size = stack.hp("lr")
        run = _run_chain
        if compiled:
            run = self._compiled.get(b.cache_key)
            if run is None:
                run = torch.compile(_chain_copy(len(self._compiled)), **self._compile_kwargs)
                self._compiled[b.cache_key] = run
        run(stack, b.chain, steps, [DM.local(p) for p in params], counts, shape)

    def compile(self, **kwargs: Any) -> ChainOptimizer:
        """Compile each bucket's chain of stages with ``torch.compile(**kwargs)``; returns ``self``.

        Opt-in (the name follows ``torch.nn.Module.compile``): ``opt = muonlab.Muon(groups).compile()``.
        Every bucket (a stack of same-shape matrices of one group) gets its own compiled function,
        traced at its second step, once its state exists, so the shapes are static and Dynamo's
        per-function recompile limit is never shared between buckets. Hyperparameters enter as
        graph inputs (``Stack.hp``), so an LR scheduler that changes ``lr`` every step does not
        recompile after one warm-up step. What stays eager: the first step, the AdamW fast path
        (one fused kernel already), host-side work (bucketing, the non-finite check) and the
        distributed modes (DDP / FSDP2 collectives). Results equal eager up to the reordering of
        floating-point arithmetic by the backend.

        Args:
            kwargs: passed to ``torch.compile`` (``backend``, ``mode``, ``fullgraph``, ...).
        """
        self._compile_kwargs = dict(kwargs)
        self._compiled = {}
        return self

    # Not traced by torch.compile: the fused kernel is already one pass, and tracing it would make
    # the group's float lr a constant guarded by value (an LR scheduler then recompiles every step).
    @torch._dynamo.disable
    def _step_adamw_inplace(self, b: Bucket, gate: Tensor | None) -> None:
        """AdamW over the bucket's parameters themselves (``stages.adam.adamw_inplace``).

        The state has the stack path's keys, shapes and dtypes (``step`` 0-D, ``exp_avg``,
        ``exp_avg_sq``), as standalone tensors, so state dicts are the same either way.
        """
        params, group = b.params, b.group
        states = [self.state[p] for p in params]
        for p, st in zip(params, states):
            if "exp_avg" not in st:
                st["step"] = torch.zeros((), dtype=p.dtype, device=p.device)
                st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        # Distributed modes keep a static membership: a missing gradient counts as zero there.
        grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in params]
        adamw_inplace(
            params, grads, [st["exp_avg"] for st in states], [st["exp_avg_sq"] for st in states],
            [st["step"] for st in states], lr=group["lr"], betas=tuple(group["betas"]), eps=group["eps"],
            weight_decay=group["weight_decay"], gate=gate,
        )

    @staticmethod
    def _write(params: list[Tensor], counts: list[int], shape: tuple[int, ...], stack: Stack) -> None:
        """``W <- W * decay - step_size * update`` for every parameter of the stack."""
        update, step, decay = stack.update, stack.step_size, stack.decay
        if stack.gate is not None:
            # A skipped step writes W * 1 + U * (-0) = W: the update is finite there (the chain ran on
            # a zero gradient from unchanged state), and the gate goes on the small step-size and decay
            # tensors rather than on the full-size update (a where() over it costs ~6 copies on CPU).
            # The where() also drops a NaN step size (NGN-M's on a NaN loss). Values are kept exactly;
            # a -0 weight may come back as +0.
            as_tensor = dict(dtype=update.dtype, device=update.device)
            step = torch.where(stack.gate, torch.as_tensor(step, **as_tensor), 0.0)
            if isinstance(decay, Tensor) or decay != 1.0:
                decay = torch.where(stack.gate, torch.as_tensor(decay, **as_tensor), 1.0)
        if all(p.dtype == update.dtype and p.is_contiguous() for p in params):
            # In place on views of the parameters: no stacking of W and no full-size temporary.
            Ws = [ChainOptimizer.as_matrices(p, stack.group, c, shape) for p, c in zip(params, counts)]
            if isinstance(decay, Tensor):
                if decay.numel() == 1:
                    torch._foreach_mul_(Ws, decay.reshape(()))
                elif decay.dim() == update.dim() and decay.shape[0] == update.shape[0]:
                    torch._foreach_mul_(Ws, list(decay.split(counts)))  # per matrix, e.g. (k, 1, n)
                else:
                    torch._foreach_mul_(Ws, [decay] * len(Ws))  # shared by all matrices
            elif decay != 1.0:
                torch._foreach_mul_(Ws, decay)
            neg = -torch.as_tensor(step, dtype=update.dtype, device=update.device)
            if neg.numel() == 1:
                negs = [neg.reshape(())] * len(Ws)
            elif neg.dim() == update.dim() and neg.shape[0] == update.shape[0]:
                negs = list(neg.split(counts))  # per matrix, e.g. (k, 1, 1)
            else:
                negs = [neg] * len(Ws)
            torch._foreach_addcmul_(Ws, list(update.split(counts)), negs)  # W + U * (-step), fused
            return
        U = step * update  # (k, *shape)
        # Mixed precision (e.g. bf16 parameters): compute in the fp32 stack, round once.
        W = torch.cat([ChainOptimizer.as_matrices(p, stack.group, c, shape) for p, c in zip(params, counts)])
        W = W.to(U.dtype) * decay - U
        transposed = stack.group["algorithm"] != "adamw" and stack.group.get("layout", "out_in") == "in_out"
        for p, w in zip(params, W.split(counts)):
            p.copy_(w[0].t() if transposed else w.reshape(p.shape))

    # ------------------------------------------------------------------ state
    def __getstate__(self) -> dict[str, Any]:
        # copy.deepcopy, pickle and torch.save(opt): torch keeps only defaults, state and groups.
        # The stack cache is rebuilt from the per-parameter state; a process group cannot be
        # pickled, so a copy runs locally until it is given one again.
        state = dict(super().__getstate__(), _adamw_defaults=self._adamw_defaults, _nonfinite=self._nonfinite,
                     _skipped=self._skipped, _compile_kwargs=self._compile_kwargs,  # compiled graphs are rebuilt
                     _workspace_on=self.cpu_workspace)  # the buffers themselves are not copied
        if getattr(self, "_process_group", None) is not None:
            warnings.warn(f"{type(self).__name__}: the copy drops process_group and runs in local mode", stacklevel=2)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._stack_cache = {}
        self._workspace = Workspace() if state.get("_workspace_on", True) else None
        self._process_group = None
        self.__dict__.setdefault("_nonfinite", "skip")
        self.__dict__.setdefault("_skipped", None)
        self.__dict__.setdefault("_compile_kwargs", None)
        self._compiled = {}

    def state_dict(self) -> dict[str, Any]:
        """torch's state dict plus ``muonlab``: format version, optimizer class, group layout."""
        sd = super().state_dict()
        sd["muonlab"] = {"version": STATE_VERSION, "optimizer": type(self).__name__, "groups": self._layout()}
        return sd

    def _layout(self) -> list[tuple[str, int]]:
        return [(g["algorithm"], len(g["params"])) for g in self.param_groups]

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Like :meth:`torch.optim.Optimizer.load_state_dict`, with checks, keeping the state's dtypes.

        A state dict written by another optimizer class, a newer format or a different group
        layout (algorithms and sizes) raises ``ValueError`` before anything changes. torch casts
        floating state to the parameter dtype; muonlab keeps fp32 state for bf16 parameters, so the
        saved dtypes are restored after loading.
        """
        meta = state_dict.get("muonlab")
        if meta is not None:
            if meta.get("version", 0) > STATE_VERSION:
                raise ValueError(f"state dict format version {meta['version']} is newer than this muonlab's {STATE_VERSION}")
            if meta.get("optimizer") != type(self).__name__:
                raise ValueError(f"state dict was saved by {meta.get('optimizer')}, not {type(self).__name__}")
            if [tuple(g) for g in meta.get("groups", [])] != self._layout():
                raise ValueError(
                    f"state dict group layout {meta.get('groups')} (algorithm, parameters) does not match this "
                    f"optimizer's {self._layout()}"
                )
            state_dict = {k: v for k, v in state_dict.items() if k != "muonlab"}
        saved = state_dict["state"]
        ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        super().load_state_dict(state_dict)
        self._stack_cache.clear()
        for i, p in zip(ids, params):
            for key, value in saved.get(i, {}).items():
                if isinstance(value, Tensor) and key in self.state[p]:
                    self.state[p][key] = value.to(device=p.device, copy=True)


def _stack_gradients(
    grads: list[Tensor], counts: list[int], shape: tuple[int, ...], dtype: torch.dtype, gate: Tensor | None,
    memo: dict[tuple, Tensor], owned: bool,
) -> Tensor:
    """The bucket's gradients as one ``(k, *shape)`` stack in ``dtype``; zeros on a skipped step (``gate`` False).

    A single gradient without a gate is used as a view (stages never write into ``stack.grad``).
    ``owned``: a single gradient is a tensor of our own (a zero stand-in for a missing ``p.grad``).
    """
    if gate is not None and all(g.dtype == dtype for g in grads) and (
        len(grads) == 1 or sum(g.numel() for g in grads) >= _GATED_COPY_MIN * len(grads)
    ):
        # The gate applied as the stack is built: one pass per gradient instead of a copy and two
        # in-place passes (cat + mul_ + nan_to_num_: 3.9 ms for four 1M-element gradients on the
        # CPU of docs/BENCHMARKS.md, 2.2 ms this way).
        key = ("zero", dtype, grads[0].device)
        if key not in memo:
            memo[key] = torch.zeros((), dtype=dtype, device=grads[0].device)
        G = workspace.empty((sum(counts), *shape), dtype, grads[0].device)
        for g, part in zip(grads, G.split(counts)):
            torch.where(gate, g, memo[key], out=part)
        return G
    if len(grads) == 1:
        G = grads[0]
    elif len({g.dtype for g in grads}) == 1:
        G = torch.cat(grads, out=workspace.empty((sum(counts), *shape), grads[0].dtype, grads[0].device))
    else:
        G = torch.cat(grads)
    G = G.to(dtype)
    if gate is None:
        return G
    key = ("gate", G.dtype, G.device)
    if key not in memo:
        memo[key] = gate.to(G.dtype)
    return _zero_if_skipped(G, memo[key], owned=G is not grads[0] or owned)


def _zero_if_skipped(G: Tensor, gate: Tensor, owned: bool) -> Tensor:
    """``G`` where ``gate`` holds, zeros (finite, of either sign) where it does not; in place when ``owned``.

    A skipped step runs the chain on zeros, so no stage (an SVD, say) sees a NaN. ``G * gate`` turns
    finite entries into zeros and NaN / Inf into NaN, which ``nan_to_num_`` zeroes: two cheap passes,
    which on CPU beat an in-place ``torch.where(gate, G, 0)`` over a stack already built (the stacks of
    many small or mixed-dtype gradients; larger ones are gated while they are stacked). On a step that
    runs both are the identity (every entry is finite then). ``owned``: G is not a view of ``p.grad``.
    """
    gate = gate.to(G.dtype)
    G = G.mul_(gate) if owned else torch.mul(G, gate, out=workspace.empty_like(G))
    return G.nan_to_num_(nan=0.0)


def _run_chain(
    stack: Stack, chain: tuple[Stage, ...], steps: Tensor, params: list[Tensor], counts: list[int],
    shape: tuple[int, ...],
) -> None:
    """The stages, the step count, the skip gate's restore and the write: what ``ChainOptimizer.compile`` traces."""
    for stage in chain:
        stage(stack)
    steps.add_(stack.take(1.0, steps))  # a skipped step does not count
    stack.restore_if_skipped()
    ChainOptimizer._write(params, counts, shape, stack)


def _chain_copy(index: int) -> Callable:
    """A copy of :func:`_run_chain` with its own code object: Dynamo keeps compiled graphs and counts
    recompiles per code object, so each bucket compiled from its own copy keeps its static-shape graph."""
    code = _run_chain.__code__.replace(co_name=f"_run_chain_{index}")
    return type(_run_chain)(code, _run_chain.__globals__, code.co_name, _run_chain.__defaults__, _run_chain.__closure__)
