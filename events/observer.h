#pragma once
/// Observer: an asynchronous subscriber with the Callback hook vocabulary (see ObserverPool).

#include <string>

#include "events/all.h"
#include "events/event_filter.h"

namespace trainbus {

/// The event types (and filters) an observer receives.
class EventSelection {
 public:
  /// Receives every event type.
  EventSelection& all();
  /// Receives E, the occurrences `filter` lets through.
  template <class E>
  EventSelection& add(EventFilter filter = {}) {
    filters_[events::kEventIndex<E>] = filter;
    selected_[events::kEventIndex<E>] = true;
    return *this;
  }
  bool contains(std::size_t index) const noexcept { return selected_[index]; }
  const EventFilter& filter(std::size_t index) const noexcept { return filters_[index]; }

 private:
  bool selected_[events::AllEvents::size] = {};
  EventFilter filters_[events::AllEvents::size];
};

/// An asynchronous observer: the same hooks as Callback, named alike, but each receives an
/// immutable snapshot of its event and no Trainer or Module. Runs on the ObserverPool's threads,
/// on a strand of its own: it sees its events in publish order and never concurrently with itself,
/// while different observers run in parallel. It may be slow (disk, network, serialisation): the
/// training thread only copies the event and posts it. An exception from a hook is caught on the
/// pool and raised on the training thread as an ObserverError naming this observer (or, with
/// ObserverOptions::on_error = kDisable, reported once and the observer switched off).
class Observer {
 public:
  virtual ~Observer();

  /// Name in errors and stats; default: the class name.
  virtual std::string name() const;
  /// The events to receive, optionally filtered. Default: every event type. Override it to keep
  /// the training thread from copying events this observer ignores.
  virtual void select_events(EventSelection& selection) const;
  /// true: tensor fields (losses, outputs) arrive as detached CPU copies taken on the training
  /// thread; false (default): they arrive empty and cost nothing.
  virtual bool wants_tensors() const { return false; }

  // ---- hooks, one per event type, in the order a fit meets them ----
  virtual void setup(const events::Setup& event) { (void)event; }
  virtual void on_fit_start(const events::FitStart& event) { (void)event; }
  virtual void on_sanity_check_start(const events::SanityCheckStart& event) { (void)event; }
  virtual void on_sanity_check_end(const events::SanityCheckEnd& event) { (void)event; }
  virtual void on_train_start(const events::TrainStart& event) { (void)event; }
  virtual void on_train_epoch_start(const events::TrainEpochStart& event) { (void)event; }
  virtual void on_train_batch_start(const events::TrainBatchStart& event) { (void)event; }
  virtual void on_before_zero_grad(const events::BeforeZeroGrad& event) { (void)event; }
  virtual void on_before_backward(const events::BeforeBackward& event) { (void)event; }
  virtual void on_after_backward(const events::AfterBackward& event) { (void)event; }
  virtual void on_before_optimizer_step(const events::BeforeOptimizerStep& event) { (void)event; }
  virtual void on_after_optimizer_step(const events::AfterOptimizerStep& event) { (void)event; }
  virtual void on_train_batch_end(const events::TrainBatchEnd& event) { (void)event; }
  virtual void on_train_epoch_end(const events::TrainEpochEnd& event) { (void)event; }
  virtual void on_train_end(const events::TrainEnd& event) { (void)event; }
  virtual void on_validation_start(const events::ValidationStart& event) { (void)event; }
  virtual void on_validation_epoch_start(const events::ValidationEpochStart& event) { (void)event; }
  virtual void on_validation_batch_start(const events::ValidationBatchStart& event) { (void)event; }
  virtual void on_validation_batch_end(const events::ValidationBatchEnd& event) { (void)event; }
  virtual void on_validation_epoch_end(const events::ValidationEpochEnd& event) { (void)event; }
  virtual void on_validation_end(const events::ValidationEnd& event) { (void)event; }
  virtual void on_test_start(const events::TestStart& event) { (void)event; }
  virtual void on_test_epoch_start(const events::TestEpochStart& event) { (void)event; }
  virtual void on_test_batch_start(const events::TestBatchStart& event) { (void)event; }
  virtual void on_test_batch_end(const events::TestBatchEnd& event) { (void)event; }
  virtual void on_test_epoch_end(const events::TestEpochEnd& event) { (void)event; }
  virtual void on_test_end(const events::TestEnd& event) { (void)event; }
  virtual void on_predict_start(const events::PredictStart& event) { (void)event; }
  virtual void on_predict_epoch_start(const events::PredictEpochStart& event) { (void)event; }
  virtual void on_predict_batch_start(const events::PredictBatchStart& event) { (void)event; }
  virtual void on_predict_batch_end(const events::PredictBatchEnd& event) { (void)event; }
  virtual void on_predict_epoch_end(const events::PredictEpochEnd& event) { (void)event; }
  virtual void on_predict_end(const events::PredictEnd& event) { (void)event; }
  virtual void on_save_checkpoint(const events::SaveCheckpoint& event) { (void)event; }
  virtual void on_load_checkpoint(const events::LoadCheckpoint& event) { (void)event; }
  virtual void on_exception(const events::Exception& event) { (void)event; }
  virtual void on_fit_end(const events::FitEnd& event) { (void)event; }
  virtual void teardown(const events::Teardown& event) { (void)event; }
};

}  // namespace trainbus
