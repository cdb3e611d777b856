"""The capture context: register every tap, reduce in the hooks, remove all in ``finally``."""

from __future__ import annotations

import fnmatch
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from ._accumulate import GroupSums, Moments
from ._discovery import ChannelSite, find_attention, find_channels, head_count, match_names
from ._errors import CaptureError
from ._image_groups import ImageGroups, release_free_memory
from ._rows import finite, real_rows, sample_rows
from ._state import CaptureState, LayerState
from ._taps import AttentionTap, ChannelTap
from .geometry import TokenGeometry, infer_geometry

__all__ = ["AttentionRecord", "Capture", "CaptureOptions", "ChannelRecord", "Summary", "capture"]

Summary = Callable[[torch.Tensor, TokenGeometry], torch.Tensor]
"""Per-sequence reduction of probabilities ``[sequence, head, query, key]`` to
``[sequence, ...]``; sequences of one image (windows) are averaged afterwards."""

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True)
class CaptureOptions:
    """What a capture reads.

    Attributes:
        attention: Globs over attention-module paths, ``"*"`` for all (none is fine for a
            model without attention), ``None`` for none.
        channels: Globs over channel-layer paths; ``"auto"`` selects convolutions and
            MLP hidden layers (normalisation layers only when named), ``None`` none.
        keep_maps: Keep full attention maps (float16) of the first this many images.
        head_moments: Accumulate per-head context moments and CKA sums.
        channel_moments: Accumulate channel moments (and CKA sums with ``group_size``).
        positions: Rows (tokens / spatial positions) sampled per image for moments,
            stratified at random over the grid (:func:`stratified_positions`);
            ``None`` keeps all.
        seed: Seed of the position sampling (draws depend on the seed, the layer and
            how many images the capture had seen, not on the batch size's history).
        image_groups: G, contiguous image groups whose CKA pieces are kept apart
            (:class:`ImageGroups`, METRICS.md §7: intervals by batch means); needs
            ``images``; ``None`` keeps none.
        images: Images in the whole image set (fixes the groups' members); ``None``
            (unknown) keeps no image groups.
        group_summary: Called as ``fn(covariance, rows)`` on each closed image group of a
            channel layer (kept as its ``summary``: intervals of |r| summaries).
        group_size: Channel group width for head-like CKA on channels; ``None`` skips.
        max_covariance: Channel layers wider than this keep variances only.
        summaries: Named per-image reductions of attention computed in the hook.
        geometry: Geometry overrides by glob over attention paths.
        on_attention: Called as ``fn(path, probs)`` with every batch's detached
            probabilities ``[sequence, head, query, key]``, for users' own reductions.
        exact_outputs: Let the fused ``scaled_dot_product_attention`` kernel compute
            every attention output, so that the model's outputs are bit-identical with
            and without capture. ``False`` answers a call without dropout and outside
            autograd from the probabilities the capture computes anyway (``probs @ v``):
            the attention is computed once instead of twice, and outputs equal the
            unfused computation (timm's ``fused_attn=False``) to float32 rounding.
            ``inspector analyze`` uses ``False`` (its capture pass keeps no outputs).
    """

    attention: str | Sequence[str] | None = "*"
    channels: str | Sequence[str] | None = "auto"
    keep_maps: int = 8
    head_moments: bool = True
    channel_moments: bool = True
    positions: int | None = 64
    seed: int = 0
    image_groups: int | None = 20
    images: int | None = None
    group_summary: Callable[[np.ndarray, int], np.ndarray] | None = None
    group_size: int | None = None
    max_covariance: int = 4096
    summaries: Mapping[str, Summary] = field(default_factory=lambda: _EMPTY)
    geometry: Mapping[str, TokenGeometry] = field(default_factory=lambda: _EMPTY)
    on_attention: Callable[[str, torch.Tensor], None] | None = None
    exact_outputs: bool = True

    def __post_init__(self) -> None:
        if self.keep_maps < 0:
            raise ValueError(f"keep_maps must be >= 0, got {self.keep_maps}")
        if self.positions is not None and self.positions < 1:
            raise ValueError(f"positions must be >= 1 or None, got {self.positions}")
        if self.image_groups is not None and self.image_groups < 2:
            raise ValueError(f"image_groups must be >= 2 or None, got {self.image_groups}")
        if self.group_size is not None and self.group_size < 1:
            raise ValueError(f"group_size must be >= 1 or None, got {self.group_size}")


@dataclass
class AttentionRecord:
    """What a capture gathered for one attention module.

    Attributes:
        name: Module path.
        heads: Number of heads.
        geometry: Token geometry (checked against the token counts seen).
        images: Images that passed through the module.
        maps: Probabilities of the first ``keep_maps`` images, float16,
            ``[sample, head, query, key]`` (``[sample, window, head, query, key]`` when
            an image is split into several sequences).
        summaries: Per-image results of each summary, ``[sample, ...]``.
        moments: Moments of the per-head context ``[head * head_dim]``.
        groups: CKA sums with one group per head.
        image_sums: The same sums per image group (for intervals), or None.
        nonfinite: Batches whose probabilities held NaN or inf.
        source: Where the probabilities were read (``sdpa``, ``softmax``, ``attn_drop``,
            ``need_weights``).
        problem: What could not be read, if anything (e.g. no probabilities from linear
            attention, no per-head outputs without a linear output projection).
    """

    name: str
    heads: int
    geometry: TokenGeometry
    images: int = 0
    maps: list[torch.Tensor] = field(default_factory=list)
    summaries: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    moments: Moments | None = None
    groups: GroupSums | None = None
    image_sums: ImageGroups | None = None
    nonfinite: int = 0
    source: str = ""
    problem: str = ""
    input_size: tuple[int, ...] | None = field(default=None, repr=False)

    def note(self, problem: str) -> None:
        """Add ``problem`` to :attr:`problem` (once)."""
        if problem not in self.problem.split("; "):
            self.problem = f"{self.problem}; {problem}" if self.problem else problem

    def maps_array(self) -> np.ndarray:
        if not self.maps:
            return np.zeros((0,), dtype=np.float16)
        return torch.cat(self.maps).numpy()

    def summary(self, name: str) -> np.ndarray:
        return torch.cat(self.summaries[name]).numpy()


@dataclass
class ChannelRecord:
    """What a capture gathered for one channel layer (see :class:`ChannelSite`)."""

    site: ChannelSite
    channels: int = 0
    images: int = 0
    moments: Moments | None = None
    groups: GroupSums | None = None
    image_sums: ImageGroups | None = None
    nonfinite: int = 0


class Capture:
    """Context manager that reads attention and channels of ``model`` while it runs.

    Every hook is registered in ``__enter__`` and removed in ``__exit__`` (also when the
    forward raises); no module attribute is changed. Run the model normally inside.

    Args:
        model: Any module; timm models get their geometry inferred.
        options: What to read.
    """

    def __init__(self, model: nn.Module, options: CaptureOptions | None = None) -> None:
        self.model = model
        self.options = options or CaptureOptions()
        opts = self.options
        attention = find_attention(model)
        sites = find_channels(model)
        self.attention: dict[str, AttentionRecord] = {}
        self.channels: dict[str, ChannelRecord] = {}
        self._modules = dict(model.named_modules())
        if opts.attention is not None and (attention or opts.attention != "*"):
            if not attention:
                raise CaptureError(
                    f"{type(model).__name__} has no attention module inspector recognises "
                    "(timm *Attention classes, nn.MultiheadAttention); pass attention=None"
                )
            for name in match_names(attention, opts.attention, what="attention"):
                module = attention[name]
                self.attention[name] = AttentionRecord(
                    name=name, heads=head_count(module), geometry=self._geometry(name, module)
                )
        if opts.channels is not None:
            if opts.channels == "auto":
                names = [n for n, s in sites.items() if s.kind in ("conv", "mlp")]
            else:
                names = match_names(sites, opts.channels, what="channel")
            for name in names:
                self.channels[name] = ChannelRecord(site=sites[name])
        self.images = 0
        self._batch = 0
        self._input_size: tuple[int, ...] | None = None
        self._closed = False  # an image group closed in this forward
        self._on_cpu = True  # the last forward's input was on the CPU
        self._handles: list[RemovableHandle] = []
        self._taps: list[AttentionTap] = []
        self._active = False

    @property
    def batch(self) -> int:
        """Images in the forward in flight (for ``on_attention`` callbacks)."""
        return self._batch

    def _geometry(self, name: str, module: nn.Module) -> TokenGeometry:
        for pattern, geometry in self.options.geometry.items():
            if fnmatch.fnmatchcase(name, pattern):
                return geometry
        return infer_geometry(self.model, name, module)

    def _reinfer(self, name: str, geometry: TokenGeometry) -> TokenGeometry:
        """The geometry at this input size, for models whose grid follows the input."""
        if any(fnmatch.fnmatchcase(name, p) for p in self.options.geometry):
            return geometry
        size = self._input_size
        return infer_geometry(self.model, name, self._modules[name], size)  # type: ignore[arg-type]

    # -- hooks ------------------------------------------------------------------------

    def _on_probs(self, record: AttentionRecord) -> Callable[[torch.Tensor], None]:
        opts = self.options

        def handle(probs: torch.Tensor) -> None:
            batch = self._batch
            sequences = probs.shape[0]
            if batch == 0 or sequences % batch:
                raise CaptureError(
                    f"{record.name}: {sequences} attention sequences for a batch of {batch}"
                )
            per_image = sequences // batch
            geometry = record.geometry
            if record.input_size != self._input_size:  # grids follow the input size
                geometry = self._reinfer(record.name, geometry)
                record.input_size = self._input_size
            mismatch = geometry.mismatch(per_image, probs.shape[-2], probs.shape[-1])
            if mismatch is not None:
                geometry = TokenGeometry.unknown(mismatch)
            record.geometry = geometry
            if not finite(probs):
                record.nonfinite += 1
            if opts.on_attention is not None:
                opts.on_attention(record.name, probs)
            for key, fn in opts.summaries.items():
                value = fn(probs, geometry)
                if per_image > 1:
                    value = value.reshape(batch, per_image, *value.shape[1:]).mean(1)
                record.summaries.setdefault(key, []).append(value.float().cpu())
            room = opts.keep_maps - min(record.images, opts.keep_maps)
            if room > 0:
                kept = probs.reshape(batch, per_image, *probs.shape[1:])[:room]
                if per_image == 1:
                    kept = kept[:, 0]
                record.maps.append(kept.to("cpu", torch.float16))
            record.images += batch

        return handle

    def _on_heads(self, record: AttentionRecord) -> Callable[[torch.Tensor], None]:
        def handle(x: torch.Tensor) -> None:
            width = x.shape[-1]
            if width % record.heads:
                raise CaptureError(f"{record.name}: width {width} not divisible by heads")
            x = real_rows(x, self._batch, record.geometry)
            rows = sample_rows(x, self._batch, self.options.positions, self._draws(record.name))
            if record.moments is None:
                record.groups = GroupSums(record.heads, width // record.heads)
                record.moments = Moments.of_sums(record.groups)
                record.image_sums = self._image_sums(record.heads, width // record.heads)
            self._accumulate(record.moments, record.groups, record.image_sums, x, rows)

        return handle

    def _on_channels(self, record: ChannelRecord) -> Callable[[torch.Tensor], None]:
        opts = self.options

        def handle(x: torch.Tensor) -> None:
            if not finite(x):  # in the tensor's own layout: reductions over a moved one crawl
                record.nonfinite += 1
            if record.site.channel_axis != -1:
                x = x.movedim(record.site.channel_axis, -1)
            rows = sample_rows(x, self._batch, opts.positions, self._draws(record.site.name))
            width = rows.shape[-1]
            if record.moments is None:
                record.channels = width
                covariance = width <= opts.max_covariance
                size = opts.group_size
                if size is not None and width % size == 0 and width // size > 1:
                    record.groups = GroupSums(width // size, size)
                    record.image_sums = self._image_sums(width // size, size, channels=True)
                if covariance and record.groups is not None:
                    record.moments = Moments.of_sums(record.groups)
                else:
                    record.moments = Moments(width, covariance=covariance)
            self._accumulate(record.moments, record.groups, record.image_sums, x, rows)
            record.images += self._batch

        return handle

    def seek(self, index: int) -> None:
        """Number the next batch's first image ``index`` (its position in the whole image
        set): position draws and image groups follow the image's index, so a shard of a
        multi-process run, or a resumed run, draws what one uninterrupted process draws."""
        if index < 0:
            raise ValueError(f"image index must be >= 0, got {index}")
        self.images = index

    def _draws(self, name: str) -> torch.Generator:
        """The position sampler of layer ``name`` for this batch (seeded, see options)."""
        key = f"{self.options.seed}:{name}:{self.images}".encode()
        return torch.Generator().manual_seed(zlib.crc32(key))

    def _image_sums(self, groups: int, size: int, channels: bool = False) -> ImageGroups | None:
        count, images = self.options.image_groups, self.options.images
        if count is None or images is None:
            return None
        summary = self.options.group_summary if channels else None
        return ImageGroups(count, images, groups, size, summary)

    def _accumulate(
        self,
        moments: Moments,
        groups: GroupSums | None,
        image_sums: ImageGroups | None,
        x: torch.Tensor,
        rows: torch.Tensor,
    ) -> None:
        """Add ``rows`` to the layer's accumulators. A layer with CKA sums reads its
        co-moment from the run's sums (:meth:`Moments.of_sums`); the run's sums and the
        rows' image groups (only for image-major layouts of images inside the declared
        image set) share one ``[p, p]`` product per image group the batch touches, taken
        about that group's shift (its first rows' mean, close to its rows, so the float32
        products keep their precision); the run's sums are re-expressed about each
        group's shift when the run enters the group (G times a run, in float64)."""
        if moments.source is None:
            moments.update(rows)
        if groups is None:
            return
        batch = self._batch
        if (
            image_sums is None
            or x.shape[0] != batch
            or rows.shape[0] % batch
            or self.images + batch > image_sums.images
        ):
            groups.update(rows)
            return
        per_image = rows.shape[0] // batch
        for group, offset, count in image_sums.spans(batch, self.images):
            chunk = rows[offset * per_image : (offset + count) * per_image]
            own = image_sums.sums_of(group)
            products = own.products(chunk)  # about the group's shift: float32 stays exact
            assert own.shift is not None
            if groups.shift is None or not torch.equal(groups.shift, own.shift):
                groups.reshift(own.shift)  # once per image group the run enters
            groups.add(chunk.shape[0], products)
            if image_sums.add(group, count, chunk.shape[0], products, own.shift):
                self._closed = True  # freed p × p sums: given back after the forward

    def _root_pre(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        first = next((a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), None)
        if first is None:
            raise CaptureError("the model's forward received no tensor: cannot count images")
        self._batch = int(first.shape[0])
        self._on_cpu = first.device.type == "cpu"
        self._input_size = tuple(first.shape[-2:]) if first.dim() == 4 else None

    def _root_post(self, module: nn.Module, args: tuple, output: Any) -> None:
        self.images += self._batch
        # On the CPU after every forward, not only those that closed an image group:
        # glibc keeps the pages of the capture's per-batch temporaries (4-32 MB, past its
        # mmap threshold) between the activations, and a long run's peak grew with them
        # (1,024 images: 2.0 GB against 1.8 GB). About 30 ms a forward, lost in a CPU
        # forward's seconds; a GPU forward's temporaries are not on the heap.
        if self._closed or self._on_cpu:
            release_free_memory()
        self._closed = False
        for record, tap in zip(self.attention.values(), self._taps, strict=True):
            record.source = tap.source or record.source

    # -- context ----------------------------------------------------------------------

    def __enter__(self) -> Capture:
        if self._active:
            raise CaptureError("this capture is already active")
        self._active = True
        try:
            self._handles.append(
                self.model.register_forward_pre_hook(self._root_pre, with_kwargs=True)
            )
            self._handles.append(self.model.register_forward_hook(self._root_post))
            for name, record in self.attention.items():
                tap = AttentionTap(
                    self._modules[name],
                    on_probs=self._on_probs(record),
                    on_heads=self._on_heads(record) if self.options.head_moments else None,
                    on_problem=record.note,
                    exact_outputs=self.options.exact_outputs,
                )
                self._taps.append(tap)
                self._handles.extend(tap.attach())
            for name, channel in self.channels.items():
                tap_c = ChannelTap(
                    self._modules[name],
                    channel.site.point,
                    channel.site.channel_axis,
                    on_channels=self._on_channels(channel)
                    if self.options.channel_moments
                    else None,
                )
                self._handles.extend(tap_c.attach())
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._remove()

    def state(self, *, copy: bool = True, derived: bool = True) -> CaptureState:
        """Everything gathered so far as plain arrays (see :class:`CaptureState`).

        Args:
            copy: ``False`` gives views of the live accumulators instead of copies (for
                a checkpoint written at once: no second copy of every covariance).
            derived: ``False`` leaves out the moments that are read from a layer's CKA
                sums (:meth:`Moments.of_sums`): a checkpoint keeps the sums, and
                :meth:`restore` reads the moments from them again.
        """

        def moments(found: Moments | None) -> dict[str, np.ndarray] | None:
            if found is None or (found.source is not None and not derived):
                return None
            return found.state(copy)

        layers: dict[str, LayerState] = {}
        for name, record in self.attention.items():
            layers[name] = LayerState(
                name,
                "attention",
                {
                    "heads": record.heads,
                    "geometry": record.geometry.to_dict(),
                    "images": record.images,
                    "nonfinite_batches": record.nonfinite,
                },
                summaries={k: record.summary(k) for k in record.summaries},
                maps=record.maps_array() if record.maps else None,
                moments=moments(record.moments),
                groups=record.groups.state(copy) if record.groups else None,
                image_groups=record.image_sums.state(copy) if record.image_sums else None,
            )
        for name, channel in self.channels.items():
            site = channel.site
            layers[name] = LayerState(
                name,
                "channel",
                {
                    "channels": channel.channels,
                    "site": {
                        "kind": site.kind,
                        "point": site.point,
                        "channel_axis": site.channel_axis,
                    },
                    "images": channel.images,
                    "nonfinite_batches": channel.nonfinite,
                },
                moments=moments(channel.moments),
                groups=channel.groups.state(copy) if channel.groups else None,
                image_groups=channel.image_sums.state(copy) if channel.image_sums else None,
            )
        return CaptureState(layers)

    def restore(self, state: CaptureState) -> None:
        """Seed the records with ``state`` (e.g. a checkpoint), so that this capture
        continues it: later batches add to its counts, summaries and accumulators."""
        self.images = state.images()  # position draws continue where the state stopped
        for name, layer in state.layers.items():
            if layer.kind == "attention" and name in self.attention:
                record = self.attention[name]
                geometry = layer.geometry
                if geometry is not None:
                    record.geometry = geometry
                record.images = int(layer.attrs["images"])
                record.nonfinite = int(layer.attrs.get("nonfinite_batches", 0))
                record.summaries = {k: [torch.from_numpy(v)] for k, v in layer.summaries.items()}
                record.maps = [torch.from_numpy(layer.maps)] if layer.maps is not None else []
                if layer.groups is not None:  # the moments are read from the sums
                    record.groups = GroupSums.from_state(layer.groups)
                    record.moments = Moments.of_sums(record.groups)
                if layer.image_groups is not None:
                    record.image_sums = ImageGroups.from_state(layer.image_groups)
            elif layer.kind == "channel" and name in self.channels:
                channel = self.channels[name]
                channel.channels = int(layer.attrs["channels"])
                channel.images = int(layer.attrs["images"])
                channel.nonfinite = int(layer.attrs.get("nonfinite_batches", 0))
                if layer.groups is not None:
                    channel.groups = GroupSums.from_state(layer.groups)
                if channel.groups is not None and channel.channels <= self.options.max_covariance:
                    channel.moments = Moments.of_sums(channel.groups)  # as _on_channels ties
                elif layer.moments is not None:
                    channel.moments = Moments.from_state(layer.moments)
                if layer.image_groups is not None:
                    channel.image_sums = ImageGroups.from_state(
                        layer.image_groups, self.options.group_summary
                    )

    def _remove(self) -> None:
        try:
            for tap in self._taps:
                tap.unwind()
        finally:
            for handle in self._handles:
                handle.remove()
            self._handles.clear()
            self._taps.clear()
            self._active = False


def capture(model: nn.Module, options: CaptureOptions | None = None, **kwargs: Any) -> Capture:
    """Capture attention and channel statistics of ``model`` inside a ``with`` block.

    Args:
        model: Any module.
        options: A :class:`CaptureOptions`; or give its fields as keyword arguments.
        **kwargs: Fields of :class:`CaptureOptions`.

    Example:
        >>> with hooks.capture(model, channels=None, keep_maps=2) as cap:
        ...     model(images)
        >>> cap.attention["blocks.0.attn"].maps_array().shape  # (2, 6, 197, 197)
    """
    if options is not None and kwargs:
        raise TypeError("give either options= or keyword fields, not both")
    return Capture(model, options or CaptureOptions(**kwargs))
