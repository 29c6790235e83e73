#!/usr/bin/env bash
# Every CUDA check of issue 8 in one call to a lent GPU machine: the GPU tests, the CUDA rows
# of bench/README.md and the airbench-style recipe's time to 93%. Such a machine is lent for
# 15 minutes, its start included, with nothing that can be downloaded there: so the wheels
# it lacks (pydantic) and Fashion-MNIST travel with the working tree.
#
#   bash bench/gpu_session.sh --prepare     # here, once: .whl/ and .data/ (git-ignored)
#   then, through the device tool:
#     run(command="bash bench/gpu_session.sh", carry=[".whl", ".data"], timeout_s=480)
#
# It writes $OUT/gpu_session.tar.gz (the device tool brings back at most 8 files; $OUT
# defaults to bench/results/gpu), remade after each step, so a call cut short still brings
# back what was done: gpu.txt (the card), then each step's log and JSON, in order of
# importance: pytest, overhead_cuda, overhead_per_iteration_check_cuda (what the deferred
# NaN check saves), time_to_accuracy_cuda, memory_cuda, fast_recipe (its run directory
# without the weights) and overhead_options_cuda. Each step has its own time limit, so one
# slow step costs only itself; the whole is cut at 9 minutes (limits sum to 535 s).
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--prepare" ]; then
    set -e
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    grep -qx '/.data/' .git/info/exclude 2>/dev/null || echo '/.data/' >> .git/info/exclude
    mkdir -p .whl .data
    # the image there has Python 3.12 with torch, PyYAML, safetensors, numpy and scikit-learn,
    # but no pydantic; typer, rich and typing-extensions go too, at the versions CI
    # tests with (the CLI tests compare typer's output)
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
        -d .whl 'pydantic==2.14.4' 'pydantic-core==2.50.5' 'annotated-types==0.8.0' 'typing-inspection==0.4.5' \
        'typing-extensions==4.16.0' 'typer==0.29.2' 'rich==15.0.0'
    cp -r /usr/share/datasets/fashion-mnist .data/
    du -sh .whl .data
    exit 0
fi

OUT="${OUT:-bench/results/gpu}"
RES=$(mktemp -d)  # the results, packed into $OUT after each step
mkdir -p "$OUT"
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu tries the steps' plumbing on a machine without a GPU
if ! $PY -c "import pydantic" 2>/dev/null && [ -d .whl ]; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || echo "could not install .whl/ (pydantic): netcfg will not import"
    export PYTHONPATH="/tmp/site:$PWD"
else
    export PYTHONPATH="$PWD"
fi
if [ -d .data/fashion-mnist ] && [ ! -d /usr/share/datasets/fashion-mnist ]; then
    mkdir -p /usr/share/datasets && cp -r .data/fashion-mnist /usr/share/datasets/ \
        || echo "could not copy Fashion-MNIST to /usr/share/datasets: its steps will fail"
fi
export PYTHONUNBUFFERED=1
start=$SECONDS

step() {  # step NAME SECONDS COMMAND...: run it with a time limit, log to $RES/NAME.log
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit}s, at $((SECONDS - start))s)"
    timeout "$limit" "$@" > "$RES/$name.log" 2>&1
    local rc=$?
    tail -n 15 "$RES/$name.log"
    echo "== $name: exit $rc after $((SECONDS - start))s"
    tar -czf "$OUT/gpu_session.tar.gz" -C "$RES" .
}

{ nvidia-smi; $PY -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda,
    torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')"; } \
    > "$RES/gpu.txt" 2>&1
tail -n 3 "$RES/gpu.txt"

step pytest 180 $PY -m pytest -q -p no:cacheprovider tests/gpu tests/data/test_loader.py -m gpu
step overhead 45 $PY bench/overhead.py --device $DEVICE --wall --blocks 20 --steps 100 \
    --json "$RES/overhead_cuda.json"
step deferred_check 40 $PY bench/overhead.py --device $DEVICE --wall --nets lenet,mlp --blocks 20 --steps 100 \
    --nan-check per-iteration --json "$RES/overhead_per_iteration_check_cuda.json"
step time_to_accuracy 75 $PY bench/time_to_accuracy.py --device $DEVICE --wall \
    --json "$RES/time_to_accuracy_cuda.json"
step memory 45 $PY bench/memory.py --device $DEVICE --iters 300 --repeat 1 --json "$RES/memory_cuda.json"
step fast_recipe 120 $PY -m netcfg train solvers/resnet9_fashion_mnist_fast.yaml --out "$RES/fast" \
    --set device=$DEVICE
rm -f "$RES"/fast/*.safetensors "$RES"/fast/*.solverstate  # keep its log and metrics only
step options 30 $PY bench/overhead.py --device $DEVICE --wall --options --blocks 5 --steps 50 \
    --json "$RES/overhead_options_cuda.json"
echo "all steps done in $((SECONDS - start))s"
