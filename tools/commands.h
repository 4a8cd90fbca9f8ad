// The subcommands of tools/spnas.cpp. Each returns the process exit code.
#pragma once
namespace spnas {
int cmd_search(int argc, char** argv);
int cmd_train(int argc, char** argv);
int cmd_eval(int argc, char** argv);
int cmd_info(int argc, char** argv);
int cmd_profile(int argc, char** argv);
int cmd_latency(int argc, char** argv);
int cmd_demo(int argc, char** argv);
}  // namespace spnas
