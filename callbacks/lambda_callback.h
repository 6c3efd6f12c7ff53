#pragma once
/// LambdaCallback: a callback made of functions, one per hook (Lightning's LambdaCallback).

#include <exception>
#include <functional>

#include <ATen/core/Tensor.h>

#include "base/arg.h"
#include "core/callback.h"

namespace trainbus::callbacks {

// Every hook of Callback: X(name, (, parameters after Trainer&, Module&), (, arguments to
// forward)), each list with a leading comma when it is not empty.
#define TRAINBUS_LAMBDA_HOOKS(X)                                                                   \
  X(setup, (, Stage stage), (, stage))                                                             \
  X(teardown, (, Stage stage), (, stage))                                                          \
  X(on_fit_start, (), ())                                                                          \
  X(on_fit_end, (), ())                                                                            \
  X(on_sanity_check_start, (), ())                                                                 \
  X(on_sanity_check_end, (), ())                                                                   \
  X(on_train_start, (), ())                                                                        \
  X(on_train_end, (), ())                                                                          \
  X(on_train_epoch_start, (), ())                                                                  \
  X(on_train_epoch_end, (), ())                                                                    \
  X(on_train_batch_start, (, const Batch& batch, int64_t batch_idx), (, batch, batch_idx))         \
  X(on_train_batch_end, (, const StepOutput& outputs, const Batch& batch, int64_t batch_idx),      \
    (, outputs, batch, batch_idx))                                                                 \
  X(on_validation_start, (), ())                                                                   \
  X(on_validation_end, (), ())                                                                     \
  X(on_validation_epoch_start, (), ())                                                             \
  X(on_validation_epoch_end, (), ())                                                               \
  X(on_validation_batch_start, (, const Batch& batch, int64_t batch_idx), (, batch, batch_idx))    \
  X(on_validation_batch_end, (, const StepOutput& outputs, const Batch& batch, int64_t batch_idx), \
    (, outputs, batch, batch_idx))                                                                 \
  X(on_test_start, (), ())                                                                         \
  X(on_test_end, (), ())                                                                           \
  X(on_test_epoch_start, (), ())                                                                   \
  X(on_test_epoch_end, (), ())                                                                     \
  X(on_test_batch_start, (, const Batch& batch, int64_t batch_idx), (, batch, batch_idx))          \
  X(on_test_batch_end, (, const StepOutput& outputs, const Batch& batch, int64_t batch_idx),       \
    (, outputs, batch, batch_idx))                                                                 \
  X(on_predict_start, (), ())                                                                      \
  X(on_predict_end, (), ())                                                                        \
  X(on_predict_epoch_start, (), ())                                                                \
  X(on_predict_epoch_end, (), ())                                                                  \
  X(on_predict_batch_start, (, const Batch& batch, int64_t batch_idx), (, batch, batch_idx))       \
  X(on_predict_batch_end, (, const at::Tensor& outputs, const Batch& batch, int64_t batch_idx),    \
    (, outputs, batch, batch_idx))                                                                 \
  X(on_before_zero_grad, (, torch::optim::Optimizer & optimizer), (, optimizer))                   \
  X(on_before_backward, (, const at::Tensor& loss), (, loss))                                      \
  X(on_after_backward, (), ())                                                                     \
  X(on_before_optimizer_step, (, torch::optim::Optimizer & optimizer), (, optimizer))              \
  X(on_after_optimizer_step, (, torch::optim::Optimizer & optimizer), (, optimizer))               \
  X(on_save_checkpoint, (, CheckpointData & checkpoint), (, checkpoint))                           \
  X(on_load_checkpoint, (, CheckpointData & checkpoint), (, checkpoint))                           \
  X(on_exception, (, const std::exception& error), (, error))

// `(Trainer& trainer, Module& module` followed by a hook's parameters: its signature. Kept
// defined, with TRAINBUS_LAMBDA_HOOKS, for code that goes over every hook.
#define TRAINBUS_LAMBDA_PREPEND(...) (Trainer & trainer, Module & module __VA_ARGS__)
#define TRAINBUS_LAMBDA_HOOK_TYPE(name, parameters, arguments) \
  using name##_fn = std::function<void TRAINBUS_LAMBDA_PREPEND parameters>;

/// The functions of a LambdaCallback, one per hook, named as the hooks, each taking the hook's
/// arguments: `LambdaHooks().on_train_start([](Trainer& trainer, Module& module) {...})`. Hooks
/// without a function do nothing.
struct LambdaHooks {
  TRAINBUS_LAMBDA_HOOKS(TRAINBUS_LAMBDA_HOOK_TYPE)
#undef TRAINBUS_LAMBDA_HOOK_TYPE
#define TRAINBUS_LAMBDA_HOOK_ARG(name, parameters, arguments) TRAINBUS_ARG(name##_fn, name);
  TRAINBUS_LAMBDA_HOOKS(TRAINBUS_LAMBDA_HOOK_ARG)
#undef TRAINBUS_LAMBDA_HOOK_ARG
};

/// Runs the function given for each hook, on the training thread, in the callback's place in the
/// order; what a function throws goes through on_exception as a hook's would.
class LambdaCallback : public Callback {
 public:
  explicit LambdaCallback(LambdaHooks hooks) : hooks_(std::move(hooks)) {}

#define TRAINBUS_LAMBDA_HOOK_OVERRIDE(name, parameters, arguments) \
  void name TRAINBUS_LAMBDA_PREPEND parameters override;
  TRAINBUS_LAMBDA_HOOKS(TRAINBUS_LAMBDA_HOOK_OVERRIDE)
#undef TRAINBUS_LAMBDA_HOOK_OVERRIDE

  const LambdaHooks& hooks() const noexcept { return hooks_; }

 private:
  LambdaHooks hooks_;
};

}  // namespace trainbus::callbacks
