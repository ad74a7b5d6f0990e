#!/usr/bin/env bash
# Sweep one preset over every implemented entry, several notebooks at a time on one machine.
#
#   PRESET=gpu DEVICE=cuda JOBS=8 bash scripts/sweep.sh
#   PRESET=cpu JOBS=2 OMP_NUM_THREADS=1 POSENC=.venv/bin/posenc PYTHON=.venv/bin/python bash scripts/sweep.sh
#
# The RoPE base model is trained first (every interpolation method reuses its cached checkpoint), then the
# other baselines, then every other entry, JOBS at a time. Completed results are skipped, so a killed sweep
# resumes where it stopped. Logs go to logs/<preset>/<id>.log; failures are listed at the end.
set -uo pipefail
PRESET=${PRESET:-cpu}
DEVICE=${DEVICE:-auto}
JOBS=${JOBS:-1}
POSENC=${POSENC:-posenc}
PYTHON=${PYTHON:-python3}
mkdir -p "logs/$PRESET"
run() { $POSENC run "$1" --preset "$PRESET" --device "$DEVICE" >"logs/$PRESET/$1.log" 2>&1 || echo "FAILED $1"; }
export -f run
export PRESET DEVICE POSENC
start=$(date +%s)
run rope
printf '%s\n' sinusoidal alibi nope | xargs -P "$JOBS" -I{} bash -c 'run {}'
"$PYTHON" -c "import posenc; print('\n'.join(posenc.available()))" | grep -vxE 'rope|sinusoidal|alibi|nope' \
  | xargs -P "$JOBS" -I{} bash -c 'run {}'
echo "sweep $PRESET on $DEVICE with $JOBS jobs: $(( $(date +%s) - start )) s"
