#!/usr/bin/env bash
# GPU smoke test: does sepcore run, and run fast, on one CUDA GPU? (about 10 minutes on one GPU)
#
#   bash tests/bench/gpu_smoke.sh                 # on a machine with a GPU and a CUDA torch wheel
#   # a dry run of the script itself on a CPU machine (no GPU checks, tiny data and steps):
#   SMOKE_DEVICE=cpu SMOKE_AMP=off SMOKE_STEPS=2 SMOKE_TRACKS=4 SMOKE_SECONDS=20 \
#       SMOKE_OVERRIDES='train.batch_size=1 data.segment=1.0' SMOKE_M1_SEGMENT=1.0 SMOKE_BENCH=0 \
#       bash tests/bench/gpu_smoke.sh
#
# Steps (each prints PASS/FAIL and its time; the script exits 1 when any failed):
#   1. CUDA present (torch's CUDA build, the device, bf16 support, nvidia-smi);
#   2. the GPU-marked pytest tests (`pytest -m gpu`: skipped without CUDA, run here);
#   3. two epochs of m2, umx, mad_ris_s, metatasnet, unet and htmd (paper configs, paper sizes) on
#      synthetic data with train.device=cuda train.amp=bf16, then a resume of m2 on the GPU;
#   4. Conv-TasNet M1 at batch 4 x 8 s: training samples/s while nvidia-smi samples the GPU's
#      utilisation every 200 ms (mean after the first 25 % of the samples; goal >= 80 %);
#   5. tests/bench/runtime.py --device cuda (HTMD-Net paper runtime table);
#   6. tests/bench/bsseval_speed.py --device cuda --full-song (BSSEval on CUDA vs museval);
#   7. sep evaluate --device cuda of the m2 checkpoint (BSSEval on the GPU);
#   8. the demo sweep with tune.resources.gpu=0.5 (two trials share the GPU) while nvidia-smi
#      samples utilisation.
# Environment: PY (default .venv/bin/python), SMOKE_DEVICE (cuda), SMOKE_AMP (bf16),
# SMOKE_STEPS (training steps per epoch, 30), SMOKE_TRACKS and SMOKE_SECONDS (the synthetic
# data: 8 songs of 40 s), SMOKE_OVERRIDES (more overrides of the two-epoch trainings), SMOKE_BENCH
# (0 skips steps 5 and 6), SMOKE_M1_SEGMENT (step 4's chunk, 8.0 s), SMOKE_WORK (scratch
# folder, a new temp folder).
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
[[ $PY == /* ]] || PY=$PWD/$PY  # absolute, not resolved (a venv's python is a symlink)
REPO=$PWD
DEVICE=${SMOKE_DEVICE:-cuda}
AMP=${SMOKE_AMP:-bf16}
STEPS=${SMOKE_STEPS:-30}
WORK=${SMOKE_WORK:-$(mktemp -d /tmp/sepcore-gpu-smoke.XXXXXX)}
SEP=("$(dirname "$PY")/sep")
FAILED=()
SAMPLER=""

step() {  # step NAME COMMAND...: run it, print PASS/FAIL with its wall time
    local name=$1 start end
    shift
    echo "== $name"
    start=$(date +%s.%N)
    if "$@"; then local result=PASS; else local result=FAIL; FAILED+=("$name"); fi
    end=$(date +%s.%N)
    awk -v r="$result" -v n="$name" -v a="$start" -v b="$end" \
        'BEGIN {printf "%s %s (%.1f s)\n", r, n, b - a}'
}

sample_gpu() {  # sample_gpu FILE: nvidia-smi utilisation every 200 ms into FILE, in the background
    SAMPLER=""
    if [ "$DEVICE" = cuda ] && command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits \
            -lms 200 >"$1" 2>/dev/null &
        SAMPLER=$!
    fi
}

report_gpu() {  # report_gpu FILE LABEL: stop the sampler, print the mean utilisation after warm-up
    [ -n "$SAMPLER" ] || { echo "$2: no nvidia-smi samples (device $DEVICE)"; return 0; }
    kill "$SAMPLER" 2>/dev/null
    wait "$SAMPLER" 2>/dev/null
    awk -F', ' -v label="$2" '{u[NR]=$1; m[NR]=$2}
        END {s=int(NR/4); n=0; t=0; peak=0
             for (i=s+1; i<=NR; i++) {t+=u[i]; n++; if (m[i]>peak) peak=m[i]}
             if (n) printf "%s: GPU utilisation %.1f %% (mean of %d samples after warm-up), " \
                           "peak memory %d MiB\n", label, t/n, n, peak}' "$1"
}

cuda_present() {
    "$PY" - "$DEVICE" <<'EOF'
import sys

import torch

print(f"torch {torch.__version__}, torch.version.cuda={torch.version.cuda}")
if sys.argv[1] == "cuda":
    assert torch.cuda.is_available(), "CUDA is not available to torch"
    print(f"{torch.cuda.get_device_name()}: {torch.cuda.device_count()} device(s), "
          f"bf16 {torch.cuda.is_bf16_supported()}")
EOF
    [ "$DEVICE" != cuda ] || nvidia-smi -L
}

train_two_epochs() {  # train_two_epochs CONFIG [OVERRIDES...]
    local config=$1
    shift
    "${SEP[@]}" train "paper/$config.yaml" data.root="$WORK/data" data.valid_split=ratio \
        train.epochs=2 train.steps_per_epoch="$STEPS" train.early_stop=0 \
        train.device="$DEVICE" train.amp="$AMP" train.out_dir="$WORK/runs/$config" \
        train.progress=false ${SMOKE_OVERRIDES:-} "$@"
}

resume_m2() {  # a third epoch of m2 from its last checkpoint, on the same device
    train_two_epochs m2 train.epochs=3 train.resume=auto 2>&1 | tee "$WORK/resume.log"
    grep -q "resumed from" "$WORK/resume.log"
}

m1_throughput() {
    sample_gpu "$WORK/util-m1.csv"
    "$PY" - "$WORK" "$DEVICE" "$AMP" "$STEPS" "${SMOKE_M1_SEGMENT:-8.0}" <<'EOF'
import sys
import time

import sepcore.train
from sepcore.config import load_config
from sepcore.train import fit

work, device, amp, steps, segment = sys.argv[1:6]
cfg = load_config("paper/m1.yaml", [
    f"data.root={work}/data", "data.valid_split=ratio", f"data.segment={segment}",
    "train.batch_size=4", "train.epochs=1", f"train.steps_per_epoch={int(steps) * 3}",
    f"train.device={device}", f"train.amp={amp}", f"train.out_dir={work}/runs/m1",
    "train.progress=false"])
epoch, validation = [], []
validate = sepcore.train._validate


def timed_validate(*args, **kwargs):  # the epoch's validation, taken out of its training time
    start = time.perf_counter()
    try:
        return validate(*args, **kwargs)
    finally:
        validation.append(time.perf_counter() - start)


class Clock:
    def on_epoch_end(self, metrics):
        epoch.append(metrics["epoch_time"])


sepcore.train._validate = timed_validate
result = fit(cfg, hooks=[Clock()])
train = epoch[0] - validation[0]
samples = result.global_step * cfg.train.batch_size
print(f"Conv-TasNet M1, batch 4 x {segment} s, {device} amp={amp}: {result.global_step} steps "
      f"in {train:.1f} s = {samples / train:.2f} training samples/s "
      f"({samples * float(segment) / train:.1f} s of audio per s; validation "
      f"{validation[0]:.1f} s)")
EOF
    local rc=$?
    report_gpu "$WORK/util-m1.csv" "Conv-TasNet M1 training"
    return $rc
}

evaluate_m2() {
    "${SEP[@]}" evaluate "$WORK/runs/m2/best.safetensors" data.root="$WORK/data" \
        eval.subset=test eval.max_tracks=2 eval.device="$DEVICE" eval.out_dir="$WORK/eval"
}

demo_sweep() {
    local gpu=0.5
    [ "$DEVICE" = cuda ] || gpu=0
    sample_gpu "$WORK/util-sweep.csv"
    (cd "$WORK" && PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" \
        MLFLOW_TRACKING_URI="sqlite:///$WORK/mlruns.db" \
        "$PY" -m sweeps run "$REPO/sweeps/demo.yaml" --profile smoke \
        tune.resources.gpu=$gpu base.train.device="$DEVICE" base.data.root="$WORK/data" \
        tune.storage_path="$WORK/ray" artifacts.uri="file://$WORK/store")
    local rc=$?
    report_gpu "$WORK/util-sweep.csv" "demo sweep (gpu=$gpu per trial)"
    return $rc
}

echo "sepcore GPU smoke test: device $DEVICE, amp $AMP, $STEPS steps per epoch, work in $WORK"
T0=$(date +%s)
step "CUDA present" cuda_present
[ -d "$WORK/data/train" ] || "${SEP[@]}" synth --out "$WORK/data" --tracks "${SMOKE_TRACKS:-8}" \
    --seconds "${SMOKE_SECONDS:-40}" >/dev/null
if [ "$DEVICE" = cuda ]; then
    step "pytest -m gpu" "$PY" -m pytest -q -p no:cacheprovider -m gpu tests
fi
for config in m2 umx mad_ris_s metatasnet unet htmd; do
    step "two epochs of $config ($DEVICE, amp $AMP)" train_two_epochs "$config"
done
step "resume of m2 ($DEVICE)" resume_m2
step "Conv-TasNet M1 throughput and utilisation" m1_throughput
if [ "${SMOKE_BENCH:-1}" != 0 ]; then
    step "runtime.py --device $DEVICE" "$PY" tests/bench/runtime.py --device "$DEVICE" --seconds 30
    step "bsseval_speed.py --device $DEVICE --full-song" \
        "$PY" tests/bench/bsseval_speed.py --device "$DEVICE" --full-song --repeat 3
fi
step "sep evaluate --device $DEVICE" evaluate_m2
step "demo sweep with resources.gpu=0.5" demo_sweep
echo "== total $(( $(date +%s) - T0 )) s; work folder $WORK"
if [ ${#FAILED[@]} -gt 0 ]; then
    printf 'FAILED: %s\n' "${FAILED[@]}"
    exit 1
fi
echo "all steps passed"
