// The one exception type of the qnn core. Front ends (the LAMMPS plugin, the CLI)
// catch it once at their boundary and report e.what().
#pragma once
#include <stdexcept>
#include <string>

namespace qnn {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

}  // namespace qnn
