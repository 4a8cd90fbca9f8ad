// Internal helpers of the data pipeline (not part of the public API).
#pragma once
#include <cstdint>
#include <string>

namespace spnas {
namespace dataimpl {

// Bilinear resample of the source rectangle (y0, x0, rh, rw) - in pixels, possibly fractional - of
// an HWC uint8 image onto a dh x dw HWC uint8 image (pixel centres aligned, edges clamped).
void resize_bilinear_u8(const uint8_t* src, int sh, int sw, int c, float y0, float x0, float rh, float rw,
                        uint8_t* dst, int dh, int dw);

// "data: NAME: message"
[[noreturn]] void data_error(const std::string& name, const std::string& message);
void data_warning(const std::string& message);

}  // namespace dataimpl
}  // namespace spnas
