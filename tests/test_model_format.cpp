// The .qnn file format: round trips and every malformed-file case (docs/format.md).
#include <gtest/gtest.h>

#include <zlib.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>

#include "qnn/error.hpp"
#include "qnn/format/model.hpp"
#include "test_util.hpp"

using qnn::Model;
using qnn::test::TempPath;

namespace {

void expect_same_weights(const Model& a, const Model& b) {
  ASSERT_EQ(a.nspecies(), b.nspecies());
  ASSERT_EQ(a.type_one_side, b.type_one_side);
  ASSERT_EQ(a.embed.size(), b.embed.size());
  for (int s = 0; s < a.n_embed_nets(); ++s) {
    for (int which = 0; which < 2; ++which) {
      if (which && s >= a.nspecies()) continue;
      const auto& na = which ? a.fit[s] : a.embed[s];
      const auto& nb = which ? b.fit[s] : b.embed[s];
      ASSERT_EQ(na.layers.size(), nb.layers.size());
      for (std::size_t l = 0; l < na.layers.size(); ++l) {
        EXPECT_EQ(na.layers[l].weight, nb.layers[l].weight);
        EXPECT_EQ(na.layers[l].bias, nb.layers[l].bias);
        EXPECT_EQ(na.layers[l].dt, nb.layers[l].dt);
        EXPECT_EQ(na.layers[l].residual, nb.layers[l].residual);
        EXPECT_EQ(na.layers[l].activation, nb.layers[l].activation);
      }
    }
  }
  EXPECT_EQ(a.energy_bias, b.energy_bias);
  EXPECT_EQ(a.mean_s, b.mean_s);
  EXPECT_EQ(a.std_s, b.std_s);
  EXPECT_EQ(a.std_r, b.std_r);
}

// Expects read_model to throw a qnn::Error whose text contains the file name and `needle`.
void expect_rejected(const std::string& path, const std::string& needle) {
  try {
    (void)qnn::read_model(path);
    ADD_FAILURE() << "read_model accepted a bad file; expected an error containing '" << needle << "'";
  } catch (const qnn::Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_NE(msg.find(needle), std::string::npos) << "message: " << msg;
  }
}

// Rewrites the header JSON of a valid file through `edit`, recomputing the layout and checksum
// by writing the edited model anew is not possible for malformed headers, so we patch bytes.
std::vector<char> patch_header(const std::vector<char>& file, const std::string& from, const std::string& to);

}  // namespace

TEST(ModelFormat, RoundTripDoubleIsExact) {
  Model m = qnn::test::small_water_model();
  m.provenance["storage_dtype"] = "f64";
  TempPath p(".qnn");
  qnn::write_model(m, p.str());
  Model r = qnn::read_model(p.str());
  expect_same_weights(m, r);
  EXPECT_EQ(r.species, m.species);
  EXPECT_EQ(r.sel, m.sel);
  EXPECT_DOUBLE_EQ(r.rcut, m.rcut);
  EXPECT_DOUBLE_EQ(r.rcut_smth, m.rcut_smth);
  EXPECT_EQ(r.embed_widths, m.embed_widths);
  EXPECT_EQ(r.fit_widths, m.fit_widths);
  EXPECT_EQ(r.axis_neuron, m.axis_neuron);
  EXPECT_EQ(r.provenance.at("seed"), m.provenance.at("seed"));
  EXPECT_TRUE(r.provenance.contains("code_version"));
  EXPECT_EQ(r.parameter_count(), m.parameter_count());
}

TEST(ModelFormat, EnvMatRoundTripsAndDefaultsToQnn) {
  Model m = qnn::test::small_water_model();
  TempPath p(".qnn");
  qnn::write_model(m, p.str());
  EXPECT_EQ(qnn::read_model(p.str()).env_mat, "qnn");  // the key is absent: the default
  m.env_mat = "deepmd";
  qnn::write_model(m, p.str());
  EXPECT_EQ(qnn::read_model(p.str()).env_mat, "deepmd");
  m.env_mat = "other";
  EXPECT_THROW(qnn::write_model(m, p.str()), qnn::Error);
}

// Pair embedding nets (type_one_side false): S*S nets, layers "embed.<c>.<a>.<l>", the key
// written only when false; a one-side file has no such key and reads as one side.
TEST(ModelFormat, PairEmbeddingNetsRoundTrip) {
  Model m = qnn::test::small_pair_model(3);
  ASSERT_EQ(m.embed.size(), 4u);
  m.provenance["storage_dtype"] = "f64";
  TempPath p(".qnn");
  qnn::write_model(m, p.str());
  const Model r = qnn::read_model(p.str());
  EXPECT_FALSE(r.type_one_side);
  expect_same_weights(m, r);
  EXPECT_EQ(&r.embed_net(1, 0), &r.embed[2]);
  std::ifstream f(p.str(), std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  EXPECT_NE(bytes.find("\"embed.1.0.1\""), std::string::npos) << "layer embed.<centre>.<neighbour>.<layer>";
  EXPECT_NE(bytes.find("\"type_one_side\""), std::string::npos);
  EXPECT_NE(qnn::describe(r).find("embed.H.O.0"), std::string::npos) << qnn::describe(r);
  // one side: no key, S nets
  const Model o = qnn::test::small_water_model();
  qnn::write_model(o, p.str());
  std::ifstream g(p.str(), std::ios::binary);
  const std::string obytes((std::istreambuf_iterator<char>(g)), std::istreambuf_iterator<char>());
  EXPECT_EQ(obytes.find("type_one_side"), std::string::npos);
  EXPECT_TRUE(qnn::read_model(p.str()).type_one_side);
  // a pair model with one net missing is refused
  Model bad = m;
  bad.embed.pop_back();
  EXPECT_THROW(bad.validate("bad"), qnn::Error);
}

TEST(ModelFormat, RoundTripFloatRoundsToFloat) {
  Model m = qnn::test::small_water_model();
  TempPath p(".qnn");
  qnn::write_model(m, p.str());
  Model r = qnn::read_model(p.str());
  const auto& w0 = m.fit[1].layers[0].weight;
  const auto& w1 = r.fit[1].layers[0].weight;
  ASSERT_EQ(w0.size(), w1.size());
  for (std::size_t k = 0; k < w0.size(); ++k) EXPECT_EQ(w1[k], static_cast<double>(static_cast<float>(w0[k])));
  EXPECT_EQ(r.energy_bias, m.energy_bias);  // statistics are always stored in f64
}

TEST(ModelFormat, PerChannelQuantMetadataRoundTripsExactly) {
  Model m = qnn::test::small_water_model();
  auto& L = m.fit[0].layers[1];
  L.quant.weight_bits = 8;
  L.quant.act_bits = 8;
  L.quant.act_scale = 0.0123f;
  L.quant.weight_scale.resize(static_cast<std::size_t>(L.out));
  for (int c = 0; c < L.out; ++c) L.quant.weight_scale[static_cast<std::size_t>(c)] = 0.001f * static_cast<float>(c + 1);
  // Weights that are exact integer multiples of their channel's scale.
  for (std::size_t k = 0; k < L.weight.size(); ++k) {
    const int q = static_cast<int>(k % 255) - 127;
    L.weight[k] = q * static_cast<double>(L.quant.weight_scale[k % static_cast<std::size_t>(L.out)]);
  }
  TempPath p(".qnn");
  qnn::write_model(m, p.str());
  Model r = qnn::read_model(p.str());
  const auto& R = r.fit[0].layers[1];
  EXPECT_EQ(R.quant.weight_bits, 8);
  EXPECT_EQ(R.quant.act_bits, 8);
  EXPECT_EQ(R.quant.label(), "int8");  // the file's "mode" key is derived from the bits
  EXPECT_EQ(R.quant.act_scale, 0.0123f);
  EXPECT_EQ(R.quant.weight_scale, L.quant.weight_scale);
  EXPECT_EQ(R.weight, L.weight);
  EXPECT_FALSE(r.fit[0].layers[0].quant.quantized());
}

TEST(ModelFormat, Int8FileIsUnderAThirdOfFloat) {
  // Big enough that tensor data, not the header, dominates (about 100k parameters).
  Model m = Model::make_random({"O", "H"}, 6.0, 0.5, {46, 92}, {16, 32}, 8, {128, 128}, true, 3);
  TempPath pf(".qnn"), pq(".qnn");
  qnn::write_model(m, pf.str());
  for (auto* nets : {&m.embed, &m.fit}) {
    for (auto& net : *nets) {
      for (auto& L : net.layers) {
        L.quant.weight_bits = 8;
        L.quant.weight_scale.assign(static_cast<std::size_t>(L.out), 0.01f);
        for (auto& w : L.weight) w = std::nearbyint(std::max(-127.0, std::min(127.0, w / 0.01))) * static_cast<double>(0.01f);
      }
    }
  }
  qnn::write_model(m, pq.str());
  const auto sf = qnn::test::read_bytes(pf.str()).size(), sq = qnn::test::read_bytes(pq.str()).size();
  EXPECT_LT(static_cast<double>(sq), 0.3 * static_cast<double>(sf)) << sq << " vs " << sf;
}

TEST(ModelFormat, RejectsMissingFile) { expect_rejected("/nonexistent/dir/model.qnn", "cannot open"); }

TEST(ModelFormat, RejectsBadMagic) {
  TempPath p(".qnn");
  qnn::test::write_bytes(p.str(), std::vector<char>(100, 'x'));
  expect_rejected(p.str(), "bad magic");
}

TEST(ModelFormat, RejectsTruncated) {
  Model m = qnn::test::small_water_model();
  TempPath good(".qnn"), bad(".qnn");
  qnn::write_model(m, good.str());
  auto bytes = qnn::test::read_bytes(good.str());
  for (std::size_t keep : {std::size_t(10), std::size_t(30), bytes.size() / 2, bytes.size() - 1}) {
    qnn::test::write_bytes(bad.str(), std::vector<char>(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(keep)));
    expect_rejected(bad.str(), "truncated");
  }
}

TEST(ModelFormat, RejectsCorruptByte) {
  Model m = qnn::test::small_water_model();
  TempPath good(".qnn"), bad(".qnn");
  qnn::write_model(m, good.str());
  auto bytes = qnn::test::read_bytes(good.str());
  bytes[bytes.size() - 100] ^= 0x5a;  // inside the tensor data
  qnn::test::write_bytes(bad.str(), bytes);
  expect_rejected(bad.str(), "checksum mismatch");
}

TEST(ModelFormat, RejectsUnknownVersion) {
  Model m = qnn::test::small_water_model();
  TempPath good(".qnn"), bad(".qnn");
  qnn::write_model(m, good.str());
  auto bytes = qnn::test::read_bytes(good.str());
  const std::uint32_t v = 99;
  std::memcpy(bytes.data() + 8, &v, 4);
  qnn::test::write_bytes(bad.str(), bytes);
  expect_rejected(bad.str(), "unsupported format version 99");
}

TEST(ModelFormat, RejectsShapeMismatch) {
  Model m = qnn::test::small_water_model();
  TempPath good(".qnn"), bad(".qnn");
  qnn::write_model(m, good.str());
  // Claim a different axis_neuron: the fitting net's first layer no longer matches.
  auto bytes = patch_header(qnn::test::read_bytes(good.str()), "\"axis_neuron\": 4", "\"axis_neuron\": 3");
  qnn::test::write_bytes(bad.str(), bytes);
  expect_rejected(bad.str(), "architecture needs");
}

TEST(ModelFormat, RejectsUnknownActivation) {
  Model m = qnn::test::small_water_model();
  TempPath good(".qnn"), bad(".qnn");
  qnn::write_model(m, good.str());
  auto bytes = patch_header(qnn::test::read_bytes(good.str()), "\"activation\": \"tanh\"", "\"activation\": \"relu\"");
  qnn::test::write_bytes(bad.str(), bytes);
  expect_rejected(bad.str(), "unknown activation 'relu'");
}

TEST(ModelFormat, RejectsMissingSpecies) {
  Model m = qnn::test::small_water_model();
  TempPath good(".qnn"), bad(".qnn");
  qnn::write_model(m, good.str());
  // Drop "H" from the species list (same byte length keeps the layout): sel no longer fits.
  auto bytes = patch_header(qnn::test::read_bytes(good.str()), "\"O\",\n  \"H\"", "\"O\"" + std::string(7, ' '));
  qnn::test::write_bytes(bad.str(), bytes);
  expect_rejected(bad.str(), "species");
}

TEST(ModelFormat, WriterRefusesInvalidModel) {
  Model m = qnn::test::small_water_model();
  m.fit[0].layers[0].weight[3] = std::nan("");
  TempPath p(".qnn");
  EXPECT_THROW(qnn::write_model(m, p.str()), qnn::Error);
  EXPECT_TRUE(qnn::test::read_bytes(p.str()).empty());  // nothing written
}

TEST(ModelFormat, DescribeListsArchitecture) {
  Model m = qnn::test::small_water_model();
  const std::string d = qnn::describe(m);
  EXPECT_NE(d.find("O (sel 12), H (sel 24)"), std::string::npos) << d;
  EXPECT_NE(d.find("rcut 4"), std::string::npos) << d;
  EXPECT_NE(d.find("parameters      " + std::to_string(m.parameter_count())), std::string::npos) << d;
  EXPECT_NE(d.find("fp32"), std::string::npos) << d;
}

namespace {

// Replaces `from` by `to` (same length) in the header JSON and recomputes the CRC, so the
// reader gets past the checksum and must detect the inconsistency itself.
std::vector<char> patch_header(const std::vector<char>& file, const std::string& from, const std::string& to) {
  EXPECT_EQ(from.size(), to.size());
  std::string s(file.begin(), file.end());
  const auto pos = s.find(from);
  EXPECT_NE(pos, std::string::npos) << "pattern not in header: " << from;
  if (pos == std::string::npos) return file;
  s.replace(pos, from.size(), to);
  std::vector<char> out(s.begin(), s.end());
  const std::uint32_t crc = static_cast<std::uint32_t>(crc32(0L, reinterpret_cast<const unsigned char*>(out.data()), static_cast<unsigned>(out.size() - 4)));
  std::memcpy(out.data() + out.size() - 4, &crc, 4);
  return out;
}

}  // namespace
