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


def _given(**values: str | None) -> dict[str, str]:
    """The options that were given on the command line."""
    return {key: value for key, value in values.items() if value}


def _client_security(args: argparse.Namespace, command: str) -> dict | None:
    """``tls`` and ``token`` arguments of :class:`emoserve.client.Client`; None (after printing why) on error."""
    from emoserve.runtime.config import ClientTlsConfig, ConfigError
    from emoserve.runtime.security import client_token

    try:
        tls = ClientTlsConfig(**_given(ca_file=args.tls_ca, cert_file=args.tls_cert, key_file=args.tls_key,
                                       server_name=args.tls_server_name))
        return {"tls": tls, "token": client_token(args.token_file or "")}
    except ConfigError as exc:
        print(f"emoserve {command}: error: {exc}", file=sys.stderr)
        return None


def _addresses(value: str) -> list[str]:
    return [a.strip() for a in value.split(",") if a.strip()]


def _serve(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from emoserve.runtime.config import ConfigError, load_config
    from emoserve.serve import StageAddresses, serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    overrides: dict = {"server": {"port": args.port, **({"host": args.host} if args.host else {})}}
    for key in ("device", "precision"):
        if getattr(args, key, None):
            overrides[key] = getattr(args, key)
    if args.metrics_port is not None:
        overrides["metrics"] = {"port": args.metrics_port}
    tls = _given(cert_file=args.tls_cert, key_file=args.tls_key, client_ca_file=args.tls_client_ca)
    if tls:
        overrides["server"]["tls"] = tls
    stage_tls = _given(ca_file=args.stage_ca, cert_file=args.stage_cert, key_file=args.stage_key,
                       server_name=args.stage_server_name)
    if stage_tls:
        overrides["stage_tls"] = stage_tls
    if args.token_file:
        overrides["auth"] = {"token_file": args.token_file}
    try:
        config = load_config(args.config, **overrides)
    except ConfigError as exc:
        print(f"emoserve serve: error: {exc}", file=sys.stderr)
        return 2
    stages = None
    if args.kind == "gateway":
        missing = [s for s in ("encoder", "acoustic", "vocoder") if not getattr(args, s)]
        if missing:
            print(f"emoserve serve gateway: error: missing --{' --'.join(missing)}", file=sys.stderr)
            return 2
        stages = StageAddresses(_addresses(args.encoder), _addresses(args.acoustic), _addresses(args.vocoder))
        from emoserve.gateway.discovery import parse_target

        for stage in ("encoder", "acoustic", "vocoder"):
            try:
                parse_target(getattr(stages, stage))
            except ValueError as exc:
                print(f"emoserve serve gateway: error: --{stage}: {exc}", file=sys.stderr)
                return 2
    elif not args.model:
        print(f"emoserve serve {args.kind}: error: --model MODEL_DIR is required", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(args.kind, config, args.model or "", stages))
    except ConfigError as exc:  # e.g. an unsupported OTEL_TRACES_EXPORTER
        print(f"emoserve serve {args.kind}: error: {exc}", file=sys.stderr)
        return 2
    return 0


def _up(args: argparse.Namespace) -> int:
    from emoserve.launcher import up

    return up(args.model, args.device, args.precision, args.host, args.port, args.config, args.colocate)


def _synth(args: argparse.Namespace) -> int:
    import grpc

    from emoserve.client import Client, pcm_to_wav

    options = dict(voice=args.voice, emotion=args.emotion, speed=args.speed, pitch_semitones=args.pitch,
                   energy=args.energy, sample_rate_hz=args.sample_rate)
    security = _client_security(args, "synth")
    if security is None:
        return 2
    try:
        with Client(args.target, timeout=args.timeout, **security) as client:
            if args.stream:
                chunks = list(client.stream(args.text, encoding="LINEAR_PCM", **options))
                rate = chunks[0].sample_rate_hz
                data = pcm_to_wav((c.audio for c in chunks), rate)
                detail = f"{len(chunks)} chunks"
            else:
                reply = client.synthesize(args.text, encoding="WAV", **options)
                data, detail = reply.audio, f"{reply.duration_s:.2f} s, request {reply.request_id}"
    except grpc.RpcError as exc:
        print(f"emoserve synth: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    with open(args.output, "wb") as f:
        f.write(data)
    print(f"wrote {args.output} ({detail})")
    return 0


def _voices(args: argparse.Namespace) -> int:
    import grpc

    from emoserve.client import Client

    security = _client_security(args, "voices")
    if security is None:
        return 2
    try:
        with Client(args.target, timeout=args.timeout, **security) as client:
            reply = client.voices()
    except grpc.RpcError as exc:
        print(f"emoserve voices: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    print(f"model {reply.model}, {reply.sample_rate_hz} Hz, {len(reply.voices)} voices, default {reply.default_voice}")
    for voice in reply.voices:
        print(voice.name)
    return 0


def _service_kind(value: str) -> str:
    """``gateway``, a stage, or stages joined by ``+`` (``acoustic+vocoder``)."""
    from emoserve.serve import STAGES

    parts = value.split("+")
    if value == "gateway" or (all(p in STAGES for p in parts) and len(set(parts)) == len(parts)):
        return value
    raise argparse.ArgumentTypeError(
        f"{value!r}: choose gateway, or one or more of {', '.join(STAGES)} joined by '+' (each once)"
    )


def _add_servers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run one service: a stage (or several, e.g. acoustic+vocoder) or the gateway")
    p.add_argument("kind", type=_service_kind, metavar="{encoder,acoustic,vocoder,gateway}",
                   help="what to serve; stages joined by '+' share one process and its CUDA context")
    p.add_argument("--model", help="model directory (stages)")
    p.add_argument("--host", help="interface to listen on (default 0.0.0.0)")
    p.add_argument("--port", type=int, default=50051, help="gRPC port (0 = any free port)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="where the model runs (default auto)")
    p.add_argument("--precision", choices=["auto", "fp32", "fp16", "bf16"], help="default: fp16 on GPU, fp32 on CPU")
    p.add_argument("--config", help="YAML configuration file (batching, limits, server)")
    p.add_argument("--metrics-port", type=int, help="Prometheus /metrics port (default 9464; 0 = any free port, "
                   "-1 = no metrics)")
    for stage in ("encoder", "acoustic", "vocoder"):
        p.add_argument(f"--{stage}", help=f"gateway: {stage} address(es): HOST:PORT[,HOST:PORT...], "
                       f"k8s://SERVICE[.NAMESPACE][:PORT] (EndpointSlice watch) or dns:///HOST:PORT")
    p.add_argument("--tls-cert", help="serve TLS with this PEM certificate chain (with --tls-key)")
    p.add_argument("--tls-key", help="PEM private key of --tls-cert")
    p.add_argument("--tls-client-ca", help="require client certificates signed by this PEM CA (mutual TLS)")
    p.add_argument("--stage-ca", help="gateway: reach the stages over TLS, trusting this PEM CA")
    p.add_argument("--stage-cert", help="gateway: client certificate presented to the stages (mTLS)")
    p.add_argument("--stage-key", help="gateway: PEM private key of --stage-cert")
    p.add_argument("--stage-server-name", help="gateway: name expected in the stages' certificates")
    p.add_argument("--token-file", help="gateway: require a bearer token listed in FILE (one per line); "
                   "tokens in $EMOSERVE_TOKENS are accepted too")
    p.set_defaults(handler=_serve)

    p = sub.add_parser("up", help="run the whole pipeline on this machine")
    p.add_argument("--model", help="model directory (default: the built-in default model)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--precision", choices=["auto", "fp32", "fp16", "bf16"], default="auto",
                   help="default: fp16 on GPU, fp32 on CPU")
    p.add_argument("--host", default="127.0.0.1", help="gateway interface (0.0.0.0 to accept remote clients)")
    p.add_argument("--port", type=int, default=50051, help="gateway port")
    p.add_argument("--config", help="YAML configuration file applied to every service")
    p.add_argument("--colocate", action="store_true",
                   help="serve the acoustic model and the vocoder from one process (one CUDA context): lower "
                        "latency at low load, less throughput at high load")
    p.set_defaults(handler=_up)


def _add_client(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="synthesise text through a running gateway into a WAV file")
    p.add_argument("text")
    p.add_argument("--voice", default="", help="voice name (default: the model's default voice)")
    p.add_argument("--emotion", default="", help='free-text emotion prompt, e.g. "Happy" or "开心"')
    p.add_argument("--speed", type=float, default=0.0, help="0.5..2.0 (0 = default)")
    p.add_argument("--pitch", type=float, default=0.0, help="pitch shift in semitones, -12..12")
    p.add_argument("--energy", type=float, default=0.0, help="0.5..2.0 (0 = default)")
    p.add_argument("--sample-rate", type=int, default=0, help="output rate in Hz (0 = model rate)")
    p.add_argument("--stream", action="store_true", help="use the streaming RPC")
    p.add_argument("--target", default="localhost:50051", help="gateway HOST:PORT")
    p.add_argument("--timeout", type=float, default=120.0, help="deadline in seconds")
    p.add_argument("-o", "--output", default="out.wav", help="WAV file to write")
    _add_client_security(p)
    p.set_defaults(handler=_synth)

    p = sub.add_parser("voices", help="list the voices of a running gateway's model")
    p.add_argument("--target", default="localhost:50051", help="gateway HOST:PORT")
    p.add_argument("--timeout", type=float, default=30.0)
    _add_client_security(p)
    p.set_defaults(handler=_voices)


def _add_client_security(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tls-ca", help="connect over TLS, trusting this PEM CA")
    p.add_argument("--tls-cert", help="client certificate for a gateway requiring mutual TLS (with --tls-key)")
    p.add_argument("--tls-key", help="PEM private key of --tls-cert")
    p.add_argument("--tls-server-name", help="name expected in the gateway's certificate (default: target host)")
    p.add_argument("--token-file", help="send the bearer token in FILE (default: $EMOSERVE_TOKEN, if set)")


def _add_bench(sub: argparse._SubParsersAction) -> None:
    from emoserve.tools import bench

    p = sub.add_parser("bench", help="load-test a running gateway (latency, RTFX vs concurrency)",
                       description=bench.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    bench.add_arguments(p)
    p.set_defaults(handler=bench.run_from_args)


def _add_engine_tools(sub: argparse._SubParsersAction) -> None:
    from emoserve.engines.commands import add_commands

    add_commands(sub)


def _k8s_status(args: argparse.Namespace) -> int:
    import datetime as dt

    from emoserve.k8s import status_command

    code, report = status_command(args.release, args.namespace, dt.timedelta(minutes=args.restart_window))
    print(report, file=sys.stderr if code == 2 else sys.stdout)
    return code


def _add_k8s(sub: argparse._SubParsersAction) -> None:
    k8s = sub.add_parser("k8s", help="inspect an emoserve release on Kubernetes (Helm chart charts/emoserve)")
    commands = k8s.add_subparsers(dest="k8s_command", required=True)
    p = commands.add_parser("status", help="per component: desired/ready pods, autoscaler metrics and replicas, "
                            "recent restarts (exit 0 when every component is ready)")
    p.add_argument("--release", required=True, help="Helm release name")
    p.add_argument("--namespace", help="namespace (default: the current kubeconfig context's)")
    p.add_argument("--restart-window", type=float, default=60.0, metavar="MINUTES",
                   help="restarts this recent are reported (default 60)")
    p.set_defaults(handler=_k8s_status)


def build_parser() -> argparse.ArgumentParser:
    """The full ``emoserve`` argument parser."""
    parser = argparse.ArgumentParser(prog="emoserve", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_model_tools(sub)
    _add_engine_tools(sub)
    _add_servers(sub)
    _add_client(sub)
    _add_bench(sub)
    _add_k8s(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``emoserve`` command."""
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
