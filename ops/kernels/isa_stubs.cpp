// Until the AVX2 / AVX-512 kernel files exist these return nullptr and dispatch uses the reference.
#include "ops/kernels.h"
namespace spnas {
const KernelTable* avx2_kernel_table() { return nullptr; }
const KernelTable* avx512_kernel_table() { return nullptr; }
}  // namespace spnas
