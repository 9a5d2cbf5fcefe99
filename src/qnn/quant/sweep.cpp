// See sweep.hpp.
#include "qnn/quant/sweep.hpp"

#include <cstdio>
#include <fstream>
#include <utility>

#include "qnn/error.hpp"
#include "qnn/quant/common.hpp"
#include "qnn/quant/plan.hpp"

namespace qnn {

std::vector<SweepRow> run_sweep(const Model& fp32, const Calibration& cal, const QuantOptions& opt,
                                const FrameSet& val, const Prediction& ref, const std::vector<int>& bits,
                                const std::function<void(const SweepRow&)>& progress) {
  std::vector<SweepRow> rows;
  auto emit = [&](SweepRow r) {
    if (progress) progress(r);
    rows.push_back(std::move(r));
  };
  {
    std::string engine;
    SweepRow r;
    r.variant = "fp32";
    r.bits = 32;
    r.mode = "fp32";
    r.err = compare(predict_default(fp32, val, &engine), ref, val);
    r.bytes = parameter_bytes(fp32, uniform_plan(fp32, {0, 0}));
    emit(r);
  }
  for (const char* variant : {"weights", "activations", "both"}) {
    for (int b : bits) {
      qmax_of(b);
      const std::string v = variant;
      const LayerBits lb = v == "weights" ? LayerBits{b, 0} : v == "activations" ? LayerBits{16, b} : LayerBits{b, b};
      const QuantPlan plan = uniform_plan(fp32, lb);
      const Model q = apply_plan(fp32, plan, cal, opt);
      SweepRow r;
      r.variant = v;
      r.bits = b;
      r.mode = q.default_mode;
      r.err = compare(predict_default(q, val), ref, val);
      r.bytes = parameter_bytes(fp32, plan);
      emit(r);
    }
  }
  return rows;
}

void write_sweep_csv(const std::vector<SweepRow>& rows, const std::string& path) {
  std::ofstream f(path);
  if (!f) throw Error(path + ": cannot write the sweep CSV");
  f << "variant,bits,mode,energy_rmse_dft_meV_atom,force_rmse_dft_meV_A,energy_rmse_fp32_meV_atom,"
       "force_rmse_fp32_meV_A,parameter_bytes\n";
  char buf[512];
  for (const SweepRow& r : rows) {
    std::snprintf(buf, sizeof buf, "%s,%d,%s,%.6g,%.6g,%.6g,%.6g,%zu\n", r.variant.c_str(), r.bits, r.mode.c_str(),
                  r.err.e_dft, r.err.f_dft, r.err.e_ref, r.err.f_ref, r.bytes);
    f << buf;
  }
  if (!f) throw Error(path + ": error writing the sweep CSV");
}

}  // namespace qnn
