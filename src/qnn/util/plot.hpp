// Finding and running the plot scripts qnn ships in scripts/ (plot_sweep.py for `qnn sweep`,
// plot_learning_curve.py for the trainer). No path of the source tree is compiled into the
// binaries: the script is found at run time, and run without a shell.
#pragma once
#include <string>
#include <vector>

namespace qnn {

// The path of scripts/<name>, found at run time in this order:
//   1. `given` (a command-line flag such as --plot-script), when not empty; throws qnn::Error
//      (naming `given_what`) when it does not exist;
//   2. the environment variable `env_var` (e.g. QNN_PLOT_SCRIPT), when set and not empty,
//      returned as given;
//   3. an installed qnn: <prefix>/share/qnn/scripts/<name> for the executable <prefix>/bin/qnn
//      (the running executable, /proc/self/exe);
//   4. a build directory: the nearest directory above the executable that holds a
//      CMakeCache.txt names its source tree (CMAKE_HOME_DIRECTORY): <source>/scripts/<name>.
// Returns "" when none of 3 and 4 exists.
std::string find_plot_script(const std::string& name, const std::string& given = "",
                             const std::string& given_what = "--plot-script", const char* env_var = "QNN_PLOT_SCRIPT");

// A Python that has matplotlib: $QNN_PYTHON, else python3 on PATH, else /usr/bin/python3
// (Debian's python3-matplotlib lives there, and a pyenv python3 may shadow it). "" if none.
std::string find_python();

// Where a child's output goes.
enum class ChildOutput { Inherit, Quiet /* stdout and stderr to /dev/null */, StderrToStdout };

// Runs argv (argv[0] looked up on PATH when it has no '/') with posix_spawnp, without a shell,
// and waits for it. Returns its exit status, 128 + the signal when a signal ended it, or 127
// when it could not be started.
int run_program(const std::vector<std::string>& argv, ChildOutput output = ChildOutput::Inherit);

// argv as one line with every argument single-quoted for a POSIX shell (for messages).
std::string command_line(const std::vector<std::string>& argv);

}  // namespace qnn
