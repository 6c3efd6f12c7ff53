#include "callbacks/lambda_callback.h"

namespace trainbus::callbacks {

#define TRAINBUS_LAMBDA_CALL(...) (trainer, module __VA_ARGS__)
#define TRAINBUS_LAMBDA_HOOK_DEFINE(name, parameters, arguments)     \
  void LambdaCallback::name TRAINBUS_LAMBDA_PREPEND parameters {     \
    if (hooks_.name()) hooks_.name() TRAINBUS_LAMBDA_CALL arguments; \
  }
TRAINBUS_LAMBDA_HOOKS(TRAINBUS_LAMBDA_HOOK_DEFINE)
#undef TRAINBUS_LAMBDA_HOOK_DEFINE
#undef TRAINBUS_LAMBDA_CALL

}  // namespace trainbus::callbacks
