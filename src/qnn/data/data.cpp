// DeePMD npy system reader (see data.hpp). npy decoding is xtensor's (xt::load_npy); this file
// checks presence, dtype, shapes, frame counts and finiteness, and converts to double.
#include "qnn/data/data.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <zlib.h>

#include <xtensor/xarray.hpp>
#include <xtensor/xnpy.hpp>

#include "qnn/error.hpp"

namespace fs = std::filesystem;

namespace qnn {
namespace {

// A loaded npy array as doubles in row-major order, with its shape.
struct NpyArray {
  std::vector<std::size_t> shape;
  std::vector<double> values;  // (prod(shape))
};

std::string shape_string(const std::vector<std::size_t>& shape) {
  std::string s = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  if (shape.size() == 1) s += ",";
  return s + ")";
}

// Loads one npy file of dtype float64 or float32 via xt::load_npy and checks that it was read
// completely and holds only finite values.
NpyArray load_real_npy(const fs::path& file) {
  if (!fs::exists(file)) throw Error(file.string() + ": file not found (every set.* directory needs box.npy, coord.npy, energy.npy and force.npy)");
  if (!fs::is_regular_file(file)) throw Error(file.string() + ": not a regular file");
  NpyArray out;
  auto take = [&](auto&& arr, std::istream& stream) {
    if (!stream) throw Error(file.string() + ": truncated npy file (fewer data bytes than its header declares)");
    out.shape.assign(arr.shape().begin(), arr.shape().end());
    out.values.assign(arr.begin(), arr.end());
  };
  try {
    std::ifstream stream(file, std::ios::binary);
    if (!stream) throw Error(file.string() + ": cannot open for reading");
    try {
      auto arr = xt::load_npy<double>(stream);
      take(arr, stream);
    } catch (const std::runtime_error& e) {
      if (dynamic_cast<const Error*>(&e) != nullptr) throw;
      if (std::string(e.what()).find("Cast error: formats not matching") == std::string::npos) throw;
      std::ifstream stream32(file, std::ios::binary);
      try {
        auto arr = xt::load_npy<float>(stream32);
        take(arr, stream32);
      } catch (const std::runtime_error& e32) {
        if (dynamic_cast<const Error*>(&e32) != nullptr) throw;
        if (std::string(e32.what()).find("Cast error: formats not matching") == std::string::npos) throw;
        throw Error(file.string() + ": unsupported npy dtype (" + e32.what() +
                    "); expected little-endian float32 (<f4) or float64 (<f8)");
      }
    }
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Error(file.string() + ": not a readable npy file (" + e.what() + ")");
  }
  for (std::size_t k = 0; k < out.values.size(); ++k) {
    if (!std::isfinite(out.values[k])) {
      throw Error(file.string() + ": contains NaN or Inf (first at flat index " + std::to_string(k) + ")");
    }
  }
  return out;
}

// Product of shape[1..]: the per-frame element count.
std::size_t per_frame(const std::vector<std::size_t>& shape) {
  std::size_t n = 1;
  for (std::size_t i = 1; i < shape.size(); ++i) n *= shape[i];
  return n;
}

// Checks `arr` is (nframes, per) up to trailing reshaping: shape[0] == nframes and
// prod(shape[1..]) == per. `want` describes the expected shape for the message.
void check_frames(const NpyArray& arr, const fs::path& file, std::size_t nframes, std::size_t per,
                  const std::string& want) {
  bool ok = arr.shape.size() >= 1 && arr.shape[0] == nframes && per_frame(arr.shape) == per &&
            (arr.shape.size() >= 2 || per == 1);
  if (!ok) {
    throw Error(file.string() + ": shape " + shape_string(arr.shape) + " does not match " + want +
                " (nframes = " + std::to_string(nframes) + ")");
  }
}

// Reads a whitespace-separated text file into tokens; throws when missing.
std::vector<std::string> read_tokens(const fs::path& file) {
  std::ifstream in(file);
  if (!in) throw Error(file.string() + ": file not found or not readable");
  std::vector<std::string> tokens;
  std::string t;
  while (in >> t) tokens.push_back(t);
  return tokens;
}

// Reads type.raw: one integer in [0, ntypes) per atom.
std::vector<int> read_type_indices(const fs::path& file, std::size_t ntypes) {
  if (!fs::exists(file)) throw Error(file.string() + ": file not found (a DeePMD system needs type.raw with one type index per atom)");
  std::vector<int> types;
  for (const std::string& tok : read_tokens(file)) {
    std::size_t used = 0;
    long v = -1;
    try {
      v = std::stol(tok, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != tok.size()) throw Error(file.string() + ": '" + tok + "' is not an integer type index");
    if (v < 0 || v >= static_cast<long>(ntypes)) {
      throw Error(file.string() + ": type index " + tok + " is outside type_map.raw (" + std::to_string(ntypes) + " types)");
    }
    types.push_back(static_cast<int>(v));
  }
  return types;
}

}  // namespace

// ------------------------------------------------------------------------------ System accessors

// The frame's cell (rows a, b, c).
Cell System::cell(int frame) const {
  Cell c{};
  std::copy_n(box.begin() + static_cast<std::ptrdiff_t>(frame) * 9, 9, c.begin());
  return c;
}

// The frame's positions, (natoms, 3).
std::vector<double> System::positions(int frame) const {
  auto n = static_cast<std::ptrdiff_t>(natoms) * 3;
  return {coord.begin() + frame * n, coord.begin() + (frame + 1) * n};
}

// The frame's reference forces, (natoms, 3).
std::vector<double> System::forces(int frame) const {
  auto n = static_cast<std::ptrdiff_t>(natoms) * 3;
  return {force.begin() + frame * n, force.begin() + (frame + 1) * n};
}

// A human-readable frame name for reports.
std::string System::frame_label(int frame) const {
  const auto f = static_cast<std::size_t>(frame);
  return path + "/" + set_names[static_cast<std::size_t>(frame_set[f])] + "#" + std::to_string(frame_in_set[f]);
}

// ------------------------------------------------------------------------------ readers

// type_map.raw: element names.
std::vector<std::string> read_type_map(const std::string& dir) {
  fs::path file = fs::path(dir) / "type_map.raw";
  if (!fs::is_directory(dir)) throw Error(dir + ": not a directory (expected a DeePMD npy system directory)");
  if (!fs::exists(file)) throw Error(file.string() + ": file not found (a DeePMD system needs type_map.raw with one element name per line)");
  auto names = read_tokens(file);
  if (names.empty()) throw Error(file.string() + ": empty type map");
  for (std::size_t i = 0; i < names.size(); ++i) {
    for (std::size_t j = 0; j < i; ++j) {
      if (names[i] == names[j]) throw Error(file.string() + ": element '" + names[i] + "' listed twice");
    }
  }
  return names;
}

// One system directory; see data.hpp.
System read_system(const std::string& dir, const std::vector<std::string>& species) {
  System sys;
  sys.path = dir;
  sys.type_map = read_type_map(dir);
  const std::vector<std::string>& names = species.empty() ? sys.type_map : species;

  // type.raw: one integer type index per atom.
  fs::path type_file = fs::path(dir) / "type.raw";
  sys.types = read_type_indices(type_file, sys.type_map.size());
  sys.natoms = static_cast<int>(sys.types.size());
  if (sys.natoms == 0) throw Error(type_file.string() + ": no atoms");
  for (int t : sys.types) {
    const std::string& name = sys.type_map[static_cast<std::size_t>(t)];
    auto it = std::find(names.begin(), names.end(), name);
    if (it == names.end()) {
      std::string list;
      for (const auto& n : names) list += (list.empty() ? "" : ", ") + n;
      throw Error(type_file.string() + ": element '" + name + "' (from type_map.raw) is not a species of the model [" +
                  list + "]");
    }
    sys.species.push_back(static_cast<int>(it - names.begin()));
  }

  // set.* directories in name order.
  std::vector<fs::path> sets;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (entry.is_directory() && name.rfind("set.", 0) == 0) sets.push_back(entry.path());
  }
  std::sort(sets.begin(), sets.end());
  if (sets.empty()) throw Error(dir + ": no set.* directories (expected set.000/ with box.npy, coord.npy, energy.npy, force.npy)");

  const auto n3 = static_cast<std::size_t>(sys.natoms) * 3;
  for (const fs::path& set : sets) {
    NpyArray coord = load_real_npy(set / "coord.npy");
    if (coord.shape.empty() || coord.shape[0] == 0) throw Error((set / "coord.npy").string() + ": empty set (no frames)");
    const std::size_t nf = coord.shape[0];
    check_frames(coord, set / "coord.npy", nf, n3, "(nframes, 3*natoms) with natoms = " + std::to_string(sys.natoms) + " from type.raw");
    NpyArray box = load_real_npy(set / "box.npy");
    check_frames(box, set / "box.npy", nf, 9, "(nframes, 9) with nframes from coord.npy");
    NpyArray energy = load_real_npy(set / "energy.npy");
    check_frames(energy, set / "energy.npy", nf, 1, "(nframes,) with nframes from coord.npy");
    NpyArray force = load_real_npy(set / "force.npy");
    check_frames(force, set / "force.npy", nf, n3, "(nframes, 3*natoms) like coord.npy");
    for (std::size_t f = 0; f < nf; ++f) {
      const double* b = box.values.data() + 9 * f;
      const double det = b[0] * (b[4] * b[8] - b[5] * b[7]) - b[1] * (b[3] * b[8] - b[5] * b[6]) +
                         b[2] * (b[3] * b[7] - b[4] * b[6]);
      if (!(std::abs(det) > 1e-6)) {
        throw Error((set / "box.npy").string() + ": frame " + std::to_string(f) +
                    " has a degenerate cell (volume " + std::to_string(det) + " Å^3)");
      }
    }
    const int set_index = static_cast<int>(sys.set_names.size());
    sys.set_names.push_back(set.filename().string());
    sys.box.insert(sys.box.end(), box.values.begin(), box.values.end());
    sys.coord.insert(sys.coord.end(), coord.values.begin(), coord.values.end());
    sys.energy.insert(sys.energy.end(), energy.values.begin(), energy.values.end());
    sys.force.insert(sys.force.end(), force.values.begin(), force.values.end());
    for (std::size_t f = 0; f < nf; ++f) {
      sys.frame_set.push_back(set_index);
      sys.frame_in_set.push_back(static_cast<int>(f));
    }
  }
  sys.nframes = static_cast<int>(sys.energy.size());
  return sys;
}

// Several systems with one species list.
std::vector<System> read_systems(const std::vector<std::string>& dirs, const std::vector<std::string>& species) {
  if (dirs.empty()) throw Error("no data systems given");
  std::vector<System> out;
  out.reserve(dirs.size());
  for (const auto& d : dirs) out.push_back(read_system(d, species));
  return out;
}

// Species in order of first use across the systems.
std::vector<std::string> collect_species(const std::vector<std::string>& dirs) {
  std::vector<std::string> names;
  for (const auto& d : dirs) {
    std::vector<std::string> tmap = read_type_map(d);
    std::vector<bool> used(tmap.size(), false);
    for (int t : read_type_indices(fs::path(d) / "type.raw", tmap.size())) used[static_cast<std::size_t>(t)] = true;
    for (std::size_t t = 0; t < tmap.size(); ++t) {
      if (used[t] && std::find(names.begin(), names.end(), tmap[t]) == names.end()) names.push_back(tmap[t]);
    }
  }
  return names;
}

std::string dataset_checksum(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw Error("data checksum: " + dir + " is not a directory");
  std::vector<std::string> files;
  for (auto it = fs::recursive_directory_iterator(dir, fs::directory_options::follow_directory_symlink, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec))
    if (it->is_regular_file(ec)) files.push_back(fs::relative(it->path(), dir, ec).generic_string());
  if (ec) throw Error("data checksum: cannot list " + dir + ": " + ec.message());
  std::sort(files.begin(), files.end());
  uLong crc = crc32(0L, Z_NULL, 0);
  std::vector<char> buf(1 << 16);
  for (const std::string& f : files) {
    crc = crc32(crc, reinterpret_cast<const Bytef*>(f.c_str()), static_cast<uInt>(f.size() + 1));
    std::ifstream in(fs::path(dir) / f, std::ios::binary);
    if (!in) throw Error("data checksum: cannot read " + (fs::path(dir) / f).string());
    while (in) {
      in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
      const std::streamsize n = in.gcount();
      if (n > 0) crc = crc32(crc, reinterpret_cast<const Bytef*>(buf.data()), static_cast<uInt>(n));
    }
    if (in.bad()) throw Error("data checksum: cannot read " + (fs::path(dir) / f).string());
  }
  char hex[16];
  std::snprintf(hex, sizeof hex, "%08lx", static_cast<unsigned long>(crc & 0xffffffffUL));
  return std::string("crc32:") + hex;
}

}  // namespace qnn
