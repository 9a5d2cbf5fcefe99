/* -*- c++ -*- ----------------------------------------------------------
   pair_style qnn: quantized neural-network potentials (qnn core library).
   Thin glue: LAMMPS neighbour list -> qnn::NeighborGraph -> qnn engine -> LAMMPS arrays; with
   several model files, a committee whose model deviation it writes (pair_style deepmd's out_file).
   See docs/lammps.md.
------------------------------------------------------------------------- */
#ifdef PAIR_CLASS
// clang-format off
PairStyle(qnn,PairQNN);
// clang-format on
#else

#ifndef LMP_PAIR_QNN_H
#define LMP_PAIR_QNN_H

#include "pair.h"

#include <cstdio>
#include <optional>
#include <string>
#include <vector>

namespace LAMMPS_NS {

class PairQNN : public Pair {
 public:
  PairQNN(class LAMMPS *);
  ~PairQNN() override;

  void compute(int, int) override;
  void settings(int, char **) override;
  void coeff(int, char **) override;
  void init_style() override;
  double init_one(int, int) override;
  int pack_reverse_comm(int, int, double *) override;
  void unpack_reverse_comm(int, int *, double *) override;
  double memory_usage() override;
  // "qnn/state": the QNNImpl (qnn_common.h) of the last compute(), for compute qnn/deviation;
  // nullptr before pair_style qnn has read a model.
  void *extract(const char *, int &) override;

 protected:
  struct QNNImpl *impl;            // core model, engine and graph buffers (no qnn headers here)
  std::string model_path;
  std::vector<int> type2species;   // (ntypes + 1) model species of each LAMMPS type, -1 for NULL
  std::vector<std::string> type_elements;  // (ntypes + 1) element names of the last pair_coeff
  double cutoff;
  int nthreads;
  int reverse_vatom;               // reverse communication carries vatom too (newton off)

  // Committee model deviation (pair_style deepmd's out_freq, out_file, atomic, relative,
  // relative_v), written on rank 0 every out_freq steps when there are two or more models.
  int out_freq;
  std::string out_file;
  int out_atomic;
  std::optional<double> out_relative, out_relative_v;
  std::FILE *out_fp;               // rank 0: opened at the first output step, kept across runs
  int reverse_devi;                // reverse communication carries devi_force (the committee's forces)
  std::vector<double> devi_force;  // (nall, 3K) each model's force on each atom, ghosts folded home
  std::vector<double> devi_atom;   // (nlocal) per-atom force deviation

  void allocate();
  void remap_species();
  void close_out_file();
  void write_model_devi();
};

}    // namespace LAMMPS_NS

#endif
#endif
