#pragma once
/// Private to core/: what the ranks all-reduce to agree on a checkpoint save (see
/// CheckpointConnector::agree_on_save). Not installed.

#include <cmath>
#include <cstdint>
#include <optional>
#include <vector>

namespace trainbus::detail {

/// The two agreements of a save under DDP.
enum class SavePhase {
  kPartsReady = 1,  ///< every rank ran its hooks (rank 0 took its snapshot); nothing is written
  kWritten = 2,     ///< rank 0 wrote a synchronous save
};

/// One rank's part of an agreement, and after the all-reduce the ranks' together.
struct SaveAgreement {
  SavePhase phase = SavePhase::kPartsReady;
  int64_t global_step = 0;
  /// The lowest rank whose part of the save failed, or world_size when none did.
  int64_t first_failed = 0;
};

// Two values all-reduced with MIN, one collective: the minimum of key * (world + 1) + failed rank
// (so the lowest failed rank among the ranks with the lowest key) and of -key (the highest key).
// The key says which save this is (phase and step) and carries a marker, so that a rank paired
// with another collective of two doubles is very unlikely to read a valid agreement. A single
// double, as the stop vote (reduce_boolean_decision), would pair with it without an error; Gloo
// makes a rank that all-reduces 2 values where the others reduce 1 wait until the timeout (as it
// does the others), where with other lengths it can deliver garbage or abort the process.
inline constexpr int64_t kSaveAgreementMarker = int64_t{1} << 30;
inline constexpr int64_t kSaveAgreementSteps = int64_t{1} << 28;     // steps compared modulo this
inline constexpr int64_t kSaveAgreementMaxWorld = int64_t{1} << 20;  // keeps values below 2^53

inline int64_t save_agreement_key(const SaveAgreement& agreement) {
  return kSaveAgreementMarker + (agreement.global_step % kSaveAgreementSteps) * 4 +
         static_cast<int64_t>(agreement.phase);
}

/// This rank's values for the all-reduce (world_size <= kSaveAgreementMaxWorld).
inline std::vector<double> encode_save_agreement(const SaveAgreement& agreement,
                                                 int64_t world_size) {
  const int64_t key = save_agreement_key(agreement);
  return {static_cast<double>(key * (world_size + 1) + agreement.first_failed),
          -static_cast<double>(key)};
}

/// The ranks' agreement from the reduced values, or nullopt if they were not all in the same
/// save (another phase or step, or another collective paired with this one).
inline std::optional<SaveAgreement> decode_save_agreement(const std::vector<double>& reduced,
                                                          int64_t world_size) {
  if (reduced.size() != 2 || !std::isfinite(reduced[0]) || !std::isfinite(reduced[1]) ||
      reduced[0] < 0 || reduced[1] > 0 || reduced[0] != std::floor(reduced[0]) ||
      reduced[1] != std::floor(reduced[1])) {
    return std::nullopt;
  }
  const auto weighted = static_cast<int64_t>(reduced[0]);
  const int64_t lowest_key = weighted / (world_size + 1);
  const auto highest_key = static_cast<int64_t>(-reduced[1]);
  if (lowest_key != highest_key || lowest_key < kSaveAgreementMarker ||
      lowest_key >= kSaveAgreementMarker + kSaveAgreementSteps * 4) {
    return std::nullopt;
  }
  const int64_t code = lowest_key - kSaveAgreementMarker;
  const int64_t phase = code % 4;
  if (phase != static_cast<int64_t>(SavePhase::kPartsReady) &&
      phase != static_cast<int64_t>(SavePhase::kWritten)) {
    return std::nullopt;
  }
  SaveAgreement agreement;
  agreement.phase = static_cast<SavePhase>(phase);
  agreement.global_step = code / 4;
  agreement.first_failed = weighted - lowest_key * (world_size + 1);
  return agreement;
}

}  // namespace trainbus::detail
