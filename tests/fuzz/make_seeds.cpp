// Writes the fuzzer's seed corpus (tests/fuzz/corpus): small valid models in each storage and
// quantization variant the writer produces. The shipped potentials are seeds too (scripts/fuzz.sh).
#include <cstdio>
#include <string>

#include "qnn/format/model.hpp"
#include "test_plugin_util.hpp"
#include "test_util.hpp"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  // Tiny nets keep the seeds a few kB, so the fuzzer runs fast.
  qnn::Model m = qnn::Model::make_random({"O", "H"}, 6.0, 0.5, {4, 8}, {2, 4}, 2, {6, 6}, true, 5);
  m.energy_bias = {-93.5, -187.0};
  qnn::write_model(m, dir + "/seed-fp32.qnn");
  qnn::Model d = m;
  d.provenance["storage_dtype"] = "f64";
  qnn::write_model(d, dir + "/seed-f64.qnn");
  qnn::Model w = qnn::test::quantize_weight_only(m);
  qnn::write_model(w, dir + "/seed-weight-only.qnn");
  qnn::Model q = w;
  for (auto* fam : {&q.embed, &q.fit})
    for (qnn::Net& net : *fam)
      for (qnn::DenseLayer& L : net.layers) {
        L.quant.act_bits = 8;
        L.quant.act_scale = 0.01f;
        L.quant.weight_zero_point.assign(L.quant.weight_scale.size(), 0);
      }
  q.embed[0].layers.back().quant.out_scale = 0.02f;
  q.default_mode = "int8";
  qnn::write_model(q, dir + "/seed-int8.qnn");
  qnn::Model one = qnn::Model::make_random({"Cu"}, 5.0, 1.0, {8}, {4}, 4, {4}, false, 9);
  qnn::write_model(one, dir + "/seed-one-species.qnn");
  std::printf("wrote 5 seeds to %s\n", dir.c_str());
  return 0;
}
