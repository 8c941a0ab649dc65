#!/usr/bin/env bash
# What a GPU machine has to confirm, in one run: what the sensors see, the NVML checks
# (gpu_validation.py), the sampler's cost with NVML, the cross-check with codecarbon's tracker,
# the quick GPU suite with its report, and a settings sweep (batch x dtype x power limit) with
# its Pareto front, the power limit checked back at its default afterwards.
# Each step is logged to DIR/log.txt. A failing step is recorded there and the rest still run.
# Exits 1 if any step failed. DIR ends up with: log.txt, sensors.json, nvml_validation.json
# and .md, sampler_overhead.json, codecarbon_crosscheck.json, gpu.sqlite (the suite's store,
# for export and later reports), report.html, gpu-settings.toml, settings.sqlite, pareto.json
# and settings.html.
#
#   bash benchmarks/gpu_check.sh [DIR]        (default DIR: benchmarks/results/gpu)
#
# Runs from the repository root with carbonbench importable (installed, or on PYTHONPATH).
set -u -o pipefail
dir=${1:-benchmarks/results/gpu}
mkdir -p "$dir"
export PYTHONUNBUFFERED=1 CUDA_DEVICE_ORDER=PCI_BUS_ID
python=${PYTHON:-python3}
log=$dir/log.txt
failed=0

step() {
  echo "== $(date -u +%H:%M:%S) $*" | tee -a "$log"
  "$@" 2>&1 | tee -a "$log"
  local rc=${PIPESTATUS[0]}
  echo "== exit $rc" | tee -a "$log"
  [ "$rc" -eq 0 ] || failed=1
}

step nvidia-smi --query-gpu=name,driver_version,power.limit,power.draw,pstate --format=csv
step bash -c "$python -m carbonbench sensors --json > '$dir/sensors.json'"
step "$python" benchmarks/gpu_validation.py --out "$dir"
step "$python" benchmarks/sampler_overhead.py --seconds 2 --json "$dir/sampler_overhead.json"
step "$python" benchmarks/codecarbon_crosscheck.py --device cuda --seconds 10 \
  --json "$dir/codecarbon_crosscheck.json"
step "$python" -m carbonbench run --suite gpu --db "$dir/gpu.sqlite" --label "gpu check"
step "$python" -m carbonbench report --db "$dir/gpu.sqlite" -o "$dir/report.html"
# settings: batch x dtype x power limit (the limits from this GPU's range; needs root, and
# carbonbench puts the limit back), then the front and the recommended setting
step "$python" benchmarks/gpu_settings_suite.py "$dir/gpu-settings.toml"
step "$python" -m carbonbench run --suite "$dir/gpu-settings.toml" --db "$dir/settings.sqlite" \
  --label "gpu settings"
step bash -c "$python -m carbonbench pareto --db '$dir/settings.sqlite' --json > '$dir/pareto.json'"
step "$python" -m carbonbench pareto --db "$dir/settings.sqlite"
step "$python" -m carbonbench report --db "$dir/settings.sqlite" -o "$dir/settings.html"
step nvidia-smi --query-gpu=name,power.limit,power.default_limit,clocks.sm --format=csv
echo "== done, failed=$failed" | tee -a "$log"
exit "$failed"
