// The avx512 kernel table: ops/kernels/simd_impl.h compiled with this file's ISA flags (see CMakeLists.txt).
#define SPNAS_SIMD_AVX512
#include "ops/kernels/simd_impl.h"
#include "ops/kernels/gemm_simd.h"

namespace spnas {

const KernelTable* avx512_kernel_table() {
  static const KernelTable t = {"avx512",
                                dwconv_forward_simd,
                                dwconv_backward_data_simd,
                                dwconv_backward_weights_simd,
                                bn_stats_simd,
                                bn_act_forward_simd,
                                bn_act_backward_reduce_simd,
                                bn_act_backward_data_simd,
                                dwconv_bn_act_forward_simd,
                                gemm_nn_simd,
                                gemm_tn_simd};
  return &t;
}

}  // namespace spnas
