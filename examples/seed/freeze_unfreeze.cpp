#include "examples/seed/freeze_unfreeze.h"

#include "core/trainer.h"

namespace trainbus::examples {

void FreezeUnfreeze::on_train_epoch_start(Trainer& trainer, Module& module) {
  const int64_t epoch = trainer.current_epoch();
  // Python's `pl_module.backbone` is the child registered under that name.
  const auto children = module.named_children();
  TRAINBUS_CHECK(children.contains("backbone"),
                 "FreezeUnfreeze needs a submodule registered as \"backbone\" in ", module.name());
  const bool trainable =
      epoch >= freeze_until_epoch_;  // Freeze backbone before, unfreeze from then on
  for (auto& parameter : children["backbone"]->parameters()) parameter.set_requires_grad(trainable);
}

}  // namespace trainbus::examples
