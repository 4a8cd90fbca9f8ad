// spnas: the command-line program. One binary; each subcommand lives in tools/cmd_*.cpp and binds its
// options to a library config struct (tools/cli.h). `spnas --help` lists them.
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#ifdef SPNAS_HAVE_DNNL
#include <oneapi/dnnl/dnnl.hpp>
#endif

#include "engine/cpu.h"
#include "nas/run.h"
#include "ops/kernels.h"
#include "tools/cli.h"

extern "C" char* openblas_get_config(void);

using namespace spnas;

// The environment may force OpenBLAS onto older kernels (OPENBLAS_CORETYPE=Haswell on an AVX-512
// machine halves sgemm throughput). OpenBLAS reads it when the library loads, so the only way not to
// inherit it silently is to restart without it. SPNAS_KEEP_OPENBLAS_CORETYPE=1 keeps it.
static void maybe_reexec_without_coretype(char** argv) {
  const char* ct = std::getenv("OPENBLAS_CORETYPE");
  if (!ct || std::getenv("SPNAS_KEEP_OPENBLAS_CORETYPE") || std::getenv("SPNAS_REEXECED")) return;
  if (cpu_isa() != "avx512") return;
  std::fprintf(stderr,
               "spnas: note: OPENBLAS_CORETYPE=%s would force OpenBLAS's older kernels on this AVX-512 CPU; "
               "restarting without it (set SPNAS_KEEP_OPENBLAS_CORETYPE=1 to keep it)\n", ct);
  unsetenv("OPENBLAS_CORETYPE");
  unsetenv("OPENBLAS_L2_SIZE");
  setenv("SPNAS_REEXECED", "1", 1);
  execv("/proc/self/exe", argv);
  std::fprintf(stderr, "spnas: restart failed (%s); continuing with OPENBLAS_CORETYPE=%s\n", std::strerror(errno), ct);
}

// What `spnas --version` prints: the build, the kernel paths in it, and the libraries it runs on.
static std::string version_text() {
  std::string isas = "ref";
  for (const char* isa : {"avx2", "avx512"})
    if (kernels_for(isa)) isas += std::string(", ") + isa;
  std::string v = std::string("spnas ") + SPNAS_VERSION + " (" + SPNAS_BUILD_TYPE + " build)\n";
  v += "kernels: " + isas + " usable on this CPU; active: " + kernels().name + " (SPNAS_ISA to force one)\n";
  v += "cpu: " + cpu_description() + "\n";
  v += std::string("OpenBLAS: ") + openblas_get_config() + "\n";
#ifdef SPNAS_HAVE_DNNL
  const dnnl_version_t* d = dnnl_version();
  v += "oneDNN: " + std::to_string(d->major) + "." + std::to_string(d->minor) + "." + std::to_string(d->patch) + "\n";
#else
  v += "oneDNN: not built in\n";
#endif
  v += std::string("zlib: ") + zlibVersion() + "\n";
  v += "nlohmann-json: " + std::to_string(NLOHMANN_JSON_VERSION_MAJOR) + "." +
       std::to_string(NLOHMANN_JSON_VERSION_MINOR) + "." + std::to_string(NLOHMANN_JSON_VERSION_PATCH) + "\n";
  v += std::string("CLI11: ") + CLI11_VERSION;
  return v;
}

int main(int argc, char** argv) {
  maybe_reexec_without_coretype(argv);
  CLI::App app{"spnas: Single-Path NAS on CPU — measure a latency table, search, train, deploy"};
  app.set_version_flag("--version", version_text());
  app.require_subcommand(1);
  app.footer("spnas COMMAND --help for a command's options. Environment: SPNAS_THREADS (default: every core), "
             "SPNAS_ISA=auto|avx512|avx2|ref.");
  // In the order a user meets them: measure, search (or tune), train, check against chance, deploy.
  std::vector<cli::Command> commands = {
      cli::add_demo(app),   cli::add_profile(app), cli::add_search(app),  cli::add_tune(app),
      cli::add_train(app),  cli::add_eval(app),    cli::add_info(app),    cli::add_latency(app),
      cli::add_random(app), cli::add_compare(app), cli::add_export(app),  cli::add_predict(app),
      cli::add_tune_trial(app)};
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    std::fprintf(stderr, "spnas: error: %s (see spnas%s --help)\n", e.what(),
                 app.get_subcommands().empty() ? "" : (" " + app.get_subcommands()[0]->get_name()).c_str());
    return 2;
  }
  for (cli::Command& c : commands) {
    if (!c.app->parsed()) continue;
    try {
      return c.run();
    } catch (const Interrupted& e) {
      std::fprintf(stderr, "spnas %s: %s\n", c.app->get_name().c_str(), e.what());
      return 128 + e.signal;  // 130 for SIGINT, 143 for SIGTERM: interrupted is not done
    } catch (const std::exception& e) {
      std::fprintf(stderr, "spnas %s: error: %s\n", c.app->get_name().c_str(), e.what());
      return 1;
    }
  }
  return 2;
}
