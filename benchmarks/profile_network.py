"""Profile one sliding-window tile of a UNETR++ network on CPU: where does the time go?

Prints the wall time of one forward pass (best of ``--repeats``) and the operators that take the
most self time, so that a change in ``unetrpp.network.optimize`` can be checked one lever at a time::

    python benchmarks/profile_network.py                       # synapse, fp32, as built
    python benchmarks/profile_network.py --optimize            # BN folded, pointwise convs as matmul
    python benchmarks/profile_network.py --optimize --bf16     # plus bf16 autocast
    python benchmarks/profile_network.py --variant acdc --batch 2 --channels-last

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
    return parser.parse_args()


def main() -> int:
    args = _parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
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

    with torch.inference_mode(), autocast():
        network(tile)  # warm-up: oneDNN primitive creation, allocator
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
