#!/usr/bin/env bash
# The GPU path, end to end: one VAE run on the GPU (the 20 x 10 categorical VAE of Jang et al. 2017 on the
# digits28 stand-in, with its Monte-Carlo reference), its summary checked (status ok, device cuda:N, peak
# memory, the results contract), then `python -m bench.perf --device cuda --quick` (does every measurement
# run), then the measurement itself: the probes (toy, VAE, 20 x 10 VAE), the harness and Lookahead on the
# GPU, each repeated until its ratio's 95% interval is within +-10% or its time cap, with every probe's
# fraction of the GPU's matmul rate at its own sizes. The table goes to OUTPUT_FOLDER/perf_cuda.md (Markdown,
# with the machine and the load), every repeat to OUTPUT_FOLDER/perf_cuda.json.
#
#   scripts/gpu_check.sh [OUTPUT_FOLDER]        (default: results/gpu_check; PYTHON=... picks the interpreter)
#
# Exit 2, having run nothing, when torch sees no CUDA GPU; else the exit code of the first check that fails.
# The measurement stops the repeats of each comparison at 60 s (--time-cap): at most about 10 minutes in all.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUTPUT="${1:-$ROOT/results/gpu_check}"
PYTHON="${PYTHON:-python}"
cd "$ROOT"

"$PYTHON" - <<'PY' || exit 2
import sys

import torch

if not torch.cuda.is_available():
    if torch.version.cuda is None:
        reason = f"this torch ({torch.__version__}) was built without CUDA"
    else:
        reason = f"torch (CUDA {torch.version.cuda}) finds no GPU: check nvidia-smi and CUDA_VISIBLE_DEVICES"
    print(f"gpu_check: no CUDA GPU: {reason}. Nothing was run.", file=sys.stderr)
    sys.exit(2)
names = ", ".join(torch.cuda.get_device_name(index) for index in range(torch.cuda.device_count()))
print(f"gpu_check: torch {torch.__version__} (CUDA {torch.version.cuda}) sees {names}")
PY

rm -rf "$OUTPUT/run" && mkdir -p "$OUTPUT"
echo "gpu_check: one VAE run on the GPU -> $OUTPUT/run"
"$PYTHON" -m bench device=cuda task=categorical_vae_20x10 steps=300 probe.every=100 task.reference_draws=64 \
    progress=false "hydra.run.dir=$OUTPUT/run"
"$PYTHON" - "$OUTPUT/run/summary.json" <<'PY'
import json
import sys

summary = json.load(open(sys.argv[1]))
problems = []
if summary["status"] != "ok":
    problems.append(f"status {summary['status']}: {summary['error']}")
if not str(summary["device"]).startswith("cuda"):
    problems.append(f"it ran on {summary['device']}, not on a GPU")
if not summary.get("peak_memory_mb"):
    problems.append("no peak memory recorded")
if summary.get("grad_bias_sq") is None:
    problems.append("no bias against the Monte-Carlo reference")
for problem in problems:
    print(f"gpu_check: FAILED: {problem}", file=sys.stderr)
if problems:
    sys.exit(1)
print(
    f"gpu_check: run ok on {summary['device']} ({summary['device_name']}): {summary['steps']} steps at "
    f"{summary['step_time_ms']:.3g} ms, probe {summary['probe_time_ms']:.0f} ms, peak {summary['peak_memory_mb']:.0f} "
    f"MiB, final objective {summary['final_loss']:.4g}, squared bias {summary['grad_bias_sq']:.3g}"
)
PY
"$PYTHON" -m bench.check "$OUTPUT/run"

echo "gpu_check: python -m bench.perf --device cuda --quick -> $OUTPUT/perf_quick.json"
"$PYTHON" -m bench.perf --device cuda --quick --output "$OUTPUT/perf_quick.json"

echo "gpu_check: python -m bench.perf --device cuda (probes, harness, Lookahead) -> $OUTPUT/perf_cuda.md"
"$PYTHON" -m bench.perf --device cuda --only probe_toy,probe_vae,probe_vae_20x10,harness,lookahead \
    --output "$OUTPUT/perf_cuda.json" --markdown "$OUTPUT/perf_cuda.md"
echo "gpu_check: passed; the table is in $OUTPUT/perf_cuda.md"
