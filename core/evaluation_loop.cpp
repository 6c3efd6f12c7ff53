// Trainer::validate / test / predict and the evaluation loop that fit's validation shares
// (Lightning's _EvaluationLoop and _PredictionLoop).
#include <algorithm>
#include <numeric>
#include <optional>

#include <boost/core/demangle.hpp>

#include <torch/utils.h>

#include "base/errors.h"
#include "core/detail/trainer_hooks.h"
#include "core/tensor_ref.h"
#include "core/trainer.h"

namespace trainbus {
namespace {

// The six lifecycle points of one evaluation stage, so that validation and test share one loop.
struct ValidationHooks {
  using Start = events::ValidationStart;
  using EpochStart = events::ValidationEpochStart;
  using BatchStart = events::ValidationBatchStart;
  using BatchEnd = events::ValidationBatchEnd;
  using EpochEnd = events::ValidationEpochEnd;
  using End = events::ValidationEnd;
  static constexpr std::string_view kStep = "validation_step";
  static constexpr MetricsCollector::Results kResults = MetricsCollector::Results::kValidation;

  static void start(Callback& c, Trainer& t, Module& m) { c.on_validation_start(t, m); }
  static void start(Module& m) { m.on_validation_start(); }
  static void epoch_start(Callback& c, Trainer& t, Module& m) { c.on_validation_epoch_start(t, m); }
  static void epoch_start(Module& m) { m.on_validation_epoch_start(); }
  static void batch_start(Callback& c, Trainer& t, Module& m, const Batch& b, int64_t i,
                          int64_t dl) {
    c.on_validation_batch_start(t, m, b, i, dl);
  }
  static void batch_start(Module& m, const Batch& b, int64_t i, int64_t dl) {
    m.on_validation_batch_start(b, i, dl);
  }
  static StepOutput step(Module& m, const Batch& b, int64_t i, int64_t dl) {
    return m.validation_step(b, i, dl);
  }
  static void batch_end(Callback& c, Trainer& t, Module& m, const StepOutput& o, const Batch& b,
                        int64_t i, int64_t dl) {
    c.on_validation_batch_end(t, m, o, b, i, dl);
  }
  static void batch_end(Module& m, const StepOutput& o, const Batch& b, int64_t i, int64_t dl) {
    m.on_validation_batch_end(o, b, i, dl);
  }
  static void epoch_end(Callback& c, Trainer& t, Module& m) { c.on_validation_epoch_end(t, m); }
  static void epoch_end(Module& m) { m.on_validation_epoch_end(); }
  static void end(Callback& c, Trainer& t, Module& m) { c.on_validation_end(t, m); }
  static void end(Module& m) { m.on_validation_end(); }
};

struct TestHooks {
  using Start = events::TestStart;
  using EpochStart = events::TestEpochStart;
  using BatchStart = events::TestBatchStart;
  using BatchEnd = events::TestBatchEnd;
  using EpochEnd = events::TestEpochEnd;
  using End = events::TestEnd;
  static constexpr std::string_view kStep = "test_step";
  static constexpr MetricsCollector::Results kResults = MetricsCollector::Results::kTest;

  static void start(Callback& c, Trainer& t, Module& m) { c.on_test_start(t, m); }
  static void start(Module& m) { m.on_test_start(); }
  static void epoch_start(Callback& c, Trainer& t, Module& m) { c.on_test_epoch_start(t, m); }
  static void epoch_start(Module& m) { m.on_test_epoch_start(); }
  static void batch_start(Callback& c, Trainer& t, Module& m, const Batch& b, int64_t i,
                          int64_t dl) {
    c.on_test_batch_start(t, m, b, i, dl);
  }
  static void batch_start(Module& m, const Batch& b, int64_t i, int64_t dl) {
    m.on_test_batch_start(b, i, dl);
  }
  static StepOutput step(Module& m, const Batch& b, int64_t i, int64_t dl) {
    return m.test_step(b, i, dl);
  }
  static void batch_end(Callback& c, Trainer& t, Module& m, const StepOutput& o, const Batch& b,
                        int64_t i, int64_t dl) {
    c.on_test_batch_end(t, m, o, b, i, dl);
  }
  static void batch_end(Module& m, const StepOutput& o, const Batch& b, int64_t i, int64_t dl) {
    m.on_test_batch_end(o, b, i, dl);
  }
  static void epoch_end(Callback& c, Trainer& t, Module& m) { c.on_test_epoch_end(t, m); }
  static void epoch_end(Module& m) { m.on_test_epoch_end(); }
  static void end(Callback& c, Trainer& t, Module& m) { c.on_test_end(t, m); }
  static void end(Module& m) { m.on_test_end(); }
};

// Puts the module in eval mode for the scope and restores its previous mode.
class EvalModeScope {
 public:
  explicit EvalModeScope(Module& module) : module_(module), was_training_(module.is_training()) {
    module_.eval();
  }
  ~EvalModeScope() { module_.train(was_training_); }
  EvalModeScope(const EvalModeScope&) = delete;
  EvalModeScope& operator=(const EvalModeScope&) = delete;

 private:
  Module& module_;
  bool was_training_;
};

}  // namespace

template <class Hooks>
Metrics Trainer::run_eval_loop(const std::vector<std::shared_ptr<DataLoader>>& loaders,
                               const std::vector<int64_t>& num_batches) {
  const int64_t total_batches = std::accumulate(num_batches.begin(), num_batches.end(), int64_t{0});
  evaluation_results_.clear();
  if (total_batches == 0) return {};  // as Lightning: no hooks at all for an empty loop
  if (fn_ == Stage::kFit && phase_ != Phase::kSanityChecking)
    module_->zero_grad(/*set_to_none=*/true);
  if (phase_ != Phase::kSanityChecking) {
    phase_ =
        Hooks::kResults == MetricsCollector::Results::kTest ? Phase::kTesting : Phase::kValidating;
  }
  EvalModeScope eval_mode(*module_);
  torch::NoGradGuard no_grad;
  // Every rank evaluates with rank 0's BatchNorm statistics, as with DDP's broadcast_buffers:
  // the last training step updated each rank's with its own batch.
  if (world_size() > 1) strategy_->before_evaluation();
  metrics_.reset(Hooks::kResults);
  eval_batches_begun_ = 0;  // across the loaders, as Lightning's batch_progress

  using Start = typename Hooks::Start;
  using EpochStart = typename Hooks::EpochStart;
  using BatchStart = typename Hooks::BatchStart;
  using BatchEnd = typename Hooks::BatchEnd;
  using EpochEnd = typename Hooks::EpochEnd;
  using End = typename Hooks::End;
  call_hooks<Start>([&](Callback& c) { Hooks::start(c, *this, *module_); },
                    [](Module& m) { Hooks::start(m); }, [&] { return Start{event_progress()}; });
  call_hooks<EpochStart>([&](Callback& c) { Hooks::epoch_start(c, *this, *module_); },
                         [](Module& m) { Hooks::epoch_start(m); },
                         [&] {
                           return EpochStart{event_progress(), total_batches};
                         });
  // As Lightning's sequential CombinedLoader: the loaders one after another, each from batch 0.
  const bool several = loaders.size() > 1;
  for (size_t loader_idx = 0; loader_idx < loaders.size(); ++loader_idx) {
    DataLoader& loader = *loaders[loader_idx];
    const auto dataloader_idx = static_cast<int64_t>(loader_idx);
    metrics_.set_dataloader_idx(several ? std::optional<int64_t>(dataloader_idx) : std::nullopt);
    loader.set_epoch(progress_.current_epoch);
    for (int64_t batch_idx = 0; batch_idx < num_batches[loader_idx]; ++batch_idx) {
      const Batch batch = data::to_device(loader.batch(batch_idx), device());
      const events::BatchInfo info{batch_idx, data::batch_size_of(batch), dataloader_idx};
      ++eval_batches_begun_;
      metrics_.set_current_batch_size(info.batch_size);
      metrics_.begin_batch();
      call_hooks<BatchStart>(
          [&](Callback& c) {
            Hooks::batch_start(c, *this, *module_, batch, batch_idx, dataloader_idx);
          },
          [&](Module& m) { Hooks::batch_start(m, batch, batch_idx, dataloader_idx); },
          [&] {
            return BatchStart{event_progress(), info};
          });
      StepOutput outputs;
      {
        FxScope scope(current_fx_, Hooks::kStep);
        outputs = Hooks::step(*module_, batch, batch_idx, dataloader_idx);
      }
      call_hooks<BatchEnd>(
          [&](Callback& c) {
            Hooks::batch_end(c, *this, *module_, outputs, batch, batch_idx, dataloader_idx);
          },
          [&](Module& m) { Hooks::batch_end(m, outputs, batch, batch_idx, dataloader_idx); },
          [&] {
            return BatchEnd{event_progress(), info, metrics_.batch_logged(),
                            make_tensor_ref(outputs)};
          });
      check_observers();
    }
  }
  metrics_.set_dataloader_idx(std::nullopt);  // the epoch-end hooks log for every loader
  synchronize_epoch_metrics(Hooks::kResults);
  Metrics epoch_metrics = metrics_.end_epoch(Hooks::kResults);
  call_hooks<EpochEnd>([&](Callback& c) { Hooks::epoch_end(c, *this, *module_); },
                       [](Module& m) { Hooks::epoch_end(m); },
                       [&] {
                         return EpochEnd{event_progress(), epoch_metrics};
                       });
  // Values logged in the epoch-end hooks are part of the result too.
  epoch_metrics = metrics_.epoch_values(Hooks::kResults);
  // As Lightning's _EvaluationLoop.on_run_end: one result per loader, what was logged while it
  // ran and what the epoch-end hooks logged. None for the sanity check.
  if (phase_ != Phase::kSanityChecking) {
    const Metrics shared = metrics_.epoch_values(Hooks::kResults, std::nullopt);
    for (size_t loader_idx = 0; loader_idx < loaders.size(); ++loader_idx) {
      Metrics result =
          several ? metrics_.epoch_values(Hooks::kResults, static_cast<int64_t>(loader_idx))
                  : Metrics{};
      for (const auto& [name, value] : shared) result[name] = value;
      evaluation_results_.push_back(std::move(result));
    }
  }
  call_hooks<End>([&](Callback& c) { Hooks::end(c, *this, *module_); },
                  [](Module& m) { Hooks::end(m); },
                  [&] {
                    return End{event_progress(), metrics_.callback_metrics()};
                  });
  check_observers();
  return epoch_metrics;
}

Metrics Trainer::run_evaluation(EvalKind kind, std::optional<int64_t> max_batches_per_loader) {
  const bool validation = kind == EvalKind::kValidation;
  std::vector<int64_t> num_batches =
      validation ? val_batches_per_loader_ : test_batches_per_loader_;
  // The sanity check's num_sanity_val_steps is per loader, as Lightning's max_batches.
  if (max_batches_per_loader)
    for (int64_t& batches : num_batches) batches = std::min(batches, *max_batches_per_loader);
  if (validation) return run_eval_loop<ValidationHooks>(val_loaders_, num_batches);
  return run_eval_loop<TestHooks>(test_loaders_, num_batches);
}

std::vector<std::shared_ptr<DataLoader>> Trainer::require_loaders(
    std::vector<std::shared_ptr<DataLoader>> loaders, const char* getter, bool required) const {
  if (required && loaders.empty()) {
    require_loader(nullptr, getter);  // throws, naming the getter
  }
  for (size_t i = 0; i < loaders.size(); ++i) {
    TRAINBUS_CHECK(loaders[i] != nullptr, "Trainer::", to_string(fn_.value_or(Stage::kFit)), ": ",
                   boost::core::demangle(typeid(*data_).name()), "::", getter, "s() gave ",
                   loaders.size(), " loaders, and loader ", i,
                   " is null; return only loaders (an empty list for none)");
  }
  return loaders;
}

std::vector<int64_t> Trainer::size_eval_loaders(
    const std::vector<std::shared_ptr<DataLoader>>& loaders, const BatchLimit& limit,
    const char* option) const {
  std::vector<int64_t> sizes;
  for (const auto& loader : loaders) sizes.push_back(limit.apply(loader->num_batches(), option));
  return sizes;
}

Metrics Trainer::validate(Module& module, DataModule& data, const EvaluateOptions& options) {
  Metrics result;
  run_entry_point(Stage::kValidate, module, data, [&] {
    metrics_.clear();
    evaluation_results_.clear();  // no earlier run's results if this one fails before its loop
    data_->prepare_data();
    module_->prepare_data();
    call_setup_hooks(Stage::kValidate);
    module_->configure_model();
    checkpoints_.load_for_evaluation(options.ckpt_path());
    module_->to(device());
    module_->zero_grad(/*set_to_none=*/true);
    val_loaders_ = require_loaders(data_->val_dataloaders(), "val_dataloader", true);
    for (const auto& loader : val_loaders_) distribute(*loader);
    val_batches_per_loader_ =
        size_eval_loaders(val_loaders_, options_.limit_val_batches(), "limit_val_batches");
    num_val_batches_ =
        std::accumulate(val_batches_per_loader_.begin(), val_batches_per_loader_.end(), int64_t{0});
    result = run_evaluation(EvalKind::kValidation);
    phase_ = Phase::kIdle;
    call_teardown_hooks(Stage::kValidate);
  });
  return result;
}

Metrics Trainer::test(Module& module, DataModule& data, const EvaluateOptions& options) {
  Metrics result;
  run_entry_point(Stage::kTest, module, data, [&] {
    metrics_.clear();
    evaluation_results_.clear();
    data_->prepare_data();
    module_->prepare_data();
    call_setup_hooks(Stage::kTest);
    module_->configure_model();
    checkpoints_.load_for_evaluation(options.ckpt_path());
    module_->to(device());
    module_->zero_grad(/*set_to_none=*/true);
    test_loaders_ = require_loaders(data_->test_dataloaders(), "test_dataloader", true);
    for (const auto& loader : test_loaders_) distribute(*loader);
    test_batches_per_loader_ =
        size_eval_loaders(test_loaders_, options_.limit_test_batches(), "limit_test_batches");
    num_test_batches_ = std::accumulate(test_batches_per_loader_.begin(),
                                        test_batches_per_loader_.end(), int64_t{0});
    result = run_evaluation(EvalKind::kTest);
    phase_ = Phase::kIdle;
    call_teardown_hooks(Stage::kTest);
  });
  return result;
}

std::vector<at::Tensor> Trainer::predict(Module& module, DataModule& data,
                                         const PredictOptions& options) {
  std::vector<at::Tensor> predictions;
  run_entry_point(Stage::kPredict, module, data, [&] {
    // What is kept goes with the run, also when it fails: no stale list for the next caller.
    struct ClearOnExit {
      std::vector<at::Tensor>& kept;
      std::shared_ptr<DataLoader>& loader;
      ~ClearOnExit() {
        kept.clear();
        loader.reset();
      }
    } clear_on_exit{predictions_, predict_loader_};
    predictions_.clear();
    data_->prepare_data();
    module_->prepare_data();
    call_setup_hooks(Stage::kPredict);
    module_->configure_model();
    checkpoints_.load_for_evaluation(options.ckpt_path());
    module_->to(device());
    module_->zero_grad(/*set_to_none=*/true);
    predict_loader_ = require_loader(data_->predict_dataloader(), "predict_dataloader");
    const std::shared_ptr<DataLoader> loader = predict_loader_;
    distribute(*loader);  // each rank predicts its share, as Lightning's
    num_predict_batches_ =
        options_.limit_predict_batches().apply(loader->num_batches(), "limit_predict_batches");
    const bool epoch_writer =
        std::any_of(callbacks_.begin(), callbacks_.end(),
                    [](const auto& callback) { return callback->wants_epoch_predictions(); });
    run_prediction(*loader, num_predict_batches_, options.return_predictions() || epoch_writer,
                   options.return_predictions());
    phase_ = Phase::kIdle;
    call_teardown_hooks(Stage::kPredict);
    if (options.return_predictions()) predictions = std::move(predictions_);
  });
  return predictions;
}

void Trainer::run_prediction(DataLoader& loader, int64_t num_batches, bool keep_predictions,
                             bool return_predictions) {
  if (num_batches == 0) return;
  phase_ = Phase::kPredicting;
  EvalModeScope eval_mode(*module_);
  torch::NoGradGuard no_grad;
  loader.set_epoch(0);
  eval_batches_begun_ = 0;
  call_hooks<events::PredictStart>([&](Callback& c) { c.on_predict_start(*this, *module_); },
                                   [](Module& m) { m.on_predict_start(); },
                                   [&] { return events::PredictStart{event_progress()}; });
  call_hooks<events::PredictEpochStart>(
      [&](Callback& c) { c.on_predict_epoch_start(*this, *module_); },
      [](Module& m) { m.on_predict_epoch_start(); },
      [&] {
        return events::PredictEpochStart{event_progress(), num_batches};
      });
  if (keep_predictions) predictions_.reserve(static_cast<size_t>(num_batches));
  for (int64_t batch_idx = 0; batch_idx < num_batches; ++batch_idx) {
    const Batch batch = data::to_device(loader.batch(batch_idx), device());
    const events::BatchInfo info{batch_idx, data::batch_size_of(batch), 0};
    eval_batches_begun_ = batch_idx + 1;
    call_hooks<events::PredictBatchStart>(
        [&](Callback& c) { c.on_predict_batch_start(*this, *module_, batch, batch_idx); },
        [&](Module& m) { m.on_predict_batch_start(batch, batch_idx); },
        [&] {
          return events::PredictBatchStart{event_progress(), info};
        });
    at::Tensor outputs;
    {
      FxScope scope(current_fx_, "predict_step");
      outputs = module_->predict_step(batch, batch_idx);
    }
    call_hooks<events::PredictBatchEnd>(
        [&](Callback& c) { c.on_predict_batch_end(*this, *module_, outputs, batch, batch_idx); },
        [&](Module& m) { m.on_predict_batch_end(outputs, batch, batch_idx); },
        [&] {
          return events::PredictBatchEnd{event_progress(), info, make_tensor_ref(outputs)};
        });
    // On the CPU, as Lightning's: a long predict does not fill the device with its results.
    if (keep_predictions) predictions_.push_back(outputs.to(c10::Device(c10::kCPU)));
    check_observers();
  }
  call_hooks<events::PredictEpochEnd>([&](Callback& c) { c.on_predict_epoch_end(*this, *module_); },
                                      [](Module& m) { m.on_predict_epoch_end(); },
                                      [&] { return events::PredictEpochEnd{event_progress()}; });
  if (!return_predictions) predictions_.clear();  // kept for the epoch writers only
  call_hooks<events::PredictEnd>([&](Callback& c) { c.on_predict_end(*this, *module_); },
                                 [](Module& m) { m.on_predict_end(); },
                                 [&] { return events::PredictEnd{event_progress()}; });
}

}  // namespace trainbus
