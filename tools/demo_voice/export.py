"""Assembles an emoserve model directory from the two trained parts.

    python -m emoserve.tools.demo_voice.export --am OUT/am/weights.pt --vocoder OUT/voc/weights.pt \\
        --data /work/demo_data --out MODEL_DIR

reads the acoustic and vocoder checkpoints (compact ``weights.pt`` or full ``last.pt``), folds the
vocoder's weight norm, and writes ``model.json``, fp16 ``acoustic.safetensors``/``vocoder.safetensors``, the
style encoder from ``DATA/style`` (the exact weights the training embeddings came from) and
``MODEL_CARD.md`` (:mod:`.evaluate` ``--card`` fills in the metrics).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from string import Template

import torch

from emoserve.model.acoustic import AcousticConfig, AcousticModel
from emoserve.model.checkpoint import fill_module, fold_weight_norm
from emoserve.model.modeldir import ModelManifest, StyleConfig, write_model_dir
from emoserve.model.vocoder import HiFiGAN, VocoderConfig
from emoserve.tools.demo_voice.dataset import STYLE_MAX_TOKENS, STYLE_POOLING, VoiceData
from emoserve.tools.demo_voice.train import VOICE, load_checkpoint

MODEL_NAME = "emoserve-demo-joe"
CARD = "MODEL_CARD.md"


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


def export(am_path: Path, vocoder_path: Path, data_dir: Path, out: Path) -> Path:
    """Writes the model directory; returns its path."""
    from emoserve.model.dummy import packaged_labels

    acoustic, vocoder, am_head, voc_head = load_parts(am_path, vocoder_path)
    train = VoiceData.load(data_dir / "train.npz")
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
        style=StyleConfig(directory="style", pooling=STYLE_POOLING, max_tokens=STYLE_MAX_TOKENS),
        description="Demo voice distilled from the CC0 Piper voice en_US-joe-medium; use EmotiVoice checkpoints "
        "for production.",
        extra=extra,
    )
    path = write_model_dir(out, manifest, acoustic, vocoder, data_dir / "style", dtype=torch.float16)
    (path / CARD).write_text(render_card(manifest, "Not evaluated yet: run `python -m emoserve.tools.demo_voice."
                                         "evaluate --model DIR --data DATA/heldout.npz --card`."), encoding="utf-8")
    (path / CARD).chmod(0o644)
    return path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--am", type=Path, required=True, help="acoustic checkpoint (weights.pt or last.pt)")
    p.add_argument("--vocoder", type=Path, required=True, help="vocoder checkpoint (weights.pt or last.pt)")
    p.add_argument("--data", type=Path, required=True, help="folder with train.npz, heldout.npz and style/")
    p.add_argument("--out", type=Path, required=True, help="model directory to create")
    a = p.parse_args(argv)
    path = export(a.am, a.vocoder, a.data, a.out)
    sizes = {f.name: f.stat().st_size for f in path.rglob("*") if f.is_file()}
    print(json.dumps({"model_dir": str(path), "bytes": sum(sizes.values()), "files": sizes}, indent=1))


if __name__ == "__main__":
    main()
