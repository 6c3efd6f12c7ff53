// Built-in callbacks from `--callback NAME:key=value,...`: options set, defaults kept, and an
// error naming the spec and what is accepted for anything else.
#include "callbacks/callback_spec.h"

#include "base/errors.h"
#include "callbacks/early_stopping.h"
#include "callbacks/gradient_accumulation_scheduler.h"
#include "callbacks/learning_rate_monitor.h"
#include "callbacks/model_checkpoint.h"
#include "callbacks/model_summary.h"
#include "callbacks/rich_model_summary.h"
#include "callbacks/spike_detection.h"
#include "callbacks/timer.h"
#include "tests/support/catch.h"

using namespace trainbus;
using namespace trainbus::callbacks;
using Catch::Matchers::Contains;

TEST_CASE("A callback spec sets the options it names and keeps the other defaults",
          "[callbacks][spec]") {
  auto early = std::dynamic_pointer_cast<EarlyStopping>(
      make_callback("early_stopping:monitor=val_acc,mode=max,patience=5,min_delta=0.01,"
                    "stopping_threshold=0.99,check_on_train_epoch_end=false"));
  REQUIRE(early != nullptr);
  CHECK(early->options().monitor() == "val_acc");
  CHECK(early->options().mode() == "max");
  CHECK(early->options().patience() == 5);
  CHECK(early->options().min_delta() == 0.01);
  CHECK(early->options().stopping_threshold() == 0.99);
  CHECK(early->options().check_on_train_epoch_end() == false);
  CHECK(early->options().strict());  // a default

  auto checkpoint = std::dynamic_pointer_cast<ModelCheckpoint>(
      make_callback("model_checkpoint:monitor=val_loss,save_top_k=3,save_last=link,filename={epoch}"
                    "-{val_loss:.2f}"));
  REQUIRE(checkpoint != nullptr);
  CHECK(checkpoint->state_key().find("'monitor': 'val_loss'") != std::string::npos);
  CHECK(std::dynamic_pointer_cast<ModelCheckpoint>(make_callback("model_checkpoint")) != nullptr);
  const auto monitor = std::dynamic_pointer_cast<LearningRateMonitor>(
      make_callback("learning_rate_monitor:logging_interval=epoch,log_momentum=true"));
  REQUIRE(monitor != nullptr);
  CHECK(monitor->options().logging_interval() == std::optional<std::string>("epoch"));
  CHECK(monitor->options().log_momentum());
  CHECK_FALSE(monitor->options().log_weight_decay());
  const auto timer =
      std::dynamic_pointer_cast<Timer>(make_callback("timer:duration=00:01:30:00,interval=epoch"));
  REQUIRE(timer != nullptr);
  CHECK(timer->options().duration()->seconds() == 5400);
  CHECK(timer->options().interval() == "epoch");
  CHECK_FALSE(std::dynamic_pointer_cast<Timer>(make_callback("timer"))->options().duration());
  const auto accumulation = std::dynamic_pointer_cast<GradientAccumulationScheduler>(
      make_callback("gradient_accumulation_scheduler:scheduling=4:2;8:4"));
  REQUIRE(accumulation != nullptr);
  CHECK(accumulation->scheduling() == std::map<int64_t, int64_t>{{0, 1}, {4, 2}, {8, 4}});
  const auto spike = std::dynamic_pointer_cast<SpikeDetection>(
      make_callback("spike_detection:window=20,atol=0.5,exclude_batches_path=/tmp/skip.json"));
  REQUIRE(spike != nullptr);
  CHECK(spike->options().window() == 20);
  CHECK(spike->options().atol() == 0.5);
  CHECK(spike->options().rtol() == 2.0);  // a default
  CHECK(spike->options().exclude_batches_path() == "/tmp/skip.json");
  const auto atol_only = std::dynamic_pointer_cast<SpikeDetection>(
      make_callback("spike_detection:atol=1.5,rtol=none"));
  CHECK(atol_only->options().atol() == 1.5);
  CHECK_FALSE(atol_only->options().rtol().has_value());
  CHECK(std::dynamic_pointer_cast<ModelSummary>(make_callback("model_summary:max_depth=-1"))
            ->options()
            .max_depth() == -1);
  CHECK(std::dynamic_pointer_cast<RichModelSummary>(make_callback("rich_model_summary")) !=
        nullptr);
  CHECK(callback_decides("early_stopping:patience=3"));
  CHECK_FALSE(callback_decides("learning_rate_monitor"));
}

TEST_CASE("A bad callback spec is refused, naming what is wrong and what is accepted",
          "[callbacks][spec]") {
  CHECK_THROWS_AS(make_callback("early_stop:monitor=x"), MisconfigurationError);
  CHECK_THROWS_WITH(
      make_callback("early_stop:monitor=x"),
      Contains("no built-in callback is named 'early_stop'") &&
          Contains("early_stopping, model_checkpoint, learning_rate_monitor, timer, "
                   "gradient_accumulation_scheduler, spike_detection, model_summary, "
                   "rich_model_summary, device_stats_monitor, "
                   "ema_weight_averaging, backbone_finetuning, stochastic_weight_averaging, "
                   "batch_size_finder and learning_rate_finder"));
  CHECK_THROWS_WITH(
      make_callback("ema_weight_averaging:decay=2"),
      Contains("--callback 'ema_weight_averaging:decay=2'") && Contains("decay must be in [0, 1]"));
  CHECK_THROWS_WITH(make_callback("model_summary:max_depth=-3"),
                    Contains("--callback 'model_summary:max_depth=-3'") && Contains("max_depth"));
  CHECK_THROWS_WITH(make_callback("rich_model_summary:header_style=bold pink"),
                    Contains("unknown word 'pink'"));
  CHECK_THROWS_WITH(make_callback("learning_rate_monitor:logging_interval=batch"),
                    Contains("logging_interval=batch: expected step or epoch"));
  CHECK_THROWS_WITH(make_callback("early_stopping:monitor=x,patiense=3"),
                    Contains("early_stopping has no option 'patiense'") && Contains("patience"));
  CHECK_THROWS_WITH(make_callback("early_stopping:monitor=x,patience=three"),
                    Contains("patience=three: expected a whole number"));
  CHECK_THROWS_WITH(make_callback("early_stopping:monitor=x,mode=up"),
                    Contains("mode=up: expected min or max"));
  CHECK_THROWS_WITH(make_callback("model_checkpoint:save_last=maybe"),
                    Contains("save_last=maybe: expected true, false, link or copy"));
  CHECK_THROWS_WITH(make_callback("model_checkpoint:monitor"),
                    Contains("'monitor' is not key=value"));
  CHECK_THROWS_WITH(make_callback("model_checkpoint:verbose=yes"),
                    Contains("verbose=yes: expected true or false"));
  CHECK_THROWS_WITH(make_callback("timer:duration=12h"),
                    Contains("duration=12h: expected DD:HH:MM:SS"));
  CHECK_THROWS_WITH(make_callback("timer:interval=batch"),
                    Contains("interval=batch: expected step or epoch"));
  for (const char* bad : {"4", "4:two", "x:2", "4:2;;5", ""}) {
    INFO(bad);
    CHECK_THROWS_WITH(
        make_callback(std::string("gradient_accumulation_scheduler:scheduling=") + bad),
        Contains("expected EPOCH:FACTOR pairs"));
  }
  CHECK_THROWS_WITH(make_callback("gradient_accumulation_scheduler:scheduling=4:2;4:3"),
                    Contains("epoch 4 is given twice"));
  CHECK_THROWS_WITH(make_callback("spike_detection:rtol=nan"),
                    Contains("rtol=nan: expected a finite number, or none"));
  CHECK_THROWS_WITH(make_callback("gradient_accumulation_scheduler"),
                    Contains("needs scheduling=EPOCH:FACTOR"));
  CHECK_THROWS_WITH(make_callback("gradient_accumulation_scheduler:scheduling=0:0"),
                    Contains("--callback 'gradient_accumulation_scheduler:scheduling=0:0'") &&
                        Contains("factor must be >= 1"));
  CHECK_THROWS_WITH(make_callback("spike_detection:window=0"),
                    Contains("--callback 'spike_detection:window=0'") && Contains("window"));
}
