#include "core/callback.h"

#include <boost/core/demangle.hpp>

namespace trainbus {

Callback::~Callback() = default;

std::string Callback::state_key() const {
  // Lightning's default is the class's qualified name.
  return boost::core::demangle(typeid(*this).name());
}

}  // namespace trainbus
