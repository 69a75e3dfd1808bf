"""Profile one sliding-window tile of a UNETR++ network on CPU: where does the time go?

Prints the wall time of one forward pass (best of ``--repeats``) and the operators that take the
most self time, so that a change in ``unetrpp.network.optimize`` can be checked one lever at a time::

    python benchmarks/profile_network.py                       # synapse, fp32, as built
    python benchmarks/profile_network.py --optimize            # BN folded, pointwise convs as matmul
    python benchmarks/profile_network.py --optimize --bf16     # plus bf16 autocast
    python benchmarks/profile_network.py --variant acdc --batch 2 --channels-last
    python benchmarks/profile_network.py --levers --threads 1  # every network-level lever, interleaved

Random weights (seeded): the cost of a forward pass does not depend on the values.
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch
from torch.profiler import ProfilerActivity, profile
from unetrpp.network import build_network
from unetrpp.network.optimize import optimize_for_inference


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="synapse", help="synapse, acdc, lung or tumor")
    parser.add_argument("--optimize", action="store_true", help="apply optimize_for_inference")
    parser.add_argument("--bf16", action="store_true", help="run under CPU bf16 autocast")
    parser.add_argument("--channels-last", action="store_true", help="channels_last_3d input and weights")
    parser.add_argument("--batch", type=int, default=1, help="tiles per forward pass")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    parser.add_argument("--repeats", type=int, default=3, help="timed forward passes (best is reported)")
    parser.add_argument("--top", type=int, default=20, help="operators to list (0: no profile)")
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile the network (reports compile time)"
    )
    parser.add_argument(
        "--levers", action="store_true", help="compare the network-level levers one at a time"
    )
    return parser.parse_args()


def compare_levers(variant: str, repeats: int) -> None:
    """CPU and wall seconds per tile and error against fp32 for each lever, measured interleaved."""
    torch.manual_seed(0)
    plain = build_network(variant, deep_supervision=False).eval()
    with torch.no_grad():  # layer scale starts at 1e-6: make the attention path count in the error
        for name, parameter in plain.named_parameters():
            if name.endswith("gamma"):
                parameter.fill_(0.5)
    tile = torch.randn(1, plain.config.in_channels, *plain.config.patch_size)
    tile2 = torch.cat([tile, torch.randn_like(tile)])
    fp32 = contextlib.nullcontext

    def bf16() -> contextlib.AbstractContextManager:
        return torch.autocast("cpu", dtype=torch.bfloat16)

    rewrites = ("onednn_convolutions", "contiguous_heads", "pointwise_products", "channels_last")
    names = (
        "fp32 + BN folded",
        "fp32 + convs pinned to oneDNN",
        "fp32 + contiguous EPA heads",
        "fp32 + pointwise convs as products",
        "fp32 + full-resolution blocks channels-last (optimize_for_inference)",
    )
    # each step adds one rewrite to the one before
    steps = {name: {r: i > n for n, r in enumerate(rewrites)} for i, name in enumerate(names)}
    levers = {"fp32 as built": (plain, tile, fp32)}  # name: (network, input, autocast)
    for name, flags in steps.items():
        levers[name] = (optimize_for_inference(plain, **flags), tile, fp32)
    optimized = optimize_for_inference(plain)
    bf16_weights = optimize_for_inference(plain, dtype=torch.bfloat16)
    whole_cl = optimize_for_inference(plain, channels_last=False).to(memory_format=torch.channels_last_3d)
    tile_cl = tile.contiguous(memory_format=torch.channels_last_3d)
    levers.update(
        {
            "bf16 autocast, as built": (plain, tile, bf16),
            "bf16 autocast + optimize_for_inference": (optimized, tile, bf16),
            "bf16 autocast + optimize_for_inference(dtype=bf16) (the default)": (bf16_weights, tile, bf16),
            "bf16 autocast + optimized, whole network channels_last_3d": (whole_cl, tile_cl, bf16),
            "bf16 autocast + optimize(dtype=bf16), batch of 2": (bf16_weights, tile2, bf16),
        }
    )
    cpu = {name: [] for name in levers}
    wall = {name: [] for name in levers}
    outputs = {}
    with torch.inference_mode():
        for name, (network, inputs, autocast) in levers.items():
            with autocast():
                outputs[name] = network(inputs)[:1].float()  # warm-up and output for the error
        for _ in range(repeats):
            for name, (network, inputs, autocast) in levers.items():
                with autocast():
                    start, cpu_start = time.perf_counter(), time.process_time()
                    network(inputs)
                    wall[name].append((time.perf_counter() - start) / inputs.shape[0])
                    cpu[name].append((time.process_time() - cpu_start) / inputs.shape[0])
    reference = outputs["fp32 as built"]
    base = min(cpu["fp32 as built"])
    print(f"{variant}, {torch.get_num_threads()} thread(s), best of {repeats}, seconds per tile")
    print("| lever | CPU s | vs fp32 | wall s | max rel. error | argmax agreement |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in levers:
        error = float((outputs[name] - reference).abs().max() / reference.abs().max())
        agreement = float((outputs[name].argmax(1) == reference.argmax(1)).float().mean())
        print(
            f"| {name} | {min(cpu[name]):.3f} | {base / min(cpu[name]):.2f}x | {min(wall[name]):.3f} "
            f"| {error:.1e} | {100 * agreement:.2f}% |"
        )


def main() -> int:
    args = _parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.levers:
        compare_levers(args.variant, args.repeats)
        return 0
    torch.manual_seed(0)
    network = build_network(args.variant, deep_supervision=False).eval()
    if args.optimize:
        network = optimize_for_inference(network)
    tile = torch.randn(args.batch, network.config.in_channels, *network.config.patch_size)
    if args.channels_last:
        network = network.to(memory_format=torch.channels_last_3d)
        tile = tile.contiguous(memory_format=torch.channels_last_3d)

    def autocast() -> contextlib.AbstractContextManager:
        if args.bf16:
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    if args.compile:
        network = torch.compile(network)
    with torch.inference_mode(), autocast():
        start = time.perf_counter()
        network(tile)  # warm-up: oneDNN primitive creation, allocator; compilation with --compile
        print(
            f"first forward (warm-up{', compilation' if args.compile else ''}): "
            f"{time.perf_counter() - start:.1f} s"
        )
        times, cpu_times = [], []
        for _ in range(args.repeats):
            start, cpu_start = time.perf_counter(), time.process_time()
            network(tile)
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
        best, best_cpu = min(times), min(cpu_times)
        # On a shared machine wall time follows the neighbours' load; process CPU time (with one
        # thread) mostly does not, so levers are compared on both.
        print(
            f"{args.variant} batch={args.batch} optimize={args.optimize} bf16={args.bf16} "
            f"compile={args.compile} "
            f"channels_last={args.channels_last} threads={torch.get_num_threads()}: "
            f"best {best / args.batch:.3f} s wall, {best_cpu / args.batch:.3f} s CPU per tile; "
            f"wall {[round(t, 2) for t in times]}"
        )
        if args.top:
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                network(tile)
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
