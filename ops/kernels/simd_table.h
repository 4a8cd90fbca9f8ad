// The SIMD kernel table, written once and compiled per ISA: kernels_avx2.cpp and kernels_avx512.cpp
// each define SPNAS_SIMD_AVX2 or SPNAS_SIMD_AVX512 and include this file (CMakeLists.txt compiles
// files named *_avx2.cpp / *_avx512.cpp with that ISA's flags).
#pragma once
#include "ops/kernels/batchnorm_simd.h"
#include "ops/kernels/dw_correlation.h"
#include "ops/kernels/dw_weight_grad.h"
#include "ops/kernels/gemm_simd.h"

namespace spnas {
namespace {

// The table of this ISA's kernels (the reference table has the same entries, ops/kernels/dispatch.cpp).
KernelTable simd_kernel_table() {
  return {isa_name(V::isa),         dwconv_forward_simd,         dwconv_backward_data_simd,
          dwconv_backward_weights_simd, bn_stats_simd,           bn_act_forward_simd,
          bn_act_backward_reduce_simd,  bn_act_backward_data_simd, dwconv_bn_act_forward_simd,
          gemm_nn_simd,                 gemm_tn_simd};
}

}  // namespace
}  // namespace spnas
