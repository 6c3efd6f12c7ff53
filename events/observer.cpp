#include "events/observer.h"

#include <typeinfo>

#include <boost/core/demangle.hpp>

namespace trainbus::events {

EventSelection& EventSelection::all() {
  for (std::size_t i = 0; i < events::AllEvents::size; ++i) {
    selected_[i] = true;
    filters_[i] = EventFilter{};
  }
  return *this;
}

Observer::~Observer() = default;

std::string Observer::name() const { return boost::core::demangle(typeid(*this).name()); }

void Observer::select_events(EventSelection& selection) const { selection.all(); }

}  // namespace trainbus::events
