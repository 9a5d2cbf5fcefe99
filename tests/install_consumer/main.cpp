// Reads a .qnn model through the installed headers and library (find_package(qnn)) and prints
// what it holds; tests/install_test.sh runs it on potentials/water-se2a.fp32.qnn.
#include <qnn/error.hpp>
#include <qnn/format/model.hpp>

#include <cstdio>
#include <exception>
#include <string>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s MODEL.qnn\n", argv[0]);
    return 2;
  }
  try {
    const qnn::Model model = qnn::read_model(argv[1]);
    std::string species;
    for (const auto& s : model.species) species += (species.empty() ? "" : " ") + s;
    std::printf("species: %s\n", species.c_str());
    std::printf("nspecies: %d, rcut: %.2f A\n", model.nspecies(), model.rcut);
    return model.nspecies() > 0 ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "qnn_consumer: %s\n", e.what());
    return 1;
  }
}
