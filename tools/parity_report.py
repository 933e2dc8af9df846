"""Prints how closely emoserve reproduces EmotiVoice on the recorded reference data.

    python tools/parity_report.py [--json OUT.json]

Imports the recorded EmotiVoice checkpoints (``tests/data/emotivoice_ref``, both weight-norm forms) with
``import_emotivoice``, runs every case one at a time and all cases as one batch (fp32, CPU), and compares
durations, mels and waveforms with what EmotiVoice's own code produced; then compares the front end with
EmotiVoice's ``g2p_cn_en`` on ``tests/data/frontend_reference.json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file

from emoserve.frontend import Frontend
from emoserve.model.dummy import packaged_labels
from emoserve.model.importer import import_emotivoice
from emoserve.model.modeldir import ModelDir

ROOT = Path(__file__).resolve().parents[1]
REF = ROOT / "tests" / "data" / "emotivoice_ref"
FRONTEND_REF = ROOT / "tests" / "data" / "frontend_reference.json"


def _import(tmp: Path, generator: str) -> ModelDir:
    tokens, voices = tmp / "tokenlist", tmp / "speaker2"
    tokens.write_text("\n".join(packaged_labels("tokenlist")), encoding="utf-8")
    voices.write_text("\n".join(packaged_labels("voices")), encoding="utf-8")
    out = import_emotivoice(REF / generator, REF / "style_encoder.ckpt", REF / "bert", tokens, voices,
                            tmp / generator, config=REF / "config.yaml", progress=False)
    return ModelDir(out)


def model_parity(generator: str) -> dict:
    """Max abs errors of mel and wav, one request at a time and batched, for one checkpoint form."""
    cases = json.loads((REF / "cases.json").read_text(encoding="utf-8"))["cases"]
    ref = load_file(REF / "reference.safetensors")
    with tempfile.TemporaryDirectory() as tmp:
        model = _import(Path(tmp), generator)
        am, voc = model.load_acoustic(), model.load_vocoder()
        keys = [c["key_prefix"] for c in cases]
        seqs = [ref[f"{k}.token_ids"] for k in keys]
        lengths = torch.tensor([len(s) for s in seqs])
        args = (
            torch.tensor([model.voice_id(c["speaker"]) for c in cases]),
            torch.stack([ref[f"{k}.prompt_embedding"] for k in keys]),
            torch.stack([ref[f"{k}.content_embedding"] for k in keys]),
        )
        batched = am.generate(torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True), lengths, *args)
        batched_wavs = voc.vocode(batched.mel, batched.mel_lengths)
        rows = []
        for b, key in enumerate(keys):
            one = am.generate(seqs[b][None], lengths[b : b + 1], *(a[b : b + 1] for a in args))
            wav = voc.vocode(one.mel, one.mel_lengths)[0]
            ref_wav, ref_mel = ref[f"{key}.wav"].flatten(), ref[f"{key}.mel"][0].T
            rows.append({
                "case": cases[b]["name"],
                "durations_equal": bool(torch.equal(one.durations, ref[f"{key}.durations"])),
                "mel_max_abs": (one.mel[0] - ref_mel).abs().max().item(),
                "wav_max_abs": (wav - ref_wav).abs().max().item(),
                "batched_wav_max_abs": (batched_wavs[b] - ref_wav).abs().max().item(),
            })
    return {"generator": generator, "cases": rows}


def frontend_parity() -> dict:
    """Exact-match rate of the phoneme strings per language."""
    data = json.loads(FRONTEND_REF.read_text(encoding="utf-8"))
    frontend = Frontend()
    by_lang: dict[str, list[bool]] = {}
    for item in data["items"]:
        by_lang.setdefault(item["language"], []).append(frontend.phonemes(item["text"]) == item["phonemes"])
    return {lang: {"matched": sum(v), "total": len(v)} for lang, v in by_lang.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    report = {"model": [model_parity(g) for g in ("g_parametrizations.ckpt", "g_weight_norm.ckpt")],
              "frontend": frontend_parity()}
    for part in report["model"]:
        print(f"\n{part['generator']}")
        print(f"{'case':<22}{'durations':>10}{'mel max|err|':>14}{'wav max|err|':>14}{'batched wav':>14}")
        for r in part["cases"]:
            print(f"{r['case']:<22}{'equal' if r['durations_equal'] else 'DIFFER':>10}"
                  f"{r['mel_max_abs']:>14.2e}{r['wav_max_abs']:>14.2e}{r['batched_wav_max_abs']:>14.2e}")
    print("\nfront end vs EmotiVoice g2p_cn_en (exact phoneme strings)")
    for lang, v in report["frontend"].items():
        print(f"  {lang:<6}{v['matched']}/{v['total']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
