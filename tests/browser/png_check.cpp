// png_check: is a browser screenshot of the HTML report drawn? Decodes an 8-bit RGB/RGBA PNG
// (zlib inflate plus the five scanline filters of the PNG specification, ISO/IEC 15948) and
// counts the pixels near each chart series colour of reports/src/svg_plot.cpp. Exit 0 when the
// page is not blank and every colour named on the command line covers at least `min_pixels`.
// Usage: png_check FILE.png MIN_PIXELS RRGGBB [RRGGBB...]
#include <zlib.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace {

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "png_check: %s\n", what.c_str());
  std::exit(1);
}

std::uint32_t be32(const unsigned char* p) {
  return static_cast<std::uint32_t>(p[0]) << 24 | static_cast<std::uint32_t>(p[1]) << 16 | static_cast<std::uint32_t>(p[2]) << 8 | p[3];
}

int paeth(int a, int b, int c) {
  const int p = a + b - c, pa = std::abs(p - a), pb = std::abs(p - b), pc = std::abs(p - c);
  if (pa <= pb && pa <= pc) return a;
  return pb <= pc ? b : c;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) fail("usage: png_check FILE.png MIN_PIXELS RRGGBB [RRGGBB...]");
  std::ifstream in(argv[1], std::ios::binary);
  const std::vector<unsigned char> file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  static const unsigned char kSignature[8] = {137, 80, 78, 71, 13, 10, 26, 10};
  if (file.size() < 8 || !std::equal(kSignature, kSignature + 8, file.begin())) fail(std::string(argv[1]) + ": not a PNG file");
  std::uint32_t width = 0, height = 0;
  int channels = 0;
  std::vector<unsigned char> idat;
  for (std::size_t pos = 8; pos + 8 <= file.size();) {
    const std::uint32_t len = be32(&file[pos]);
    const std::string type(reinterpret_cast<const char*>(&file[pos + 4]), 4);
    if (pos + 12 + len > file.size()) fail("truncated chunk " + type);
    const unsigned char* data = &file[pos + 8];
    if (type == "IHDR") {
      width = be32(data);
      height = be32(data + 4);
      if (data[8] != 8 || data[12] != 0) fail("only 8-bit, non-interlaced PNGs are read");
      channels = data[9] == 2 ? 3 : data[9] == 6 ? 4 : 0;
      if (channels == 0) fail("only RGB and RGBA PNGs are read (colour type " + std::to_string(data[9]) + ")");
    } else if (type == "IDAT") {
      idat.insert(idat.end(), data, data + len);
    } else if (type == "IEND") {
      break;
    }
    pos += 12 + len;
  }
  if (width == 0 || height == 0 || idat.empty()) fail("no image data");
  const std::size_t stride = static_cast<std::size_t>(width) * static_cast<std::size_t>(channels);
  std::vector<unsigned char> raw((stride + 1) * height);
  uLongf raw_len = raw.size();
  if (uncompress(raw.data(), &raw_len, idat.data(), idat.size()) != Z_OK || raw_len != raw.size()) fail("image data does not inflate");
  std::vector<unsigned char> img(stride * height), prev(stride, 0);
  for (std::uint32_t y = 0; y < height; ++y) {
    const unsigned char filter = raw[y * (stride + 1)];
    const unsigned char* src = &raw[y * (stride + 1) + 1];
    unsigned char* row = &img[y * stride];
    for (std::size_t i = 0; i < stride; ++i) {
      const int a = i >= static_cast<std::size_t>(channels) ? row[i - channels] : 0;
      const int b = prev[i];
      const int c = i >= static_cast<std::size_t>(channels) ? prev[i - channels] : 0;
      int v = src[i];
      switch (filter) {
        case 0: break;
        case 1: v += a; break;
        case 2: v += b; break;
        case 3: v += (a + b) / 2; break;
        case 4: v += paeth(a, b, c); break;
        default: fail("unknown scanline filter " + std::to_string(filter));
      }
      row[i] = static_cast<unsigned char>(v);
    }
    std::copy(row, row + stride, prev.begin());
  }
  const long min_pixels = std::strtol(argv[2], nullptr, 10);
  long non_white = 0;
  std::vector<long> hits(static_cast<std::size_t>(argc - 3), 0);
  for (std::size_t p = 0; p < img.size(); p += static_cast<std::size_t>(channels)) {
    const int r = img[p], g = img[p + 1], b = img[p + 2];
    if (r < 240 || g < 240 || b < 240) ++non_white;
    for (int k = 3; k < argc; ++k) {
      const long want = std::strtol(argv[k], nullptr, 16);
      const int wr = static_cast<int>(want >> 16 & 255), wg = static_cast<int>(want >> 8 & 255), wb = static_cast<int>(want & 255);
      // Anti-aliased edges blend into the background; count pixels within 24 of the colour.
      if (std::abs(r - wr) <= 24 && std::abs(g - wg) <= 24 && std::abs(b - wb) <= 24) ++hits[static_cast<std::size_t>(k - 3)];
    }
  }
  std::printf("png_check: %ux%u, %ld non-white pixels\n", width, height, non_white);
  bool ok = non_white > 0.01 * static_cast<double>(width) * height;
  if (!ok) std::printf("png_check: the page is blank (under 1 %% of pixels drawn)\n");
  for (int k = 3; k < argc; ++k) {
    std::printf("png_check: colour #%s: %ld pixels\n", argv[k], hits[static_cast<std::size_t>(k - 3)]);
    if (hits[static_cast<std::size_t>(k - 3)] < min_pixels) ok = false;
  }
  return ok ? 0 : 1;
}
