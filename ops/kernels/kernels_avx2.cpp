// The AVX2 kernel table: the SIMD kernels (simd_table.h) compiled with AVX2 + FMA.
#define SPNAS_SIMD_AVX2
#include "ops/kernels/simd_table.h"

namespace spnas {

const KernelTable* avx2_kernel_table() {
  static const KernelTable table = simd_kernel_table();
  return &table;
}

}  // namespace spnas
