#include "events/all.h"

#include <cctype>
#include <set>
#include <string>

#include <catch2/catch.hpp>

namespace events = trainbus::events;

TEST_CASE("Every event type has a unique snake_case name and index", "[events]") {
  std::set<std::string> names;
  std::set<std::size_t> indices;
  std::size_t visited = 0;
  events::for_each_event_type([&](auto tag) {
    using E = typename decltype(tag)::type;
    const std::string name(E::kName);
    INFO(name);
    CHECK_FALSE(name.empty());
    for (char c : name) CHECK((std::islower(static_cast<unsigned char>(c)) || c == '_'));
    names.insert(name);
    indices.insert(events::kEventIndex<E>);
    ++visited;
  });
  CHECK(visited == events::AllEvents::size);
  CHECK(names.size() == visited);
  CHECK(indices.size() == visited);
}

TEST_CASE("The event list covers every Lightning hook plus trainbus's own events", "[events]") {
  // Lightning's Callback hooks without the `on_` prefix (callback.py), and trainbus's additions:
  // after_optimizer_step, the decisions stop_requested, checkpoint_committed and
  // checkpoint_removed, and metrics_logged and hyperparams_logged (values logged straight to the
  // loggers).
  const std::set<std::string> expected{"setup",
                                       "teardown",
                                       "fit_start",
                                       "fit_end",
                                       "sanity_check_start",
                                       "sanity_check_end",
                                       "train_start",
                                       "train_end",
                                       "train_epoch_start",
                                       "train_epoch_end",
                                       "train_batch_start",
                                       "train_batch_end",
                                       "validation_start",
                                       "validation_end",
                                       "validation_epoch_start",
                                       "validation_epoch_end",
                                       "validation_batch_start",
                                       "validation_batch_end",
                                       "test_start",
                                       "test_end",
                                       "test_epoch_start",
                                       "test_epoch_end",
                                       "test_batch_start",
                                       "test_batch_end",
                                       "predict_start",
                                       "predict_end",
                                       "predict_epoch_start",
                                       "predict_epoch_end",
                                       "predict_batch_start",
                                       "predict_batch_end",
                                       "before_backward",
                                       "after_backward",
                                       "before_optimizer_step",
                                       "before_zero_grad",
                                       "save_checkpoint",
                                       "load_checkpoint",
                                       "exception",
                                       "after_optimizer_step",
                                       "stop_requested",
                                       "checkpoint_committed",
                                       "checkpoint_removed",
                                       "metrics_logged",
                                       "hyperparams_logged"};
  std::set<std::string> names;
  events::for_each_event_type(
      [&](auto tag) { names.insert(std::string(decltype(tag)::type::kName)); });
  CHECK(names == expected);
}
