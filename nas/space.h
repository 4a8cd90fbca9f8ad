// Search spaces, defined as data (nas/spaces/*.json, compiled in; or any JSON file a user writes),
// and architectures (the decoded choice for every searchable layer).
//
// A space file lists a stem, a sequence of blocks and a head. A block is either "fixed" (an MBConv
// with a given expansion and kernel) or "searchable" (a stage of `repeats` MBConv layers whose first
// layer has the stage's stride). The loader expands it into one LayerSpec per MBConv layer.
#pragma once
#include <map>
#include <string>
#include <vector>

namespace spnas {

struct LayerSpec {
  int cin = 0, cout = 0, stride = 1;
  bool searchable = false;
  int expansion = 6, kernel = 5;  // fixed layers: their own; searchable: the superkernel's (6, 5)
  bool residual = false;          // identity residual: stride 1 and cin == cout
  bool skip_allowed = false;      // searchable and residual (the first layer of a stage never is)
  int in_size = 0, out_size = 0;  // spatial size (H = W) before and after
};

// Bounds on the sizes a space file, an architecture file or a flag may ask for, checked when they are
// read (with the file and field named), before any tensor exists.
constexpr float kMaxWidth = 8.0f;
constexpr int kMaxInputSize = 2048;
constexpr int kMaxClasses = 100000;
constexpr int kMaxChannels = 16384;
constexpr int kMaxRepeats = 64;
constexpr int kMaxKernel = 7;     // odd, for the stem and every block
constexpr int kMaxExpansion = 8;

struct SpaceOptions {
  float width = 1.0f;    // width multiplier, channels rounded to multiples of 8 as in MnasNet
  int input_size = 0;    // 0: the space's own
  int num_classes = 0;   // 0: the space's own
  int input_channels = 0;  // 0: 3 (RGB); 1 for grey datasets (MNIST)
};

struct SearchSpace {
  std::string name;       // "cifar10", or the file's "name"
  std::string source;     // built-in name or file path, as given
  float width = 1.0f;
  int input_size = 0, num_classes = 0;
  int input_channels = 3;
  std::string activation = "relu";
  int stem_channels = 0, stem_kernel = 3, stem_stride = 1;
  int head_channels = 0;
  float dropout = 0.0f;
  std::vector<LayerSpec> layers;  // every MBConv layer in order, fixed and searchable

  int num_searchable() const;
  std::vector<int> searchable_indices() const;  // positions in `layers`
};

// name_or_file: a built-in space name ("cifar10", "mnasnet-imagenet") or a path to a JSON file.
SearchSpace load_space(const std::string& name_or_file, const SpaceOptions& options = {});
SearchSpace parse_space(const std::string& json_text, const std::string& source, const SpaceOptions& options = {});
std::vector<std::string> builtin_space_names();
int round_channels(int channels, float width);  // MnasNet's round_filters (divisor 8)

// The five choices of a searchable layer.
enum class Choice { K3E3, K3E6, K5E3, K5E6, Skip };
const char* choice_name(Choice c);  // "3x3-3", "3x3-6", "5x5-3", "5x5-6", "skip"
Choice parse_choice(const std::string& s, const std::string& where);
inline int choice_kernel(Choice c) { return (c == Choice::K3E3 || c == Choice::K3E6) ? 3 : 5; }
inline int choice_expansion(Choice c) { return (c == Choice::K3E3 || c == Choice::K5E3) ? 3 : 6; }

// Decoding of indicator values: d_skip = 0 -> skip; else kernel from d_k5, expansion from d_e6.
Choice decode_choice(bool d_k5, bool d_e6, bool d_skip);

// Architecture file (JSON): {"space": NAME-or-file, "width": w, "layers": ["3x3-3", ..., "skip"],
// "se": [bools, optional], "input_size", "num_classes", "input_channels" (optional)}, one entry per
// searchable layer (format: nas/README.md).
struct Arch {
  std::string space = "cifar10";
  float width = 1.0f;
  std::vector<Choice> layers;
  std::vector<bool> se;  // empty: no SE anywhere
  int input_size = 0, num_classes = 0;  // optional overrides (0: the space's)
  int input_channels = 0;               // 0: 3 (RGB)
};
Arch load_arch(const std::string& path);
Arch parse_arch(const std::string& json_text, const std::string& source);
std::string arch_to_json(const Arch& a);
void save_arch(const std::string& path, const Arch& a);
// Checks the arch against its space (layer count, skip only where allowed); throws naming the field.
void validate_arch(const Arch& a, const SearchSpace& s, const std::string& source);
std::string arch_summary(const Arch& a);  // "5x5-6 3x3-3 skip ..."

}  // namespace spnas
