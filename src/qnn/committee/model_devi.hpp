// Model deviation of a committee of models, as DeePMD-kit defines it (docs/lammps.md, "Committee
// models and model deviation"): the per-atom force deviation, the virial deviation, the energy
// deviation, their max/min/avg, and the two file formats DeePMD-kit writes (LAMMPS
// `pair_style deepmd ... out_file`, and `dp model-devi`). The LAMMPS plugin and `qnn
// model-devi` both use these, so that each definition exists once.
//
// Definitions (DeePMD-kit 3.2.0: deepmd/infer/model_devi.py, and DeepPotModelDevi with
// source/lmp/pair_deepmd.cpp), for K models, forces F_i^k, virials W^k:
//   ε_F,i   = sqrt( (1/K) Σ_k |F_i^k − <F_i>|² ),  <·> = (1/K) Σ_k      (population std)
//   relative level r:  ε_F,i / (|<F_i>| + r)
//   ε_W,ab  = std_k( W^k_ab / N ),  N = number of atoms of the system
//   relative level r_v: ε_W,ab / (|<W_ab>/N| + r_v)  (LAMMPS, per component) or
//                       ε_W,ab / (‖<W>/N‖ + r_v)       (dp model-devi, the 9-component norm)
//   max/min/avg over the atoms (forces) or the 9 components (virial); the virial's avg is
//   sqrt( Σ_ab ε_W,ab² / 9 )
//   ε_E     = std_k( E^k / N )                         (dp model-devi's devi_e only)
#pragma once
#include <array>
#include <cstddef>
#include <optional>
#include <string>
#include <vector>

namespace qnn {
struct Model;
}

namespace qnn::devi {

// Empty when `m` (from `file`) may join a committee whose first model is `first` (from
// `first_file`), else a sentence naming both files and the difference: the models must have
// the same species in the same order (one species index per atom serves them all) and the
// same cutoff (one neighbour graph serves them all).
std::string committee_mismatch(const Model& first, const std::string& first_file, const Model& m,
                               const std::string& file);

// max, min and mean of a list of deviations (all zero for an empty list).
struct Summary {
  double max = 0.0;
  double min = 0.0;
  double avg = 0.0;
};

// ε_F,i of `natoms` atoms: forces[k] points at model k's (natoms, 3) forces. With `relative`,
// the relative deviation of that level. Writes (natoms) values to `out`. Throws qnn::Error for
// fewer than two models.
void force_deviation(const std::vector<const double*>& forces, std::size_t natoms,
                     std::optional<double> relative, double* out);

// ε_F,i of one atom from the K force vectors at forces[k] (3 values each); the kernel of
// force_deviation, for callers whose atoms are not contiguous.
double atom_force_deviation(const std::vector<const double*>& forces, std::optional<double> relative);

// max, min, and Σ/n of n values, summed in index order.
Summary summarize(const double* values, std::size_t n);

// How the relative virial deviation is normalised: LAMMPS's pair_style deepmd divides each
// component by its own mean (DeepPotModelDevi::compute_relative_std with stride 1), `dp
// model-devi` by the norm of the mean tensor (calc_model_devi_v).
enum class VirialRelative { PerComponent, TensorNorm };

// The virial deviation of K models: virials[k] are model k's 9 components (row-major) divided
// by the number of atoms. Throws qnn::Error for fewer than two models.
Summary virial_deviation(const std::vector<std::array<double, 9>>& virials, std::optional<double> relative_v,
                         VirialRelative how);

// ε_E: the population standard deviation of the models' energies per atom.
double energy_deviation(const std::vector<double>& energy_per_atom);

// A symmetric virial (xx yy zz xy xz yz, qnn::EvalResult::virial) as 9 row-major components
// (xx xy xz yx yy yz zx zy zz), each divided by `natoms`.
std::array<double, 9> virial9(const std::array<double, 6>& v, double natoms);

// LAMMPS `pair_style deepmd` file (out_file): the header line, and one line per output step:
// step, max/min/avg virial deviation, max/min/avg force deviation, then with `atomic` the
// per-atom force deviations in atom-ID order. Each line ends in '\n'.
std::string lammps_header(bool atomic);
std::string lammps_row(long long step, const Summary& v, const Summary& f, const double* atomic, std::size_t natoms);

// `dp model-devi` file: per system, the two '#' header lines (the system's path, then the
// column names), and one line per frame: step (frame index × frequency), the virial and force
// summaries, ε_E, then with `atomic` the per-atom force deviations.
std::string dp_header(const std::string& system, bool atomic);
std::string dp_row(long long step, const Summary& v, const Summary& f, double devi_e, const double* atomic,
                   std::size_t natoms);

}  // namespace qnn::devi
