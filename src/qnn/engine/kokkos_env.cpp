// Process-wide Kokkos lifetime for the qnn core: initialised on first use unless the host
// program (e.g. LAMMPS with its own Kokkos) already did, finalised at exit by whoever
// initialised it.
#include <cstdlib>
#include <mutex>

#include <Kokkos_Core.hpp>

#include "qnn/engine/exact_engine.hpp"
#include "qnn/error.hpp"

namespace qnn {
namespace {

std::mutex g_kokkos_mutex;
bool g_we_initialized = false;

// atexit handler: finalises Kokkos only when qnn initialised it and it is still running.
// Every Engine (and so every View) must be destroyed by then; engines with static storage
// duration constructed before the first call are destroyed after this handler runs, so
// keep engines in automatic or dynamic storage.
void finalize_kokkos_at_exit() {
  std::lock_guard<std::mutex> lock(g_kokkos_mutex);
  if (g_we_initialized && Kokkos::is_initialized()) Kokkos::finalize();
  g_we_initialized = false;
}

}  // namespace

// Initialises Kokkos once per process with `threads` host threads (<= 0: Kokkos' default,
// i.e. OMP_NUM_THREADS). A later call with another thread count does not re-initialise.
void ensure_kokkos_initialized(int threads) {
  std::lock_guard<std::mutex> lock(g_kokkos_mutex);
  if (Kokkos::is_initialized()) return;
  if (g_we_initialized)
    throw Error("Kokkos was finalised before qnn was done with it; it cannot be re-initialised "
                "in the same process");
#if KOKKOS_VERSION >= 40000
  Kokkos::InitializationSettings settings;
  if (threads > 0) settings.set_num_threads(threads);
  settings.set_disable_warnings(true);
  Kokkos::initialize(settings);
#else
  Kokkos::InitArguments args;
  if (threads > 0) args.num_threads = threads;
  args.disable_warnings = true;
  Kokkos::initialize(args);
#endif
  g_we_initialized = true;
  std::atexit(finalize_kokkos_at_exit);
}

}  // namespace qnn
