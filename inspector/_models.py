"""Turn a user's model name and weights choice into a timm model in eval mode.

Names resolve once (:func:`resolve_model_name`): an exact timm name wins, then the
alias rule (the shortest registered name extending ``NAME_``, ties broken
alphabetically), otherwise :class:`~inspector._errors.ModelNotFoundError` with close
matches. Weights (:func:`create_model`) are ``auto``, ``pretrained``, ``random`` or a
file; whenever ``auto`` falls back to random initialisation the reason is returned in
:class:`WeightsInfo` and logged on the ``inspector`` logger at WARNING level.
"""

from __future__ import annotations

import collections
import difflib
import logging
import os
import pickle
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import huggingface_hub
import safetensors.torch
import timm
import torch
from timm.models import get_pretrained_cfg
from torch import nn

from ._errors import ModelNotFoundError, WeightsError
from ._files import regular_file_problem

__all__ = [
    "Resolution",
    "WeightsInfo",
    "create_model",
    "load_weights_file",
    "resolve_model_name",
]

logger = logging.getLogger("inspector")

WEIGHTS_MODES = ("auto", "pretrained", "random")
"""The weights choices that are not a file path."""

PROBE_TIMEOUT_S = 3.0
"""How long the connectivity probe may wait for the weights host before calling it
unreachable (the whole probe, name lookup included, is bounded by this)."""

_TORCH_SUFFIXES = (".pth", ".pt", ".bin")
_HF_FILENAMES = ("model.safetensors", "pytorch_model.bin")  # timm's safe-first order


@dataclass(frozen=True)
class Resolution:
    """How a requested model name became a timm name.

    Attributes:
        requested: The name as the user gave it.
        name: The timm name to create (``arch`` or ``arch.tag``).
        how: ``"exact"`` when ``requested`` is registered as given, ``"alias"`` when
            the alias rule (or case/hyphen normalisation) picked ``name``.
        alternatives: Other registered names the alias also extends, shortest first;
            empty for exact matches.
    """

    requested: str
    name: str
    how: Literal["exact", "alias"]
    alternatives: tuple[str, ...] = ()


@dataclass(frozen=True)
class WeightsInfo:
    """Where a model's weights came from, recorded with every run.

    Attributes:
        source: ``"pretrained"``, ``"random"`` or ``"file"``.
        reason: One human-readable line; for a random fallback it says why.
        path: The file the weights were read from (a cached or given file), if any.
        tag: The timm pretrained tag (``fb_in1k``) for pretrained weights, else None.
        reparameterized: The file held the re-parameterized (fused, inference) form, so
            the model was re-parameterized (``timm.utils.reparameterize_model``) first.
    """

    source: Literal["pretrained", "random", "file"]
    reason: str
    path: str | None = None
    tag: str | None = None
    reparameterized: bool = False


# --------------------------------------------------------------------------- names


def _alias_table(names: list[str]) -> dict[str, list[str]]:
    """Map every ``_``-prefix of a registered name to the names extending it."""
    table: dict[str, list[str]] = collections.defaultdict(list)
    for name in names:
        parts = name.split("_")
        for i in range(1, len(parts)):
            table["_".join(parts[:i])].append(name)
    return table


def _by_length(names: list[str]) -> list[str]:
    return sorted(set(names), key=lambda n: (len(n), n))


_SIZES = ("tiny", "small", "base")
"""A family's canonical models carry a size word after its name; the smallest of these
sizes comes first (``swin`` -> ``swin_tiny_patch4_window7_224``, not ``swin_s3_base_224``)."""


def _canonical_first(key: str, names: list[str]) -> list[str]:
    """Candidates for alias ``key``: the family's canonical line (``key_tiny_...``,
    ``key_small_...``, ``key_base_...``) first, then the rest; shortest, then
    alphabetical, within each."""

    def rank(name: str) -> tuple[int, int, str]:
        rest = name[len(key) + 1 :].split("_")[0]
        size = _SIZES.index(rest) if rest in _SIZES else len(_SIZES)
        return (size, len(name), name)

    return sorted(set(names), key=rank)


def _check_tag(arch: str, tag: str, requested: str) -> None:
    tags = [p.partition(".")[2] for p in timm.list_pretrained(f"{arch}.*")]
    if tag not in tags:
        known = ", ".join(tags) if tags else "none (this architecture has no pretrained tags)"
        raise ModelNotFoundError(
            f"Model {requested!r}: {arch!r} has no pretrained tag {tag!r}; known tags: {known}. "
            f"Drop the '.{tag}' suffix to use the default weights."
        )


def resolve_model_name(name: str) -> Resolution:
    """Resolve a user's model name to a registered timm name.

    Rules, in order: an exact timm name (optionally ``arch.tag``) wins; otherwise the
    family's canonical model extending ``NAME_`` is chosen (``NAME_tiny_...``, then
    ``_small_``, ``_base_``; shortest, then alphabetical, among them; else the shortest),
    and the other extensions are returned as alternatives. Matching ignores case and
    treats ``-`` as ``_`` (such a match counts as an alias so that it is printed).

    Args:
        name: A timm name, ``arch.tag`` or a short alias such as ``deit_small``.

    Returns:
        The resolution; ``name`` can be passed to :func:`timm.create_model`.

    Raises:
        ModelNotFoundError: Nothing matches; the message lists close matches.
    """
    requested = name
    arch, dot, tag = name.strip().partition(".")
    key = arch.lower().replace("-", "_")
    if not key:
        raise ModelNotFoundError(
            f"Model name {requested!r} is empty; give a timm name such as 'resnet50' or an "
            "alias such as 'deit_small'."
        )
    names = timm.list_models()
    registered = set(names)
    table = _alias_table(names)

    if key in registered:
        how: Literal["exact", "alias"] = "exact" if key == arch else "alias"
        alternatives: tuple[str, ...] = ()
        chosen = key
    elif key in table:
        how = "alias"
        chosen, *rest = _canonical_first(key, table[key])
        alternatives = tuple(rest)
    else:
        raise ModelNotFoundError(_unknown_message(requested, key, names, table))

    if dot:
        _check_tag(chosen, tag, requested)
        chosen = f"{chosen}.{tag}"
    return Resolution(requested=requested, name=chosen, how=how, alternatives=alternatives)


def _unknown_message(
    requested: str, key: str, names: list[str], table: dict[str, list[str]]
) -> str:
    registered = set(names)
    keys = names + [k for k in table if k not in registered]
    suggestions: list[str] = []
    for match in difflib.get_close_matches(key, keys, n=8, cutoff=0.6):
        resolved = match if match in registered else _by_length(table[match])[0]
        if resolved not in suggestions:
            suggestions.append(resolved)
    hint = f" Did you mean: {', '.join(suggestions[:5])}?" if suggestions else ""
    return (
        f"Unknown model {requested!r}: no timm architecture is named {key!r} or starts with "
        f"'{key}_'.{hint} List names with `inspector models '<glob>'` (e.g. 'vit_*')."
    )


# ------------------------------------------------------------------------- weights


def create_model(
    name: str, weights: str | os.PathLike[str] = "auto"
) -> tuple[nn.Module, WeightsInfo]:
    """Create a timm model (in eval mode) with the requested weights.

    Args:
        name: A timm name or alias (see :func:`resolve_model_name`).
        weights: ``"auto"`` uses pretrained weights when they are cached or the hub
            answers a quick probe, else random initialisation with a logged warning
            and the reason in the returned info; ``"pretrained"`` demands them;
            ``"random"`` never tries; anything else is a ``.safetensors`` or
            ``.pth``/``.pt`` state-dict file (see :func:`load_weights_file`).

    Returns:
        The model and where its weights came from.

    Raises:
        ModelNotFoundError: The name does not resolve.
        WeightsError: ``pretrained`` weights are unavailable, or the file cannot be
            read or does not fit the model.
    """
    resolved = resolve_model_name(name).name
    if isinstance(weights, str) and weights in WEIGHTS_MODES:
        mode = weights
    else:
        path = Path(os.fspath(weights)).expanduser()
        model = timm.create_model(resolved, pretrained=False)
        model, fused = load_weights_file(model, path, reparameterize=True)
        how = " into the re-parameterized (fused) form" if fused else ""
        info = WeightsInfo(
            "file", f"weights loaded from {path}{how}", path=str(path), reparameterized=fused
        )
        return model.eval(), info

    if mode == "random":
        model = timm.create_model(resolved, pretrained=False)
        return model.eval(), WeightsInfo("random", "random initialisation requested")

    registered = get_pretrained_cfg(resolved, allow_unregistered=True)
    cfg: dict[str, Any] = registered.to_dict() if registered is not None else {}
    try:
        model, info = _pretrained(resolved, cfg)
    except WeightsError as exc:
        if mode == "pretrained":
            raise
        reason = f"{exc} Using RANDOM initialisation: results describe an untrained network."
        logger.warning("%s", reason)
        model = timm.create_model(resolved, pretrained=False)
        return model.eval(), WeightsInfo("random", reason)
    return model.eval(), info


def _pretrained(name: str, cfg: dict[str, Any]) -> tuple[nn.Module, WeightsInfo]:
    """Load pretrained weights from the cache, or download them if the host answers."""
    hub_id: str | None = cfg.get("hf_hub_id") or None
    url: str | None = cfg.get("url") or None
    if not hub_id and not url:
        raise WeightsError(
            f"timm registers no pretrained weights for {name!r}. "
            "Pass --weights random, or --weights FILE with a state dict of your own."
        )
    where = f"hub repo {hub_id}" if hub_id else url
    tag: str | None = cfg.get("tag") or None
    cached = _cached_file(cfg)
    if cached is not None:
        try:
            model = timm.create_model(
                name, pretrained=True, pretrained_cfg_overlay={"file": cached}
            )
        except Exception as exc:
            raise WeightsError(
                f"Cached pretrained weights for {name!r} at {cached} cannot be loaded "
                f"({type(exc).__name__}: {exc}). Delete the file so it is downloaded again."
            ) from exc
        info = WeightsInfo("pretrained", f"cached weights from {where}", path=cached, tag=tag)
        return model, info

    if hub_id:
        host = str(huggingface_hub.constants.ENDPOINT).rstrip("/")
        problem = "HF_HUB_OFFLINE is set" if huggingface_hub.constants.HF_HUB_OFFLINE else None
    else:
        host = "{0.scheme}://{0.netloc}".format(urlparse(url or ""))
        problem = None
    problem = problem or _unreachable(host)
    if problem is not None:
        raise WeightsError(
            f"Pretrained weights for {name!r} ({where}) are not cached and the hub {host} is "
            f"unreachable ({problem}). Connect once to download them, or pass --weights FILE."
        )
    try:
        model = timm.create_model(name, pretrained=True)
    except Exception as exc:
        raise WeightsError(
            f"Downloading pretrained weights for {name!r} from {where} failed "
            f"({type(exc).__name__}: {exc}). Retry, or pass --weights FILE or --weights random."
        ) from exc
    return model, WeightsInfo("pretrained", f"downloaded weights from {where}", tag=tag)


def _cached_file(cfg: dict[str, Any]) -> str | None:
    """The locally cached weights file timm would load for ``cfg``, if present."""
    hub_id: str | None = cfg.get("hf_hub_id") or None
    if hub_id:
        repo, _, revision = hub_id.partition("@")
        wanted = cfg.get("hf_hub_filename")
        for filename in (wanted,) if wanted else _HF_FILENAMES:
            try:
                found = huggingface_hub.try_to_load_from_cache(
                    repo, filename, revision=revision or None
                )
            except Exception:  # a corrupt cache reads as "not cached"
                found = None
            if isinstance(found, str) and os.path.isfile(found):
                return found
        return None
    url: str | None = cfg.get("url") or None
    if url:
        candidate = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name
        if candidate.is_file():
            return str(candidate)
    return None


def _unreachable(host: str) -> str | None:
    """Probe ``host`` once; return why it is unreachable, or None when it answers.

    The probe runs in a daemon thread joined with a deadline, so a hanging name lookup
    cannot stretch it beyond :data:`PROBE_TIMEOUT_S`; proxies from the environment
    are honoured.
    """
    timeout = PROBE_TIMEOUT_S
    outcome: list[str | None] = []

    def probe() -> None:
        try:
            with urllib.request.urlopen(
                urllib.request.Request(host, method="HEAD"), timeout=timeout
            ):
                outcome.append(None)
        except urllib.error.HTTPError:
            outcome.append(None)  # the host answered, even if with an error status
        except Exception as exc:
            outcome.append(f"{type(exc).__name__}: {exc}")

    thread = threading.Thread(target=probe, name="inspector-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return outcome[0] if outcome else f"no answer within {timeout:g} s"


# ---------------------------------------------------------------------------- files


def _fits(model: nn.Module, state: Mapping[str, torch.Tensor]) -> bool:
    own = model.state_dict()
    return own.keys() == state.keys() and all(own[k].shape == state[k].shape for k in own)


def _reparameterizable(model: nn.Module) -> bool:
    return any(
        hasattr(m, a) for m in model.modules() for a in ("reparameterize", "switch_to_deploy")
    )


def load_weights_file(
    model: nn.Module, path: str | os.PathLike[str], *, reparameterize: bool = False
) -> tuple[nn.Module, bool]:
    """Load a state-dict file into ``model`` strictly.

    With ``reparameterize``, a file holding a timm model's re-parameterized (fused,
    inference) form — the keys of ``timm.utils.reparameterize_model(model)``, as MobileOne,
    RepVGG, FastViT, RepViT, ... publish them — is detected by its keys: the model is
    re-parameterized, then loaded strictly.

    ``.safetensors`` files are read with :func:`safetensors.torch.load_file`;
    ``.pth``/``.pt``/``.bin`` files with ``torch.load(weights_only=True)``, so a file
    that pickles arbitrary Python objects is refused. A dict holding the state dict
    under ``"state_dict"`` or ``"model"`` is accepted, as is a ``module.`` prefix on
    every key (``DataParallel``).

    Args:
        model: The module to load into (left unchanged when loading fails).
        path: The weights file.

    Returns:
        The loaded model (``model`` itself, or its re-parameterized copy) and whether it
        was re-parameterized.

    Raises:
        WeightsError: The file is missing, unreadable, not a state dict, or its keys
            and shapes do not match the model's (in either form).
    """
    path = Path(os.fspath(path)).expanduser()
    expected = f"'auto', 'pretrained', 'random' or a .safetensors/{'/'.join(_TORCH_SUFFIXES)} file"
    problem = regular_file_problem(path)  # a named pipe would block torch.load forever
    if problem is not None:
        raise WeightsError(f"Weights {str(path)!r} {problem}; expected {expected}.")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        try:
            obj: object = safetensors.torch.load_file(path, device="cpu")
        except Exception as exc:
            raise WeightsError(
                f"Weights file {str(path)!r} is not a readable safetensors file ({exc}). "
                "Check that the download or copy is complete."
            ) from exc
    elif suffix in _TORCH_SUFFIXES:
        obj = _torch_load(path)
    else:
        raise WeightsError(
            f"Weights file {str(path)!r} has an unknown extension {suffix!r}; expected {expected}."
        )
    state_dict = _state_dict(obj, path)
    if reparameterize and not _fits(model, state_dict) and _reparameterizable(model):
        from timm.utils.model import reparameterize_model

        fused = reparameterize_model(model.eval())
        if _fits(fused, state_dict):
            fused.load_state_dict(state_dict, strict=True)
            logger.info("%s holds the re-parameterized (fused) form: model fused", path.name)
            return fused, True
        fused_own = fused.state_dict()
        if len(set(fused_own) & set(state_dict)) > len(set(model.state_dict()) & set(state_dict)):
            _check_fits(fused, state_dict, path, form="the re-parameterized (fused) ")
    _check_fits(model, state_dict, path)
    model.load_state_dict(state_dict, strict=True)
    return model, False


def _torch_load(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        detail = (
            f"it pickles the Python object {found.group(1)}"
            if found
            else "it is not a plain tensor file"
        )
        raise WeightsError(
            f"Weights file {str(path)!r} refused: torch.load(weights_only=True) cannot read it "
            f"({detail}). Save `model.state_dict()` instead, or convert it to .safetensors."
        ) from exc
    except Exception as exc:
        raise WeightsError(
            f"Weights file {str(path)!r} is not a readable PyTorch file ({type(exc).__name__}: "
            f"{exc}). Check that the download or copy is complete."
        ) from exc


def _state_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise WeightsError(
            f"Weights file {str(path)!r} holds a {type(obj).__name__}, not a state dict "
            "(a mapping of parameter names to tensors). Save `model.state_dict()`."
        )
    bad = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise WeightsError(
            f"Weights file {str(path)!r} is not a state dict: {len(bad)} entries are not tensors "
            f"({', '.join(bad[:3])}). Save `model.state_dict()`, or nest it under 'state_dict'."
        )
    state = {str(k): v for k, v in obj.items()}
    if all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def _check_fits(
    model: nn.Module, state: dict[str, torch.Tensor], path: Path, form: str = ""
) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if not (missing or unexpected or shapes):
        return
    groups = {"missing keys": missing, "unexpected keys": unexpected, "shape mismatches": shapes}
    problems = [
        f"{len(items)} {label} ({'; '.join(items[:3])}{', ...' if len(items) > 3 else ''})"
        for label, items in groups.items()
        if items
    ]
    name = (getattr(model, "pretrained_cfg", None) or {}).get("architecture")
    name = name or type(model).__name__
    raise WeightsError(
        f"Weights file {str(path)!r} does not fit {form or ''}model {name!r}: "
        f"{', '.join(problems)}. Pass the architecture the file was saved from (and its "
        "number of classes)."
    )
