"""Record EmotiVoice reference outputs for emoserve's checkpoint-parity tests.

The tool imports EmotiVoice's own ``JETSGenerator`` and ``StyleEncoder`` from an
EmotiVoice checkout given on the command line (no EmotiVoice code lives in this
repository), builds *small, randomly initialised* models in EmotiVoice's
checkpoint formats, runs EmotiVoice's inference path exactly as its
``openaiapi.py::emotivoice_tts`` does, and writes everything a test needs to
check that emoserve loads EmotiVoice checkpoints and reproduces their audio:

* ``bert/``                  tiny random Hugging Face BERT (+ tokenizer, vocab.txt)
* ``style_encoder.ckpt``     ``{'model': {'module.<name>': tensor}}``; its BERT
                             weights deliberately differ from ``bert/``
* ``g_parametrizations.ckpt`` ``{'generator': state_dict}`` with torch's
                             ``parametrizations.weight.original0/1`` keys
* ``g_weight_norm.ckpt``     same values with legacy ``weight_g``/``weight_v`` keys
* ``config.yaml``            the EmotiVoice (yacs) model config used
* ``reference.safetensors``  all recorded arrays, keys ``case<i>.<field>``
* ``cases.json``             per-case metadata (strings, ids, shapes)

Usage::

    python tools/record_emotivoice_reference.py \
        --emotivoice-repo /tmp/ev --out tests/data/emotivoice_ref [--seed 0]

Running it twice with the same seed produces identical files.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import string
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch.nn.utils import parametrize
from transformers import AutoTokenizer, BertConfig, BertModel, BertTokenizer
from yacs.config import CfgNode, load_cfg

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
ENGLISH_WORDS = (
    "a an and the very happy sad angry loud soft slow slowly fast quick "
    "hello world voice speak speaking surprised calm gentle excited tone "
    "high low pitch volume multi prompt controlled engine em"
).split()
ENGLISH_SUFFIXES = ["##oti", "##ly", "##ing", "##ed", "##er", "##s"]
COMMON_CJK = (
    "的一是不了人我在有他这中大来上个国到说们为子和你地出道也时年得就那要下以生会自着去之过"
    "家学对可她里后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本"
    "见经头面公同三已老从动两长知民样现分将外但身些与高意进把法此实回二理美点月明其种声全工己"
    "话儿者向情部正名定女问力机给等几很业最间新什打便位因重被走电四第门相次东政海口使教西再平"
    "真听世气信北少关并内加化由却代军产入先山五太水万市眼体别处总才场师书比住员九笑性通目华报"
    "立马命张活难神数件安表原车白应路期叫死常提感金何更反合放做系计或司利受光王果亲界及今京务"
    "制解各任至清物台象记边共风战干接它许八特觉望直服毛林题建南度统色字请交爱让认算论百吃义科"
    "怎元社术结六功指思非流每青管夫连远资队跟带花快条院变联言权往展该领传近留红治决周保达办运"
    "武半候七必城父强步完革深区即求品士转量空甚众技轻程告江语英基派满式李息写呢识极令黄德收脸"
    "钱党倒未持音娘哭唧怒乐悲伤惊讶厌恶恐惧讲故温柔兴奋低沉"
)
CJK_PUNCTUATION = "，。！？：；、“”‘’（）《》…—"
# Deliberately absent from the vocabulary so that cases exercise [UNK].
NOT_IN_VOCAB = "龘😮"

# Sizes of the small model (the released EmotiVoice uses 384/8/4 and BERT 768).
MODEL_OVERRIDES: dict[str, Any] = {
    "encoder_n_layers": 2,
    "encoder_n_heads": 2,
    "encoder_n_hidden": 32,
    "decoder_n_layers": 2,
    "decoder_n_heads": 2,
    "decoder_n_hidden": 32,
    "variance_n_hidden": 32,
    "variance_n_layers": 3,
    "duration_n_layers": 2,
    "variance_embed_kernel_size": 9,
    "speaker_embed_dim": 32,
    "bert_embedding": 32,
    "resblock": "1",
    "upsample_rates": [8, 8, 2, 2],
    "upsample_kernel_sizes": [16, 16, 4, 4],
    "upsample_initial_channel": 32,
    "resblock_kernel_sizes": [3, 7, 11],
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
    "initial_channel": 80,
}
BERT_SIZES: dict[str, int] = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 512,
}
STYLE_DIM = 16
BERT_NOISE_STD = 0.05
# Duration calibration: exp(log_d) - 1 ~= DURATION_TARGET_FRAMES for every token.
DURATION_TARGET_FRAMES = 6.0
DURATION_WEIGHT_SCALE = 0.1
DURATION_RANGE = (2, 16)
MIN_ROUNDING_MARGIN = 1e-3
# EmotiVoice's init leaves biases at 0, LayerNorms at identity and (on new torch,
# where weight_norm is a parametrization) HiFi-GAN's init_weights a no-op, which
# makes the vocoder output a near-constant DC level.  Randomise all of them so a
# checkpoint importer that drops any tensor fails the comparison.
ACOUSTIC_VECTOR_NOISE_STD = 0.1
VOCODER_UPSAMPLE_GAIN = 1.4

LONG_PHONEMES = (
    "<sos/eos> t a1 sp1 sh uang1 sp0 m u4 sp1 j in3 sp0 b i4 sp3 k e2 sp0 i3 sp1 k an4 sp0 "
    "j ian4 sp1 t ong2 sp0 q ian2 sp1 z ai4 sp0 sh ang4 sp0 m ian4 sp1 l iou2 sp0 x ia4 sp0 "
    "d e5 sp1 h ei1 sp0 s e4 sp1 van2 sp0 q van1 sp3 h e2 sp0 sh an4 sp0 d e5 sp1 m ian4 sp0 "
    "k ong3 sp2 u1 sp0 q ing1 sp1 f a1 sp0 h ei1 sp3 z ii1 sp0 ia2 sp0 l ie2 sp0 z uei3 sp3 "
    "t ing3 sp1 x ia4 sp0 r en2 sp0 d e5 <sos/eos>"
)
ENGLISH_SAMPLE_PHONEMES = (
    "<sos/eos> [IH0] [M] [AA1] [T] engsp4 [V] [OY1] [S] engsp4 [AH0] engsp1 [M] [AH1] [L] [T] "
    "[IY0] engsp4 [V] [OY1] [S] engsp1 [AE1] [N] [D] engsp1 [P] [R] [AA1] [M] [P] [T] engsp4 "
    "[K] [AH0] [N] [T] [R] [OW1] [L] [D] engsp1 [T] [IY1] engsp4 [T] [IY1] engsp4 [EH1] [S] "
    "engsp1 [EH1] [N] [JH] [AH0] [N] . <sos/eos>"
)


@dataclass(frozen=True)
class Case:
    """One reference utterance, given as EmotiVoice front-end output."""

    name: str
    speaker: str
    prompt: str
    phonemes: str
    content: str


CASES: list[Case] = [
    Case("zh_basic", "8051", "开心",
         "<sos/eos> n i3 sp0 h ao3 sp1 sh iii4 sp0 j ie4 sp3 <sos/eos>", "你好世界。"),
    Case("en_basic", "11614", "Happy",
         "<sos/eos> [HH] [AH0] [L] [OW1] engsp1 [W] [ER1] [L] [D] <sos/eos>", "Hello world"),
    Case("mixed", "9017", "angry and loud",
         "<sos/eos> uo3 sp1 ai4 cn_eng_sp [P] [AY1] [TH] [AA0] [N] eng_cn_sp b ian1 sp0 ch eng2 "
         "<sos/eos>", "我爱Python编程"),
    Case("short_empty_prompt", "98", "", "<sos/eos> a1 <sos/eos>", "啊"),
    Case("long", "6671", "悲伤", LONG_PHONEMES,
         "他双目紧闭，可以看见铜钱在上面留下的黑色圆圈；和善的面孔乌青发黑，龇牙咧嘴，挺吓人的。"),
    Case("double_space", "8051", "哭唧唧",
         "<sos/eos>  uo3 sp1 l ai2 sp0 d ao4 sp1 b ei3 sp0 j ing1 sp3 q ing1 sp0 h ua2 sp0 d a4 "
         "sp0 x ve2 <sos/eos>", "我来到北京，清华大学"),
    Case("en_wordpiece", "12787", "Very ANGRY!!", ENGLISH_SAMPLE_PHONEMES,
         "Emoti-Voice - a Multi-Voice and Prompt-Controlled T-T-S Engine"),
    Case("unknown_chars", "1006", "惊讶 surprised 😮",
         "<sos/eos> d i4 sp0 i1 sp0 zh ang1 <sos/eos>", "第一章龘"),
]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--emotivoice-repo", type=Path, required=True,
                        help="EmotiVoice checkout to import models from (read only)")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def import_emotivoice(repo: Path) -> tuple[type, type]:
    """Import (JETSGenerator, StyleEncoder) from the EmotiVoice checkout."""
    sys.path.insert(0, str(repo.resolve()))
    jets = importlib.import_module("models.prompt_tts_modified.jets")
    simbert = importlib.import_module("models.prompt_tts_modified.simbert")
    return jets.JETSGenerator, simbert.StyleEncoder


def read_labels(path: Path) -> list[str]:
    """Read a label file the way EmotiVoice does (one label per line, stripped)."""
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f.readlines()]


def unique(items: list[str]) -> list[str]:
    """Drop repeated items, keeping first occurrences in order."""
    return list(dict.fromkeys(items))


def build_bert_vocab(cases: list[Case]) -> list[str]:
    """Special tokens, ASCII, a few English words/pieces and common CJK characters."""
    ascii_chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    pieces = ["##" + c for c in string.ascii_lowercase + string.digits] + ENGLISH_SUFFIXES
    case_chars = [c for case in cases for c in case.prompt + case.content
                  if ord(c) > 0x2E80 and c not in NOT_IN_VOCAB]
    cjk = unique(list(COMMON_CJK) + list(CJK_PUNCTUATION) + case_chars)
    return unique(SPECIAL_TOKENS + ascii_chars + pieces + ENGLISH_WORDS + cjk)


def write_tiny_bert(bert_dir: Path, vocab: list[str], seed: int) -> None:
    """Save a random BertModel (safetensors) and its WordPiece tokenizer."""
    bert_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = BertModel(BertConfig(vocab_size=len(vocab), **BERT_SIZES))
    model.save_pretrained(bert_dir)
    tokenizer = BertTokenizer(vocab={token: i for i, token in enumerate(vocab)})
    tokenizer.save_pretrained(bert_dir)
    (bert_dir / "vocab.txt").write_text("".join(t + "\n" for t in vocab), encoding="utf-8")


def style_encoder_config(bert_dir: Path, text_dir: Path) -> SimpleNamespace:
    """The attributes of EmotiVoice's ``Config`` that ``StyleEncoder`` reads."""
    return SimpleNamespace(
        bert_path=str(bert_dir),
        bert_hidden_size=BERT_SIZES["hidden_size"],
        style_dim=STYLE_DIM,
        pitch_n_labels=len(read_labels(text_dir / "pitch")),
        speed_n_labels=len(read_labels(text_dir / "speed")),
        energy_n_labels=len(read_labels(text_dir / "energy")),
        emotion_n_labels=len(read_labels(text_dir / "emotion")),
    )


def generator_config(repo: Path, n_vocab: int, n_speaker: int) -> CfgNode:
    """EmotiVoice's config/joint/config.yaml with the small model sizes."""
    with open(repo / "config" / "joint" / "config.yaml", encoding="utf-8") as f:
        conf = load_cfg(f)
    for key, value in MODEL_OVERRIDES.items():
        setattr(conf.model, key, value)
    conf.n_vocab = n_vocab
    conf.n_speaker = n_speaker
    return conf


def write_style_encoder_checkpoint(style_encoder_cls: type, cfg: SimpleNamespace,
                                   path: Path, seed: int) -> None:
    """Random heads; BERT weights perturbed so they override the HF directory's."""
    torch.manual_seed(seed)
    model = style_encoder_cls(cfg)
    noise = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for param in model.bert.parameters():
            param.add_(torch.randn(param.shape, generator=noise) * BERT_NOISE_STD)
    torch.save({"model": {"module." + k: v for k, v in model.state_dict().items()}}, path)


def randomise_acoustic_vectors(am: torch.nn.Module, rng: torch.Generator) -> None:
    """Add noise to every bias, LayerNorm affine and positional-encoding alpha."""
    for param in am.parameters():
        if param.dim() <= 1:
            param.add_(torch.randn(param.shape, generator=rng) * ACOUSTIC_VECTOR_NOISE_STD)


def randomise_vocoder_gains(vocoder: torch.nn.Module, rng: torch.Generator) -> None:
    """Set each weight-norm magnitude (original0 / weight_g) to a random gain that
    keeps the signal level roughly constant through the HiFi-GAN stack."""
    for module in vocoder.modules():
        if not parametrize.is_parametrized(module, "weight"):
            continue
        gain = 1.0
        if isinstance(module, torch.nn.ConvTranspose1d):
            gain = VOCODER_UPSAMPLE_GAIN * math.sqrt(module.stride[0] / 2)
        magnitude = module.parametrizations.weight.original0
        magnitude.copy_(gain * (0.5 + torch.rand(magnitude.shape, generator=rng)))


def build_generator(generator_cls: type, conf: CfgNode, seed: int) -> torch.nn.Module:
    """Random JETSGenerator with realistic durations and an audible vocoder."""
    torch.manual_seed(seed)
    generator = generator_cls(conf)
    rng = torch.Generator().manual_seed(seed + 1)
    linear = generator.am.duration_predictor.linear
    with torch.no_grad():
        randomise_acoustic_vectors(generator.am, rng)
        randomise_vocoder_gains(generator.generator, rng)
        linear.weight.mul_(DURATION_WEIGHT_SCALE)
        linear.bias.fill_(math.log(DURATION_TARGET_FRAMES + 1.0))
    return generator.eval()


def to_weight_norm_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename parametrizations.weight.original0/1 to legacy weight_g/weight_v."""
    renamed = {}
    for key, value in state_dict.items():
        key = key.replace("parametrizations.weight.original0", "weight_g")
        key = key.replace("parametrizations.weight.original1", "weight_v")
        renamed[key] = value
    return renamed


def load_style_encoder(style_encoder_cls: type, cfg: SimpleNamespace,
                       path: Path) -> torch.nn.Module:
    """As openaiapi.get_models: strip 'module.' and load non-strictly."""
    model = style_encoder_cls(cfg)
    checkpoint = torch.load(path, map_location="cpu")
    missing, unexpected = model.load_state_dict(
        {k[7:]: v for k, v in checkpoint["model"].items()}, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    return model


def load_generator(generator_cls: type, conf: CfgNode, path: Path) -> torch.nn.Module:
    """As openaiapi.get_models: strict load of checkpoint['generator'], eval mode."""
    generator = generator_cls(conf)
    generator.load_state_dict(torch.load(path, map_location="cpu")["generator"])
    return generator.eval()


def style_embedding(text: str, tokenizer: Any,
                    style_encoder: torch.nn.Module) -> tuple[np.ndarray, np.ndarray]:
    """As openaiapi.get_style_embedding; also returns the BERT input ids."""
    encoded = tokenizer([text], return_tensors="pt")
    with torch.no_grad():
        output = style_encoder(input_ids=encoded["input_ids"],
                               token_type_ids=encoded["token_type_ids"],
                               attention_mask=encoded["attention_mask"])
    return output["pooled_output"].cpu().squeeze().numpy(), encoded["input_ids"][0].numpy()


def run_case(case: Case, tokenizer: Any, style_encoder: torch.nn.Module,
             generator: torch.nn.Module, token2id: dict[str, int],
             speaker2id: dict[str, int]) -> dict[str, torch.Tensor]:
    """EmotiVoice's openaiapi.emotivoice_tts inference, recording intermediates."""
    prompt_embedding, prompt_ids = style_embedding(case.prompt, tokenizer, style_encoder)
    content_embedding, content_ids = style_embedding(case.content, tokenizer, style_encoder)
    text_int = [token2id[ph] for ph in case.phonemes.split()]
    raw_log_durations: list[torch.Tensor] = []
    hook = generator.am.duration_predictor.linear.register_forward_hook(
        lambda _module, _inputs, output: raw_log_durations.append(output.detach().clone()))
    with torch.no_grad():
        out = generator(
            inputs_ling=torch.from_numpy(np.array(text_int)).long().unsqueeze(0),
            inputs_style_embedding=torch.from_numpy(prompt_embedding).unsqueeze(0),
            input_lengths=torch.from_numpy(np.array([len(text_int)])),
            inputs_content_embedding=torch.from_numpy(content_embedding).unsqueeze(0),
            inputs_speaker=torch.from_numpy(np.array([speaker2id[case.speaker]])),
            alpha=1.0,
        )
    hook.remove()
    return {
        "token_ids": torch.tensor(text_int, dtype=torch.int64),
        "prompt_input_ids": torch.from_numpy(prompt_ids),
        "content_input_ids": torch.from_numpy(content_ids),
        "prompt_embedding": torch.from_numpy(prompt_embedding),
        "content_embedding": torch.from_numpy(content_embedding),
        "log_durations_raw": raw_log_durations[0].reshape(-1),
        "durations": out["log_duration_predictions"],
        "pitch_predictions": out["pitch_predictions"],
        "energy_predictions": out["energy_predictions"],
        "mel": out["dec_outputs"],
        "wav": out["wav_predictions"],
    }


def check_durations(name: str, record: dict[str, torch.Tensor]) -> float:
    """Durations in a realistic range, none close to a rounding boundary."""
    durations = record["durations"]
    low, high = DURATION_RANGE
    assert int(durations.min()) >= low and int(durations.max()) <= high, (name, durations)
    linear = record["log_durations_raw"].double().exp() - 1.0
    margin = float((linear - linear.floor() - 0.5).abs().min())
    assert margin > MIN_ROUNDING_MARGIN, (name, margin)
    return margin

def write_generator_checkpoints(generator_cls: type, conf: CfgNode, out: Path,
                                seed: int) -> Path:
    """Write g_parametrizations.ckpt and g_weight_norm.ckpt; return the former."""
    state_dict = build_generator(generator_cls, conf, seed).state_dict()
    param_path = out / "g_parametrizations.ckpt"
    torch.save({"generator": state_dict}, param_path)
    legacy_state_dict = to_weight_norm_keys(state_dict)
    assert len(legacy_state_dict) == len(state_dict)
    assert not any("parametrizations" in k for k in legacy_state_dict)
    torch.save({"generator": legacy_state_dict}, out / "g_weight_norm.ckpt")
    n_weight_norm = sum(k.endswith("original0") for k in state_dict)
    print(f"generator checkpoint: {len(state_dict)} tensors "
          f"({n_weight_norm} weight-normalised convolutions)")
    return param_path


def record_cases(tokenizer: Any, style_encoder: torch.nn.Module, generator: torch.nn.Module,
                 token2id: dict[str, int], speaker2id: dict[str, int],
                 ) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """Run every case; return the arrays (keys case<i>.<field>) and per-case metadata."""
    arrays: dict[str, torch.Tensor] = {}
    metadata: list[dict[str, Any]] = []
    for i, case in enumerate(CASES):
        record = run_case(case, tokenizer, style_encoder, generator, token2id, speaker2id)
        margin = check_durations(case.name, record)
        arrays.update({f"case{i}.{k}": v.contiguous() for k, v in record.items()})
        metadata.append({
            **asdict(case),
            "key_prefix": f"case{i}",
            "speaker_id": speaker2id[case.speaker],
            "token_ids": record["token_ids"].tolist(),
            "n_frames": int(record["durations"].sum()),
            "min_duration_rounding_margin": margin,
            "shapes": {k: list(v.shape) for k, v in record.items()},
            "dtypes": {k: str(v.dtype).removeprefix("torch.") for k, v in record.items()},
        })
        print(f"case{i} {case.name}: {len(record['token_ids'])} tokens, "
              f"{metadata[-1]['n_frames']} frames, wav {tuple(record['wav'].shape)}")
    return arrays, metadata


def verify(generator_cls: type, style_encoder_cls: type, conf: CfgNode,
           se_cfg: SimpleNamespace, out: Path, arrays: dict[str, torch.Tensor],
           token2id: dict[str, int], speaker2id: dict[str, int]) -> None:
    """Self-consistency: both generator checkpoints reproduce the recording bit-exactly,
    and the style-encoder checkpoint's BERT weights really override bert/."""
    tokenizer = AutoTokenizer.from_pretrained(str(out / "bert"))
    style_encoder = load_style_encoder(style_encoder_cls, se_cfg, out / "style_encoder.ckpt")
    for ckpt in ("g_parametrizations.ckpt", "g_weight_norm.ckpt"):
        generator = load_generator(generator_cls, conf, out / ckpt)
        for i, case in enumerate(CASES):
            record = run_case(case, tokenizer, style_encoder, generator, token2id, speaker2id)
            for key, value in record.items():
                assert torch.equal(value, arrays[f"case{i}.{key}"]), (ckpt, i, key)
        print(f"verified: {ckpt} reproduces all {len(CASES)} cases bit-exactly")
    hf_only = style_encoder_cls(se_cfg)
    embedding, _ = style_embedding(CASES[0].prompt, tokenizer, hf_only)
    diff = float(np.abs(embedding - arrays["case0.prompt_embedding"].numpy()).max())
    assert diff > 1e-2, diff
    print(f"verified: checkpoint BERT weights override bert/ (max |diff| {diff:.3f})")


def main() -> None:
    args = parse_args()
    repo: Path = args.emotivoice_repo
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    generator_cls, style_encoder_cls = import_emotivoice(repo)
    text_dir = repo / "data" / "youdao" / "text"
    tokens = read_labels(text_dir / "tokenlist")
    speakers = read_labels(text_dir / "speaker2")
    token2id = {t: i for i, t in enumerate(tokens)}
    speaker2id = {s: i for i, s in enumerate(speakers)}

    bert_dir = out / "bert"
    write_tiny_bert(bert_dir, build_bert_vocab(CASES), args.seed)
    se_cfg = style_encoder_config(bert_dir, text_dir)
    se_path = out / "style_encoder.ckpt"
    write_style_encoder_checkpoint(style_encoder_cls, se_cfg, se_path, args.seed + 1)

    conf = generator_config(repo, len(tokens), len(speakers))
    (out / "config.yaml").write_text(conf.dump(), encoding="utf-8")
    param_path = write_generator_checkpoints(generator_cls, conf, out, args.seed + 3)

    # Record with models loaded from the written files, as EmotiVoice would.
    tokenizer = AutoTokenizer.from_pretrained(str(bert_dir))
    style_encoder = load_style_encoder(style_encoder_cls, se_cfg, se_path)
    assert not style_encoder.bert.training, "from_pretrained leaves BERT in eval mode"
    generator = load_generator(generator_cls, conf, param_path)
    arrays, metadata = record_cases(tokenizer, style_encoder, generator, token2id, speaker2id)
    save_file(arrays, str(out / "reference.safetensors"))
    (out / "cases.json").write_text(json.dumps({
        "seed": args.seed,
        "n_vocab": len(tokens),
        "n_speaker": len(speakers),
        "style_encoder_config": {k: v for k, v in vars(se_cfg).items() if k != "bert_path"},
        "cases": metadata,
    }, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")

    verify(generator_cls, style_encoder_cls, conf, se_cfg, out, arrays, token2id, speaker2id)


if __name__ == "__main__":
    main()
