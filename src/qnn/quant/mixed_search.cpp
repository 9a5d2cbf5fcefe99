// See mixed_search.hpp.
#include "qnn/quant/mixed_search.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <numeric>
#include <sstream>

#include "qnn/error.hpp"

namespace qnn {

namespace {

LayerBits level_bits(int level_bits_value) { return {level_bits_value, level_bits_value}; }

}  // namespace

SearchResult search_mixed(const Model& fp32, const Calibration& cal, const QuantOptions& opt, const FrameSet& val,
                          const Prediction& ref, const SearchOptions& so,
                          const std::function<void(const std::string&)>& log) {
  auto say = [&](const std::string& s) {
    if (log) log(s);
  };
  SearchResult R;
  R.layers = list_layers(fp32);
  const std::size_t NL = R.layers.size();
  if (so.allow_fp32) R.levels.push_back(0);
  {
    std::vector<int> b = so.bits;
    for (int x : b) qmax_of(x);
    std::sort(b.begin(), b.end(), std::greater<int>());
    b.erase(std::unique(b.begin(), b.end()), b.end());
    if (b.empty()) throw Error("the search needs at least one candidate bit width");
    R.levels.insert(R.levels.end(), b.begin(), b.end());
  }
  if (!(so.max_force_ratio >= 1.0) && so.max_force_dev <= 0)
    throw Error("the search needs a budget: a force-RMSE ratio >= 1 or a maximum deviation from FP32");
  const std::size_t NV = R.levels.size();
  R.macs = layer_macs(fp32, val);
  R.fp32 = compare(ref, ref, val);
  const std::size_t fp32_bytes = parameter_bytes(fp32, uniform_plan(fp32, {0, 0}));

  // Budget on the deviation from FP32 implied by the ratio: if the quantization error is
  // uncorrelated with the model's own error, RMSE_q^2 = RMSE_fp32^2 + dev^2.
  double dev_budget = std::numeric_limits<double>::infinity();
  if (so.max_force_ratio >= 1.0) dev_budget = std::sqrt(so.max_force_ratio * so.max_force_ratio - 1.0) * R.fp32.f_dft;
  if (so.max_force_dev > 0) dev_budget = std::min(dev_budget, so.max_force_dev);
  {
    char buf[256];
    std::snprintf(buf, sizeof buf, "FP32: force RMSE vs DFT %.3f meV/A; deviation budget %.3f meV/A", R.fp32.f_dft,
                  dev_budget);
    say(buf);
  }

  // 1. Sensitivities: one layer at a time.
  R.sensitivity.assign(NL, std::vector<Errors>(NV));
  for (std::size_t i = 0; i < NL; ++i) {
    std::string line = "sensitivity " + R.layers[i].name + ":";
    for (std::size_t v = 0; v < NV; ++v) {
      if (R.levels[v] == 0) {
        R.sensitivity[i][v] = R.fp32;  // the layer stays float: no deviation
        continue;
      }
      QuantPlan p = uniform_plan(fp32, {0, 0});
      p.layers[i] = level_bits(R.levels[v]);
      const Model q = apply_plan(fp32, p, cal, opt);
      R.sensitivity[i][v] = compare(predict_default(q, val), ref, val);
      char buf[64];
      std::snprintf(buf, sizeof buf, " %d-bit %.3f", R.levels[v], R.sensitivity[i][v].f_ref);
      line += buf;
    }
    say(line + " meV/A");
  }

  auto plan_of = [&](const std::vector<std::size_t>& lv) {
    QuantPlan p;
    for (std::size_t i = 0; i < NL; ++i) p.layers.push_back(level_bits(R.levels[lv[i]]));
    return p;
  };
  auto objective = [&](const QuantPlan& p) {
    return so.objective_size ? static_cast<double>(parameter_bytes(fp32, p)) : estimated_cost(fp32, p, R.macs);
  };
  auto dev2 = [&](std::size_t i, std::size_t v) {
    const double d = R.sensitivity[i][v].f_ref;
    return d * d;
  };

  // 2. Greedy path from the most precise plan: lower the layer whose move buys the most
  // objective per unit of predicted squared deviation, until every layer is at the bottom.
  std::vector<std::size_t> cur(NL, 0);
  struct PathPoint {
    std::vector<std::size_t> lv;
    double pred;
  };
  std::vector<PathPoint> path;
  auto pred_of = [&](const std::vector<std::size_t>& lv) {
    double s = 0;
    for (std::size_t i = 0; i < NL; ++i) s += dev2(i, lv[i]);
    return std::sqrt(s);
  };
  path.push_back({cur, pred_of(cur)});
  for (;;) {
    const double obj_cur = objective(plan_of(cur));
    double best = -1;
    std::size_t bi = NL, bv = 0;
    for (std::size_t i = 0; i < NL; ++i) {
      for (std::size_t v = cur[i] + 1; v < NV; ++v) {
        std::vector<std::size_t> nx = cur;
        nx[i] = v;
        const double gain = obj_cur - objective(plan_of(nx));
        if (gain <= 0) continue;
        const double dd = std::max(dev2(i, v) - dev2(i, cur[i]), 1e-12);
        const double score = gain / dd;
        if (score > best) best = score, bi = i, bv = v;
      }
    }
    if (bi == NL) break;
    cur[bi] = bv;
    path.push_back({cur, pred_of(cur)});
  }

  // 3. Measure: the uniform plans for reference, and the path points from a fifth of the
  // budget to twice it (predicted), the first one predicted beyond that, thinned to at most
  // 16 (the last point predicted within the budget and its successor always kept).
  auto add = [&](const std::string& label, const QuantPlan& p, double pred) {
    for (const PlanResult& t : R.tried)
      if (plan_summary(fp32, t.plan) == plan_summary(fp32, p)) return;
    PlanResult r;
    r.label = label;
    r.plan = p;
    r.bytes = parameter_bytes(fp32, p);
    r.cost = estimated_cost(fp32, p, R.macs);
    r.predicted_dev = pred;
    const Model q = apply_plan(fp32, p, cal, opt);
    r.err = compare(predict_default(q, val), ref, val);
    r.within_budget = (so.max_force_ratio < 1.0 || r.err.f_dft <= so.max_force_ratio * R.fp32.f_dft) &&
                      (so.max_force_dev <= 0 || r.err.f_ref <= so.max_force_dev) &&
                      (so.max_size_ratio <= 0 || static_cast<double>(r.bytes) <= so.max_size_ratio * static_cast<double>(fp32_bytes));
    char buf[256];
    std::snprintf(buf, sizeof buf, "plan %-10s size %8zu B  cost %.3f  F vs FP32 %.3f (predicted %.3f)  F vs DFT %.3f meV/A%s",
                  label.c_str(), r.bytes, r.cost, r.err.f_ref, pred, r.err.f_dft, r.within_budget ? "  within budget" : "");
    say(std::string(buf) + "  " + plan_summary(fp32, p));
    R.tried.push_back(std::move(r));
  };
  for (int b : R.levels) {
    if (b == 0) continue;
    std::vector<std::size_t> lv(NL, static_cast<std::size_t>(std::find(R.levels.begin(), R.levels.end(), b) - R.levels.begin()));
    add("all-" + std::to_string(b), plan_of(lv), pred_of(lv));
  }
  std::vector<std::size_t> measure;
  std::size_t last_in = 0;
  for (std::size_t k = 1; k < path.size(); ++k) {
    if (path[k].pred <= dev_budget) last_in = k;
    if (path[k].pred < 0.2 * dev_budget) continue;
    measure.push_back(k);
    if (path[k].pred > 2 * dev_budget) break;
  }
  const std::size_t cap = 16;
  if (measure.size() > cap) {
    std::vector<std::size_t> thinned;
    for (std::size_t k = 0; k < cap; ++k) thinned.push_back(measure[k * (measure.size() - 1) / (cap - 1)]);
    measure = thinned;
  }
  if (last_in > 0) measure.push_back(last_in);
  if (last_in + 1 < path.size()) measure.push_back(last_in + 1);
  if (path.size() > 1 && path.back().pred <= dev_budget) measure.push_back(path.size() - 1);
  std::sort(measure.begin(), measure.end());
  measure.erase(std::unique(measure.begin(), measure.end()), measure.end());
  for (std::size_t k : measure) add("greedy-" + std::to_string(k), plan_of(path[k].lv), path[k].pred);

  // 4. Choose and mark the Pareto front (objective vs force deviation from FP32).
  double best_obj = std::numeric_limits<double>::infinity();
  for (std::size_t t = 0; t < R.tried.size(); ++t) {
    const PlanResult& r = R.tried[t];
    if (!r.within_budget) continue;
    const double o = objective(r.plan);
    if (o < best_obj || (o == best_obj && R.chosen >= 0 && r.err.f_ref < R.tried[static_cast<std::size_t>(R.chosen)].err.f_ref))
      best_obj = o, R.chosen = static_cast<int>(t);
  }
  for (PlanResult& r : R.tried) {
    r.pareto = true;
    for (const PlanResult& o : R.tried) {
      const double a = objective(o.plan), b = objective(r.plan);
      if (&o != &r && a <= b && o.err.f_ref <= r.err.f_ref && (a < b || o.err.f_ref < r.err.f_ref)) {
        r.pareto = false;
        break;
      }
    }
  }
  return R;
}

std::string pareto_markdown(const Model& m, const SearchResult& r) {
  const std::size_t fp32_bytes = parameter_bytes(m, uniform_plan(m, {0, 0}));
  std::ostringstream o;
  char buf[512];
  std::snprintf(buf, sizeof buf, "FP32 reference: force RMSE vs DFT %.3f meV/Å, energy RMSE vs DFT %.3f meV/atom, %zu parameter bytes.\n\n",
                r.fp32.f_dft, r.fp32.e_dft, fp32_bytes);
  o << buf;
  o << "| plan | parameter bytes | size vs FP32 | est. cost | F RMSE vs FP32 (meV/Å) | predicted | F RMSE vs DFT (meV/Å) | vs FP32's | E RMSE vs FP32 (meV/atom) | E RMSE vs DFT (meV/atom) | budget | Pareto | bits per layer |\n";
  o << "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  std::vector<std::size_t> order(r.tried.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return r.tried[a].cost > r.tried[b].cost; });
  for (std::size_t k : order) {
    const PlanResult& t = r.tried[k];
    std::snprintf(buf, sizeof buf, "| %s%s | %zu | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f× | %.4f | %.3f | %s | %s | `%s` |\n",
                  t.label.c_str(), static_cast<int>(k) == r.chosen ? " (chosen)" : "", t.bytes,
                  static_cast<double>(t.bytes) / static_cast<double>(fp32_bytes), t.cost, t.err.f_ref, t.predicted_dev,
                  t.err.f_dft, t.err.f_dft / r.fp32.f_dft, t.err.e_ref, t.err.e_dft, t.within_budget ? "yes" : "no",
                  t.pareto ? "yes" : "", plan_summary(m, t.plan).c_str());
    o << buf;
  }
  // Per-layer sensitivities: force RMSE vs FP32 with only that layer quantized.
  o << "\nPer-layer sensitivity: force RMSE vs FP32 (meV/Å) when only that layer is quantized "
       "(weights and activations at the bits shown), measured; layer MACs per frame.\n\n| layer | MACs/frame |";
  for (int b : r.levels)
    if (b) o << " " << b << "-bit |";
  o << "\n|---|---|";
  for (int b : r.levels)
    if (b) o << "---|";
  o << "\n";
  for (std::size_t i = 0; i < r.layers.size(); ++i) {
    std::snprintf(buf, sizeof buf, "| %s | %.3g |", r.layers[i].name.c_str(), i < r.macs.size() ? r.macs[i] : 0.0);
    o << buf;
    for (std::size_t v = 0; v < r.levels.size(); ++v) {
      if (!r.levels[v]) continue;
      std::snprintf(buf, sizeof buf, " %.3f |", r.sensitivity[i][v].f_ref);
      o << buf;
    }
    o << "\n";
  }
  return o.str();
}

}  // namespace qnn
