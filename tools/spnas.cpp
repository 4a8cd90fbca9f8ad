// spnas: the command-line program. One binary, subcommands:
//   search   run a Single-Path NAS search and write the decoded architecture
//   train    train an architecture from scratch (EMA, checkpoints, resume)
//   eval     evaluate a trained checkpoint
//   info     parameters, multiply-adds and predicted runtime of an architecture or a space
//   profile  measure a latency table on this machine        (nas/profile.h)
//   latency  measure the end-to-end latency of an architecture
//   demo     the README's main job: profile, short search, short training of the found network
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

#include "engine/threads.h"
#include "nas/search.h"
#include "nas/train.h"
#include "ops/kernels.h"
#include "tools/args.h"
#include "tools/commands.h"

extern "C" char* openblas_get_corename(void);

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

static void usage() {
  std::printf(
      "spnas: Single-Path NAS on CPU\n\n"
      "usage: spnas COMMAND [options]   (spnas COMMAND --help for the options)\n\n"
      "commands:\n"
      "  demo      profile this machine, run a short search on the embedded data, train the found network\n"
      "  search    Single-Path NAS search -> architecture JSON, log CSV, SVG plot, checkpoint\n"
      "  train     train an architecture from scratch (EMA, checkpoints, --resume)\n"
      "  eval      evaluate a checkpoint written by train\n"
      "  info      params, MACs and predicted runtime of an architecture or a space (--json)\n"
      "  profile   measure the latency table of a space on this machine\n"
      "  latency   measure the end-to-end inference latency of an architecture\n\n"
      "global environment: SPNAS_THREADS (default: all cores), SPNAS_ISA=auto|avx512|avx2|ref\n");
}

int main(int argc, char** argv) {
  maybe_reexec_without_coretype(argv);
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "help")) {
    usage();
    return argc < 2 ? 1 : 0;
  }
  std::string cmd = argv[1];
  try {
    if (cmd == "search") return cmd_search(argc - 2, argv + 2);
    if (cmd == "train") return cmd_train(argc - 2, argv + 2);
    if (cmd == "eval") return cmd_eval(argc - 2, argv + 2);
    if (cmd == "info") return cmd_info(argc - 2, argv + 2);
    if (cmd == "profile") return cmd_profile(argc - 2, argv + 2);
    if (cmd == "latency") return cmd_latency(argc - 2, argv + 2);
    if (cmd == "demo") return cmd_demo(argc - 2, argv + 2);
    std::fprintf(stderr, "spnas: unknown command '%s'\n\n", cmd.c_str());
    usage();
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "spnas %s: error: %s\n", cmd.c_str(), e.what());
    return 1;
  }
}
