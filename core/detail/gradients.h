#pragma once
/// Private to core/: the gradient operations automatic and manual optimization share. Not
/// installed.

#include <torch/optim/optimizer.h>

#include "core/trainer_options.h"

namespace trainbus::detail {

/// PyTorch >= 2.0's optimizer.zero_grad() default (set_to_none=True), which Lightning users get:
/// LibTorch 1.13's zero_grad() fills gradients with zeros instead, and a frozen parameter with a
/// zero gradient still moves under Adam's momentum.
void zero_grad_to_none(torch::optim::Optimizer& optimizer);

/// Clips the gradients of `optimizer`'s parameters to `clip_val` by total norm or by value (as
/// Lightning's Precision.clip_gradients); nothing for a clip_val <= 0.
void clip_gradients(torch::optim::Optimizer& optimizer, double clip_val,
                    GradientClipAlgorithm algorithm);

}  // namespace trainbus::detail
