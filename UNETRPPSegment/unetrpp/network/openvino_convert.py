"""The child process that converts a network for OpenVINO: ``python -m unetrpp.network.openvino_convert
NETWORK_FILE KEY_JSON FOLDER``, started by :func:`unetrpp.network.openvino_runtime.converted_model_path`.

A process of its own because tracing and converting synapse take about 1.5 GB for 10-20 s: inside the
inference process that memory stayed on top of inference's own peak (a first run peaked at 4.41 GB
against 2.96 GB once the cache was warm, ``benchmarks/RESULTS.md``). When this process ends, all of it
goes back to the system.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from unetrpp.network.openvino_runtime import CacheKey, convert_into


def main(argv: list[str]) -> int:
    """Convert; on failure, the error's gist as the last line of stderr (the parent shows that line)."""
    network_file, key_json, folder = argv
    try:
        # Our own file, written a moment ago into a private staging folder (mkdtemp: mode 0700).
        network = torch.load(network_file, weights_only=False)
        fields = json.loads(key_json)
        key = CacheKey(**{**fields, "input_shape": tuple(fields["input_shape"])})
        convert_into(network, key, Path(folder))
    except Exception as error:  # OpenVINO's messages run over several lines: the first three say what
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        print(f"{type(error).__name__}: {' '.join(lines[:3])[:400]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
