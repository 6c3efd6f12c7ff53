// Built-in callbacks from `--callback NAME:key=value,...`: options set, defaults kept, and an
// error naming the spec and what is accepted for anything else.
#include "callbacks/callback_spec.h"

#include "base/errors.h"
#include "callbacks/early_stopping.h"
#include "callbacks/learning_rate_monitor.h"
#include "callbacks/model_checkpoint.h"
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
  CHECK(callback_decides("early_stopping:patience=3"));
  CHECK_FALSE(callback_decides("learning_rate_monitor"));
}

TEST_CASE("A bad callback spec is refused, naming what is wrong and what is accepted",
          "[callbacks][spec]") {
  CHECK_THROWS_AS(make_callback("early_stop:monitor=x"), MisconfigurationError);
  CHECK_THROWS_WITH(make_callback("early_stop:monitor=x"),
                    Contains("no built-in callback is named 'early_stop'") &&
                        Contains("early_stopping, model_checkpoint and learning_rate_monitor"));
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
}
