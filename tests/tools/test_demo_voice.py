"""Demo-voice recipe on the CPU with tiny synthetic data: features, styles, corpus filters, data packing,
alignment, a few training steps of each part (loss falls, resume is exact), export to a model directory
that emoserve loads, and the evaluation metrics on signals with known answers."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from emoserve.model.dummy import packaged_labels, write_dummy_bert
from emoserve.model.modeldir import ModelDir, StylePackageError
from emoserve.model.style import StyleEncoder
from emoserve.tools.demo_voice import corpus
from emoserve.tools.demo_voice.align import (
    average_by_duration,
    beta_binomial_prior,
    forward_sum_loss,
    hard_alignment,
    monotonic_alignment,
)
from emoserve.tools.demo_voice.batches import DeviceData
from emoserve.tools.demo_voice.dataset import (
    VoiceData,
    assemble,
    check_prompts,
    decode_audio,
    encode_audio,
    export_style_encoder,
)
from emoserve.tools.demo_voice.evaluate import (
    WARP_ALPHA,
    Synthesizer,
    compare,
    dtw_path,
    evaluate,
    mcd_frames,
    mel_cepstrum,
    speech_seconds,
    spoken_phonemes,
)
from emoserve.tools.demo_voice.export import StylePackage, export
from emoserve.tools.demo_voice.features import (
    FeatureConfig,
    interpolate_unvoiced,
    mel_filterbank,
    mel_spectrogram,
    yin_f0,
)
from emoserve.tools.demo_voice.styles import (
    STYLES,
    Style,
    shift_pitch,
    stretch_batch,
    style_table,
)
from emoserve.tools.demo_voice.train import RunConfig, load_checkpoint, train
from tests.style_package import DISTRIBUTION, FOLDER, PACKAGE, VERSION, write_style_package

SR = 16000
FEATURES = FeatureConfig()
TEST_STYLES = (
    Style("neutral", 0.0, 1.0, 1.0, ("", "plain")),
    Style("happy", 2.5, 1.04, 1.15, ("Happy", "joyful")),
    Style("sad", -2.5, 0.92, 0.7, ("Sad", "gloomy")),
)


def harmonic(f0: float, seconds: float, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return sum(amplitude / k * np.sin(2 * np.pi * f0 * k * t + k) for k in range(1, 8)).astype(np.float32)


def fake_sentence(rng: np.random.Generator, n_tokens: int) -> np.ndarray:
    """Voiced 'vowels' and noise 'consonants', one segment per token, between short silences."""
    parts = [np.zeros(int(0.05 * SR), np.float32)]
    for i in range(n_tokens):
        seconds = rng.uniform(0.07, 0.12)
        if i % 3 == 2:
            parts.append((rng.normal(0, 0.05, int(seconds * SR))).astype(np.float32))
        else:
            parts.append(harmonic(rng.uniform(95, 140), seconds))
    parts.append(np.zeros(int(0.05 * SR), np.float32))
    return np.concatenate(parts)


@pytest.fixture(scope="module")
def style_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bert") / "style"
    write_dummy_bert(path, "tiny", seed=0)
    return path


def write_data(out: Path, style_dir: Path) -> Path:
    """train.npz (4 sentences), heldout.npz (2 sentences) and style/ — what `dataset build` writes."""
    out.mkdir(parents=True, exist_ok=True)
    encoder = StyleEncoder(style_dir, "mean", 64)
    tokens = packaged_labels("tokenlist")
    sos = tokens.index("<sos/eos>")
    phones = [i for i, t in enumerate(tokens) if t.startswith("[") and t.endswith("1]")]
    rng = np.random.default_rng(0)
    for name, n in (("train", 4), ("heldout", 2)):
        texts = [f"Sentence number {w} is here." for w in (["one", "two", "three", "four", "five", "six"][:n])]
        ids = {t: [sos, *rng.choice(phones, 9).tolist(), sos] for t in texts}
        audio = [fake_sentence(rng, 11) for _ in texts]
        data = assemble(texts, audio, ids.__getitem__, lambda xs: encoder.embed(xs).numpy(), SR, TEST_STYLES,
                        meta={"teacher": "synthetic", "teacher_licence": "n/a", "corpus": "test", "style_encoder": "tiny"})
        data.save(out / f"{name}.npz")
    (out / "style").symlink_to(style_dir, target_is_directory=True)
    return out


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory, style_dir: Path) -> Path:
    return write_data(tmp_path_factory.mktemp("data"), style_dir)


def run_config(tmp: Path, data: Path, part: str, steps: int, **overrides) -> RunConfig:
    settings = {"batch_size": 2, **overrides}
    return RunConfig(
        part=part, data=data, ckpt_dir=tmp / "ckpt", out=tmp / "out", size="tiny", device="cpu",
        precision="fp32", max_steps=steps, save_every=1000, log_every=1,
        overrides=tuple(settings.items()), threads=1,
    )


# ---------------------------------------------------------------- features and styles


@pytest.mark.parametrize("f0", [55.0, 100.0, 180.0, 400.0])
def test_yin_finds_the_f0_of_a_harmonic_tone(f0: float):
    track = yin_f0(torch.from_numpy(harmonic(f0, 0.5))[None], FEATURES)[0]
    voiced = track[track > 0]
    assert voiced.numel() >= 0.8 * track.numel()
    assert torch.allclose(voiced, torch.full_like(voiced, f0), rtol=0.01)


def test_yin_calls_noise_and_silence_unvoiced():
    noise = torch.from_numpy(np.random.default_rng(0).normal(0, 0.1, SR).astype(np.float32))
    assert (yin_f0(noise[None], FEATURES) > 0).float().mean() < 0.05
    assert not (yin_f0(torch.zeros(1, SR), FEATURES) > 0).any()


def test_mel_frames_and_filterbank():
    mel = mel_spectrogram(torch.zeros(2, 10 * FEATURES.hop_length + 7), FEATURES)
    assert mel.shape == (2, FEATURES.n_mels, 10)
    fb = mel_filterbank(FEATURES)
    peaks = fb.argmax(dim=1)
    assert (peaks[1:] >= peaks[:-1]).all() and (fb >= 0).all()


def test_interpolate_unvoiced_fills_gaps_linearly_and_holds_the_ends():
    f0 = torch.tensor([[0.0, 100.0, 0.0, 0.0, 130.0, 0.0, 0.0]])
    assert interpolate_unvoiced(f0, torch.tensor([6])).tolist() == [[100.0, 100.0, 110.0, 120.0, 130.0, 130.0, 0.0]]


def test_pitch_shift_by_resampling_moves_f0_and_duration():
    long, short = torch.from_numpy(harmonic(110.0, 1.0)), torch.from_numpy(harmonic(110.0, 0.5))
    up = shift_pitch([long, short], 12.0)
    assert [w.numel() for w in up] == [long.numel() // 2, short.numel() // 2]
    for w in up:
        track = yin_f0(w[None], FEATURES)[0]
        assert torch.median(track[track > 0]).item() == pytest.approx(220.0, rel=0.01)
    (down,) = shift_pitch([long], -3.0)
    track = yin_f0(down[None], FEATURES)[0]
    assert torch.median(track[track > 0]).item() == pytest.approx(110.0 * 2 ** (-3 / 12), rel=0.01)


def test_stretch_batch_changes_each_items_rate_and_keeps_its_ends():
    frames = torch.stack([torch.arange(100.0), torch.cat([torch.arange(50.0), torch.zeros(50)])])[:, None, :]
    out, lengths = stretch_batch(frames, torch.tensor([100, 50]), torch.tensor([1.25, 0.5]))
    assert lengths.tolist() == [80, 100] and out.shape == (2, 1, 100)
    assert out[0, 0, 0] == 0 and out[0, 0, 79] == 99 and out[1, 0, 0] == 0 and out[1, 0, 99] == 49
    assert torch.allclose(out[1, 0, :100], torch.linspace(0, 49, 100), atol=1e-4)


def test_styles_meet_the_happy_vs_sad_targets_and_prompts_are_unique():
    prompts, _, params = style_table()
    assert len(prompts) == len(set(prompts)) and params.shape == (len(STYLES), 3)
    happy, sad = (next(s for s in STYLES if s.name == n) for n in ("happy", "sad"))
    assert happy.semitones - sad.semitones >= 2 and happy.rate / sad.rate >= 1.15
    assert "" in STYLES[0].prompts  # the empty emotion of `emoserve synth` is neutral
    for style in STYLES:
        assert any(p and p.isascii() for p in style.prompts)  # an English prompt
        assert any("\u4e00" <= ch <= "\u9fff" for p in style.prompts for ch in p)  # and a Chinese one


# ---------------------------------------------------------------- corpus and data


def test_corpus_filters_and_selection():
    lexicon = {w: ["AH0"] for w in ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far", "away", "i"]}
    assert corpus.normalize("\u201cThe cat\u2014sat; on a mat .\u201d") == "The cat, sat, on a mat."
    assert corpus.usable("The cat sat on a mat.", lexicon)
    assert not corpus.usable("The cat sat on a zebra.", lexicon)  # unknown word
    assert not corpus.usable("The cat sat on 3 mats.", lexicon)  # digits
    assert not corpus.usable("The cat sat.", lexicon)  # too short
    assert not corpus.usable("THE cat sat on a mat.", lexicon)  # an acronym
    text = "The cat sat on a mat. The dog ran far away! I ran."
    assert corpus.split_sentences(text) == ["The cat sat on a mat.", "The dog ran far away!", "I ran."]

    def phonemize(s: str) -> str:
        return " ".join(f"[{c.upper()}1]" for c in s if c.isalpha())

    sentences = [f"sentence {c}{d}" for c in "abcdefgh" for d in "xyz"]
    train_a, held_a = corpus.select(sentences, phonemize, 10, 5, seed=3)
    train_b, held_b = corpus.select(sentences, phonemize, 10, 5, seed=3)
    assert (train_a, held_a) == (train_b, held_b)
    assert len(train_a) == 10 and len(held_a) == 5 and not set(train_a) & set(held_a)
    with pytest.raises(ValueError):
        corpus.select(sentences, phonemize, 20, 5)


def test_audio_coding_is_exact():
    x = np.array([0, 32767, -32768, 5, -1, 32767, -32768, 0], np.int16)
    assert np.array_equal(decode_audio(encode_audio(x)), x)
    y = (np.random.default_rng(0).normal(0, 3000, 5000)).astype(np.int16)
    assert np.array_equal(decode_audio(encode_audio(y)), y)


def test_data_file_round_trip(data_dir: Path, tmp_path: Path):
    data = VoiceData.load(data_dir / "train.npz")
    assert len(data) == 4 and data.style_dim == 32 and data.prompts[0] == ""
    data.save(tmp_path / "copy.npz")
    again = VoiceData.load(tmp_path / "copy.npz")
    assert all(np.array_equal(a, b) for a, b in zip(data.audio, again.audio))
    assert all(np.array_equal(a, b) for a, b in zip(data.ids, again.ids))
    assert again.texts == data.texts and np.array_equal(again.prompt_emb, data.prompt_emb)
    np.savez(tmp_path / "other.npz", meta=np.array(json.dumps({"format": "x"})))
    with pytest.raises(ValueError, match="not a demo-voice data file"):
        VoiceData.load(tmp_path / "other.npz")


def test_prompts_that_embed_alike_are_rejected():
    emb = np.array([[1.0, 0.0], [1.0, 1e-6], [0.0, 1.0]])
    check_prompts(["a", "b", "c"], [0, 0, 1], emb, ["x", "y"])  # same style: fine
    with pytest.raises(ValueError, match="'a'.*'b'"):
        check_prompts(["a", "b", "c"], [0, 1, 1], emb, ["x", "y"])


def test_batches_render_styles(data_dir: Path):
    dev = DeviceData(VoiceData.load(data_dir / "train.npz"), torch.device("cpu"))
    neutral = dev.acoustic_batch([0], [0])
    sad = dev.acoustic_batch([0], [dev.data.prompts.index("Sad")])
    ratio = sad.mel_lengths.item() / neutral.mel_lengths.item()
    assert ratio == pytest.approx(1 / TEST_STYLES[2].rate, rel=0.03)
    mel, wav = dev.vocoder_batch([0, 1], 3.0, [1.0, 0.5], [0.0, 1.0], 2048)
    assert mel.shape == (2, 80, 8) and wav.shape == (2, 2048) and wav.abs().max() <= 1


# ---------------------------------------------------------------- alignment


def test_monotonic_alignment_follows_the_best_path():
    durations = np.array([2, 1, 3])
    frames = int(durations.sum())
    owner = np.repeat(np.arange(3), durations)
    log_p = np.full((1, frames, 4), -5.0)
    log_p[0, np.arange(frames), owner] = 0.0
    found = monotonic_alignment(log_p, np.array([3]), np.array([frames]))
    assert found[0].tolist() == [2, 1, 3, 0]
    # Even against the evidence every token keeps a frame and the path stays monotonic.
    flat = np.zeros((2, 5, 4))
    found = monotonic_alignment(flat, np.array([4, 2]), np.array([5, 3]))
    assert found.sum(1).tolist() == [5, 3] and (found[0] >= 1).all() and (found[1, :2] >= 1).all()
    with pytest.raises(ValueError):
        monotonic_alignment(flat, np.array([4]), np.array([3]))


def test_forward_sum_prefers_the_true_alignment_and_helpers():
    durations = torch.tensor([[2, 1, 3]])
    hard = hard_alignment(durations, 6)
    assert hard.sum(-1).tolist() == [[1.0] * 6]
    good = torch.log_softmax(hard * 8.0, dim=-1)
    bad = torch.log_softmax(hard.flip(1) * 8.0, dim=-1)
    lengths, frames = torch.tensor([3]), torch.tensor([6])
    assert forward_sum_loss(good, lengths, frames) < forward_sum_loss(bad, lengths, frames)
    values = torch.tensor([[1.0, 3.0, 5.0, 2.0, 2.0, 2.0]])
    assert average_by_duration(values, durations).tolist() == [[2.0, 5.0, 2.0]]
    prior = beta_binomial_prior(torch.tensor([3, 2]), torch.tensor([6, 4]))
    assert torch.allclose(prior[0].exp().sum(-1), torch.ones(6), atol=1e-5)
    assert prior[0, 0].argmax() == 0 and prior[0, -1].argmax() == 2


# ---------------------------------------------------------------- training, resume, export


def test_acoustic_model_overfits_a_tiny_set(data_dir: Path, tmp_path: Path):
    train(run_config(tmp_path, data_dir / "train.npz", "am", 60, lr=3e-3, warmup=10, bin_start=20, bin_ramp=10),
          log=lambda _: None)
    lines = [json.loads(x) for x in (tmp_path / "out" / "log.jsonl").read_text().splitlines()]
    first = np.mean([x["mel"] for x in lines[:5]])
    last = np.mean([x["mel"] for x in lines[-5:]])
    assert last < 0.8 * first
    assert lines[-1]["bin"] > 0  # the bin loss has ramped in


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return {f"{m}.{k}": v for m, state in torch.load(path, weights_only=True)["models"].items() for k, v in state.items()}


@pytest.mark.parametrize("part", ["am", "vocoder"])
def test_resume_continues_exactly(data_dir: Path, tmp_path: Path, part: str):
    extra = {"adv_start": 2, "segment": 2048} if part == "vocoder" else {}
    data = data_dir / "train.npz"
    straight = run_config(tmp_path / "a", data, part, 4, **extra)
    train(straight, log=lambda _: None)
    split = run_config(tmp_path / "b", data, part, 2, **extra)
    train(split, log=lambda _: None)
    summary = train(run_config(tmp_path / "b", data, part, 4, **extra), log=lambda _: None)
    assert summary["step"] == 4 and summary["steps_this_run"] == 2
    a, b = (load_checkpoint(p / "ckpt" / "last.pt") for p in (tmp_path / "a", tmp_path / "b"))
    for name, state in a["models"].items():
        for key, value in state.items():
            torch.testing.assert_close(b["models"][name][key], value, rtol=1e-5, atol=1e-6)
    if part == "vocoder":
        assert "disc" in summary["last"]  # the discriminators trained in the resumed run


def test_continue_from_compact_weights(data_dir: Path, tmp_path: Path):
    data = data_dir / "train.npz"
    train(run_config(tmp_path / "a", data, "am", 2), log=lambda _: None)
    compact = tmp_path / "a" / "out" / "weights.pt"
    assert all(v.dtype == torch.float16 for v in _weights(compact).values() if v.is_floating_point())
    run = run_config(tmp_path / "b", data, "am", 3)
    summary = train(replace(run, init=compact), log=lambda _: None)
    assert summary["step"] == 3 and summary["steps_this_run"] == 1


def test_unknown_training_setting_is_rejected(data_dir: Path, tmp_path: Path):
    with pytest.raises(ValueError, match="unknown am training settings"):
        train(run_config(tmp_path, data_dir / "train.npz", "am", 1, no_such_thing=1), log=lambda _: None)


@pytest.fixture(scope="module")
def checkpoints(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Acoustic and vocoder weights after two training steps each."""
    tmp = tmp_path_factory.mktemp("train")
    for part in ("am", "vocoder"):
        extra = {"segment": 2048} if part == "vocoder" else {}
        train(run_config(tmp / part, data_dir / "train.npz", part, 2, **extra), log=lambda _: None)
    return tmp / "am" / "out" / "weights.pt", tmp / "vocoder" / "out" / "weights.pt"


@pytest.fixture(scope="module")
def exported(checkpoints: tuple[Path, Path], data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export(*checkpoints, data_dir, tmp_path_factory.mktemp("export") / "model", style_package=None)


FAKE_PACKAGE = StylePackage(PACKAGE, DISTRIBUTION, FOLDER, "float16")


def test_export_writes_a_model_directory_emoserve_loads(exported: Path):
    model = ModelDir(exported)
    m = model.manifest
    assert m.voices == ("joe",) and m.style.pooling == "mean" and m.acoustic.style_dim == 32
    assert m.acoustic.pitch_stats != (225.089, 53.78)  # measured on the data, not EmotiVoice's
    assert set(m.extra["styles"]) == {"neutral", "happy", "sad"}
    assert (exported / "MODEL_CARD.md").read_text().count("Not evaluated yet") == 1
    am = model.load_acoustic()
    assert next(am.parameters()).dtype == torch.float32
    synth = Synthesizer(exported)
    wav, ids = synth("Hello there.", "Happy")
    assert wav.ndim == 1 and wav.size > 0 and np.isfinite(wav).all() and ids[0] == ids[-1]


def test_export_references_the_style_package_the_data_was_made_from(
    checkpoints: tuple[Path, Path], style_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    site = tmp_path / "site"
    folder = write_style_package(site, style_dir)
    data = write_data(tmp_path / "data", export_style_encoder(folder, tmp_path / "fp16-style"))
    with pytest.raises(StylePackageError, match=f"pip install {DISTRIBUTION}"):
        export(*checkpoints, data, tmp_path / "uninstalled", FAKE_PACKAGE)
    monkeypatch.syspath_prepend(str(site))
    out = export(*checkpoints, data, tmp_path / "model", FAKE_PACKAGE)
    style = ModelDir(out).manifest.style
    assert (style.package, style.requirement, style.dtype) == (PACKAGE, f"{DISTRIBUTION}=={VERSION}", "float16")
    assert sorted(p.name for p in out.iterdir()) == [
        "MODEL_CARD.md", "acoustic.safetensors", "model.json", "vocoder.safetensors"]
    assert f"references the Python package `{PACKAGE}`" in (out / "MODEL_CARD.md").read_text()
    wav, _ = Synthesizer(out)("Hello there.", "Happy")
    assert wav.size > 0 and np.isfinite(wav).all()


def test_export_refuses_a_style_encoder_that_does_not_reproduce_the_data(
    checkpoints: tuple[Path, Path], data_dir: Path, style_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    write_style_package(tmp_path / "site", style_dir)  # the data were embedded with the unrounded fp32 weights
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    with pytest.raises(ValueError, match="does not reproduce the training embeddings"):
        export(*checkpoints, data_dir, tmp_path / "model", FAKE_PACKAGE)
    assert not (tmp_path / "model").exists()


def test_export_replaces_a_model_directory_only_when_asked(
    checkpoints: tuple[Path, Path], data_dir: Path, tmp_path: Path
):
    out = export(*checkpoints, data_dir, tmp_path / "model", style_package=None)
    with pytest.raises(FileExistsError, match="not empty"):
        export(*checkpoints, data_dir, out, style_package=None)
    (out / "stale.txt").write_text("from the previous export")
    assert export(*checkpoints, data_dir, out, style_package=None, replace=True) == out
    assert not (out / "stale.txt").exists() and ModelDir(out).manifest.voices == ("joe",)
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # nothing staged is left behind
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("not a model")
    with pytest.raises(FileExistsError, match="not a model directory"):
        export(*checkpoints, data_dir, notes, style_package=None, replace=True)
    assert (notes / "todo.txt").is_file()


def test_evaluation_runs_on_an_exported_model(exported: Path, data_dir: Path):
    report = evaluate(Synthesizer(exported), VoiceData.load(data_dir / "heldout.npz"), 1, log=lambda _: None)
    s = report["summary"]
    assert s["sentences"] == 2 and set(report["styles"]) == {"neutral / (empty)", "happy / Happy", "sad / Sad"}
    assert set(s["checks"]) == {"mcd <= 7.0 dB", "happy vs sad >= 2.0 semitones", "happy vs sad rate >= 15%"}
    json.dumps(report)


# ---------------------------------------------------------------- metrics with known answers


def test_mel_cepstrum_of_a_known_spectrum_and_mcd():
    bins = FEATURES.n_fft // 2
    omega = np.pi * np.arange(bins + 1) / bins
    warped = omega + 2 * np.arctan(WARP_ALPHA * np.sin(omega) / (1 - WARP_ALPHA * np.cos(omega)))
    b = 0.3
    mag = np.exp(b * np.cos(3 * warped))[:, None].repeat(4, axis=1)  # log power = 2b cos(3 ω̃)
    c = mel_cepstrum(mag)
    assert c[:, 2] == pytest.approx(b, rel=0.01)
    assert np.abs(np.delete(c, 2, axis=1)).max() < 0.01 * b
    flat = mel_cepstrum(np.ones_like(mag))
    assert mcd_frames(flat, c) == pytest.approx(10 / math.log(10) * math.sqrt(2) * b, rel=0.02)


def test_dtw_path_aligns_slower_and_faster_copies():
    a = np.arange(6.0)
    slow = np.repeat(a, 2)[:-1]  # the longest B a path can cover: 2 A - 1 frames
    path = dtw_path(np.abs(a[:, None] - slow[None, :]))
    assert np.all(slow[path] == a) and path[0] == 0 and path[-1] == slow.size - 1
    fast = a[::2]
    path = dtw_path(np.abs(a[:, None] - fast[None, :]))
    assert path[0] == 0 and path[-1] == fast.size - 1 and np.all(np.diff(path) >= 0)
    assert np.array_equal(dtw_path(np.abs(a[:, None] - a[None, :])), np.arange(6))
    with pytest.raises(ValueError):
        dtw_path(np.zeros((2, 10)))


def test_compare_identical_and_detuned_signals():
    from emoserve.tools.demo_voice.evaluate import analyse

    ref = analyse(harmonic(100.0, 1.0))
    same = compare(ref, analyse(harmonic(100.0, 1.0)))
    assert same["mcd_db"] == pytest.approx(0.0, abs=1e-6) and same["f0_rmse_hz"] == pytest.approx(0.0, abs=0.5)
    detuned = compare(ref, analyse(harmonic(110.0, 1.0)))
    assert detuned["f0_rmse_hz"] == pytest.approx(10.0, abs=1.0) and detuned["mcd_db"] > 0


def test_speaking_rate_helpers():
    energy = np.array([1e-6, 1e-6, 1.0, 0.5, 1e-6, 0.8, 1e-6])
    assert speech_seconds(energy, 0.016) == pytest.approx(4 * 0.016)
    tokens = ("<sos/eos>", "[AH0]", "engsp1", "[B]", "sp1", "uo3")
    assert spoken_phonemes(np.array([0, 1, 2, 3, 4, 5, 0]), tokens) == 3
