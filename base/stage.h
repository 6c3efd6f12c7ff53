#pragma once
/// Stage: what the trainer is doing, the `stage` argument of Lightning's setup/teardown hooks.

#include <string_view>

namespace trainbus {

enum class Stage { kFit, kValidate, kTest, kPredict, kSanityCheck };

/// Lightning's spelling of a stage: "fit", "validate", "test", "predict", "sanity_check".
std::string_view to_string(Stage stage);

}  // namespace trainbus
