"""Every activation by name, and interventions on it: the sites of TransformerLens and ViT-Prisma on vitjax's ViT.

The model knows nothing of this. Each site is reached from outside with
``flax.linen.intercept_methods``: most are the input or output of one submodule
call (``LayerNorm_0``, ``query``, the ``out`` projection's input, ``Dense_1``'s
input, ...); the four values no submodule call carries (scores before the
softmax, the probabilities, the residual between attention and MLP, the
``pre_logits`` output) pass through :meth:`vitjax.model.vit.HookPoints.hook_point`,
the identity. An interceptor that neither records nor replaces anything adds
nothing to the traced program.

Site names (as TransformerLens' ``HookedTransformer`` and ViT-Prisma's ``HookedViT``
name them, so notebooks carry over), per block ``l`` (0-based), with
B batch, N tokens (class token, registers, patches), D width, H heads,
d = D / H, M MLP width, R the ``pre_logits`` width:

========================================  ================  =====================================================
name                                      shape             value
========================================  ================  =====================================================
``blocks.l.hook_resid_pre``               ``[B, N, D]``     the block's input (block 0: embedding + position)
``blocks.l.ln1.hook_normalized``          ``[B, N, D]``     ``(x - mean) / sqrt(var + eps)`` in ``LayerNorm_0``,
                                                            before its scale and bias (as TransformerLens)
``blocks.l.attn.hook_q|hook_k|hook_v``    ``[B, N, H, d]``  projections, before ``q`` is divided by sqrt(d)
``blocks.l.attn.hook_attn_scores``        ``[B, H, N, N]``  ``q . k / sqrt(d)`` before the softmax (float32)
``blocks.l.attn.hook_pattern``            ``[B, H, N, N]``  the softmax probabilities (float32; rows: queries)
``blocks.l.attn.hook_z``                  ``[B, N, H, d]``  ``pattern @ v``, each head's output before ``out``
``blocks.l.hook_attn_out``                ``[B, N, D]``     what attention adds to the residual (after ``ls1``)
``blocks.l.hook_resid_mid``               ``[B, N, D]``     ``resid_pre + attn_out``
``blocks.l.ln2.hook_normalized``          ``[B, N, D]``     the same in ``LayerNorm_2``
``blocks.l.mlp.hook_pre`` / ``hook_post`` ``[B, N, M]``     before / after the GELU
``blocks.l.hook_mlp_out``                 ``[B, N, D]``     what the MLP adds to the residual (after ``ls2``)
``blocks.l.hook_resid_post``              ``[B, N, D]``     the block's output
``ln_final.hook_normalized``              ``[B, N, D]``     the same in ``encoder_norm``, every token
``hook_pre_logits``                       ``[B, R]``        ``tanh(pre_logits(.))``, only where the model has it
========================================  ================  =====================================================

Values are in the compute dtype (``model.dtype``) except scores and pattern (float32).
Hybrid (R50) models: the embedding is the ResNet stem; every site after it applies.

Interventions are pure functions ``fn(value, hook) -> value`` (``hook.name``,
``hook.layer``), traced into the compiled program, so ``jax.grad`` flows through
them. The ready-made ones (:func:`ablate_heads`, :func:`patch_from`,
:func:`scale_heads`) are pytrees whose arrays are arguments of the compiled
program, not constants: patching from another cache does not recompile.
"""

from __future__ import annotations

import difflib
import functools
import re
from typing import Any, Callable, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vitjax.model.config import ViTConfig
from vitjax.model.forward import check_images, finite_rows, output_kind, raise_non_finite
from vitjax.model.vit import Encoder1DBlock, ViT

__all__ = ["BLOCK_SITES", "ActivationCache", "HookPoint", "HookedViT", "Intervention", "ablate_heads", "apply_hooked",
           "hooked", "patch_from", "resolve_names", "run_with_cache", "run_with_hooks", "scale_heads", "site_name",
           "site_names"]

#: The sites of every block, in the order the block computes them.
BLOCK_SITES = ("hook_resid_pre", "ln1.hook_normalized", "attn.hook_q", "attn.hook_k", "attn.hook_v",
               "attn.hook_attn_scores", "attn.hook_pattern", "attn.hook_z", "hook_attn_out", "hook_resid_mid",
               "ln2.hook_normalized", "mlp.hook_pre", "mlp.hook_post", "hook_mlp_out", "hook_resid_post")

# hook_point(name, ...) calls of the model -> site
_HOOK_POINTS = {"attn_scores": "attn.hook_attn_scores", "pattern": "attn.hook_pattern",
                "resid_mid": "hook_resid_mid", "pre_logits": "hook_pre_logits"}
_BLOCK = re.compile(r"encoderblock_(\d+)$")


class HookPoint(NamedTuple):
    """What a hook function is told about its site: ``name`` (e.g. ``"blocks.3.attn.hook_z"``) and
    ``layer`` (0-based; None for ``ln_final`` and ``hook_pre_logits``). TransformerLens hooks read ``hook.name``."""

    name: str
    layer: Optional[int]


def site_names(config: ViTConfig) -> Tuple[str, ...]:
    """Every site of a model with this config, in the order the forward pass computes them."""
    names = [f"blocks.{layer}.{s}" for layer in range(config.num_layers) for s in BLOCK_SITES]
    names.append("ln_final.hook_normalized")
    if config.representation_size is not None:
        names.append("hook_pre_logits")
    return tuple(names)


# TransformerLens' get_act_name aliases, for ActivationCache[("pattern", 3)]
_ALIASES = {"attn": "pattern", "attn_logits": "attn_scores", "scores": "attn_scores", "query": "q", "key": "k",
            "value": "v", "mlp_pre": "pre", "mlp_post": "post"}
_ATTN = ("q", "k", "v", "z", "pattern", "attn_scores")
_MLP = ("pre", "post")
_SHORT = frozenset(_ATTN + _MLP + ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "normalized",
                                  "pre_logits", "embed"))


def site_name(name: str, layer: Optional[int] = None, layer_type: Optional[str] = None) -> str:
    """TransformerLens' short names -> full site names: ``("pattern", 3)`` -> ``"blocks.3.attn.hook_pattern"``.

    ``name`` is a full site name (returned as is) or a short one: ``resid_pre``, ``resid_mid``,
    ``resid_post``, ``attn_out``, ``mlp_out``, ``q``, ``k``, ``v``, ``z``, ``attn_scores``, ``pattern``
    (alias ``attn``), ``pre``, ``post``, ``normalized`` (with ``layer_type`` ``"ln1"``/``"ln2"``, or no layer:
    ``ln_final``), ``pre_logits``, ``embed`` (the embedded tokens with their position embedding,
    ``blocks.0.hook_resid_pre``, as TransformerLens' ViT bridge's ``hook_embed``).

    Raises:
      ValueError: a short name that needs a layer and has none, an unknown layer type, or a short name
        with no vitjax site (e.g. ``scale``: LayerNorm scales are not recorded; ``mlp_in``).
    """
    if name.startswith(("blocks.", "ln_final.", "hook_")):
        return name
    name = _ALIASES.get(name, name)
    if name not in _SHORT:
        raise ValueError(f"no activation {name!r} in vitjax; short names: {', '.join(sorted(_SHORT))} "
                         "(or a full site name, vitjax.attribution.hooks.site_names)")
    if name == "embed":
        return "blocks.0.hook_resid_pre"
    if name == "pre_logits":
        return "hook_pre_logits"
    if name == "normalized":
        if layer is None:
            return "ln_final.hook_normalized"
        if layer_type not in ("ln1", "ln2"):
            raise ValueError(f"'normalized' of a block needs layer_type 'ln1' or 'ln2', got {layer_type!r}")
        return f"blocks.{_layer(layer)}.{layer_type}.hook_normalized"
    if layer is None:
        raise ValueError(f"activation {name!r} needs a layer, e.g. ({name!r}, 0)")
    kind = "attn." if name in _ATTN else "mlp." if name in _MLP else ""
    return f"blocks.{_layer(layer)}.{kind}hook_{name}"


def _layer(layer) -> int:
    """A layer index as given to :func:`site_name`: an integer >= 0 (never a bool, a float or a string)."""
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or layer < 0:
        raise ValueError(f"layer must be an integer >= 0 (0-based), got {layer!r}")
    return int(layer)


class ActivationCache(dict):
    """The activations of :func:`run_with_cache`: a dict ``{site name: array}``, also indexed the TransformerLens
    way, ``cache["pattern", 3]`` or ``cache["normalized", 2, "ln1"]`` (see :func:`site_name`)."""

    def __getitem__(self, key):
        if isinstance(key, tuple):
            key = site_name(*key)
        elif isinstance(key, str) and not super().__contains__(key) and not key.startswith("blocks."):
            try:
                key = site_name(key)  # e.g. "normalized" -> "ln_final.hook_normalized"
            except ValueError:
                pass
        try:
            return super().__getitem__(key)
        except KeyError:
            close = difflib.get_close_matches(str(key), list(self), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else (
                "; the cache holds only the names asked for" if self else "; the cache is empty (names=())")
            raise KeyError(f"{key!r} is not in this cache{hint}") from None

    def stack(self, name: str) -> jnp.ndarray:
        """One site of every layer stacked: ``stack("resid_post")`` -> ``[B, L, ...]`` (layers 0..L-1 present)."""
        layers = []
        while site_name(name, len(layers)) in self:
            layers.append(super().__getitem__(site_name(name, len(layers))))
        if not layers:
            raise KeyError(f"{name!r} of layer 0 is not in this cache")
        return jnp.stack(layers, axis=1)


# --------------------------------------------------------------------------- name filters


NamesFilter = Union[None, str, Sequence[str], Callable[[str], bool]]


def _unknown(name: str, config: ViTConfig, known: Sequence[str]) -> ValueError:
    close = difflib.get_close_matches(str(name), list(known), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return ValueError(f"unknown activation name {name!r}: {hint}names look like 'blocks.0.attn.hook_pattern' "
                      f"(layers 0..{config.num_layers - 1}; see vitjax.attribution.hooks.site_names)")


def _one_name(names) -> bool:
    """A name, or a TransformerLens key such as ``("pattern", 3)``, rather than a list of them."""
    return isinstance(names, str) or (isinstance(names, tuple) and len(names) >= 2 and isinstance(names[0], str)
                                      and isinstance(names[1], (int, np.integer)) and not isinstance(names[1], bool))


def resolve_names(config: ViTConfig, names: NamesFilter) -> Tuple[str, ...]:
    """A name filter -> the sites it selects, in forward order (decided at trace time, before anything runs).

    ``names``: None (every site), a name, a sequence of names (full or TransformerLens ``(short, layer)``
    tuples) or a predicate ``name -> bool``.

    Raises:
      ValueError: a name the model does not have (one line, with the closest match).
    """
    known = site_names(config)
    if names is None:
        return known
    if callable(names) and not isinstance(names, str):
        return tuple(n for n in known if names(n))
    if _one_name(names):
        names = [names]
    wanted = set()
    for n in names:
        full = site_name(*n) if isinstance(n, tuple) else site_name(str(n))
        if full not in known:
            raise _unknown(full, config, known)
        wanted.add(full)
    return tuple(n for n in known if n in wanted)


# --------------------------------------------------------------------------- the interceptor


def _layer_of(path: Tuple[str, ...]) -> Optional[int]:
    if len(path) >= 2 and path[0] == "Transformer":
        m = _BLOCK.match(path[1])
        if m:
            return int(m.group(1))
    return None


def _interceptor(config: ViTConfig, record: frozenset, hooks: Mapping[str, Sequence[Callable]], cache: dict):
    """The one interceptor: at each site, applies ``hooks[site]`` in order, then records the value if asked."""
    layer_scale = config.layer_scale

    def at(site: str, layer: Optional[int], value):
        name = site if layer is None else f"blocks.{layer}.{site}"
        for fn in hooks.get(name, ()):
            new = fn(value, HookPoint(name, layer))
            if getattr(new, "shape", None) != value.shape:
                raise ValueError(f"the hook of {name} returned shape {getattr(new, 'shape', type(new).__name__)}; "
                                 f"the site's value has shape {value.shape}")
            value = jnp.asarray(new).astype(value.dtype)
        if name in record:
            cache[name] = value
        return value

    def layer_norm(site: str, layer: Optional[int], next_fun, args, kwargs, module):
        """``hook_normalized`` is ``(x - mean) / sqrt(var + eps)`` before the norm's scale and bias (as
        TransformerLens); an edit ``n -> n'`` adds ``(n' - n) * scale`` to the norm's own output, so an
        unchanged (or identically patched) value leaves the output's bits untouched."""
        name = site if layer is None else f"blocks.{layer}.{site}"
        out = next_fun(*args, **kwargs)
        if name not in record and name not in hooks:
            return out
        x = args[0].astype(jnp.promote_types(args[0].dtype, jnp.float32))  # as flax: statistics in float32
        mean = jnp.mean(x, axis=-1, keepdims=True)
        var = jnp.mean(jax.lax.square(x - mean), axis=-1, keepdims=True)
        n = (x - mean) * jax.lax.rsqrt(var + module.epsilon)
        # The select keeps XLA:CPU from contracting ``edited - n`` into one fused multiply-add with the
        # product above, which rounds differently from the product this site records: patching a
        # recorded value back would then move the output by an ulp.
        n = jnp.where(jnp.isfinite(n), n, jnp.zeros((), n.dtype)).astype(out.dtype)
        edited = at(site, layer, n)
        if name in hooks:
            scale = module.variables["params"]["scale"].reshape((1,) * (out.ndim - 1) + (-1,))
            out = out + ((edited.astype(jnp.float32) - n.astype(jnp.float32)) * scale).astype(out.dtype)
        return out

    def interceptor(next_fun, args, kwargs, context):
        module, method = context.module, context.method_name
        path = module.path
        layer = _layer_of(path)
        if method == "hook_point":
            site = _HOOK_POINTS.get(args[0])
            out = next_fun(*args, **kwargs)
            if site is None:
                return out
            return at(site, None if site == "hook_pre_logits" else layer, out)
        if method != "__call__":
            return next_fun(*args, **kwargs)
        name = module.name
        if layer is not None and len(path) == 2 and isinstance(module, Encoder1DBlock):
            x = at("hook_resid_pre", layer, args[0])
            out, probs = next_fun(x, *args[1:], **kwargs)
            return at("hook_resid_post", layer, out), probs
        if layer is not None and len(path) == 3:  # the block's own submodules
            if name in ("LayerNorm_0", "LayerNorm_2"):
                return layer_norm(f"ln{1 if name == 'LayerNorm_0' else 2}.hook_normalized", layer, next_fun, args,
                                  kwargs, module)
            if name == "MultiHeadDotProductAttention_1":
                out, probs = next_fun(*args, **kwargs)
                return (out if layer_scale else at("hook_attn_out", layer, out)), probs
            if name == "MlpBlock_3":
                out = next_fun(*args, **kwargs)
                return out if layer_scale else at("hook_mlp_out", layer, out)
            if name in ("ls1", "ls2"):
                return at("hook_attn_out" if name == "ls1" else "hook_mlp_out", layer, next_fun(*args, **kwargs))
        if layer is not None and len(path) == 4:
            parent = path[2]
            if parent == "MultiHeadDotProductAttention_1":
                if name in ("query", "key", "value"):
                    return at(f"attn.hook_{name[0]}", layer, next_fun(*args, **kwargs))
                if name == "out":
                    return next_fun(at("attn.hook_z", layer, args[0]), *args[1:], **kwargs)
            if parent == "MlpBlock_3":
                if name == "Dense_0":
                    return at("mlp.hook_pre", layer, next_fun(*args, **kwargs))
                if name == "Dense_1":
                    return next_fun(at("mlp.hook_post", layer, args[0]), *args[1:], **kwargs)
        if path == ("Transformer", "encoder_norm"):
            return layer_norm("ln_final.hook_normalized", None, next_fun, args, kwargs, module)
        return next_fun(*args, **kwargs)

    return interceptor


HooksArg = Union[None, Mapping[Any, Any], Sequence[Tuple[Any, Callable]]]


def _resolve_hooks(config: ViTConfig, hooks: HooksArg) -> Dict[str, Tuple[Callable, ...]]:
    """``{name or predicate: fn or [fns]}`` or ``[(name or predicate, fn), ...]`` -> ``{site: (fn, ...)}``.

    Several hooks on one site run in the order given. Raises ValueError for an unknown name or a
    hook that is not callable.
    """
    if hooks is None:
        return {}
    pairs = list(hooks.items()) if isinstance(hooks, Mapping) else list(hooks)
    known = site_names(config)
    out: Dict[str, List[Callable]] = {}
    for pair in pairs:
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise ValueError(f"hooks must be a dict {{name: fn}} or a list of (name, fn) pairs, got {pair!r}")
        key, fns = pair
        fns = list(fns) if isinstance(fns, (list, tuple)) else [fns]
        for fn in fns:
            if not callable(fn):
                raise ValueError(f"the hook of {key!r} is not callable: {type(fn).__name__}")
        if callable(key) and not isinstance(key, str):
            sites = [n for n in known if key(n)]
        else:
            full = site_name(*key) if isinstance(key, tuple) else site_name(str(key))
            if full not in known:
                raise _unknown(full, config, known)
            sites = [full]
        for s in sites:
            out.setdefault(s, []).extend(fns)
    return {k: tuple(v) for k, v in out.items()}


def apply_hooked(model: ViT, params, images, *, record: Iterable[str] = (), hooks: HooksArg = None,
                 mutable=False):
    """``model.apply`` with the sites in ``record`` recorded and ``hooks`` applied; traceable (no jit).

    ``record`` must hold full site names (:func:`resolve_names`). Returns ``(out, {name: value})``,
    or ``((out, state), {...})`` with ``mutable`` (passed to ``model.apply``). For use inside other
    jitted functions; :func:`run_with_cache` and :func:`run_with_hooks` are the jitted entry points.
    """
    cache: Dict[str, Any] = {}
    resolved = hooks if _is_resolved(hooks) else _resolve_hooks(model.config, hooks)
    with nn.intercept_methods(_interceptor(model.config, frozenset(record), resolved, cache)):
        out = model.apply({"params": params}, images, mutable=mutable)
    return out, {n: cache[n] for n in site_names(model.config) if n in cache}


def _is_resolved(hooks) -> bool:
    return isinstance(hooks, dict) and all(isinstance(k, str) and isinstance(v, tuple) for k, v in hooks.items())


# --------------------------------------------------------------------------- jitted entry points


class _Static:
    """A hook function as part of a jit cache key: hashed and compared by identity."""

    __slots__ = ("obj",)

    def __init__(self, obj):
        self.obj = obj

    def __hash__(self):
        return id(self.obj)

    def __eq__(self, other):
        return isinstance(other, _Static) and other.obj is self.obj


def _split(hooks: Dict[str, Tuple[Callable, ...]]):
    """Resolved hooks -> (static part, arrays): the arrays of ready-made interventions become jit arguments."""
    leaves, treedef = jax.tree_util.tree_flatten(hooks)
    is_array = [isinstance(x, (jax.Array, np.ndarray, np.generic)) for x in leaves]
    static = tuple(None if a else _Static(x) for x, a in zip(leaves, is_array, strict=True))
    arrays = [x for x, a in zip(leaves, is_array, strict=True) if a]
    return (treedef, static), arrays


def _join(static, arrays):
    treedef, parts = static
    it = iter(arrays)
    leaves = [next(it) if p is None else p.obj for p in parts]
    return jax.tree_util.tree_unflatten(treedef, leaves)


@functools.partial(jax.jit, static_argnames=("model", "names", "static"))
def _run(model: ViT, params, images, arrays, *, names: Tuple[str, ...], static):
    """``(out, {name: value}, {output kind: [B] finite flags})``: the flags computed beside the output."""
    out, cache = apply_hooked(model, params, images, record=names, hooks=_join(static, arrays))
    return out, cache, {output_kind(model): finite_rows(out)}


def run_with_cache(model: ViT, params, images, names: NamesFilter = None, *, hooks: HooksArg = None, valid=None
                   ) -> Tuple[jnp.ndarray, ActivationCache]:
    """The model's output and the activations asked for, by TransformerLens name, in one jitted pass.

    Args:
      model, params: from :func:`vitjax.load_checkpoint`.
      images: ``[B, H, W, 3]`` float32 at ``model.config.image_size``, preprocessed (:func:`vitjax.preprocess`).
      names: which sites to keep (see the module docstring for every name and shape): None (all),
        one name, a list of names (or TransformerLens ``(short, layer)`` tuples such as
        ``("pattern", 3)``) or a predicate ``name -> bool``. Decided at trace time: a site not
        asked for is not materialised, and ``names=()`` compiles to the plain forward pass (and its
        one finite flag per image).
      hooks: interventions applied before recording (see :func:`run_with_hooks`): the cache of an
        intervened run.
      valid: ``[B]`` bool, the rows that hold an image (None: every row); only they are checked for
        non-finite outputs (padded rows may hold anything).

    Returns:
      ``(out, cache)``: ``out`` is ``[B, C]`` float32 logits (a headless model: its features, as
      :func:`vitjax.forward`); ``cache`` an :class:`ActivationCache` ``{name: array}`` in forward
      order, e.g. ``cache["blocks.3.attn.hook_pattern"]`` = ``cache["pattern", 3]`` ``[B, H, N, N]``.
      A full cache holds about ``L x (11 N D + 2 N M + 2 H N^2)`` numbers per image (ViT-B/16: 160 MB).

    Raises:
      ValueError: bad images, an unknown name, a hook that is not callable or changes its value's shape.
      NonFiniteError: the output (logits, or features) is not finite (NaN/inf) for a valid row, whether
        the checkpoint or an intervention made it so; ``.rows`` names them, ``.result`` holds
        ``(out, cache)`` (the finite rows are usable as they are). Checked in the compiled program
        (one flag per image), on the host after it.

    Follows TransformerLens' ``HookedTransformer.run_with_cache`` (Nanda & Bloom, 2022) and
    ViT-Prisma's ``HookedViT`` (Joseph, 2023) in its names.
    """
    check_images(model, images)
    selected = resolve_names(model.config, names)
    static, arrays = _split(_resolve_hooks(model.config, hooks))
    out, cache, finite = _run(model, params, jnp.asarray(images), arrays, names=selected, static=static)
    cache = ActivationCache((n, cache[n]) for n in selected)  # forward order (jit returns dicts sorted)
    raise_non_finite(finite, valid=valid, result=(out, cache))
    return out, cache


def run_with_hooks(model: ViT, params, images, hooks: HooksArg, *, valid=None) -> jnp.ndarray:
    """The model's output with interventions applied inside the compiled program.

    Args:
      model, params, images: as :func:`run_with_cache`.
      hooks: ``{name: fn}`` or a list of ``(name, fn)`` pairs (TransformerLens' ``fwd_hooks``); a name
        may be a predicate ``name -> bool``, and several hooks on one site run in the order given. Each
        ``fn(value, hook) -> value`` is a pure JAX function of the site's value (``hook.name``,
        ``hook.layer``: :class:`HookPoint`) returning a value of the same shape; it is traced into the
        program, so ``jax.grad`` flows through it. Ready-made: :func:`ablate_heads`, :func:`patch_from`,
        :func:`scale_heads` (lists of pairs: combine them with ``+``). A plain function is part of the
        compiled program (define it once: a new lambda per call recompiles); the arrays of the
        ready-made interventions are arguments (a new cache to patch from does not recompile).
      valid: ``[B]`` bool, the rows checked for non-finite outputs (None: every row).

    Returns:
      ``out [B, C]`` float32 (a headless model: features), as :func:`vitjax.forward`.

    Raises:
      ValueError: bad images, an unknown site name, a hook that is not callable or changes the shape.
      NonFiniteError: the output is not finite (NaN/inf) for a valid row: a NaN or inf output is never a
        usable number, whether the checkpoint or a hook made it so (a hook that scales a head by inf
        included); ``.rows`` names them, ``.result`` holds ``out``.

    To compose with every other tool (``compute_maps``, ``class_maps``, the figures), wrap the model:
    ``compute_maps(hooked(model, ablate_heads({0: 1})), params, images)`` (:func:`hooked`).
    """
    check_images(model, images)
    static, arrays = _split(_resolve_hooks(model.config, hooks))
    out, _, finite = _run(model, params, jnp.asarray(images), arrays, names=(), static=static)
    raise_non_finite(finite, valid=valid, result=out)
    return out


class HookedViT(ViT):
    """A :class:`vitjax.ViT` whose every call applies fixed interventions (``hooks``: resolved, hashable).

    Made by :func:`hooked`; usable wherever a ViT is (it is one): ``compute_maps``, ``class_maps``,
    ``forward``, the lens. Its hooks' arrays are constants of each compiled program.
    """

    hooks: Tuple[Tuple[str, Tuple[Callable, ...]], ...] = ()

    def __call__(self, images):
        resolved = {k: v for k, v in self.hooks}
        with nn.intercept_methods(_interceptor(self.config, frozenset(), resolved, {})):
            return super().__call__(images)


def hooked(model: ViT, hooks: HooksArg) -> HookedViT:
    """The model with interventions built in: ``compute_maps(hooked(model, ablate_heads({0: [1]})), params, x)``.

    ``hooks`` as in :func:`run_with_hooks` (resolved now: an unknown name raises ValueError here).
    The result is hashable (hooks compare by identity), so it is a jit static argument like any
    ViT; hooks that hold arrays bake them into each program that uses the model.
    """
    base = model.hooks if isinstance(model, HookedViT) else ()
    resolved = _resolve_hooks(model.config, hooks)
    merged: Dict[str, Tuple[Callable, ...]] = {k: v for k, v in base}
    for k, v in resolved.items():
        merged[k] = merged.get(k, ()) + v
    return HookedViT(model.config, model.dtype, hooks=tuple(merged.items()))


# --------------------------------------------------------------------------- ready-made interventions


@jax.tree_util.register_pytree_node_class
class Intervention:
    """A ready-made hook: ``kind`` and static settings, plus arrays that travel as jit arguments.

    Kinds: ``"zero_heads"`` (``settings``: heads), ``"mean_heads"`` (heads; arrays: the mean
    ``[N, H, d]`` or none = the mean of the running batch), ``"patch"`` (positions or None; arrays:
    the source ``[B or 1, ...]``), ``"scale_heads"`` (heads; arrays: the factor).
    """

    def __init__(self, kind: str, settings, arrays: Tuple = ()):
        self.kind, self.settings, self.arrays = kind, settings, tuple(arrays)

    def tree_flatten(self):
        return self.arrays, (self.kind, self.settings)

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(aux[0], aux[1], tuple(children))

    def __hash__(self):
        return hash((self.kind, self.settings, tuple(id(a) for a in self.arrays)))

    def __eq__(self, other):
        return (isinstance(other, Intervention) and (self.kind, self.settings) == (other.kind, other.settings)
                and len(self.arrays) == len(other.arrays)
                and all(a is b for a, b in zip(self.arrays, other.arrays, strict=True)))

    def __repr__(self):
        return f"Intervention({self.kind!r}, {self.settings!r}, {len(self.arrays)} array(s))"

    def __call__(self, value, hook: HookPoint):
        if self.kind in ("zero_heads", "mean_heads", "scale_heads"):
            axis = 1 if self.kind == "scale_heads" else 2  # pattern [B, H, N, N]; z [B, N, H, d]
            n_heads = value.shape[axis]
            bad = [h for h in self.settings if not 0 <= h < n_heads]
            if bad:
                raise ValueError(f"{hook.name}: head {bad[0]} out of range; the layer has heads 0..{n_heads - 1}")
            mask = np.zeros((n_heads,), bool)
            mask[list(self.settings)] = True
            shape = [1] * value.ndim
            shape[axis] = n_heads
            mask = jnp.asarray(mask.reshape(shape))
            if self.kind == "zero_heads":
                return jnp.where(mask, jnp.zeros((), value.dtype), value)
            if self.kind == "scale_heads":
                return jnp.where(mask, value * self.arrays[0].astype(value.dtype), value)
            mean = self.arrays[0][None] if self.arrays else jnp.mean(value, axis=0, keepdims=True)
            if mean.shape[1:] != value.shape[1:]:
                raise ValueError(f"{hook.name}: the mean to ablate with has shape {mean.shape[1:]}, the site "
                                 f"{value.shape[1:]}")
            return jnp.where(mask, mean.astype(value.dtype), value)
        if self.kind == "patch":
            src = self.arrays[0]
            if src.shape[1:] != value.shape[1:] or src.shape[0] not in (1, value.shape[0]):
                raise ValueError(f"{hook.name}: the patch has shape {src.shape}, the site {value.shape} "
                                 "(the batch may be 1 or the same)")
            src = jnp.broadcast_to(src.astype(value.dtype), value.shape)
            if self.settings is None:
                return src
            if value.ndim < 3:
                raise ValueError(f"{hook.name} has no token axis; patch it whole (positions=None)")
            axis = 2 if ("attn_scores" in hook.name or "pattern" in hook.name) else 1  # query rows
            n = value.shape[axis]
            bad = [p for p in self.settings if not -n <= p < n]
            if bad:
                raise ValueError(f"{hook.name}: position {bad[0]} out of range for {n} tokens")
            mask = np.zeros((n,), bool)
            mask[list(self.settings)] = True
            shape = [1] * value.ndim
            shape[axis] = n
            return jnp.where(jnp.asarray(mask.reshape(shape)), src, value)
        raise ValueError(f"unknown intervention kind {self.kind!r}")


def _heads_by_layer(heads) -> Dict[int, Tuple[int, ...]]:
    """``{layer: head or [heads]}`` -> ``{layer: (heads, ...)}`` (ints >= 0; one-line errors otherwise)."""
    if not isinstance(heads, Mapping) or not heads:
        raise ValueError(f"heads must be a non-empty dict {{layer: head or [heads]}}, got {heads!r}")
    out = {}
    for layer, hs in heads.items():
        hs = [hs] if isinstance(hs, (int, np.integer)) else list(hs)
        for v in [layer, *hs]:
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise ValueError(f"layers and heads must be integers >= 0 (0-based), got {v!r} in {heads!r}")
        if not hs:
            raise ValueError(f"layer {layer}: no heads given")
        out[int(layer)] = tuple(sorted({int(h) for h in hs}))
    return out


def ablate_heads(heads, mode: str = "zero", *, cache: Optional[Mapping[str, Any]] = None
                 ) -> List[Tuple[str, Intervention]]:
    """Head ablation: each listed head's output ``hook_z[..., h, :]`` zeroed or replaced by its mean.

    Args:
      heads: ``{layer: head or [heads]}``, 0-based, e.g. ``{0: [1, 4], 7: 2}``.
      mode: ``"zero"`` (Michel, Levy & Neubig, "Are Sixteen Heads Really Better than One?",
        NeurIPS 2019) or ``"mean"`` (the head's output replaced by its mean over a reference batch,
        per token position: Wang et al., "Interpretability in the Wild", ICLR 2023).
      cache: with ``"mean"``: a cache holding ``blocks.l.attn.hook_z`` of the reference batch; the
        mean over its images is used. None: the mean over the batch being run.

    Returns:
      ``[(f"blocks.{l}.attn.hook_z", Intervention), ...]`` for :func:`run_with_hooks` or :func:`hooked`.

    Raises:
      ValueError: bad heads or mode, a cache without the layer's ``hook_z``.
    """
    by_layer = _heads_by_layer(heads)
    if mode not in ("zero", "mean"):
        raise ValueError(f"mode must be 'zero' or 'mean', got {mode!r}")
    if mode == "zero" and cache is not None:
        raise ValueError("cache is used by mode='mean' only")
    out = []
    for layer, hs in sorted(by_layer.items()):
        name = f"blocks.{layer}.attn.hook_z"
        if mode == "zero":
            out.append((name, Intervention("zero_heads", hs)))
            continue
        arrays = ()
        if cache is not None:
            if name not in cache:
                raise ValueError(f"mode='mean': the cache has no {name} (run_with_cache with that name)")
            arrays = (jnp.mean(jnp.asarray(cache[name]), axis=0),)
        out.append((name, Intervention("mean_heads", hs, arrays)))
    return out


def scale_heads(heads, factor) -> List[Tuple[str, Intervention]]:
    """Each listed head's attention probabilities multiplied by ``factor`` (``hook_pattern[:, h]``).

    As ``z = pattern @ v``, the head's output is scaled by the same factor (0 = zero ablation);
    the sown attention (and every map computed from it) shows the scaled pattern, whose rows no
    longer sum to 1. ``factor`` is a jit argument (changing it does not recompile; ``jax.grad``
    reaches it). ``heads`` as in :func:`ablate_heads`.
    """
    by_layer = _heads_by_layer(heads)
    f = jnp.asarray(factor, jnp.float32)
    if f.ndim:
        raise ValueError(f"factor must be a number, got shape {f.shape}")
    return [(f"blocks.{layer}.attn.hook_pattern", Intervention("scale_heads", hs, (f,)))
            for layer, hs in sorted(by_layer.items())]


def patch_from(cache: Mapping[str, Any], names: NamesFilter = None, positions=None
               ) -> List[Tuple[str, Intervention]]:
    """Activation patching: the sites ``names`` take their values from ``cache`` (another run's).

    Args:
      cache: ``{name: array}`` from :func:`run_with_cache` (a batch of the same size, or of 1,
        broadcast to every image).
      names: which of the cache's sites to patch: None (all of them), one name, a list or a
        predicate.
      positions: None (the whole value), or a token index or list of them (0 = class token;
        negative from the end); for ``attn_scores``/``pattern`` they select query rows.

    Returns:
      ``[(name, Intervention), ...]`` for :func:`run_with_hooks`. Patching every site from a clean
      run's full cache reproduces the clean output exactly.

    Raises:
      ValueError: a name not in the cache; at run time, a shape that does not fit the site.

    Follows the activation patching of Meng et al., "Locating and Editing Factual Associations in
    GPT", NeurIPS 2022 and Heimersheim & Nanda, "How to use and interpret activation patching", 2024.
    """
    keys = list(cache)
    if names is None:
        chosen = keys
    elif callable(names) and not isinstance(names, str):
        chosen = [k for k in keys if names(k)]
    else:
        names = [names] if _one_name(names) else list(names)
        chosen = [site_name(*n) if isinstance(n, tuple) else site_name(n) for n in names]
        for n in chosen:
            if n not in cache:
                close = difflib.get_close_matches(n, keys, n=1)
                raise ValueError(f"patch_from: {n!r} is not in the cache" + (f"; did you mean {close[0]!r}?"
                                                                              if close else ""))
    if positions is not None:
        positions = (positions,) if isinstance(positions, (int, np.integer)) else tuple(positions)
        if any(isinstance(p, bool) or not isinstance(p, (int, np.integer)) for p in positions) or not positions:
            raise ValueError(f"positions must be None, a token index or a list of them, got {positions!r}")
        positions = tuple(int(p) for p in positions)
    return [(n, Intervention("patch", positions, (jnp.asarray(dict.__getitem__(cache, n)
                                                               if isinstance(cache, dict) else cache[n]),)))
            for n in chosen]
