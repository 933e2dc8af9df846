"""Parity with EmotiVoice's own code: import its checkpoints and match its recorded outputs.

The reference data (``tests/data/emotivoice_ref``) was recorded by ``tools/record_emotivoice_reference.py``
running EmotiVoice's inference path on a small random model; see its README.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from emoserve.model.checkpoint import CheckpointError
from emoserve.model.dummy import packaged_labels
from emoserve.model.importer import import_emotivoice
from emoserve.model.modeldir import ModelDir
from emoserve.model.style import StyleEncoder

REF = Path(__file__).resolve().parents[1] / "data" / "emotivoice_ref"
CASES = json.loads((REF / "cases.json").read_text(encoding="utf-8"))["cases"]
WAV_TOLERANCE = 1e-3


def _labels(tmp: Path) -> tuple[Path, Path]:
    tokens, voices = tmp / "tokenlist", tmp / "speaker2"
    tokens.write_text("\n".join(packaged_labels("tokenlist")), encoding="utf-8")
    voices.write_text("\n".join(packaged_labels("voices")), encoding="utf-8")
    return tokens, voices


def _import(tmp: Path, generator: str) -> ModelDir:
    tokens, voices = _labels(tmp)
    out = import_emotivoice(
        generator=REF / generator,
        style_encoder=REF / "style_encoder.ckpt",
        bert_dir=REF / "bert",
        tokenlist=tokens,
        speakers=voices,
        config=REF / "config.yaml",
        out=tmp / "model",
        progress=False,
    )
    return ModelDir(out)


@pytest.fixture(scope="module")
def reference() -> dict[str, torch.Tensor]:
    return load_file(REF / "reference.safetensors")


@pytest.fixture(scope="module", params=["g_parametrizations.ckpt", "g_weight_norm.ckpt"])
def imported(request, tmp_path_factory) -> ModelDir:
    return _import(tmp_path_factory.mktemp("import"), request.param)


def test_style_embeddings_match_emotivoice(imported, reference):
    style = StyleEncoder(imported.style_dir, pooling="pooler")
    for case in CASES:
        key = case["key_prefix"]
        prompt = style.embed_cached([case["prompt"]])[0]
        content = style.embed([case["content"]])[0]
        assert (prompt - reference[f"{key}.prompt_embedding"]).abs().max() <= 1e-5, case["name"]
        assert (content - reference[f"{key}.content_embedding"]).abs().max() <= 1e-5, case["name"]


def test_mel_durations_and_wav_match_emotivoice_one_request_at_a_time(imported, reference):
    am, voc = imported.load_acoustic(), imported.load_vocoder()
    worst_wav = 0.0
    for case in CASES:
        key = case["key_prefix"]
        ids = reference[f"{key}.token_ids"][None]
        out = am.generate(
            ids,
            torch.tensor([ids.shape[1]]),
            torch.tensor([imported.voice_id(case["speaker"])]),
            reference[f"{key}.prompt_embedding"][None],
            reference[f"{key}.content_embedding"][None],
        )
        assert torch.equal(out.durations, reference[f"{key}.durations"]), case["name"]
        ref_mel = reference[f"{key}.mel"][0].T
        assert out.mel.shape[1:] == ref_mel.shape, case["name"]
        assert (out.mel[0] - ref_mel).abs().max() <= 1e-4, case["name"]
        wav = voc.vocode(out.mel, out.mel_lengths)[0]
        ref_wav = reference[f"{key}.wav"].flatten()
        assert wav.shape == ref_wav.shape, case["name"]
        worst_wav = max(worst_wav, (wav - ref_wav).abs().max().item())
    assert worst_wav <= WAV_TOLERANCE, f"max abs wav error {worst_wav}"


def test_all_cases_in_one_batch_match_emotivoice(imported, reference):
    am, voc = imported.load_acoustic(), imported.load_vocoder()
    keys = [c["key_prefix"] for c in CASES]
    seqs = [reference[f"{k}.token_ids"] for k in keys]
    lengths = torch.tensor([len(s) for s in seqs])
    ids = torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True)
    out = am.generate(
        ids,
        lengths,
        torch.tensor([imported.voice_id(c["speaker"]) for c in CASES]),
        torch.stack([reference[f"{k}.prompt_embedding"] for k in keys]),
        torch.stack([reference[f"{k}.content_embedding"] for k in keys]),
    )
    wavs = voc.vocode(out.mel, out.mel_lengths)
    for b, k in enumerate(keys):
        ref_wav = reference[f"{k}.wav"].flatten()
        assert wavs[b].shape == ref_wav.shape, k
        assert (wavs[b] - ref_wav).abs().max().item() <= WAV_TOLERANCE, k


def test_import_refuses_a_generator_missing_a_tensor_and_writes_nothing(tmp_path):
    state = torch.load(REF / "g_parametrizations.ckpt", weights_only=True)
    del state["generator"]["am.to_mel.weight"]
    broken = tmp_path / "g_broken"
    torch.save(state, broken)
    tokens, voices = _labels(tmp_path)
    with pytest.raises(CheckpointError, match="to_mel.weight"):
        import_emotivoice(broken, REF / "style_encoder.ckpt", REF / "bert", tokens, voices, tmp_path / "out",
                          config=REF / "config.yaml", progress=False)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".emoserve-")]


def test_import_refuses_a_truncated_checkpoint(tmp_path):
    data = (REF / "g_parametrizations.ckpt").read_bytes()
    broken = tmp_path / "g_truncated"
    broken.write_bytes(data[: len(data) // 3])
    tokens, voices = _labels(tmp_path)
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        import_emotivoice(broken, REF / "style_encoder.ckpt", REF / "bert", tokens, voices, tmp_path / "out",
                          progress=False)
    assert not (tmp_path / "out").exists()


def test_import_cli_reports_errors_without_a_traceback(tmp_path, capsys):
    from emoserve.cli import main

    tokens, voices = _labels(tmp_path)
    code = main(["import-emotivoice", "--generator", str(tmp_path / "missing"), "--style-encoder",
                 str(REF / "style_encoder.ckpt"), "--bert-dir", str(REF / "bert"), "--tokenlist", str(tokens),
                 "--speakers", str(voices), "--out", str(tmp_path / "out")])
    assert code == 2
    assert "checkpoint not found" in capsys.readouterr().err
