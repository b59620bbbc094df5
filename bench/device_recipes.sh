#!/usr/bin/env bash
# Train every recipe of a sweep file in parallel on one machine (a GPU box, typically), then rank them.
#
#   bash bench/device_recipes.sh DATA_ROOT OUT RECIPES [PARALLEL] [ALONE]
#
# DATA_ROOT/<dataset>/... holds the images (the recipes' `dataset` key), OUT receives leaderboard.md,
# leaderboard.png and runs.tar.gz (each run's config, metrics.jsonl, model.json and log). ALONE, an
# experiment name, is then trained once more on its own so its wall time is not shared with others.
# Needs only python3 with torch, timm, numpy, pillow, pyyaml, rich, safetensors; uses ./src directly.
set -euo pipefail
DATA_ROOT=${1:?usage: device_recipes.sh DATA_ROOT OUT RECIPES [PARALLEL] [ALONE]}
OUT=${2:?usage: device_recipes.sh DATA_ROOT OUT RECIPES [PARALLEL] [ALONE]}
RECIPES=${3:?usage: device_recipes.sh DATA_ROOT OUT RECIPES [PARALLEL] [ALONE]}
PARALLEL=${4:-6}
ALONE=${5:-}
WORK=${WORK:-/tmp/seedlings-recipes}
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$WORK/logs"
# Whatever happens (a failed run, a time limit's SIGTERM), bring back the logs and metrics, no weights.
trap 'tar -czf "$OUT/runs.tar.gz" -C "$WORK" --exclude="*.safetensors" --exclude="*.onnx" --exclude=cache \
        $(cd "$WORK" && ls -d logs runs alone 2>/dev/null) || true' EXIT
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__, 'cuda', torch.cuda.is_available())"

# One cache per (dataset, image size), built before the parallel runs so they never race on it.
python3 - "$RECIPES" "$DATA_ROOT" > "$WORK/prepare.txt" <<'PY'
import sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
for e in doc["experiments"]:
    e = {**doc.get("defaults", {}), **e}
    print(f"{sys.argv[2]}/{e['dataset']}" + (f"/{e['subdir']}" if e.get("subdir") else ""), e.get("image_size", 128))
PY
sort -u "$WORK/prepare.txt" | while read -r dir size; do
  python3 -m seedlings data prepare "$dir" --image-size "$size" --cache-dir "$WORK/cache"
done

n=$(python3 -c "import sys, yaml; print(len(yaml.safe_load(open(sys.argv[1]))['experiments']))" "$RECIPES")
start=$(date +%s)
seq 0 $((n - 1)) | xargs -P "$PARALLEL" -I{} sh -c \
  "python3 -m seedlings runs sweep-item --experiments '$RECIPES' --index {} --runs-dir '$WORK/runs' \
     --data-root '$DATA_ROOT' --cache-dir '$WORK/cache' --threads 1 > '$WORK/logs/{}.log' 2>&1 \
   && echo 'experiment {} done' || echo 'experiment {} FAILED (see its log)'"
echo "grid: $n experiments, $PARALLEL at a time, $(( $(date +%s) - start )) s"
python3 -m seedlings runs compare "$WORK/runs" --out "$OUT" || true

if [ -n "$ALONE" ]; then
  i=$(python3 -c "import sys, yaml; print([e['name'] for e in yaml.safe_load(open(sys.argv[1]))['experiments']].index(sys.argv[2]))" "$RECIPES" "$ALONE")
  start=$(date +%s)
  python3 -m seedlings runs sweep-item --experiments "$RECIPES" --index "$i" --runs-dir "$WORK/alone" \
    --data-root "$DATA_ROOT" --cache-dir "$WORK/cache" --threads 4 > "$WORK/logs/alone.log" 2>&1
  echo "alone: $ALONE trained in $(( $(date +%s) - start )) s wall"
  python3 -m seedlings runs compare "$WORK/alone" --out "$WORK/alone-board" || true
fi
