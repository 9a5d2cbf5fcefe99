// LAMMPS text dump reader (see lammps_dump.hpp).
#include "qnn/data/lammps_dump.hpp"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <numeric>
#include <sstream>

#include "qnn/error.hpp"

namespace qnn {
namespace {

// One "ITEM: ..." block after another; a line reader that names the file and line in errors.
class Lines {
 public:
  explicit Lines(const std::string& path) : path_(path), in_(path) {
    if (!in_) throw Error(path + ": cannot open the dump file for reading");
  }
  bool next(std::string& line) {
    if (!std::getline(in_, line)) return false;
    ++number_;
    return true;
  }
  std::string need(const std::string& what) {
    std::string line;
    if (!next(line)) throw Error(where() + ": the file ends inside a frame (expected " + what + ")");
    return line;
  }
  std::string where() const { return path_ + ":" + std::to_string(number_); }

 private:
  std::string path_;
  std::ifstream in_;
  long long number_ = 0;
};

std::vector<std::string> words(const std::string& line) {
  std::istringstream in(line);
  std::vector<std::string> w;
  std::string s;
  while (in >> s) w.push_back(s);
  return w;
}

double number(const std::string& s, const Lines& lines) {
  std::size_t used = 0;
  double v = 0;
  try {
    v = std::stod(s, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != s.size() || !std::isfinite(v)) throw Error(lines.where() + ": '" + s + "' is not a finite number");
  return v;
}

}  // namespace

DumpFrames read_lammps_dump(const std::string& path, const std::vector<std::string>& type_elements,
                            const std::vector<std::string>& species) {
  DumpFrames out;
  System& sys = out.system;
  sys.path = path;
  sys.type_map = type_elements;
  sys.set_names = {"dump"};
  Lines lines(path);
  std::string line;
  std::vector<long long> ids0;
  std::vector<int> types0;
  while (lines.next(line)) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    if (line.rfind("ITEM: TIMESTEP", 0) != 0)
      throw Error(lines.where() + ": expected 'ITEM: TIMESTEP' (a LAMMPS text dump: dump ... custom N file id type x y z)");
    const long long step = static_cast<long long>(number(words(lines.need("the timestep")).at(0), lines));
    const std::string tag = "frame of timestep " + std::to_string(step);
    if (lines.need("ITEM: NUMBER OF ATOMS").rfind("ITEM: NUMBER OF ATOMS", 0) != 0)
      throw Error(lines.where() + ": expected 'ITEM: NUMBER OF ATOMS'");
    const double nd = number(words(lines.need("the number of atoms")).at(0), lines);
    if (nd < 1 || nd > 1e9 || nd != std::floor(nd)) throw Error(lines.where() + ": bad number of atoms");
    const int n = static_cast<int>(nd);
    const std::vector<std::string> bounds = words(lines.need("ITEM: BOX BOUNDS"));
    if (bounds.size() < 3 || bounds[1] != "BOX" || bounds[2] != "BOUNDS")
      throw Error(lines.where() + ": expected 'ITEM: BOX BOUNDS'");
    const bool triclinic = bounds.size() >= 6 && bounds[3] == "xy";
    for (std::size_t k = triclinic ? 6 : 3; k < bounds.size(); ++k)
      if (bounds[k] != "pp")
        throw Error(lines.where() + ": " + tag + " has boundary '" + bounds[k] +
                    "'; qnn model-devi evaluates periodic frames only (boundary p p p)");
    double lo[3], hi[3], tilt[3] = {0, 0, 0};
    for (int d = 0; d < 3; ++d) {
      const std::vector<std::string> w = words(lines.need("a box bounds line"));
      if (w.size() < (triclinic ? 3u : 2u)) throw Error(lines.where() + ": a box bounds line needs " +
                                                      std::string(triclinic ? "3" : "2") + " numbers");
      lo[d] = number(w[0], lines);
      hi[d] = number(w[1], lines);
      if (triclinic) tilt[d] = number(w[2], lines);
    }
    const double xy = tilt[0], xz = tilt[1], yz = tilt[2];
    if (triclinic) {  // the bounding box of the dump back to the cell (LAMMPS Howto triclinic)
      lo[0] -= std::min({0.0, xy, xz, xy + xz});
      hi[0] -= std::max({0.0, xy, xz, xy + xz});
      lo[1] -= std::min(0.0, yz);
      hi[1] -= std::max(0.0, yz);
    }
    const std::vector<std::string> cols = words(lines.need("ITEM: ATOMS"));
    if (cols.size() < 3 || cols[1] != "ATOMS") throw Error(lines.where() + ": expected 'ITEM: ATOMS id type x y z'");
    auto column = [&](std::initializer_list<const char*> names) {
      for (const char* name : names)
        for (std::size_t c = 2; c < cols.size(); ++c)
          if (cols[c] == name) return static_cast<int>(c - 2);
      return -1;
    };
    const int cid = column({"id"}), ctype = column({"type"});
    int cx = column({"xu"}), cy = column({"yu"}), cz = column({"zu"});
    if (cx < 0 || cy < 0 || cz < 0) {
      cx = column({"x"});
      cy = column({"y"});
      cz = column({"z"});
    }
    if (cid < 0 || ctype < 0 || cx < 0 || cy < 0 || cz < 0)
    {
      std::string have;
      for (std::size_t c = 2; c < cols.size(); ++c) have += " " + cols[c];
      throw Error(lines.where() + ": the dump needs the columns id, type and x y z (or xu yu zu); it has:" + have);
    }
    struct Atom {
      long long id;
      int type;
      double x[3];
    };
    std::vector<Atom> atoms(static_cast<std::size_t>(n));
    for (Atom& a : atoms) {
      const std::vector<std::string> w = words(lines.need("an atom line"));
      if (w.size() != cols.size() - 2)
        throw Error(lines.where() + ": an atom line with " + std::to_string(w.size()) + " values for " +
                    std::to_string(cols.size() - 2) + " columns");
      a.id = static_cast<long long>(number(w[static_cast<std::size_t>(cid)], lines));
      a.type = static_cast<int>(number(w[static_cast<std::size_t>(ctype)], lines));
      const int c[3] = {cx, cy, cz};
      for (int d = 0; d < 3; ++d) a.x[d] = number(w[static_cast<std::size_t>(c[d])], lines) - lo[d];
    }
    std::sort(atoms.begin(), atoms.end(), [](const Atom& a, const Atom& b) { return a.id < b.id; });
    std::vector<long long> ids(atoms.size());
    std::vector<int> types(atoms.size());
    for (std::size_t i = 0; i < atoms.size(); ++i) {
      ids[i] = atoms[i].id;
      types[i] = atoms[i].type;
    }
    if (sys.nframes == 0) {
      ids0 = ids;
      types0 = types;
      sys.natoms = n;
      for (int t : types) {
        if (t < 1 || t > static_cast<int>(type_elements.size()))
          throw Error(path + ": " + tag + " has atom type " + std::to_string(t) + " but --type-map names " +
                      std::to_string(type_elements.size()) + " type(s); give one element per LAMMPS type");
        const std::string& el = type_elements[static_cast<std::size_t>(t - 1)];
        const auto it = std::find(species.begin(), species.end(), el);
        if (it == species.end()) throw Error(path + ": element " + el + " (atom type " + std::to_string(t) +
                                             ") is not a species of the model");
        sys.types.push_back(t - 1);
        sys.species.push_back(static_cast<int>(it - species.begin()));
      }
    } else if (ids != ids0 || types != types0) {
      throw Error(path + ": " + tag + " has other atoms (ids or types) than the first frame; every frame must "
                  "have the same atoms");
    }
    const double cell[9] = {hi[0] - lo[0], 0, 0, xy, hi[1] - lo[1], 0, xz, yz, hi[2] - lo[2]};
    sys.box.insert(sys.box.end(), cell, cell + 9);
    for (const Atom& a : atoms) sys.coord.insert(sys.coord.end(), a.x, a.x + 3);
    sys.frame_set.push_back(0);
    sys.frame_in_set.push_back(sys.nframes);
    out.steps.push_back(step);
    ++sys.nframes;
  }
  if (sys.nframes == 0) throw Error(path + ": no frame in the dump file");
  return out;
}

}  // namespace qnn
