#!/usr/bin/env bash
# The GPU checks, as one script for a lent GPU machine (see benchmarks/RESULTS.md):
# the CUDA tests, then benchmarks/bench_gpu_throughput.py eager and compiled, KEPT with and without fusion
# and plain BertForMaskedLM. Wheels the machine lacks may be carried in .whl/ (installed to /tmp/site).
# Writes one JSON line per throughput run to ${OUT:-.}/gpu_throughput.jsonl and the whole log to
# ${OUT:-.}/gpu_suite.log (a failed run's traceback included).
set -uo pipefail
cd "$(dirname "$0")/.."
exec > >(tee "${OUT:-.}/gpu_suite.log") 2>&1
PY=${PY:-python3}
if compgen -G ".whl/*.whl" > /dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
results=${OUT:-.}/gpu_throughput.jsonl
nvidia-smi -L
$PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
timeout 180 $PY -m pytest -q -p no:cacheprovider tests/test_pretrain_gpu.py "tests/test_fusion_model.py::test_cuda_bf16_table_stays_on_cpu" 2>&1 | tail -15
for mode in "" "--compile"; do
  for variant in "" "--no-fusion" "--bert"; do
    # compiling the base model with its aggregators takes minutes on a fresh machine
    timeout 300 $PY benchmarks/bench_gpu_throughput.py --steps 20 $mode $variant > run.out 2>&1
    echo "exit $? ($mode $variant)"; tail -25 run.out; grep '^{' run.out | tail -1 >> "$results"
  done
done
timeout 300 $PY benchmarks/bench_gpu_throughput.py --steps 20 --batch 64 --compile > run.out 2>&1
echo "exit $? (--batch 64 --compile)"; tail -25 run.out; grep '^{' run.out | tail -1 >> "$results"
rm -f run.out
cat "$results"
