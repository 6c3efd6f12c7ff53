#pragma once
/// Private to core/: what the ranks all-reduce to agree on a checkpoint save (see
/// CheckpointConnector::agree_on_save). Not installed.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include "base/crc32c.h"

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
  /// Which save of the step: save_name_hash of the name the save has on every rank.
  int64_t name_hash = 0;
  /// Rank 0 still waits for earlier saves of its writer (no part failed): the ranks agree again.
  bool waiting = false;
};

// Two values all-reduced with MIN, one collective: the minimum of key * (world + 2) + slot (so the
// lowest slot among the ranks with the lowest key) and of -key (the highest key). A slot is the
// rank whose part failed (0 to world - 1), world for a rank 0 that still waits for its writer, or
// world + 1 for all well: a failure wins over the wait, the wait over all well.
// The key says which save this is (step, phase and the hash of the save's name, in that order, so
// that a mismatch tells which differs) and carries a marker, so that a rank paired with another
// collective of two doubles is very unlikely to read a valid agreement. A single double, as the
// stop vote (reduce_boolean_decision), would pair with it without an error; Gloo makes a rank
// that all-reduces 2 values where the others reduce 1 wait until the timeout (as it does the
// others), where with other lengths it can deliver garbage or abort the process.
inline constexpr int kSaveAgreementNameBits = 18;
inline constexpr int kSaveAgreementStepBits = 16;
/// Steps are compared modulo this (65536).
inline constexpr int64_t kSaveAgreementStepModulus = int64_t{1} << kSaveAgreementStepBits;
inline constexpr int64_t kSaveAgreementMarker =
    int64_t{1} << (kSaveAgreementStepBits + 2 + kSaveAgreementNameBits);  // 2^36
// Keeps key * (world + 2) + slot below 2^53, where doubles hold integers exactly.
inline constexpr int64_t kSaveAgreementMaxWorld = (int64_t{1} << 16) - 2;

/// The hash of a save's name for SaveAgreement::name_hash: CRC32C (the same in every build, as
/// std::hash need not be), cut to kSaveAgreementNameBits.
inline int64_t save_name_hash(std::string_view name) {
  return static_cast<int64_t>(crc32c(name) & ((uint32_t{1} << kSaveAgreementNameBits) - 1));
}

/// What the agreement compares of a global step: its low kSaveAgreementStepBits bits (the step
/// modulo kSaveAgreementStepModulus, for a step that is not negative).
inline int64_t compared_step(int64_t global_step) {
  return global_step & (kSaveAgreementStepModulus - 1);
}

inline int64_t save_agreement_key(const SaveAgreement& agreement) {
  const int64_t step = compared_step(agreement.global_step);
  return kSaveAgreementMarker + (step << (2 + kSaveAgreementNameBits)) +
         (static_cast<int64_t>(agreement.phase) << kSaveAgreementNameBits) + agreement.name_hash;
}

/// This rank's values for the all-reduce (world_size <= kSaveAgreementMaxWorld).
inline std::vector<double> encode_save_agreement(const SaveAgreement& agreement,
                                                 int64_t world_size) {
  const int64_t key = save_agreement_key(agreement);
  const int64_t slot = agreement.first_failed < world_size ? agreement.first_failed
                       : agreement.waiting                 ? world_size
                                                           : world_size + 1;
  return {static_cast<double>(key * (world_size + 2) + slot), -static_cast<double>(key)};
}

namespace save_agreement_detail {
// The save a key names (first_failed and waiting left as they are), or nullopt for a value that
// no save agreement has.
inline std::optional<SaveAgreement> from_key(int64_t key) {
  if (key < kSaveAgreementMarker || key >= 2 * kSaveAgreementMarker) return std::nullopt;
  const int64_t code = key - kSaveAgreementMarker;
  const int64_t phase = (code >> kSaveAgreementNameBits) & 3;
  if (phase != static_cast<int64_t>(SavePhase::kPartsReady) &&
      phase != static_cast<int64_t>(SavePhase::kWritten)) {
    return std::nullopt;
  }
  SaveAgreement agreement;
  agreement.phase = static_cast<SavePhase>(phase);
  agreement.global_step = code >> (2 + kSaveAgreementNameBits);
  agreement.name_hash = code & ((int64_t{1} << kSaveAgreementNameBits) - 1);
  return agreement;
}

// The lowest and the highest key of the reduced values, if they are integers.
inline std::optional<std::pair<int64_t, int64_t>> keys(const std::vector<double>& reduced,
                                                       int64_t world_size) {
  if (reduced.size() != 2 || !std::isfinite(reduced[0]) || !std::isfinite(reduced[1]) ||
      reduced[0] < 0 || reduced[1] > 0 || reduced[0] >= 9007199254740992.0 /* 2^53 */ ||
      reduced[1] <= -9007199254740992.0 || reduced[0] != std::floor(reduced[0]) ||
      reduced[1] != std::floor(reduced[1])) {
    return std::nullopt;
  }
  return std::make_pair(static_cast<int64_t>(reduced[0]) / (world_size + 2),
                        static_cast<int64_t>(-reduced[1]));
}
}  // namespace save_agreement_detail

/// The ranks' agreement from the reduced values, or nullopt if they were not all in the same
/// save (another step, phase or name, or another collective paired with this one). Its global
/// step is the compared_step.
inline std::optional<SaveAgreement> decode_save_agreement(const std::vector<double>& reduced,
                                                          int64_t world_size) {
  const auto keys = save_agreement_detail::keys(reduced, world_size);
  if (!keys || keys->first != keys->second) return std::nullopt;
  std::optional<SaveAgreement> agreement = save_agreement_detail::from_key(keys->first);
  if (!agreement) return std::nullopt;
  const int64_t slot = static_cast<int64_t>(reduced[0]) - keys->first * (world_size + 2);
  agreement->first_failed = std::min(slot, world_size);
  agreement->waiting = slot == world_size;
  return agreement;
}

/// The step nearest `step` whose low kSaveAgreementStepBits bits are `low_bits`: another rank's
/// full step from SaveAgreement::global_step (compared_step), for a message.
inline int64_t nearest_step_with_low_bits(int64_t step, int64_t low_bits) {
  constexpr int64_t kModulus = kSaveAgreementStepModulus;
  int64_t nearest = step - compared_step(step) + low_bits;
  if (nearest - step > kModulus / 2) nearest -= kModulus;
  if (step - nearest > kModulus / 2) nearest += kModulus;
  return nearest;
}

/// Where the reduced values are no agreement: the save another rank is in (its compared_step,
/// phase, name hash), one whose key differs from `mine`'s, if the values
/// are those of save agreements; nullopt where another collective paired with this one.
inline std::optional<SaveAgreement> other_save(const std::vector<double>& reduced,
                                               const SaveAgreement& mine, int64_t world_size) {
  const auto keys = save_agreement_detail::keys(reduced, world_size);
  if (!keys) return std::nullopt;
  const auto lowest = save_agreement_detail::from_key(keys->first);
  const auto highest = save_agreement_detail::from_key(keys->second);
  if (!lowest || !highest) return std::nullopt;
  return keys->first != save_agreement_key(mine) ? lowest : highest;
}

}  // namespace trainbus::detail
