#include "base/stage.h"

namespace trainbus {

std::string_view to_string(Stage stage) {
  switch (stage) {
    case Stage::kFit:
      return "fit";
    case Stage::kValidate:
      return "validate";
    case Stage::kTest:
      return "test";
    case Stage::kPredict:
      return "predict";
    case Stage::kSanityCheck:
      return "sanity_check";
  }
  return "unknown";
}

}  // namespace trainbus
