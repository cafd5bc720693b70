#!/usr/bin/env bash
# The GPU benchmark suite, one step per device call (the machine stays warm 30 s between calls,
# so the steps run back to back). Run in the repo root on the GPU machine; SHA=<git sha>.
#   stage c1 | stage c2       copy a carry of wheels to /tmp (bench/gpu/stage.py made them)
#   install                   last carry: install, byte-compile, restore the kernel cache
#   tune                      tune the fused-MoE Triton kernel (tune_moe.py), one GPU per shape set
#   tunedown                  one GPU: the down projection's own tile + TMA for the 30B shape
#                             (tune_moe.py --down, SGLang's `_down.json`); later steps use it
#   tunefp8                   the same for block-FP8 experts (the 235B and 30B shapes), one GPU
#   onefp8                    one GPU: the 235B shape (12 layers) in block FP8 vs bf16, ours and
#                             plain SGLang, same call
#   fa3check                  FlashAttention-3 (staged, trimmed) against torch SDPA
#   moegrouped                one GPU: the routed experts as torch's grouped GEMM (the plugin's
#                             path) vs SGLang's Triton fused_moe, 30B and 235B shapes
#   gusbench                  one GPU: the MoE layer with its gate-up GEMM and SiLU-and-mul merged
#                             (the plugin's gate_up_silu path) vs SGLang's, a tile sweep of it
#   attnbench                 one GPU: FA3 prefill attention over the paged cache (SGLang's extend)
#                             vs over the batch's contiguous K/V, no cached prefix
#   one30b | one235b          one GPU: ours vs sglang_default (SGLang as users run it), same call
#   onemix                    one GPU: the Table-2-shaped mix, radix caches on, ours vs sglang_default
#   onekv                     one GPU: the same mix with KV events published (as behind moep-router):
#                             per radix node (ours) vs per page (SGLang's), clocks sampled
#   profile | profile235      one GPU: time breakdown of a forward (profile_forward.py)
#   diag                      one GPU: that breakdown under the benchmark's load, host calls, caches
#   barestart                 one GPU: first start from emptied JIT caches + the carried kernel cache
#   gputest                   pytest -m gpu (one GPU: two AsyncEP peers share it); GPUTEST_K: -k
#   multi30b | multi235b | multifp8 | multimix    issue 15, all GPUs of the machine: ours (the
#                             launcher's defaults) vs SGLang's strategies as users run them;
#                             STRATS=a,b per call (the plan below); -> $OUT/<step>.tgz
#   save                      kernel cache -> $OUT (keep in .gpu-stage/kcache/ for the next machine)
#   routercpu                 no GPU used: the router's latency and capacity on this host's CPU cores
#                             (16), moep-router with 1, 2 and 4 processes vs smg, fake workers; on
#                             a bare machine in one call (run so on 2026-12-07, with setproctitle
#                             added by hand: rcpu now has it), carrying .gpu-stage/rcpu and
#                             .cache/models/tiny:
#                             INSTALL=1 bench/gpu/install.sh rcpu && bench/gpu/suite.sh routercpu
# Ours read the fused-MoE configs the plugin ships, and those of `tune` / `tunedown` run on this
# machine (MOEP_MOE_CONFIG_DIR) before them; SGLang's plain servers (sglang_default, tp, ep, ep_dp,
# dwdp: the plugin off) read only SGLang's own, as its users' servers do.
#
# Issue 15's plan for a machine of 4 (or 8) GPUs, one call each, in this order (the issue's
# targets first; each call stays under the 600-s limit, and a call cut short keeps the rows it
# measured: the driver writes its file after every row):
#   stage c1; stage c2; stage c3; stage fa3; install c4 (carrying .gpu-stage/kcache too)
#   STRATS=replicas,peer multi30b          AsyncEP against the replica bound, 4K and 32K
#   STRATS=peer,tp multi235b               the 235B shape (24 layers on 4 GPUs), then
#   STRATS=ep_dp multi235b                 SGLang's other strategy
#   STRATS=sglang_default,ep_dp multi30b   SGLang's strategies on the 30B model, then
#   STRATS=tp multi30b
#   STRATS=peer,tp multifp8                all 94 layers in block FP8, then STRATS=ep multifp8
#   multimix, carrying .gpu-stage/rcpu (smg), in two calls:
#     STRATS=replicas,sglang_default/smg,peer, then STRATS=replicas/smg,ep_dp,tp
#   STRATS=collective,dwdp multi30b        the NCCL backend; whether DWDP runs on Hopper
#   save                                   the kernel cache, for the next machine
set -uo pipefail
cd "$(dirname "$0")/../.."
STEP=${1:?step}
SHA=${SHA:-unknown}
NGPU=$(nvidia-smi -L | wc -l)
# The card's model for file names and labels (h100 / h200): a call may get either kind
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | grep -o 'H[0-9]\+' || echo GPU)
GPUTAG=$(echo "$GPU" | tr '[:upper:]' '[:lower:]')
BENCH="python3 bench/gpu/prefill_bench.py --git-sha $SHA"
TUNED=/tmp/moep-tuned
[ "$STEP" = stage ] || [ "$STEP" = install ] || source bench/gpu/env.sh
[ -d $TUNED/configs ] && export MOEP_MOE_CONFIG_DIR=$TUNED/configs
R=$OUT/$STEP
mkdir -p "$R"
# Servers start in their own sessions, so a call that timed out leaves them running, holding
# GPU memory: end whatever still computes on the GPUs before a benchmark step.
if [ "$STEP" != stage ] && [ "$STEP" != install ]; then
  nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9 2>/dev/null
  sleep 2
fi

caches() {  # every JIT cache on the machine: size, then the newest files with their times
  du -sh "$MOEP_KCACHE"/* ~/.cache/* ~/.triton /tmp/torchinductor_* 2>/dev/null
  find "$MOEP_KCACHE" ~/.cache ~/.triton -type f -printf "%TT %8s %p\n" 2>/dev/null | sort | tail -80
}
gpumon() {  # sample the GPUs' clocks, power and throttle reasons every 250 ms into $R/gpumon.csv
  local q=timestamp,index,clocks.sm,clocks.mem,power.draw,power.limit,temperature.gpu,utilization.gpu
  for reasons in clocks_event_reasons.active clocks_throttle_reasons.active; do  # newer, older name
    nvidia-smi --query-gpu=$q,$reasons --format=csv -c 1 >/dev/null 2>&1 && { q=$q,$reasons; break; }
  done
  nvidia-smi --query-gpu=$q --format=csv,nounits -lms 250 > "$R/gpumon.csv" 2>&1 &
  GPUMON=$!
}
gpumon_summary() {  # stop the sampler; print SM clock / power quantiles over the busy samples
  kill "$GPUMON" 2>/dev/null; wait "$GPUMON" 2>/dev/null
  python3 bench/gpu/gpumon.py "$R/gpumon.csv" | tee "$R/gpumon_summary.txt"
}
pack() { tar czf "$OUT/$STEP.tgz" -C "$OUT" "$STEP" && rm -rf "$R"; }

case "$STEP" in
  stage) bench/gpu/install.sh "${@:2}" ;;
  install)
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
    echo "PYTHONDONTWRITEBYTECODE=${PYTHONDONTWRITEBYTECODE:-unset}"
    INSTALL=1 bench/gpu/install.sh "${@:2}" ;;
  tune)
    python3 -c "from pathlib import Path; from moep_sglang.models.checkpoint import ensure_model as e; e(Path('/tmp/moep-models'), 'qwen3-30b-a3b')"
    # GPU 0: Qwen3-30B-A3B whole experts (replicas, AsyncEP) and TP2's half; GPU 1: the
    # 235B shape's whole experts (AsyncEP) and EP2's 64 local experts of the 30B model.
    CUDA_VISIBLE_DEVICES=0 python3 bench/gpu/tune_moe.py --out "$R" --git-sha "$SHA" \
      --shape 128,768,2048,8 --shape 128,384,2048,8 > "$R/tune_g0.log" 2>&1 &
    CUDA_VISIBLE_DEVICES=$((NGPU - 1)) python3 bench/gpu/tune_moe.py --out "$R" --git-sha "$SHA" \
      --shape 128,1536,4096,8 --shape 64,768,2048,8 > "$R/tune_g1.log" 2>&1 &
    wait
    grep -h "E=\|tuned\|Error\|error" "$R"/tune_g*.log | grep -v "^compile" | tail -40
    mkdir -p $TUNED && cp -r "$R/configs" $TUNED/ && ls $TUNED/configs/*
    pack ;;
  tunedown)  # Qwen3-30B-A3B's experts (E=128, N=768): the second GEMM's tile, TMA on or off, at
             # the batch sizes the launcher's prefill batches run (DOWN_M)
    python3 -c "from pathlib import Path; from moep_sglang.models.checkpoint import ensure_model as e; e(Path('/tmp/moep-models'), 'qwen3-30b-a3b')"
    python3 bench/gpu/tune_moe.py --down --out "$R" --git-sha "$SHA" --shape 128,768,2048,8 \
      --batch-sizes "${DOWN_M:-4096,8192,16384,32768}" > "$R/tune_down.log" 2>&1
    grep -h "E=\|tuned\|Error\|error" "$R/tune_down.log" | grep -v "^compile" | tail -20
    mkdir -p $TUNED && cp -r "$R/configs" $TUNED/ && ls $TUNED/configs/*
    cp -r "$R/configs" "$R"/*.json "$OUT"/; pack ;;
  tunefp8)  # block-FP8 experts: SGLang 0.5.17 ships no H200 file for the 235B shape's N=1536
            # and, for N=768, only a Triton 3.2 one
    python3 bench/gpu/tune_moe.py --fp8-block --out "$R" --git-sha "$SHA" \
      --shape 128,1536,4096,8 --shape 128,768,2048,8 > "$R/tune_fp8.log" 2>&1
    grep -h "E=\|tuned\|Error\|error" "$R/tune_fp8.log" | grep -v "^compile" | tail -20
    mkdir -p $TUNED && cp -r "$R/configs" $TUNED/ && ls $TUNED/configs/*
    cp -r "$R/configs" "$R"/*.json "$OUT"/; pack ;;
  onefp8)  # the 235B shape, 12 layers, 4K prompts: block FP8 (ours, plain SGLang), then bf16
           # (ours); 3 timed repeats each, MFU in bf16-equivalent FLOPs (the cost model's)
    $BENCH --preset qwen3-235b-a22b-fp8 --num-layers 12 --gpus 1 --prompts 48 --prompt-len 4096 \
      --repeats 3 --strategies "${STRATS:-sglang_default,replicas}" --out "$R" \
      --name ${GPUTAG}_235b12l_fp8_one_gpu --label "one $GPU, block FP8, launcher defaults vs SGLang defaults"
    $BENCH --preset qwen3-235b-a22b --num-layers 12 --gpus 1 --prompts 48 --prompt-len 4096 \
      --repeats 3 --strategies "${BF16_STRATS:-replicas}" --out "$R" \
      --name ${GPUTAG}_235b12l_bf16_one_gpu --label "one $GPU, bf16, launcher defaults"
    cp "$R"/*.json "$OUT"/; pack ;;
  multi30b)  # issue 15: Qwen3-30B-A3B at LENS (4K and 32K) on every GPU, 3 timed repeats, 262,144
             # tokens per GPU per length: ours (replicas: the bound; peer, collective: AsyncEP)
             # with the launcher's defaults vs SGLang's strategies as its users run them
             # (sglang_default: one plain server per GPU; tp, ep_dp, dwdp: one plain server over
             # all); STRATS splits the list over calls (the file is named after it)
    LENS=${LENS:-4096,32768}
    S=${STRATS:-replicas,peer,sglang_default,ep_dp,tp}
    gpumon
    $BENCH --preset qwen3-30b-a3b --gpus "$NGPU" --prompts $((262144 * NGPU / ${LENS%%,*})) \
      --prompt-len "$LENS" --repeats "${REPEATS:-3}" --strategies "$S" --out "$R" \
      --name "${GPUTAG}x${NGPU}_30b_$(echo "$S" | tr ',/' '-.')${TAG:-}" \
      --label "$NGPU x $GPU: launcher defaults vs SGLang's strategies at their defaults"
    gpumon_summary
    cp "$R"/*.json "$R"/gpumon_summary.txt "$OUT"/; pack ;;
  multi235b)  # the 235B shape in bf16, LAYERS deep (default: 24 on 4 GPUs, the whole 94 on 8),
              # at LENS, 196,608 tokens per GPU per length; AsyncEP vs SGLang's TP and EP + DP
              # attention (one full replica does not fit a GPU)
    LENS=${LENS:-4096,32768}
    LAYERS=${LAYERS:-$(( NGPU >= 8 ? 94 : 6 * NGPU ))}
    S=${STRATS:-peer,tp,ep_dp}
    gpumon
    $BENCH --preset qwen3-235b-a22b --num-layers "$LAYERS" --gpus "$NGPU" \
      --prompts $((196608 * NGPU / ${LENS%%,*})) --prompt-len "$LENS" --repeats "${REPEATS:-3}" \
      --strategies "$S" --out "$R" \
      --name "${GPUTAG}x${NGPU}_235b${LAYERS}l_$(echo "$S" | tr ',/' '-.')${TAG:-}" \
      --label "$NGPU x $GPU, $LAYERS layers bf16: launcher defaults vs SGLang's strategies at their defaults"
    gpumon_summary
    cp "$R"/*.json "$R"/gpumon_summary.txt "$OUT"/; pack ;;
  multifp8)  # Qwen3-235B-A22B-FP8's shape, all 94 layers in block FP8, at LENS: AsyncEP vs SGLang
             # TP and EP. An AsyncEP worker holds a quarter of the experts (57 GB on 4 GPUs), the
             # dense weights (9 GB) and a ring of 5 FP8 layers (12 GB): on 80 GB cards the
             # default runs AsyncEP with its shards in host memory (`offload`)
    LENS=${LENS:-4096,32768}
    MEM_MIB=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1)
    S=${STRATS:-$([ "$MEM_MIB" -lt 100000 ] && echo peer/offload,tp,ep || echo peer,tp,ep)}
    gpumon
    $BENCH --preset qwen3-235b-a22b-fp8 --gpus "$NGPU" --prompts $((196608 * NGPU / ${LENS%%,*})) \
      --prompt-len "$LENS" --repeats "${REPEATS:-3}" --variant offload=--asyncep-offload \
      --strategies "$S" --out "$R" \
      --name "${GPUTAG}x${NGPU}_235b_fp8_$(echo "$S" | tr ',/' '-.')${TAG:-}" \
      --label "$NGPU x $GPU, 94 layers block FP8: launcher defaults vs SGLang's strategies at their defaults"
    gpumon_summary
    cp "$R"/*.json "$R"/gpumon_summary.txt "$OUT"/; pack ;;
  multimix)  # the Table-2-shaped mix at the paper's lengths (capped at 32K), radix caches on,
             # SCALE (default: the GPU count) times the one-GPU mix's requests, the identical
             # /generate requests to every system, REPEATS runs from emptied caches: ours
             # (replicas, peer) behind moep-router true_flops; plain SGLang servers behind smg
             # cache_aware (what a user runs instead: `sglang_default/smg`); ours behind smg (the
             # router alone: `replicas/smg`); SGLang's one-server strategies directly. smg comes
             # from the carried .gpu-stage/rcpu when the stage lacks it.
    command -v smg >/dev/null || python3 -m pip install -q --no-index --no-deps \
      --target /tmp/moep-site .gpu-stage/rcpu/smg-*.whl
    S=${STRATS:-replicas,sglang_default/smg,peer,replicas/smg,ep_dp,tp}
    gpumon
    $BENCH --preset qwen3-30b-a3b --gpus "$NGPU" --workload table2 --mix-scale "${SCALE:-$NGPU}" \
      --mix-api generate --repeats "${REPEATS:-3}" --variant smg=ROUTER:smg \
      --strategies "$S" --out "$R" \
      --name "${GPUTAG}x${NGPU}_30b_table2_$(echo "$S" | tr ',/' '-.')${TAG:-}" \
      --label "$NGPU x $GPU, the mix, radix caches on: routers in front of replicas vs SGLang's strategies"
    gpumon_summary
    cp "$R"/*.json "$R"/gpumon_summary.txt "$OUT"/; pack ;;
  fa3check) python3 bench/gpu/fa3_check.py ;;
  attnbench)
    python3 bench/gpu/attn_prefill_bench.py --out "$R" --git-sha "$SHA" --name "${GPUTAG}_attn_prefill"
    cp "$R"/*.json "$OUT"/; pack ;;
  moegrouped)
    python3 bench/gpu/moe_grouped_bench.py --out "$R" --git-sha "$SHA" \
      --name "${GPUTAG}_moe_grouped" 2>&1 | grep -v "^{" | tail -20
    cp "$R"/*.json "$OUT"/; pack ;;
  gusbench)
    python3 bench/gpu/gate_up_silu_bench.py --out "$R" --git-sha "$SHA" \
      --name "${GPUTAG}_gate_up_silu" 2>&1 | grep -v "^{" | tail -20
    cp "$R"/*.json "$OUT"/; pack ;;
  one30b)  # Qwen3-30B-A3B at 4K and 32K on one GPU: plain SGLang first, then ours (the launcher's
           # defaults); 3 timed repeats each. Variants for STRATS (replicas/b64k, replicas/graphs):
           # 64K-token prefill batches, prefill CUDA graphs; LOGPROBS=1: every prompt asks for two
           # label tokens' logprobs, as scoring does (`sync`: ours with SGLang's gather of them,
           # which waits for each forward; `stq` / `nostq`: FA3 reads the query strided / copied).
           # 262,144 tokens per length: the first
           # length of LENS gets 262,144 / length prompts (64 at 4K, 8 at 32K), the driver scales
           # the others the same way
    LENS=${LENS:-4096,32768}
    if [[ "${STRATS:-}" == */sync* && -z "${LOGPROBS:-}" ]]; then
      echo "the sync variant differs from ours only for scoring requests: set LOGPROBS=1" >&2; exit 2
    fi
    gpumon
    $BENCH --preset qwen3-30b-a3b --gpus 1 --prompts $((262144 / ${LENS%%,*})) --prompt-len "$LENS" --repeats 3 \
      --variant b64k=--max-prefill-tokens=65536,--chunked-prefill-size=65536 \
      --variant graphs=--cuda-graph-backend-prefill=breakable \
      --variant nodown=ENV:MOEP_TUNED_MOE_DOWN=0 --variant fsum=--enable-fused-moe-sum-all-reduce \
      --variant grp=ENV:MOEP_GROUPED_MOE=1 --variant nocontig=ENV:MOEP_CONTIGUOUS_PREFILL_ATTN=0 \
      --variant gus=ENV:MOEP_FUSED_MOE_ACT=1 --variant nogus=ENV:MOEP_FUSED_MOE_ACT=0 \
      --variant sync=ENV:MOEP_ASYNC_LABEL_LOGPROBS=0 --variant stq=ENV:MOEP_STRIDED_Q_ATTN=1 --variant nostq=ENV:MOEP_STRIDED_Q_ATTN=0 \
      ${LOGPROBS:+--label-logprobs} \
      --strategies "${STRATS:-sglang_default,replicas}" --out "$R" \
      --name "${GPUTAG}_30b_one_gpu${TAG:-}" --label "one $GPU, launcher defaults (fa3) vs SGLang defaults${LOGPROBS:+, label logprobs}"
    gpumon_summary
    cp "$R"/*.json "$R"/gpumon_summary.txt "$OUT"/; pack ;;
  onemix)  # the Table-2-shaped mix at the paper's lengths (capped at 32K), radix caches on, one
           # GPU (no router: one server, no KV events), the identical /generate requests to every
           # server, REPEATS runs each from emptied caches; `sgcfg`: ours on SGLang's MoE configs;
           # `nodd`: without in-batch prefix deduplication; `c8k`: the launcher's defaults before
           # 2026-12-06 (8K chunks; SGLang's memory rule); `c16`: 16K-token batches, prefill graphs
           # captured up to 8K tokens (SGLang's memory rule: on an 80 GB card add
           # --mem-fraction-static, as h100_30b_table2_one_gpu_dd2.json did); `sync`: ours with
           # SGLang's gather of the label logprobs (every request of the mix asks for them)
    gpumon
    $BENCH --preset qwen3-30b-a3b --gpus 1 --workload table2 --mix-scale "${SCALE:-1}" \
      --mix-api generate --repeats "${REPEATS:-3}" --out "$R" \
      --strategies "${STRATS:-sglang_default,replicas,replicas/c8k}" \
      --variant c8k=--chunked-prefill-size=8192,--max-prefill-tokens=16384 \
      --variant sgcfg=ENV:MOEP_TUNED_MOE_CONFIGS=0 \
      --variant nodd=ENV:MOEP_PREFIX_DEDUP=0 --variant nodown=ENV:MOEP_TUNED_MOE_DOWN=0 \
      --variant grp=ENV:MOEP_GROUPED_MOE=1 --variant nocontig=ENV:MOEP_CONTIGUOUS_PREFILL_ATTN=0 \
      --variant gus=ENV:MOEP_FUSED_MOE_ACT=1 --variant nogus=ENV:MOEP_FUSED_MOE_ACT=0 \
      --variant sync=ENV:MOEP_ASYNC_LABEL_LOGPROBS=0 \
      --variant c16=--chunked-prefill-size=16384,--max-prefill-tokens=16384,--cuda-graph-max-bs-prefill=8192 \
      --name "${GPUTAG}_30b_table2_one_gpu${TAG:-}" --label "one $GPU, launcher defaults vs SGLang defaults, radix cache"
    gpumon_summary
    cp "$R"/*.json "$R"/gpumon_summary.txt "$OUT"/; pack ;;
  onekv)  # the mix as a worker behind moep-router runs it: KV events published (nobody subscribes;
          # the worker encodes and sends them all the same); kv: one event per radix node (the
          # plugin's default), kvsg: SGLang's one per page; GPU clocks and power sampled meanwhile
    gpumon
    $BENCH --preset qwen3-30b-a3b --gpus 1 --workload table2 --mix-scale "${SCALE:-1}" \
      --mix-api generate --repeats "${REPEATS:-3}" --out "$R" \
      --strategies "${STRATS:-replicas/kv,replicas/kvsg}" \
      --variant kv=--kv-events-port=29555 \
      --variant kvsg=--kv-events-port=29565,ENV:MOEP_KV_EVENTS_PER_NODE=0 \
      --name "${GPUTAG}_30b_table2_one_gpu_kv${TAG:-}" --label "one $GPU, mix, KV events published: per node vs per page"
    gpumon_summary
    cp "$R"/*.json "$R"/gpumon_summary.txt "$OUT"/; pack ;;
  one235b)  # the 235B shape, 12 layers (what one GPU holds with room for KV), at 4K
    $BENCH --preset qwen3-235b-a22b --num-layers 12 --gpus 1 --prompts 48 --prompt-len 4096 \
      --strategies "${STRATS:-sglang_default,replicas}" --variant grp=ENV:MOEP_GROUPED_MOE=1 \
      --variant gus=ENV:MOEP_FUSED_MOE_ACT=1 --variant nogus=ENV:MOEP_FUSED_MOE_ACT=0 \
      --out "$R" --name ${GPUTAG}_235b12l_one_gpu${TAG:-} --repeats 3 \
      --label "one $GPU, launcher defaults (fa3) vs SGLang defaults"
    cp "$R"/*.json "$OUT"/; pack ;;
  diag)  # ours, 30B: the forward under the benchmark's load (262,144 tokens in flight), each
          # length (LENS) without and with host activity (how far ahead the host launches, what
          # it runs while the GPU waits); LOGPROBS=1: scoring requests (label logprobs); then
          # what the JIT caches hold (which kernels compiled, when) and where
    python3 bench/gpu/profile_forward.py --preset qwen3-30b-a3b --prompt-len "${LENS:-4096,32768}" \
      --steps 6 --in-flight-tokens 262144 --cpu-both ${LOGPROBS:+--label-logprobs} --out "$R" \
      --git-sha "$SHA" --name ${GPUTAG}_profile_30b_load${TAG:-}
    cp "$R"/*.json "$OUT"/
    caches > "$OUT/caches.txt"; tail -5 "$OUT/caches.txt"
    pack ;;
  barestart)  # a bare machine's first start with the carried kernel cache: empty every JIT cache,
              # restore the saved one ($OUT parts of `save`, or .gpu-stage/kcache), time a start
    rm -rf "$MOEP_KCACHE" ~/.cache ~/.triton /tmp/torchinductor_*
    mkdir -p "$MOEP_KCACHE"
    cat "${KC_PARTS:-.gpu-stage/kcache}"/kcache.tgz.part-* | tar xzf - -C "$MOEP_KCACHE"
    $BENCH --preset qwen3-30b-a3b --gpus 1 --prompts 64 --prompt-len 4096 \
      --strategies replicas --out "$R" --name ${GPUTAG}_30b_bare_start \
      --label "bare JIT caches, carried kernel cache restored"
    cp "$R"/*.json "$OUT"/; pack ;;
  profile235)  # the 235B shape, 12 layers, under the benchmark's load (4K prompts)
    python3 bench/gpu/profile_forward.py --preset qwen3-235b-a22b --num-layers 12 \
      --prompt-len 4096 --steps 6 --in-flight-tokens 196608 --out "$R" --git-sha "$SHA" \
      --name ${GPUTAG}_profile_235b12l_load
    cp "$R"/*.json "$OUT"/; pack ;;
  profile)
    python3 bench/gpu/profile_forward.py --preset qwen3-30b-a3b --prompt-len 4096,32768 \
      --out "$R" --git-sha "$SHA" --name ${GPUTAG}_profile_30b
    python3 bench/gpu/profile_forward.py --preset qwen3-235b-a22b --num-layers 12 \
      --prompt-len 4096 --out "$R" --git-sha "$SHA" --name ${GPUTAG}_profile_235b12l
    cp "$R"/*.json "$OUT"/; pack ;;
  gputest)
    python3 -m pytest -m gpu tests/gpu -x -q -s -p no:cacheprovider ${GPUTEST_K:+-k "$GPUTEST_K"} \
      2>&1 | tee "$OUT/gpu_tests.log" ;;
  save) caches > "$OUT/caches.txt"; bench/gpu/kcache.sh save ;;
  routercpu)  # bench/router_latency.py as on the 2-core CPU machine, on a host with cores to spare;
              # ROUTER_CPUS=0-3: the router under test alone on those CPUs (the load elsewhere)
    NAME=router_latency_${GPUTAG}_host${ROUTER_CPUS:+_pinned}
    MOEP_GIT_SHA=$SHA python3 -m bench.router_latency --processes "${PROCS:-1,2,4}" \
      --capacity-clients 6 --fake-processes 4 --latency-runs "${LAT_RUNS:-5}" \
      ${ROUTER_CPUS:+--router-cpus "$ROUTER_CPUS"} --out "$NAME" 2>&1 | tee "$R/log.txt"
    cp "bench/results/$NAME.json" "$OUT/"
    cp .cache/bench/router-latency-*.log "$R"/ 2>/dev/null; pack ;;
  *) echo "unknown step $STEP" >&2; exit 2 ;;
esac
