// Issue 16: a model reader that never crashes. Every crafted file of hostile_cases.hpp, and
// every path that is not a regular model file, gives one qnn::Error naming the file and the
// problem, through read_model and parse_model alike; the shipped potentials still load; the
// writer's output is atomic (unique temporary name, fsync, rename), also under SIGINT.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "hostile_cases.hpp"
#include "qnn/error.hpp"
#include "qnn/format/model.hpp"
#include "test_util.hpp"

namespace fs = std::filesystem;
using qnn::test::HostileCase;
using qnn::test::TempDir;
using qnn::test::TempPath;

namespace {

const std::vector<HostileCase>& cases() {
  static const std::vector<HostileCase> c = qnn::test::hostile_cases();
  return c;
}

// `fn` must throw a qnn::Error whose message starts with "PATH: " and contains `needle`; any
// other exception is a failure (it would escape the plugin's boundary as a raw exception).
template <class Fn>
void expect_clean_error(Fn fn, const std::string& path, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "accepted; expected an error containing '" << needle << "'";
  } catch (const qnn::Error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.rfind(path + ": ", 0), 0u) << "the message does not start with the file name: " << msg;
    EXPECT_NE(msg.find(needle), std::string::npos) << "expected '" << needle << "' in: " << msg;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "not a qnn::Error: " << e.what();
  }
}

class Crafted : public ::testing::TestWithParam<std::size_t> {};

}  // namespace

TEST_P(Crafted, ReaderGivesOneCleanError) {
  const HostileCase& c = cases()[GetParam()];
  TempPath p(".qnn");
  qnn::test::write_bytes(p.str(), c.bytes);
  expect_clean_error([&] { (void)qnn::read_model(p.str()); }, p.str(), c.needle);
  expect_clean_error([&] { (void)qnn::parse_model(c.bytes, "crafted.qnn"); }, "crafted.qnn", c.needle);
}

INSTANTIATE_TEST_SUITE_P(HostileInputs, Crafted, ::testing::Range<std::size_t>(0, cases().size()),
                         [](const ::testing::TestParamInfo<std::size_t>& info) { return cases()[info.param].name; });

TEST(HostileInputs, CaseNamesAreUnique) {
  std::set<std::string> names;
  for (const HostileCase& c : cases()) EXPECT_TRUE(names.insert(c.name).second) << c.name;
}

// The unedited base files of the cases load: each case fails for its own edit only.
TEST(HostileInputs, BaseFilesAndShippedPotentialsLoad) {
  const qnn::Model fp = qnn::test::small_water_model(7, 6.0);
  EXPECT_NO_THROW((void)qnn::parse_model(qnn::test::model_bytes(fp), "base.qnn"));
  EXPECT_NO_THROW((void)qnn::parse_model(qnn::test::model_bytes(qnn::test::quantize_weight_only(fp)), "base.q.qnn"));
  for (const char* name : {"water-se2a.fp32.qnn", "water-se2a.int8.qnn", "water-se2a.mixed.qnn", "water-se2a.int8-qat.qnn"}) {
    const std::string path = std::string(QNN_SOURCE_DIR) + "/potentials/" + name;
    EXPECT_NO_THROW((void)qnn::read_model(path)) << path;
  }
}

// A crafted file re-assembled without edits is byte-identical to the writer's.
TEST(HostileInputs, AssembleReproducesTheWriter) {
  const std::vector<char> bytes = qnn::test::model_bytes(qnn::test::small_water_model(3, 6.0));
  qnn::test::QnnFile f;
  ASSERT_TRUE(qnn::test::split_qnn(bytes, f));
  EXPECT_EQ(qnn::test::assemble_qnn(f), bytes);
}

// ---- paths that are not regular files

TEST(HostileInputs, DirectoryIsRefused) {
  TempDir d("dir");
  expect_clean_error([&] { (void)qnn::read_model(d.path().string()); }, d.path().string(), "is a directory");
}

TEST(HostileInputs, FifoIsRefusedWithoutBlocking) {
  TempDir d("fifo");
  const std::string path = (d.path() / "model.qnn").string();
  ASSERT_EQ(mkfifo(path.c_str(), 0600), 0);
  // A reader that opened the FIFO would block here forever (no writer): the ctest timeout
  // would fail the test.
  expect_clean_error([&] { (void)qnn::read_model(path); }, path, "is not a regular file");
}

TEST(HostileInputs, DevicesAreRefused) {
  for (const char* dev : {"/dev/zero", "/dev/null", "/dev/urandom"}) {
    expect_clean_error([&] { (void)qnn::read_model(dev); }, dev, "is not a regular file");
  }
}

TEST(HostileInputs, FileOverTheSizeCapIsRefusedUnread) {
  TempPath p(".qnn");
  {
    std::ofstream f(p.str(), std::ios::binary);
  }
  fs::resize_file(p.str(), qnn::limits::kMaxFileBytes + 1);  // sparse: no disk used
  const auto t0 = std::chrono::steady_clock::now();
  expect_clean_error([&] { (void)qnn::read_model(p.str()); }, p.str(), "more than the 1073741824");
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 1.0) << "the file was read";
}

TEST(HostileInputs, HeaderOverTheSizeCapIsRefused) {
  const std::vector<char> bytes = qnn::test::model_bytes(qnn::test::small_water_model(7, 6.0));
  qnn::test::QnnFile f;
  ASSERT_TRUE(qnn::test::split_qnn(bytes, f));
  nlohmann::json h = qnn::test::header_json(f);
  h["provenance"]["padding"] = std::string(qnn::limits::kMaxHeaderBytes, 'x');
  qnn::test::set_header(f, h);
  expect_clean_error([&] { (void)qnn::parse_model(qnn::test::assemble_qnn(f), "big.qnn"); }, "big.qnn",
                     "exceeds the limit of 16777216");
}

TEST(HostileInputs, HeaderLengthFieldPastTheFile) {
  std::vector<char> bytes = qnn::test::model_bytes(qnn::test::small_water_model(7, 6.0));
  const std::uint64_t huge = ~std::uint64_t(0);
  std::memcpy(bytes.data() + 16, &huge, 8);
  expect_clean_error([&] { (void)qnn::parse_model(bytes, "h.qnn"); }, "h.qnn", "header length exceeds the file");
}

// Truncating a valid file anywhere gives a clean error (every prefix of the header and of
// the first tensors, then a stride through the rest).
TEST(HostileInputs, EveryTruncationIsClean) {
  const std::vector<char> bytes = qnn::test::model_bytes(qnn::test::small_water_model(7, 6.0));
  for (std::size_t n = 0; n < bytes.size(); n += n < 2048 ? 1 : 97) {
    const std::vector<char> cut(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(n));
    expect_clean_error([&] { (void)qnn::parse_model(cut, "t.qnn"); }, "t.qnn", "");
  }
}

// ---- the in-memory model: the writer refuses what the reader would refuse

TEST(HostileInputs, WriterRefusesModelsOutsideTheLimits) {
  TempPath p(".qnn");
  auto refuse = [&](const std::function<void(qnn::Model&)>& edit, const std::string& needle) {
    qnn::Model m = qnn::test::small_water_model(7, 6.0);
    edit(m);
    expect_clean_error([&] { qnn::write_model(m, p.str()); }, p.str(), needle);
  };
  refuse([](qnn::Model& m) { m.rcut = 1000; }, "rcut 1000 A exceeds the maximum of 20 A");
  refuse([](qnn::Model& m) { m.sel[1] = -1; }, "sel -1 is outside [0, 10000]");
  refuse([](qnn::Model& m) { m.std_r[3] = 1e-9; }, "std_r[H][H] = 1e-09 is outside");
  refuse([](qnn::Model& m) { m.fit[0].layers[0].quant.act_zero_point = 2; }, "act_zero_point 2 is not supported");
  refuse([](qnn::Model& m) { m.fit[0].layers[0].weight[0] = 1e7; }, "a weight of magnitude 1e+07 exceeds 1e+06");
  refuse([](qnn::Model& m) { m.provenance = nlohmann::json::array(); }, "provenance must be a JSON object");
  EXPECT_FALSE(fs::exists(p.str()));
}

TEST(HostileInputs, RangeCheckAcceptsTrainerStatistics) {
  // The trainer raises standard deviations below 1e-2 to 1e-2 (as DeePMD): such a model passes.
  qnn::Model m = qnn::test::small_water_model(7, 6.0);
  for (auto& v : m.std_s) v = 1e-2;
  for (auto& v : m.std_r) v = 1e-2;
  EXPECT_NO_THROW(m.validate("m"));
}

// ---- atomic output

TEST(AtomicWrite, UniqueTemporaryAndNothingLeftBehind) {
  TempDir d("atomic");
  const std::string path = (d.path() / "out.qnn").string();
  qnn::write_file_atomic(path, {'a', 'b'});
  qnn::write_file_atomic(path, {'c'});
  EXPECT_EQ(qnn::test::read_bytes(path), std::vector<char>{'c'});
  // A stale PATH.tmp (what the old writer used) is neither used nor removed.
  qnn::test::write_bytes(path + ".tmp", {'x'});
  qnn::write_file_atomic(path, {'d'});
  EXPECT_EQ(qnn::test::read_bytes(path + ".tmp"), std::vector<char>{'x'});
  std::size_t nfiles = 0;
  for (const auto& e : fs::directory_iterator(d.path())) nfiles += e.is_regular_file() ? 1 : 0;
  EXPECT_EQ(nfiles, 2u) << "a temporary file was left behind";
  struct stat st;
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_NE(st.st_mode & 0044, 0u) << "the written file is not readable by others (mkstemp's 0600 kept)";
}

TEST(AtomicWrite, BadDestinationsAreRefusedNamingThePath) {
  TempDir d("atomic_bad");
  const std::string dir = d.path().string();
  expect_clean_error([&] { qnn::write_file_atomic(dir, {'a'}); }, dir, "is a directory");
  const std::string missing = dir + "/no/such/dir/out.qnn";
  expect_clean_error([&] { qnn::write_file_atomic(missing, {'a'}); }, missing, "cannot create a file beside it");
  EXPECT_THROW(qnn::check_output_path(dir, "-o " + dir), qnn::Error);
  EXPECT_THROW(qnn::check_output_path(missing, "-o " + missing), qnn::Error);
  EXPECT_NO_THROW(qnn::check_output_path(dir + "/new.qnn", "-o"));
  try {
    qnn::check_output_path(dir, "-o " + dir);
  } catch (const qnn::Error& e) {
    EXPECT_NE(std::string(e.what()).find("is a directory; give a file name"), std::string::npos) << e.what();
  }
}

// SIGINT while a model is being written leaves the previous file intact: a child writes two
// different large models in turn; killed at varying moments, the file is always one of them.
TEST(AtomicWrite, SigintMidWriteLeavesTheOldFile) {
  TempDir d("sigint");
  const std::string path = (d.path() / "model.qnn").string();
  qnn::Model a = qnn::Model::make_random({"O", "H"}, 6.0, 0.5, {46, 92}, {32, 64, 128}, 16, {512, 512, 512}, true, 1);
  qnn::Model b = a;
  a.provenance["which"] = "a";
  b.provenance["which"] = "b";
  qnn::write_model(a, path);
  for (int trial = 0; trial < 6; ++trial) {
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      signal(SIGINT, SIG_DFL);
      for (int k = 0;; ++k) qnn::write_model(k % 2 ? a : b, path);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20 + 37 * trial));
    kill(pid, SIGINT);
    int status = 0;
    waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGINT);
    const qnn::Model r = qnn::read_model(path);  // throws (fails the test) on a partial file
    const std::string which = r.provenance.at("which");
    EXPECT_TRUE(which == "a" || which == "b");
  }
}
