"""`moep-sglang`: the project's command line.

  moep-sglang make-model --preset NAME --out DIR   write a Hugging Face MoE checkpoint
  moep-sglang launch_server [SGLang args...]        SGLang server with the moep plugin
  moep-sglang serve --model-path DIR                a node: its workers + moep-router, supervised
  moep-sglang demo                                  a CPU node (serve) + a scored workload
  moep-sglang score --file requests.jsonl           a batch job through the router
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("launch_server", "launch-server"):
        from moep_sglang.server.launch import run_launch_server

        return run_launch_server(argv[1:])
    args = _parser().parse_args(argv)
    args.func(args)


def _parser() -> argparse.ArgumentParser:
    from moep_sglang.models.presets import PRESETS

    parser = argparse.ArgumentParser(prog="moep-sglang", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    mm = sub.add_parser("make-model", help="write a Hugging Face-format MoE checkpoint",
                        description="Presets:\n" + "\n".join(
                            f"  {p.name:18s} {p.description}" for p in PRESETS.values()),
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    mm.add_argument("--preset", required=True, choices=sorted(PRESETS))
    mm.add_argument("--out", required=True, type=Path, help="output directory")
    mm.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    mm.add_argument("--num-layers", type=int, default=None,
                    help="override the preset's layer count (e.g. a 24-layer 235B-shaped model)")
    mm.set_defaults(func=_make_model)

    sub.add_parser("launch_server", help="start SGLang's launch_server with the moep plugin "
                   "(all further arguments are SGLang's; see `moep-sglang launch_server -h`)")

    serve = sub.add_parser("serve", help="one command for a node: a worker per GPU (or N CPU "
                           "workers), moep-router in front, restarts of failed groups",
                           description=_node_doc(), formatter_class=argparse.RawDescriptionHelpFormatter)
    from moep_sglang.server.node import add_serve_args

    add_serve_args(serve)

    score = sub.add_parser("score", help="send a JSONL file of requests (or an OpenAI batch "
                           "input file) to the router, with a progress bar; results as JSONL")
    from moep_sglang.client.batch_cli import add_score_args

    add_score_args(score)

    demo = sub.add_parser("demo", help="start CPU workers and the router; score a "
                          "shared-prefix workload")
    from moep_sglang.demo import add_demo_args

    add_demo_args(demo)
    return parser


def _node_doc() -> str:
    from moep_sglang.server import node

    return node.__doc__


def _make_model(args: argparse.Namespace) -> None:
    import dataclasses

    from moep_sglang.models.checkpoint import MakeModelParams, make_model
    from moep_sglang.models.presets import get_preset

    preset = get_preset(args.preset)
    if args.num_layers is not None:
        if args.num_layers < 1:
            sys.exit("moep-sglang make-model: --num-layers must be >= 1")
        preset = dataclasses.replace(preset, num_layers=args.num_layers)
    result = make_model(MakeModelParams(preset, args.out, args.seed))
    kind = "weights" if preset.with_weights else "config + tokenizer only (--load-format dummy)"
    print(f"wrote {preset.name} to {result.out_dir}: {preset.num_params / 1e6:.1f}M params "
          f"({preset.num_active_params / 1e6:.1f}M active), {kind}, "
          f"{result.weight_bytes / 2**20:.1f} MiB of weights, "
          f"tokenizer of {result.tokenizer_vocab_size} tokens")


if __name__ == "__main__":
    main()
