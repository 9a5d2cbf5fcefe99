// In-memory form of a qnn v1 model (docs/model.md) and its .qnn file (docs/format.md).
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace qnn {

// Bounds the reader and Model::validate enforce (docs/format.md, "Limits"). A file outside them
// is refused with an error naming the key; all size arithmetic is done in 64 bits against them.
namespace limits {
constexpr std::uint64_t kMaxFileBytes = std::uint64_t(1) << 30;    // whole .qnn file (1 GiB)
constexpr std::uint64_t kMaxHeaderBytes = std::uint64_t(16) << 20; // JSON header (16 MiB)
constexpr int kMaxJsonDepth = 64;            // nesting of arrays/objects in the header
constexpr int kMaxSpecies = 128;
constexpr std::size_t kMaxSpeciesName = 32;  // characters of an element name
constexpr double kMaxRcut = 20.0;            // Å
constexpr int kMaxSel = 10000;               // per species; sel >= 0
constexpr int kMaxLayers = 16;               // entries of embed_widths and of fit_widths
constexpr int kMaxEmbedWidth = 1024;
constexpr int kMaxFitWidth = 4096;
constexpr std::int64_t kMaxDescriptorDim = 65536;  // M1 * axis_neuron (<= M1 <= kMaxEmbedWidth)
constexpr double kMinNeighborNorm = 1.0, kMaxNeighborNorm = 1e5;
constexpr double kMinStd = 1e-3, kMaxStd = 1e3;  // std_s, std_r (so 1/std <= 1000)
constexpr double kMaxAbsMean = 1e3;              // mean_s
constexpr double kMaxAbsParameter = 1e6;         // weights (dequantized), biases, dt
constexpr double kMaxAbsEnergyBias = 1e6;        // eV per atom
constexpr double kMinScale = 1e-12, kMaxScale = 1e6;  // weight_scale, act_scale, out_scale (> 0)
// Range check: worst-case magnitudes of every activation, of the descriptor, of the energy and
// of its gradient, for neighbours at distances down to kRangeMinDistance (s = 1/r up to 1e4),
// stay below kMaxRangeBound (float32 overflows at 3.4e38).
constexpr double kRangeMinDistance = 1e-4;  // Å
constexpr double kMaxRangeBound = 1e30;
}  // namespace limits

enum class Activation { Tanh, Linear };
const char* to_string(Activation a);
Activation activation_from_string(const std::string& s);  // throws qnn::Error

// How a layer's output is combined with its input (docs/model.md eq. G, eq. F).
// DoublingTimestep: y = [x, x] + dt ⊙ act(z) (DeePMD-kit's embedding layers with resnet_dt).
enum class Residual { None, Identity, Doubling, Timestep, DoublingTimestep };
const char* to_string(Residual r);

// Quantization metadata of one dense layer. An FP32 model leaves every field at its default
// (weight_bits == 0). Filled by `qnn quantize`; the numeric contract is docs/quantization.md.
struct QuantSpec {
  int weight_bits = 0;                     // 0: float weights; 2..16: symmetric integer weights
  int act_bits = 0;                        // 0: float activations at this layer's input
  std::vector<float> weight_scale;         // (out) per channel, or (1) per tensor
  std::vector<std::int32_t> weight_zero_point;  // same size as weight_scale (0: symmetric)
  float act_scale = 0.0f;                  // input activation scale (per tensor, static)
  std::int32_t act_zero_point = 0;
  // Output scale of the last embedding layer (G_ij enters the descriptor as int8 at this
  // scale in the integer modes); 0 elsewhere.
  float out_scale = 0.0f;
  bool quantized() const { return weight_bits != 0 || act_bits != 0; }
  // The name of these bits (docs/quantization.md, "Precision vocabulary"): "" (float),
  // "weight-only", "int8" (weights and activations <= 8 bits) or "int16". The file's per-layer
  // "mode" key holds it for people and older readers; the reader ignores that key.
  std::string label() const;
};

// y = residual(x, act(x·W + b)).
struct DenseLayer {
  int in = 0;
  int out = 0;
  std::vector<double> weight;  // (in, out), row-major
  std::vector<double> bias;    // (out)
  std::vector<double> dt;      // (out) for Residual::Timestep, else empty
  Activation activation = Activation::Tanh;
  Residual residual = Residual::None;
  QuantSpec quant;
};

struct Net {
  std::vector<DenseLayer> layers;
  std::size_t parameter_count() const;
};

// A short-range pair repulsion added to the network's energy (docs/model.md, "Short-range
// repulsion"): the ZBL universal screened Coulomb potential on the listed species pairs,
// switched off between r_inner and r_outer exactly as LAMMPS's `pair_style zbl` does. Empty
// `pairs`: none (the format default).
struct Repulsion {
  std::vector<double> z;                   // (S) atomic number of each species
  std::vector<std::array<int, 2>> pairs;   // unordered species pairs it acts on
  double r_inner = 0.0, r_outer = 0.0;     // Å
  bool enabled() const { return !pairs.empty(); }
  bool acts_on(int a, int b) const {
    for (const auto& p : pairs)
      if ((p[0] == a && p[1] == b) || (p[0] == b && p[1] == a)) return true;
    return false;
  }
};

struct Model {
  static constexpr std::uint32_t kFormatVersion = 1;

  std::string type = "se_e2_a";
  std::vector<std::string> species;       // (S) element names; index = species id
  double rcut = 6.0;                      // Å
  double rcut_smth = 0.5;                 // Å
  std::vector<int> sel;                   // (S) neighbour capacity per species (training)
  double neighbor_norm = 0.0;             // Nc of eq. D (default: sum(sel))
  int axis_neuron = 16;                   // M2
  std::vector<int> embed_widths;          // e.g. {25, 50, 100}; M1 = back()
  std::vector<int> fit_widths;            // e.g. {240, 240, 240}
  bool resnet_dt = true;
  // DeePMD's type_one_side: true, one embedding net per neighbour species (embed has S nets);
  // false, one per (centre, neighbour) pair (embed has S*S nets, index centre*S + neighbour).
  bool type_one_side = true;
  std::vector<Net> embed;                 // (S) or (S*S): use embed_net / embed_index
  std::vector<Net> fit;                   // (S) one per centre species, last layer -> 1, linear
  std::vector<double> energy_bias;        // (S) eV
  // Normalisation (eq. R), each (S, S) row-major [centre][neighbour].
  std::vector<double> mean_s, std_s, std_r;
  // Environment-matrix convention (docs/model.md eq. R and "The DeePMD convention"):
  //   "qnn":    R̂ = (s/std_s, s·x/(r·std_r)); neighbours beyond rcut add nothing (format
  //             default, every file written before the key existed);
  //   "deepmd": DeePMD-kit's: R̂ = (ŝ, s·x/(r·std_r)) with ŝ = (s − mean_s)/std_s, and each of
  //             the sel[a] slots of neighbour species a that no neighbour fills adds the
  //             constant G(ŝ₀) ⊗ (ŝ₀, 0, 0, 0), ŝ₀ = −mean_s/std_s.
  std::string env_mat = "qnn";
  bool deepmd_env_mat() const { return env_mat == "deepmd"; }
  Repulsion repulsion;                    // none unless the file has the "repulsion" key
  std::string units = "metal";
  nlohmann::json provenance = nlohmann::json::object();
  std::string default_mode = "fp32";      // execution mode the file was made for

  int nspecies() const { return static_cast<int>(species.size()); }
  // Number of embedding nets the architecture has (S or S*S), the index in `embed` of the net
  // that embeds neighbours of species `neighbour` around centres of species `centre`, and that
  // net. The centre species of net n is n / S for pair nets (-1: every centre, one-side nets);
  // its neighbour species n % S.
  int n_embed_nets() const { return type_one_side ? nspecies() : nspecies() * nspecies(); }
  int embed_index(int centre, int neighbour) const { return type_one_side ? neighbour : centre * nspecies() + neighbour; }
  const Net& embed_net(int centre, int neighbour) const { return embed.at(static_cast<std::size_t>(embed_index(centre, neighbour))); }
  int embed_centre(int n) const { return type_one_side ? -1 : n / nspecies(); }
  int embed_neighbour(int n) const { return n % nspecies(); }
  // Name of embedding net n: "embed.<a>" (one side) or "embed.<c>.<a>" (pairs), species ids;
  // its layers are "<name>.<l>" in the file. embed_label: the same with species names.
  std::string embed_name(int n) const;
  std::string embed_label(int n) const;
  int m1() const { return embed_widths.empty() ? 0 : embed_widths.back(); }
  int descriptor_dim() const { return m1() * axis_neuron; }
  std::size_t parameter_count() const;
  int species_index(const std::string& name) const;  // -1 when absent

  // Builds an untrained network with the given architecture: weights from a seeded normal
  // distribution (scaled 1/sqrt(in)), unit statistics, zero bias. Used by training and tests.
  static Model make_random(const std::vector<std::string>& species, double rcut, double rcut_smth,
                           const std::vector<int>& sel, const std::vector<int>& embed_widths,
                           int axis_neuron, const std::vector<int>& fit_widths, bool resnet_dt,
                           std::uint64_t seed, bool type_one_side = true);

  // Checks every shape and value against the architecture and the bounds of qnn::limits,
  // then the range check (check_range); throws qnn::Error naming `what`.
  void validate(const std::string& what = "model") const;
  // Worst-case forward and gradient magnitudes of the networks on the inputs the statistics
  // allow (docs/format.md, "Limits"); throws qnn::Error naming `what` when one could overflow.
  void check_range(const std::string& what = "model") const;
};

Model read_model(const std::string& path);               // throws qnn::Error naming the file
// The same from the file's bytes (e.g. read on one MPI rank and broadcast); `path` names it
// in errors. Never throws anything but qnn::Error, whatever the bytes.
Model parse_model(const std::vector<char>& bytes, const std::string& path);
// The bytes of a regular file of at most limits::kMaxFileBytes; throws qnn::Error naming the
// file for a missing or unreadable file, a directory, FIFO, device or socket, or a larger file.
std::vector<char> read_file_bytes(const std::string& path);
void write_model(const Model& model, const std::string& path);  // atomic: write_file_atomic
// Writes `bytes` to a unique temporary file beside `path` (PATH.tmp.XXXXXX), fsyncs it,
// renames it over `path` and fsyncs the directory: `path` is the old file or the new one,
// never a partial one, even on a crash or a signal. Throws qnn::Error naming `path` (a
// directory, a missing or read-only directory, a full disk) and leaves no temporary behind.
void write_file_atomic(const std::string& path, const std::vector<char>& bytes);
// Throws qnn::Error (prefixed by `what`, e.g. "-o OUT.qnn") unless `path` can be written by
// write_file_atomic: it is not a directory and its directory exists and is writable. For
// command-line tools, to refuse a bad output path before the work.
void check_output_path(const std::string& path, const std::string& what);

// Human-readable summary: architecture, species, cutoff, parameter count, per-layer precision.
std::string describe(const Model& model);

}  // namespace qnn
