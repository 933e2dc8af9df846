"""The ``emoserve`` command line: model tools, servers, and the client."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

Handler = Callable[[argparse.Namespace], int]


def _init_dummy(args: argparse.Namespace) -> int:
    from emoserve.model.dummy import init_dummy

    path = init_dummy(args.out, args.size, args.frames_per_phoneme, args.seed)
    print(f"wrote dummy model ({args.size}) to {path}")
    return 0


def _import_emotivoice(args: argparse.Namespace) -> int:
    from emoserve.model.checkpoint import CheckpointError
    from emoserve.model.importer import import_emotivoice

    try:
        path = import_emotivoice(
            generator=args.generator,
            style_encoder=args.style_encoder,
            bert_dir=args.bert_dir,
            tokenlist=args.tokenlist,
            speakers=args.speakers,
            out=args.out,
            lexicon=args.lexicon,
            config=args.config,
            name=args.name,
            default_voice=args.default_voice,
        )
    except (CheckpointError, FileExistsError, ValueError) as exc:
        print(f"import-emotivoice: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


def _add_model_tools(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("init-dummy", help="write a model directory with deterministic random weights")
    p.add_argument("--out", required=True, help="model directory to create")
    p.add_argument("--size", choices=["full", "tiny"], default="tiny", help="EmotiVoice's full shapes or a tiny model")
    p.add_argument("--frames-per-phoneme", type=int, default=8, help="pinned duration of every phoneme")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=_init_dummy)

    p = sub.add_parser("import-emotivoice", help="convert EmotiVoice checkpoints into a model directory")
    p.add_argument("--generator", required=True, help="joint checkpoint g_XXXXXXXX ({'generator': ...})")
    p.add_argument("--style-encoder", required=True, help="style encoder checkpoint_XXXXXX ({'model': ...})")
    p.add_argument("--bert-dir", required=True, help="Hugging Face folder of the style BERT (simbert-base-chinese)")
    p.add_argument("--tokenlist", required=True, help="EmotiVoice data/youdao/text/tokenlist")
    p.add_argument("--speakers", required=True, help="EmotiVoice data/youdao/text/speaker2")
    p.add_argument("--lexicon", help="English lexicon (lexicon/librispeech-lexicon.txt); CMU dictionary if omitted")
    p.add_argument("--config", help="EmotiVoice config/joint/config.yaml (heads, strides); its defaults if omitted")
    p.add_argument("--name", default="emotivoice", help="model name recorded in model.json")
    p.add_argument("--default-voice", help="voice used when a request names none (first speaker by default)")
    p.add_argument("--out", required=True, help="model directory to create")
    p.set_defaults(handler=_import_emotivoice)


def build_parser() -> argparse.ArgumentParser:
    """The full ``emoserve`` argument parser."""
    parser = argparse.ArgumentParser(prog="emoserve", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_model_tools(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``emoserve`` command."""
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
