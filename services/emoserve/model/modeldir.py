"""The model directory: the one unit every stage loads.

Layout::

    MODEL_DIR/
      model.json            # ModelManifest: configs, token list, voices, audio parameters
      acoustic.safetensors  # PromptTTS weights        (acoustic stage)
      vocoder.safetensors   # HiFi-GAN weights         (vocoder stage)
      style/                # Hugging Face BERT folder (encoder stage)
      lexicon.txt           # optional English lexicon (encoder stage); CMU dictionary when absent

Each stage reads ``model.json`` and only the files it needs.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from emoserve.model.acoustic import AcousticConfig, AcousticModel
from emoserve.model.checkpoint import CheckpointError, fill_module
from emoserve.model.vocoder import HiFiGAN, VocoderConfig

MANIFEST = "model.json"
FORMAT = "emoserve-model/1"
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


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
    """Hugging Face model folder inside the model directory."""
    pooling: str = "pooler"
    """``pooler`` (BERT pooler_output, EmotiVoice) or ``mean`` (masked mean of the last hidden state)."""
    max_tokens: int = 512


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
    """Lexicon file name inside the directory, or None for the CMU dictionary."""
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

    @property
    def style_dir(self) -> Path:
        return self.path / self.manifest.style.directory

    @property
    def lexicon_path(self) -> Path | None:
        return None if self.manifest.lexicon is None else self.path / self.manifest.lexicon


def write_model_dir(
    out: str | os.PathLike,
    manifest: ModelManifest,
    acoustic: AcousticModel,
    vocoder: HiFiGAN,
    style_src: str | os.PathLike,
    lexicon_src: str | os.PathLike | None = None,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Writes a complete model directory atomically: nothing appears at ``out`` unless all of it was written.

    Args:
        out: target directory (must not exist, or be empty).
        manifest: the manifest; its ``lexicon`` field must be set iff ``lexicon_src`` is given.
        acoustic: filled acoustic model.
        vocoder: filled vocoder.
        style_src: a Hugging Face model folder copied to ``style/``.
        lexicon_src: optional lexicon file copied to ``lexicon.txt``.
        dtype: storage dtype of the safetensors files.
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty")
    if (manifest.lexicon is None) != (lexicon_src is None):
        raise ValueError("manifest.lexicon and lexicon_src must be given together")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".emoserve-", dir=out.parent))
    try:
        for name, module in (("acoustic.safetensors", acoustic), ("vocoder.safetensors", vocoder)):
            tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in module.state_dict().items()}
            save_file(tensors, tmp / name)
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


__all__ = ["AudioConfig", "CheckpointError", "ModelDir", "ModelManifest", "StyleConfig", "write_model_dir"]
