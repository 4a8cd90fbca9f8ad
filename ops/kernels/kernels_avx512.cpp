// The AVX-512 kernel table: the SIMD kernels (simd_table.h) compiled with AVX-512 (F, BW, VL, DQ).
#define SPNAS_SIMD_AVX512
#include "ops/kernels/simd_table.h"

namespace spnas {

const KernelTable* avx512_kernel_table() {
  static const KernelTable table = simd_kernel_table();
  return &table;
}

}  // namespace spnas
