// See plot.hpp.
#include "qnn/util/plot.hpp"

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include "qnn/error.hpp"

extern char** environ;

namespace qnn {

namespace fs = std::filesystem;

namespace {

// The source tree of the build directory `dir` lies in, from the nearest CMakeCache.txt at or
// above it; empty when there is none.
fs::path build_source_dir(fs::path dir) {
  for (int depth = 0; depth < 8 && !dir.empty(); ++depth) {
    std::error_code ec;
    const fs::path cache = dir / "CMakeCache.txt";
    if (fs::is_regular_file(cache, ec)) {
      std::ifstream f(cache);
      const std::string key = "CMAKE_HOME_DIRECTORY:INTERNAL=";
      for (std::string line; std::getline(f, line);)
        if (line.rfind(key, 0) == 0) return fs::path(line.substr(key.size()));
      return {};
    }
    if (dir == dir.parent_path()) break;
    dir = dir.parent_path();
  }
  return {};
}

}  // namespace

std::string find_plot_script(const std::string& name, const std::string& given, const std::string& given_what,
                             const char* env_var) {
  if (!given.empty()) {
    if (!fs::exists(given)) throw Error(given_what + " " + given + " does not exist");
    return given;
  }
  if (env_var != nullptr) {
    const char* e = std::getenv(env_var);
    if (e != nullptr && *e != '\0') return e;
  }
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (ec) return "";
  const fs::path bin = exe.parent_path();
  std::vector<fs::path> cands{bin.parent_path() / "share" / "qnn" / "scripts" / name};
  const fs::path src = build_source_dir(bin);
  if (!src.empty()) cands.push_back(src / "scripts" / name);
  for (const fs::path& p : cands)
    if (fs::is_regular_file(p, ec)) return p.string();
  return "";
}

std::string find_python() {
  std::vector<std::string> cands;
  if (const char* e = std::getenv("QNN_PYTHON")) cands.emplace_back(e);
  cands.emplace_back("python3");
  cands.emplace_back("/usr/bin/python3");
  for (const std::string& c : cands)
    if (!c.empty() && run_program({c, "-c", "import matplotlib"}, ChildOutput::Quiet) == 0) return c;
  return "";
}

int run_program(const std::vector<std::string>& argv, ChildOutput output) {
  if (argv.empty()) return 127;
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (output == ChildOutput::Quiet) {
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  } else if (output == ChildOutput::StderrToStdout) {
    posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  }
  pid_t pid = 0;
  const int rc = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return 127;
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return 127;
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 127;
}

std::string command_line(const std::vector<std::string>& argv) {
  std::string line;
  for (const std::string& a : argv) {
    if (!line.empty()) line += ' ';
    line += '\'';
    for (char c : a) line += c == '\'' ? std::string("'\\''") : std::string(1, c);
    line += '\'';
  }
  return line;
}

}  // namespace qnn
