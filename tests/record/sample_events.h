#pragma once
// Events with a distinct, non-default value in every field, for round trips through recordings.

#include <string>

#include "events/all.h"
#include "record/detail/event_fields.h"

namespace trainbus::testing {

/// An E whose every field differs from its default (`seed` varies the numbers).
template <class E>
E sample_event(int64_t seed = 0) {
  namespace fields = trainbus::record::detail;
  E event{};
  if constexpr (fields::Has_stage<E>::value) event.stage = Stage::kTest;
  if constexpr (fields::Has_progress<E>::value) event.progress = {seed + 1, seed + 2};
  if constexpr (fields::Has_batch<E>::value) event.batch = {seed + 3, 4, 1};
  if constexpr (fields::Has_loss<E>::value) {
    if constexpr (std::is_same_v<decltype(event.loss), double>) event.loss = 0.25 + seed;
  }
  if constexpr (fields::Has_metrics<E>::value) event.metrics = {{"acc", 0.5}, {"loss", -1.5}};
  if constexpr (fields::Has_callback_metrics<E>::value) {
    event.callback_metrics = {{"val_loss", 0.75 + seed}};
  }
  if constexpr (fields::Has_progress_bar<E>::value) event.progress_bar = {{"loss", 1e-300}};
  if constexpr (fields::Has_hparams<E>::value) event.hparams = {{"lr", "1e-04"}, {"a: b", "c"}};
  if constexpr (fields::Has_num_batches<E>::value) event.num_batches = 7 + seed;
  if constexpr (fields::Has_max_epochs<E>::value) event.max_epochs = 9;
  if constexpr (fields::Has_optimizer_idx<E>::value) event.optimizer_idx = 1;
  if constexpr (fields::Has_batch_idx<E>::value) event.batch_idx = 11 + seed;
  if constexpr (fields::Has_path<E>::value) event.path = "/runs/version_0/epoch=1.ckpt";
  if constexpr (fields::Has_type<E>::value) event.type = "std::runtime_error";
  if constexpr (fields::Has_message<E>::value) event.message = "boom\nsecond line \xc3\xa9";
  if constexpr (fields::Has_reason<E>::value) event.reason = "EarlyStopping: no improvement";
  if constexpr (fields::Has_num_val_batches<E>::value) event.num_val_batches = 5 + seed;
  if constexpr (fields::Has_bytes<E>::value) event.bytes = (int64_t{1} << 40) + seed;
  if constexpr (fields::Has_monitor<E>::value) event.monitor = "val/acc";
  if constexpr (fields::Has_score<E>::value) event.score = -0.125 + seed;
  if constexpr (fields::Has_learning_rates<E>::value) {
    event.learning_rates = {{"lr-Adam", 1e-3}, {"lr-Adam/pg1", 5e-4}, {"lr-Adam-momentum", 0.9}};
  }
  if constexpr (fields::Has_step<E>::value) event.step = 49 + seed;
  if constexpr (fields::Has_logger<E>::value) event.logger = "CsvLogger";
  if constexpr (fields::Has_asked_in<E>::value) event.asked_in = "training_step";
  if constexpr (fields::Has_global_rank<E>::value) event.global_rank = 5;
  if constexpr (fields::Has_local_rank<E>::value) event.local_rank = 1;
  if constexpr (fields::Has_world_size<E>::value) event.world_size = 8 + seed;
  return event;
}

/// Whether every recorded field (tensors excepted) of `a` and `b` is equal.
template <class E>
bool same_recorded_fields(const E& a, const E& b) {
  namespace fields = trainbus::record::detail;
  bool same = true;
  if constexpr (fields::Has_stage<E>::value) same &= a.stage == b.stage;
  if constexpr (fields::Has_progress<E>::value) same &= a.progress == b.progress;
  if constexpr (fields::Has_batch<E>::value) same &= a.batch == b.batch;
  if constexpr (fields::Has_loss<E>::value) {
    if constexpr (std::is_same_v<decltype(a.loss), double>) same &= a.loss == b.loss;
  }
  if constexpr (fields::Has_metrics<E>::value) same &= a.metrics == b.metrics;
  if constexpr (fields::Has_callback_metrics<E>::value) {
    same &= a.callback_metrics == b.callback_metrics;
  }
  if constexpr (fields::Has_progress_bar<E>::value) same &= a.progress_bar == b.progress_bar;
  if constexpr (fields::Has_hparams<E>::value) same &= a.hparams == b.hparams;
  if constexpr (fields::Has_num_batches<E>::value) same &= a.num_batches == b.num_batches;
  if constexpr (fields::Has_max_epochs<E>::value) same &= a.max_epochs == b.max_epochs;
  if constexpr (fields::Has_optimizer_idx<E>::value) same &= a.optimizer_idx == b.optimizer_idx;
  if constexpr (fields::Has_batch_idx<E>::value) same &= a.batch_idx == b.batch_idx;
  if constexpr (fields::Has_path<E>::value) same &= a.path == b.path;
  if constexpr (fields::Has_type<E>::value) same &= a.type == b.type;
  if constexpr (fields::Has_message<E>::value) same &= a.message == b.message;
  if constexpr (fields::Has_reason<E>::value) same &= a.reason == b.reason;
  if constexpr (fields::Has_num_val_batches<E>::value) {
    same &= a.num_val_batches == b.num_val_batches;
  }
  if constexpr (fields::Has_bytes<E>::value) same &= a.bytes == b.bytes;
  if constexpr (fields::Has_monitor<E>::value) same &= a.monitor == b.monitor;
  if constexpr (fields::Has_score<E>::value) same &= a.score == b.score;
  if constexpr (fields::Has_learning_rates<E>::value) same &= a.learning_rates == b.learning_rates;
  if constexpr (fields::Has_step<E>::value) same &= a.step == b.step;
  if constexpr (fields::Has_logger<E>::value) same &= a.logger == b.logger;
  if constexpr (fields::Has_asked_in<E>::value) same &= a.asked_in == b.asked_in;
  if constexpr (fields::Has_global_rank<E>::value) same &= a.global_rank == b.global_rank;
  if constexpr (fields::Has_local_rank<E>::value) same &= a.local_rank == b.local_rank;
  if constexpr (fields::Has_world_size<E>::value) same &= a.world_size == b.world_size;
  return same;
}

}  // namespace trainbus::testing
