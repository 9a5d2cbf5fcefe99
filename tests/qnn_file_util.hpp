// Taking a .qnn file apart and putting it back together (docs/format.md, "Layout"), with the
// layout and CRC-32 computed as qnn::write_model computes them: the hostile-input tests and the
// fuzzer's structure-aware mutator craft files that get past the checksum this way, so that the
// reader itself must find what is wrong.
#pragma once
#include <zlib.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace qnn::test {

// The parts of a .qnn file.
struct QnnFile {
  std::uint32_t version = 1;
  std::uint32_t flags = 0;
  std::string header;       // the JSON text, as stored
  std::vector<char> blob;   // the data section
};

// Splits `bytes` (a file whose preamble and header length are sane); false if it is not one.
inline bool split_qnn(const std::vector<char>& bytes, QnnFile& out) {
  if (bytes.size() < 28 || std::memcmp(bytes.data(), "QNNMODEL", 8) != 0) return false;
  std::uint64_t hlen = 0;
  std::memcpy(&out.version, bytes.data() + 8, 4);
  std::memcpy(&out.flags, bytes.data() + 12, 4);
  std::memcpy(&hlen, bytes.data() + 16, 8);
  if (hlen > bytes.size() - 28) return false;
  out.header.assign(bytes.data() + 24, static_cast<std::size_t>(hlen));
  const std::uint64_t start = (24 + hlen + 63) / 64 * 64;
  if (start > bytes.size() - 4) return false;
  out.blob.assign(bytes.begin() + static_cast<std::ptrdiff_t>(start), bytes.end() - 4);
  return true;
}

// CRC-32 (zlib polynomial) of `n` bytes, as the writer computes it.
inline std::uint32_t qnn_crc32(const char* p, std::size_t n) {
  uLong crc = crc32(0L, Z_NULL, 0);
  while (n > 0) {
    const auto chunk = static_cast<uInt>(n < (1u << 30) ? n : (1u << 30));
    crc = crc32(crc, reinterpret_cast<const Bytef*>(p), chunk);
    p += chunk;
    n -= chunk;
  }
  return static_cast<std::uint32_t>(crc);
}

// The file: preamble, header, zero padding to 64, data section, CRC-32 of all that.
inline std::vector<char> assemble_qnn(const QnnFile& f) {
  const std::size_t blob_start = (24 + f.header.size() + 63) / 64 * 64;
  std::vector<char> out(blob_start + f.blob.size() + 4, 0);
  const std::uint64_t hlen = f.header.size();
  std::memcpy(out.data(), "QNNMODEL", 8);
  std::memcpy(out.data() + 8, &f.version, 4);
  std::memcpy(out.data() + 12, &f.flags, 4);
  std::memcpy(out.data() + 16, &hlen, 8);
  if (!f.header.empty()) std::memcpy(out.data() + 24, f.header.data(), f.header.size());
  if (!f.blob.empty()) std::memcpy(out.data() + blob_start, f.blob.data(), f.blob.size());
  const std::uint32_t crc = qnn_crc32(out.data(), out.size() - 4);
  std::memcpy(out.data() + out.size() - 4, &crc, 4);
  return out;
}

// The header as JSON (a valid file's), and back as the writer formats it.
inline nlohmann::json header_json(const QnnFile& f) { return nlohmann::json::parse(f.header); }
inline void set_header(QnnFile& f, const nlohmann::json& h) { f.header = h.dump(1); }

// The index of tensor `name` in the header's "tensors" list (-1 if absent).
inline int tensor_index(const nlohmann::json& h, const std::string& name) {
  for (std::size_t i = 0; i < h.at("tensors").size(); ++i) {
    if (h["tensors"][i].at("name") == name) return static_cast<int>(i);
  }
  return -1;
}

// The index of layer `name` in the header's "layers" list (-1 if absent).
inline int layer_index(const nlohmann::json& h, const std::string& name) {
  for (std::size_t i = 0; i < h.at("layers").size(); ++i) {
    if (h["layers"][i].at("name") == name) return static_cast<int>(i);
  }
  return -1;
}

}  // namespace qnn::test
