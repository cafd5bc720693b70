# Source on the GPU machine, in the repo root, after bench/gpu/install.sh: the staged packages
# (this checkout first, so the code under test is the working tree), the machines' rule against
# NVLink multicast, and one folder for every JIT kernel cache (Triton, FlashInfer, tvm-ffi) that
# bench/gpu/kcache.sh saves and restores across machines.
export PYTHONPATH="$PWD:/tmp/moep-site" PYTHONUNBUFFERED=1
export PATH="/tmp/moep-site/bin:$PATH"  # the staged console scripts (smg)
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export MOEP_KCACHE=/tmp/moep-kcache
export TRITON_CACHE_DIR=$MOEP_KCACHE/triton FLASHINFER_WORKSPACE_BASE=$MOEP_KCACHE \
  TVM_FFI_CACHE_DIR=$MOEP_KCACHE/tvm-ffi
mkdir -p "$MOEP_KCACHE"
