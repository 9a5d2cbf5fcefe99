// Model deviation of a committee (see model_devi.hpp for the definitions and their sources).
#include "qnn/committee/model_devi.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "qnn/error.hpp"
#include "qnn/format/model.hpp"

namespace qnn::devi {
namespace {

void require_committee(std::size_t k, const char* what) {
  if (k < 2)
    throw Error(std::string(what) + ": a model deviation needs at least two models, got " + std::to_string(k));
}

// printf into a std::string (the formats here are short and fixed).
template <class... Args>
std::string format(const char* fmt, Args... args) {
  char buf[64];
  const int n = std::snprintf(buf, sizeof buf, fmt, args...);
  return std::string(buf, static_cast<std::size_t>(std::max(0, std::min<int>(n, sizeof buf - 1))));
}

// `width`-wide left-aligned field (Python's "{:19s}").
std::string left(const std::string& s, std::size_t width) {
  return s.size() >= width ? s : s + std::string(width - s.size(), ' ');
}

// `width`-wide right-aligned field (C++'s std::setw).
std::string right(const std::string& s, std::size_t width) {
  return s.size() >= width ? s : std::string(width - s.size(), ' ') + s;
}

// " O H"
std::string species_list(const Model& m) {
  std::string s;
  for (const auto& sp : m.species) s += " " + sp;
  return s;
}

// "%g" of a cutoff
std::string cutoff_text(double r) { return format("%.10g", r); }

}  // namespace

std::string committee_mismatch(const Model& first, const std::string& first_file, const Model& m,
                               const std::string& file) {
  if (m.species != first.species) {
    std::vector<std::string> a = first.species, b = m.species;
    std::sort(a.begin(), a.end());
    std::sort(b.begin(), b.end());
    if (a == b)
      return file + " lists its species in another order (" + species_list(m).substr(1) + ") than " + first_file +
             " (" + species_list(first).substr(1) + "); the models of a committee must have the same type map";
    return file + " has species" + species_list(m) + " but " + first_file + " has species" + species_list(first) +
           "; the models of a committee must have the same species";
  }
  if (m.rcut != first.rcut)
    return file + " has cutoff " + cutoff_text(m.rcut) + " A but " + first_file + " has cutoff " +
           cutoff_text(first.rcut) + " A; the models of a committee must have the same cutoff";
  return "";
}

double atom_force_deviation(const std::vector<const double*>& forces, std::optional<double> relative) {
  const std::size_t k = forces.size();
  require_committee(k, "force deviation");
  double avg[3] = {0.0, 0.0, 0.0};
  for (const double* f : forces)
    for (int d = 0; d < 3; ++d) avg[d] += f[d];
  for (double& a : avg) a /= static_cast<double>(k);
  double s = 0.0;
  for (const double* f : forces)
    for (int d = 0; d < 3; ++d) s += (f[d] - avg[d]) * (f[d] - avg[d]);
  double eps = std::sqrt(s / static_cast<double>(k));
  if (relative) eps /= std::sqrt(avg[0] * avg[0] + avg[1] * avg[1] + avg[2] * avg[2]) + *relative;
  return eps;
}

void force_deviation(const std::vector<const double*>& forces, std::size_t natoms, std::optional<double> relative,
                     double* out) {
  require_committee(forces.size(), "force deviation");
  std::vector<const double*> atom(forces.size());
  for (std::size_t i = 0; i < natoms; ++i) {
    for (std::size_t k = 0; k < forces.size(); ++k) atom[k] = forces[k] + 3 * i;
    out[i] = atom_force_deviation(atom, relative);
  }
}

Summary summarize(const double* values, std::size_t n) {
  Summary s;
  if (n == 0) return s;
  s.max = s.min = values[0];
  double sum = 0.0;
  for (std::size_t i = 0; i < n; ++i) {
    s.max = std::max(s.max, values[i]);
    s.min = std::min(s.min, values[i]);
    sum += values[i];
  }
  s.avg = sum / static_cast<double>(n);
  return s;
}

Summary virial_deviation(const std::vector<std::array<double, 9>>& virials, std::optional<double> relative_v,
                         VirialRelative how) {
  const std::size_t k = virials.size();
  require_committee(k, "virial deviation");
  std::array<double, 9> avg{}, eps{};
  for (const auto& v : virials)
    for (int c = 0; c < 9; ++c) avg[c] += v[c];
  for (double& a : avg) a /= static_cast<double>(k);
  for (int c = 0; c < 9; ++c) {
    double s = 0.0;
    for (const auto& v : virials) s += (v[c] - avg[c]) * (v[c] - avg[c]);
    eps[c] = std::sqrt(s / static_cast<double>(k));
  }
  if (relative_v) {
    double norm = 0.0;
    for (double a : avg) norm += a * a;
    norm = std::sqrt(norm);
    for (int c = 0; c < 9; ++c)
      eps[c] /= (how == VirialRelative::PerComponent ? std::abs(avg[c]) : norm) + *relative_v;
  }
  Summary s;
  s.max = *std::max_element(eps.begin(), eps.end());
  s.min = *std::min_element(eps.begin(), eps.end());
  double sq = 0.0;
  for (double e : eps) sq += e * e;
  s.avg = std::sqrt(sq / 9.0);
  return s;
}

double energy_deviation(const std::vector<double>& energy_per_atom) {
  const std::size_t k = energy_per_atom.size();
  require_committee(k, "energy deviation");
  double avg = 0.0;
  for (double e : energy_per_atom) avg += e;
  avg /= static_cast<double>(k);
  double s = 0.0;
  for (double e : energy_per_atom) s += (e - avg) * (e - avg);
  return std::sqrt(s / static_cast<double>(k));
}

std::array<double, 9> virial9(const std::array<double, 6>& v, double natoms) {
  // qnn: xx yy zz xy xz yz
  return {v[0] / natoms, v[3] / natoms, v[4] / natoms, v[3] / natoms, v[1] / natoms,
          v[5] / natoms, v[4] / natoms, v[5] / natoms, v[2] / natoms};
}

// pair_style deepmd: "#" << setw(11) << "step", then setw(19) per column name; values are
// setw(12) step and " " << setw(18) in std::scientific (6 digits).
std::string lammps_header(bool atomic) {
  std::string h = "#" + right("step", 11);
  for (const char* c : {"max_devi_v", "min_devi_v", "avg_devi_v", "max_devi_f", "min_devi_f", "avg_devi_f"})
    h += right(c, 19);
  if (atomic) h += right("atm_devi_f(N)", 19);
  return h + "\n";
}

std::string lammps_row(long long step, const Summary& v, const Summary& f, const double* atomic, std::size_t natoms) {
  std::string r = format("%12lld", step);
  for (double x : {v.max, v.min, v.avg, f.max, f.min, f.avg}) r += format(" %18.6e", x);
  if (atomic)
    for (std::size_t i = 0; i < natoms; ++i) r += format(" %18.6e", atomic[i]);
  return r + "\n";
}

// dp model-devi (write_model_devi_out): numpy.savetxt with header "{system}\n{'step':10s}" +
// "{:19s}" per column, comments "# ", and fmt "%12d" then "%19.6e" with no delimiter.
std::string dp_header(const std::string& system, bool atomic) {
  std::string h = "# " + system + "\n# " + left("step", 10);
  for (const char* c : {"max_devi_v", "min_devi_v", "avg_devi_v", "max_devi_f", "min_devi_f", "avg_devi_f",
                        "devi_e"})
    h += left(c, 19);
  if (atomic) h += left("atm_devi_f(N)", 19);
  return h + "\n";
}

std::string dp_row(long long step, const Summary& v, const Summary& f, double devi_e, const double* atomic,
                   std::size_t natoms) {
  std::string r = format("%12lld", step);
  for (double x : {v.max, v.min, v.avg, f.max, f.min, f.avg, devi_e}) r += format("%19.6e", x);
  if (atomic)
    for (std::size_t i = 0; i < natoms; ++i) r += format("%19.6e", atomic[i]);
  return r + "\n";
}

}  // namespace qnn::devi
