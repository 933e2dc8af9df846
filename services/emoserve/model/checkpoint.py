"""Reading EmotiVoice checkpoints: safe loading, weight-norm folding and the prefix map.

The prefix map is the only renaming between EmotiVoice and emoserve:

=============================  ===========================================
EmotiVoice tensor              emoserve tensor
=============================  ===========================================
``am.<name>``                  ``acoustic.safetensors``: ``<name>``
``generator.<name>``           ``vocoder.safetensors``: ``<name>``
``am.alignment_module.*``      dropped (training-only aligner)
``module.bert.<name>``         ``bert/`` weights: ``<name>`` (style encoder)
``module.*_clf.*``, ``module.style_embed_proj.*``  dropped (training-only heads)
=============================  ===========================================

Weight norm appears as ``<conv>.weight_g``/``<conv>.weight_v`` (older torch) or
``<conv>.parametrizations.weight.original0``/``original1`` (newer torch); both fold to ``<conv>.weight``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import nn

AM_PREFIX = "am."
VOCODER_PREFIX = "generator."
BERT_PREFIX = "module.bert."
DROPPED_PREFIXES = ("am.alignment_module.",)

_WN_FORMS = (
    (".weight_g", ".weight_v"),
    (".parametrizations.weight.original0", ".parametrizations.weight.original1"),
)


class CheckpointError(ValueError):
    """A checkpoint is unreadable or does not match the model it should fill."""


def load_torch_checkpoint(path: str | os.PathLike, key: str) -> dict[str, torch.Tensor]:
    """Loads ``torch.load(path, weights_only=True)[key]`` without ever unpickling code.

    Raises:
        CheckpointError: the file is missing, corrupted, not a tensor dict, or lacks ``key``.
    """
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise CheckpointError(f"checkpoint not found: {path}") from exc
    except Exception as exc:  # torch raises many types for corrupt/unsafe pickles
        raise CheckpointError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(obj, Mapping) or key not in obj:
        found = sorted(obj) if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(f"checkpoint {path} has no '{key}' entry (found: {found})")
    state = obj[key]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"checkpoint {path}: '{key}' is not a mapping of tensor names to tensors")
    return dict(state)


def fold_weight_norm(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Replaces every weight-norm pair (either form) by the plain ``weight = g * v / ||v||``.

    The norm is taken over all dimensions but the first, torch's default ``dim=0``.
    """
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        for g_suffix, v_suffix in _WN_FORMS:
            if name.endswith(v_suffix):
                break
            if name.endswith(g_suffix):
                base = name[: -len(g_suffix)]
                v_name = base + v_suffix
                if v_name not in state:
                    raise CheckpointError(f"weight-norm tensor {name} has no matching {v_name}")
                g, v = tensor.float(), state[v_name].float()
                dims = tuple(range(1, v.dim()))
                out[base + ".weight"] = g * v / v.norm(dim=dims, keepdim=True)
                break
        else:
            out[name] = tensor
    return out


def split_joint_generator(state: Mapping[str, torch.Tensor]) -> tuple[dict, dict]:
    """Splits EmotiVoice's joint ``generator`` dict into (acoustic, vocoder) state dicts by prefix.

    Raises:
        CheckpointError: a tensor belongs to neither part (listed by name).
    """
    acoustic, vocoder, unknown = {}, {}, []
    for name, tensor in state.items():
        if name.startswith(DROPPED_PREFIXES):
            continue
        if name.startswith(AM_PREFIX):
            acoustic[name[len(AM_PREFIX) :]] = tensor
        elif name.startswith(VOCODER_PREFIX):
            vocoder[name[len(VOCODER_PREFIX) :]] = tensor
        else:
            unknown.append(name)
    if unknown:
        raise CheckpointError(f"unexpected tensors (neither '{AM_PREFIX}' nor '{VOCODER_PREFIX}'): {unknown[:10]}")
    return acoustic, fold_weight_norm(vocoder)


def fill_module(module: nn.Module, state: Mapping[str, torch.Tensor], part: str) -> None:
    """Copies ``state`` into ``module``, requiring every name and shape to match exactly.

    Raises:
        CheckpointError: naming each missing, unexpected and mis-shaped tensor.
    """
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    misshaped = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if tuple(state[k].shape) != tuple(own[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing {missing}")
    if unexpected:
        problems.append(f"unexpected {unexpected}")
    if misshaped:
        problems.append(f"mis-shaped {misshaped}")
    if problems:
        raise CheckpointError(f"{part}: " + "; ".join(problems))
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})


def bert_overrides(style_state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The BERT weights inside EmotiVoice's style-encoder checkpoint, prefix stripped."""
    return {k[len(BERT_PREFIX) :]: v for k, v in style_state.items() if k.startswith(BERT_PREFIX)}
