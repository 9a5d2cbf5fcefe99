# Sourced by the peer scripts (compare.sh, dp_test_refit.sh, train_speed.sh,
# scripts/train_deepmd_peer.sh): DeePMD-kit, TensorFlow and OpenMP on one thread, CPU only.
export OMP_NUM_THREADS=1 TF_INTRA_OP_PARALLELISM_THREADS=1 TF_INTER_OP_PARALLELISM_THREADS=1 \
  DP_INTRA_OP_PARALLELISM_THREADS=1 DP_INTER_OP_PARALLELISM_THREADS=1 TF_CPP_MIN_LOG_LEVEL=2 \
  CUDA_VISIBLE_DEVICES=""
