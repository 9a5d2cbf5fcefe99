// `qnn repulsion MODEL.qnn --pairs O-O --inner 1.6 --outer 2.2 -o OUT.qnn`: gives a model the
// short-range ZBL repulsion of docs/model.md ("Short-range repulsion"), or removes it
// (--none). The network is untouched, so a repulsion switched off below the data's closest
// pairs changes no energy or force the model was trained or validated on.
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "commands.hpp"
#include "qnn/error.hpp"
#include "qnn/format/model.hpp"

namespace qnn::cli {
namespace {

// Atomic numbers of the element symbols up to xenon.
int atomic_number(const std::string& symbol) {
  static const char* const kSymbols[] = {
      "H",  "He", "Li", "Be", "B",  "C",  "N",  "O",  "F",  "Ne", "Na", "Mg", "Al", "Si",
      "P",  "S",  "Cl", "Ar", "K",  "Ca", "Sc", "Ti", "V",  "Cr", "Mn", "Fe", "Co", "Ni",
      "Cu", "Zn", "Ga", "Ge", "As", "Se", "Br", "Kr", "Rb", "Sr", "Y",  "Zr", "Nb", "Mo",
      "Tc", "Ru", "Rh", "Pd", "Ag", "Cd", "In", "Sn", "Sb", "Te", "I",  "Xe"};
  for (int k = 0; k < static_cast<int>(sizeof kSymbols / sizeof kSymbols[0]); ++k)
    if (symbol == kSymbols[k]) return k + 1;
  return 0;
}

struct RepulsionArgs {
  std::string model, out;
  std::vector<std::string> pairs, z;
  double inner = 0, outer = 0;
  bool none = false;
};

void run(const RepulsionArgs& a) {
  check_output_path(a.out, "-o " + a.out);
  Model m = read_model(a.model);
  if (a.none) {
    m.repulsion = Repulsion{};
  } else {
    if (a.pairs.empty()) throw Error("give --pairs A-B ... (e.g. --pairs O-O), or --none to remove the repulsion");
    Repulsion r;
    r.z.assign(static_cast<std::size_t>(m.nspecies()), 0.0);
    for (int s = 0; s < m.nspecies(); ++s) r.z[static_cast<std::size_t>(s)] = atomic_number(m.species[static_cast<std::size_t>(s)]);
    for (const std::string& kv : a.z) {  // --z NAME=Z overrides
      const auto eq = kv.find('=');
      if (eq == std::string::npos) throw Error("--z " + kv + ": expected SPECIES=Z, e.g. --z Ow=8");
      const int s = m.species_index(kv.substr(0, eq));
      if (s < 0) throw Error("--z " + kv + ": the model has no species '" + kv.substr(0, eq) + "'");
      try {
        r.z[static_cast<std::size_t>(s)] = std::stod(kv.substr(eq + 1));
      } catch (const std::exception&) {
        throw Error("--z " + kv + ": '" + kv.substr(eq + 1) + "' is not a number");
      }
    }
    for (const std::string& p : a.pairs) {
      const auto dash = p.find('-');
      if (dash == std::string::npos) throw Error("--pairs " + p + ": expected A-B, e.g. O-O");
      const int x = m.species_index(p.substr(0, dash)), y = m.species_index(p.substr(dash + 1));
      if (x < 0 || y < 0) throw Error("--pairs " + p + ": the model's species are not both there");
      r.pairs.push_back({x, y});
    }
    for (const auto& p : r.pairs)
      for (int s : {p[0], p[1]})
        if (r.z[static_cast<std::size_t>(s)] == 0.0)
          throw Error("species '" + m.species[static_cast<std::size_t>(s)] + "' is not an element symbol; give its atomic number with --z " +
                      m.species[static_cast<std::size_t>(s)] + "=Z");
    for (double& z : r.z)
      if (z == 0.0) z = 1.0;  // species the repulsion does not act on: any valid number
    r.r_inner = a.inner;
    r.r_outer = a.outer;
    m.repulsion = r;
  }
  m.validate(a.model + " with the repulsion");
  write_model(m, a.out);
  const std::string summary = describe(m);
  std::printf("%s", summary.substr(0, summary.find("embedding net")).c_str());
  std::printf("wrote %s\n", a.out.c_str());
}

}  // namespace

void register_repulsion(CLI::App& app) {
  auto a = std::make_shared<RepulsionArgs>();
  CLI::App* sub = app.add_subcommand(
      "repulsion", "Give a model a short-range ZBL repulsion on chosen species pairs (as pair_style zbl), or remove it");
  sub->add_option("model", a->model, "model file (.qnn)")->required()->check(CLI::ExistingFile);
  sub->add_option("--pairs", a->pairs, "species pairs, e.g. O-O");
  sub->add_option("--inner", a->inner, "Å: below this the repulsion is pure ZBL (plus a constant)");
  sub->add_option("--outer", a->outer, "Å: the repulsion and its first two derivatives vanish here");
  sub->add_option("--z", a->z, "atomic numbers of species whose names are not element symbols, e.g. Ow=8");
  sub->add_flag("--none", a->none, "remove the repulsion");
  sub->add_option("-o,--output", a->out, "output .qnn file")->required();
  sub->callback([a] { run(*a); });
}

}  // namespace qnn::cli
